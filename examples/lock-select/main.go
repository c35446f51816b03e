// Command lock-select follows a lock's life in a select loop: two workers
// compete for one lock; each does its work while it holds the lock and
// reports every event it sees.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/dfstream/dfstream"
	"github.com/dfstream/dfstream/examples/internal/embedded"
)

func main() {
	addrs, stop := embedded.Servers()
	defer stop()
	c, err := dfstream.New(dfstream.WithServers(addrs...))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer c.Close()

	done := make(chan struct{})
	for _, name := range []string{"alice", "bob"} {
		go func() {
			worker(c, name)
			done <- struct{}{}
		}()
	}
	<-done
	<-done
}

// worker holds the lock for about two lease renewals, then releases it.
func worker(c *dfstream.Client, name string) {
	ctx := context.Background()
	lock, err := c.StartLock(ctx, "example/report", dfstream.WithLease(2*time.Second))
	if err != nil {
		fmt.Println(name, "error:", err)
		return
	}
	var workDone <-chan time.Time // nil until the lock is held
	for {
		select {
		case ev, ok := <-lock.Events():
			if !ok {
				fmt.Println(name, "stream ended, err =", lock.Err())
				return
			}
			switch ev := ev.(type) {
			case dfstream.Queued:
				fmt.Println(name, "queued behind the holder")
			case dfstream.Acquired:
				fmt.Printf("%s acquired: fence %d, lease %v, safe until %s\n",
					name, ev.Fence, ev.Lease, ev.Deadline.Format("15:04:05.000"))
				workDone = time.After(2500 * time.Millisecond)
			case dfstream.Renewed:
				fmt.Printf("%s renewed: safe until %s\n", name, ev.Deadline.Format("15:04:05.000"))
			case dfstream.Lost:
				fmt.Println(name, "lost the lock:", ev.Reason)
			case dfstream.Released:
				fmt.Println(name, "released")
			case dfstream.Failed:
				fmt.Println(name, "failed:", ev.Err)
			}
		case <-workDone:
			workDone = nil
			fmt.Println(name, "work done, releasing")
			if err := lock.Release(ctx); err != nil {
				fmt.Println(name, "release:", err)
			}
		}
	}
}
