package dfstream

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sourcegraph/conc"
	"github.com/sourcegraph/conc/panics"
	concpool "github.com/sourcegraph/conc/pool"

	"github.com/dfstream/dfstream/subject"
	"github.com/dfstream/dfstream/wire"
)

// Handler handles the signals a Router routes to it. An error it returns
// goes to the router's error handler (WithRouterErrorHandler); the router
// goes on.
type Handler interface {
	HandleSignal(ctx context.Context, sig Signal) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, sig Signal) error

// HandleSignal calls f(ctx, sig).
func (f HandlerFunc) HandleSignal(ctx context.Context, sig Signal) error { return f(ctx, sig) }

// DefaultHandlerQueue is how many signals wait for a busy handler before
// its overflow policy applies.
const DefaultHandlerQueue = 256

// Router routes signals to handlers by subject pattern ("*" matches one
// token, a final ">" one or more tokens, other tokens match exactly), in the
// manner of net/http's ServeMux. Register handlers with Handle, HandleFunc
// and HandleGroup, add middleware with Use, then call Run.
//
// Connections: a router uses one SignalStream for all its plain (non-group)
// handlers, and one more per group handler. The server delivers a signal once
// per connection for all its matching plain subscriptions, and that copy is
// dispatched through a trie to every plain handler whose pattern matches. A
// queue group, however, delivers its copy to one member connection, and on a
// connection that also had plain subscriptions that copy could not be told
// from the plain one; so each group handler has its own connection, and a
// signal the server delivers through a group reaches exactly that group's
// handler. A signal therefore reaches exactly the handlers whose
// subscription the server delivered it through: a plain handler and a group
// handler on overlapping patterns each get their own copy.
//
// Handlers: each handler has a bounded queue (WithHandlerQueueSize) and
// runs its signals one at a time in arrival order (the default), or on up to
// n workers at once (WithHandlerConcurrency, a conc worker pool). A handler
// that blocks holds up only its own queue: other handlers, heartbeats and
// reconnects go on. When its queue is full, its overflow policy
// (WithHandlerOverflow, default DropNewest) applies, the loss is counted
// (Stats) and reported as an Overflow event to the event handler.
//
// A Router runs once. It is safe for concurrent use.
type Router struct {
	c   *Client
	cfg routerConfig

	mu      sync.Mutex
	started bool
	mw      []Middleware
	routes  []*route
	streams []*SignalStream // Run's connections, for Stats
	plain   subject.Trie[*route]
	ready   chan struct{}

	received atomic.Uint64
	handled  atomic.Uint64
	failed   atomic.Uint64
	dropped  atomic.Uint64

	panicked atomic.Pointer[panics.Recovered] // first unrecovered handler panic
	stopOnce sync.Once
	runErr   error // why the router stopped, if not its context; set once
	stopRun  context.CancelCauseFunc
}

// RouterStats counts what a Router did with the signals it received.
//
// A signal arrives on one of the router's connections (Arrived), waits in
// that connection's buffer, and is then routed (Received) to the handlers
// whose subscription it came through, unless the buffer overflowed under
// its policy (ConnDropped; see WithRouterSignalOptions). Each delivery to a
// handler is handled, failed, or dropped at the handler's full queue.
type RouterStats struct {
	Arrived     uint64 // signals that arrived from the server on the router's connections
	ConnDropped uint64 // signals the connections' buffers dropped before routing
	Received    uint64 // signals taken from the connections and routed
	Handled     uint64 // handler calls that returned nil
	Failed      uint64 // handler calls that returned an error (or panicked, under Recover)
	Dropped     uint64 // handler deliveries lost to a full handler queue
}

// route is one registered handler and, while running, its queue.
type route struct {
	pattern string
	group   string
	h       Handler // as registered
	cfg     handlerConfig

	final   Handler // with middleware, set by Run
	q       chan Signal
	workers *concpool.Pool
	dropped atomic.Uint64
	unrep   uint64 // drops not yet reported; dispatcher only
}

// NewRouter returns a Router that connects through c.
func NewRouter(c *Client, opts ...RouterOption) (*Router, error) {
	if c == nil {
		return nil, fmt.Errorf("dfstream: nil Client: %w", ErrInvalidInput)
	}
	r := &Router{c: c, ready: make(chan struct{})}
	if err := applyAll(&r.cfg, opts, RouterOption.applyRouter); err != nil {
		return nil, err
	}
	return r, nil
}

// Use adds middleware around every handler of the router, the first one
// outermost. Middleware applies to handlers registered before and after,
// and must be added before Run; Use panics once Run has started.
func (r *Router) Use(mw ...Middleware) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.started {
		panic(ErrRouterStarted)
	}
	for _, m := range mw {
		if m == nil {
			panic("dfstream: Router.Use: nil middleware")
		}
	}
	r.mw = append(r.mw, mw...)
}

// Handle registers h for the signals whose channel matches pattern. Several
// handlers may share a pattern, and patterns may overlap: each matching
// handler gets the signal. An invalid pattern is an error matching
// ErrInvalidInput. Handlers must be registered before Run (ErrRouterStarted).
func (r *Router) Handle(pattern string, h Handler, opts ...HandlerOption) error {
	return r.add(pattern, "", h, opts)
}

// HandleFunc registers f as in Handle.
func (r *Router) HandleFunc(pattern string, f func(ctx context.Context, sig Signal) error, opts ...HandlerOption) error {
	if f == nil {
		return fmt.Errorf("dfstream: nil handler for %q: %w", pattern, ErrInvalidInput)
	}
	return r.add(pattern, "", HandlerFunc(f), opts)
}

// HandleGroup registers h as a member of the queue group group on pattern:
// the server delivers each matching signal to one member of the group
// (round robin over every connection that joined it, in this process or
// another), so the group as a whole handles each signal once. The handler
// has a connection of its own (see Router).
func (r *Router) HandleGroup(pattern, group string, h Handler, opts ...HandlerOption) error {
	if group == "" {
		return fmt.Errorf("dfstream: HandleGroup %q: %w", pattern, &wire.InputError{Field: "group", Reason: "empty"})
	}
	return r.add(pattern, group, h, opts)
}

func (r *Router) add(pattern, group string, h Handler, opts []HandlerOption) error {
	if err := wire.ValidatePattern(pattern); err != nil {
		return err
	}
	if err := wire.ValidateGroup(group); err != nil {
		return err
	}
	if h == nil {
		return fmt.Errorf("dfstream: nil handler for %q: %w", pattern, ErrInvalidInput)
	}
	cfg := handlerConfig{workers: 1, queue: DefaultHandlerQueue, policy: DefaultOverflow}
	if err := applyAll(&cfg, opts, HandlerOption.applyHandler); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.started {
		return ErrRouterStarted
	}
	rt := &route{pattern: pattern, group: group, h: h, cfg: cfg}
	r.routes = append(r.routes, rt)
	if group == "" {
		r.plain.Insert(pattern, rt)
	}
	return nil
}

// Ready is closed once Run has subscribed every handler (the server has
// confirmed every listen): signals emitted from then on are routed. If Run
// fails (or its context ends) before that, Ready is never closed: wait for
// Ready and for Run's result together.
func (r *Router) Ready() <-chan struct{} { return r.ready }

// Stats returns the router's counters.
func (r *Router) Stats() RouterStats {
	st := RouterStats{
		Received: r.received.Load(),
		Handled:  r.handled.Load(),
		Failed:   r.failed.Load(),
		Dropped:  r.dropped.Load(),
	}
	r.mu.Lock()
	streams := r.streams
	r.mu.Unlock()
	for _, s := range streams {
		ss := s.Stats()
		st.Arrived += ss.Received
		st.ConnDropped += ss.Dropped
	}
	return st
}

// match calls visit for every plain route whose pattern matches channel.
// It does not allocate.
func (r *Router) match(channel string, visit func(string, *route)) {
	r.plain.Lookup(channel, visit)
}

// Run connects, subscribes every handler, and routes signals until ctx ends
// or a failure stops the router. Then it stops taking signals (closes its
// connections), lets every signal already received reach its handlers, and
// returns once every handler call has finished: a handler that never returns
// keeps Run from returning (use Timeout, and honour ctx).
//
// Handlers get a context that carries ctx's values but is not cancelled when
// ctx ends, so that the calls in flight can finish.
//
// Run returns nil when ctx ended, or the error that stopped the router: a
// connection or subscription that failed at start (a server that cannot be
// reached matches ErrUnreachable), authentication refused (ErrAuth, also
// when no token is configured for a server that requires one),
// a subscription the server rejected, overflow under FailStream, or the
// Client closed under it (an error matching ErrClosed). If a handler
// panicked without the Recover middleware, or the error or event handler
// panicked, the router stops and Run re-panics with that panic (and its
// stack) once drained.
func (r *Router) Run(ctx context.Context) (err error) {
	if ctx == nil {
		return fmt.Errorf("dfstream: router: nil context: %w", ErrInvalidInput)
	}
	r.mu.Lock()
	if r.started {
		r.mu.Unlock()
		return ErrRouterStarted
	}
	r.started = true
	routes := r.routes
	mw := r.mw
	r.mu.Unlock()
	if len(routes) == 0 {
		return fmt.Errorf("dfstream: router has no handlers: %w", ErrInvalidInput)
	}

	runCtx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	r.stopRun = stop
	hctx := context.WithoutCancel(ctx)

	// Handlers first, so that no signal waits for a worker to exist.
	for _, rt := range routes {
		rt.final = chain(rt.h, mw, rt.cfg.mw)
		rt.q = make(chan Signal, rt.cfg.queue)
		rt.workers = concpool.New().WithMaxGoroutines(rt.cfg.workers)
		for range rt.cfg.workers {
			rt.workers.Go(func() { r.work(hctx, rt) })
		}
	}

	var streams []*SignalStream
	var dispatchers conc.WaitGroup
	defer func() {
		// Cancel runCtx first, so that the dispatchers take the streams'
		// ends below for the shutdown they are (see dispatch).
		stop(nil)
		for _, s := range streams {
			_ = s.Close()
		}
		dispatchers.Wait()
		for _, rt := range routes {
			close(rt.q)
		}
		for _, rt := range routes {
			rt.workers.Wait()
		}
		if p := r.panicked.Load(); p != nil {
			panic(p) // as conc does: the value, with the handler's stack
		}
		if err == nil {
			err = r.failure()
		}
	}()

	// The router's streams deliver everything they buffered when they end:
	// their dispatchers read until the Events channels close.
	sigOpts := append(slices.Clip(r.cfg.sigOpts), drainOnClose())
	var plain []*route
	seen := make(map[string]bool)
	var plainPatterns []string
	for _, rt := range routes {
		if rt.group == "" {
			plain = append(plain, rt)
			if !seen[rt.pattern] {
				seen[rt.pattern] = true
				plainPatterns = append(plainPatterns, rt.pattern)
			}
		}
	}
	if len(plain) > 0 {
		s, err := r.c.Signals(runCtx, sigOpts...)
		if err != nil {
			return r.startErr(ctx, err)
		}
		streams = append(streams, s)
		r.track(s)
		dispatchers.Go(func() { r.dispatch(runCtx, s, nil) })
		for _, p := range plainPatterns {
			if _, err := s.Listen(runCtx, p); err != nil {
				return r.startErr(ctx, err)
			}
		}
	}
	for _, rt := range routes {
		if rt.group == "" {
			continue
		}
		s, err := r.c.Signals(runCtx, sigOpts...)
		if err != nil {
			return r.startErr(ctx, err)
		}
		streams = append(streams, s)
		r.track(s)
		dispatchers.Go(func() { r.dispatch(runCtx, s, rt) })
		if _, err := s.ListenGroup(runCtx, rt.pattern, rt.group); err != nil {
			return r.startErr(ctx, err)
		}
	}
	close(r.ready)
	r.c.cfg.logger.Debug().Int("handlers", len(routes)).Int("connections", len(streams)).Msg("router running")

	<-runCtx.Done()
	return nil // the deferred drain reports a failure, if any
}

// track records one of Run's connections for Stats.
func (r *Router) track(s *SignalStream) {
	r.mu.Lock()
	r.streams = append(r.streams, s)
	r.mu.Unlock()
}

// failure returns why the router stopped by itself, nil if it did not.
func (r *Router) failure() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.runErr
}

// startErr is what Run returns when setting up failed: why the router
// stopped if a stream failed meanwhile (err is then often just runCtx's
// cancellation), else nil when ctx ended meanwhile (the user stopped it),
// else err.
func (r *Router) startErr(ctx context.Context, err error) error {
	if f := r.failure(); f != nil {
		return f
	}
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// dispatch routes the events of one stream: for the plain stream (group ==
// nil) through the trie, for a group stream to its one handler. A stream
// that ends while runCtx is still live was closed under the router (by
// Client.Close): that stops the router, with an error matching ErrClosed.
func (r *Router) dispatch(runCtx context.Context, s *SignalStream, group *route) {
	events := s.Events()
	var touched []*route // routes with unreported drops
	var reported time.Time
	for ev := range events {
		switch e := ev.(type) {
		case Signal:
			r.received.Add(1)
			e.subs = nil // the router's own: handlers have their pattern and group
			if group != nil {
				e.Pattern, e.Group = group.pattern, group.group
				touched = r.offer(group, e, touched)
				break
			}
			r.match(e.Channel, func(pattern string, rt *route) {
				sig := e
				sig.Pattern, sig.Group = pattern, ""
				touched = r.offer(rt, sig, touched)
			})
		case Failed:
			r.stop(e.Err)
		case Closed:
		case Overflow:
			if group != nil {
				e.Pattern, e.Group = group.pattern, group.group
			}
			r.event(e)
		default:
			r.event(ev)
		}
		// Report drops once the burst is over, or every 100ms during one.
		if len(touched) > 0 && (len(events) == 0 || time.Since(reported) > 100*time.Millisecond) {
			touched = r.reportDrops(touched)
			reported = time.Now()
		}
	}
	r.reportDrops(touched)
	if runCtx.Err() == nil {
		r.stop(fmt.Errorf("dfstream: router: signal stream to %s closed: %w", s.Server(), ErrClosed))
	}
}

// offer hands sig to rt's queue without blocking, applying rt's overflow
// policy when the queue is full.
func (r *Router) offer(rt *route, sig Signal, touched []*route) []*route {
	select {
	case rt.q <- sig:
		return touched
	default:
	}
	switch rt.cfg.policy {
	case DropOldest:
		// Evict the oldest signal to make room, and count a drop only if
		// one was evicted: a worker may have emptied the queue meanwhile.
		// This goroutine is the queue's only sender, so once there is room
		// the send cannot block.
		select {
		case <-rt.q:
			rt.q <- sig
		default:
			rt.q <- sig // the queue is empty now: nothing lost
			return touched
		}
	case FailStream:
		r.stop(fmt.Errorf("%w: handler %s queue full (%d signals)", ErrOverflow, subKey{rt.pattern, rt.group}, rt.cfg.queue))
	}
	rt.dropped.Add(1)
	r.dropped.Add(1)
	r.observeDrop(rt)
	if rt.unrep == 0 {
		touched = append(touched, rt)
	}
	rt.unrep++
	return touched
}

// reportDrops emits one Overflow event per route with drops not yet
// reported.
func (r *Router) reportDrops(touched []*route) []*route {
	now := time.Now()
	for _, rt := range touched {
		r.event(Overflow{
			Pattern: rt.pattern, Group: rt.group,
			Dropped: rt.unrep, Total: rt.dropped.Load(),
			Policy: rt.cfg.policy, At: now,
		})
		rt.unrep = 0
	}
	return touched[:0]
}

func (r *Router) event(ev Event) {
	log := r.c.cfg.logger
	switch e := ev.(type) {
	case Disconnected:
		log.Warn().Err(e.Reason).Msg("router connection lost")
	case Reconnected:
		log.Info().Dur("down", e.Down).Msg("router reconnected")
	case Overflow:
		log.Warn().Str("pattern", e.Pattern).Str("group", e.Group).Uint64("dropped", e.Dropped).Uint64("total", e.Total).Msg("signals dropped")
	}
	if r.cfg.onEvent != nil {
		r.try(func() { r.cfg.onEvent(ev) })
	}
}

// try runs f, a handler or a hook the user gave, and stops the router with
// its panic, if any: Run re-panics with the first one once drained.
func (r *Router) try(f func()) bool {
	var c panics.Catcher
	c.Try(f)
	rec := c.Recovered()
	if rec == nil {
		return true
	}
	r.panicked.CompareAndSwap(nil, rec)
	r.stop(&HandlerPanic{Value: rec.Value, Stack: rec.Stack})
	return false
}

// stop ends Run with err (the first one wins).
func (r *Router) stop(err error) {
	r.stopOnce.Do(func() {
		r.mu.Lock()
		r.runErr = err
		r.mu.Unlock()
	})
	r.stopRun(err)
}

// work is one worker of rt: it handles rt's queue until Run closes it.
func (r *Router) work(ctx context.Context, rt *route) {
	for sig := range rt.q {
		var err error
		start := r.handlerStart()
		ok := r.try(func() { err = rt.final.HandleSignal(ctx, sig) })
		r.observeHandler(rt, start, ok, err)
		if !ok {
			r.failed.Add(1)
			continue
		}
		if err != nil {
			r.failed.Add(1)
			r.try(func() { r.handleErr(ctx, sig, err) })
			continue
		}
		r.handled.Add(1)
	}
}

func (r *Router) handleErr(ctx context.Context, sig Signal, err error) {
	if r.cfg.onError != nil {
		r.cfg.onError(ctx, sig, err)
		return
	}
	r.c.cfg.logger.Error().Err(err).Str("channel", sig.Channel).Str("pattern", sig.Pattern).Str("group", sig.Group).Msg("signal handler failed")
}
