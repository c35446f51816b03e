package dfstream

import (
	"context"
	"errors"
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
	ctl    chan chan error // release requests; the actor answers on the channel
	cancel context.CancelCauseFunc
	done   chan struct{}

	mu       sync.Mutex
	state    State
	answered bool // the first enqueue was answered
	atOnce   bool // … with a grant rather than a place in the queue
	grant    Acquired
	err      error
	changed  chan struct{} // closed and replaced on every state change
}

func (c *Client) startHold(ctx context.Context, kind wire.Kind, key string, limit int, opts []StreamOption) (*holdStream, error) {
	cfg := c.cfg.stream
	for _, o := range opts {
		if err := o.applyStream(&cfg); err != nil {
			return nil, err
		}
	}
	if ctx == nil {
		return nil, fmt.Errorf("dfstream: nil context: %w", ErrInvalidInput)
	}
	req, err := wire.Enqueue(kind, key, limit, cfg.lease)
	if err != nil {
		return nil, err
	}
	// Build the wait once too, so that every input error surfaces here,
	// before a connection exists.
	if _, err := wire.Wait(kind, key, cfg.acquireTimeout); err != nil {
		return nil, err
	}
	srv, err := c.shard(key)
	if err != nil {
		return nil, err
	}
	s := &holdStream{
		c: c, key: key, kind: kind, limit: limit, cfg: cfg, srv: srv,
		log:        c.cfg.logger,
		enqueueReq: req,
		ctl:        make(chan chan error),
		done:       make(chan struct{}),
		changed:    make(chan struct{}),
	}
	if s.log.GetLevel() != zerolog.Disabled {
		// Only a logger that logs pays for the per-stream context.
		s.log = s.log.With().Str("key", key).Str("kind", kind.String()).Logger()
	}
	box := newOutbox(cfg.eventBuffer)
	s.events = box.ch
	actx, cancel := context.WithCancelCause(ctx)
	s.cancel = cancel
	a := &holdActor{s: s, out: box}
	if err := c.register(s, func() { a.run(actx) }); err != nil {
		cancel(nil)
		return nil, err
	}
	return s, nil
}

// Events returns the stream's events: Queued, Acquired, Renewed (coalesced
// behind a slow consumer), Lost, and one terminal event (Released, Failed,
// or a final Lost), after which the channel is closed. Acquired, Lost,
// Released and Failed are never dropped.
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

// Held returns the current grant and true while the stream holds the key.
func (s *holdStream) Held() (Acquired, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.grant, s.state == StateHeld
}

// Err reports why the stream ended: nil while it runs and after a plain
// release or Close; otherwise matchable with errors.Is (ErrTimeout,
// ErrConnLost, ErrDeadlinePassed, ErrAuth, context.Canceled, …).
func (s *holdStream) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Wait blocks until the stream holds the key and returns the grant, or
// returns the error that ended the stream, or ctx's error. It does not
// consume events.
func (s *holdStream) Wait(ctx context.Context) (Acquired, error) {
	for {
		s.mu.Lock()
		st, g, err, changed := s.state, s.grant, s.err, s.changed
		s.mu.Unlock()
		switch st {
		case StateHeld:
			return g, nil
		case StateEnded:
			if err == nil {
				err = ErrClosed
			}
			return Acquired{}, fmt.Errorf("dfstream: %s %q not acquired: %w", s.kind, s.key, err)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return Acquired{}, ctx.Err()
		}
	}
}

// Enqueued blocks until the server answered the stream's first enqueue:
// acquired reports whether the key was granted at once (true) or the stream
// joined the queue (false). This is the first phase of the two-phase
// acquire: act on it (tell another system the request is queued, say) while
// the stream waits for the grant, then call Wait. It returns the error that
// ended the stream when it ended before the answer (ErrClosed after Close).
func (s *holdStream) Enqueued(ctx context.Context) (acquired bool, err error) {
	for {
		s.mu.Lock()
		st, done, atOnce, err, changed := s.state, s.answered, s.atOnce, s.err, s.changed
		s.mu.Unlock()
		switch {
		case done:
			return atOnce, nil
		case st == StateEnded:
			if err == nil {
				err = ErrClosed
			}
			return false, err
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
}

// Release releases the key and ends the stream with Released. It returns
// ErrNotHeld when the stream does not hold the key (it then goes on), and
// the reason when the lock turned out to be lost already.
func (s *holdStream) Release(ctx context.Context) error {
	reply := make(chan error, 1)
	select {
	case s.ctl <- reply:
	case <-s.done:
		return ErrNotHeld
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close ends the stream: it releases the key if held and stops waiting if
// queued, then returns once the stream's goroutines have exited. Idempotent.
func (s *holdStream) Close() error {
	s.cancel(ErrClosed)
	<-s.done
	return nil
}

func (s *holdStream) setState(st State, g *Acquired) {
	s.mu.Lock()
	s.state = st
	if g != nil {
		s.grant = *g
	}
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

// answer records the answer to the stream's first enqueue.
func (s *holdStream) answer(atOnce bool) {
	s.mu.Lock()
	if !s.answered {
		s.answered, s.atOnce = true, atOnce
	}
	s.mu.Unlock()
}

// renewed keeps the grant Held reports up to date.
func (s *holdStream) renewed(ev Renewed) {
	s.mu.Lock()
	s.grant.Lease, s.grant.Fence, s.grant.Deadline = ev.Lease, ev.Fence, ev.Deadline
	s.mu.Unlock()
}

func (s *holdStream) end(err error) {
	s.mu.Lock()
	s.state, s.err = StateEnded, err
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

// holdActor is the state only the stream's goroutine touches.
type holdActor struct {
	s        *holdStream
	out      outbox
	conn     *wire.Conn
	lease    time.Duration // what renewals ask for
	granted  time.Duration // what the server last applied
	token    string
	fence    uint64
	deadline time.Time // the safe deadline promised in events
	lossAt   time.Time // when to declare Lost: a little before deadline
	attempt  int
}

func (a *holdActor) run(ctx context.Context) {
	s := a.s
	var final Event
	var endErr error
	defer func() {
		a.out.emit(final)
		a.out.close()
		s.end(endErr)
		// Detach from the parent context, which may outlive the stream.
		s.cancel(context.Canceled)
		close(s.done)
	}()
	for {
		if err := a.acquire(ctx); err != nil {
			a.dropConn()
			if s.cfg.reacquire && ctx.Err() == nil && retryable(err) {
				s.log.Debug().Err(err).Msg("acquire failed; will retry")
				if err = a.backoff(ctx); err == nil {
					continue
				}
			}
			final, endErr = Failed{Key: s.key, Err: err, At: time.Now()}, err
			if errors.Is(err, ErrClosed) {
				endErr = nil
			}
			return
		}
		reason, byUser := a.hold(ctx)
		if byUser && reason == nil {
			final, endErr = Released{Key: s.key, At: time.Now()}, userCause(ctx)
			return
		}
		if byUser || !s.cfg.reacquire || ctx.Err() != nil {
			// A release that found the lock gone ends the stream even
			// with re-acquire: the user has given the key up.
			final, endErr = Lost{Key: s.key, Reason: reason, Final: true, At: time.Now()}, reason
			return
		}
		a.out.emit(Lost{Key: s.key, Reason: reason, At: time.Now()})
		if err := a.backoff(ctx); err != nil {
			final, endErr = Failed{Key: s.key, Err: err, At: time.Now()}, userCause(ctx)
			return
		}
	}
}

// connLost marks an error of the connection itself as ErrConnLost.
func connLost(err error) error {
	if err != nil && errors.Is(err, wire.ErrClosed) && !errors.Is(err, ErrConnLost) {
		return fmt.Errorf("%w: %w", ErrConnLost, err)
	}
	return err
}

// retryable reports whether a failed acquire may succeed if tried again:
// not when the request itself or the credentials are wrong.
func retryable(err error) bool {
	for _, fatal := range []error{ErrInvalidInput, ErrAuth, ErrLimitMismatch, ErrTypeMismatch} {
		if errors.Is(err, fatal) {
			return false
		}
	}
	return true
}

// userCause is the error a stream ended by its context reports: nil when
// the user closed it, the context's error otherwise.
func userCause(ctx context.Context) error {
	if err := context.Cause(ctx); err != nil && !errors.Is(err, ErrClosed) {
		return err
	}
	return nil
}

// acquire connects, enqueues and, if queued, waits for the grant.
func (a *holdActor) acquire(ctx context.Context) error {
	s := a.s
	s.setState(StateConnecting, nil)
	start := time.Now()
	conn, err := s.c.conn(ctx, s.srv)
	if err != nil {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		if errors.Is(err, wire.ErrAuth) || errors.Is(err, wire.ErrInvalidInput) {
			return err
		}
		return fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	a.conn = conn
	sent := time.Now()
	line, err := a.call(ctx, s.enqueueReq)
	if err != nil {
		return err
	}
	g, acquired, err := wire.ParseEnqueue(s.enqueueReq.Cmd, line)
	if err != nil {
		return err
	}
	s.answer(acquired)
	if !acquired {
		s.setState(StateQueued, nil)
		a.out.emit(Queued{Key: s.key, At: time.Now()})
		wait, err := wire.Wait(s.kind, s.key, max(0, s.cfg.acquireTimeout-time.Since(start)))
		if err != nil {
			return err
		}
		if line, err = a.call(ctx, wait); err != nil {
			return err
		}
		if g, err = wire.ParseGrant(wait.Cmd, line); err != nil {
			return err
		}
	}
	a.token, a.fence, a.attempt = g.Token, g.Fence, 0
	a.lease = s.cfg.lease
	if a.lease == 0 {
		a.lease = g.Lease // keep the server default we were given
	}
	if !acquired {
		// The server restarted the lease when it answered the wait, at an
		// unknown instant after the wait was sent, possibly long after. A
		// renewal puts the safe deadline on a known send time again.
		if sent, g.Lease, err = a.confirm(ctx); err != nil {
			return err
		}
	}
	a.granted = g.Lease
	a.setDeadline(sent, g.Lease)
	ev := Acquired{Key: s.key, Token: g.Token, Lease: g.Lease, Fence: a.fence, Deadline: a.deadline, At: time.Now()}
	s.setState(StateHeld, &ev)
	a.out.emit(ev)
	s.log.Debug().Uint64("fence", g.Fence).Dur("lease", g.Lease).Msg("acquired")
	return nil
}

// confirm renews a grant that came from a wait and returns when the renewal
// was sent and the lease it applied.
func (a *holdActor) confirm(ctx context.Context) (sent time.Time, lease time.Duration, err error) {
	req, err := wire.Renew(a.s.kind, a.s.key, a.token, a.lease)
	if err != nil {
		return sent, 0, err
	}
	sent = time.Now()
	line, err := a.call(ctx, req)
	if err != nil {
		return sent, 0, err
	}
	lease, fence, err := wire.ParseRenew(req.Cmd, line)
	if err != nil {
		return sent, 0, fmt.Errorf("grant gone before it was confirmed: %w", err)
	}
	if fence != 0 {
		a.fence = fence
	}
	return sent, lease, nil
}

// call sends req and waits for its reply, delivering events and answering
// release requests (nothing is held yet) meanwhile. When ctx ends first the
// connection is closed: the reply would arrive on a connection nobody reads.
func (a *holdActor) call(ctx context.Context, req wire.Request) (string, error) {
	reply, err := a.conn.Go(req)
	if err != nil {
		return "", connLost(err)
	}
	for {
		select {
		case <-reply.Done():
			line, err := reply.Result()
			return line, connLost(err)
		case a.out.out() <- a.out.head():
			a.out.sent()
		case reply := <-a.s.ctl:
			reply <- ErrNotHeld
		case <-ctx.Done():
			a.dropConn()
			return "", context.Cause(ctx)
		}
	}
}

// setDeadline records the safe deadline of a grant or renewal of lease
// requested at sent: the lease runs from when the server handled the
// request, which is after sent, so no one else can be granted the key
// before sent+lease. The margin below that absorbs clock-rate differences
// and delivery to the user; the stream acts half a margin (at most 250ms)
// earlier still, so that timer and scheduling delays cannot push Lost past
// the deadline it promised.
func (a *holdActor) setDeadline(sent time.Time, lease time.Duration) {
	margin := a.s.cfg.safetyMargin
	if margin == 0 {
		margin = max(lease/10, 50*time.Millisecond)
	}
	margin = min(margin, lease/2)
	a.deadline = sent.Add(lease - margin)
	a.lossAt = a.deadline.Add(-min(margin/2, 250*time.Millisecond))
}

// renewInterval is how long after a request the next renewal goes out: the
// lease times the renew ratio, but never longer than half the server's read
// timeout, so that the server does not drop an idle holder.
func (a *holdActor) renewInterval(lease time.Duration) time.Duration {
	d := time.Duration(float64(lease) * a.s.cfg.renewRatio)
	return min(d, a.s.c.cfg.serverReadTimeout/2)
}

// renewDelay is how long after now the renewal following a request sent at
// sent goes out: the renew interval, but never later than halfway to the
// moment the stream would declare Lost, so that a large margin or renew
// ratio still leaves the reply time to arrive.
func (a *holdActor) renewDelay(sent time.Time) time.Duration {
	at := sent.Add(a.renewInterval(a.granted))
	if half := sent.Add(a.lossAt.Sub(sent) / 2); half.Before(at) {
		at = half
	}
	return time.Until(at)
}

// hold keeps the key until the user ends it (byUser: Release, Close or the
// context; reason is nil when the release succeeded) or it is lost (reason
// says why).
func (a *holdActor) hold(ctx context.Context) (reason error, byUser bool) {
	s := a.s
	renew := time.NewTimer(a.renewDelay(a.conn.LastUsed()))
	deadline := time.NewTimer(time.Until(a.lossAt))
	defer renew.Stop()
	defer deadline.Stop()
	var inflight *wire.Call // the renewal out, if any
	var inflightSent time.Time
	var renewCmd string
	for {
		var replied <-chan struct{}
		if inflight != nil {
			replied = inflight.Done()
		}
		select {
		case a.out.out() <- a.out.head():
			a.out.sent()
		case <-renew.C:
			req, err := wire.Renew(s.kind, s.key, a.token, a.lease)
			if err != nil {
				return a.lose(err), false
			}
			inflightSent, renewCmd = time.Now(), req.Cmd
			if inflight, err = a.conn.Go(req); err != nil {
				return a.lose(fmt.Errorf("%w: %w", ErrConnLost, err)), false
			}
		case <-replied:
			line, err := inflight.Result()
			inflight = nil
			if err != nil {
				return a.lose(fmt.Errorf("%w: %w", ErrConnLost, err)), false
			}
			lease, fence, err := wire.ParseRenew(renewCmd, line)
			if err != nil {
				if errors.Is(err, wire.ErrServer) {
					err = fmt.Errorf("%w: %w", ErrRenewRefused, err)
				}
				return a.lose(err), false
			}
			a.granted = lease
			a.setDeadline(inflightSent, lease)
			if fence != 0 {
				a.fence = fence
			}
			deadline.Reset(time.Until(a.lossAt))
			renew.Reset(a.renewDelay(inflightSent))
			ev := Renewed{Key: s.key, Lease: lease, Fence: a.fence, Deadline: a.deadline, At: time.Now()}
			s.renewed(ev)
			a.out.emit(ev)
		case <-deadline.C:
			return a.lose(ErrDeadlinePassed), false
		case <-a.conn.Done():
			return a.lose(fmt.Errorf("%w: %w", ErrConnLost, a.conn.Err())), false
		case reply := <-s.ctl:
			err := a.release()
			reply <- err
			return err, true
		case <-ctx.Done():
			return a.release(), true
		}
	}
}

// release gives the key back. A connection that ended this cleanly goes back
// to the pool; any other outcome closes it. An error means the key had been
// lost already.
func (a *holdActor) release() error {
	s := a.s
	req, err := wire.Release(s.kind, s.key, a.token)
	if err != nil {
		return a.lose(err)
	}
	line, err := a.await(req, s.c.cfg.connectTimeout)
	if err == nil {
		err = wire.ParseOK(req.Cmd, line)
	}
	if err != nil {
		if errors.Is(err, wire.ErrServer) {
			err = fmt.Errorf("%w: release refused: %w", ErrLeaseExpired, err)
		} else {
			err = fmt.Errorf("%w: %w", ErrConnLost, err)
		}
		return a.lose(err)
	}
	s.c.pools[s.srv].put(a.conn)
	a.conn = nil
	s.setState(StateEnded, nil)
	return nil
}

// await sends req and waits at most timeout for its reply. It serves the
// release, where nothing else may happen meanwhile: the stream is ending.
func (a *holdActor) await(req wire.Request, timeout time.Duration) (string, error) {
	call, err := a.conn.Go(req)
	if err != nil {
		return "", err
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-call.Done():
		return call.Result()
	case <-t.C:
		return "", fmt.Errorf("%s: no reply within %v: %w", req.Cmd, timeout, ErrTimeout)
	}
}

// lose forgets the grant and closes the connection, so that the server
// releases anything it still holds for us.
func (a *holdActor) lose(reason error) error {
	a.dropConn()
	a.s.setState(StateBackoff, nil)
	a.s.log.Debug().Err(reason).Msg("lost")
	return reason
}

func (a *holdActor) dropConn() {
	if a.conn != nil {
		_ = a.conn.Close()
		a.conn = nil
	}
}

// backoff waits before queueing again, and until the event channel has room
// for another round's events: acquisitions and losses are never dropped, so
// behind a consumer that stopped reading the stream pauses rather than let
// them pile up without bound.
func (a *holdActor) backoff(ctx context.Context) error {
	a.s.setState(StateBackoff, nil)
	a.attempt++
	t := time.NewTimer(jitterBackoff(a.s.cfg.backoffMin, a.s.cfg.backoffMax, a.attempt))
	defer t.Stop()
	for {
		select {
		case a.out.out() <- a.out.head():
			a.out.sent()
		case <-t.C:
			if a.out.roomForRound() {
				return nil
			}
			t.Reset(a.s.cfg.backoffMin)
		case reply := <-a.s.ctl:
			reply <- ErrNotHeld
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}
