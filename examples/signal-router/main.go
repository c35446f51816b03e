// Command signal-router routes signals to handlers by subject pattern: an
// exact handler, wildcard handlers, a worker pool, a queue group shared by
// two handlers, middleware (recover, logging, timeout), an error hook and
// connection events. It emits a few signals itself, waits until they are
// handled, prints the router's counters, and stops gracefully.
//
//	go run ./examples/signal-router                    # embedded server
//	go run ./examples/signal-router -servers host:6388 # a dflockd server
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/dfstream/dfstream"
	"github.com/dfstream/dfstream/examples/internal/embedded"
)

func main() {
	addrs, stop := embedded.Servers()
	defer stop()
	if err := run(addrs); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(addrs []string) error {
	c, err := dfstream.New(dfstream.WithServers(addrs...))
	if err != nil {
		return err
	}
	defer c.Close()

	logger := zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: "15:04:05.000", NoColor: true}).
		Level(zerolog.InfoLevel).With().Timestamp().Logger()
	r, err := dfstream.NewRouter(c,
		dfstream.WithRouterErrorHandler(func(_ context.Context, sig dfstream.Signal, err error) {
			fmt.Printf("  ! %-22s %s: %v\n", sig.Pattern, sig.Channel, err)
		}),
		dfstream.WithRouterEventHandler(func(ev dfstream.Event) {
			fmt.Printf("  ~ %T %+v\n", ev, ev) // Disconnected, Reconnected, Overflow
		}),
		dfstream.WithRouterSignalOptions(dfstream.WithSignalHeartbeat(5*time.Second)),
	)
	if err != nil {
		return err
	}
	// Middleware runs outermost first: Logging sees every call's outcome,
	// a panic included once Recover (inside it) has made it an error.
	r.Use(dfstream.Logging(logger), dfstream.Recover())

	handle := func(pattern string, f func(dfstream.Signal) error, opts ...dfstream.HandlerOption) error {
		return r.HandleFunc(pattern, func(_ context.Context, sig dfstream.Signal) error {
			fmt.Printf("  %-24s %-22s %q\n", sig.Pattern+groupSuffix(sig), sig.Channel, sig.Payload)
			return f(sig)
		}, opts...)
	}
	ok := func(dfstream.Signal) error { return nil }
	errs := []error{
		handle("orders.created", ok), // exact
		handle("orders.*", ok),       // one token
		handle("orders.>", ok, // one or more tokens, four at a time
			dfstream.WithHandlerConcurrency(4)),
		handle("orders.*.failed", func(sig dfstream.Signal) error {
			if strings.Contains(sig.Payload, "panic") {
				panic("alerting backend is down") // Recover makes it an error
			}
			return errors.New("payment declined")
		}),
		// A slow handler with a deadline: it must honour ctx.
		r.HandleFunc("reports.>", func(ctx context.Context, sig dfstream.Signal) error {
			select {
			case <-time.After(time.Second):
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}, dfstream.WithHandlerTimeout(100*time.Millisecond)),
	}
	// Two members of one queue group: each payment is handled once, by
	// either (each has its own connection; see dfstream.Router).
	for i := range 2 {
		errs = append(errs, r.HandleGroup("payments.>", "billing", dfstream.HandlerFunc(
			func(_ context.Context, sig dfstream.Signal) error {
				fmt.Printf("  %-24s %-22s %q (member %d)\n", sig.Pattern+groupSuffix(sig), sig.Channel, sig.Payload, i)
				return nil
			})))
	}
	// Patterns are checked when registered.
	if err := r.Handle("orders.>.x", dfstream.HandlerFunc(nil)); err != nil {
		fmt.Println("rejected:", err)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}

	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt)
	defer cancel()
	ran := make(chan error, 1)
	go func() { ran <- r.Run(ctx) }()
	select {
	case <-r.Ready():
	case err := <-ran:
		return err
	}

	fmt.Println("emitting (channel → receivers: connections reached, one per queue group)")
	for _, s := range [][2]string{
		{"orders.created", "id=1"},
		{"orders.eu.failed", "id=2 declined"},
		{"orders.us.failed", "id=3 panic"},
		{"orders.eu.shipped", "id=4"},
		{"payments.captured", "p=10"},
		{"payments.refunded", "p=11"},
		{"payments.captured", "p=12"},
		{"reports.daily", "2026-01-01"},
		{"users.created", "nobody listens"},
	} {
		n, err := c.Emit(ctx, s[0], s[1])
		if err != nil {
			return err
		}
		fmt.Printf("emit %-20s → %d\n", s[0], n)
	}
	time.Sleep(500 * time.Millisecond) // let the handlers run; Ctrl-C to stop sooner
	cancel()
	if err := <-ran; err != nil { // returns after draining the handlers in flight
		return err
	}
	fmt.Printf("router stats: %+v\n", r.Stats())
	return nil
}

func groupSuffix(sig dfstream.Signal) string {
	if sig.Group == "" {
		return ""
	}
	return " [" + sig.Group + "]"
}
