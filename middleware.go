package dfstream

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/rs/zerolog"
)

// The middleware of Router handlers, and the built-in ones.

// Middleware wraps a Handler, for concerns shared by handlers: recovery,
// logging, timeouts, metrics.
type Middleware func(Handler) Handler

// chain wraps h in the router's middleware (outermost first), then the
// handler's own.
func chain(h Handler, router, own []Middleware) Handler {
	for i := len(own) - 1; i >= 0; i-- {
		h = own[i](h)
	}
	for i := len(router) - 1; i >= 0; i-- {
		h = router[i](h)
	}
	return h
}

// ---- built-in middleware ----

// HandlerPanic is the error Recover makes of a handler's panic. It matches
// ErrHandlerPanic, and the panic value when that is an error.
type HandlerPanic struct {
	Value any
	Stack []byte
}

// Error implements error.
func (p *HandlerPanic) Error() string { return fmt.Sprintf("dfstream: handler panicked: %v", p.Value) }

// Is reports whether target is ErrHandlerPanic.
func (p *HandlerPanic) Is(target error) bool { return target == ErrHandlerPanic }

// Unwrap returns the panic value if it is an error.
func (p *HandlerPanic) Unwrap() error {
	err, _ := p.Value.(error)
	return err
}

// Recover turns a panicking handler into an error (*HandlerPanic, matching
// ErrHandlerPanic) that goes to the error handler; the router goes on. Put
// it early, so that it covers the middleware after it, but after Logging:
// Logging then logs the panic as the error it became, with its value.
func Recover() Middleware {
	return func(next Handler) Handler {
		return HandlerFunc(func(ctx context.Context, sig Signal) (err error) {
			defer func() {
				if v := recover(); v != nil {
					err = &HandlerPanic{Value: v, Stack: debug.Stack()}
				}
			}()
			return next.HandleSignal(ctx, sig)
		})
	}
}

// Logging logs every handled signal on l: channel, pattern, group and the
// time the call took (as a duration string such as "1.5ms") at debug level,
// and failures at error level. A panic passing through it is logged at
// error level, without its value (use Recover inside Logging to log it as
// an error), and goes on.
func Logging(l zerolog.Logger) Middleware {
	return func(next Handler) Handler {
		return HandlerFunc(func(ctx context.Context, sig Signal) error {
			start := time.Now()
			returned := false
			defer func() {
				if !returned {
					logHandled(l.Error(), sig, start).Msg("signal handler panicked")
				}
			}()
			err := next.HandleSignal(ctx, sig)
			returned = true
			e := l.Debug()
			if err != nil {
				e = l.Error().Err(err)
			}
			logHandled(e, sig, start).Msg("signal handled")
			return err
		})
	}
}

// logHandled adds to e the fields Logging logs for every call.
func logHandled(e *zerolog.Event, sig Signal, start time.Time) *zerolog.Event {
	took := time.Since(start).Round(time.Microsecond)
	return e.Str("channel", sig.Channel).Str("pattern", sig.Pattern).Str("group", sig.Group).Str("took", took.String())
}

// Timeout gives each handler call a context that ends after d. A handler
// must honour its context: one that returns a context error once the time is
// up makes the call fail with an error matching ErrHandlerTimeout (and
// context.DeadlineExceeded). Go cannot stop a goroutine that ignores its
// context, so the call then still runs to its end.
func Timeout(d time.Duration) Middleware {
	return func(next Handler) Handler {
		return HandlerFunc(func(ctx context.Context, sig Signal) error {
			tctx, cancel := context.WithTimeout(ctx, d)
			defer cancel()
			err := next.HandleSignal(tctx, sig)
			if err != nil && errors.Is(tctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil &&
				errors.Is(err, context.DeadlineExceeded) {
				return fmt.Errorf("%w after %v: %w", ErrHandlerTimeout, d, err)
			}
			return err
		})
	}
}
