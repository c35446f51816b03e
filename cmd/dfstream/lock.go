package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/mattn/go-isatty"

	"github.com/dfstream/dfstream"
)

// forwarded are the signals dfstream passes on to the command.
var forwarded = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2}

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
			"SIGINT, SIGTERM, SIGHUP, SIGUSR1 and SIGUSR2 are forwarded to the command\n"+
			"(to its process group when stdin is not a terminal). The command's\n"+
			"environment has DFSTREAM_KEY, DFSTREAM_TOKEN and DFSTREAM_FENCE (the fencing\n"+
			"token; 0 when the server issues none) for fenced writes.",
		example, e.stdout)
	common := c.addCommonFlags(e.stderr)
	fs := c.fs
	acquireTimeout := fs.Duration("acquire-timeout", dfstream.DefaultAcquireTimeout, "how long to wait for KEY (0: try once)")
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
	case *acquireTimeout < 0:
		return usagef("%s: --acquire-timeout must not be negative", name)
	case *lease < 0:
		return usagef("%s: --lease must not be negative", name)
	case *grace < 0:
		return usagef("%s: --grace must not be negative", name)
	}
	key := pos[0]
	if err := checkKey("KEY", key); err != nil {
		return err
	}
	client, err := common.newClient()
	if err != nil {
		return err
	}
	defer closeWithin(3*time.Second, client.Close)
	log := common.logger()

	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, forwarded...)
	defer signal.Stop(sigs)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	opts := []dfstream.StreamOption{dfstream.WithAcquireTimeout(*acquireTimeout)}
	if *lease > 0 {
		opts = append(opts, dfstream.WithLease(*lease))
	}
	var st holder
	if sem {
		st, err = client.Semaphore(ctx, key, limit, opts...)
	} else {
		st, err = client.Lock(ctx, key, opts...)
	}
	if err != nil {
		return classify(fmt.Errorf("%s: %w", name, err))
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
	select {
	case r := <-acq:
		if r.err != nil {
			if errors.Is(r.err, dfstream.ErrTimeout) {
				return exitWith(exitNotAcquired, fmt.Errorf("%s: %q not acquired within %v; command not run", name, key, *acquireTimeout))
			}
			return classify(fmt.Errorf("%s: %w", name, r.err))
		}
		grant = r.a
	case sig := <-sigs:
		cancel()
		return exitWith(128+signum(sig), fmt.Errorf("%s: %v before %q was acquired; command not run", name, sig, key))
	}
	log.Debug().Str("key", key).Uint64("fence", grant.Fence).Dur("lease", grant.Lease).Msg("acquired")
	if _, ok := st.Held(); !ok { // lost already: do not start work that is not protected
		return exitWith(exitLeaseLost, fmt.Errorf("%s: lease on %q lost right after it was acquired (%v); command not run", name, key, st.Err()))
	}

	cmd := exec.Command(cmdArgs[0], cmdArgs[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = e.stdin, e.stdout, e.stderr
	cmd.Env = append(os.Environ(),
		"DFSTREAM_KEY="+key,
		"DFSTREAM_TOKEN="+grant.Token,
		"DFSTREAM_FENCE="+strconv.FormatUint(grant.Fence, 10))
	// In its own process group (so that a lost lease stops the whole job,
	// shell pipelines included), unless it may want the terminal.
	group := !isTerminal(os.Stdin)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: group}
	if err := cmd.Start(); err != nil {
		releaseWithin(st)
		code := exitCannotExec
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			code = exitNotFound
		}
		return exitWith(code, fmt.Errorf("%s: %v", name, err))
	}
	pid := cmd.Process.Pid
	signalChild := func(sig syscall.Signal) {
		if group {
			_ = syscall.Kill(-pid, sig)
		} else {
			_ = cmd.Process.Signal(sig)
		}
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	events := st.Events()
	var lost error
	var kill <-chan time.Time
	stop := func(reason error) {
		lost = reason
		fmt.Fprintf(e.stderr, "dfstream: %s: lease on %q lost (%v); stopping the command\n", name, key, oneLine(reason.Error()))
		signalChild(syscall.SIGTERM)
		kill = time.After(*grace)
	}
	for {
		select {
		case werr := <-exited:
			code := exitCode(werr, cmd)
			if group && lost != nil {
				_ = syscall.Kill(-pid, syscall.SIGKILL) // stragglers of the job
			}
			if lost != nil {
				return exitWith(exitLeaseLost, fmt.Errorf("%s: lease on %q lost; the command was stopped (its exit code was %d)", name, key, code))
			}
			if err := releaseWithin(st); err != nil && !errors.Is(err, dfstream.ErrNotHeld) {
				if errors.Is(err, dfstream.ErrConnLost) || errors.Is(err, dfstream.ErrDeadlinePassed) ||
					errors.Is(err, dfstream.ErrRenewRefused) || errors.Is(err, dfstream.ErrLeaseExpired) {
					return exitWith(exitLeaseLost, fmt.Errorf("%s: lease on %q was lost before the command finished (%v; its exit code was %d)", name, key, err, code))
				}
				log.Debug().Err(err).Msg("release")
			}
			return exitWith(code, nil)
		case ev, ok := <-events:
			if !ok {
				events = nil
				if lost == nil {
					reason := st.Err()
					if reason == nil {
						reason = errors.New("stream ended")
					}
					stop(reason)
				}
				continue
			}
			switch ev := ev.(type) {
			case dfstream.Lost:
				if lost == nil {
					stop(ev.Reason)
				}
			case dfstream.Renewed:
				log.Debug().Str("key", key).Time("deadline", ev.Deadline).Msg("renewed")
			}
		case sig := <-sigs:
			if s, ok := sig.(syscall.Signal); ok {
				log.Debug().Str("signal", s.String()).Msg("forwarding")
				signalChild(s)
			}
		case <-kill:
			kill = nil
			signalChild(syscall.SIGKILL)
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
func exitCode(err error, cmd *exec.Cmd) int {
	if cmd.ProcessState == nil {
		return exitFailure
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	if code := cmd.ProcessState.ExitCode(); code >= 0 {
		return code
	}
	_ = err
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
