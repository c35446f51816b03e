package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"time"

	"github.com/rs/zerolog"

	"github.com/dfstream/dfstream"
)

// lock and sem: acquire KEY, run the command under the lease, release. The
// steps are parseHold (flags), hold.run (client and stream), hold.acquire
// (wait for the grant or a signal), startJob (process.go) and supervise
// (the lease and the signals while the command runs), then settle.

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
	h, err := parseHold(name, args, e)
	if err != nil {
		return err
	}
	return h.run(e)
}

// hold is one lock or sem invocation, as parsed from its command line.
type hold struct {
	name           string // "lock" or "sem"
	key            string
	limit          int // sem only
	argv           []string
	acquireTimeout waitValue
	lease, grace   time.Duration
	common         *commonFlags
	metrics        *metricsFlag
}

const holdSummary = "Acquire %s,\nrun COMMAND while the lease is renewed, release when it exits, and exit\n" +
	"with its exit code (a command's own 64, 69, 73 or 75 passes through too;\n" +
	"only dfstream's own failures print a \"dfstream: \" line). If the lease is lost, the command gets\n" +
	"SIGTERM, then SIGKILL after --grace, and dfstream exits 75. If KEY is not\n" +
	"acquired within --acquire-timeout, dfstream exits 73 without running it.\n" +
	"SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 are forwarded to the\n" +
	"command (to its process group when stdin is not a terminal; on a terminal\n" +
	"the command shares dfstream's group and gets Ctrl-C and Ctrl-\\ from the\n" +
	"terminal, so SIGINT and SIGQUIT are not forwarded). SIGCONT follows\n" +
	"SIGINT, SIGTERM, SIGHUP and SIGQUIT, so that a stopped command ends too.\n" +
	"Ctrl-Z (SIGTSTP) stops the command and dfstream; on SIGCONT the lease is\n" +
	"checked before the command resumes. If dfstream is killed, the command\n" +
	"gets SIGKILL (Linux; elsewhere it keeps running). The command's\n" +
	"environment has DFSTREAM_KEY, DFSTREAM_TOKEN and DFSTREAM_FENCE (the fencing\n" +
	"token; 0 when the server issues none) for fenced writes."

// parseHold reads the flags and arguments of lock or sem.
func parseHold(name string, args []string, e *env) (*hold, error) {
	sem := name == "sem"
	synopsis := "KEY [flags] -- COMMAND [ARGS...]"
	what := "the exclusive lock KEY"
	example := "  dfstream lock reports/nightly --lease 30s --acquire-timeout 1m -- ./nightly.sh --full"
	if sem {
		synopsis = "KEY --limit N [flags] -- COMMAND [ARGS...]"
		what = "one of the N slots of the semaphore KEY"
		example = "  dfstream sem gpu-pool --limit 4 -- python train.py"
	}
	c := newCommand(name, synopsis, fmt.Sprintf(holdSummary, what), example, exitCodesHold, e.stdout)
	h := &hold{name: name, acquireTimeout: waitValue(dfstream.DefaultAcquireTimeout)}
	h.common = c.addCommonFlags(e.stderr)
	c.addClusterFlag(h.common)
	h.metrics = c.addMetricsFlag()
	c.fs.Var(&h.acquireTimeout, "acquire-timeout", "`duration` to wait for KEY (0: try once; inf or -1: forever)")
	c.durationVar(&h.lease, "lease", 0, "`duration` of the lease to ask for, rounded up to whole seconds (default: the server's)")
	c.durationVar(&h.grace, "grace", 5*time.Second, "after the lease is lost, the `duration` between SIGTERM and SIGKILL")
	if sem {
		c.fs.IntVar(&h.limit, "limit", 0, "the semaphore's limit: how many holders at once (required)")
		c.fs.IntVar(&h.limit, "n", 0, "shorthand for --limit")
	}

	pos, argv, dashdash, err := c.parse(args)
	if err != nil {
		return nil, err
	}
	switch {
	case !dashdash:
		return nil, usagef("%s: missing -- before the command (dfstream %s %s)", name, name, synopsis)
	case len(pos) == 0:
		return nil, usagef("%s: missing KEY before --", name)
	case len(pos) > 1:
		return nil, usagef("%s: one KEY expected before --, got %d arguments (%q)", name, len(pos), pos)
	case len(argv) == 0:
		return nil, usagef("%s: no command after --", name)
	case sem && h.limit < 1:
		return nil, usagef("sem: --limit must be at least 1")
	case h.lease < 0:
		return nil, usagef("%s: --lease must not be negative", name)
	case h.grace < 0:
		return nil, usagef("%s: --grace must not be negative", name)
	}
	h.key, h.argv = pos[0], argv
	if err := checkKey("KEY", h.key); err != nil {
		return nil, err
	}
	return h, nil
}

// run connects, acquires, runs the command under the lease and returns
// dfstream's outcome.
func (h *hold) run(e *env) error {
	mopts, stopMetrics, err := h.metrics.client(e.stderr)
	if err != nil {
		return err
	}
	defer stopMetrics()
	client, err := h.common.newClient(mopts...)
	if err != nil {
		return err
	}
	defer closeWithin(3*time.Second, client.Close)
	log := h.common.logger()

	// Caught from before the stream starts: a signal while waiting ends
	// the wait, one while the command runs is passed on to it.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, append(forwarded, jobControl...)...)
	defer signal.Stop(sigs)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := h.start(ctx, client)
	if err != nil {
		return classify(fmt.Errorf("%s: %w", h.name, lib(err)))
	}
	defer closeWithin(3*time.Second, st.Close)

	grant, err := h.acquire(ctx, st, sigs)
	if err != nil {
		return err
	}
	if _, ok := st.Held(); !ok { // lost already: do not start work that is not protected
		return exitWith(exitLeaseLost, fmt.Errorf("%s: lease on %q lost right after it was acquired (%s); command not run", h.name, h.key, libMsg(st.Err())))
	}

	j, err := startJob(h.argv, e, h.env(grant))
	if err != nil {
		releaseWithin(st)
		code := exitCannotExec
		if notFound(err) {
			code = exitNotFound
		}
		return exitWith(code, fmt.Errorf("%s: %w", h.name, err))
	}
	s := &supervisor{hold: h, st: st, j: j, log: log, stderr: e.stderr, events: st.Events(), deadline: grant.Deadline}
	return s.run(sigs)
}

// start starts the lock or semaphore stream.
func (h *hold) start(ctx context.Context, client *dfstream.Client) (holder, error) {
	opts := []dfstream.StreamOption{dfstream.WithAcquireTimeout(time.Duration(h.acquireTimeout))}
	if h.lease > 0 {
		opts = append(opts, dfstream.WithLease(h.lease))
	}
	if h.name == "sem" {
		return client.StartSemaphore(ctx, h.key, h.limit, opts...)
	}
	return client.StartLock(ctx, h.key, opts...)
}

// acquire waits for the grant, unless a signal comes first (the command
// is then not run). Ctrl-Z while waiting stops dfstream like any job.
func (h *hold) acquire(ctx context.Context, st holder, sigs <-chan os.Signal) (dfstream.Acquired, error) {
	type result struct {
		a   dfstream.Acquired
		err error
	}
	acq := make(chan result, 1)
	go func() {
		a, err := st.Wait(ctx)
		acq <- result{a, err}
	}()
	for {
		select {
		case r := <-acq:
			switch {
			case r.err == nil:
				return r.a, nil
			case errors.Is(r.err, dfstream.ErrTimeout):
				return r.a, exitWith(exitNotAcquired, fmt.Errorf("%s: %q not acquired within %v; command not run", h.name, h.key, &h.acquireTimeout))
			default:
				return r.a, classify(fmt.Errorf("%s: %w", h.name, lib(r.err)))
			}
		case sig := <-sigs:
			switch sig {
			case sigTSTP:
				stopSelf()
			case sigCONT:
			default:
				return dfstream.Acquired{}, exitWith(128+signum(sig), fmt.Errorf("%s: %v before %q was acquired; command not run", h.name, sig, h.key))
			}
		}
	}
}

// env is the command's environment: dfstream's, plus the grant.
func (h *hold) env(grant dfstream.Acquired) []string {
	return append(os.Environ(),
		"DFSTREAM_KEY="+h.key,
		"DFSTREAM_TOKEN="+grant.Token,
		"DFSTREAM_FENCE="+strconv.FormatUint(grant.Fence, 10))
}

// supervisor watches the lease and dfstream's signals while the command
// runs: a loss stops the command (SIGTERM, SIGKILL after --grace), signals
// are passed on, Ctrl-Z stops both and SIGCONT checks the lease first.
type supervisor struct {
	*hold
	st       holder
	j        *job
	log      zerolog.Logger
	stderr   io.Writer
	events   <-chan dfstream.Event // nil once the stream has ended
	deadline time.Time             // the lease's local safe deadline
	lost     error                 // why the lease was lost; nil while held
	kill     <-chan time.Time      // fires --grace after SIGTERM
}

// run loops until the command exits and returns dfstream's outcome.
func (s *supervisor) run(sigs <-chan os.Signal) error {
	for {
		select {
		case <-s.j.exited:
			return s.exited()
		case ev, ok := <-s.events:
			if !ok {
				s.ended()
				continue
			}
			s.handle(ev)
		case sig := <-sigs:
			s.signal(sig)
		case <-s.kill:
			s.kill = nil
			s.j.signal(sigKILL)
		}
	}
}

// exited is the outcome once the command has exited.
func (s *supervisor) exited() error {
	code := s.j.reap()
	if s.lost != nil {
		s.j.signal(sigKILL) // stragglers of the job
		return exitWith(exitLeaseLost, fmt.Errorf("%s: lease on %q lost; the command was stopped (its exit code was %d)", s.name, s.key, code))
	}
	return settle(s.name, s.key, s.st, code, s.log)
}

// stop stops the command because the lease was lost.
func (s *supervisor) stop(reason error) {
	s.lost = reason
	fmt.Fprintf(s.stderr, "dfstream: %s: lease on %q lost (%s); stopping the command\n", s.name, s.key, libMsg(reason))
	s.j.signal(sigTERM)
	s.j.signal(sigCONT) // a stopped job would keep SIGTERM pending, and the key
	s.kill = time.After(s.grace)
}

// handle reacts to one event of the stream.
func (s *supervisor) handle(ev dfstream.Event) {
	switch ev := ev.(type) {
	case dfstream.Lost:
		if s.lost == nil {
			s.stop(ev.Reason)
		}
	case dfstream.Renewed:
		s.deadline = ev.Deadline
		s.log.Debug().Str("key", s.key).Time("deadline", ev.Deadline).Msg("renewed")
	case dfstream.Moved:
		s.deadline = ev.Deadline
		s.log.Debug().Str("key", s.key).Str("to", ev.To).Time("deadline", ev.Deadline).Msg("moved")
	}
}

// ended: the stream's events ended, so the lease is no longer held.
func (s *supervisor) ended() {
	s.events = nil
	if s.lost == nil {
		reason := s.st.Err()
		if reason == nil {
			reason = errors.New("stream ended")
		}
		s.stop(reason)
	}
}

// drain handles the events already queued, without waiting.
func (s *supervisor) drain() {
	for s.events != nil {
		select {
		case ev, ok := <-s.events:
			if !ok {
				s.ended()
				return
			}
			s.handle(ev)
		default:
			return
		}
	}
}

// signal reacts to a signal sent to dfstream while the command runs.
func (s *supervisor) signal(sig os.Signal) {
	switch {
	case sig == sigTSTP:
		// Ctrl-Z, or kill -TSTP. In its own group the command does not
		// get it from the terminal, and dfstream stopped alone would
		// leave it running with nothing renewing the lease. SIGSTOP, not
		// SIGTSTP: the command cannot ignore it.
		s.log.Debug().Msg("stopping the command and dfstream")
		s.j.signal(sigSTOP)
		stopSelf()
	case sig == sigCONT:
		s.resume()
	case s.j.shared && isInterrupt(sig):
		// Sharing dfstream's group, the terminal's foreground group, the
		// command got Ctrl-C / Ctrl-\ from the terminal itself;
		// forwarding would deliver it twice. (kill -INT sent to dfstream
		// alone is therefore not passed on.)
		s.log.Debug().Str("signal", sig.String()).Msg("not forwarded: the terminal sent it to the command too")
	default:
		s.log.Debug().Str("signal", sig.String()).Msg("forwarding")
		s.j.forward(sig)
	}
}

// resume: dfstream was resumed (fg, bg, kill -CONT). The lease was not
// renewed while it was stopped: check it before the command goes on.
func (s *supervisor) resume() {
	if s.lost == nil {
		s.drain()
	}
	if s.lost == nil {
		if _, ok := s.st.Held(); !ok || (!s.deadline.IsZero() && !time.Now().Before(s.deadline)) {
			reason := s.st.Err()
			if reason == nil {
				reason = fmt.Errorf("%w while dfstream was stopped", dfstream.ErrDeadlinePassed)
			}
			s.stop(reason) // SIGTERM, then SIGCONT
			return
		}
	}
	s.log.Debug().Msg("resuming the command")
	s.j.signal(sigCONT)
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

// releaseWithin releases, bounded so that a silent server cannot hang us.
func releaseWithin(st holder) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return st.Release(ctx)
}
