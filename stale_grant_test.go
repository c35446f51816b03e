package dfstream_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dfstream/dfstream"
	"github.com/dfstream/dfstream/dflockdtest"
	"github.com/dfstream/dfstream/internal/faultproxy"
)

// A grant is reported (Acquired, or success from Wait) only while its safe
// deadline is ahead. These tests delay the replies that bear a grant for
// longer than its lease, or let a queued grant run out before it is
// confirmed, and check that the stream gives such a grant back and queues
// again rather than report it.

// replyLag is how long the server's replies take to reach a client behind
// a slow link: longer than staleLease, so that every grant it is sent has
// run out on the server by the time it arrives.
const (
	replyLag   = 2500 * time.Millisecond
	staleLease = time.Second
)

// eventLog keeps a stream's events as they come, so that a test can look
// at all of them later.
type eventLog struct {
	mu     sync.Mutex
	events []dfstream.Event
	closed chan struct{}
}

func record(events <-chan dfstream.Event) *eventLog {
	r := &eventLog{closed: make(chan struct{})}
	go func() {
		defer close(r.closed)
		for ev := range events {
			r.mu.Lock()
			r.events = append(r.events, ev)
			r.mu.Unlock()
		}
	}()
	return r
}

func (r *eventLog) all() []dfstream.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]dfstream.Event(nil), r.events...)
}

// count returns how many of the recorded events are of type E.
func count[E dfstream.Event](r *eventLog) int {
	n := 0
	for _, ev := range r.all() {
		if _, ok := ev.(E); ok {
			n++
		}
	}
	return n
}

// hold is an interval in which a stream believed it held its key.
type hold struct {
	from, to time.Time
	fence    uint64
}

// holds returns the intervals the recorded events claim, from Acquired to
// Lost or Released (or now, for a hold still believed). Every Acquired
// must promise a deadline still ahead when it was emitted.
func (r *eventLog) holds(t *testing.T) []hold {
	t.Helper()
	var hs []hold
	for _, ev := range r.all() {
		switch ev := ev.(type) {
		case dfstream.Acquired:
			assert.True(t, ev.Deadline.After(ev.At), "Acquired at %v with a deadline %v earlier",
				ev.At, ev.At.Sub(ev.Deadline))
			hs = append(hs, hold{from: ev.At, fence: ev.Fence})
		case dfstream.Lost:
			hs[len(hs)-1].to = ev.At
		case dfstream.Released:
			hs[len(hs)-1].to = ev.At
		}
	}
	for i := range hs {
		if hs[i].to.IsZero() {
			hs[i].to = time.Now()
		}
	}
	return hs
}

// requireNoOverlap checks that no two streams believed they held the key
// at once, and that fences grow in grant order.
func requireNoOverlap(t *testing.T, rs ...*eventLog) {
	t.Helper()
	var all []hold
	for _, r := range rs {
		all = append(all, r.holds(t)...)
	}
	for i, a := range all {
		for _, b := range all[i+1:] {
			require.False(t, a.from.Before(b.to) && b.from.Before(a.to), "holds overlap: %+v and %+v", a, b)
			if a.fence != 0 && b.fence != 0 {
				require.Equal(t, a.from.Before(b.from), a.fence < b.fence, "fences out of grant order: %+v and %+v", a, b)
			}
		}
	}
}

// slowLink returns a client of srv whose connections go through a proxy
// that delays every reply by replyLag (from the start when lagging, else
// once the test sets it).
func slowLink(t *testing.T, srv *dflockdtest.Server, lagging bool, opts ...dfstream.Option) (*dfstream.Client, *faultproxy.Proxy) {
	t.Helper()
	p := faultproxy.New(t, srv.Addr())
	if lagging {
		p.SetLatency(faultproxy.ToClient, replyLag)
	}
	return newClient(t, []string{p.Addr()}, append([]dfstream.Option{signalsEra}, opts...)...), p
}

// holderOf waits until the server shows key held.
func holderOf(t *testing.T, addr, key string) {
	t.Helper()
	require.Eventually(t, func() bool {
		_, held := lockHolder(stats(t, addr), key)
		return held
	}, 5*time.Second, 20*time.Millisecond)
}

// The reproduction of the issue: the grant of a free key reaches a client
// whose replies lag by longer than the lease, while a client on a clean
// link queues behind it and is granted the key when that lease runs out.
func TestLockGrantArrivingAfterItsLeaseIsNeverReported(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		srv     dflockdtest.Config
		opts    []dfstream.StreamOption
		bounded bool // the enqueue's reply is awaited no longer than the lease allows
	}{
		"requested lease": {dflockdtest.Config{}, []dfstream.StreamOption{dfstream.WithLease(staleLease)}, true},
		// The lease is known only from the reply, which is refused.
		"server's default lease": {dflockdtest.Config{DefaultLease: staleLease}, nil, false},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			tc.srv.LeaseSweepInterval = 50 * time.Millisecond
			srv := dflockdtest.New(t, tc.srv)
			slow, _ := slowLink(t, srv, true)
			clean := newClient(t, []string{srv.Addr()})
			key := testKey(t, "k")

			type started struct {
				s    *dfstream.LockStream
				err  error
				took time.Duration
			}
			lagging := make(chan started, 1)
			go func() {
				start := time.Now()
				s, err := slow.StartLock(context.Background(), key,
					append(tc.opts, dfstream.WithAcquireTimeout(2*time.Second))...)
				lagging <- started{s, err, time.Since(start)}
			}()
			holderOf(t, srv.Addr(), key) // granted to the lagging client; its reply is on the way
			next, err := clean.StartLock(context.Background(), key, dfstream.WithLease(10*time.Second))
			require.NoError(t, err)
			nr := record(next.Events())

			st := <-lagging
			require.NoError(t, st.err)
			if tc.bounded {
				assert.Less(t, st.took, replyLag, "Lock waited for a reply past the grant's safe deadline")
			}
			sr := record(st.s.Events())
			select {
			case <-st.s.Done():
			case <-time.After(4 * replyLag):
				require.FailNow(t, "still queueing", "the acquire timeout counts from the first enqueue of the round")
			}
			<-sr.closed
			assert.ErrorIs(t, st.s.Err(), dfstream.ErrDeadlinePassed, "nothing was held: a failure, not a loss")
			assert.ErrorIs(t, st.s.Err(), dfstream.ErrTimeout, "the acquire time is over")
			assert.Zero(t, count[dfstream.Acquired](sr), "the stale grant was reported: %+v", sr.all())
			assert.Zero(t, count[dfstream.Lost](sr))
			assert.Equal(t, 1, count[dfstream.Failed](sr))

			_, err = next.Wait(context.Background())
			require.NoError(t, err, "the client on the clean link is granted the key")
			requireNoOverlap(t, sr, nr)
			require.NoError(t, next.Close())
		})
	}
}

// A queued client's link starts lagging: the grant its wait brings, and
// the renewal that should confirm it, come back after the lease. It gives
// that grant back and queues again, behind the client the server passed
// the key on to, and holds the key once its link heals.
func TestLockQueuedGrantConfirmedAfterItsLeaseIsGivenBackAndQueuedAgain(t *testing.T) {
	t.Parallel()
	srv := dflockdtest.New(t, dflockdtest.Config{LeaseSweepInterval: 50 * time.Millisecond})
	slow, link := slowLink(t, srv, false)
	clean := newClient(t, []string{srv.Addr()})
	key := testKey(t, "k")
	ctx := context.Background()

	holder, err := clean.Lock(ctx, key)
	require.NoError(t, err)
	waiter := queuedLock(t, slow, ctx, key, dfstream.WithLease(staleLease), dfstream.WithAcquireTimeout(time.Minute))
	wr := record(waiter.Events())
	next := queuedLock(t, clean, ctx, key, dfstream.WithLease(10*time.Second))
	nr := record(next.Events())
	link.SetLatency(faultproxy.ToClient, replyLag)
	hr := record(holder.Events())
	require.NoError(t, holder.Release(ctx))

	_, err = next.Wait(ctx)
	require.NoError(t, err, "the grant the lagging waiter did not claim in time passes on")
	time.Sleep(2 * replyLag) // the lagging grant and its confirmation arrive meanwhile
	assert.Zero(t, count[dfstream.Acquired](wr), "the stale grant was reported: %+v", wr.all())
	_, held := waiter.Held()
	assert.False(t, held)
	assert.NotEqual(t, dfstream.StateEnded, waiter.State(), "it goes on queueing, not %v", waiter.Err())

	link.SetLatency(faultproxy.ToClient, 0)
	require.NoError(t, next.Release(ctx))
	acq, err := waiter.Wait(ctx)
	require.NoError(t, err)
	assert.True(t, acq.Deadline.After(time.Now()))
	assert.Zero(t, count[dfstream.Queued](wr), "one Queued for the acquire (read above), however often it queued")
	requireNoOverlap(t, hr, wr, nr)
	require.NoError(t, waiter.Close())
}

// A queued grant runs out while the server is frozen; the waiter learns
// it is gone only when the renewal that should confirm it is refused. With
// acquire time left, it queues again and is granted the key, now free.
func TestQueuedGrantGoneWhenConfirmedQueuesAgain(t *testing.T) {
	t.Parallel()
	for name, start := range map[string]func(c *dfstream.Client, key string) (waiting, error){
		"lock": func(c *dfstream.Client, key string) (waiting, error) {
			return c.StartLock(context.Background(), key, dfstream.WithLease(staleLease))
		},
		"semaphore": func(c *dfstream.Client, key string) (waiting, error) {
			return c.StartSemaphore(context.Background(), key, 1, dfstream.WithLease(staleLease))
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			addr, srv := testServer(t, dflockdtest.Config{LeaseSweepInterval: 50 * time.Millisecond})
			needServer(t, srv, "freeze")
			c := newClient(t, []string{addr})
			key := testKey(t, "k")

			rawHold(t, addr, key, 1) // a holder that never renews
			s, err := start(c, key)
			require.NoError(t, err)
			nextOf[dfstream.Queued](t, s.Events(), time.Second)
			grantGoesStaleWhileFrozen(srv)

			acq := nextOf[dfstream.Acquired](t, s.Events(), 5*time.Second)
			assert.True(t, acq.Deadline.After(acq.At))
			assert.Equal(t, dfstream.StateHeld, s.State())
			require.NoError(t, s.Release(context.Background()))
		})
	}
}

// waiting is what the gone-grant test needs of a lock or semaphore stream.
type waiting interface {
	Events() <-chan dfstream.Event
	State() dfstream.State
	Release(context.Context) error
}

// A queued client's replies lag, and it leaves the lease to the server's
// default, so the enqueue's reply is awaited: the key is granted to it,
// and that grant runs out, before its wait even leaves, which the server
// answers error_lease_expired. It queues again.
func TestLockWaitThatFindsItsGrantExpiredQueuesAgain(t *testing.T) {
	t.Parallel()
	srv := dflockdtest.New(t, dflockdtest.Config{DefaultLease: staleLease, LeaseSweepInterval: 50 * time.Millisecond})
	slow, link := slowLink(t, srv, true)
	clean := newClient(t, []string{srv.Addr()})
	key := testKey(t, "k")
	ctx := context.Background()

	holder, err := clean.Lock(ctx, key, dfstream.WithLease(10*time.Second))
	require.NoError(t, err)
	queued := make(chan *dfstream.LockStream, 1)
	go func() {
		s, err := slow.StartLock(ctx, key, dfstream.WithAcquireTimeout(time.Minute))
		assert.NoError(t, err)
		queued <- s
	}()
	require.Eventually(t, func() bool {
		waiters, _ := lockHolder(stats(t, srv.Addr()), key)
		return waiters == 1
	}, 5*time.Second, 20*time.Millisecond)
	require.NoError(t, holder.Release(ctx)) // granted to the waiter, which does not know it yet
	time.Sleep(replyLag + staleLease/2)     // its wait reaches the server after the grant ran out
	link.SetLatency(faultproxy.ToClient, 0)

	waiter := <-queued
	require.NotNil(t, waiter)
	acq, err := waiter.Wait(ctx)
	require.NoError(t, err)
	assert.True(t, acq.Deadline.After(time.Now()))
	require.NoError(t, waiter.Close())
}

// rawHold acquires key with a lease of leaseSec seconds on a connection of
// its own, which stays open, silent, until the test ends.
func rawHold(t *testing.T, addr, key string, leaseSec int) {
	t.Helper()
	require.Regexp(t, `^ok `, rawExchange(t, addr, fmt.Sprintf("l\n%s\n0 %d\n", key, leaseSec)))
}

// A gone grant found once the acquire time is over ends the round as an
// acquire that timed out, not as a bare server error.
func TestQueuedGrantGoneAfterTheAcquireTimeoutIsATimeout(t *testing.T) {
	t.Parallel()
	addr, srv := testServer(t, dflockdtest.Config{LeaseSweepInterval: 50 * time.Millisecond})
	needServer(t, srv, "freeze")
	c := newClient(t, []string{addr})
	key := testKey(t, "k")

	rawHold(t, addr, key, 1) // a holder that never renews
	s, err := c.StartLock(context.Background(), key, dfstream.WithLease(staleLease), dfstream.WithAcquireTimeout(2*staleLease))
	require.NoError(t, err)
	nextOf[dfstream.Queued](t, s.Events(), time.Second)
	// All after the acquire timeout would have passed.
	grantGoesStaleWhileFrozen(srv)

	failed := nextOf[dfstream.Failed](t, s.Events(), 5*time.Second)
	assert.ErrorIs(t, failed.Err, dfstream.ErrTimeout)
	assert.ErrorIs(t, s.Err(), dfstream.ErrTimeout)
}

// grantGoesStaleWhileFrozen freezes srv while a queued stream's wait is in
// and its holder's lease (staleLease, never renewed) runs out: the waiter is
// granted and that grant runs out unclaimed, so the wait is answered after
// the thaw and its confirmation refused.
func grantGoesStaleWhileFrozen(srv *dflockdtest.Server) {
	time.Sleep(100 * time.Millisecond) // the wait is in
	srv.Freeze()
	time.Sleep(3 * staleLease)
	srv.Thaw()
}
