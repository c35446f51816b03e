package dfstream_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dfstream/dfstream"
	"github.com/dfstream/dfstream/dflockdtest"
)

// A router maps subject patterns to handlers. Each matching handler gets
// its own copy; middleware wraps them all.
func ExampleRouter() {
	srv, err := dflockdtest.Start(dflockdtest.Config{ShutdownDrain: -1})
	if err != nil {
		panic(err)
	}
	defer srv.Close()
	c, err := dfstream.New(dfstream.WithServers(srv.Addr()))
	if err != nil {
		panic(err)
	}
	defer c.Close()

	lines := make(chan string, 16)
	r, err := dfstream.NewRouter(c, dfstream.WithRouterErrorHandler(func(_ context.Context, sig dfstream.Signal, err error) {
		lines <- fmt.Sprintf("handler for %s failed: %v", sig.Pattern, err)
	}))
	if err != nil {
		panic(err)
	}
	r.Use(dfstream.Recover()) // a panicking handler becomes an error

	_ = r.HandleFunc("orders.*", func(_ context.Context, sig dfstream.Signal) error {
		lines <- fmt.Sprintf("orders.*  got %s %q", sig.Channel, sig.Payload)
		return nil
	})
	_ = r.HandleFunc("orders.>", func(_ context.Context, sig dfstream.Signal) error {
		lines <- fmt.Sprintf("orders.>  got %s %q", sig.Channel, sig.Payload)
		return nil
	}, dfstream.WithHandlerConcurrency(4))
	_ = r.HandleFunc("orders.*.failed", func(_ context.Context, sig dfstream.Signal) error {
		panic("alerting is down")
	})
	if err := r.Handle("orders.>>", nil); err != nil {
		fmt.Println("rejected:", strings.TrimPrefix(err.Error(), "dflockd: "))
	}

	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error)
	go func() { ran <- r.Run(ctx) }()
	select {
	case <-r.Ready():
	case err := <-ran: // Ready is never closed when Run fails
		panic(err)
	}

	for _, s := range [][2]string{
		{"orders.created", "id=42"},
		{"orders.eu.failed", "id=7"},
		{"users.created", "bob"},
	} {
		n, _ := c.Emit(ctx, s[0], s[1])
		fmt.Printf("emit %s: %d receiver(s)\n", s[0], n)
	}
	var got []string
	for range 4 {
		got = append(got, <-lines)
	}
	cancel()
	<-ran // Run returns once the handlers in flight are done
	slices.Sort(got)
	fmt.Println(strings.Join(got, "\n"))
	fmt.Printf("%+v\n", r.Stats())
	// Output:
	// rejected: invalid pattern "orders.>>": a token with ">" must be exactly ">" and the last
	// emit orders.created: 1 receiver(s)
	// emit orders.eu.failed: 1 receiver(s)
	// emit users.created: 0 receiver(s)
	// handler for orders.*.failed failed: dfstream: handler panicked: alerting is down
	// orders.*  got orders.created "id=42"
	// orders.>  got orders.created "id=42"
	// orders.>  got orders.eu.failed "id=7"
	// {Arrived:2 ConnDropped:0 Received:2 Handled:3 Failed:1 Dropped:0}
}

// roleWorker is an event-driven worker: it always takes jobs from the queue
// group "workers", and while it holds the lock "role/scheduler" it also
// plays the scheduler, emitting the jobs of a backlog. The lock's fence
// goes with every job, so that workers can refuse jobs from a scheduler
// that has since lost the role.
type roleWorker struct {
	name   string
	c      *dfstream.Client
	log    chan<- string
	resign chan struct{}
}

// run takes part in the queue group and competes for the scheduler role
// until ctx ends.
func (w *roleWorker) run(ctx context.Context, backlog <-chan int, ready chan<- struct{}) error {
	r, err := dfstream.NewRouter(w.c)
	if err != nil {
		return err
	}
	var highest uint64 // the newest scheduler's fence seen
	err = r.HandleGroup("jobs.>", "workers", dfstream.HandlerFunc(func(_ context.Context, sig dfstream.Signal) error {
		job, fenceStr, _ := strings.Cut(sig.Payload, " fence=")
		fence, _ := strconv.ParseUint(fenceStr, 10, 64)
		if fence < highest {
			return fmt.Errorf("job %s from a stale scheduler (fence %d < %d)", job, fence, highest)
		}
		highest = fence // one call at a time (the default): no data race
		w.log <- fmt.Sprintf("job %s by %s", job, w.name)
		return nil
	}))
	if err != nil {
		return err
	}
	routed := make(chan error, 1)
	go func() { routed <- r.Run(ctx) }()
	select {
	case <-r.Ready():
	case err := <-routed: // Ready is never closed when Run fails
		return err
	}

	role, err := w.c.StartLock(ctx, "role/scheduler", dfstream.WithAcquireTimeout(time.Hour))
	if err != nil {
		return err
	}
	ready <- struct{}{}
	var jobs <-chan int // the backlog, read only while holding the role
	var fence uint64
	for {
		select {
		case ev, ok := <-role.Events():
			if !ok {
				role = nil
				<-ctx.Done()
				return <-routed
			}
			switch ev := ev.(type) {
			case dfstream.Acquired:
				fence, jobs = ev.Fence, backlog
				w.log <- fmt.Sprintf("%s holds the role (fence %d)", w.name, ev.Fence)
			case dfstream.Lost, dfstream.Released:
				jobs = nil
			}
		case n := <-jobs:
			if _, err := w.c.Emit(ctx, "jobs.resize", fmt.Sprintf("%d fence=%d", n, fence)); err != nil {
				w.log <- "emit: " + err.Error()
			}
		case <-w.resign:
			jobs = nil
			w.log <- w.name + " resigns"
			_ = role.Release(ctx)
		case <-ctx.Done():
			_ = role.Close()
			return <-routed
		}
	}
}

// Two workers share the jobs of a queue group; the one holding the
// scheduler lock feeds them. When it resigns, the other takes over the
// role, with a higher fence.
func Example_roleWorker() {
	srv, err := dflockdtest.Start(dflockdtest.Config{ShutdownDrain: -1})
	if err != nil {
		panic(err)
	}
	defer srv.Close()

	ctx, cancel := context.WithCancel(context.Background())
	log := make(chan string, 16)
	backlog := make(chan int)
	var workers []*roleWorker
	done := make(chan error, 2)
	for _, name := range []string{"a", "b"} {
		c, err := dfstream.New(dfstream.WithServers(srv.Addr())) // as if in another process
		if err != nil {
			panic(err)
		}
		defer c.Close()
		w := &roleWorker{name: name, c: c, log: log, resign: make(chan struct{})}
		workers = append(workers, w)
		ready := make(chan struct{})
		go func() { done <- w.run(ctx, backlog, ready) }()
		select {
		case <-ready: // a joins the group and queues for the role first
		case err := <-done:
			panic(err)
		}
		if name == "a" {
			fmt.Println(<-log)
		}
	}
	for n := 1; n <= 4; n++ {
		backlog <- n
		fmt.Println(<-log)
	}
	workers[0].resign <- struct{}{}
	fmt.Println(<-log)
	fmt.Println(<-log)
	for n := 5; n <= 6; n++ {
		backlog <- n
		fmt.Println(<-log)
	}
	cancel()
	<-done
	<-done
	// Output:
	// a holds the role (fence 1)
	// job 1 by a
	// job 2 by b
	// job 3 by a
	// job 4 by b
	// a resigns
	// b holds the role (fence 2)
	// job 5 by a
	// job 6 by b
}

// Listen returns the subscription: its own Unlisten and counters, while
// every signal arrives in order on the stream's one Events channel.
func ExampleSignalStream_Listen() {
	srv, err := dflockdtest.Start(dflockdtest.Config{ShutdownDrain: -1})
	if err != nil {
		panic(err)
	}
	defer srv.Close()
	c, err := dfstream.New(dfstream.WithServers(srv.Addr()))
	if err != nil {
		panic(err)
	}
	defer c.Close()
	ctx := context.Background()
	s, err := c.Signals(ctx)
	if err != nil {
		panic(err)
	}
	defer s.Close()

	orders, err := s.Listen(ctx, "orders.*")
	if err != nil {
		panic(err)
	}
	eu, err := s.Listen(ctx, "orders.eu")
	if err != nil {
		panic(err)
	}
	for _, ch := range []string{"orders.us", "orders.eu"} {
		if _, err := c.Emit(ctx, ch, "id=1"); err != nil {
			panic(err)
		}
		sig := (<-s.Events()).(dfstream.Signal)
		fmt.Printf("%s via %s (%d matching)\n", sig.Channel, sig.Pattern, len(sig.Subscriptions()))
	}
	if err := eu.Unlisten(ctx); err != nil {
		panic(err)
	}
	fmt.Printf("%s: %+v\n", orders, orders.Stats())
	fmt.Printf("%s: %+v, listening: %v\n", eu, eu.Stats(), eu.Listening())
	// Output:
	// orders.us via orders.* (1 matching)
	// orders.eu via orders.* (2 matching)
	// orders.*: {Delivered:2 Dropped:0}
	// orders.eu: {Delivered:1 Dropped:0}, listening: false
}
