package dfstream_test

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/sourcegraph/conc/panics"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dfstream/dfstream"
	"github.com/dfstream/dfstream/dflockdtest"
	"github.com/dfstream/dfstream/wire"
)

// recorder is a handler that records what it handles.
type recorder struct {
	mu   sync.Mutex
	sigs []dfstream.Signal
	n    atomic.Int64
}

func (r *recorder) HandleSignal(_ context.Context, sig dfstream.Signal) error {
	r.mu.Lock()
	r.sigs = append(r.sigs, sig)
	r.mu.Unlock()
	r.n.Add(1)
	return nil
}

func (r *recorder) payloads() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, len(r.sigs))
	for i, s := range r.sigs {
		out[i] = s.Payload
	}
	return out
}

func (r *recorder) signals() []dfstream.Signal {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.sigs)
}

func newRouter(t *testing.T, c *dfstream.Client, opts ...dfstream.RouterOption) *dfstream.Router {
	t.Helper()
	r, err := dfstream.NewRouter(c, opts...)
	require.NoError(t, err)
	return r
}

// runRouter runs r until the test ends (or stop is called) and waits until
// it is subscribed. stop returns Run's result.
func runRouter(t *testing.T, r *dfstream.Router) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- r.Run(ctx) }()
	select {
	case <-r.Ready():
	case err := <-errc:
		cancel()
		require.FailNow(t, "Run returned before it was ready", "%v", err)
	case <-time.After(10 * time.Second):
		cancel()
		require.FailNow(t, "router not ready")
	}
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-errc:
			case <-time.After(20 * time.Second):
				err = errors.New("Run did not return")
			}
		})
		return err
	}
	t.Cleanup(func() { assert.NoError(t, stop()) })
	return stop
}

// events collects a router's events.
type events struct {
	mu  sync.Mutex
	evs []dfstream.Event
}

func (e *events) add(ev dfstream.Event) {
	e.mu.Lock()
	e.evs = append(e.evs, ev)
	e.mu.Unlock()
}

func (e *events) all() []dfstream.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.evs)
}

func eventsOf[E dfstream.Event](e *events) []E {
	var out []E
	for _, ev := range e.all() {
		if x, ok := ev.(E); ok {
			out = append(out, x)
		}
	}
	return out
}

func waitCount(t *testing.T, what string, get func() int64, want int64) {
	t.Helper()
	require.Eventually(t, func() bool { return get() >= want }, 20*time.Second, time.Millisecond,
		"%s: %d of %d", what, get(), want)
}

func routerReceived(rs ...*dfstream.Router) func() uint64 {
	return func() uint64 {
		var n uint64
		for _, r := range rs {
			n += r.Stats().Received
		}
		return n
	}
}

// TestRouterWildcardTableEndToEnd routes every channel of the wildcard table
// through the server to a router with one handler per pattern.
func TestRouterWildcardTableEndToEnd(t *testing.T) {
	t.Parallel()
	addr, _ := testServer(t, dflockdtest.Config{})
	c := newClient(t, []string{addr})
	p := chanPrefix(t)
	r := newRouter(t, c)
	recs := make([]*recorder, len(dfstream.WildcardTable))
	want := 0
	for i, tc := range dfstream.WildcardTable {
		recs[i] = &recorder{}
		require.NoError(t, r.Handle(p+"."+tc.Pattern, recs[i]))
		want += len(tc.Matches)
	}
	runRouter(t, r)
	ctx := ctxT(t, 20*time.Second)
	var received int64
	for _, ch := range dfstream.WildcardChannels {
		n, err := c.Emit(ctx, p+"."+ch, ch)
		require.NoError(t, err)
		matched := 0
		for _, tc := range dfstream.WildcardTable {
			if slices.Contains(tc.Matches, ch) {
				matched = 1 // one copy for the router's plain connection
			}
		}
		assert.Equal(t, matched, n, "copies of %q", ch)
		received += int64(n)
		waitCount(t, "received", func() int64 { return int64(r.Stats().Received) }, received)
	}
	waitCount(t, "handled", func() int64 { return int64(r.Stats().Handled) }, int64(want))
	time.Sleep(100 * time.Millisecond)
	assert.Equal(t, uint64(want), r.Stats().Handled, "no extra deliveries")
	for i, tc := range dfstream.WildcardTable {
		assert.ElementsMatch(t, tc.Matches, recs[i].payloads(), "pattern %q", tc.Pattern)
		for _, sig := range recs[i].signals() {
			assert.Equal(t, p+"."+tc.Pattern, sig.Pattern)
			assert.Equal(t, p+"."+sig.Payload, sig.Channel)
		}
	}
}

func TestRouterQueueGroupAcrossThreeRoutersHandlesEachSignalOnceRoundRobin(t *testing.T) {
	t.Parallel()
	addr, _ := testServer(t, dflockdtest.Config{})
	p := chanPrefix(t)
	pattern := p + ".jobs.>"

	var routers []*dfstream.Router
	var members []*recorder
	plain := &recorder{}
	for i := range 3 {
		r := newRouter(t, newClient(t, []string{addr}))
		m := &recorder{}
		require.NoError(t, r.HandleGroup(pattern, "workers", m))
		if i == 0 {
			// A plain handler on the same pattern, in the same router: it
			// gets every signal, and the group member only its share.
			require.NoError(t, r.Handle(pattern, plain))
		}
		runRouter(t, r) // one after the other: the group's join order
		routers = append(routers, r)
		members = append(members, m)
	}

	emitter := newClient(t, []string{addr})
	const n = 30
	copies := floodPaced(t, emitter, p+".jobs.run", 0, n, routerReceived(routers...))
	assert.Equal(t, 2*n, copies, "one copy for the group, one for the plain handler")
	waitCount(t, "plain", plain.n.Load, n)
	waitCount(t, "group", func() int64 { return members[0].n.Load() + members[1].n.Load() + members[2].n.Load() }, n)
	time.Sleep(100 * time.Millisecond)

	seen := map[string]int{}
	for k, m := range members {
		got := m.payloads()
		var wantK []string
		for i := k; i < n; i += 3 {
			wantK = append(wantK, strconv.Itoa(i))
		}
		assert.Equal(t, wantK, got, "member %d gets every third signal, in join order", k)
		for _, sig := range m.signals() {
			seen[sig.Payload]++
			assert.Equal(t, "workers", sig.Group)
			assert.Equal(t, pattern, sig.Pattern)
		}
	}
	for i := range n {
		assert.Equal(t, 1, seen[strconv.Itoa(i)], "signal %d handled exactly once in the group", i)
	}
	var all []string
	for i := range n {
		all = append(all, strconv.Itoa(i))
	}
	assert.Equal(t, all, plain.payloads(), "the plain handler gets every signal, in order")
	for _, sig := range plain.signals() {
		assert.Empty(t, sig.Group)
	}
}

func TestRouterPlainAndGroupHandlersOnOverlappingPatternsGetTheirOwnCopies(t *testing.T) {
	t.Parallel()
	addr, _ := testServer(t, dflockdtest.Config{})
	c := newClient(t, []string{addr})
	p := chanPrefix(t)
	r := newRouter(t, c)
	group, star, gt := &recorder{}, &recorder{}, &recorder{}
	require.NoError(t, r.HandleGroup(p+".a.>", "g", group))
	require.NoError(t, r.Handle(p+".a.*", star))
	require.NoError(t, r.Handle(p+".a.>", gt))
	runRouter(t, r)

	ctx := ctxT(t, 10*time.Second)
	n, err := c.Emit(ctx, p+".a.b", "ab")
	require.NoError(t, err)
	assert.Equal(t, 2, n, "the plain connection once, the group once")
	n, err = c.Emit(ctx, p+".a.b.c", "abc")
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	waitCount(t, "handled", func() int64 { return int64(r.Stats().Handled) }, 5)
	time.Sleep(100 * time.Millisecond)
	assert.Equal(t, []string{"ab", "abc"}, group.payloads())
	assert.Equal(t, []string{"ab"}, star.payloads())
	assert.Equal(t, []string{"ab", "abc"}, gt.payloads())
	assert.Equal(t, uint64(5), r.Stats().Handled)
}

func TestRouterKeepsHandlingAfterTheServerDropsItsConnections(t *testing.T) {
	t.Parallel()
	addr, srv := testServer(t, dflockdtest.Config{})
	needServer(t, srv, "DropConnections")
	c := newClient(t, []string{addr})
	p := chanPrefix(t)
	var evs events
	r := newRouter(t, c, dfstream.WithRouterEventHandler(evs.add),
		dfstream.WithRouterSignalOptions(dfstream.WithSignalBackoff(20*time.Millisecond, 100*time.Millisecond)))
	plain, group := &recorder{}, &recorder{}
	require.NoError(t, r.Handle(p+".x", plain))
	require.NoError(t, r.HandleGroup(p+".x", "g", group))
	runRouter(t, r)

	ctx := ctxT(t, 20*time.Second)
	_, err := c.Emit(ctx, p+".x", "before")
	require.NoError(t, err)
	waitCount(t, "before", func() int64 { return plain.n.Load() + group.n.Load() }, 2)

	srv.DropConnections()
	require.Eventually(t, func() bool { return len(eventsOf[dfstream.Reconnected](&evs)) == 2 }, 10*time.Second, time.Millisecond,
		"both connections reconnect: %v", evs.all())
	disc := eventsOf[dfstream.Disconnected](&evs)
	rec := eventsOf[dfstream.Reconnected](&evs)
	require.Len(t, disc, 2)
	for i := range rec {
		assert.ErrorIs(t, disc[i].Reason, dfstream.ErrConnLost)
		assert.False(t, rec[i].At.Before(rec[i].Since), "the gap is [Since, At]")
		assert.Positive(t, rec[i].Down)
	}

	n, err := c.Emit(ctx, p+".x", "after")
	require.NoError(t, err)
	assert.Equal(t, 2, n, "both subscriptions are back")
	waitCount(t, "after", func() int64 { return plain.n.Load() + group.n.Load() }, 4)
	assert.Equal(t, []string{"before", "after"}, plain.payloads())
	assert.Equal(t, []string{"before", "after"}, group.payloads())
}

// blocker is a handler that blocks on its first signal until released, and
// records the order of what it handles.
type blocker struct {
	recorder
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func newBlocker() *blocker {
	return &blocker{entered: make(chan struct{}), release: make(chan struct{})}
}

func (b *blocker) HandleSignal(ctx context.Context, sig dfstream.Signal) error {
	b.once.Do(func() {
		close(b.entered)
		<-b.release
	})
	return b.recorder.HandleSignal(ctx, sig)
}

func TestRouterBlockedHandlerOverflowsAloneAndCountsExactly(t *testing.T) {
	t.Parallel()
	const (
		n     = 60
		queue = 8
	)
	for _, policy := range []dfstream.OverflowPolicy{dfstream.DropNewest, dfstream.DropOldest} {
		t.Run(policy.String(), func(t *testing.T) {
			t.Parallel()
			const readTimeout = 500 * time.Millisecond
			addr, srv := testServer(t, dflockdtest.Config{ReadTimeout: readTimeout})
			c := newClient(t, []string{addr})
			p := chanPrefix(t)
			var evs events
			r := newRouter(t, c, dfstream.WithRouterEventHandler(evs.add),
				dfstream.WithRouterSignalOptions(dfstream.WithSignalHeartbeat(100*time.Millisecond)))
			blocked, other := newBlocker(), &recorder{}
			require.NoError(t, r.Handle(p+".work", blocked, dfstream.WithHandlerQueueSize(queue), dfstream.WithHandlerOverflow(policy)))
			require.NoError(t, r.Handle(p+".work", other))
			runRouter(t, r)
			t.Cleanup(func() {
				select {
				case <-blocked.release:
				default:
					close(blocked.release)
				}
			})

			flood(t, c, p+".work", 0, 1)
			select {
			case <-blocked.entered:
			case <-time.After(10 * time.Second):
				require.FailNow(t, "handler not called")
			}
			// The other handler keeps up, signal by signal, while the
			// blocked one's queue fills and overflows.
			floodPaced(t, c, p+".work", 1, n-1, func() uint64 { return uint64(other.n.Load()) })
			if srv != nil {
				time.Sleep(3 * readTimeout) // heartbeats keep the connection
			}
			assert.Empty(t, eventsOf[dfstream.Disconnected](&evs), "no connection lost")

			wantDropped := uint64(n - 1 - queue)
			require.Eventually(t, func() bool {
				var total uint64
				for _, o := range eventsOf[dfstream.Overflow](&evs) {
					total += o.Dropped
				}
				return total == wantDropped
			}, 5*time.Second, time.Millisecond, "overflow events %v", eventsOf[dfstream.Overflow](&evs))
			assert.Equal(t, wantDropped, r.Stats().Dropped)
			ovs := eventsOf[dfstream.Overflow](&evs)
			assert.Equal(t, wantDropped, ovs[len(ovs)-1].Total, "the last event's total counts every drop")
			for _, o := range ovs {
				assert.Equal(t, p+".work", o.Pattern)
				assert.Equal(t, policy, o.Policy)
			}
			assert.Equal(t, uint64(n), r.Stats().Received)

			close(blocked.release)
			waitCount(t, "blocked handler", blocked.n.Load, 1+queue)
			time.Sleep(50 * time.Millisecond)
			got := blocked.payloads()
			require.Len(t, got, 1+queue)
			want := []string{"0"}
			for i := range queue {
				if policy == dfstream.DropNewest {
					want = append(want, strconv.Itoa(1+i)) // the oldest kept
				} else {
					want = append(want, strconv.Itoa(n-queue+i)) // the newest kept
				}
			}
			assert.Equal(t, want, got)
			assert.Len(t, other.payloads(), n)
		})
	}
}

func TestRouterOverflowFailStreamStopsRunWithATypedError(t *testing.T) {
	t.Parallel()
	addr, _ := testServer(t, dflockdtest.Config{})
	c := newClient(t, []string{addr})
	p := chanPrefix(t)
	r := newRouter(t, c)
	blocked := newBlocker()
	require.NoError(t, r.Handle(p+".f", blocked, dfstream.WithHandlerQueueSize(2), dfstream.WithHandlerOverflow(dfstream.FailStream)))
	errc, panicked := runResult(r, context.Background())
	waitReady(t, r, errc, panicked)
	flood(t, c, p+".f", 0, 1)
	<-blocked.entered
	floodPaced(t, c, p+".f", 1, 3, routerReceived(r))
	time.Sleep(50 * time.Millisecond)
	close(blocked.release) // Run drains the blocked handler before returning
	select {
	case err := <-errc:
		assert.ErrorIs(t, err, dfstream.ErrOverflow)
	case <-time.After(10 * time.Second):
		require.FailNow(t, "Run did not stop")
	}
	assert.Equal(t, uint64(1), r.Stats().Dropped)
}

func TestRouterRecoverTurnsAPanicIntoAnErrorAndGoesOn(t *testing.T) {
	t.Parallel()
	addr, _ := testServer(t, dflockdtest.Config{})
	c := newClient(t, []string{addr})
	p := chanPrefix(t)
	errs := make(chan error, 10)
	r := newRouter(t, c, dfstream.WithRouterErrorHandler(func(_ context.Context, sig dfstream.Signal, err error) {
		assert.Equal(t, "boom", sig.Payload)
		errs <- err
	}))
	r.Use(dfstream.Recover())
	rec := &recorder{}
	require.NoError(t, r.HandleFunc(p+".>", func(ctx context.Context, sig dfstream.Signal) error {
		if sig.Payload == "boom" {
			panic("boom")
		}
		return rec.HandleSignal(ctx, sig)
	}))
	runRouter(t, r)
	floodPaced(t, c, p+".a", 0, 1, routerReceived(r))
	_, err := c.Emit(ctxT(t, 5*time.Second), p+".a", "boom")
	require.NoError(t, err)
	floodPaced(t, c, p+".a", 1, 1, routerReceived(r))

	select {
	case err := <-errs:
		assert.ErrorIs(t, err, dfstream.ErrHandlerPanic)
		var hp *dfstream.HandlerPanic
		require.ErrorAs(t, err, &hp)
		assert.Equal(t, "boom", hp.Value)
		assert.Contains(t, string(hp.Stack), "router_test.go")
	case <-time.After(5 * time.Second):
		require.FailNow(t, "the panic did not reach the error handler")
	}
	waitCount(t, "handled", rec.n.Load, 2)
	assert.Equal(t, []string{"0", "1"}, rec.payloads(), "the router went on after the panic")
	assert.Equal(t, uint64(1), r.Stats().Failed)
}

func TestRouterPanicWithoutRecoverStopsRunAndRepanicsAfterDraining(t *testing.T) {
	t.Parallel()
	addr, _ := testServer(t, dflockdtest.Config{})
	c := newClient(t, []string{addr})
	p := chanPrefix(t)
	r := newRouter(t, c)
	var slowDone atomic.Bool
	require.NoError(t, r.HandleFunc(p+".boom", func(context.Context, dfstream.Signal) error { panic("boom") }))
	require.NoError(t, r.HandleFunc(p+".slow", func(context.Context, dfstream.Signal) error {
		time.Sleep(200 * time.Millisecond)
		slowDone.Store(true)
		return nil
	}))
	result := make(chan any, 1)
	go func() {
		defer func() { result <- recover() }()
		_ = r.Run(context.Background())
	}()
	select {
	case <-r.Ready():
	case v := <-result: // Ready is never closed when Run fails
		require.FailNow(t, "Run ended before it was ready", "%v", v)
	}
	floodPaced(t, c, p+".slow", 0, 1, routerReceived(r))
	_, err := c.Emit(ctxT(t, 5*time.Second), p+".boom", "x")
	require.NoError(t, err)
	select {
	case v := <-result:
		rec, ok := v.(*panics.Recovered)
		require.True(t, ok, "Run re-panics with the handler's panic, got %T %v", v, v)
		assert.Equal(t, "boom", rec.Value)
		assert.True(t, slowDone.Load(), "the handler in flight finished first")
	case <-time.After(10 * time.Second):
		require.FailNow(t, "Run did not stop")
	}
}

func TestRouterRunDrainsHandlersInFlightBeforeReturning(t *testing.T) {
	t.Parallel()
	addr, _ := testServer(t, dflockdtest.Config{})
	c := newClient(t, []string{addr})
	p := chanPrefix(t)
	r := newRouter(t, c)
	started := make(chan struct{}, 3)
	var done atomic.Int64
	var ctxErrs atomic.Int64
	require.NoError(t, r.HandleFunc(p+".w", func(ctx context.Context, sig dfstream.Signal) error {
		started <- struct{}{}
		time.Sleep(200 * time.Millisecond)
		if ctx.Err() != nil {
			ctxErrs.Add(1)
		}
		done.Add(1)
		return nil
	}))
	ctx, cancel := context.WithCancel(context.Background())
	errc, panicked := runResult(r, ctx)
	waitReady(t, r, errc, panicked)
	floodPaced(t, c, p+".w", 0, 3, routerReceived(r))
	<-started
	cancel()
	select {
	case err := <-errc:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		require.FailNow(t, "Run did not return")
	}
	assert.Equal(t, int64(3), done.Load(), "Run returned after the handler calls in flight and queued")
	assert.Zero(t, ctxErrs.Load(), "handlers in flight are not cancelled")
	n, err := c.Emit(ctxT(t, 5*time.Second), p+".w", "late")
	require.NoError(t, err)
	assert.Zero(t, n, "the router no longer listens")
}

func TestRouterTimeoutAndLoggingMiddleware(t *testing.T) {
	t.Parallel()
	addr, _ := testServer(t, dflockdtest.Config{})
	c := newClient(t, []string{addr})
	p := chanPrefix(t)
	var logBuf syncBuffer
	errs := make(chan error, 10)
	r := newRouter(t, c, dfstream.WithRouterErrorHandler(func(_ context.Context, _ dfstream.Signal, err error) { errs <- err }))
	r.Use(dfstream.Logging(zerolog.New(&logBuf).Level(zerolog.DebugLevel)))
	require.NoError(t, r.HandleFunc(p+".slow", func(ctx context.Context, sig dfstream.Signal) error {
		<-ctx.Done()
		return ctx.Err()
	}, dfstream.WithHandlerTimeout(50*time.Millisecond)))
	require.NoError(t, r.HandleFunc(p+".fast", func(context.Context, dfstream.Signal) error { return nil }))
	runRouter(t, r)
	floodPaced(t, c, p+".slow", 0, 1, routerReceived(r))
	select {
	case err := <-errs:
		assert.ErrorIs(t, err, dfstream.ErrHandlerTimeout)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
	case <-time.After(5 * time.Second):
		require.FailNow(t, "no timeout error")
	}
	floodPaced(t, c, p+".fast", 1, 1, routerReceived(r))
	waitCount(t, "handled", func() int64 { return int64(r.Stats().Handled) }, 1)
	require.Eventually(t, func() bool { return bytes.Count(logBuf.Bytes(), []byte("signal handled")) == 2 }, 5*time.Second, time.Millisecond)
	out := logBuf.String()
	assert.Contains(t, out, `"channel":"`+p+`.fast"`)
	assert.Contains(t, out, `"pattern":"`+p+`.slow"`)
	assert.Contains(t, out, `"level":"error"`)
	assert.Contains(t, out, `"level":"debug"`)
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.b.Bytes())
}

func (s *syncBuffer) String() string { return string(s.Bytes()) }

func TestRouterConcurrencyAndOrderedDelivery(t *testing.T) {
	t.Parallel()
	addr, _ := testServer(t, dflockdtest.Config{})
	c := newClient(t, []string{addr})
	p := chanPrefix(t)
	r := newRouter(t, c)

	// Four workers: four calls are in flight at once (each waits for the
	// others), which one worker could never do.
	var barrier sync.WaitGroup
	barrier.Add(4)
	var inFlight, peak atomic.Int64
	require.NoError(t, r.HandleFunc(p+".par", func(context.Context, dfstream.Signal) error {
		cur := inFlight.Add(1)
		for {
			old := peak.Load()
			if cur <= old || peak.CompareAndSwap(old, cur) {
				break
			}
		}
		barrier.Done()
		barrier.Wait()
		inFlight.Add(-1)
		return nil
	}, dfstream.WithHandlerConcurrency(4)))

	// The default: one at a time, in arrival order.
	var orderedIn atomic.Int64
	ordered := &recorder{}
	require.NoError(t, r.HandleFunc(p+".ord", func(ctx context.Context, sig dfstream.Signal) error {
		if orderedIn.Add(1) != 1 {
			t.Error("two ordered calls at once")
		}
		time.Sleep(time.Millisecond)
		orderedIn.Add(-1)
		return ordered.HandleSignal(ctx, sig)
	}))
	runRouter(t, r)

	floodPaced(t, c, p+".par", 0, 4, routerReceived(r))
	waitCount(t, "parallel", func() int64 { return int64(r.Stats().Handled) }, 4)
	assert.Equal(t, int64(4), peak.Load())

	const n = 50
	floodPaced(t, c, p+".ord", 0, n, routerReceived(r))
	waitCount(t, "ordered", ordered.n.Load, n)
	var want []string
	for i := range n {
		want = append(want, strconv.Itoa(i))
	}
	assert.Equal(t, want, ordered.payloads())
}

func TestRouterInvalidRegistrationsAreTypedErrorsAndNothingIsSent(t *testing.T) {
	t.Parallel()
	l := newSilentListener(t)
	c := newClient(t, []string{l.Addr()})
	r := newRouter(t, c)
	nop := dfstream.HandlerFunc(func(context.Context, dfstream.Signal) error { return nil })
	for _, pat := range []string{"", "a b", "a\nb", "a.>.b", "a*", ">a", "a.>>", "a.b*", string(make([]byte, 257))} {
		err := r.Handle(pat, nop)
		assertInputError(t, err, "pattern %q", pat)
		assertInputError(t, r.HandleGroup(pat, "g", nop), "pattern %q", pat)
	}
	for _, g := range []string{"", "a b", "a\nb"} {
		assert.ErrorIs(t, r.HandleGroup("a.b", g, nop), dfstream.ErrInvalidInput, "group %q", g)
		var ie *wire.InputError
		assert.ErrorAs(t, r.HandleGroup("a.b", g, nop), &ie, "group %q", g)
	}
	assert.ErrorIs(t, r.Handle("a.b", nil), dfstream.ErrInvalidInput)
	assert.ErrorIs(t, r.HandleFunc("a.b", nil), dfstream.ErrInvalidInput)
	for name, o := range map[string]dfstream.HandlerOption{
		"concurrency": dfstream.WithHandlerConcurrency(0),
		"queue":       dfstream.WithHandlerQueueSize(0),
		"policy":      dfstream.WithHandlerOverflow(dfstream.OverflowPolicy(-1)),
		"timeout":     dfstream.WithHandlerTimeout(0),
		"middleware":  dfstream.WithHandlerMiddleware(nil),
	} {
		assert.ErrorIs(t, r.Handle("a.b", nop, o), dfstream.ErrInvalidInput, name)
	}
	_, err := dfstream.NewRouter(c, dfstream.WithRouterErrorHandler(nil))
	assert.ErrorIs(t, err, dfstream.ErrInvalidInput)
	_, err = dfstream.NewRouter(c, dfstream.WithRouterEventHandler(nil))
	assert.ErrorIs(t, err, dfstream.ErrInvalidInput)
	assert.ErrorIs(t, r.Run(context.Background()), dfstream.ErrInvalidInput, "no handlers")
	select {
	case <-l.accepted:
		require.FailNow(t, "a connection was made")
	case <-time.After(50 * time.Millisecond):
	}
}

func TestRouterRunsOnceAndRefusesLateRegistration(t *testing.T) {
	t.Parallel()
	addr, _ := testServer(t, dflockdtest.Config{})
	c := newClient(t, []string{addr})
	r := newRouter(t, c)
	nop := dfstream.HandlerFunc(func(context.Context, dfstream.Signal) error { return nil })
	require.NoError(t, r.Handle(chanPrefix(t)+".a", nop))
	runRouter(t, r)
	assert.ErrorIs(t, r.Handle("b", nop), dfstream.ErrRouterStarted)
	assert.ErrorIs(t, r.Run(context.Background()), dfstream.ErrRouterStarted)
	assert.PanicsWithValue(t, dfstream.ErrRouterStarted, func() { r.Use(dfstream.Recover()) })
}

func TestRouterRunFailsWhenTheServerIsUnreachable(t *testing.T) {
	t.Parallel()
	l := newSilentListener(t)
	addr := l.Addr()
	require.NoError(t, l.ln.Close())
	c := newClient(t, []string{addr}, dfstream.WithConnectTimeout(time.Second))
	r := newRouter(t, c)
	require.NoError(t, r.Handle("a", dfstream.HandlerFunc(func(context.Context, dfstream.Signal) error { return nil })))
	err := r.Run(ctxT(t, 5*time.Second))
	require.Error(t, err)
	assert.ErrorIs(t, err, dfstream.ErrUnreachable)
	assert.NotErrorIs(t, err, dfstream.ErrInvalidInput)
}

func TestRouterRunWithoutTheAuthTokenTheServerWantsReturnsErrAuth(t *testing.T) {
	t.Parallel()
	addr, srv := testServer(t, dflockdtest.Config{AuthToken: "secret"})
	needServer(t, srv, "auth token")
	c, err := dfstream.New(dfstream.WithServers(addr)) // no token
	require.NoError(t, err)
	defer c.Close()
	r := newRouter(t, c)
	nop := dfstream.HandlerFunc(func(context.Context, dfstream.Signal) error { return nil })
	require.NoError(t, r.Handle("a", nop))
	require.NoError(t, r.HandleGroup("b", "g", nop))
	errc, panicked := runResult(r, ctxT(t, 30*time.Second))
	select {
	case err := <-errc:
		assert.ErrorIs(t, err, dfstream.ErrAuth)
	case v := <-panicked:
		require.FailNow(t, "Run panicked", "%v", v)
	case <-time.After(10 * time.Second):
		require.FailNow(t, "Run did not return")
	}
	select {
	case <-r.Ready():
		assert.Fail(t, "the router was never ready")
	default:
	}
}

// runResult runs r on ctx and returns Run's result, or the value Run
// panicked with, on the channel.
func runResult(r *dfstream.Router, ctx context.Context) (errc <-chan error, panicked <-chan any) {
	e, p := make(chan error, 1), make(chan any, 1)
	go func() {
		defer func() {
			if v := recover(); v != nil {
				p <- v
			}
		}()
		e <- r.Run(ctx)
	}()
	return e, p
}

// waitReady waits for r to be ready, failing the test if Run returns first.
func waitReady(t *testing.T, r *dfstream.Router, errc <-chan error, panicked <-chan any) {
	t.Helper()
	select {
	case <-r.Ready():
	case err := <-errc:
		require.FailNow(t, "Run returned before it was ready", "%v", err)
	case v := <-panicked:
		require.FailNow(t, "Run panicked before it was ready", "%v", v)
	case <-time.After(10 * time.Second):
		require.FailNow(t, "router not ready")
	}
}

func TestRouterRunReturnsErrClosedWhenTheClientIsClosed(t *testing.T) {
	t.Parallel()
	addr, _ := testServer(t, dflockdtest.Config{})
	c := newClient(t, []string{addr})
	p := chanPrefix(t)
	r := newRouter(t, c)
	require.NoError(t, r.Handle(p+".a", &recorder{}))
	require.NoError(t, r.HandleGroup(p+".b", "g", &recorder{}))
	errc, panicked := runResult(r, context.Background()) // a context that never ends
	waitReady(t, r, errc, panicked)

	require.NoError(t, c.Close())
	select {
	case err := <-errc:
		assert.ErrorIs(t, err, dfstream.ErrClosed)
	case v := <-panicked:
		require.FailNow(t, "Run panicked", "%v", v)
	case <-time.After(10 * time.Second):
		require.FailNow(t, "Run did not return after Client.Close") // and its goroutines leak (TestMain)
	}
}

// gatedBurst runs a router whose one handler blocks on its first signal
// (queue of 1) and whose dispatcher is held up by the first Overflow event
// until gate is closed, floods it with a burst of 200 signals, and waits
// until every copy has reached the router's connection.
type gatedBurst struct {
	r        *dfstream.Router
	slow     *blocker
	gate     chan struct{}
	cancel   context.CancelFunc
	errc     <-chan error
	panicked <-chan any
	copies   int
}

func startGatedBurst(t *testing.T, sigOpts ...dfstream.SignalOption) *gatedBurst {
	t.Helper()
	addr, _ := testServer(t, dflockdtest.Config{})
	c := newClient(t, []string{addr})
	p := chanPrefix(t)
	g := &gatedBurst{gate: make(chan struct{}), slow: newBlocker()}
	var once sync.Once
	g.r = newRouter(t, c, dfstream.WithRouterEventHandler(func(ev dfstream.Event) {
		if _, ok := ev.(dfstream.Overflow); ok {
			once.Do(func() { <-g.gate })
		}
	}), dfstream.WithRouterSignalOptions(sigOpts...))
	require.NoError(t, g.r.Handle(p+".burst", g.slow, dfstream.WithHandlerQueueSize(1)))
	var ctx context.Context
	ctx, g.cancel = context.WithCancel(context.Background())
	t.Cleanup(g.cancel)
	g.errc, g.panicked = runResult(g.r, ctx)
	waitReady(t, g.r, g.errc, g.panicked)

	g.copies = flood(t, c, p+".burst", 0, 200)
	<-g.slow.entered
	require.Eventually(t, func() bool { return g.r.Stats().Arrived == uint64(g.copies) },
		5*time.Second, 5*time.Millisecond, "every copy has reached the router's connection")
	return g
}

// stop ends the router and returns its final counters.
func (g *gatedBurst) stop(t *testing.T, release func()) dfstream.RouterStats {
	t.Helper()
	g.cancel()
	release()
	select {
	case err := <-g.errc:
		require.NoError(t, err)
	case v := <-g.panicked:
		require.FailNow(t, "Run panicked", "%v", v)
	case <-time.After(10 * time.Second):
		require.FailNow(t, "Run did not return")
	}
	st := g.r.Stats()
	t.Logf("copies %d, stats %+v", g.copies, st)
	return st
}

func TestRouterGracefulStopDeliversEverySignalAlreadyReceived(t *testing.T) {
	t.Parallel()
	// The burst waits in the connection's buffer, well beyond what its
	// Events channel holds, when the router is told to stop.
	g := startGatedBurst(t, dfstream.WithSignalEventBuffer(4))
	st := g.stop(t, func() {
		time.Sleep(50 * time.Millisecond) // the stream is closing
		close(g.gate)
		close(g.slow.release)
	})
	assert.Equal(t, uint64(g.copies), st.Received, "every signal the server delivered reached the router")
	assert.Equal(t, st.Received-st.Dropped, st.Handled, "and was handled or counted as dropped")
	assert.Equal(t, int64(st.Handled), g.slow.n.Load())
}

func TestRouterStatsCountSignalsItsConnectionDropped(t *testing.T) {
	t.Parallel()
	// This time the connection's own buffer is too small for the burst.
	g := startGatedBurst(t, dfstream.WithSignalEventBuffer(4), dfstream.WithSignalBuffer(8))
	st := g.stop(t, func() {
		close(g.gate)
		close(g.slow.release)
	})
	assert.Positive(t, st.ConnDropped, "the connection's buffer overflowed")
	assert.Equal(t, st.Arrived, st.Received+st.ConnDropped, "every arrival was routed or counted as dropped")
}

func TestRouterPanicInErrorHandlerStopsRun(t *testing.T) {
	t.Parallel()
	addr, _ := testServer(t, dflockdtest.Config{})
	c := newClient(t, []string{addr})
	p := chanPrefix(t)
	r := newRouter(t, c, dfstream.WithRouterErrorHandler(func(context.Context, dfstream.Signal, error) { panic("error hook") }))
	require.NoError(t, r.HandleFunc(p+".e", func(context.Context, dfstream.Signal) error { return errors.New("fails") }))
	errc, panicked := runResult(r, context.Background())
	waitReady(t, r, errc, panicked)
	flood(t, c, p+".e", 0, 1)
	select {
	case v := <-panicked:
		rec, ok := v.(*panics.Recovered)
		require.True(t, ok, "Run re-panics with the hook's panic, got %T %v", v, v)
		assert.Equal(t, "error hook", rec.Value)
	case err := <-errc:
		require.FailNow(t, "Run returned instead of re-panicking", "%v", err)
	case <-time.After(10 * time.Second):
		require.FailNow(t, "Run did not stop: the panic killed a worker silently")
	}
}

func TestRouterPanicInEventHandlerStopsRun(t *testing.T) {
	t.Parallel()
	addr, srv := testServer(t, dflockdtest.Config{})
	needServer(t, srv, "DropConnections")
	c := newClient(t, []string{addr})
	p := chanPrefix(t)
	r := newRouter(t, c, dfstream.WithRouterEventHandler(func(ev dfstream.Event) {
		if _, ok := ev.(dfstream.Disconnected); ok {
			panic("event hook")
		}
	}), dfstream.WithRouterSignalOptions(dfstream.WithSignalBackoff(20*time.Millisecond, 50*time.Millisecond)))
	require.NoError(t, r.Handle(p+".a", &recorder{}))
	errc, panicked := runResult(r, context.Background())
	waitReady(t, r, errc, panicked)
	srv.DropConnections()
	select {
	case v := <-panicked:
		rec, ok := v.(*panics.Recovered)
		require.True(t, ok, "Run re-panics with the hook's panic, got %T %v", v, v)
		assert.Equal(t, "event hook", rec.Value)
	case err := <-errc:
		require.FailNow(t, "Run returned instead of re-panicking", "%v", err)
	case <-time.After(10 * time.Second):
		require.FailNow(t, "Run did not stop: the panic killed the dispatcher silently")
	}
}
