package dfstream_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dfstream/dfstream"
	"github.com/dfstream/dfstream/dflockdtest"
)

// These tests pin down when the blocking calls of a lock stream return: Lock
// after the server answered the enqueue, and Lock, Release and Close within
// the connect timeout or the caller's context when the server goes silent.

// pending returns the event already in the channel, or nil.
func pending(events <-chan dfstream.Event) dfstream.Event {
	select {
	case ev := <-events:
		return ev
	default:
		return nil
	}
}

func TestLockReturnsHoldingAFreeKey(t *testing.T) {
	t.Parallel()
	addr, _ := testServer(t, dflockdtest.Config{})
	c := newClient(t, []string{addr})

	s, err := c.StartLock(context.Background(), testKey(t, "k"))
	require.NoError(t, err)
	assert.Equal(t, dfstream.StateHeld, s.State())
	assert.IsType(t, dfstream.Acquired{}, pending(s.Events()), "Acquired is there when Lock returns")
	require.NoError(t, s.Close())
}

func TestLockReturnsQueuedForAHeldKey(t *testing.T) {
	t.Parallel()
	addr, _ := testServer(t, dflockdtest.Config{})
	c := newClient(t, []string{addr})
	key := testKey(t, "k")

	holder, err := c.Lock(context.Background(), key)
	require.NoError(t, err)
	s, err := c.StartLock(context.Background(), key)
	require.NoError(t, err)
	assert.Equal(t, dfstream.StateQueued, s.State())
	assert.IsType(t, dfstream.Queued{}, pending(s.Events()), "Queued is there when Lock returns")
	require.NoError(t, holder.Release(context.Background()))
	_, err = s.Wait(context.Background())
	require.NoError(t, err)
	require.NoError(t, s.Close())
}

// frozen returns a client of a server that has just gone silent.
func frozen(t *testing.T, opts ...dfstream.Option) *dfstream.Client {
	t.Helper()
	addr, srv := testServer(t, dflockdtest.Config{})
	needServer(t, srv, "freeze")
	c := newClient(t, []string{addr}, opts...)
	srv.Freeze()
	t.Cleanup(srv.Thaw)
	return c
}

func TestLockOnASilentServerFailsWithinTheConnectTimeout(t *testing.T) {
	t.Parallel()
	c := frozen(t, dfstream.WithConnectTimeout(300*time.Millisecond))

	start := time.Now()
	s, err := c.StartLock(context.Background(), testKey(t, "k"))
	require.NoError(t, err)
	assert.Less(t, time.Since(start), 3*time.Second)
	failed := nextOf[dfstream.Failed](t, s.Events(), time.Second)
	assert.ErrorIs(t, failed.Err, dfstream.ErrConnLost)
	assert.ErrorIs(t, s.Err(), dfstream.ErrConnLost)
}

func TestLockOnASilentServerEndsWithItsContext(t *testing.T) {
	t.Parallel()
	c := frozen(t) // the connect timeout is 10 s
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	time.AfterFunc(100*time.Millisecond, cancel)

	start := time.Now()
	s, err := c.StartLock(ctx, testKey(t, "k"))
	require.NoError(t, err)
	assert.Less(t, time.Since(start), 3*time.Second)
	failed := nextOf[dfstream.Failed](t, s.Events(), time.Second)
	assert.ErrorIs(t, failed.Err, context.Canceled)
	assert.ErrorIs(t, s.Err(), context.Canceled)
}

// heldThenFrozen holds a lock with a long lease, then freezes the server;
// with renewing, renewals go out every second and one is in flight on
// return, else none is due for seconds.
func heldThenFrozen(t *testing.T, connectTimeout time.Duration, renewing bool) *dfstream.LockStream {
	t.Helper()
	addr, srv := testServer(t, dflockdtest.Config{})
	needServer(t, srv, "freeze")
	c := newClient(t, []string{addr}, dfstream.WithConnectTimeout(connectTimeout))
	opts := []dfstream.StreamOption{dfstream.WithLease(20 * time.Second)} // safe deadline ~18 s away
	if renewing {
		opts = append(opts, dfstream.WithRenewRatio(0.05))
	}
	s, err := c.Lock(context.Background(), testKey(t, "k"), opts...)
	require.NoError(t, err)
	srv.Freeze()
	t.Cleanup(srv.Thaw)
	if renewing {
		time.Sleep(1500 * time.Millisecond)
	}
	return s
}

func TestCloseDuringARenewalToASilentServerTakesAtMostTheConnectTimeout(t *testing.T) {
	t.Parallel()
	s := heldThenFrozen(t, 300*time.Millisecond, true)

	start := time.Now()
	require.NoError(t, s.Close())
	assert.Less(t, time.Since(start), 3*time.Second, "not until the safe deadline")
	var last dfstream.Event
	for ev := range s.Events() {
		last = ev
	}
	lost, ok := last.(dfstream.Lost)
	require.True(t, ok, "the release could not be confirmed: %T", last)
	assert.True(t, lost.Final)
	assert.ErrorIs(t, lost.Reason, dfstream.ErrConnLost)
}

func TestReleaseToASilentServerEndsWithItsContext(t *testing.T) {
	t.Parallel()
	s := heldThenFrozen(t, 10*time.Second, false)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()

	start := time.Now()
	err := s.Release(ctx)
	assert.Less(t, time.Since(start), 3*time.Second)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.ErrorIs(t, err, dfstream.ErrConnLost)
	<-s.Done()
	assert.ErrorIs(t, s.Err(), context.DeadlineExceeded)
}

func TestReleaseDuringARenewalThatLosesTheKeyUnderReacquireReturnsNotHeld(t *testing.T) {
	t.Parallel()
	addr, srv := testServer(t, dflockdtest.Config{})
	needServer(t, srv, "freeze")
	c := newClient(t, []string{addr}, dfstream.WithConnectTimeout(300*time.Millisecond))
	s, err := c.Lock(context.Background(), testKey(t, "k"), dfstream.WithLease(20*time.Second),
		dfstream.WithRenewRatio(0.05), dfstream.WithReacquire(time.Second, time.Second))
	require.NoError(t, err)
	srv.Freeze()
	t.Cleanup(srv.Thaw)
	time.Sleep(1500 * time.Millisecond) // a renewal is in flight

	start := time.Now()
	err = s.Release(context.Background())
	assert.ErrorIs(t, err, dfstream.ErrNotHeld, "the renewal it waited for lost the key")
	assert.Less(t, time.Since(start), 3*time.Second, "not until the stream holds the key again")
}

func TestReleaseToASilentServerIsALossNoLaterThanTheSafeDeadline(t *testing.T) {
	t.Parallel()
	addr, srv := testServer(t, dflockdtest.Config{})
	needServer(t, srv, "freeze")
	c := newClient(t, []string{addr}) // the connect timeout, 10 s, is far beyond the deadline
	s, err := c.Lock(context.Background(), testKey(t, "k"), dfstream.WithLease(2*time.Second))
	require.NoError(t, err)
	acq := nextOf[dfstream.Acquired](t, s.Events(), time.Second)
	srv.Freeze()
	t.Cleanup(srv.Thaw)

	err = s.Release(context.Background())
	assert.ErrorIs(t, err, dfstream.ErrDeadlinePassed)
	lost := nextOf[dfstream.Lost](t, s.Events(), time.Second)
	assert.True(t, lost.Final)
	assert.False(t, lost.At.After(acq.Deadline), "Lost at %v, safe deadline %v", lost.At, acq.Deadline)
}
