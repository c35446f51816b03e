package dfstream

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

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
	streams []*SignalStream // Run's connections
	plain   subject.Trie[*route]
	ready   chan struct{}

	dispatchers conc.WaitGroup // one per stream, routing its events

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
	for _, s := range r.connections() {
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
	routes, mw, err := r.begin()
	if err != nil {
		return err
	}
	runCtx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	r.stopRun = stop

	// Handlers first, so that no signal waits for a worker to exist.
	r.startHandlers(context.WithoutCancel(ctx), routes, mw)
	defer func() { err = r.drain(stop, routes, err) }()
	if err := r.connect(runCtx, routes); err != nil {
		return r.startErr(ctx, err)
	}
	close(r.ready)
	r.c.cfg.logger.Debug().Int("handlers", len(routes)).Int("connections", len(r.connections())).Msg("router running")

	<-runCtx.Done()
	return nil // the deferred drain reports a failure, if any
}

// begin marks the router started and returns its handlers and middleware.
func (r *Router) begin() ([]*route, []Middleware, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.started {
		return nil, nil, ErrRouterStarted
	}
	r.started = true
	if len(r.routes) == 0 {
		return nil, nil, fmt.Errorf("dfstream: router has no handlers: %w", ErrInvalidInput)
	}
	return r.routes, r.mw, nil
}

// startHandlers wraps every handler in its middleware and starts its
// workers, which call it with ctx.
func (r *Router) startHandlers(ctx context.Context, routes []*route, mw []Middleware) {
	for _, rt := range routes {
		rt.final = chain(rt.h, mw, rt.cfg.mw)
		rt.q = make(chan Signal, rt.cfg.queue)
		rt.workers = concpool.New().WithMaxGoroutines(rt.cfg.workers)
		for range rt.cfg.workers {
			rt.workers.Go(func() { r.work(ctx, rt) })
		}
	}
}

// connect opens the router's connections and subscribes every handler: one
// stream for the plain handlers, one per group handler (see Router).
func (r *Router) connect(runCtx context.Context, routes []*route) error {
	// The router's streams deliver everything they buffered when they end:
	// their dispatchers read until the Events channels close.
	opts := append(slices.Clip(r.cfg.sigOpts), drainOnClose())
	if patterns := plainPatterns(routes); len(patterns) > 0 {
		s, err := r.open(runCtx, opts, nil)
		if err != nil {
			return err
		}
		for _, p := range patterns {
			if _, err := s.Listen(runCtx, p); err != nil {
				return err
			}
		}
	}
	for _, rt := range routes {
		if rt.group == "" {
			continue
		}
		s, err := r.open(runCtx, opts, rt)
		if err != nil {
			return err
		}
		if _, err := s.ListenGroup(runCtx, rt.pattern, rt.group); err != nil {
			return err
		}
	}
	return nil
}

// plainPatterns returns the distinct patterns of the plain handlers, in the
// order they were registered.
func plainPatterns(routes []*route) []string {
	var patterns []string
	for _, rt := range routes {
		if rt.group == "" && !slices.Contains(patterns, rt.pattern) {
			patterns = append(patterns, rt.pattern)
		}
	}
	return patterns
}

// open starts one of the router's streams and its dispatcher, which routes
// its signals to group's handler, or to the plain handlers if group is nil.
func (r *Router) open(runCtx context.Context, opts []SignalOption, group *route) (*SignalStream, error) {
	s, err := r.c.Signals(runCtx, opts...)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.streams = append(r.streams, s)
	r.mu.Unlock()
	r.dispatchers.Go(func() { r.dispatch(runCtx, s, group) })
	return s, nil
}

// connections returns Run's streams.
func (r *Router) connections() []*SignalStream {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.streams
}

// drain ends Run: it stops taking signals (stop, then closing the streams),
// lets the dispatchers hand every signal received to its handlers, waits
// for the handlers, and returns Run's error: err, or why the router stopped
// by itself. It re-panics with a handler's panic.
func (r *Router) drain(stop context.CancelCauseFunc, routes []*route, err error) error {
	// Cancel runCtx first, so that the dispatchers take the streams' ends
	// below for the shutdown they are (see dispatch).
	stop(nil)
	for _, s := range r.connections() {
		_ = s.Close()
	}
	r.dispatchers.Wait()
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
	return err
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
