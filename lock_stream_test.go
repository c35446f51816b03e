package dfstream_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dfstream/dfstream"
	"github.com/dfstream/dfstream/dflockdtest"
)

var tokenRE = regexp.MustCompile(`^[0-9a-f]{32}$`)

func TestLockFreeKeyIsAcquiredThenReleased(t *testing.T) {
	t.Parallel()
	addr, srv := testServer(t, dflockdtest.Config{})
	c := newClient(t, []string{addr})
	key := testKey(t, "k")

	s, err := c.StartLock(context.Background(), key, dfstream.WithLease(5*time.Second))
	require.NoError(t, err)
	acq := nextOf[dfstream.Acquired](t, s.Events(), 5*time.Second)
	assert.Equal(t, key, acq.Key)
	assert.Regexp(t, tokenRE, acq.Token)
	assert.Equal(t, 5*time.Second, acq.Lease)
	if srv != nil {
		assert.NotZero(t, acq.Fence, "the embedded server issues fences")
	}
	assert.WithinDuration(t, time.Now().Add(4500*time.Millisecond), acq.Deadline, time.Second)
	assert.Equal(t, dfstream.StateHeld, s.State())

	_, held := lockHolder(stats(t, addr), key)
	assert.True(t, held, "server shows the lock held")

	require.NoError(t, s.Release(context.Background()))
	nextOf[dfstream.Released](t, s.Events(), time.Second)
	requireClosed(t, s.Events())
	assert.NoError(t, s.Err())
	_, held = lockHolder(stats(t, addr), key)
	assert.False(t, held, "released on the server")
}

func TestLockWithoutFencesReportsFenceZero(t *testing.T) {
	t.Parallel()
	addr, srv := testServer(t, dflockdtest.Config{NoFences: true})
	needServer(t, srv, "server without fences")
	c := newClient(t, []string{addr})

	s, err := c.Lock(context.Background(), testKey(t, "k"), dfstream.WithLease(time.Second))
	require.NoError(t, err)
	acq := nextOf[dfstream.Acquired](t, s.Events(), time.Second)
	assert.Zero(t, acq.Fence)
	ren := nextOf[dfstream.Renewed](t, s.Events(), 3*time.Second)
	assert.Zero(t, ren.Fence)
	assert.Equal(t, time.Second, ren.Lease)
	require.NoError(t, s.Close())
}

func TestLockRenewalKeepsTheFence(t *testing.T) {
	t.Parallel()
	addr, _ := testServer(t, dflockdtest.Config{})
	c := newClient(t, []string{addr})

	s, err := c.Lock(context.Background(), testKey(t, "k"), dfstream.WithLease(time.Second))
	require.NoError(t, err)
	acq := nextOf[dfstream.Acquired](t, s.Events(), time.Second)
	if acq.Fence == 0 {
		t.Skip("the server issues no fences (dflockd 1.10)")
	}
	ren := nextOf[dfstream.Renewed](t, s.Events(), 3*time.Second)
	assert.Equal(t, acq.Fence, ren.Fence)
	assert.True(t, ren.Deadline.After(acq.Deadline), "renewal moves the safe deadline")
	require.NoError(t, s.Close())
}

func TestLockSlowConsumerKeepsTheLockAndGetsCoalescedRenewals(t *testing.T) {
	t.Parallel()
	addr, _ := testServer(t, dflockdtest.Config{})
	c := newClient(t, []string{addr})
	key := testKey(t, "k")

	s, err := c.StartLock(context.Background(), key, dfstream.WithLease(time.Second), dfstream.WithEventBuffer(1))
	require.NoError(t, err)
	_, err = s.Wait(context.Background())
	require.NoError(t, err)

	time.Sleep(3 * time.Second) // three lease periods without reading an event
	_, held := lockHolder(stats(t, addr), key)
	require.True(t, held, "still held on the server")

	nextOf[dfstream.Acquired](t, s.Events(), time.Second)
	coalesced := 0
	for coalesced == 0 {
		ev := nextOf[dfstream.Renewed](t, s.Events(), 2*time.Second)
		coalesced = ev.Coalesced
	}
	assert.GreaterOrEqual(t, coalesced, 2, "renewals behind a slow consumer are folded into one")
	assert.Equal(t, dfstream.StateHeld, s.State())
	require.NoError(t, s.Release(context.Background()))
	for ev := range s.Events() {
		_, lost := ev.(dfstream.Lost)
		assert.False(t, lost, "nothing lost")
	}
	assert.NoError(t, s.Err())
}

func TestLockIsLostBeforeTheSafeDeadlineWhenTheServerFreezes(t *testing.T) {
	t.Parallel()
	addr, srv := testServer(t, dflockdtest.Config{LeaseSweepInterval: 50 * time.Millisecond})
	needServer(t, srv, "freeze")
	c := newClient(t, []string{addr})
	key := testKey(t, "k")
	const lease = 2 * time.Second

	s, err := c.StartLock(context.Background(), key, dfstream.WithLease(lease))
	require.NoError(t, err)
	acq := nextOf[dfstream.Acquired](t, s.Events(), 5*time.Second)
	srv.Freeze()
	frozen := time.Now()

	var lost dfstream.Lost
	for {
		ev := next(t, s.Events(), 2*lease)
		if l, ok := ev.(dfstream.Lost); ok {
			lost = l
			break
		}
		r, ok := ev.(dfstream.Renewed)
		require.True(t, ok, "only renewals before the loss, got %T", ev)
		acq.Deadline = r.Deadline // a renewal that got through before the freeze
	}
	assert.ErrorIs(t, lost.Reason, dfstream.ErrDeadlinePassed)
	assert.True(t, lost.Final)
	assert.False(t, lost.At.After(acq.Deadline), "Lost at %v, safe deadline %v", lost.At, acq.Deadline)
	t.Logf("lease %v: Lost %v after the freeze, %v before the safe deadline, %v before the lease could end on the server",
		lease, lost.At.Sub(frozen).Round(time.Millisecond), acq.Deadline.Sub(lost.At).Round(time.Millisecond),
		acq.Deadline.Add(lease/10).Sub(lost.At).Round(time.Millisecond))

	// The server's lease ran out meanwhile: after the thaw another client
	// is granted the key the holder gave up in time.
	srv.Thaw()
	other := newClient(t, []string{addr})
	o, err := other.Lock(context.Background(), key)
	require.NoError(t, err)
	require.NoError(t, o.Close())
}

// dropBound is how soon after the server drops a held stream's connection
// Lost must come, with a lease and read timeout (longRenewal) that put the
// next renewal 30 s away: a bound no loaded machine misses, which a loss
// noticed by the renewal rather than the hang-up watch still fails. The
// figure itself is BenchmarkDropToLost's.
const dropBound = 5 * time.Second

// longRenewal are the options of a stream whose first renewal is 30 s
// away (a client's server read timeout caps the interval at half of it).
func longRenewal() []dfstream.StreamOption {
	return []dfstream.StreamOption{dfstream.WithLease(time.Minute)}
}

// longRenewalClient returns a client whose streams may renew as seldom as
// a minute's lease asks, and a server that allows it.
func longRenewalClient(t *testing.T) (*dfstream.Client, *dflockdtest.Server) {
	t.Helper()
	addr, srv := testServer(t, dflockdtest.Config{ReadTimeout: time.Minute})
	needServer(t, srv, "drop connections")
	return newClient(t, []string{addr}, dfstream.WithServerReadTimeout(time.Minute)), srv
}

func TestLockIsLostLongBeforeTheNextRenewalWhenTheConnectionDrops(t *testing.T) {
	t.Parallel()
	// A connection is watched for hang-ups from when it is first pooled,
	// or once its stream has held the key a little while: each way, the
	// drop is noticed at once, not at the next renewal.
	for _, tc := range []struct {
		name   string
		pooled bool          // the stream takes a connection from the pool
		held   time.Duration // how long it holds before the drop
	}{
		{"fresh connection, dropped at once", false, 0},
		{"fresh connection, dropped later", false, 200 * time.Millisecond},
		{"pooled connection", true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, srv := longRenewalClient(t)
			if tc.pooled {
				warm, err := c.Lock(context.Background(), testKey(t, "warm"))
				require.NoError(t, err)
				require.NoError(t, warm.Release(context.Background()))
			}

			s, err := c.Lock(context.Background(), testKey(t, "k"), longRenewal()...)
			require.NoError(t, err)
			nextOf[dfstream.Acquired](t, s.Events(), time.Second)
			time.Sleep(tc.held)
			dropped := time.Now()
			srv.DropConnections()
			lost := nextOf[dfstream.Lost](t, s.Events(), 2*dropBound)
			assert.ErrorIs(t, lost.Reason, dfstream.ErrConnLost)
			assert.Less(t, lost.At.Sub(dropped), dropBound, "noticed at once, not at the next renewal")
			requireClosed(t, s.Events())
			assert.ErrorIs(t, s.Err(), dfstream.ErrConnLost)
		})
	}
}

func TestLockIsLostWhenTheServerRefusesARenewal(t *testing.T) {
	t.Parallel()
	addr, _ := testServer(t, dflockdtest.Config{})
	c := newClient(t, []string{addr})
	key := testKey(t, "k")

	s, err := c.Lock(context.Background(), key, dfstream.WithLease(time.Second))
	require.NoError(t, err)
	acq := nextOf[dfstream.Acquired](t, s.Events(), time.Second)

	// Tokens are bearer credentials: releasing it from another connection
	// makes the holder's next renewal fail.
	rawRelease(t, addr, key, acq.Token)
	lost := nextOf[dfstream.Lost](t, s.Events(), 3*time.Second)
	assert.ErrorIs(t, lost.Reason, dfstream.ErrRenewRefused)
	assert.ErrorIs(t, lost.Reason, dfstream.ErrServer)
}

func TestLockWithLongLeaseOutlivesAShortServerReadTimeout(t *testing.T) {
	t.Parallel()
	addr, srv := testServer(t, dflockdtest.Config{ReadTimeout: 2 * time.Second})
	needServer(t, srv, "short read timeout")
	c := newClient(t, []string{addr}, dfstream.WithServerReadTimeout(2*time.Second))
	key := testKey(t, "k")

	s, err := c.Lock(context.Background(), key, dfstream.WithLease(60*time.Second))
	require.NoError(t, err)
	time.Sleep(10 * time.Second)
	_, held := lockHolder(stats(t, addr), key)
	assert.True(t, held, "a 60 s lease renewed often enough for a 2 s read timeout")
	assert.Equal(t, dfstream.StateHeld, s.State())
	require.NoError(t, s.Release(context.Background()))
	for ev := range s.Events() {
		_, lost := ev.(dfstream.Lost)
		assert.False(t, lost)
	}
}

func TestLockAcquireTimeoutIsAFailureNotALoss(t *testing.T) {
	t.Parallel()
	addr, _ := testServer(t, dflockdtest.Config{})
	c := newClient(t, []string{addr})
	key := testKey(t, "k")

	holder, err := c.Lock(context.Background(), key)
	require.NoError(t, err)
	s := queuedLock(t, c, context.Background(), key, dfstream.WithAcquireTimeout(time.Second))
	failed := nextOf[dfstream.Failed](t, s.Events(), 5*time.Second)
	assert.ErrorIs(t, failed.Err, dfstream.ErrTimeout)
	requireClosed(t, s.Events())
	assert.ErrorIs(t, s.Err(), dfstream.ErrTimeout)
	_, err = s.Wait(context.Background())
	assert.ErrorIs(t, err, dfstream.ErrTimeout)
	require.NoError(t, holder.Close())
}

func TestLockTryOnceOnAHeldKeyTimesOutAtOnce(t *testing.T) {
	t.Parallel()
	addr, _ := testServer(t, dflockdtest.Config{})
	c := newClient(t, []string{addr})
	key := testKey(t, "k")

	holder, err := c.Lock(context.Background(), key)
	require.NoError(t, err)
	start := time.Now()
	_, err = c.Lock(context.Background(), key, dfstream.WithAcquireTimeout(0))
	assert.ErrorIs(t, err, dfstream.ErrTimeout)
	assert.Less(t, time.Since(start), 2*time.Second)
	require.NoError(t, holder.Close())
}

func TestLockTwoPhaseReportsQueuedThenAcquired(t *testing.T) {
	t.Parallel()
	addr, _ := testServer(t, dflockdtest.Config{})
	c := newClient(t, []string{addr})
	key := testKey(t, "k")

	first, err := c.StartLock(context.Background(), key)
	require.NoError(t, err)
	acquired, err := first.Enqueued(context.Background())
	require.NoError(t, err)
	assert.True(t, acquired, "free key: granted on enqueue")

	second, err := c.StartLock(context.Background(), key)
	require.NoError(t, err)
	acquired, err = second.Enqueued(context.Background())
	require.NoError(t, err)
	assert.False(t, acquired, "held key: queued")
	assert.Equal(t, dfstream.StateQueued, second.State())

	require.NoError(t, first.Release(context.Background()))
	_, err = second.Wait(context.Background())
	require.NoError(t, err)
	require.NoError(t, second.Close())
}

func TestLockCancelledWhileQueuedLeavesTheQueueAndTheNextWaiterIsGranted(t *testing.T) {
	t.Parallel()
	addr, _ := testServer(t, dflockdtest.Config{})
	c := newClient(t, []string{addr})
	key := testKey(t, "k")
	const acquireTimeout = 2 * time.Second

	holder, err := c.Lock(context.Background(), key)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	cancelled := queuedLock(t, c, ctx, key, dfstream.WithAcquireTimeout(acquireTimeout))
	next := queuedLock(t, c, context.Background(), key)

	cancel()
	failed := nextOf[dfstream.Failed](t, cancelled.Events(), time.Second)
	assert.ErrorIs(t, failed.Err, context.Canceled)
	<-cancelled.Done()

	// The server cannot notice a waiter that disconnects while blocked in
	// w (protocol.md §3): the cancelled stream's waiter is gone once its
	// wait times out, which the stream bounds by its acquire timeout.
	require.Eventually(t, func() bool {
		st, err := c.Stats(context.Background(), addr)
		if err != nil {
			return false
		}
		waiters, _ := lockHolder(st, key)
		return waiters == 1
	}, acquireTimeout+3*time.Second, 50*time.Millisecond, "only the live waiter is left")
	require.NoError(t, holder.Release(context.Background()))
	_, err = next.Wait(context.Background())
	require.NoError(t, err)
	require.NoError(t, next.Close())
}

func TestLockGhostWaiterPassesTheLockOnToTheNextWaiter(t *testing.T) {
	t.Parallel()
	addr, _ := testServer(t, dflockdtest.Config{})
	c := newClient(t, []string{addr})
	key := testKey(t, "k")

	holder, err := c.Lock(context.Background(), key)
	require.NoError(t, err)
	cancelled := queuedLock(t, c, context.Background(), key, dfstream.WithAcquireTimeout(time.Minute))
	next := queuedLock(t, c, context.Background(), key)
	require.NoError(t, cancelled.Close())

	require.NoError(t, holder.Release(context.Background()))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = next.Wait(ctx)
	require.NoError(t, err, "granted through the closed waiter's place")
	require.NoError(t, next.Close())
}

func TestLockQueuedStreamsAreGrantedInEnqueueOrder(t *testing.T) {
	t.Parallel()
	addr, _ := testServer(t, dflockdtest.Config{})
	c := newClient(t, []string{addr})
	key := testKey(t, "k")

	holder, err := c.Lock(context.Background(), key)
	require.NoError(t, err)
	const n = 6
	streams := make([]*dfstream.LockStream, n)
	for i := range streams {
		streams[i], err = c.StartLock(context.Background(), key, dfstream.WithAcquireTimeout(30*time.Second))
		require.NoError(t, err)
		nextOf[dfstream.Queued](t, streams[i].Events(), time.Second)
	}
	var (
		mu    sync.Mutex
		order []int
	)
	var wg sync.WaitGroup
	for i, s := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.Wait(context.Background()); err != nil {
				return
			}
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			_ = s.Release(context.Background())
		}()
	}
	require.NoError(t, holder.Release(context.Background()))
	wg.Wait()
	assert.Equal(t, []int{0, 1, 2, 3, 4, 5}, order)
}

func TestLockReacquiresAfterLossWhenAsked(t *testing.T) {
	t.Parallel()
	addr, srv := testServer(t, dflockdtest.Config{})
	needServer(t, srv, "drop connections")
	c := newClient(t, []string{addr})

	s, err := c.StartLock(context.Background(), testKey(t, "k"),
		dfstream.WithReacquire(10*time.Millisecond, 100*time.Millisecond))
	require.NoError(t, err)
	first := nextOf[dfstream.Acquired](t, s.Events(), time.Second)
	srv.DropConnections()
	lost := nextOf[dfstream.Lost](t, s.Events(), time.Second)
	assert.False(t, lost.Final)
	assert.False(t, lost.Terminal())
	second := nextOf[dfstream.Acquired](t, s.Events(), 5*time.Second)
	assert.NotEqual(t, first.Token, second.Token)
	assert.Greater(t, second.Fence, first.Fence)
	require.NoError(t, s.Close())
	nextOf[dfstream.Released](t, s.Events(), time.Second)
	requireClosed(t, s.Events())
}

func TestLockCloseReleasesAndLeavesNoConnectionOpen(t *testing.T) {
	t.Parallel()
	addr, srv := testServer(t, dflockdtest.Config{})
	needServer(t, srv, "connection count")
	c := newClient(t, []string{addr}, dfstream.WithPoolSize(0))
	key := testKey(t, "k")

	s, err := c.Lock(context.Background(), key)
	require.NoError(t, err)
	require.Len(t, srv.Conns(), 1)
	require.NoError(t, s.Close())
	require.NoError(t, s.Close(), "idempotent")
	nextOf[dfstream.Acquired](t, s.Events(), time.Second)
	nextOf[dfstream.Released](t, s.Events(), time.Second)
	requireClosed(t, s.Events())
	require.Eventually(t, func() bool { return len(srv.Conns()) == 0 }, 2*time.Second, 10*time.Millisecond)
	_, held := lockHolder(stats(t, addr), key)
	assert.False(t, held)
}

func TestClientCloseEndsItsStreams(t *testing.T) {
	t.Parallel()
	addr, _ := testServer(t, dflockdtest.Config{})
	c, err := dfstream.New(dfstream.WithServers(addr))
	require.NoError(t, err)
	key := testKey(t, "k")
	s, err := c.Lock(context.Background(), key)
	require.NoError(t, err)
	require.NoError(t, c.Close())
	<-s.Done()
	_, err = c.StartLock(context.Background(), key)
	assert.ErrorIs(t, err, dfstream.ErrClosed)
	_, held := lockHolder(stats(t, addr), key)
	assert.False(t, held)
}

func TestPoolReusesTheConnectionOfACleanlyReleasedStream(t *testing.T) {
	t.Parallel()
	addr, srv := testServer(t, dflockdtest.Config{})
	needServer(t, srv, "connection count")
	c := newClient(t, []string{addr})
	for i := range 5 {
		s, err := c.Lock(context.Background(), testKey(t, fmt.Sprint(i)))
		require.NoError(t, err)
		require.NoError(t, s.Release(context.Background()))
		assert.Len(t, srv.Conns(), 1, "one connection, reused")
	}
}

func TestPoolDropsAConnectionThatSawATimeout(t *testing.T) {
	t.Parallel()
	addr, srv := testServer(t, dflockdtest.Config{})
	needServer(t, srv, "connection ids")
	c := newClient(t, []string{addr})
	key := testKey(t, "k")

	holder, err := c.Lock(context.Background(), key)
	require.NoError(t, err)
	_, err = c.Lock(context.Background(), key, dfstream.WithAcquireTimeout(0))
	require.ErrorIs(t, err, dfstream.ErrTimeout)
	require.NoError(t, holder.Release(context.Background()))
	require.Eventually(t, func() bool { return len(srv.Conns()) == 1 }, time.Second, 10*time.Millisecond,
		"the timed-out connection was closed; the released one is pooled")
}

func TestPoolDoesNotHandOutAConnectionTheServerTimedOut(t *testing.T) {
	t.Parallel()
	addr, srv := testServer(t, dflockdtest.Config{ReadTimeout: 500 * time.Millisecond})
	needServer(t, srv, "short read timeout")
	c := newClient(t, []string{addr}, dfstream.WithServerReadTimeout(500*time.Millisecond))

	s, err := c.Lock(context.Background(), testKey(t, "a"))
	require.NoError(t, err)
	require.NoError(t, s.Release(context.Background()))
	time.Sleep(time.Second) // the server drops the pooled connection
	s, err = c.Lock(context.Background(), testKey(t, "b"))
	require.NoError(t, err, "a stale pooled connection is never used")
	require.NoError(t, s.Release(context.Background()))
}

func TestLockAuthRefusedIsAFailure(t *testing.T) {
	t.Parallel()
	addr, srv := testServer(t, dflockdtest.Config{AuthToken: "sesame"})
	needServer(t, srv, "auth token")

	good := newClient(t, []string{addr}, dfstream.WithAuthToken("sesame"))
	s, err := good.Lock(context.Background(), testKey(t, "k"))
	require.NoError(t, err)
	require.NoError(t, s.Close())

	bad := newClient(t, []string{addr}, dfstream.WithAuthToken("wrong"))
	s, err = bad.StartLock(context.Background(), testKey(t, "k"))
	require.NoError(t, err)
	failed := nextOf[dfstream.Failed](t, s.Events(), 5*time.Second)
	assert.ErrorIs(t, failed.Err, dfstream.ErrAuth)
}

func TestLockUnreachableServerIsAFailure(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())

	c := newClient(t, []string{addr}, dfstream.WithConnectTimeout(time.Second))
	_, err = c.Lock(context.Background(), "k")
	require.Error(t, err)
	assert.ErrorIs(t, err, dfstream.ErrUnreachable)
	var opErr *net.OpError
	assert.ErrorAs(t, err, &opErr, "the cause is kept")
}

func TestLockOverTLS(t *testing.T) {
	t.Parallel()
	serverTLS, clientTLS := testTLS(t)
	addr, srv := testServer(t, dflockdtest.Config{TLS: serverTLS})
	needServer(t, srv, "TLS")
	c := newClient(t, []string{addr}, dfstream.WithTLS(clientTLS))
	s, err := c.Lock(context.Background(), testKey(t, "k"))
	require.NoError(t, err)
	require.NoError(t, s.Release(context.Background()))
}

func TestInvalidInputIsATypedErrorAndNothingIsSent(t *testing.T) {
	t.Parallel()
	ln := newSilentListener(t)
	c := newClient(t, []string{ln.Addr()})
	ctx := context.Background()
	lock := func(key string, opts ...dfstream.StreamOption) func() error {
		return func() error { _, err := c.StartLock(ctx, key, opts...); return err }
	}
	sem := func(key string, limit int, opts ...dfstream.StreamOption) func() error {
		return func() error { _, err := c.StartSemaphore(ctx, key, limit, opts...); return err }
	}
	cases := []struct {
		name  string
		start func() error
	}{
		{"empty key", lock("")},
		{"space in key", lock("a b")},
		{"tab in key", lock("a\tb")},
		{"CR in key", lock("a\rb")},
		{"LF in key", lock("a\nb")},
		{"CRLF command injection", lock("k\r\nr\nk")},
		{"LF command injection", lock("k\n0\nl")},
		{"NUL in key", lock("a\x00b")},
		{"leading space", lock(" k")},
		{"trailing LF", lock("k\n")},
		{"vertical tab", lock("a\vb")},
		{"form feed", lock("a\fb")},
		{"non-breaking space", lock("a\u00a0b")},
		{"257-byte key", lock(strings.Repeat("k", 257))},
		{"257-byte semaphore key", sem(strings.Repeat("k", 257), 2)},
		{"semaphore key with space", sem("a b", 2)},
		{"zero limit", sem("k", 0)},
		{"negative limit", sem("k", -3)},
		{"negative acquire timeout", lock("k", dfstream.WithAcquireTimeout(-time.Second))},
		{"negative lease", lock("k", dfstream.WithLease(-time.Second))},
		{"zero lease", sem("k", 2, dfstream.WithLease(0))},
		{"lease beyond the server's range", lock("k", dfstream.WithLease(1<<63-1))},
		{"acquire timeout beyond the server's range", lock("k", dfstream.WithAcquireTimeout(1<<63-1))},
		{"renew ratio 1", lock("k", dfstream.WithRenewRatio(1))},
		{"renew ratio 0", lock("k", dfstream.WithRenewRatio(0))},
		{"negative safety margin", lock("k", dfstream.WithSafetyMargin(-1))},
		{"reacquire max below min", lock("k", dfstream.WithReacquire(time.Second, time.Millisecond))},
		{"event buffer 0", lock("k", dfstream.WithEventBuffer(0))},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.start()
			require.Error(t, err)
			assert.ErrorIs(t, err, dfstream.ErrInvalidInput)
		})
	}
	select {
	case <-ln.accepted:
		t.Fatal("a connection was opened for invalid input")
	case <-time.After(100 * time.Millisecond):
	}
}

func TestInvalidClientOptionsAreTypedErrors(t *testing.T) {
	t.Parallel()
	for name, opt := range map[string]dfstream.Option{
		"no servers":               dfstream.WithServers(),
		"empty server":             dfstream.WithServers(""),
		"nil sharding":             dfstream.WithSharding(nil),
		"zero connect timeout":     dfstream.WithConnectTimeout(0),
		"negative pool":            dfstream.WithPoolSize(-1),
		"zero server read timeout": dfstream.WithServerReadTimeout(0),
	} {
		_, err := dfstream.New(opt)
		assert.ErrorIs(t, err, dfstream.ErrInvalidInput, name)
	}
}

func TestShardFunctionOutOfRangeIsATypedError(t *testing.T) {
	t.Parallel()
	ln := newSilentListener(t)
	c := newClient(t, []string{ln.Addr()}, dfstream.WithSharding(func(string, int) int { return 7 }))
	_, err := c.StartLock(context.Background(), "k")
	assert.ErrorIs(t, err, dfstream.ErrInvalidInput)
}

func TestErrorsFromTheServerMatchBothTheirSentinelAndErrServer(t *testing.T) {
	t.Parallel()
	addr, srv := testServer(t, dflockdtest.Config{MaxLocks: 1})
	needServer(t, srv, "max locks")
	c := newClient(t, []string{addr})
	s, err := c.Lock(context.Background(), testKey(t, "a"))
	require.NoError(t, err)
	_, err = c.Lock(context.Background(), testKey(t, "b"))
	assert.ErrorIs(t, err, dfstream.ErrMaxLocks)
	assert.ErrorIs(t, err, dfstream.ErrServer)
	assert.False(t, errors.Is(err, dfstream.ErrTimeout))
	require.NoError(t, s.Close())
}

// rawRelease releases key's token from a connection of its own.
func rawRelease(t *testing.T, addr, key, token string) {
	t.Helper()
	require.Equal(t, "ok\n", rawExchange(t, addr, fmt.Sprintf("r\n%s\n%s\n", key, token)))
}

// rawExchange sends req on a connection of its own and returns the reply.
// The connection stays open until the test ends, so that what it acquires
// stays held.
func rawExchange(t *testing.T, addr, req string) string {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	_, err = conn.Write([]byte(req))
	require.NoError(t, err)
	buf := make([]byte, 128)
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
	n, err := conn.Read(buf)
	require.NoError(t, err)
	return string(buf[:n])
}

func TestLockGrantedAfterAWaitLongerThanItsLeaseHoldsAFullLease(t *testing.T) {
	t.Parallel()
	addr, _ := testServer(t, dflockdtest.Config{})
	c := newClient(t, []string{addr})
	key := testKey(t, "k")
	const lease = 2 * time.Second

	holder, err := c.Lock(context.Background(), key, dfstream.WithLease(lease))
	require.NoError(t, err)
	waiter := queuedLock(t, c, context.Background(), key, dfstream.WithLease(lease))
	time.Sleep(lease + 500*time.Millisecond) // queued for longer than a lease
	require.NoError(t, holder.Release(context.Background()))

	acq := nextOf[dfstream.Acquired](t, waiter.Events(), 5*time.Second)
	assert.Greater(t, time.Until(acq.Deadline), lease/2, "the safe deadline counts from the grant, not from the wait")
	time.Sleep(lease)
	assert.Equal(t, dfstream.StateHeld, waiter.State(), "still held a lease later")
	require.NoError(t, waiter.Release(context.Background()))
}

func TestLockWithALargeMarginAndRenewRatioStillRenewsInTime(t *testing.T) {
	t.Parallel()
	addr, _ := testServer(t, dflockdtest.Config{})
	c := newClient(t, []string{addr})
	for name, opts := range map[string][]dfstream.StreamOption{
		"margin half the lease": {dfstream.WithLease(2 * time.Second), dfstream.WithSafetyMargin(time.Second)},
		"renew ratio 0.95":      {dfstream.WithLease(2 * time.Second), dfstream.WithRenewRatio(0.95)},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s, err := c.Lock(context.Background(), testKey(t, "k"), opts...)
			require.NoError(t, err)
			time.Sleep(3 * time.Second)
			assert.Equal(t, dfstream.StateHeld, s.State(), "renewed before the safe deadline")
			g, held := s.Held()
			require.True(t, held)
			assert.True(t, g.Deadline.After(time.Now()), "Held reports the renewed deadline")
			require.NoError(t, s.Release(context.Background()))
		})
	}
}

func TestLockReleaseThatFindsTheLockGoneEndsTheStreamEvenWithReacquire(t *testing.T) {
	t.Parallel()
	addr, _ := testServer(t, dflockdtest.Config{})
	c := newClient(t, []string{addr})
	key := testKey(t, "k")

	s, err := c.StartLock(context.Background(), key, dfstream.WithLease(30*time.Second),
		dfstream.WithReacquire(10*time.Millisecond, 50*time.Millisecond))
	require.NoError(t, err)
	acq := nextOf[dfstream.Acquired](t, s.Events(), 5*time.Second)
	rawRelease(t, addr, key, acq.Token)
	err = s.Release(context.Background())
	assert.ErrorIs(t, err, dfstream.ErrLeaseExpired)
	lost := nextOf[dfstream.Lost](t, s.Events(), time.Second)
	assert.True(t, lost.Final, "the user gave the key up: no re-acquire")
	requireClosed(t, s.Events())
	_, held := lockHolder(stats(t, addr), key)
	assert.False(t, held)
}

func TestLockConnectionDroppedWhileQueuedIsAConnLostFailure(t *testing.T) {
	t.Parallel()
	// The holder's slot outlives its connection: were the key granted to
	// the waiter just before its own connection went, that grant would be
	// reported, then lost.
	addr, srv := testServer(t, dflockdtest.Config{DisableAutoRelease: true})
	needServer(t, srv, "drop connections")
	c := newClient(t, []string{addr})
	key := testKey(t, "k")

	holder, err := c.Lock(context.Background(), key, dfstream.WithReacquire(time.Second, time.Second))
	require.NoError(t, err)
	s := queuedLock(t, c, context.Background(), key)
	srv.DropConnections()
	failed := nextOf[dfstream.Failed](t, s.Events(), 5*time.Second)
	assert.ErrorIs(t, failed.Err, dfstream.ErrConnLost)
	require.NoError(t, holder.Close())
}

func TestEnqueuedReportsTheFirstAnswerEvenAfterTheGrant(t *testing.T) {
	t.Parallel()
	addr, _ := testServer(t, dflockdtest.Config{})
	c := newClient(t, []string{addr})
	key := testKey(t, "k")

	holder, err := c.Lock(context.Background(), key)
	require.NoError(t, err)
	s := queuedLock(t, c, context.Background(), key)
	require.NoError(t, holder.Release(context.Background()))
	_, err = s.Wait(context.Background())
	require.NoError(t, err)
	atOnce, err := s.Enqueued(context.Background())
	require.NoError(t, err)
	assert.False(t, atOnce, "it queued first")
	require.NoError(t, s.Close())
}

func TestClientCloseClosesItsStreamsConcurrently(t *testing.T) {
	t.Parallel()
	addr, srv := testServer(t, dflockdtest.Config{})
	needServer(t, srv, "freeze")
	c, err := dfstream.New(dfstream.WithServers(addr), dfstream.WithConnectTimeout(time.Second))
	require.NoError(t, err)
	for i := range 4 {
		_, err := c.Lock(context.Background(), testKey(t, fmt.Sprint(i)), dfstream.WithLease(time.Minute))
		require.NoError(t, err)
	}
	srv.Freeze() // releases go unanswered until the connect timeout
	defer srv.Thaw()
	start := time.Now()
	require.NoError(t, c.Close())
	assert.Less(t, time.Since(start), 3*time.Second, "one release timeout, not one per stream")
}

func TestLockErrIsSetOnceTheEventChannelIsClosed(t *testing.T) {
	t.Parallel()
	addr, _ := testServer(t, dflockdtest.Config{})
	c := newClient(t, []string{addr})
	key := testKey(t, "k")
	holder, err := c.Lock(context.Background(), key)
	require.NoError(t, err)
	defer func() { require.NoError(t, holder.Close()) }()

	// The window between the channel closing and Err being set, if there
	// is one, is short: many streams give it many chances to show.
	for range 200 {
		s, err := c.StartLock(context.Background(), key, dfstream.WithAcquireTimeout(0))
		require.NoError(t, err)
		for range s.Events() {
		}
		require.ErrorIs(t, s.Err(), dfstream.ErrTimeout)
	}
}

// The server waits whole seconds; a client whose acquire time left is a
// fraction of one, with a connect timeout shorter than the rounding, must
// still wait for the server's "timeout" rather than take its silence for a
// lost connection.
func TestLockAcquireTimeoutOfAFractionOfASecondIsErrTimeoutWithAShortConnectTimeout(t *testing.T) {
	t.Parallel()
	addr, _ := testServer(t, dflockdtest.Config{})
	c := newClient(t, []string{addr}, dfstream.WithConnectTimeout(500*time.Millisecond))
	key := testKey(t, "k")

	holder, err := c.Lock(context.Background(), key)
	require.NoError(t, err)
	_, err = c.Lock(context.Background(), key, dfstream.WithAcquireTimeout(300*time.Millisecond))
	assert.ErrorIs(t, err, dfstream.ErrTimeout)
	assert.NotErrorIs(t, err, dfstream.ErrConnLost)
	require.NoError(t, holder.Close())
}
