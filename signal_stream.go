package dfstream

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/dfstream/dfstream/subject"
	"github.com/dfstream/dfstream/wire"
)

// Defaults of signal streams, used when no SignalOption says otherwise.
const (
	// DefaultHeartbeat is how often a signal stream pings the server and
	// probes its own connection end to end. It is lowered to half the
	// server's read timeout when WithServerReadTimeout says that is shorter.
	DefaultHeartbeat = 15 * time.Second
	// DefaultSignalBuffer is how many signals a stream keeps for a consumer
	// that has fallen behind, beyond those already in its Events channel.
	DefaultSignalBuffer = 1024
	// DefaultSignalEventBuffer is the capacity of a signal stream's Events
	// channel.
	DefaultSignalEventBuffer = 64
	// DefaultOverflow is the overflow policy of signal streams and router
	// handlers: the newest signals are dropped, so the buffered ones stay in
	// arrival order with one gap, which an Overflow event marks.
	DefaultOverflow = DropNewest
)

// ProbeChannelPrefix starts the channels a signal stream uses to probe its
// own connection (see WithHeartbeat). dfstream listeners never deliver
// signals on channels with this prefix; other clients listening to wide
// patterns such as ">" see them, once per heartbeat per stream.
const ProbeChannelPrefix = "_dfstream.probe."

// OverflowPolicy says what happens to a signal that arrives while a
// consumer's buffer is full. Every signal lost this way is counted (see
// SignalStream.Stats, and RouterStats.Dropped for a Router's handlers) and
// reported with an Overflow event.
type OverflowPolicy int

// Overflow policies.
const (
	// DropNewest drops the arriving signal and keeps the buffered ones (the
	// default, as in NATS): the consumer sees an unbroken prefix, then an
	// Overflow event where the gap is.
	DropNewest OverflowPolicy = iota
	// DropOldest drops the oldest buffered signal to make room: the consumer
	// sees the most recent signals.
	DropOldest
	// FailStream ends the stream (or stops the router) with an error
	// matching ErrOverflow: for consumers that must not miss a signal
	// silently.
	FailStream
)

// String returns "drop-newest", "drop-oldest" or "fail".
func (p OverflowPolicy) String() string {
	switch p {
	case DropNewest:
		return "drop-newest"
	case DropOldest:
		return "drop-oldest"
	case FailStream:
		return "fail"
	}
	return "OverflowPolicy(" + strconv.Itoa(int(p)) + ")"
}

func (p OverflowPolicy) valid() bool { return p >= DropNewest && p <= FailStream }

// SignalOption configures a signal stream (Client.Signals) or the streams of
// a Router (WithRouterSignalOptions).
type SignalOption interface {
	applySignal(*signalConfig) error
}

type signalOption func(*signalConfig) error

func (f signalOption) applySignal(c *signalConfig) error { return f(c) }

type signalConfig struct {
	server       string // "" = the Client's first server
	heartbeat    time.Duration
	heartbeatSet bool
	probe        bool
	buffer       int
	policy       OverflowPolicy
	backoffMin   time.Duration
	backoffMax   time.Duration
	eventBuffer  int
	// drain makes the end of the stream deliver everything still buffered
	// with blocking sends: for the Router, whose dispatchers read the
	// Events channel until it closes.
	drain bool
}

func (c *Client) defaultSignalConfig() signalConfig {
	return signalConfig{
		heartbeat:   DefaultHeartbeat,
		probe:       true,
		buffer:      DefaultSignalBuffer,
		policy:      DefaultOverflow,
		backoffMin:  100 * time.Millisecond,
		backoffMax:  5 * time.Second,
		eventBuffer: DefaultSignalEventBuffer,
	}
}

// WithSignalServer picks the server a signal stream connects to (default:
// the Client's first server). Signals are not sharded: an emitter and its
// listeners must use the same server.
func WithSignalServer(addr string) SignalOption {
	return signalOption(func(c *signalConfig) error {
		if addr == "" {
			return invalidOption("WithSignalServer", addr, "empty address")
		}
		c.server = addr
		return nil
	})
}

// WithHeartbeat sets how often the stream sends ping to keep an idle
// connection alive past the server's read timeout (default 15s, or half the
// configured server read timeout when that is shorter; 0 turns the heartbeat
// off). Servers that answer error to ping are fine: any request re-arms the
// server's read deadline.
//
// Each heartbeat is also an end-to-end probe: the stream emits a signal to a
// private channel (under ProbeChannelPrefix) that its own connection listens
// to. If that signal has not come back by the next heartbeat, or a ping is
// still unanswered, the connection is deemed silent (ErrSilentConnection: the
// server keeps it open but delivers nothing, protocol.md §4) and the stream
// reconnects. A black hole is therefore noticed within two intervals. A
// probe the server counts no copy of (its push queue for the connection was
// full, so it dropped the copy) proves nothing, and is not held against the
// connection.
func WithHeartbeat(interval time.Duration) SignalOption {
	return signalOption(func(c *signalConfig) error {
		if interval < 0 {
			return invalidOption("WithHeartbeat", interval, "must not be negative")
		}
		c.heartbeat, c.heartbeatSet = interval, true
		return nil
	})
}

// WithProbe turns the end-to-end probe of each heartbeat on (the default) or
// off. Without it the heartbeat only pings, which keeps the connection open
// but cannot tell a connection whose pushes the server discards.
func WithProbe(on bool) SignalOption {
	return signalOption(func(c *signalConfig) error {
		c.probe = on
		return nil
	})
}

// WithSignalBuffer sets how many signals the stream holds for a consumer
// that has fallen behind, beyond those already in the Events channel
// (default 1024, at least 1). What happens beyond it is the overflow policy.
func WithSignalBuffer(n int) SignalOption {
	return signalOption(func(c *signalConfig) error {
		if n < 1 {
			return invalidOption("WithSignalBuffer", n, "must be at least 1")
		}
		c.buffer = n
		return nil
	})
}

// WithOverflow sets the overflow policy (default DropNewest).
func WithOverflow(p OverflowPolicy) SignalOption {
	return signalOption(func(c *signalConfig) error {
		if !p.valid() {
			return invalidOption("WithOverflow", p, "unknown policy")
		}
		c.policy = p
		return nil
	})
}

// WithSignalBackoff bounds the wait between reconnection attempts: it starts
// at min, doubles up to max, and is jittered (default 100ms to 5s).
func WithSignalBackoff(min, max time.Duration) SignalOption {
	return signalOption(func(c *signalConfig) error {
		if min <= 0 || max < min {
			return invalidOption("WithSignalBackoff", [2]time.Duration{min, max}, "need 0 < min <= max")
		}
		c.backoffMin, c.backoffMax = min, max
		return nil
	})
}

// drainOnClose is the Router's option for its own streams (signalConfig.drain).
func drainOnClose() SignalOption {
	return signalOption(func(c *signalConfig) error {
		c.drain = true
		return nil
	})
}

// WithSignalEventBuffer sets the capacity of the stream's Events channel
// (default 64, at least 1).
func WithSignalEventBuffer(n int) SignalOption {
	return signalOption(func(c *signalConfig) error {
		if n < 1 {
			return invalidOption("WithSignalEventBuffer", n, "must be at least 1")
		}
		c.eventBuffer = n
		return nil
	})
}

// Subscription is one listen registration: a pattern, and the queue group it
// joined ("" for none).
type Subscription struct {
	Pattern string
	Group   string
}

// String returns the pattern, followed by the group if there is one.
func (s Subscription) String() string {
	if s.Group == "" {
		return s.Pattern
	}
	return s.Pattern + " (group " + s.Group + ")"
}

// SignalStats counts what happened to the signals a stream received. At any
// moment Received = Delivered + Dropped + Discarded + Buffered.
type SignalStats struct {
	// Received counts the signals that arrived from the server (probe
	// signals excluded).
	Received uint64
	// Delivered counts the signals handed to the Events channel.
	Delivered uint64
	// Dropped counts the signals lost to the overflow policy.
	Dropped uint64
	// Discarded counts the signals still buffered, or left unread in a full
	// Events channel, when the stream ended.
	Discarded uint64
	// Buffered is how many signals wait in the stream for room in the
	// Events channel.
	Buffered int
}

// SignalStream is one connection that listens to signal patterns (optionally
// in queue groups) and emits signals, as an actor goroutine that reports
// what happens as Events: Signal for every signal received, Disconnected and
// Reconnected around connection losses, Overflow when a slow consumer made
// it drop signals, and one terminal event (Closed or Failed). Start one with
// Client.Signals.
//
// The connection's reader never waits for the consumer: signals go to a
// bounded buffer governed by the overflow policy (WithOverflow,
// WithSignalBuffer), so heartbeats and command replies keep flowing behind a
// consumer that stopped reading. Listen, Unlisten and Emit may be called from
// any goroutine while signals arrive.
//
// When the connection is lost the stream reports Disconnected, reconnects
// with jittered exponential backoff, listens again to every pattern and
// group, and reports Reconnected. Delivery is at most once: signals sent
// while it was disconnected are gone, and the two events bound that window.
// The stream ends only on Close, when its context ends, or on an error that
// retrying cannot fix (authentication refused, a subscription the server
// rejects, or overflow under FailStream).
type SignalStream struct {
	c       *Client
	cfg     signalConfig
	addr    string
	log     zerolog.Logger
	probeCh string

	box    *sigInbox
	events <-chan Event
	cmds   chan *sigCmd
	cancel context.CancelCauseFunc
	done   chan struct{}

	subs      atomic.Pointer[subSnapshot] // read by the push handler
	probeSeen atomic.Uint64               // newest probe sequence seen
	connected atomic.Bool

	mu      sync.Mutex
	err     error
	subList []Subscription
}

var _ Stream = (*SignalStream)(nil)

// subSnapshot is an immutable view of a stream's subscriptions, replaced on
// every change, so the push handler can attribute a signal to the
// subscription it came through without locking.
type subSnapshot struct {
	trie subject.Trie[Subscription]
}

// Signals connects to the signal server (the Client's first server, or the
// one WithSignalServer names) and starts a signal stream on that connection,
// which listens to nothing yet. It returns an error when the first
// connection cannot be made (unreachable server, authentication refused);
// after that the stream reconnects by itself. The stream ends when ctx ends
// or Close is called.
func (c *Client) Signals(ctx context.Context, opts ...SignalOption) (*SignalStream, error) {
	if ctx == nil {
		return nil, fmt.Errorf("dfstream: nil context: %w", ErrInvalidInput)
	}
	cfg := c.defaultSignalConfig()
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o.applySignal(&cfg); err != nil {
			return nil, err
		}
	}
	if !cfg.heartbeatSet && c.cfg.serverReadTimeout/2 < cfg.heartbeat {
		cfg.heartbeat = c.cfg.serverReadTimeout / 2
	}
	addr := c.cfg.servers[0]
	if cfg.server != "" {
		if _, err := c.serverIndex(cfg.server); err != nil {
			return nil, err
		}
		addr = cfg.server
	}
	var nonce [8]byte
	_, _ = rand.Read(nonce[:])
	s := &SignalStream{
		c:       c,
		cfg:     cfg,
		addr:    addr,
		probeCh: ProbeChannelPrefix + hex.EncodeToString(nonce[:]),
		cmds:    make(chan *sigCmd),
		done:    make(chan struct{}),
	}
	s.log = c.cfg.logger.With().Str("stream", "signals").Str("server", addr).Logger()
	s.box = newSigInbox(cfg.eventBuffer, cfg.buffer, cfg.policy)
	s.events = s.box.ch
	s.subs.Store(&subSnapshot{})

	conn, err := c.dial(ctx, addr, wire.WithPushHandler(s.onPush))
	if err != nil {
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		return nil, err
	}
	actx, cancel := context.WithCancelCause(ctx)
	s.cancel = cancel
	a := &sigActor{
		s:        s,
		conn:     conn,
		hb:       time.NewTimer(time.Hour),
		retry:    time.NewTimer(time.Hour),
		dialRes:  make(chan dialResult, 1),
		waiters:  make(map[Subscription][]*sigCmd),
		subIndex: make(map[Subscription]int),
		probeOn:  cfg.probe && cfg.heartbeat > 0,
	}
	a.hb.Stop()
	a.retry.Stop()
	if err := c.register(s, func() { a.run(actx) }); err != nil {
		cancel(nil)
		_ = conn.Close()
		return nil, err
	}
	return s, nil
}

// Events returns the stream's events, in order: Signal, Disconnected,
// Reconnected, Overflow, and one terminal event (Closed or Failed), after
// which the channel is closed. The stream never waits for the consumer:
// signals beyond the buffer follow the overflow policy; connection events
// are coalesced when the consumer is behind (see Reconnected). When the
// stream ends, what it still buffers is delivered if the channel has room
// and discarded otherwise (SignalStats.Discarded); if the consumer left the
// channel full, its oldest unread event is discarded to make room for the
// terminal event, which is never dropped.
func (s *SignalStream) Events() <-chan Event { return s.events }

// Done is closed when the stream has ended and its goroutines have exited.
func (s *SignalStream) Done() <-chan struct{} { return s.done }

// Err reports why the stream ended: nil while it runs and after Close;
// otherwise matchable with errors.Is (ErrAuth, ErrOverflow, ErrServer for a
// subscription the server rejected on reconnect, context.Canceled, …).
func (s *SignalStream) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Close ends the stream and its connection and returns once its goroutines
// have exited. Idempotent.
func (s *SignalStream) Close() error {
	s.cancel(ErrClosed)
	<-s.done
	return nil
}

// Server returns the address of the server the stream talks to.
func (s *SignalStream) Server() string { return s.addr }

// Connected reports whether the stream has a connection on which the server
// has confirmed every subscription; false while it reconnects.
func (s *SignalStream) Connected() bool { return s.connected.Load() }

// Stats returns the stream's signal counters.
func (s *SignalStream) Stats() SignalStats { return s.box.stats() }

// Subscriptions returns the stream's subscriptions, in the order they were
// made; the stream listens to them again, in that order, after a reconnect.
func (s *SignalStream) Subscriptions() []Subscription {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Subscription(nil), s.subList...)
}

// Listen subscribes to pattern without a queue group: every signal whose
// channel matches is delivered to this stream (once per signal, however
// many of the stream's plain patterns match). It returns once the server has
// confirmed; while the stream is reconnecting, that is after it has
// reconnected. If ctx ends first, Listen returns ctx's error, and the
// subscription may still take effect (see Subscriptions; Unlisten drops it).
// A subscription the server refuses is forgotten, and the error matches
// ErrServer. An invalid pattern is an error matching ErrInvalidInput, and
// nothing is sent.
func (s *SignalStream) Listen(ctx context.Context, pattern string) error {
	return s.ListenGroup(ctx, pattern, "")
}

// ListenGroup subscribes to pattern in the queue group group: each matching
// signal goes to one member of the group (the connections that joined
// (pattern, group)), round robin. A group is identified by pattern and name
// together. group "" is Listen. A Listen that an Unlisten of the same
// subscription overtakes before the server confirmed it returns an error
// matching ErrUnlistened.
func (s *SignalStream) ListenGroup(ctx context.Context, pattern, group string) error {
	req, err := wire.Listen(pattern, group)
	if err != nil {
		return err
	}
	_, err = s.do(ctx, &sigCmd{op: opListen, sub: Subscription{pattern, group}, req: req})
	return err
}

// Unlisten drops the plain subscription to pattern (a group membership on
// the same pattern stays). Unlistening what was never listened to is fine.
func (s *SignalStream) Unlisten(ctx context.Context, pattern string) error {
	return s.UnlistenGroup(ctx, pattern, "")
}

// UnlistenGroup leaves the queue group group on pattern.
func (s *SignalStream) UnlistenGroup(ctx context.Context, pattern, group string) error {
	req, err := wire.Unlisten(pattern, group)
	if err != nil {
		return err
	}
	_, err = s.do(ctx, &sigCmd{op: opUnlisten, sub: Subscription{pattern, group}, req: req})
	return err
}

// Emit sends payload to channel and returns the number of copies the server
// queued: one per connection reached through plain subscriptions plus one
// per matching queue group (this stream counts too if it listens). A
// channel with wildcards or white space, or a payload that is empty, holds
// CR, LF or NUL, or is over 256 bytes, is an error matching ErrInvalidInput,
// and nothing is sent. While the stream is reconnecting, Emit waits for the
// connection (bounded by ctx); if the connection is lost with the signal in
// flight, the error matches ErrConnLost and the signal may or may not have
// been delivered.
func (s *SignalStream) Emit(ctx context.Context, channel, payload string) (int, error) {
	req, err := wire.Signal(channel, payload)
	if err != nil {
		return 0, err
	}
	return s.do(ctx, &sigCmd{op: opEmit, req: req, ctx: ctx})
}

func (s *SignalStream) do(ctx context.Context, cmd *sigCmd) (int, error) {
	if ctx == nil {
		return 0, fmt.Errorf("dfstream: nil context: %w", ErrInvalidInput)
	}
	cmd.reply = make(chan cmdResult, 1)
	select {
	case s.cmds <- cmd:
	case <-s.done:
		return 0, ErrClosed
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	select {
	case r := <-cmd.reply:
		return r.n, r.err
	case <-s.done:
		// The actor answers every command before it exits; this is a
		// safety net, so that no call outlives the stream.
		select {
		case r := <-cmd.reply:
			return r.n, r.err
		default:
			return 0, ErrClosed
		}
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// onPush runs on the connection's reader goroutine for every sig line. It
// must not block: it hands the signal to the bounded inbox.
func (s *SignalStream) onPush(p wire.Push) {
	if strings.HasPrefix(p.Channel, ProbeChannelPrefix) {
		if p.Channel == s.probeCh {
			if seq, err := strconv.ParseUint(p.Payload, 10, 64); err == nil {
				for {
					old := s.probeSeen.Load()
					if seq <= old || s.probeSeen.CompareAndSwap(old, seq) {
						break
					}
				}
			}
		}
		return
	}
	sig := Signal{Channel: p.Channel, Payload: p.Payload}
	n := 0
	s.subs.Load().trie.Lookup(p.Channel, func(_ string, sub Subscription) {
		n++
		sig.Pattern, sig.Group = sub.Pattern, sub.Group
	})
	if n != 1 {
		sig.Pattern, sig.Group = "", ""
	}
	sig.At = time.Now()
	s.box.pushSignal(sig)
}

func (s *SignalStream) end(err error) {
	s.mu.Lock()
	s.err = err
	s.mu.Unlock()
}

// ---- the actor ----

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
	sub   Subscription
	req   wire.Request
	ctx   context.Context // Emit only: not sent once the caller gave up
	reply chan cmdResult
}

type cmdResult struct {
	n   int
	err error
}

func (cmd *sigCmd) answer(n int, err error) { cmd.reply <- cmdResult{n, err} }

// callKind says what an in-flight request is for.
type callKind uint8

const (
	callListen      callKind = iota // a user's Listen
	callUnlisten                    // a user's Unlisten
	callEmit                        // a user's Emit
	callResub                       // listening again after a reconnect
	callProbeListen                 // the probe channel's subscription
	callPing                        // heartbeat ping
	callProbe                       // heartbeat probe signal
)

type inflight struct {
	kind callKind
	call *wire.Call
	cmd  *sigCmd
	sub  Subscription
	seq  uint64 // callProbe: the probe's sequence number
}

type dialResult struct {
	conn *wire.Conn
	err  error
}

type subState struct {
	sub       Subscription
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
	waiters  map[Subscription][]*sigCmd
	subs     []subState
	subIndex map[Subscription]int

	staged Event // taken from the inbox, being offered to the consumer

	hb        *time.Timer
	probeOn   bool // heartbeat probes are enabled for this stream
	probeOK   bool // the probe subscription is in place on this connection
	probeSeq  uint64
	pingOut   bool // a ping is unanswered
	resubLeft int  // listens of a new connection still unanswered
	ready     bool // connected, and every subscription confirmed
	reconnect bool // between a loss and the Reconnected event

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
			if a.staged == nil {
				a.staged = s.box.next()
			}
		case cmd := <-s.cmds:
			a.command(cmd)
		case <-replied:
			a.replies()
		case <-connDone:
			a.lost(fmt.Errorf("%w: %w", ErrConnLost, a.conn.Err()))
		case <-hb:
			a.heartbeat()
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
	cause := a.err
	if cause == nil {
		cause = ErrClosed
	} else if !errors.Is(cause, ErrClosed) {
		cause = fmt.Errorf("%w: %w", ErrClosed, cause)
	}
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
	final := a.final
	if final == nil {
		final = Closed{At: time.Now()}
	}
	s.box.finish(a.staged, final, s.cfg.drain)
	a.staged = nil
	s.end(a.err)
	if a.err != nil {
		s.log.Debug().Err(a.err).Msg("signal stream ended")
	}
	close(s.done)
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
	a.probeOK, a.pingOut = false, false
	// No probe of an earlier connection can arrive any more (its reader
	// has exited): forget the one that may have been lost with it.
	a.probeSeq = max(a.probeSeq, s.probeSeen.Load())
	s.probeSeen.Store(a.probeSeq)
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
		sub := a.subs[i].sub
		req, err := wire.Listen(sub.Pattern, sub.Group)
		if err != nil {
			continue // validated when added; cannot happen
		}
		if a.send(inflight{kind: callResub, sub: sub}, req) {
			a.resubLeft++
		}
	}
	if a.conn == nil {
		return
	}
	if s.cfg.heartbeat > 0 {
		a.hb.Reset(s.cfg.heartbeat)
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
	if a.reconnect {
		a.reconnect = false
		now := time.Now()
		s.box.pushState(Reconnected{
			Server:   s.addr,
			Attempts: a.attempt,
			Since:    a.downSince,
			Down:     now.Sub(a.downSince),
			At:       now,
		})
		s.log.Info().Int("attempts", a.attempt).Dur("down", now.Sub(a.downSince)).Msg("reconnected")
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
	return true
}

// requeue keeps the user command of a request that never reached the server
// for the next connection.
func (a *sigActor) requeue(c inflight) {
	switch c.kind {
	case callEmit:
		a.waiting = append(a.waiting, c.cmd)
	case callListen:
		a.waiters[c.sub] = append(a.waiters[c.sub], c.cmd)
	case callUnlisten:
		c.cmd.answer(0, nil)
	}
}

func (a *sigActor) command(cmd *sigCmd) {
	switch cmd.op {
	case opListen:
		a.addSub(cmd.sub)
		if a.conn == nil {
			a.waiters[cmd.sub] = append(a.waiters[cmd.sub], cmd)
			return
		}
		a.send(inflight{kind: callListen, cmd: cmd, sub: cmd.sub}, cmd.req)
	case opUnlisten:
		a.removeSub(cmd.sub)
		for _, w := range a.waiters[cmd.sub] {
			w.answer(0, fmt.Errorf("dfstream: listen %s: %w", cmd.sub, ErrUnlistened))
		}
		delete(a.waiters, cmd.sub)
		if a.conn == nil {
			cmd.answer(0, nil)
			return
		}
		a.send(inflight{kind: callUnlisten, cmd: cmd, sub: cmd.sub}, cmd.req)
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

func (a *sigActor) addSub(sub Subscription) {
	if _, ok := a.subIndex[sub]; ok {
		return
	}
	a.subIndex[sub] = len(a.subs)
	a.subs = append(a.subs, subState{sub: sub})
	a.publishSubs()
}

func (a *sigActor) removeSub(sub Subscription) {
	i, ok := a.subIndex[sub]
	if !ok {
		return
	}
	a.subs = append(a.subs[:i], a.subs[i+1:]...)
	delete(a.subIndex, sub)
	for j := i; j < len(a.subs); j++ {
		a.subIndex[a.subs[j].sub] = j
	}
	a.publishSubs()
}

// publishSubs replaces the snapshot the push handler reads.
func (a *sigActor) publishSubs() {
	snap := &subSnapshot{}
	list := make([]Subscription, len(a.subs))
	for i, st := range a.subs {
		snap.trie.Insert(st.sub.Pattern, st.sub)
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

// handle processes one reply.
func (a *sigActor) handle(c inflight, line string) {
	s := a.s
	switch c.kind {
	case callListen:
		err := wire.ParseOK("listen", line)
		if i, ok := a.subIndex[c.sub]; ok {
			if err == nil {
				a.subs[i].confirmed = true
			} else if !a.subs[i].confirmed {
				a.removeSub(c.sub)
			}
		}
		c.cmd.answer(0, err)
		for _, w := range a.waiters[c.sub] {
			w.answer(0, err)
		}
		delete(a.waiters, c.sub)
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
				err = fmt.Errorf("dfstream: listen again to %s after reconnecting: %w", c.sub, err)
				for _, w := range a.waiters[c.sub] {
					w.answer(0, err)
				}
				delete(a.waiters, c.sub)
				a.stop(Failed{Err: err, At: time.Now()}, err)
				return
			}
			if i, ok := a.subIndex[c.sub]; ok {
				a.subs[i].confirmed = true
			}
			for _, w := range a.waiters[c.sub] {
				w.answer(0, nil)
			}
			delete(a.waiters, c.sub)
		}
		if a.resubLeft--; a.resubLeft == 0 && a.conn != nil {
			a.resubscribed()
		}
	case callPing:
		a.pingOut = false // ok, or error from servers that do not know ping
	case callProbe:
		n, err := wire.ParseSignalReply(line)
		switch {
		case err != nil:
			a.probeOK = false
			s.log.Warn().Err(err).Msg("probe signal refused; heartbeat will only ping")
		case n == 0 && a.probeSeq == c.seq:
			// Not a black hole (the server counts one): the server
			// dropped this copy because the connection's push queue was
			// full at that moment (protocol.md §4). The probe proves
			// nothing either way: take it back, as if never sent.
			a.probeSeq = c.seq - 1
		}
	}
}

// heartbeat pings, probes, and checks that the previous round came back.
func (a *sigActor) heartbeat() {
	s := a.s
	if a.pingOut {
		a.lost(fmt.Errorf("%w: ping unanswered for %v", ErrSilentConnection, s.cfg.heartbeat))
		return
	}
	if a.probeOK && s.probeSeen.Load() < a.probeSeq {
		a.lost(fmt.Errorf("%w: probe signal not delivered within %v", ErrSilentConnection, s.cfg.heartbeat))
		return
	}
	if a.send(inflight{kind: callPing}, wire.Ping()) {
		a.pingOut = true
	}
	if a.conn != nil && a.probeOK {
		seq := a.probeSeq + 1
		req, err := wire.Signal(s.probeCh, strconv.FormatUint(seq, 10))
		if err == nil && a.send(inflight{kind: callProbe, seq: seq}, req) {
			a.probeSeq = seq
		}
	}
	if a.conn != nil {
		a.hb.Reset(s.cfg.heartbeat)
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
			if _, ok := a.subIndex[c.sub]; !ok {
				// An Unlisten overtook it: nothing will listen again
				// to c.sub, so it would wait forever.
				c.cmd.answer(0, fmt.Errorf("dfstream: listen %s: %w", c.sub, ErrUnlistened))
				continue
			}
			a.waiters[c.sub] = append(a.waiters[c.sub], c.cmd)
		case callUnlisten, callEmit:
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
		a.downSince = time.Now()
		s.log.Warn().Err(reason).Msg("signal connection lost")
		s.box.pushState(Disconnected{Server: s.addr, Reason: reason, At: a.downSince})
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

// ---- the inbox: bounded signal buffer between the reader and the consumer ----

// sigInbox carries a stream's events, in order, to its Events channel. The
// connection's reader puts signals in with pushSignal and never blocks:
// while the channel has room (and nothing waits before them) they go
// straight in; otherwise they queue here, up to max signals, beyond which
// the overflow policy applies. The actor moves queued events into the
// channel as the consumer makes room (next/sent). Connection events queue
// here too, in order with the signals, but do not count toward max; they
// are few, and coalesced while the consumer is behind.
type sigInbox struct {
	mu     sync.Mutex
	ch     chan Event
	q      []Event
	nsig   int // signals in q
	max    int
	policy OverflowPolicy
	staged bool // the actor holds the event taken from the head of q
	closed bool
	failed bool
	ovPos  int // index in q of an Overflow event drops can still fold into; -1 if none
	merged int // outages folded into the next Reconnected
	since  time.Time
	st     SignalStats
	wake   chan struct{}
}

func newSigInbox(eventBuffer, max int, policy OverflowPolicy) *sigInbox {
	return &sigInbox{
		ch:     make(chan Event, eventBuffer),
		max:    max,
		policy: policy,
		ovPos:  -1,
		wake:   make(chan struct{}, 1),
	}
}

func (b *sigInbox) notify() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// pushSignal runs on the reader goroutine.
func (b *sigInbox) pushSignal(sig Signal) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	b.st.Received++
	if len(b.q) == 0 && !b.staged {
		select {
		case b.ch <- sig:
			b.st.Delivered++
			return
		default:
		}
	}
	if b.nsig >= b.max {
		b.st.Dropped++
		switch b.policy {
		case DropNewest:
			b.overflow(len(b.q) > 0 && b.ovPos == len(b.q)-1)
			return
		case DropOldest:
			b.removeOldestSignal()
			b.overflow(b.ovPos >= 0)
		case FailStream:
			b.failed, b.closed = true, true
			b.notify()
			return
		}
	}
	b.q = append(b.q, sig)
	b.nsig++
	b.notify()
}

// overflow records one dropped signal in an Overflow event: the pending one
// at ovPos when fold is true, a new one at the tail otherwise.
func (b *sigInbox) overflow(fold bool) {
	now := time.Now()
	if fold {
		ev := b.q[b.ovPos].(Overflow)
		ev.Dropped++
		ev.Total, ev.At = b.st.Dropped, now
		b.q[b.ovPos] = ev
		return
	}
	b.q = append(b.q, Overflow{Dropped: 1, Total: b.st.Dropped, Policy: b.policy, At: now})
	b.ovPos = len(b.q) - 1
	b.notify()
}

// removeOldestSignal removes the first signal in q (DropOldest).
func (b *sigInbox) removeOldestSignal() {
	for i, ev := range b.q {
		if _, ok := ev.(Signal); !ok {
			continue
		}
		if i == 0 {
			b.popFront()
		} else {
			copy(b.q[i:], b.q[i+1:])
			b.q[len(b.q)-1] = nil
			b.q = b.q[:len(b.q)-1]
			b.nsig--
			if b.ovPos > i {
				b.ovPos--
			}
		}
		return
	}
}

func (b *sigInbox) popFront() Event {
	ev := b.q[0]
	b.q[0] = nil
	b.q = b.q[1:]
	if len(b.q) == 0 {
		b.q = b.q[:0:0]
	}
	if _, ok := ev.(Signal); ok {
		b.nsig--
	}
	if b.ovPos >= 0 {
		b.ovPos--
	}
	return ev
}

// pushState queues a connection event from the actor. While the consumer
// is behind, a Disconnected that follows a still-unread Reconnected is
// folded with it: the consumer then sees one outage whose Reconnected
// counts the others (Coalesced), so a flapping server cannot grow the queue.
func (b *sigInbox) pushState(ev Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	switch e := ev.(type) {
	case Disconnected:
		if n := len(b.q); n > 0 {
			if r, ok := b.q[n-1].(Reconnected); ok {
				b.q[n-1] = nil
				b.q = b.q[:n-1]
				if b.ovPos == n-1 {
					b.ovPos = -1
				}
				b.merged += r.Coalesced + 1
				b.since = r.Since
				return
			}
		}
	case Reconnected:
		if b.merged > 0 {
			e.Coalesced += b.merged
			e.Since = b.since
			e.Down = e.At.Sub(e.Since)
			b.merged = 0
			ev = e
		}
	}
	if len(b.q) == 0 && !b.staged {
		select {
		case b.ch <- ev:
			return
		default:
		}
	}
	b.q = append(b.q, ev)
}

// next moves queued events into the channel while it has room and returns
// the first one that did not fit (now staged: the actor offers it with a
// blocking send in its select), or nil when the queue is empty.
func (b *sigInbox) next() Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.nextLocked()
}

func (b *sigInbox) nextLocked() Event {
	if b.staged {
		return nil
	}
	for len(b.q) > 0 {
		ev := b.q[0]
		select {
		case b.ch <- ev:
			b.popFront()
			if _, ok := ev.(Signal); ok {
				b.st.Delivered++
			}
			continue
		default:
		}
		b.popFront()
		b.staged = true
		return ev
	}
	return nil
}

// sent records that the staged event was delivered and returns the next
// staged one, if any.
func (b *sigInbox) sent(ev Event) Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.staged = false
	if _, ok := ev.(Signal); ok {
		b.st.Delivered++
	}
	return b.nextLocked()
}

func (b *sigInbox) overflowed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.failed
}

func (b *sigInbox) stats() SignalStats {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := b.st
	// Queued signals, and the one the actor may hold staged.
	st.Buffered = int(st.Received - st.Delivered - st.Dropped - st.Discarded)
	return st
}

// finish delivers what it can without blocking, then the terminal event
// (making room for it by discarding the oldest unread event if the consumer
// left the channel full), and closes the channel. With block (the Router's
// streams, whose consumer reads until the channel closes) it delivers
// everything instead, waiting for room.
func (b *sigInbox) finish(staged, final Event, block bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	rest := b.q
	if staged != nil {
		rest = append([]Event{staged}, rest...)
	}
	b.q, b.nsig, b.staged = nil, 0, false
	if block {
		// Send without the lock: Stats stays callable meanwhile, and
		// nothing else touches the queue once closed is set.
		b.mu.Unlock()
		for _, ev := range rest {
			b.ch <- ev
			if _, ok := ev.(Signal); ok {
				b.mu.Lock()
				b.st.Delivered++
				b.mu.Unlock()
			}
		}
		b.ch <- final
		close(b.ch)
		b.mu.Lock()
		return
	}
	full := false
	for _, ev := range rest {
		_, isSig := ev.(Signal)
		if !full {
			select {
			case b.ch <- ev:
				if isSig {
					b.st.Delivered++
				}
				continue
			default:
				full = true
			}
		}
		if isSig {
			b.st.Discarded++
		}
	}
	for {
		select {
		case b.ch <- final:
			close(b.ch)
			return
		default:
		}
		select {
		case old := <-b.ch:
			if _, ok := old.(Signal); ok {
				b.st.Delivered--
				b.st.Discarded++
			}
		default:
		}
	}
}

// Emit sends one signal from a pooled connection to the Client's first
// server, for publishers that do not listen, and returns the number of
// copies the server queued (see SignalStream.Emit). Invalid input is an
// error matching ErrInvalidInput, and nothing is sent. Use a SignalStream
// (WithSignalServer) to emit on another server.
func (c *Client) Emit(ctx context.Context, channel, payload string) (int, error) {
	if ctx == nil {
		return 0, fmt.Errorf("dfstream: nil context: %w", ErrInvalidInput)
	}
	req, err := wire.Signal(channel, payload)
	if err != nil {
		return 0, err
	}
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return 0, ErrClosed
	}
	conn, err := c.conn(ctx, 0)
	if err != nil {
		return 0, err
	}
	line, err := conn.Do(ctx, req)
	if err != nil {
		_ = conn.Close()
		return 0, fmt.Errorf("dfstream: emit: %w: %w", ErrConnLost, err)
	}
	n, err := wire.ParseSignalReply(line)
	if err != nil && !errors.Is(err, wire.ErrServer) {
		_ = conn.Close()
		return 0, err
	}
	c.pools[0].put(conn)
	return n, err
}
