package dfstream

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/dfstream/dfstream/wire"
)

// State is where a lock or semaphore stream is in its life.
type State int

// The states of a lock or semaphore stream.
const (
	StateConnecting State = iota // getting a connection
	StateQueued                  // in the server's queue
	StateHeld                    // holding the lock or slot
	StateBackoff                 // lost it; waiting to queue again (re-acquire)
	StateEnded                   // ended; see Err
)

func (s State) String() string {
	switch s {
	case StateConnecting:
		return "connecting"
	case StateQueued:
		return "queued"
	case StateHeld:
		return "held"
	case StateBackoff:
		return "backoff"
	case StateEnded:
		return "ended"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// holdStream is the machine behind LockStream and SemStream: one key, one
// connection, and the life enqueue → (queued → wait) → held → renew… →
// released or lost. Locks and semaphores differ only in the wire.Kind and
// the limit they send.
//
// The stream is an actor whose turn moves between goroutines rather than
// living on one of its own. Whoever holds the turn (a token in a channel of
// capacity one) runs the machine and owns the connection, so the stream's
// steps are serialised exactly as an actor's messages are. Each step runs
// where it costs least: the enqueue on the goroutine that calls Lock, a
// release on the goroutine that calls Release or Close, a renewal when the
// Client's schedule says it is due, a hang-up on the Client's connection
// watcher. The stream has a goroutine of its own only while it waits in the
// queue or backs off, and not even then under a blocking Lock, whose
// caller waits in the queue itself (see beginWaiting). So a held lock
// costs no goroutine, and neither an uncontended cycle nor a blocking
// Lock's handoff a goroutine handoff (on a 2-core machine each costs about
// as much as a quarter of an uncontended cycle).
type holdStream struct {
	c          *Client
	key        string
	kind       wire.Kind
	limit      int
	cfg        streamConfig
	srv        int
	log        zerolog.Logger
	enqueueReq wire.Request

	events <-chan Event
	done   chan struct{} // closed once the stream has ended
	stop   chan struct{} // closed when the user ends the stream (Close, ctx)
	turn   chan struct{} // holds the token while nobody has the turn
	unhook func() bool   // detaches the stream from its context

	// Owned by whoever holds the turn.
	out           outbox
	conn          *lockConn
	roundStart    time.Time     // when this acquire round began
	queuedInRound bool          // it has emitted Queued
	inRound       bool          // the Observer was told the round started
	lease         time.Duration // what renewals ask for
	granted       time.Duration // what the server last applied
	token         string
	fence         uint64
	deadline      time.Time // the safe deadline promised in events
	lossAt        time.Time // when to declare Lost: a little before deadline
	attempt       int
	renewDue      time.Time // when the next renewal is due
	sref          string    // the stable ref of its connections (cluster; see WithCluster)
	dialBy        time.Time // when set, no dial goes on past it (a move's lossAt)

	// Guarded by the Client's renewals.
	renewAt    time.Time
	renewIndex int // in the renewal heap; -1 when not scheduled

	mu         sync.Mutex // guards what follows, which is read without the turn
	state      State
	answered   bool // the first enqueue was answered
	atOnce     bool // … with a grant rather than a place in the queue
	grant      Acquired
	heldUntil  time.Time // lossAt: past it, Wait and Held do not report grant
	hurrying   int       // Releases waiting for the turn they hurried
	err        error
	cause      error         // why stop was closed
	changed    chan struct{} // made by a waiter, closed on the next state change
	live       *lockConn     // conn, for bringing its exchange's deadline forward
	dialCancel context.CancelFunc
}

// startHold starts a stream whose life is ctx: ending ctx ends the stream
// (the Start forms).
func (c *Client) startHold(ctx context.Context, kind wire.Kind, key string, limit int, opts []StreamOption) (*holdStream, error) {
	s, err := c.newHold(ctx, kind, key, limit, opts)
	if err != nil {
		return nil, err
	}
	if ctx.Done() != nil {
		s.unhook = context.AfterFunc(ctx, func() { s.shut(context.Cause(ctx)) })
	}
	s.begin()
	return s, nil
}

// newHold validates a stream's settings and registers it with the Client,
// without sending anything.
func (c *Client) newHold(ctx context.Context, kind wire.Kind, key string, limit int, opts []StreamOption) (*holdStream, error) {
	cfg, err := c.streamConfig(opts)
	if err != nil {
		return nil, startErr(kind, key, err)
	}
	if ctx == nil {
		return nil, startErr(kind, key, errNilContext)
	}
	req, err := wire.Enqueue(kind, key, limit, cfg.lease)
	if err != nil {
		return nil, startErr(kind, key, err)
	}
	srv, err := c.shard(key)
	if err != nil {
		return nil, startErr(kind, key, err)
	}
	s := &holdStream{
		c: c, key: key, kind: kind, limit: limit, cfg: cfg, srv: srv,
		log:        c.cfg.logger,
		enqueueReq: req,
		done:       make(chan struct{}),
		stop:       make(chan struct{}),
		turn:       make(chan struct{}, 1), // empty: the caller has the turn
		out:        newOutbox(cfg.eventBuffer),
		renewIndex: -1,
	}
	s.events = s.out.ch
	if s.log.GetLevel() != zerolog.Disabled {
		// Only a logger that logs pays for the per-stream context.
		s.log = s.log.With().Str("key", key).Str("kind", kind.String()).Logger()
	}
	if err := c.register(s, nil); err != nil {
		return nil, startErr(kind, key, err)
	}
	return s, nil
}

// streamConfig is the Client's stream settings with opts applied.
func (c *Client) streamConfig(opts []StreamOption) (streamConfig, error) {
	if len(opts) == 0 {
		return c.cfg.stream, nil // spares the copy the options work on
	}
	cfg := c.cfg.stream
	for _, o := range opts {
		if err := o.applyStream(&cfg); err != nil {
			return streamConfig{}, err
		}
	}
	return cfg, nil
}

// Events returns the stream's events: Queued, Acquired, Renewed and Moved
// (coalesced behind a slow consumer), Lost, and one terminal event
// (Released, Failed, or a final Lost), after which the channel is closed.
// Acquired, Lost, Released and Failed are never dropped.
func (s *holdStream) Events() <-chan Event { return s.events }

// Done is closed when the stream has ended and its goroutines have exited.
func (s *holdStream) Done() <-chan struct{} { return s.done }

// Key returns the stream's key.
func (s *holdStream) Key() string { return s.key }

// State returns where the stream is now.
func (s *holdStream) State() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

// Held returns the current grant and true while the stream holds the key
// and its safe deadline is ahead.
func (s *holdStream) Held() (Acquired, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.grant, s.held()
}

// held reports whether the stream holds the key and may say so: a grant is
// not reported once the moment to declare it Lost has come, even while
// the step that declares it (or renews in time) has yet to run. s.mu is
// held.
func (s *holdStream) held() bool {
	return s.state == StateHeld && time.Now().Before(s.heldUntil)
}

// errNilContext is what the entry points that take a context return for a
// nil one.
var errNilContext = invalid("nil context")

// Err reports why the stream ended: nil while it runs and after a plain
// release or Close; otherwise matchable with errors.Is (ErrTimeout,
// ErrConnLost, ErrDeadlinePassed, ErrAuth, context.Canceled, …).
func (s *holdStream) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Wait blocks until the stream holds the key and returns the grant, or
// returns the error that ended the stream, or ctx's error. It never
// returns a grant whose safe deadline has come: a stream whose renewal is
// late waits for the renewal or the loss. It does not consume events.
func (s *holdStream) Wait(ctx context.Context) (Acquired, error) {
	if ctx == nil {
		return Acquired{}, s.opErr("acquire", errNilContext)
	}
	for {
		s.mu.Lock()
		st, g, err, held := s.state, s.grant, s.err, s.held()
		var changed <-chan struct{}
		if !held && st != StateEnded {
			changed = s.awaitChange() // a renewal or Lost comes next
		}
		s.mu.Unlock()
		switch {
		case held:
			return g, nil
		case st == StateEnded:
			if err == nil {
				err = ErrClosed
			}
			return Acquired{}, s.opErr("acquire", err)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return Acquired{}, s.opErr("acquire", ctx.Err())
		}
	}
}

// Enqueued reports the server's answer to the stream's first enqueue:
// acquired is true when the key was granted at once, false when the stream
// joined the queue. The answer is known when Lock returns, so Enqueued does
// not block unless the stream is still re-trying its first enqueue under
// WithReacquire, or queueing again because the first grant came too late to
// be held (its reply took longer than the lease). This is the first phase of
// the two-phase acquire: act on it (tell another system the request is
// queued, say) while the stream waits for the grant, then call Wait. It
// returns the error that ended the stream when it ended before the answer
// (ErrClosed after Close).
func (s *holdStream) Enqueued(ctx context.Context) (acquired bool, err error) {
	if ctx == nil {
		return false, s.opErr("acquire", errNilContext)
	}
	for {
		s.mu.Lock()
		st, done, atOnce, err := s.state, s.answered, s.atOnce, s.err
		var changed <-chan struct{}
		if !done && st != StateEnded {
			changed = s.awaitChange()
		}
		s.mu.Unlock()
		switch {
		case done:
			return atOnce, nil
		case st == StateEnded:
			if err == nil {
				err = ErrClosed
			}
			return false, s.opErr("acquire", err)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return false, s.opErr("acquire", ctx.Err())
		}
	}
}

// Release releases the key and ends the stream with Released. It returns
// ErrNotHeld when the stream does not hold the key (it then goes on). When
// the release fails (the server refused it, or did not answer within the
// connect timeout, or ctx ended first) the connection is closed, which
// makes the server release anything left, and the stream ends with a final
// Lost carrying the error Release returns. A renewal in flight is finished
// first (within the connect timeout): if the key is lost meanwhile,
// Release returns ErrNotHeld; if ctx ends, ctx's error, and the stream goes
// on holding the key.
func (s *holdStream) Release(ctx context.Context) error {
	if ctx == nil {
		return s.opErr("release", errNilContext)
	}
	if s.State() != StateHeld {
		return s.opErr("release", ErrNotHeld)
	}
	select {
	case <-s.turn: // the common case: nothing in flight, nothing to wait for
		return s.releaseTurn(ctx)
	default:
	}
	hurried := false
	defer func() {
		if hurried {
			s.unhurry()
		}
	}()
	for {
		s.mu.Lock()
		if s.state != StateHeld {
			s.mu.Unlock()
			return s.opErr("release", ErrNotHeld)
		}
		changed := s.awaitChange()
		s.mu.Unlock()
		select {
		case <-s.turn:
			return s.releaseTurn(ctx)
		default:
		}
		if !hurried {
			// A renewal is in flight: it must not hold the release up
			// longer than the server is given to answer one.
			s.mu.Lock()
			s.hurrying++
			s.mu.Unlock()
			s.hurry(false)
			hurried = true
		}
		select {
		case <-s.turn:
			return s.releaseTurn(ctx)
		case <-changed: // lost meanwhile, say: look again
		case <-ctx.Done():
			return s.opErr("release", ctx.Err())
		}
	}
}

// releaseTurn releases the key with the turn just taken, if it is still
// held.
func (s *holdStream) releaseTurn(ctx context.Context) error {
	if !s.keepIfHeld() {
		return s.opErr("release", ErrNotHeld)
	}
	return s.release(ctx)
}

// Close ends the stream: it releases the key if held and stops waiting if
// queued, then returns once the stream has ended. Idempotent.
func (s *holdStream) Close() error {
	s.shut(ErrClosed)
	return nil
}

// shut ends the stream for the user with cause (ErrClosed, or the error of
// the stream's context) and waits until it has ended.
func (s *holdStream) shut(cause error) {
	s.mu.Lock()
	select {
	case <-s.stop:
	default:
		s.cause = cause
		close(s.stop)
	}
	s.mu.Unlock()
	s.hurry(true)
	select {
	case <-s.turn:
		// Nobody is at work: the stream is held, or has ended.
		if s.keepIfHeld() {
			_ = s.release(context.Background())
		}
	case <-s.done:
	}
	<-s.done
}

// hurry brings the exchange in flight (or the next) forward: a renewal or
// release must be answered within the connect timeout; with all, a dial,
// an enqueue or a wait is ended at once, as the stream is stopping.
func (s *holdStream) hurry(all bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if all && s.dialCancel != nil {
		s.dialCancel()
	}
	switch {
	case s.live == nil:
	case s.state == StateHeld:
		s.live.Expedite(time.Now().Add(s.c.cfg.connectTimeout))
	case all:
		s.live.Interrupt()
	}
}

// unhurry is run by a Release that hurried the connection, once it no
// longer waits. A bound its hurry left for the next exchange (no exchange
// was in flight when it came) was meant for the step it waited on: when
// the Release gave up instead, that step may have ended without an
// exchange, and the bound must not cut a later renewal short. A stream
// being shut keeps it: its release is on the way.
func (s *holdStream) unhurry() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hurrying--
	if s.hurrying == 0 && s.live != nil && !s.stopped() {
		s.live.Unexpedite()
	}
}

// The turn (see holdStream) is a token in s.turn: whoever receives it
// runs the machine until it gives it back with giveTurn. end gives it back
// for good, so a step that comes after the end still gets it, finds the
// stream ended, and gives it back. The steps for a held stream (a renewal,
// a hang-up, a release) take it with takeHeldTurn, or, when they watch
// other channels meanwhile, receive it themselves and call keepIfHeld.

// giveTurn gives the turn back.
func (s *holdStream) giveTurn() { s.turn <- struct{}{} }

// takeHeldTurn waits for the turn and keeps it if the stream still holds
// its key. Otherwise (it lost, released or ended meanwhile) it returns
// false, with the turn given back or, after the end, never taken.
func (s *holdStream) takeHeldTurn() bool {
	select {
	case <-s.turn:
		return s.keepIfHeld()
	case <-s.done:
		return false
	}
}

// keepIfHeld runs with the turn just taken: it reports whether the stream
// still holds its key, and gives the turn back when it does not.
func (s *holdStream) keepIfHeld() bool {
	if s.State() == StateHeld {
		return true
	}
	s.giveTurn()
	return false
}

func (s *holdStream) stopped() bool {
	select {
	case <-s.stop:
		return true
	default:
		return false
	}
}

// stopCause is why the user stopped the stream.
func (s *holdStream) stopCause() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cause
}

// awaitChange returns a channel closed on the next state change; s.mu is
// held. Only a waiter pays for one.
func (s *holdStream) awaitChange() <-chan struct{} {
	if s.changed == nil {
		s.changed = make(chan struct{})
	}
	return s.changed
}

// notify wakes the waiters of a state change; s.mu is held.
func (s *holdStream) notify() {
	if s.changed != nil {
		close(s.changed)
		s.changed = nil
	}
}

func (s *holdStream) setState(st State) {
	s.mu.Lock()
	s.state = st
	s.notify()
	s.mu.Unlock()
}

// answer records the answer to the stream's first enqueue.
func (s *holdStream) answer(atOnce bool) {
	s.mu.Lock()
	if !s.answered {
		s.answered, s.atOnce = true, atOnce
		s.notify()
	}
	s.mu.Unlock()
}
