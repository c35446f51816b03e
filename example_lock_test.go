package dfstream_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/dfstream/dfstream"
	"github.com/dfstream/dfstream/dflockdtest"
)

// The common case: block until the lock is held, do the work, release.
func ExampleClient_Lock() {
	srv, _ := dflockdtest.Start(dflockdtest.Config{})
	defer srv.Close()
	c, _ := dfstream.New(dfstream.WithServers(srv.Addr()))
	defer c.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel() // bounds the acquire only: the lock outlives it
	lock, err := c.Lock(ctx, "reports/nightly", dfstream.WithLease(5*time.Second))
	if err != nil {
		fmt.Println(err)
		return
	}
	g, _ := lock.Held()
	fmt.Println("holding", g.Key, "with fence", g.Fence)
	// ... work, watching lock.Done() or Events for a Lost ...
	fmt.Println("release:", lock.Release(context.Background()))
	// Output:
	// holding reports/nightly with fence 1
	// release: <nil>
}

// Try once: when another client holds the key, the error matches
// ErrNotAcquired and nothing is left queued.
func ExampleClient_TryLock() {
	srv, _ := dflockdtest.Start(dflockdtest.Config{})
	defer srv.Close()
	c, _ := dfstream.New(dfstream.WithServers(srv.Addr()))
	defer c.Close()
	ctx := context.Background()

	holder, _ := c.Lock(ctx, "jobs/compact")
	_, err := c.TryLock(ctx, "jobs/compact")
	fmt.Println("busy:", errors.Is(err, dfstream.ErrNotAcquired))
	_ = holder.Release(ctx)
	again, err := c.TryLock(ctx, "jobs/compact")
	fmt.Println("free:", err)
	_ = again.Release(ctx)
	// Output:
	// busy: true
	// free: <nil>
}

// A select loop over a lock's events: work while the lock is held, release
// when done. The stream's life is the context StartLock was given.
func ExampleClient_StartLock() {
	srv, _ := dflockdtest.Start(dflockdtest.Config{})
	defer srv.Close()
	c, _ := dfstream.New(dfstream.WithServers(srv.Addr()))
	defer c.Close()

	lock, err := c.StartLock(context.Background(), "reports/nightly", dfstream.WithLease(5*time.Second))
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

	holder, _ := c.Lock(ctx, "deploy")
	next, _ := c.StartLock(ctx, "deploy")
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

// StartLock returns once the server has answered the enqueue: the stream
// then holds the key or is queued for it.
func ExampleLockStream_State() {
	srv, _ := dflockdtest.Start(dflockdtest.Config{})
	defer srv.Close()
	c, _ := dfstream.New(dfstream.WithServers(srv.Addr()))
	defer c.Close()
	ctx := context.Background()

	first, _ := c.StartLock(ctx, "jobs/cleanup")
	second, _ := c.StartLock(ctx, "jobs/cleanup")
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
	_, err := c.TryAcquireSemaphore(ctx, "encoders", 2)
	fmt.Println("third slot:", errors.Is(err, dfstream.ErrNotAcquired))
	_, err = c.AcquireSemaphore(ctx, "encoders", 3)
	fmt.Println("other limit:", errors.Is(err, dfstream.ErrLimitMismatch))
	_ = a.Release(ctx)
	_ = b.Release(ctx)
	// Output:
	// third slot: true
	// other limit: true
}
