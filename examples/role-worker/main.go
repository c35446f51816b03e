// Command role-worker runs event-driven workers that share two duties:
//
//   - every worker takes jobs from the queue group "workers" on "jobs.>", so
//     each job is done once, by one of them;
//   - one worker at a time holds the lock "role/scheduler" and, while it
//     holds it, is also the scheduler: it emits a job every tick.
//
// Each worker is one select loop over its lock's events, its ticker and its
// context. When the scheduler goes away (here it resigns after a few jobs;
// in life it crashes or loses its lease), another worker's queued lock
// request is granted and it takes over, with a higher fence. Jobs carry the
// scheduler's fence, so workers refuse jobs from a scheduler that has been
// replaced (a scheduler that lost the lock but does not know it yet).
//
// The first scheduler does not resign: its network link is cut (every
// connection reset), so it loses the role. Its lock stream was started with
// WithReacquire, so the loss is not the end of it: the same stream queues
// again by itself, and later wins the role back. The demo ends once it has.
//
//	go run ./examples/role-worker                    # embedded server
//	go run ./examples/role-worker -servers host:6388 # a dflockd server
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dfstream/dfstream"
	"github.com/dfstream/dfstream/examples/internal/embedded"
)

const (
	roleKey     = "role/scheduler"
	jobsPattern = "jobs.>"
	group       = "workers"
	tick        = 150 * time.Millisecond
	resignAfter = 5 // jobs a scheduler emits before it steps down, for the demo
	cutAfter    = 3 // jobs the first scheduler emits before its link is cut
)

// The demo's script: the first scheduler's link is cut once, and the demo
// ends when that worker has been the scheduler again and stepped down.
var (
	linkCut   atomic.Bool
	recovered = make(chan struct{})
)

func main() {
	addrs, stop := embedded.Servers()
	defer stop()

	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt)
	defer cancel()
	ctx, cancelT := context.WithTimeout(ctx, 30*time.Second) // a bound, in case the script stalls
	defer cancelT()
	ctx, end := context.WithCancel(ctx)
	defer end()
	go func() {
		select {
		case <-recovered:
			time.Sleep(2 * tick) // the last jobs are done
			end()
		case <-ctx.Done():
		}
	}()

	var wg sync.WaitGroup
	for _, name := range []string{"ann", "bob", "cid"} {
		w, err := newWorker(name, addrs)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := w.run(ctx); err != nil {
				fmt.Fprintln(os.Stderr, name, err)
			}
		}()
		time.Sleep(50 * time.Millisecond) // stagger, so the demo's order is readable
	}
	wg.Wait()
}

// worker is one worker process (each has its own Client, and its own
// network link to the servers).
type worker struct {
	name string
	c    *dfstream.Client
	link *embedded.Link

	highest atomic.Uint64 // the highest scheduler fence seen in a job
	done    atomic.Int64
}

func newWorker(name string, addrs []string) (*worker, error) {
	link, err := embedded.NewLink(addrs)
	if err != nil {
		return nil, err
	}
	c, err := dfstream.New(dfstream.WithServers(link.Addrs()...))
	if err != nil {
		link.Close()
		return nil, err
	}
	return &worker{name: name, c: c, link: link}, nil
}

// job is a queue-group handler: one worker of the group gets each job.
func (w *worker) job(_ context.Context, sig dfstream.Signal) error {
	id, fenceStr, _ := strings.Cut(sig.Payload, " fence=")
	fence, err := strconv.ParseUint(fenceStr, 10, 64)
	if err != nil {
		return fmt.Errorf("malformed job %q", sig.Payload)
	}
	for {
		h := w.highest.Load()
		if fence < h {
			return fmt.Errorf("job %s from a replaced scheduler (fence %d < %d): refused", id, fence, h)
		}
		if w.highest.CompareAndSwap(h, fence) {
			break
		}
	}
	time.Sleep(20 * time.Millisecond) // the work
	w.done.Add(1)
	fmt.Printf("%s  did %s (%s, scheduler fence %d)\n", w.name, id, sig.Channel, fence)
	return nil
}

func (w *worker) run(ctx context.Context) error {
	defer w.link.Close()
	defer w.c.Close()

	// Duty 1: take jobs from the queue group, two at a time.
	r, err := dfstream.NewRouter(w.c, dfstream.WithRouterErrorHandler(func(_ context.Context, _ dfstream.Signal, err error) {
		fmt.Printf("%s  %v\n", w.name, err)
	}))
	if err != nil {
		return err
	}
	r.Use(dfstream.Recover())
	if err := r.HandleGroup(jobsPattern, group, dfstream.HandlerFunc(w.job), dfstream.WithHandlerConcurrency(2)); err != nil {
		return err
	}
	routed := make(chan error, 1)
	go func() { routed <- r.Run(ctx) }()
	select {
	case <-r.Ready():
	case err := <-routed:
		return err
	}

	// Duty 2: compete for the scheduler role. With re-acquire, losing the
	// lock is not the end: the stream queues again after a backoff.
	queue := func() (*dfstream.LockStream, error) {
		return w.c.StartLock(ctx, roleKey,
			dfstream.WithLease(3*time.Second),
			dfstream.WithAcquireTimeout(time.Hour),
			dfstream.WithReacquire(100*time.Millisecond, time.Second))
	}
	role, err := queue()
	if err != nil {
		return err
	}

	var ticks <-chan time.Time // nil: not the scheduler
	var ticker *time.Ticker
	var fence uint64
	emitted := 0
	afterLoss := false // lost the role; the stream is getting it back
	wonBack := false   // the scheduler again after a loss
	stopScheduling := func() {
		if ticker != nil {
			ticker.Stop()
			ticker, ticks = nil, nil
		}
	}
	defer stopScheduling()
	for {
		select {
		case ev, ok := <-role.Events():
			if !ok {
				// The role stream ended: we stepped down (or ctx ended).
				// Queue for the role again, behind the others.
				stopScheduling()
				if ctx.Err() != nil {
					return w.wait(routed)
				}
				if role, err = queue(); err != nil {
					return err
				}
				continue
			}
			switch ev := ev.(type) {
			case dfstream.Queued:
				if afterLoss {
					fmt.Printf("%s  queued for the scheduler role again: the same stream re-acquires after the loss\n", w.name)
				} else {
					fmt.Printf("%s  queued for the scheduler role\n", w.name)
				}
			case dfstream.Acquired:
				fence, emitted = ev.Fence, 0
				if afterLoss {
					afterLoss, wonBack = false, true
					fmt.Printf("%s  is the scheduler again (fence %d): recovered from the loss\n", w.name, fence)
				} else {
					fmt.Printf("%s  is the scheduler now (fence %d)\n", w.name, fence)
				}
				ticker = time.NewTicker(tick)
				ticks = ticker.C
			case dfstream.Lost:
				fmt.Printf("%s  lost the scheduler role: %v\n", w.name, ev.Reason)
				afterLoss = true
				stopScheduling()
			case dfstream.Released, dfstream.Failed:
				stopScheduling()
			}
		case <-ticks:
			emitted++
			id := fmt.Sprintf("job-%d.%d", fence, emitted)
			n, err := w.c.Emit(ctx, "jobs.resize", id+" fence="+strconv.FormatUint(fence, 10))
			switch {
			case err != nil:
				fmt.Printf("%s  emit %s: %v\n", w.name, id, err)
			case n == 0:
				fmt.Printf("%s  emit %s: no worker listening\n", w.name, id)
			}
			if emitted == cutAfter && linkCut.CompareAndSwap(false, true) {
				fmt.Printf("%s  (its network link is cut)\n", w.name)
				w.link.Cut()
			}
			if emitted == resignAfter {
				fmt.Printf("%s  steps down after %d jobs\n", w.name, emitted)
				stopScheduling()
				_ = role.Release(ctx) // the next queued worker is granted the role
				if wonBack {
					wonBack = false
					close(recovered)
				}
			}
		case <-ctx.Done():
			_ = role.Close()
			return w.wait(routed)
		}
	}
}

// wait waits for the router to drain and reports what this worker did.
func (w *worker) wait(routed <-chan error) error {
	err := <-routed
	fmt.Printf("%s  stopped after %d jobs\n", w.name, w.done.Load())
	return err
}
