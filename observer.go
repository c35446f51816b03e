package dfstream

import (
	"time"
)

// Observer is told what happens in a Client's streams, for metrics (see the
// dfprom package for a Prometheus implementation). Set one with
// WithObserver; without one, nothing is reported and nothing is paid.
//
// The methods are called synchronously on the goroutine where the thing
// happens, often in the middle of a lock cycle, a renewal or a signal
// connection's read loop (each method says which). An implementation must
// therefore be fast and non-blocking (update counters, never do I/O or
// wait for a lock held across I/O) and safe for concurrent use: calls for
// different streams, and for one stream's acquire and its signal reader,
// run at once. It must not call back into the Client or its streams.
//
// Arguments carry the key of lock and semaphore streams, and the pattern
// and group of signals. Keys are unbounded in most programs: a metrics
// implementation should not make labels of them unless its user asks to.
// Patterns and groups are what the program subscribed to, a bounded set;
// signal channel names are not passed.
//
// Embed NopObserver to implement only some methods: methods added to
// Observer later are then no-ops.
type Observer interface {
	// ClientOpened is called by New once the Client is ready, before New
	// returns, and ClientClosed by Close once it has finished. Between
	// the two the observer may read the Client's IdleConns.
	ClientOpened(c *Client)
	// ClientClosed: see ClientOpened.
	ClientClosed(c *Client)

	// AcquireStarted is called when a lock or semaphore stream starts an
	// acquire round: on the goroutine calling Lock (or Semaphore, or
	// their Acquire forms) for the first round, on the stream's own
	// goroutine after a back-off. Attempt is 0 for the first round, and
	// counts the rounds since the key was last held (or since the start)
	// after that: a round with Attempt > 0 is a re-acquire (WithReacquire).
	AcquireStarted(s StreamRef, attempt int)
	// AcquireQueued is called once a round when the server answers the
	// enqueue with a place in the queue rather than a grant.
	AcquireQueued(s StreamRef)
	// AcquireEnded is called once for every AcquireStarted: err is nil
	// when the key was granted (and Acquired is on its way), otherwise
	// why the round failed (ErrTimeout, ErrUnreachable, the user's
	// context or ErrClosed, …). Wait is the time since the round
	// started; queued says whether AcquireQueued was called for it.
	AcquireEnded(s StreamRef, wait time.Duration, queued bool, err error)
	// Renewal is called when a renewal exchange ends, on the goroutine
	// that renews (one the Client's schedule starts): rtt is the round
	// trip, err nil when the server answered (a refusal still shows up as
	// a Lost).
	Renewal(s StreamRef, rtt time.Duration, err error)
	// Lost is called when a held key is lost (reason matches
	// ErrConnLost, ErrRenewRefused, ErrDeadlinePassed, ErrLeaseExpired,
	// …), held being how long it was held; on the goroutine that found
	// out (a renewal, the connection watcher, or Release or Close).
	Lost(s StreamRef, held time.Duration, reason error)
	// Released is called when a held key is released cleanly, on the
	// goroutine calling Release or Close.
	Released(s StreamRef, held time.Duration)

	// PoolGet is called when a lock or semaphore stream takes a
	// connection to server: hit when an idle pooled one served, false
	// when one must be dialled.
	PoolGet(server string, hit bool)
	// Dialed is called when a lock connection to server has been dialled
	// (TCP, TLS and authentication), on the goroutine that needed it.
	Dialed(server string, took time.Duration, err error)

	// SignalReceived is called for every signal a signal stream reads,
	// on its connection's reader goroutine (keep it short: the reader
	// serves the whole connection). Pattern and group are the
	// subscription the signal came through, empty when several of the
	// stream's subscriptions match its channel (see Signal). Dropped is
	// true when the overflow policy dropped a signal to make room (the
	// newest, this one, under DropNewest; the oldest under DropOldest;
	// under FailStream the stream fails with ErrOverflow).
	SignalReceived(pattern, group string, dropped bool)
	// Disconnected is called when a signal stream loses its connection
	// to server, on the stream's goroutine.
	Disconnected(server string, reason error)
	// Reconnected is called when a signal stream is connected and
	// subscribed again after a loss: down is how long signals may have
	// been missed, attempts the connection attempts it took. On the
	// stream's goroutine.
	Reconnected(server string, down time.Duration, attempts int)

	// HandlerDone is called when a Router handler returns (or panics),
	// on the handler's worker goroutine: err is nil on success, else the
	// handler's error (after middleware), or ErrHandlerPanic when it
	// panicked.
	HandlerDone(pattern, group string, took time.Duration, err error)
	// HandlerDropped is called when a signal for a Router handler is
	// dropped because the handler's queue is full (see
	// WithHandlerOverflow), on the goroutine routing the signal.
	HandlerDropped(pattern, group string)
}

// StreamRef names the lock or semaphore stream an Observer call is about.
type StreamRef struct {
	Kind   string // "lock" or "semaphore"
	Key    string
	Server string // the address of the server that owns Key
}

// NopObserver implements Observer with methods that do nothing. Embed it
// in an Observer that needs only some of them.
type NopObserver struct{}

var _ Observer = NopObserver{}

// ClientOpened does nothing.
func (NopObserver) ClientOpened(*Client) {}

// ClientClosed does nothing.
func (NopObserver) ClientClosed(*Client) {}

// AcquireStarted does nothing.
func (NopObserver) AcquireStarted(StreamRef, int) {}

// AcquireQueued does nothing.
func (NopObserver) AcquireQueued(StreamRef) {}

// AcquireEnded does nothing.
func (NopObserver) AcquireEnded(StreamRef, time.Duration, bool, error) {}

// Renewal does nothing.
func (NopObserver) Renewal(StreamRef, time.Duration, error) {}

// Lost does nothing.
func (NopObserver) Lost(StreamRef, time.Duration, error) {}

// Released does nothing.
func (NopObserver) Released(StreamRef, time.Duration) {}

// PoolGet does nothing.
func (NopObserver) PoolGet(string, bool) {}

// Dialed does nothing.
func (NopObserver) Dialed(string, time.Duration, error) {}

// SignalReceived does nothing.
func (NopObserver) SignalReceived(string, string, bool) {}

// Disconnected does nothing.
func (NopObserver) Disconnected(string, error) {}

// Reconnected does nothing.
func (NopObserver) Reconnected(string, time.Duration, int) {}

// HandlerDone does nothing.
func (NopObserver) HandlerDone(string, string, time.Duration, error) {}

// HandlerDropped does nothing.
func (NopObserver) HandlerDropped(string, string) {}

// WithObserver reports what the Client's streams do to o (see Observer).
// A nil o reports nothing.
func WithObserver(o Observer) Option {
	return clientOption(func(c *clientConfig) error {
		c.observer = o
		return nil
	})
}

// IdleConns returns how many idle lock connections the Client keeps in its
// pools, over every server.
func (c *Client) IdleConns() int {
	n := 0
	for _, p := range c.pools {
		p.mu.Lock()
		n += len(p.idle)
		p.mu.Unlock()
	}
	return n
}

// The helpers below keep each call site in the stream code to one line;
// each costs a nil check when no Observer is set.

func (s *holdStream) ref() StreamRef {
	return StreamRef{Kind: s.kind.String(), Key: s.key, Server: s.c.cfg.servers[s.srv]}
}

// observeRound reports the start of an acquire round.
func (s *holdStream) observeRound() {
	if o := s.c.cfg.observer; o != nil {
		s.inRound = true
		o.AcquireStarted(s.ref(), s.attempt)
	}
}

// observeQueued reports that the round's enqueue was answered queued.
func (s *holdStream) observeQueued() {
	if o := s.c.cfg.observer; o != nil {
		o.AcquireQueued(s.ref())
	}
}

// observeRoundEnd reports the end of the acquire round in progress, if
// any: granted when err is nil.
func (s *holdStream) observeRoundEnd(err error) {
	if o := s.c.cfg.observer; o != nil && s.inRound {
		s.inRound = false
		if err != nil && s.stopped() {
			err = s.stopCause() // the exchange was cut short for it
		}
		o.AcquireEnded(s.ref(), time.Since(s.roundStart), s.queuedInRound, err)
	}
}

// observeRenewal reports a renewal exchange sent at sent.
func (s *holdStream) observeRenewal(sent time.Time, err error) {
	if o := s.c.cfg.observer; o != nil {
		o.Renewal(s.ref(), time.Since(sent), err)
	}
}

// observeEnd reports the end of a hold: released when reason is nil.
func (s *holdStream) observeEnd(reason error) {
	o := s.c.cfg.observer
	if o == nil {
		return
	}
	held := time.Since(s.grant.At)
	if reason == nil {
		o.Released(s.ref(), held)
		return
	}
	o.Lost(s.ref(), held, reason)
}

// observePool reports a connection taken from server i's pool (hit), or
// the need to dial one.
func (c *Client) observePool(i int, hit bool) {
	if o := c.cfg.observer; o != nil {
		o.PoolGet(c.cfg.servers[i], hit)
	}
}

// observeDial reports a lock connection dialled to server i from start.
func (c *Client) observeDial(i int, start time.Time, err error) {
	if o := c.cfg.observer; o != nil {
		o.Dialed(c.cfg.servers[i], time.Since(start), err)
	}
}

// observeSignal reports a signal read by s's connection.
func (s *SignalStream) observeSignal(sig Signal, dropped bool) {
	if o := s.c.cfg.observer; o != nil {
		o.SignalReceived(sig.Pattern, sig.Group, dropped)
	}
}

// observeDisconnected reports the loss of s's connection.
func (s *SignalStream) observeDisconnected(reason error) {
	if o := s.c.cfg.observer; o != nil {
		o.Disconnected(s.addr, reason)
	}
}

// observeReconnected reports that s is connected and subscribed again.
func (s *SignalStream) observeReconnected(down time.Duration, attempts int) {
	if o := s.c.cfg.observer; o != nil {
		o.Reconnected(s.addr, down, attempts)
	}
}

// observer is the Router's Client's Observer, if any.
func (r *Router) observer() Observer {
	if r.c == nil { // a bare Router of an internal test
		return nil
	}
	return r.c.cfg.observer
}

// handlerStart is when a handler starts, when an Observer wants to know.
func (r *Router) handlerStart() time.Time {
	if r.observer() == nil {
		return time.Time{}
	}
	return time.Now()
}

// observeHandler reports a handler of rt that ran from start: ok is false
// when it panicked.
func (r *Router) observeHandler(rt *route, start time.Time, ok bool, err error) {
	o := r.observer()
	if o == nil {
		return
	}
	if !ok {
		err = ErrHandlerPanic
	}
	o.HandlerDone(rt.pattern, rt.group, time.Since(start), err)
}

// observeDrop reports a signal dropped at rt's full queue.
func (r *Router) observeDrop(rt *route) {
	if o := r.observer(); o != nil {
		o.HandlerDropped(rt.pattern, rt.group)
	}
}
