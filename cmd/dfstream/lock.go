package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"

	"github.com/dfstream/dfstream"
)

// holder is what lock and sem need of a LockStream or SemStream.
type holder interface {
	Events() <-chan dfstream.Event
	Wait(ctx context.Context) (dfstream.Acquired, error)
	Release(ctx context.Context) error
	Close() error
	Err() error
	Held() (dfstream.Acquired, bool)
}

func runLock(args []string, e *env) error { return runHold("lock", args, e) }
func runSem(args []string, e *env) error  { return runHold("sem", args, e) }

func runHold(name string, args []string, e *env) error {
	sem := name == "sem"
	synopsis := "KEY [flags] -- COMMAND [ARGS...]"
	what := "the exclusive lock KEY"
	example := "  dfstream lock reports/nightly --lease 30s --acquire-timeout 1m -- ./nightly.sh --full"
	if sem {
		synopsis = "KEY --limit N [flags] -- COMMAND [ARGS...]"
		what = "one of the N slots of the semaphore KEY"
		example = "  dfstream sem gpu-pool --limit 4 -- python train.py"
	}
	c := newCommand(name, synopsis,
		"Acquire "+what+",\nrun COMMAND while the lease is renewed, release when it exits, and exit\n"+
			"with its exit code (a command's own 64, 69, 73 or 75 passes through too;\n"+
			"only dfstream's own failures print a \"dfstream: \" line). If the lease is lost, the command gets\n"+
			"SIGTERM, then SIGKILL after --grace, and dfstream exits 75. If KEY is not\n"+
			"acquired within --acquire-timeout, dfstream exits 73 without running it.\n"+
			"SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 are forwarded to the\n"+
			"command (to its process group when stdin is not a terminal; on a terminal\n"+
			"the command shares dfstream's group and gets Ctrl-C and Ctrl-\\ from the\n"+
			"terminal, so SIGINT and SIGQUIT are not forwarded). SIGCONT follows\n"+
			"SIGINT, SIGTERM, SIGHUP and SIGQUIT, so that a stopped command ends too.\n"+
			"Ctrl-Z (SIGTSTP) stops the command and dfstream; on SIGCONT the lease is\n"+
			"checked before the command resumes. If dfstream is killed, the command\n"+
			"gets SIGKILL (Linux; elsewhere it keeps running). The command's\n"+
			"environment has DFSTREAM_KEY, DFSTREAM_TOKEN and DFSTREAM_FENCE (the fencing\n"+
			"token; 0 when the server issues none) for fenced writes.",
		example, e.stdout)
	common := c.addCommonFlags(e.stderr)
	c.addClusterFlag(common)
	metrics := c.addMetricsFlag()
	fs := c.fs
	acquireTimeout := waitValue(dfstream.DefaultAcquireTimeout)
	fs.Var(&acquireTimeout, "acquire-timeout", "`duration` to wait for KEY (0: try once; inf or -1: forever)")
	lease := fs.Duration("lease", 0, "lease to ask for, rounded up to whole seconds (default: the server's)")
	grace := fs.Duration("grace", 5*time.Second, "after the lease is lost, time between SIGTERM and SIGKILL")
	var limit int
	if sem {
		fs.IntVar(&limit, "limit", 0, "the semaphore's limit: how many holders at once (required)")
		fs.IntVar(&limit, "n", 0, "shorthand for --limit")
	}

	pos, cmdArgs, dashdash, err := c.parse(args)
	if err != nil {
		return err
	}
	switch {
	case !dashdash:
		return usagef("%s: missing -- before the command (dfstream %s %s)", name, name, synopsis)
	case len(pos) == 0:
		return usagef("%s: missing KEY before --", name)
	case len(pos) > 1:
		return usagef("%s: one KEY expected before --, got %d arguments (%q)", name, len(pos), pos)
	case len(cmdArgs) == 0:
		return usagef("%s: no command after --", name)
	case sem && limit < 1:
		return usagef("sem: --limit must be at least 1")
	case *lease < 0:
		return usagef("%s: --lease must not be negative", name)
	case *grace < 0:
		return usagef("%s: --grace must not be negative", name)
	}
	key := pos[0]
	if err := checkKey("KEY", key); err != nil {
		return err
	}
	mopts, stopMetrics, err := metrics.client(e.stderr)
	if err != nil {
		return err
	}
	defer stopMetrics()
	client, err := common.newClient(mopts...)
	if err != nil {
		return err
	}
	defer closeWithin(3*time.Second, client.Close)
	log := common.logger()

	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, append(forwarded, jobControl...)...)
	defer signal.Stop(sigs)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	opts := []dfstream.StreamOption{dfstream.WithAcquireTimeout(time.Duration(acquireTimeout))}
	if *lease > 0 {
		opts = append(opts, dfstream.WithLease(*lease))
	}
	var st holder
	if sem {
		st, err = client.StartSemaphore(ctx, key, limit, opts...)
	} else {
		st, err = client.StartLock(ctx, key, opts...)
	}
	if err != nil {
		return classify(fmt.Errorf("%s: %w", name, lib(err)))
	}
	defer closeWithin(3*time.Second, st.Close)

	// Acquire, unless a signal comes first.
	type result struct {
		a   dfstream.Acquired
		err error
	}
	acq := make(chan result, 1)
	go func() {
		a, err := st.Wait(ctx)
		acq <- result{a, err}
	}()
	var grant dfstream.Acquired
waiting:
	for {
		select {
		case r := <-acq:
			if r.err != nil {
				if errors.Is(r.err, dfstream.ErrTimeout) {
					return exitWith(exitNotAcquired, fmt.Errorf("%s: %q not acquired within %v; command not run", name, key, &acquireTimeout))
				}
				return classify(fmt.Errorf("%s: %w", name, lib(r.err)))
			}
			grant = r.a
			break waiting
		case sig := <-sigs:
			switch sig {
			case sigTSTP: // Ctrl-Z while waiting: stop like any job
				stopSelf()
				continue
			case sigCONT:
				continue
			}
			cancel()
			return exitWith(128+signum(sig), fmt.Errorf("%s: %v before %q was acquired; command not run", name, sig, key))
		}
	}
	log.Debug().Str("key", key).Uint64("fence", grant.Fence).Dur("lease", grant.Lease).Msg("acquired")
	if _, ok := st.Held(); !ok { // lost already: do not start work that is not protected
		return exitWith(exitLeaseLost, fmt.Errorf("%s: lease on %q lost right after it was acquired (%s); command not run", name, key, libMsg(st.Err())))
	}

	cmd := exec.Command(cmdArgs[0], cmdArgs[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = e.stdin, e.stdout, e.stderr
	cmd.Env = append(os.Environ(),
		"DFSTREAM_KEY="+key,
		"DFSTREAM_TOKEN="+grant.Token,
		"DFSTREAM_FENCE="+strconv.FormatUint(grant.Fence, 10))
	// In its own process group (so that a lost lease stops the whole job,
	// shell pipelines included), unless it may want the terminal: then it
	// shares dfstream's group, the terminal's foreground group. On Linux,
	// if dfstream is killed (SIGKILL, a crash), nothing renews the lease any
	// more, so the command must not outlive it (see sysProcAttr).
	j := &job{shared: isTerminal(os.Stdin)}
	cmd.SysProcAttr = sysProcAttr(j.shared)
	startErr := make(chan error, 1)
	exited := make(chan error, 1)
	go func() {
		// Linux's parent-death signal fires when the thread that started
		// the child ends, not the process; Go may end or reuse threads at
		// will. Keep this goroutine on its own thread until the child has
		// been reaped.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			startErr <- err
			return
		}
		startErr <- nil
		exited <- cmd.Wait()
	}()
	if err := <-startErr; err != nil {
		releaseWithin(st)
		code := exitCannotExec
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			code = exitNotFound
		}
		return exitWith(code, fmt.Errorf("%s: %v", name, err))
	}
	j.pid = cmd.Process.Pid

	events := st.Events()
	deadline := grant.Deadline // the lease's local safe deadline
	var lost error
	var kill <-chan time.Time
	stop := func(reason error) {
		lost = reason
		fmt.Fprintf(e.stderr, "dfstream: %s: lease on %q lost (%s); stopping the command\n", name, key, libMsg(reason))
		j.signal(syscall.SIGTERM)
		j.signal(sigCONT) // a stopped job would keep SIGTERM pending, and the key
		kill = time.After(*grace)
	}
	handle := func(ev dfstream.Event) {
		switch ev := ev.(type) {
		case dfstream.Lost:
			if lost == nil {
				stop(ev.Reason)
			}
		case dfstream.Renewed:
			deadline = ev.Deadline
			log.Debug().Str("key", key).Time("deadline", ev.Deadline).Msg("renewed")
		case dfstream.Moved:
			deadline = ev.Deadline
			log.Debug().Str("key", key).Str("to", ev.To).Time("deadline", ev.Deadline).Msg("moved")
		}
	}
	ended := func() {
		events = nil
		if lost == nil {
			reason := st.Err()
			if reason == nil {
				reason = errors.New("stream ended")
			}
			stop(reason)
		}
	}
	for {
		select {
		case <-exited:
			code := exitCode(cmd)
			j.reaped = true
			if lost != nil {
				j.signal(syscall.SIGKILL) // stragglers of the job
				return exitWith(exitLeaseLost, fmt.Errorf("%s: lease on %q lost; the command was stopped (its exit code was %d)", name, key, code))
			}
			return settle(name, key, st, code, log)
		case ev, ok := <-events:
			if !ok {
				ended()
				continue
			}
			handle(ev)
		case sig := <-sigs:
			s, _ := sig.(syscall.Signal)
			switch {
			case s == sigTSTP:
				// Ctrl-Z, or kill -TSTP. In its own group the command does
				// not get it from the terminal, and dfstream stopped alone
				// would leave it running with nothing renewing the lease.
				// SIGSTOP, not SIGTSTP: the command cannot ignore it.
				log.Debug().Msg("stopping the command and dfstream")
				j.signal(sigSTOP)
				stopSelf()
			case s == sigCONT:
				// Resumed (fg, bg, kill -CONT). The lease was not renewed
				// while stopped: check it before the command goes on.
				if lost == nil {
					drain(&events, handle, ended)
				}
				if lost == nil {
					if _, ok := st.Held(); !ok || (!deadline.IsZero() && !time.Now().Before(deadline)) {
						reason := st.Err()
						if reason == nil {
							reason = fmt.Errorf("%w while dfstream was stopped", dfstream.ErrDeadlinePassed)
						}
						stop(reason) // SIGTERM, then SIGCONT
						continue
					}
				}
				log.Debug().Msg("resuming the command")
				j.signal(sigCONT)
			case j.shared && (s == syscall.SIGINT || s == syscall.SIGQUIT):
				// Sharing dfstream's group, the terminal's foreground
				// group, the command got Ctrl-C / Ctrl-\ from the terminal
				// itself; forwarding would deliver it twice. (kill -INT
				// sent to dfstream alone is therefore not passed on.)
				log.Debug().Str("signal", s.String()).Msg("not forwarded: the terminal sent it to the command too")
			case s != 0:
				log.Debug().Str("signal", s.String()).Msg("forwarding")
				j.forward(s)
			}
		case <-kill:
			kill = nil
			j.signal(syscall.SIGKILL)
		}
	}
}

// drain handles the events already queued, without waiting.
func drain(events *<-chan dfstream.Event, handle func(dfstream.Event), ended func()) {
	for *events != nil {
		select {
		case ev, ok := <-*events:
			if !ok {
				ended()
				return
			}
			handle(ev)
		default:
			return
		}
	}
}

// settle releases the key after the command exited with code, and returns
// dfstream's outcome: code, or 75 if the lease was lost meanwhile.
//
// A loss around the moment the command exits shows in several ways, by
// timing: a Lost event not read yet, Release failing with the loss, or
// Release failing with ErrNotHeld because the stream had already ended.
// st.Err() settles them all the same way: it is nil after a plain
// release and the reason once the stream ended by a loss.
func settle(name, key string, st holder, code int, log zerolog.Logger) error {
	err := releaseWithin(st)
	if err == nil {
		return exitWith(code, nil)
	}
	if reason := st.Err(); reason != nil {
		return exitWith(exitLeaseLost, fmt.Errorf("%s: lease on %q was lost before the command finished (%s; its exit code was %d)", name, key, libMsg(reason), code))
	}
	// Not lost (Release timed out against a silent server, say): the
	// command ran under the lease.
	log.Debug().Err(err).Msg("release")
	return exitWith(code, nil)
}

// job is the running command and, when it shares dfstream's process group,
// the processes it started.
type job struct {
	pid    int
	shared bool // in dfstream's process group (stdin is a terminal)
	// seen are the command's descendants found so far (pid → start time),
	// kept so that those orphaned when their parent exits are still
	// reached. The start time tells a reused pid from the process seen.
	seen map[int]uint64
	// reaped: the command has been waited for, so its pid may belong to
	// another process by now.
	reaped bool
}

// forward passes a signal sent to dfstream on: to the command's group, or
// to the command alone when it shares dfstream's group. After a signal
// that ends processes by default, SIGCONT follows (as shells do): a
// stopped command (SIGTTIN from reading the terminal in the background,
// say) would otherwise keep it pending, and hold the key, forever.
func (j *job) forward(sig syscall.Signal) {
	if j.shared {
		kill(j.pid, sig)
	} else {
		kill(-j.pid, sig)
	}
	switch sig {
	case syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT:
		if j.shared {
			kill(j.pid, sigCONT)
		} else {
			kill(-j.pid, sigCONT)
		}
	}
}

// signal sends sig to the whole job: its process group, or, sharing
// dfstream's group, the command and every descendant that can be found
// (those that left for a group of their own included).
func (j *job) signal(sig syscall.Signal) {
	if !j.shared {
		kill(-j.pid, sig)
		return
	}
	j.scan()
	if !j.reaped {
		kill(j.pid, sig)
	}
	for pid, started := range j.seen {
		if _, st, ok := procStat(pid); ok && st == started {
			kill(pid, sig)
		}
	}
}

// releaseWithin releases, bounded so that a silent server cannot hang us.
func releaseWithin(st holder) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return st.Release(ctx)
}

// exitCode is the command's exit code, 128+N when signal N killed it.
func exitCode(cmd *exec.Cmd) int {
	if cmd.ProcessState == nil {
		return exitFailure
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	if code := cmd.ProcessState.ExitCode(); code >= 0 {
		return code
	}
	return exitFailure
}

func signum(sig os.Signal) int {
	if s, ok := sig.(syscall.Signal); ok {
		return int(s)
	}
	return 1
}

// isTerminal reports whether f is a terminal.
func isTerminal(f *os.File) bool {
	return isatty.IsTerminal(f.Fd())
}
