// Command lost-cancel ties work to a lock: the work runs under a context that
// is cancelled the moment the lock is lost, before the server can give the
// lock to anyone else. Halfway through, the example cuts its own network
// link to the server (every connection is reset), so the loss is real.
//
//	go run ./examples/lost-cancel                    # embedded server
//	go run ./examples/lost-cancel -servers host:6388 # a dflockd server
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/dfstream/dfstream"
	"github.com/dfstream/dfstream/examples/internal/embedded"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run() error {
	addrs, stop := embedded.Servers()
	defer stop()
	// The example's connections go through a link it can cut.
	link, err := embedded.NewLink(addrs)
	if err != nil {
		return err
	}
	defer link.Close()
	c, err := dfstream.New(dfstream.WithServers(link.Addrs()...))
	if err != nil {
		return err
	}
	defer c.Close()

	lock, err := c.Lock(context.Background(), "example/migration", dfstream.WithLease(2*time.Second))
	if err != nil {
		return err
	}
	defer lock.Close()
	work, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	go func() {
		for ev := range lock.Events() {
			if lost, ok := ev.(dfstream.Lost); ok {
				cancel(lost.Reason)
			}
		}
	}()
	time.AfterFunc(1500*time.Millisecond, func() {
		fmt.Println("(the network link to the server is cut)")
		link.Cut()
	})

	err = migrate(work)
	switch {
	case errors.Is(err, dfstream.ErrConnLost):
		fmt.Println("work stopped because the lock was lost:", err)
	case err != nil:
		fmt.Println("work failed:", err)
	default:
		fmt.Println("work finished under the lock")
		return lock.Release(context.Background())
	}
	return nil
}

// migrate stands in for work that must only run while the lock is held.
func migrate(ctx context.Context) error {
	for step := 1; step <= 10; step++ {
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(300 * time.Millisecond):
			fmt.Println("migration step", step)
		}
	}
	return nil
}
