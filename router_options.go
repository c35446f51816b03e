package dfstream

import (
	"context"
	"time"
)

// The options of a Router (RouterOption) and of its handlers
// (HandlerOption).

type routerConfig struct {
	onError func(ctx context.Context, sig Signal, err error)
	onEvent func(Event)
	sigOpts []SignalOption
}

// WithRouterErrorHandler sets the function called with every error a handler
// returns (after middleware), on the handler's goroutine. The default logs
// it with the Client's logger. A panic in f stops the router as a handler
// panic does (see Run).
func WithRouterErrorHandler(f func(ctx context.Context, sig Signal, err error)) RouterOption {
	return routerOption(func(c *routerConfig) error {
		if f == nil {
			return invalidOption("WithRouterErrorHandler", "nil", "nil function")
		}
		c.onError = f
		return nil
	})
}

// WithRouterEventHandler sets a function that receives the router's
// connection events (Disconnected, Reconnected: one set per connection),
// and Overflow events (per handler, with its Pattern and Group, coalesced
// while signals keep arriving). It may be called from several goroutines at once and
// should return quickly. A panic in f stops the router as a handler panic
// does (see Run).
func WithRouterEventHandler(f func(Event)) RouterOption {
	return routerOption(func(c *routerConfig) error {
		if f == nil {
			return invalidOption("WithRouterEventHandler", "nil", "nil function")
		}
		c.onEvent = f
		return nil
	})
}

// WithRouterSignalOptions configures the router's signal streams
// (heartbeat, backoff, buffer, server, …), over the Client's defaults.
func WithRouterSignalOptions(opts ...SignalOption) RouterOption {
	return routerOption(func(c *routerConfig) error {
		c.sigOpts = append(c.sigOpts, opts...)
		return nil
	})
}

type handlerConfig struct {
	workers int
	queue   int
	policy  OverflowPolicy
	mw      []Middleware
}

// WithHandlerConcurrency runs up to n calls of the handler at once, on a
// conc worker pool; signals are then not handled in arrival order. The
// default, 1, handles them one at a time, in arrival order.
func WithHandlerConcurrency(n int) HandlerOption {
	return handlerOption(func(c *handlerConfig) error {
		if n < 1 {
			return invalidOption("WithHandlerConcurrency", n, "must be at least 1")
		}
		c.workers = n
		return nil
	})
}

// WithHandlerQueueSize sets how many signals wait for the handler while it
// is busy (default 256, at least 1).
func WithHandlerQueueSize(n int) HandlerOption {
	return handlerOption(func(c *handlerConfig) error {
		if n < 1 {
			return invalidOption("WithHandlerQueueSize", n, "must be at least 1")
		}
		c.queue = n
		return nil
	})
}

// WithHandlerOverflow sets what happens to a signal for the handler while
// its queue is full (default DropNewest). FailStream stops the router: Run
// returns an error matching ErrOverflow.
func WithHandlerOverflow(p OverflowPolicy) HandlerOption {
	return handlerOption(func(c *handlerConfig) error {
		if !p.valid() {
			return invalidOption("WithHandlerOverflow", p, "unknown policy")
		}
		c.policy = p
		return nil
	})
}

// WithHandlerTimeout bounds each call of the handler with the Timeout
// middleware.
func WithHandlerTimeout(d time.Duration) HandlerOption {
	return handlerOption(func(c *handlerConfig) error {
		if d <= 0 {
			return invalidOption("WithHandlerTimeout", d, "must be positive")
		}
		c.mw = append(c.mw, Timeout(d))
		return nil
	})
}

// WithHandlerMiddleware wraps this handler alone in mw, inside the router's
// middleware (Use).
func WithHandlerMiddleware(mw ...Middleware) HandlerOption {
	return handlerOption(func(c *handlerConfig) error {
		for _, m := range mw {
			if m == nil {
				return invalidOption("WithHandlerMiddleware", "nil", "nil middleware")
			}
		}
		c.mw = append(c.mw, mw...)
		return nil
	})
}
