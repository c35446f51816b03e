package dfstream

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
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
// own connection (see WithSignalHeartbeat). dfstream listeners never deliver
// signals on channels with this prefix; other clients listening to wide
// patterns such as ">" see them, once per heartbeat per stream (twice on
// servers that answer error to ping).
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

// Subscription is one of a SignalStream's subscriptions, as Listen and
// ListenGroup return it: a pattern, the queue group it joined ("" for
// none), and its own counters. Its signals arrive on the stream's Events
// channel, in order with every other event of the stream: one channel for
// a select loop, whatever the number of subscriptions. Pattern and Group
// are as given to Listen; changing them changes nothing.
//
// A stream has at most one subscription per pattern and group: listening
// again to one it has returns the same *Subscription.
type Subscription struct {
	Pattern string
	Group   string

	s         *SignalStream
	key       subKey
	seq       uint64          // order of making on the stream: first made, first named
	self      []*Subscription // {this one}: Signal.subs of a signal only it matched
	listening atomic.Bool
	delivered atomic.Uint64
	dropped   atomic.Uint64
}

// SubscriptionStats counts the signals that matched a subscription.
//
// The server sends a stream one copy of a signal for all its matching plain
// subscriptions together, plus one per matching queue group, and the
// copies are indistinguishable: every copy counts for each of the stream's
// subscriptions that matches its channel.
type SubscriptionStats struct {
	// Delivered counts the matching signals handed to the Events channel.
	Delivered uint64
	// Dropped counts the matching signals lost to the overflow policy, or
	// brought by a new connection beyond the buffer (see SignalStats).
	Dropped uint64
}

// subKey identifies a subscription on the wire: the server knows a
// connection's subscriptions by pattern and group.
type subKey struct {
	pattern string
	group   string
}

// String returns the pattern, followed by the group if there is one.
func (k subKey) String() string {
	if k.group == "" {
		return k.pattern
	}
	return k.pattern + " (group " + k.group + ")"
}

// String returns the pattern, followed by the group if there is one.
func (sub *Subscription) String() string { return sub.key.String() }

// Stats returns the subscription's counters.
func (sub *Subscription) Stats() SubscriptionStats {
	return SubscriptionStats{Delivered: sub.delivered.Load(), Dropped: sub.dropped.Load()}
}

// Listening reports whether the stream still has this subscription: false
// once it was unlistened, refused by the server, or the stream ended.
func (sub *Subscription) Listening() bool { return sub.listening.Load() }

// Unlisten drops this subscription: it is SignalStream.UnlistenGroup of its
// pattern and group, except that it does nothing when the stream no longer
// has this subscription (it was unlistened already, even if listened to
// again since: that is another Subscription). Signals that arrived before
// are still delivered, in order, on the Events channel, and counted.
func (sub *Subscription) Unlisten(ctx context.Context) error {
	if sub.s == nil {
		return fmt.Errorf("dfstream: unlisten: not a subscription Listen returned: %w", ErrInvalidInput)
	}
	return sub.s.unlisten(ctx, sub.key, sub)
}

// SignalStats counts what happened to the signals a stream received. At any
// moment Received = Delivered + Dropped + Discarded + Buffered.
type SignalStats struct {
	// Received counts the signals that arrived from the server (probe
	// signals excluded).
	Received uint64
	// Delivered counts the signals handed to the Events channel.
	Delivered uint64
	// Dropped counts the signals lost to the overflow policy, and those
	// a new connection brought beyond the buffer before Reconnected.
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
// bounded buffer governed by the overflow policy (WithSignalOverflow,
// WithSignalBuffer), so heartbeats and command replies keep flowing behind a
// consumer that stopped reading. Listen, Unlisten and Emit may be called from
// any goroutine while signals arrive.
//
// When the connection is lost the stream reports Disconnected, reconnects
// with jittered exponential backoff, listens again to every pattern and
// group, and reports Reconnected. Delivery is at most once: signals sent
// while it was disconnected are gone, and the two events bound that window
// (Disconnected.Since, the last moment delivery was known to work, to
// Reconnected.At); no signal is delivered between the two events.
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
	probeSent atomic.Uint64               // newest probe sequence emitted
	lastSeen  atomic.Int64                // UnixNano when delivery was last seen to work
	connected atomic.Bool

	mu      sync.Mutex
	err     error
	subList []*Subscription
}

var _ Stream = (*SignalStream)(nil)

// subSnapshot is an immutable view of a stream's subscriptions, replaced on
// every change, so the push handler can attribute a signal to the
// subscription it came through without locking.
type subSnapshot struct {
	trie subject.Trie[*Subscription]
}

// match returns the subscriptions whose pattern matches channel, first made
// first. It allocates only when several match.
func (snap *subSnapshot) match(channel string) []*Subscription {
	var one *Subscription
	var many []*Subscription
	snap.trie.Lookup(channel, func(_ string, sub *Subscription) {
		switch {
		case one == nil:
			one = sub
		case many == nil:
			many = []*Subscription{one, sub}
		default:
			many = append(many, sub)
		}
	})
	if many == nil {
		if one == nil {
			return nil
		}
		return one.self
	}
	slices.SortFunc(many, func(a, b *Subscription) int { return cmp.Compare(a.seq, b.seq) })
	return many
}

// Signals connects to the signal server (the Client's first server, or the
// one WithSignalServer names) and starts a signal stream on that connection,
// which listens to nothing yet. It returns an error when the first
// connection cannot be made: matching ErrUnreachable when the server cannot
// be reached (refused, timed out, TLS handshake failed), ErrAuth when it
// refuses the token, ErrUnsupported when the server's generation has no
// signals (1.10, 2.x), which Signals knows from the Client's probe of the
// server (made on that first connection, unless the Client made it before
// or WithGeneration states it). After that the stream reconnects by itself,
// for as long as it takes: an unreachable server is then reported by
// Disconnected and retried, not an error. A server that requires a token
// this Client does not send (none configured) accepts the connection and
// refuses its first request: when that is the probe, Signals returns an
// error matching ErrAuth; otherwise the stream ends with Failed matching
// ErrAuth, and the Listen or Emit in flight returns that error. The stream
// ends when ctx ends or Close is called.
func (c *Client) Signals(ctx context.Context, opts ...SignalOption) (*SignalStream, error) {
	if ctx == nil {
		return nil, fmt.Errorf("dfstream: nil context: %w", ErrInvalidInput)
	}
	cfg := c.cfg.signal
	if err := applyAll(&cfg, opts, SignalOption.applySignal); err != nil {
		return nil, err
	}
	if !cfg.heartbeatSet && c.cfg.serverReadTimeout/2 < cfg.heartbeat {
		cfg.heartbeat = c.cfg.serverReadTimeout / 2
	}
	srv, err := c.serverIndex(cfg.server)
	if err != nil {
		return nil, err
	}
	if err := c.needSignals(srv); err != nil {
		return nil, err
	}
	addr := c.cfg.servers[srv]
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
	// Nothing listens yet: nothing can be missed before now.
	s.lastSeen.Store(time.Now().UnixNano())

	conn, err := c.dial(ctx, addr, wire.WithPushHandler(s.onPush))
	if err == nil {
		err = c.probeSignals(ctx, srv, conn)
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		return nil, unreachable(err)
	}
	actx, cancel := context.WithCancelCause(ctx)
	s.cancel = cancel
	a := &sigActor{
		s:           s,
		conn:        conn,
		hb:          time.NewTimer(time.Hour),
		retry:       time.NewTimer(time.Hour),
		dialRes:     make(chan dialResult, 1),
		waiters:     make(map[subKey][]*sigCmd),
		subIndex:    make(map[subKey]int),
		unlistening: make(map[subKey]int),
		probeRes:    make(chan probeResult, 2),
		probeOn:     cfg.probe && cfg.heartbeat > 0,
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
func (s *SignalStream) Subscriptions() []*Subscription {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*Subscription(nil), s.subList...)
}

// Listen subscribes to pattern without a queue group, and returns the
// subscription: every signal whose channel matches is delivered to this
// stream's Events channel (once per signal, however many of the stream's
// plain patterns match). It returns once the server has confirmed; while
// the stream is reconnecting, that is after it has reconnected. If ctx ends
// first, Listen returns ctx's error, and the subscription may still take
// effect (see Subscriptions; Unlisten drops it). A subscription the server
// refuses is forgotten, and the error matches ErrServer. An invalid pattern
// is an error matching ErrInvalidInput, and nothing is sent.
func (s *SignalStream) Listen(ctx context.Context, pattern string) (*Subscription, error) {
	return s.ListenGroup(ctx, pattern, "")
}

// ListenGroup subscribes to pattern in the queue group group, and returns
// the subscription: each matching signal goes to one member of the group
// (the connections that joined (pattern, group)), round robin. A group is
// identified by pattern and name together. group "" is Listen. A Listen
// that an Unlisten of the same subscription overtakes before the server
// confirmed it returns an error matching ErrUnlistened.
func (s *SignalStream) ListenGroup(ctx context.Context, pattern, group string) (*Subscription, error) {
	req, err := wire.Listen(pattern, group)
	if err != nil {
		return nil, err
	}
	r, err := s.do(ctx, &sigCmd{op: opListen, key: subKey{pattern, group}, req: req})
	return r.sub, err
}

// Unlisten drops the plain subscription to pattern (a group membership on
// the same pattern stays). Unlistening what was never listened to is fine.
func (s *SignalStream) Unlisten(ctx context.Context, pattern string) error {
	return s.UnlistenGroup(ctx, pattern, "")
}

// UnlistenGroup leaves the queue group group on pattern.
func (s *SignalStream) UnlistenGroup(ctx context.Context, pattern, group string) error {
	return s.unlisten(ctx, subKey{pattern, group}, nil)
}

// unlisten drops the subscription key; only if it is sub when sub is not
// nil.
func (s *SignalStream) unlisten(ctx context.Context, key subKey, sub *Subscription) error {
	req, err := wire.Unlisten(key.pattern, key.group)
	if err != nil {
		return err
	}
	_, err = s.do(ctx, &sigCmd{op: opUnlisten, key: key, only: sub, req: req})
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
	r, err := s.do(ctx, &sigCmd{op: opEmit, req: req, ctx: ctx})
	return r.n, err
}

func (s *SignalStream) do(ctx context.Context, cmd *sigCmd) (cmdResult, error) {
	if ctx == nil {
		return cmdResult{}, fmt.Errorf("dfstream: nil context: %w", ErrInvalidInput)
	}
	cmd.reply = make(chan cmdResult, 1)
	select {
	case s.cmds <- cmd:
	case <-s.done:
		return cmdResult{}, closedCause(s.Err())
	case <-ctx.Done():
		return cmdResult{}, ctx.Err()
	}
	select {
	case r := <-cmd.reply:
		return r, r.err
	case <-s.done:
		// The actor answers every command before it exits; this is a
		// safety net, so that no call outlives the stream.
		select {
		case r := <-cmd.reply:
			return r, r.err
		default:
			return cmdResult{}, closedCause(s.Err())
		}
	case <-ctx.Done():
		return cmdResult{}, ctx.Err()
	}
}

// onPush runs on the connection's reader goroutine for every sig line. It
// must not block: it hands the signal to the bounded inbox.
func (s *SignalStream) onPush(p wire.Push) {
	if strings.HasPrefix(p.Channel, ProbeChannelPrefix) {
		if p.Channel == s.probeCh {
			s.onProbe(p.Payload)
		}
		return
	}
	sig := Signal{Channel: p.Channel, Payload: p.Payload, subs: s.subs.Load().match(p.Channel)}
	if len(sig.subs) > 0 {
		sig.Pattern, sig.Group = sig.subs[0].key.pattern, sig.subs[0].key.group
	}
	sig.At = time.Now()
	s.delivered(sig.At.UnixNano())
	s.observeSignal(sig, s.box.pushSignal(sig))
}

// onProbe records the arrival of a probe of this stream (probePayload). A
// keepalive's payload is not one: it proves nothing.
func (s *SignalStream) onProbe(payload string) {
	seqText, atText, _ := strings.Cut(payload, " ")
	seq, err := strconv.ParseUint(seqText, 10, 64)
	if err != nil || seq > s.probeSent.Load() {
		return // not one this stream emitted: it proves nothing
	}
	// A probe proves delivery at the time it was emitted, not later.
	if at, err := strconv.ParseInt(atText, 10, 64); err == nil && at <= time.Now().UnixNano() {
		s.delivered(at)
	}
	for {
		old := s.probeSeen.Load()
		if seq <= old || s.probeSeen.CompareAndSwap(old, seq) {
			return
		}
	}
}

// delivered records that delivery is known to have worked at t (UnixNano).
func (s *SignalStream) delivered(t int64) {
	for {
		old := s.lastSeen.Load()
		if t <= old || s.lastSeen.CompareAndSwap(old, t) {
			return
		}
	}
}

// probeSignals learns the generation of server srv on conn, the signal
// stream's first connection, unless the Client knows it, and returns an
// *UnsupportedError when the server has no signals. On any error conn is
// closed.
func (c *Client) probeSignals(ctx context.Context, srv int, conn *wire.Conn) error {
	if c.gens[srv].load() == GenUnknown {
		ctx, cancel := context.WithTimeout(ctx, c.cfg.connectTimeout)
		defer cancel()
		err := c.learnGeneration(ctx, srv, func(req wire.Request) (string, error) { return conn.Do(ctx, req) })
		if errors.Is(err, ErrAuth) {
			err = fmt.Errorf("signals: authentication refused: %w", err) // as when the stream's first request is
		}
		if err != nil {
			_ = conn.Close()
			return fmt.Errorf("dfstream: %w", err)
		}
	}
	if err := c.needSignals(srv); err != nil {
		_ = conn.Close()
		return err
	}
	return nil
}

// unreachable marks the error of a failed dial as ErrUnreachable, unless
// the server refused the token, the input was invalid, or the server has
// no signals.
func unreachable(err error) error {
	if errors.Is(err, ErrAuth) || errors.Is(err, ErrInvalidInput) || errors.Is(err, ErrUnsupported) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrUnreachable, err)
}

func (s *SignalStream) end(err error) {
	s.mu.Lock()
	s.err = err
	s.mu.Unlock()
}

// Emit sends one signal from a pooled connection to the Client's first
// server, for publishers that do not listen, and returns the number of
// copies the server queued (see SignalStream.Emit). Invalid input is an
// error matching ErrInvalidInput, and nothing is sent; so is a server
// without signals, an error matching ErrUnsupported (its generation known
// from the Client's probe, or stated with WithGeneration). Use a
// SignalStream (WithSignalServer) to emit on another server.
//
// A pooled connection that the server closed while it sat idle is not
// reused, and an emit that gets no byte of reply on a pooled connection
// (the server closed it just as the request arrived) goes once more on a
// fresh one, so a server restart costs no failed call. In the rare case
// of a server that read the signal, delivered it and died before
// replying, that retry delivers it twice: delivery is at most once per
// server process, not across a crash.
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
	if _, err := c.generation(ctx, 0); err != nil {
		return 0, err
	}
	if err := c.needSignals(0); err != nil {
		return 0, err
	}
	var n int
	err = c.roundTrip(ctx, 0, req, func(line string) (err error) {
		n, err = wire.ParseSignalReply(line)
		return err
	})
	if err != nil {
		if errors.Is(err, ErrConnLost) {
			err = fmt.Errorf("dfstream: emit: %w", err)
		}
		return 0, err
	}
	return n, nil
}
