package dfstream

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/dfstream/dfstream/wire"
)

// The steps of the hold-stream machine (see holdStream): acquiring,
// holding and ending. Each runs with the stream's turn.

// begin is the first phase, run by Lock with the turn: enqueue, and then
// hold, or hand the turn to a goroutine that waits in the queue (or queues
// again, when the grant came too late to be held).
func (s *holdStream) begin() {
	if step, ok := s.first(); ok {
		s.c.actors.Go(func() { s.pursue(step) })
	}
}

// beginWaiting is begin for a caller that then waits until the stream
// holds the key (Lock): the caller itself waits in the queue, so a
// handoff wakes it directly rather than a goroutine that wakes it in turn
// (measured, that hop cost about a tenth of a handoff on two cores).
// It returns once the stream holds the key or has ended, with the turn
// given back.
func (s *holdStream) beginWaiting() {
	if step, ok := s.first(); ok {
		s.pursue(step)
	}
}

// first enqueues with the turn. It gives the turn back when the stream
// holds the key or has ended; otherwise the caller keeps the turn and
// pursues step: wait in the queue, queue again, or back off.
func (s *holdStream) first() (step pursuit, pursuing bool) {
	s.newRound()
	granted, err := s.enqueue()
	switch {
	case err == nil && granted:
		s.giveTurn()
		return 0, false
	case err == nil:
		return waitInQueue, true
	case s.again(err):
		return queueAgain, true
	case s.retrying(err):
		return backOff, true // under re-acquire
	}
	return 0, false
}

// The step pursue takes next.
type pursuit int

const (
	waitInQueue pursuit = iota // the enqueue was answered queued: wait
	queueAgain                 // a grant was given back: enqueue again at once
	backOff                    // a round failed: back off, then start another
)

// pursue runs on the stream's own goroutine, with the turn, while the
// stream is not held: from step on, it waits in the queue, queues again,
// or backs off and starts a new round, until the stream holds the key or
// ends.
func (s *holdStream) pursue(step pursuit) {
	for {
		var err error
		switch step {
		case waitInQueue:
			if err = s.awaitGrant(); err == nil {
				s.giveTurn()
				return
			}
		case backOff:
			if err = s.backoff(); err == nil {
				s.newRound()
				step = queueAgain
				continue
			}
		case queueAgain:
			var granted bool
			if granted, err = s.enqueue(); err == nil {
				if granted {
					s.giveTurn()
					return
				}
				step = waitInQueue
				continue
			}
		}
		switch {
		case s.again(err), s.rejoin(err):
			step = queueAgain
		case s.retrying(err):
			step = backOff
		default:
			return
		}
	}
}

// newRound starts an acquire round: the acquire timeout counts from here,
// through every enqueue the round needs.
func (s *holdStream) newRound() {
	s.roundStart, s.queuedInRound = time.Now(), false
	s.observeRound()
}

// staleGrant is a grant an acquire round gives back rather than hold: its
// reply (or the renewal confirming it) came when the stream would already
// have declared it Lost, or it turned out gone when confirmed. The server
// may have granted the key to the next in line meanwhile.
type staleGrant struct{ err error }

func (e *staleGrant) Error() string { return e.err.Error() }
func (e *staleGrant) Unwrap() error { return e.err }

// again reports whether the acquire round goes on after err: a stale grant
// is given back by dropping its connection (the server then releases
// whatever it still holds for it), and the stream queues again while the
// acquire timeout allows. Otherwise the round has failed with err.
func (s *holdStream) again(err error) bool {
	var stale *staleGrant
	if !errors.As(err, &stale) || s.stopped() {
		return false
	}
	s.dropConn()
	if time.Since(s.roundStart) >= s.cfg.acquireTimeout {
		// The round ends here, and its error says why it was not held.
		stale.err = fmt.Errorf("%w: not acquired within %v; the last grant was given back: %w", ErrTimeout, s.cfg.acquireTimeout, stale.err)
		return false
	}
	s.log.Debug().Err(err).Msg("grant given back; queueing again")
	return true
}

// retrying drops the connection of a failed round and reports whether the
// stream will try again; when not, it has ended.
func (s *holdStream) retrying(err error) bool {
	s.observeRoundEnd(err)
	s.withdraw()
	s.dropConn()
	if s.cfg.reacquire && !s.stopped() && retryable(err) {
		s.log.Debug().Err(err).Msg("acquire failed; will retry")
		return true
	}
	endErr := err
	if s.stopped() {
		err = s.stopCause()
		endErr = closedBy(err)
	} else if errors.Is(err, ErrClosed) {
		endErr = nil
	}
	s.end(Failed{Key: s.key, Err: s.opErr("acquire", err), At: time.Now()}, s.opErr("acquire", endErr))
	return false
}

// exchangeErr is the error of a failed exchange: the user's reason when
// the stream is stopping (the exchange was cut short for it), ErrConnLost
// otherwise.
func (s *holdStream) exchangeErr(err error) error {
	if s.stopped() {
		return s.stopCause()
	}
	return connLost(err)
}

// connect takes a pooled connection or dials one (always, when fresh); a
// dial is cancelled when the stream stops, and a stream stopped meanwhile
// gets its stop cause, the connection left in s.conn for the caller to
// drop.
func (s *holdStream) connect(fresh bool) (*lockConn, error) {
	var lc *lockConn
	if !fresh {
		lc = s.c.pools[s.srv].get()
		s.c.observePool(s.srv, lc != nil)
	}
	if lc == nil {
		// Bounded here, so that the dialer need not bound it again.
		ctx, cancel := context.WithDeadline(context.Background(), s.dialDeadline())
		defer cancel()
		s.mu.Lock()
		s.dialCancel = cancel
		s.mu.Unlock()
		if s.stopped() {
			cancel()
		}
		var err error
		lc, err = s.c.dialSession(ctx, s.srv, s.sref) // fresh, or the pool is empty
		s.mu.Lock()
		s.dialCancel = nil
		s.mu.Unlock()
		switch {
		case err == nil:
		case s.stopped():
			return nil, s.stopCause()
		default:
			return nil, err // ErrUnreachable, ErrAuth, ...: see dialLock
		}
	}
	lc.owner.Store(s)
	s.conn, s.sref = lc, lc.ref // the caller drops it, on error too
	s.mu.Lock()
	defer s.mu.Unlock()
	// Checked under mu, which shut's hurry takes after it stops the
	// stream: either that hurry finds lc live and interrupts its exchange,
	// or lc never goes live. Otherwise a Close that came just before would
	// leave the next exchange to run its course, up to the connect timeout
	// and beyond on a silent server.
	if s.stopped() {
		return nil, s.cause
	}
	s.live = lc
	return lc, nil
}

// enqueue connects and sends the enqueue. When the key is granted at once
// the stream holds it on return; otherwise it is queued.
func (s *holdStream) enqueue() (granted bool, err error) {
	s.setState(StateConnecting)
	var sent time.Time
	var line string
	// On a pooled connection the server closed while it was idle, the
	// enqueue gets no byte of reply, and on a draining server it gets
	// error_draining (see lockConn.stale): it goes once more, on a fresh
	// connection.
	err = s.reach(func(*lockConn) (err error) {
		// A lease left to the server's default is unknown until the
		// reply: then only the check in becomeHeld stands between a late
		// reply and the user.
		line, sent, err = s.grantExchange(s.enqueueReq, s.cfg.lease)
		return err
	})
	if err != nil {
		return false, err
	}
	g, granted, err := wire.ParseEnqueue(s.enqueueReq.Cmd, line)
	if err != nil {
		return false, err
	}
	if granted {
		if err := s.becomeHeld(sent, g.Token, g.Fence, g.Lease); err != nil {
			return false, err
		}
		s.answer(true)
		return true, nil
	}
	s.answer(false)
	s.setState(StateQueued)
	if !s.queuedInRound {
		// Once a round: a stream that queues again after giving a grant
		// back is still waiting for the same acquire, and the outbox's
		// reserve counts one Queued a round.
		s.queuedInRound = true
		s.observeQueued()
		s.out.emit(Queued{Key: s.key, At: time.Now()})
	}
	return false, nil
}

// awaitGrant waits in the queue and holds the grant, confirmed unless the
// wait's reply vouches for it (see waitVouches).
func (s *holdStream) awaitGrant() error {
	if s.stopped() {
		return s.stopCause()
	}
	timeout := max(0, s.cfg.acquireTimeout-time.Since(s.roundStart))
	wait, err := wire.Wait(s.kind, s.key, timeout)
	if err != nil {
		return err
	}
	// The server waits whole seconds, rounded up (see wire.Seconds), and
	// answers "timeout" when they run out; the connect timeout on top is
	// for that answer to arrive. After a re-queue the time left is often a
	// fraction of a second, so the rounding may outweigh the connect
	// timeout. (No overflow: Wait took timeout in whole seconds.)
	waits := timeout.Truncate(time.Second)
	if waits < timeout {
		waits += time.Second
	}
	waitSent := time.Now()
	line, err := s.conn.exchange(context.Background(), wait, deadlineIn(waits, s.c.cfg.connectTimeout))
	if err != nil {
		return s.exchangeErr(err)
	}
	g, err := wire.ParseGrant(wait.Cmd, line)
	if err != nil {
		if errors.Is(err, wire.ErrLeaseExpired) {
			return &staleGrant{fmt.Errorf("grant gone before it was claimed: %w", err)}
		}
		return err
	}
	if s.waitVouches(waitSent, g.Lease) {
		return s.becomeHeld(waitSent, g.Token, g.Fence, g.Lease)
	}
	// The server restarted the lease when it answered the wait, at an
	// unknown instant after the wait was sent, possibly long after. A
	// renewal puts the safe deadline on a known send time again.
	s.token, s.lease = g.Token, s.wantedLease(g.Lease)
	renew, err := wire.Renew(s.kind, s.key, s.token, s.lease)
	if err != nil {
		return err
	}
	line, sent, err := s.grantExchange(renew, s.lease)
	if errors.Is(err, wire.ErrDraining) {
		return &staleGrant{fmt.Errorf("grant gone before it was confirmed: %w", err)}
	}
	if err != nil {
		return err
	}
	lease, fence, err := wire.ParseRenew(renew.Cmd, line)
	if err != nil {
		if errors.Is(err, wire.ErrServer) {
			return &staleGrant{fmt.Errorf("grant gone before it was confirmed: %w", err)}
		}
		return err
	}
	if fence == 0 {
		fence = g.Fence
	}
	return s.becomeHeld(sent, g.Token, fence, lease)
}

// waitVouches reports whether the grant a wait sent at sent brought may be
// held without a renewal to confirm it. The server restarts the lease when
// it answers a wait, after the wait was sent, so sent plus the lease is a
// safe base for the deadline, provided the grant is live: signals-era
// servers answer a wait whose grant ran out unclaimed error_lease_expired,
// but 1.10 answers ok with the stale token (protocol.md, Two-phase), and
// for 2.x only its source says otherwise, so those (and a server not yet
// probed) confirm. So does a reply slow enough that its grant is already
// due for renewal: confirmed, it gets the full lease back.
func (s *holdStream) waitVouches(sent time.Time, lease time.Duration) bool {
	return lease > 0 && s.c.gens[s.srv].load() == GenSignals &&
		time.Now().Before(s.renewalDue(sent, lease))
}

// grantExchange sends req, whose reply may bear a grant of lease (0 when
// the server's default, unknown beforehand), on the stream's connection.
// The reply is awaited within the connect timeout, and no later than the
// moment the stream would declare such a grant Lost: a reply that misses
// it is a stale grant. It returns when the request was sent.
func (s *holdStream) grantExchange(req wire.Request, lease time.Duration) (line string, sent time.Time, err error) {
	sent = time.Now()
	deadline := sent.Add(s.c.cfg.connectTimeout)
	var lossAt time.Time
	if lease != 0 {
		_, lossAt = s.safeDeadline(sent, lease)
		deadline = earliest(deadline, lossAt)
	}
	line, err = s.conn.exchange(context.Background(), req, deadline)
	if err != nil {
		if lease != 0 && ranOut(err, lossAt) && !s.stopped() {
			return "", sent, &staleGrant{connFailed(ErrDeadlinePassed, err)}
		}
		return "", sent, s.exchangeErr(err)
	}
	return line, sent, nil
}

// earliest returns the earlier of two instants.
func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// deadlineIn is the deadline a+b from now, or none when the sum overflows
// (an acquire timeout of "forever").
func deadlineIn(a, b time.Duration) time.Time {
	if d := a + b; d >= a {
		return time.Now().Add(d)
	}
	return time.Time{}
}

// wantedLease is the lease renewals ask for: the configured one, or the
// server default the grant came with.
func (s *holdStream) wantedLease(granted time.Duration) time.Duration {
	if s.cfg.lease != 0 {
		return s.cfg.lease
	}
	return granted
}

// becomeHeld records a grant of lease requested at sent, emits Acquired and
// schedules the first renewal. A grant whose reply came at or after the
// moment the stream would declare it Lost is stale: it is not reported,
// and the caller gives it back. A stream the user stopped meanwhile does
// not take the grant: it fails, and dropping the connection gives the key
// back.
func (s *holdStream) becomeHeld(sent time.Time, token string, fence uint64, lease time.Duration) error {
	fence = s.c.grantFence(s.srv, token, fence)
	s.token, s.fence = token, fence
	s.lease, s.granted = s.wantedLease(lease), lease
	s.setDeadline(sent, lease)
	now := time.Now()
	ev := Acquired{Key: s.key, Token: token, Lease: lease, Fence: fence, Deadline: s.deadline, At: now}
	s.mu.Lock()
	if s.stopped() {
		// Checked under mu, where shut closes stop before it hurries the
		// connection: either that sees Held, or this sees stop.
		s.mu.Unlock()
		return s.stopCause()
	}
	if !now.Before(s.lossAt) {
		s.mu.Unlock()
		return &staleGrant{fmt.Errorf("%w: the grant came %v after it was due to be given up",
			ErrDeadlinePassed, now.Sub(s.lossAt).Round(time.Millisecond))}
	}
	s.state, s.grant, s.heldUntil = StateHeld, ev, s.lossAt
	s.notify()
	s.mu.Unlock()
	s.observeRoundEnd(nil)
	s.attempt = 0
	s.out.emit(ev)
	s.schedule(sent)
	s.log.Debug().Uint64("fence", fence).Dur("lease", lease).Msg("acquired")
	return nil
}

// setDeadline records the safe deadline of a grant or renewal of lease
// requested at sent, and the moment to declare Lost (see safeDeadline).
func (s *holdStream) setDeadline(sent time.Time, lease time.Duration) {
	s.deadline, s.lossAt = s.safeDeadline(sent, lease)
}

// safeDeadline returns the safe deadline of a grant or renewal of lease
// requested at sent, and the moment the stream declares it Lost: the lease
// runs from when the server handled the request, which is after sent, so
// no one else can be granted the key before sent+lease. The margin below
// that absorbs clock-rate differences and delivery to the user; the stream
// acts up to a whole margin earlier still (at most 250ms, and never in the
// first half of what the deadline leaves), so that timer and scheduling
// delays on a loaded machine do not push Lost past the deadline it
// promised: the fault suite saw a 1s lease's Lost come 100ms late under
// -race on two busy cores when the lead was half a margin.
func (s *holdStream) safeDeadline(sent time.Time, lease time.Duration) (deadline, lossAt time.Time) {
	margin := s.cfg.safetyMargin
	if margin == 0 {
		margin = max(lease/10, 50*time.Millisecond)
	}
	margin = min(margin, lease/2)
	deadline = sent.Add(lease - margin)
	lead := min(margin, (lease-margin)/2, 250*time.Millisecond)
	return deadline, deadline.Add(-lead)
}

// renewInterval is how long after a request the next renewal goes out: the
// lease times the renew ratio, but never longer than half the server's read
// timeout, so that the server does not drop an idle holder.
func (s *holdStream) renewInterval(lease time.Duration) time.Duration {
	d := time.Duration(float64(lease) * s.cfg.renewRatio)
	return min(d, s.c.cfg.serverReadTimeout/2)
}

// schedule sets the renewal that follows a request sent at sent: after the
// renew interval, but never later than halfway to the moment the stream
// would declare Lost, so that a large margin or renew ratio still leaves
// the reply time to arrive. The renewal's own deadline is that moment, so
// a server that stops answering is declared lost no later than it.
//
// A connection not yet watched for hang-ups is seen to first, after
// watchDelay (see lockConn).
func (s *holdStream) schedule(sent time.Time) {
	at := s.renewalDue(sent, s.granted)
	s.renewDue = at
	if watchAt := time.Now().Add(watchDelay); s.conn.watch == nil && watchAt.Before(at) {
		at = watchAt
	}
	s.c.renewals.add(s, at)
}

// renewalDue is when a grant or renewal of lease requested at sent is due
// to be renewed (see schedule).
func (s *holdStream) renewalDue(sent time.Time, lease time.Duration) time.Time {
	_, lossAt := s.safeDeadline(sent, lease)
	at := sent.Add(s.renewInterval(lease))
	if half := sent.Add(lossAt.Sub(sent) / 2); half.Before(at) {
		at = half
	}
	return at
}

// renewTick runs on a goroutine of its own when the stream's schedule is
// due: it has the connection watched, and renews when that is due.
func (s *holdStream) renewTick() {
	if !s.takeHeldTurn() {
		return
	}
	s.out.deliver() // into the room the consumer made since the last event
	if s.conn.watch == nil {
		if err := s.conn.watchWith(s.c.watcher); err != nil {
			s.lose(s.opErr("hold", fmt.Errorf("%w: cannot watch the connection: %w", ErrConnLost, err)), false)
			return
		}
		if time.Now().Before(s.renewDue) {
			s.c.renewals.add(s, s.renewDue)
			s.giveTurn()
			return
		}
	}
	if err := s.renew(); err != nil {
		s.lose(s.opErr("renew", err), false)
		return
	}
	s.giveTurn()
}

func (s *holdStream) renew() error {
	sent := time.Now()
	if !sent.Before(s.lossAt) {
		return ErrDeadlinePassed
	}
	req, err := wire.Renew(s.kind, s.key, s.token, s.lease)
	if err != nil {
		return err
	}
	line, err := s.conn.exchange(context.Background(), req, s.lossAt)
	s.observeRenewal(sent, err)
	if err != nil {
		if ranOut(err, s.lossAt) {
			return connFailed(ErrDeadlinePassed, err)
		}
		return connLost(err) // or cut short by a release
	}
	lease, fence, err := wire.ParseRenew(req.Cmd, line)
	if err != nil {
		if errors.Is(err, wire.ErrServer) {
			err = fmt.Errorf("%w: %w", ErrRenewRefused, err)
		}
		return err
	}
	s.granted = lease
	s.setDeadline(sent, lease)
	if fence != 0 {
		s.fence = fence
	}
	s.schedule(sent)
	ev := Renewed{Key: s.key, Lease: lease, Fence: s.fence, Deadline: s.deadline, At: time.Now()}
	s.mu.Lock()
	s.grant.Lease, s.grant.Fence, s.grant.Deadline = ev.Lease, ev.Fence, ev.Deadline
	s.heldUntil = s.lossAt
	s.notify() // a Wait past the last heldUntil waits for this
	s.mu.Unlock()
	s.out.emit(ev)
	return nil
}

// ranOut reports whether an exchange failed by reaching lossAt, the moment
// the stream declares Lost, rather than for another reason.
func ranOut(err error, lossAt time.Time) bool {
	return errors.Is(err, os.ErrDeadlineExceeded) && !time.Now().Before(lossAt)
}

// hungUp runs on the connection watcher's goroutine when the server hangs
// up on lc.
func (s *holdStream) hungUp(lc *lockConn) {
	if !s.takeHeldTurn() {
		return
	}
	if s.conn != lc {
		s.giveTurn() // whoever used lc has seen it fail
		return
	}
	s.lose(s.opErr("hold", fmt.Errorf("%w: the server closed the connection", ErrConnLost)), false)
}

// release gives the key back and ends the stream. A connection that ended
// this cleanly goes back to the pool; any other outcome closes it.
func (s *holdStream) release(ctx context.Context) error {
	s.c.renewals.remove(s)
	req, err := wire.Release(s.kind, s.key, s.token)
	if err != nil {
		s.lose(err, true)
		return err
	}
	lc := s.conn
	// Until the reply, the stream still claims the key: past the moment it
	// promised to give that claim up, the release is a loss.
	line, err := lc.exchange(ctx, req, earliest(time.Now().Add(s.c.cfg.connectTimeout), s.lossAt))
	if err == nil {
		err = wire.ParseOK(req.Cmd, line)
	}
	if err != nil {
		lc, err = s.releaseOnLeader(ctx, req, lc, err)
	}
	if err != nil {
		switch {
		case errors.Is(err, wire.ErrServer):
			err = fmt.Errorf("%w: the server refused the release: %w", ErrLeaseExpired, err)
		case ctx.Err() != nil:
			err = fmt.Errorf("%w: closed to free the key: %w", ErrConnLost, ctx.Err())
		case ranOut(err, s.lossAt):
			err = connFailed(ErrDeadlinePassed, err)
		default:
			err = connFailed(ErrConnLost, err)
		}
		err = s.opErr("release", err)
		s.lose(err, true)
		return err
	}
	s.mu.Lock()
	s.live = nil // from here on, hurry leaves lc alone
	s.mu.Unlock()
	s.conn = nil
	s.c.pools[s.srv].put(lc, s.c.watcher) // unless a hurry came first: see usable
	s.observeEnd(nil)
	s.end(Released{Key: s.key, At: time.Now()}, s.userErr())
	return nil
}

// userErr is the error a stream ending as its user asked reports.
func (s *holdStream) userErr() error {
	if s.stopped() {
		return s.opErr("hold", closedBy(s.stopCause()))
	}
	return nil
}

// lose forgets the grant and closes the connection, so that the server
// releases anything it still holds for us. Under re-acquire, unless the
// stream is ending (final, or stopped by the user), it emits Lost and hands
// the turn to a goroutine that backs off and queues again; otherwise the
// stream ends with a final Lost.
func (s *holdStream) lose(reason error, final bool) {
	if !final && s.movable(reason) {
		s.c.actors.Go(func() { s.move(reason) })
		return
	}
	// Lost is stamped and emitted before the connection closes: closing it
	// makes the server hand the key on at once, and the next holder's
	// grant must not come before this holder was told.
	lost := Lost{Key: s.key, Reason: reason, At: time.Now()}
	s.observeEnd(reason)
	s.c.renewals.remove(s)
	s.log.Debug().Err(reason).Msg("lost")
	if final || s.stopped() || !s.cfg.reacquire {
		lost.Final = true
		s.end(lost, reason)
		return
	}
	s.setState(StateBackoff)
	s.out.emit(lost)
	s.dropConn()
	s.c.actors.Go(func() { s.pursue(backOff) })
}

func (s *holdStream) dropConn() {
	if s.conn == nil {
		return
	}
	s.mu.Lock()
	s.live = nil
	s.mu.Unlock()
	s.conn.owner.Store(nil)
	s.conn.close()
	s.conn = nil
}

// backoff waits before queueing again, and until the event channel has room
// for another round's events: acquisitions and losses are never dropped, so
// behind a consumer that stopped reading the stream pauses rather than let
// them pile up without bound.
func (s *holdStream) backoff() error {
	s.setState(StateBackoff)
	s.attempt++
	t := time.NewTimer(jitterBackoff(s.cfg.backoffMin, s.cfg.backoffMax, s.attempt))
	defer t.Stop()
	for {
		select {
		case <-t.C:
			s.out.deliver()
			if s.out.roomForRound() {
				return nil
			}
			t.Reset(s.cfg.backoffMin)
		case <-s.stop:
			return s.stopCause()
		}
	}
}

// end emits the terminal event, closes the event channel and Done, and
// gives the turn back for good: whoever takes it later finds the stream
// ended.
func (s *holdStream) end(final Event, err error) {
	s.c.renewals.remove(s)
	// Err and State are settled before the channel closes: a consumer that
	// sees it closed reads why at once. The connection closes after the
	// final event is out (see lose).
	s.mu.Lock()
	s.state, s.err = StateEnded, err
	s.notify()
	s.mu.Unlock()
	s.out.emit(final)
	s.out.close()
	s.dropConn()
	if s.unhook != nil {
		s.unhook()
	}
	s.c.unregister(s)
	close(s.done)
	s.giveTurn()
}
