package dfstream_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/dfstream/dfstream"
	"github.com/dfstream/dfstream/dflockdtest"
)

// A select loop over a lock's events: work while the lock is held, release
// when done.
func ExampleClient_Lock() {
	srv, _ := dflockdtest.Start(dflockdtest.Config{})
	defer srv.Close()
	c, _ := dfstream.New(dfstream.WithServers(srv.Addr()))
	defer c.Close()

	lock, err := c.Lock(context.Background(), "reports/nightly", dfstream.WithLease(5*time.Second))
	if err != nil {
		fmt.Println(err)
		return
	}
	for ev := range lock.Events() {
		switch ev := ev.(type) {
		case dfstream.Acquired:
			fmt.Println("acquired", ev.Key, "with fence", ev.Fence)
			_ = lock.Release(context.Background())
		case dfstream.Lost:
			fmt.Println("lost:", ev.Reason)
		case dfstream.Released:
			fmt.Println("released")
		}
	}
	fmt.Println("err:", lock.Err())
	// Output:
	// acquired reports/nightly with fence 1
	// released
	// err: <nil>
}

// Two-phase acquire: learn that the request is queued, act on it, then wait.
func ExampleLockStream_Enqueued() {
	srv, _ := dflockdtest.Start(dflockdtest.Config{})
	defer srv.Close()
	c, _ := dfstream.New(dfstream.WithServers(srv.Addr()))
	defer c.Close()
	ctx := context.Background()

	holder, _ := c.AcquireLock(ctx, "deploy")
	next, _ := c.Lock(ctx, "deploy")
	acquired, _ := next.Enqueued(ctx)
	fmt.Println("granted at once:", acquired)
	// ... tell the deploy dashboard that we are next ...
	_ = holder.Release(ctx)
	g, _ := next.Wait(ctx)
	fmt.Println("then granted with fence", g.Fence)
	_ = next.Release(ctx)
	// Output:
	// granted at once: false
	// then granted with fence 2
}

// Lock returns once the server has answered the enqueue: the stream then
// holds the key or is queued for it.
func ExampleLockStream_State() {
	srv, _ := dflockdtest.Start(dflockdtest.Config{})
	defer srv.Close()
	c, _ := dfstream.New(dfstream.WithServers(srv.Addr()))
	defer c.Close()
	ctx := context.Background()

	first, _ := c.Lock(ctx, "jobs/cleanup")
	second, _ := c.Lock(ctx, "jobs/cleanup")
	fmt.Println(first.State(), second.State())
	_ = first.Release(ctx)
	_, _ = second.Wait(ctx)
	fmt.Println(first.State(), second.State())
	_ = second.Close()
	// Output:
	// held queued
	// ended held
}

// A semaphore bounds how many holders run at once; a mismatched limit is a
// typed error.
func ExampleClient_AcquireSemaphore() {
	srv, _ := dflockdtest.Start(dflockdtest.Config{})
	defer srv.Close()
	c, _ := dfstream.New(dfstream.WithServers(srv.Addr()))
	defer c.Close()
	ctx := context.Background()

	a, _ := c.AcquireSemaphore(ctx, "encoders", 2)
	b, _ := c.AcquireSemaphore(ctx, "encoders", 2)
	_, err := c.AcquireSemaphore(ctx, "encoders", 2, dfstream.WithAcquireTimeout(0))
	fmt.Println("third slot:", errors.Is(err, dfstream.ErrTimeout))
	_, err = c.AcquireSemaphore(ctx, "encoders", 3)
	fmt.Println("other limit:", errors.Is(err, dfstream.ErrLimitMismatch))
	_ = a.Release(ctx)
	_ = b.Release(ctx)
	// Output:
	// third slot: true
	// other limit: true
}
