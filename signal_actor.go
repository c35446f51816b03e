package dfstream

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dfstream/dfstream/wire"
)

// The signal stream's actor: the goroutine that owns the connection, sends
// commands, matches replies, runs the heartbeat and reconnects.

type cmdOp uint8

const (
	opListen cmdOp = iota
	opUnlisten
	opEmit
)

// sigCmd is a user request to the actor; the actor answers exactly once on
// reply, which has room for the answer.
type sigCmd struct {
	op    cmdOp
	key   subKey
	only  *Subscription // Unlisten: only if the stream's subscription to key is this one
	req   wire.Request
	ctx   context.Context // Emit only: not sent once the caller gave up
	reply chan cmdResult
}

type cmdResult struct {
	n   int
	sub *Subscription // Listen: the subscription, when confirmed
	err error
}

func (cmd *sigCmd) answer(n int, err error) { cmd.reply <- cmdResult{n: n, err: err} }

// callKind says what an in-flight request is for.
type callKind uint8

const (
	callListen      callKind = iota // a user's Listen
	callUnlisten                    // a user's Unlisten
	callEmit                        // a user's Emit
	callResub                       // listening again after a reconnect
	callProbeListen                 // the probe channel's subscription
	callPing                        // heartbeat ping
	callProbe                       // heartbeat probe signal, on this connection
	callKeepalive                   // a signal instead of ping, for servers that refuse it
)

// cmd is the command a call of kind k sends, for error messages.
func (k callKind) cmd() string {
	switch k {
	case callUnlisten:
		return "unlisten"
	case callEmit, callProbe, callKeepalive:
		return "signal"
	case callPing:
		return "ping"
	}
	return "listen"
}

// keepalivePayload is the payload of a callKeepalive signal: not a probe
// sequence number, so its arrival proves nothing (see SignalStream.onProbe).
const keepalivePayload = "keepalive"

type inflight struct {
	kind callKind
	call *wire.Call
	cmd  *sigCmd
	key  subKey
	seq  uint64 // callProbe: the probe's sequence number
	prev uint64 // callProbe: the probe expected back before this one
}

// probeResult is the outcome of a probe emitted on a connection of its own
// (sigActor.probeAround).
type probeResult struct {
	seq uint64
	at  time.Time    // when it was emitted
	req wire.Request // the probe signal
	gen uint64       // the connection it probed (sigActor.gen)
	n   int          // copies the server counted
	err error
}

// pendingProbe is a probe whose result arrived too late to be checked at
// the next heartbeat: its signal gets half an interval to arrive.
type pendingProbe struct {
	seq uint64
	due time.Time
}

type dialResult struct {
	conn *wire.Conn
	err  error
}

type subState struct {
	sub       *Subscription
	confirmed bool
}

// sigActor is the state only the stream's goroutine touches.
type sigActor struct {
	s    *SignalStream
	conn *wire.Conn

	calls   []inflight // FIFO, paired with the replies
	waiting []*sigCmd  // emits waiting for a connection
	// waiters are Listen calls waiting for the server to confirm a
	// subscription that is registered but not yet (re)established.
	waiters  map[subKey][]*sigCmd
	subs     []subState
	subIndex map[subKey]int
	subSeq   uint64 // subscriptions made

	// unlistening counts the Unlisten requests in flight per subscription:
	// a Listen confirmed while one is pending was overtaken by it.
	unlistening map[subKey]int

	staged Event // taken from the inbox, being offered to the consumer

	hb          *time.Timer
	gen         uint64 // counts connections
	probeOn     bool   // heartbeat probes are enabled for this stream
	probeOK     bool   // the probe subscription is in place on this connection
	probeNext   uint64 // the last probe sequence number used
	probeSeq    uint64 // the newest probe that must have come back by the next heartbeat
	pending     pendingProbe
	probesOut   int    // probes being emitted on a connection of their own (at most 2)
	probingGen  uint64 // the connection the newest of them probes
	fresh       bool   // the last probe went out on a connection of its own
	freshSeq    uint64 // the newest such probe the server counted a copy of ...
	freshAt     time.Time
	proven      time.Time // ... and the send time of the newest that came back
	probeRes    chan probeResult
	probeWG     sync.WaitGroup
	strays      int  // probes in a row the server at the address counted no copy of
	pingOut     bool // a ping (or the keepalive sent instead) is unanswered
	pingRefused bool // this connection's server answers error to ping
	resubLeft   int  // listens of a new connection still unanswered
	ready       bool // connected, and every subscription confirmed
	reconnect   bool // between a loss and the Reconnected event

	retry     *time.Timer
	dialing   bool
	dialRes   chan dialResult
	dialWG    sync.WaitGroup
	attempt   int
	downSince time.Time

	ended bool
	final Event
	err   error
}

func (a *sigActor) run(ctx context.Context) {
	s := a.s
	defer a.finish()
	a.connected()
	for !a.ended {
		var replied <-chan struct{}
		if len(a.calls) > 0 {
			replied = a.calls[0].call.Done()
		}
		var connDone <-chan struct{}
		var hb <-chan time.Time
		if a.conn != nil {
			connDone = a.conn.Done()
			if s.cfg.heartbeat > 0 {
				hb = a.hb.C
			}
		}
		var out chan<- Event
		if a.staged != nil {
			out = s.box.ch
		}
		var retry <-chan time.Time
		if a.conn == nil && !a.dialing {
			retry = a.retry.C
		}
		select {
		case <-ctx.Done():
			a.stop(Closed{Err: userCause(ctx), At: time.Now()}, userCause(ctx))
		case out <- a.staged:
			a.staged = s.box.sent(a.staged)
		case <-s.box.wake:
			if s.box.overflowed() {
				err := fmt.Errorf("%w: more than %d signals waiting", ErrOverflow, s.cfg.buffer)
				a.stop(Failed{Err: err, At: time.Now()}, err)
				break
			}
			if a.staged != nil {
				a.staged = s.box.retake(a.staged)
			} else {
				a.staged = s.box.next()
			}
		case cmd := <-s.cmds:
			a.command(cmd)
		case <-replied:
			a.replies()
		case <-connDone:
			a.lost(fmt.Errorf("%w: %w", ErrConnLost, a.conn.Err()))
		case <-hb:
			a.heartbeat(ctx)
		case res := <-a.probeRes:
			a.probed(res)
		case <-retry:
			a.dial(ctx)
		case res := <-a.dialRes:
			a.dialed(res)
		}
	}
}

// stop ends the stream with final as its terminal event.
func (a *sigActor) stop(final Event, err error) {
	a.ended, a.final, a.err = true, final, err
}

// finish releases everything and delivers the terminal event.
func (a *sigActor) finish() {
	s := a.s
	s.cancel(ErrClosed) // stops a dial in progress
	a.hb.Stop()
	a.retry.Stop()
	a.dialWG.Wait()
	a.probeWG.Wait()
	select {
	case res := <-a.dialRes:
		if res.conn != nil {
			_ = res.conn.Close()
		}
	default:
	}
	if a.conn != nil {
		_ = a.conn.Close()
		a.conn = nil
	}
	s.connected.Store(false)
	cause := closedCause(a.err)
	for _, c := range a.calls {
		if c.cmd != nil {
			a.answerLost(c, cause)
		}
	}
	a.calls = nil
	for _, cmd := range a.waiting {
		cmd.answer(0, cause)
	}
	a.waiting = nil
	for _, ws := range a.waiters {
		for _, cmd := range ws {
			cmd.answer(0, cause)
		}
	}
	a.waiters = nil
	for _, st := range a.subs {
		st.sub.listening.Store(false)
	}
	final := a.final
	if final == nil {
		final = Closed{At: time.Now()}
	}
	// Err is set before the Events channel closes, for a consumer that
	// asks it then.
	s.end(a.err)
	s.box.finish(a.staged, final, s.cfg.drain)
	a.staged = nil
	if a.err != nil {
		s.log.Debug().Err(a.err).Msg("signal stream ended")
	}
	close(s.done)
}

// closedCause is the error of a call on a stream that ended with err (nil
// after Close): it matches ErrClosed, and err.
func closedCause(err error) error {
	if err == nil || errors.Is(err, ErrClosed) {
		return cmp.Or(err, ErrClosed)
	}
	return fmt.Errorf("%w: %w", ErrClosed, err)
}

// answerLost answers the user command of a request whose reply will never
// come.
func (a *sigActor) answerLost(c inflight, err error) {
	switch c.kind {
	case callUnlisten:
		c.cmd.answer(0, nil) // the subscription is gone with the connection
	default:
		c.cmd.answer(0, err)
	}
}

// connected sets up a fresh connection: listen to the probe channel and to
// every subscription again, then send what waited for a connection.
func (a *sigActor) connected() {
	s := a.s
	a.gen++
	a.probeOK, a.pingOut, a.pingRefused, a.strays = false, false, false, 0
	// No probe of an earlier connection can arrive any more (its reader
	// has exited): forget the ones that may have been lost with it.
	a.probeSeq = a.probeNext
	a.pending, a.fresh, a.freshSeq = pendingProbe{}, false, 0
	s.probeSeen.Store(a.probeNext)
	a.resubLeft = 0
	if a.probeOn {
		req, err := wire.Listen(s.probeCh, "")
		if err == nil && a.send(inflight{kind: callProbeListen}, req) {
			a.resubLeft++
		}
	}
	for i := range a.subs {
		if a.conn == nil {
			return
		}
		key := a.subs[i].sub.key
		req, err := wire.Listen(key.pattern, key.group)
		if err != nil {
			continue // validated when added; cannot happen
		}
		if a.send(inflight{kind: callResub, key: key}, req) {
			a.resubLeft++
		}
	}
	if a.conn == nil {
		return
	}
	if s.cfg.heartbeat > 0 {
		a.hb.Reset(heartbeatJitter(s.cfg.heartbeat))
	}
	if a.resubLeft == 0 {
		a.resubscribed()
	}
}

// resubscribed runs when every listen of a new connection is answered: the
// stream is ready, and the emits that waited for it are sent.
func (a *sigActor) resubscribed() {
	s := a.s
	a.ready = true
	s.connected.Store(true)
	now := time.Now()
	s.lastSeen.Store(now.UnixNano()) // the server delivers from here on
	a.proven = now
	if a.reconnect {
		a.reconnect = false
		s.box.pushState(Reconnected{
			Server:   s.addr,
			Attempts: a.attempt,
			Since:    a.downSince,
			Down:     now.Sub(a.downSince),
			At:       now,
		})
		s.log.Info().Int("attempts", a.attempt).Dur("down", now.Sub(a.downSince)).Msg("reconnected")
		s.observeReconnected(now.Sub(a.downSince), a.attempt)
		a.attempt = 0
		if a.staged == nil {
			a.staged = s.box.next()
		}
	}
	waiting := a.waiting
	a.waiting = nil
	for i, cmd := range waiting {
		if !a.ready {
			a.waiting = append(a.waiting, waiting[i:]...)
			return
		}
		a.emit(cmd)
	}
}

// send writes req on the connection and records it as in flight. It
// reports false when the connection turned out to be gone (the stream is
// then disconnected, and the request answered or requeued).
func (a *sigActor) send(c inflight, req wire.Request) bool {
	if a.conn == nil {
		a.requeue(c)
		return false
	}
	call, err := a.conn.Go(req)
	if err != nil {
		if errors.Is(err, wire.ErrInvalidInput) {
			if c.cmd != nil {
				c.cmd.answer(0, err)
			}
			return false
		}
		a.requeue(c)
		a.lost(fmt.Errorf("%w: %w", ErrConnLost, err))
		return false
	}
	c.call = call
	a.calls = append(a.calls, c)
	if c.kind == callUnlisten {
		a.unlistening[c.key]++
	}
	return true
}

// requeue keeps the user command of a request that never reached the server
// for the next connection.
func (a *sigActor) requeue(c inflight) {
	switch c.kind {
	case callEmit:
		a.waiting = append(a.waiting, c.cmd)
	case callListen:
		a.waiters[c.key] = append(a.waiters[c.key], c.cmd)
	case callUnlisten:
		c.cmd.answer(0, nil)
	}
}

func (a *sigActor) command(cmd *sigCmd) {
	switch cmd.op {
	case opListen:
		a.addSub(cmd.key)
		if a.conn == nil {
			a.waiters[cmd.key] = append(a.waiters[cmd.key], cmd)
			return
		}
		a.send(inflight{kind: callListen, cmd: cmd, key: cmd.key}, cmd.req)
	case opUnlisten:
		if cmd.only != nil && a.sub(cmd.key) != cmd.only {
			cmd.answer(0, nil) // gone already: nothing of it to drop
			return
		}
		a.removeSub(cmd.key)
		for _, w := range a.waiters[cmd.key] {
			w.answer(0, fmt.Errorf("dfstream: listen %s: %w", cmd.key, ErrUnlistened))
		}
		delete(a.waiters, cmd.key)
		if a.conn == nil {
			cmd.answer(0, nil)
			return
		}
		a.send(inflight{kind: callUnlisten, cmd: cmd, key: cmd.key}, cmd.req)
	case opEmit:
		if !a.ready {
			a.waiting = append(a.waiting, cmd)
			return
		}
		a.emit(cmd)
	}
}

// emit sends a user's signal unless its caller gave up meanwhile.
func (a *sigActor) emit(cmd *sigCmd) {
	if cmd.ctx != nil && cmd.ctx.Err() != nil {
		cmd.answer(0, cmd.ctx.Err())
		return
	}
	a.send(inflight{kind: callEmit, cmd: cmd}, cmd.req)
}

// sub returns the stream's subscription to key, nil if it has none.
func (a *sigActor) sub(key subKey) *Subscription {
	if i, ok := a.subIndex[key]; ok {
		return a.subs[i].sub
	}
	return nil
}

func (a *sigActor) addSub(key subKey) {
	if _, ok := a.subIndex[key]; ok {
		return
	}
	a.subSeq++
	sub := &Subscription{Pattern: key.pattern, Group: key.group, s: a.s, key: key, seq: a.subSeq}
	sub.self = []*Subscription{sub}
	sub.listening.Store(true)
	a.subIndex[key] = len(a.subs)
	a.subs = append(a.subs, subState{sub: sub})
	a.publishSubs()
}

// answerListen answers a Listen of key: with its subscription, or err.
func (a *sigActor) answerListen(cmd *sigCmd, key subKey, err error) {
	r := cmdResult{err: err}
	if err == nil {
		r.sub = a.sub(key)
	}
	cmd.reply <- r
}

func (a *sigActor) removeSub(key subKey) {
	i, ok := a.subIndex[key]
	if !ok {
		return
	}
	a.subs[i].sub.listening.Store(false)
	a.subs = append(a.subs[:i], a.subs[i+1:]...)
	delete(a.subIndex, key)
	for j := i; j < len(a.subs); j++ {
		a.subIndex[a.subs[j].sub.key] = j
	}
	a.publishSubs()
}

// publishSubs replaces the snapshot the push handler reads.
func (a *sigActor) publishSubs() {
	snap := &subSnapshot{}
	list := make([]*Subscription, len(a.subs))
	for i, st := range a.subs {
		snap.trie.Insert(st.sub.key.pattern, st.sub)
		list[i] = st.sub
	}
	a.s.subs.Store(snap)
	a.s.mu.Lock()
	a.s.subList = list
	a.s.mu.Unlock()
}

// replies handles every in-flight request whose reply has arrived, oldest
// first.
func (a *sigActor) replies() {
	for len(a.calls) > 0 && !a.ended {
		c := a.calls[0]
		select {
		case <-c.call.Done():
		default:
			return
		}
		line, err := c.call.Result()
		if err != nil {
			// The connection stopped: every request still in flight shares
			// its fate.
			a.lost(fmt.Errorf("%w: %w", ErrConnLost, err))
			return
		}
		a.calls[0] = inflight{}
		a.calls = a.calls[1:]
		if len(a.calls) == 0 {
			a.calls = nil
		}
		a.handle(c, line)
	}
}

// unlistened records that the Unlisten c is no longer in flight.
func (a *sigActor) unlistened(c inflight) {
	if a.unlistening[c.key]--; a.unlistening[c.key] <= 0 {
		delete(a.unlistening, c.key)
	}
}

// handle processes one reply.
func (a *sigActor) handle(c inflight, line string) {
	s := a.s
	if c.kind == callUnlisten {
		a.unlistened(c)
	}
	if !strings.HasPrefix(line, "ok") { // only failures pay for the parse
		if err := wire.ParseOK(c.kind.cmd(), line); errors.Is(err, ErrAuth) {
			// The server wants a token this Client does not have (or
			// not this one): no reconnect can fix that.
			err = fmt.Errorf("dfstream: signals: authentication refused: %w", err)
			if c.cmd != nil {
				c.cmd.answer(0, err)
			}
			a.stop(Failed{Err: err, At: time.Now()}, err)
			return
		}
	}
	switch c.kind {
	case callListen:
		err := wire.ParseOK("listen", line)
		if a.unlistening[c.key] > 0 {
			// An Unlisten sent after this Listen undoes it.
			if err == nil {
				err = fmt.Errorf("dfstream: listen %s: %w", c.key, ErrUnlistened)
			}
			c.cmd.answer(0, err)
			return
		}
		if i, ok := a.subIndex[c.key]; ok {
			if err == nil {
				a.subs[i].confirmed = true
			} else if !a.subs[i].confirmed {
				a.removeSub(c.key)
			}
		}
		a.answerListen(c.cmd, c.key, err)
		for _, w := range a.waiters[c.key] {
			a.answerListen(w, c.key, err)
		}
		delete(a.waiters, c.key)
	case callUnlisten:
		c.cmd.answer(0, wire.ParseOK("unlisten", line))
	case callEmit:
		n, err := wire.ParseSignalReply(line)
		c.cmd.answer(n, err)
	case callResub, callProbeListen:
		err := wire.ParseOK("listen", line)
		if c.kind == callProbeListen {
			a.probeOK = err == nil
			if err != nil {
				s.log.Warn().Err(err).Msg("cannot listen to the probe channel; heartbeat will only ping")
			}
		} else {
			if err != nil {
				err = fmt.Errorf("dfstream: listen again to %s after reconnecting: %w", c.key, err)
				for _, w := range a.waiters[c.key] {
					w.answer(0, err)
				}
				delete(a.waiters, c.key)
				a.stop(Failed{Err: err, At: time.Now()}, err)
				return
			}
			if i, ok := a.subIndex[c.key]; ok {
				a.subs[i].confirmed = true
			}
			for _, w := range a.waiters[c.key] {
				a.answerListen(w, c.key, nil)
			}
			delete(a.waiters, c.key)
		}
		if a.resubLeft--; a.resubLeft == 0 && a.conn != nil {
			a.resubscribed()
		}
	case callPing:
		a.pingOut = false // ok, or error from servers that do not know ping
		if !a.pingRefused && wire.ParseOK("ping", line) != nil {
			// Such servers log a warning for every ping: the probe
			// keeps the connection alive instead (see heartbeat).
			a.pingRefused = true
			s.log.Debug().Msg("the server answers error to ping; no more pings on this connection")
		}
	case callProbe, callKeepalive:
		if c.kind == callKeepalive {
			a.pingOut = false
		}
		n, err := wire.ParseSignalReply(line)
		switch {
		case err != nil:
			a.probeOK = false
			s.log.Warn().Err(err).Msg("probe signal refused; heartbeat will only ping")
		case n == 0 && c.kind == callProbe:
			// Not a black hole (the server counts one): the server
			// dropped this copy because the connection's push queue was
			// full at that moment (protocol.md §4). The probe proves
			// nothing either way: take it back, as if never sent.
			if a.pending.seq == c.seq {
				a.pending = pendingProbe{}
			} else if a.probeSeq == c.seq {
				a.probeSeq = c.prev
			}
		}
	}
}

// heartbeat checks that the previous round came back, keeps the connection
// alive and probes it.
//
// Keeping alive: a request re-arms the server's read deadline. That is a
// ping, unless the server answered error to one on this connection (servers
// of the signals era do, and log a warning each time): then, while the
// probe subscription is in place, a signal to the probe channel on this
// connection instead.
//
// Probing: a signal to the probe channel, emitted on a connection of its
// own (probeAround), must come back on this one by the next heartbeat. While
// the previous one's dial to this connection's server still hangs, the probe
// goes out on this connection instead (probeHere). One probe of an earlier
// connection may still hang: it does not hold back this one's.
func (a *sigActor) heartbeat(ctx context.Context) {
	s := a.s
	if a.pingOut {
		a.lost(fmt.Errorf("%w: no reply to the heartbeat for %v", ErrSilentConnection, s.cfg.heartbeat))
		return
	}
	a.promote(time.Now())
	if a.probeOK && s.probeSeen.Load() < a.probeSeq {
		a.lost(fmt.Errorf("%w: probe signal not delivered within %v", ErrSilentConnection, s.cfg.heartbeat))
		return
	}
	a.provenUpTo()
	if a.pingRefused && a.probeOK {
		req, err := wire.Signal(s.probeCh, keepalivePayload)
		if err == nil && a.send(inflight{kind: callKeepalive}, req) {
			a.pingOut = true
		}
	} else if a.send(inflight{kind: callPing}, wire.Ping()) {
		a.pingOut = true
	}
	if a.conn != nil && a.probeOK {
		a.probeNext++
		if a.probesOut == 0 || (a.probingGen != a.gen && a.probesOut < cap(a.probeRes)) {
			a.probeAround(ctx, a.probeNext)
		} else {
			// The previous probe's dial hangs: a black hole is still
			// to be noticed meanwhile.
			a.probeHere(a.probeNext, time.Now())
		}
	}
	if a.conn != nil {
		a.hb.Reset(heartbeatJitter(s.cfg.heartbeat))
	}
}

// heartbeatJitter returns the wait before the next heartbeat: uniform in
// [4/5 h, h], so that the streams of a Router, all started together, do not
// all dial their probes at the same instant. Never more than h: h may be
// the server's read timeout.
func heartbeatJitter(h time.Duration) time.Duration {
	return h - rand.N(h/5+1)
}

// probeAround emits probe seq on a freshly dialled connection to the
// stream's address, on a goroutine (result on probeRes).
//
// Not on the stream's own connection: a server that shuts down gracefully
// keeps serving its open connections (pings, and signals among them) for
// up to its drain timeout while a new process listens on the address, and
// everyone else's signals go to the new one. A probe that went through the
// old server would come back and prove nothing. A fresh connection reaches
// whichever process owns the address now, as any emitter's would; the
// probe coming back shows the two are one. Not a pooled connection either:
// it may itself be one to the old process. One dial per heartbeat (every
// 15s by default) is the cost.
func (a *sigActor) probeAround(ctx context.Context, seq uint64) {
	s := a.s
	now := time.Now()
	req, err := wire.Signal(s.probeCh, probePayload(seq, now))
	if err != nil {
		return // cannot happen: the channel was validated by its listen
	}
	res := probeResult{seq: seq, at: now, req: req, gen: a.gen}
	s.probeSent.Store(seq)
	a.probesOut++
	a.probingGen = a.gen
	a.probeWG.Add(1)
	go func() {
		defer a.probeWG.Done()
		// Not bounded by the interval: a probe slow to go out (a loaded
		// machine) only delays the next one.
		ctx, cancel := context.WithTimeout(ctx, max(s.cfg.heartbeat, s.c.cfg.connectTimeout))
		defer cancel()
		sc, err := s.c.dialer.DialSync(ctx, s.addr)
		if err == nil {
			var line string
			line, err = sc.ExchangeContext(ctx, res.req, time.Time{})
			_ = sc.Close()
			if err == nil {
				res.n, err = wire.ParseSignalReply(line)
			}
		}
		res.err = err
		a.probeRes <- res // room for it: at most cap(probeRes) out
	}()
}

// probePayload is the payload of probe seq emitted at t: the sequence
// number, and the time, which its arrival proves delivery worked at (see
// SignalStream.onProbe).
func probePayload(seq uint64, t time.Time) string {
	return strconv.FormatUint(seq, 10) + " " + strconv.FormatInt(t.UnixNano(), 10)
}

// probed takes the result of probeAround.
func (a *sigActor) probed(res probeResult) {
	s := a.s
	a.probesOut--
	if res.gen != a.gen || a.conn == nil || !a.probeOK {
		return // about a connection gone since
	}
	a.fresh = res.err == nil
	switch {
	case res.err != nil:
		a.strays = 0 // unknown: not a run of stray probes
		// No other way in (refused: no new process listens either; or a
		// connection limit): probe on this connection, as a black hole
		// is still to be noticed.
		s.log.Debug().Err(res.err).Msg("cannot probe on a connection of its own; probing on this one")
		a.probeHere(res.seq, res.at)
	case res.n == 0:
		// The process at the address does not know this connection's
		// probe subscription: it is not the one this connection talks to
		// (a restart, the old process draining). Once may also be this
		// connection's push queue found full (protocol.md §4): twice in
		// a row is not that.
		if a.strays++; a.strays >= 2 {
			a.lost(fmt.Errorf("%w: the server now listening at %s does not deliver to this connection (restarted?)", ErrSilentConnection, s.addr))
		}
	default:
		a.strays = 0
		a.freshSeq, a.freshAt = res.seq, res.at
		a.expect(res.seq)
	}
}

// probeHere emits probe seq, of time at, on the stream's own connection:
// it shows the connection delivers, though not that its server is the one
// at the address (see probeAround).
func (a *sigActor) probeHere(seq uint64, at time.Time) {
	req, err := wire.Signal(a.s.probeCh, probePayload(seq, at))
	if err != nil {
		return // cannot happen: the channel was validated by its listen
	}
	prev := a.probeSeq
	if a.pending.seq != 0 {
		prev = a.pending.seq
	}
	a.s.probeSent.Store(seq)
	if a.send(inflight{kind: callProbe, seq: seq, prev: prev}, req) {
		a.expect(seq)
	}
}

// expect makes probe seq one that must come back: by the next heartbeat if
// that leaves it at least half an interval, by the one after otherwise (a
// probe answered late would have no time to arrive).
func (a *sigActor) expect(seq uint64) {
	now := time.Now()
	a.promote(now)
	if a.pending.seq != 0 {
		// Still too recent: the older one is checked with it.
		a.probeSeq = max(a.probeSeq, a.pending.seq)
	}
	a.pending = pendingProbe{seq: seq, due: now.Add(a.s.cfg.heartbeat / 2)}
}

// promote makes the pending probe one the next heartbeat checks, once it
// has had half an interval to arrive.
func (a *sigActor) promote(now time.Time) {
	if a.pending.seq != 0 && !now.Before(a.pending.due) {
		a.probeSeq = max(a.probeSeq, a.pending.seq)
		a.pending = pendingProbe{}
	}
}

// provenUpTo records, once the newest probe emitted on a connection of its
// own that the server counted has come back, that delivery worked when it
// was emitted (see lost).
func (a *sigActor) provenUpTo() {
	if a.freshSeq != 0 && a.s.probeSeen.Load() >= a.freshSeq {
		if a.freshAt.After(a.proven) {
			a.proven = a.freshAt
		}
		a.freshSeq = 0
	}
}

// lost drops the connection and schedules a reconnect.
func (a *sigActor) lost(reason error) {
	if a.conn == nil || a.ended {
		return
	}
	s := a.s
	conn := a.conn
	a.conn, a.ready = nil, false
	_ = conn.Close()
	s.connected.Store(false)
	a.hb.Stop()
	calls := a.calls
	a.calls = nil
	for i, c := range calls {
		// Replies that arrived before the loss still count. (Close has
		// given every other call its error: none blocks here.)
		if line, err := c.call.Result(); err == nil {
			a.handle(c, line)
			if a.ended {
				// The reply ended the stream: finish answers the
				// calls not processed yet.
				a.calls = calls[i+1:]
				return
			}
			continue
		}
		switch c.kind {
		case callListen:
			if _, ok := a.subIndex[c.key]; !ok || a.unlistening[c.key] > 0 {
				// An Unlisten overtook it: nothing will listen again
				// to c.key, so it would wait forever.
				c.cmd.answer(0, fmt.Errorf("dfstream: listen %s: %w", c.key, ErrUnlistened))
				continue
			}
			a.waiters[c.key] = append(a.waiters[c.key], c.cmd)
		case callUnlisten, callEmit:
			if c.kind == callUnlisten {
				a.unlistened(c)
			}
			a.answerLost(c, fmt.Errorf("%w: %w", ErrConnLost, reason))
		}
	}
	for i := range a.subs {
		a.subs[i].confirmed = false
	}
	a.pingOut = false
	a.resubLeft = 0
	if a.reconnect {
		// A new connection lost before it was ready: a failed attempt
		// of the same outage, not another one.
		s.log.Debug().Err(reason).Int("attempt", a.attempt).Msg("reconnect failed")
	} else {
		a.reconnect = true
		now := time.Now()
		// Signals may have been missed since delivery was last seen to
		// work, which is before the loss was noticed (up to a heartbeat
		// or two for a silent connection).
		a.downSince = time.Unix(0, s.lastSeen.Load())
		if a.downSince.After(now) {
			a.downSince = now
		}
		// A signal or probe that came back proves only that this
		// connection's server delivers: during a graceful restart the old
		// process still does, while everyone else's signals go to the new
		// one. Only a probe emitted on a connection of its own proves the
		// server at the address delivers to this connection.
		if a.provenUpTo(); a.fresh && a.proven.Before(a.downSince) {
			a.downSince = a.proven
		}
		s.log.Warn().Err(reason).Time("since", a.downSince).Msg("signal connection lost")
		s.box.pushState(Disconnected{Server: s.addr, Reason: reason, Since: a.downSince, At: now})
		s.observeDisconnected(reason)
		// The new connection's signals wait for Reconnected.
		s.box.hold()
		if a.staged == nil {
			a.staged = s.box.next()
		}
	}
	a.attempt++
	a.retry.Reset(jitterBackoff(s.cfg.backoffMin, s.cfg.backoffMax, a.attempt))
}

// dial starts a connection attempt on a goroutine of its own, so that the
// actor keeps delivering events and answering calls meanwhile.
func (a *sigActor) dial(ctx context.Context) {
	s := a.s
	a.dialing = true
	a.dialWG.Add(1)
	go func() {
		defer a.dialWG.Done()
		conn, err := s.c.dial(ctx, s.addr, wire.WithPushHandler(s.onPush))
		a.dialRes <- dialResult{conn, err}
	}()
}

func (a *sigActor) dialed(res dialResult) {
	s := a.s
	a.dialing = false
	if res.err != nil {
		if errors.Is(res.err, ErrAuth) {
			a.stop(Failed{Err: res.err, At: time.Now()}, res.err)
			return
		}
		s.log.Debug().Err(res.err).Int("attempt", a.attempt).Msg("reconnect failed")
		a.attempt++
		a.retry.Reset(jitterBackoff(s.cfg.backoffMin, s.cfg.backoffMax, a.attempt))
		return
	}
	a.conn = res.conn
	a.connected()
}
