// Command lost-cancel ties work to a lock: the work runs under a context that
// is cancelled the moment the lock is lost, before the server can give the
// lock to anyone else. The example makes the server drop every connection
// halfway through, so the loss is real.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/dfstream/dfstream"
	"github.com/dfstream/dfstream/dflockdtest"
)

func main() {
	flag.Parse()
	srv, err := dflockdtest.Start(dflockdtest.Config{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer srv.Close()
	c, err := dfstream.New(dfstream.WithServers(srv.Addr()))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer c.Close()

	lock, err := c.Lock(context.Background(), "example/migration", dfstream.WithLease(2*time.Second))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	work, cancel := context.WithCancelCause(context.Background())
	go func() {
		for ev := range lock.Events() {
			if lost, ok := ev.(dfstream.Lost); ok {
				cancel(lost.Reason)
			}
		}
	}()
	time.AfterFunc(1500*time.Millisecond, func() {
		fmt.Println("(the server drops every connection)")
		srv.DropConnections()
	})

	err = migrate(work)
	switch {
	case errors.Is(err, dfstream.ErrConnLost):
		fmt.Println("work stopped because the lock was lost:", err)
	case err != nil:
		fmt.Println("work failed:", err)
	default:
		fmt.Println("work finished under the lock")
		_ = lock.Release(context.Background())
	}
	_ = lock.Close()
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
