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

func TestLockContextBoundsTheAcquireOnly(t *testing.T) {
	t.Parallel()
	addr, _ := testServer(t, dflockdtest.Config{})
	c := newClient(t, []string{addr})
	key := testKey(t, "k")

	ctx, cancel := context.WithCancel(context.Background())
	s, err := c.Lock(ctx, key, dfstream.WithLease(time.Second))
	require.NoError(t, err)
	cancel()
	// Past two renewals (a 1 s lease renews every half second): the lock
	// is still held, and another client cannot take it.
	time.Sleep(1500 * time.Millisecond)
	_, held := s.Held()
	assert.True(t, held, "ending the acquire's context must not release the lock")
	_, err = c.TryLock(context.Background(), key)
	require.ErrorIs(t, err, dfstream.ErrNotAcquired)
	require.NoError(t, s.Release(context.Background()))
	assert.NoError(t, s.Err())
}

func TestLockWhoseContextEndsWhileQueuedFailsAndLeavesNothingQueued(t *testing.T) {
	t.Parallel()
	addr, _ := testServer(t, dflockdtest.Config{})
	c := newClient(t, []string{addr})
	key := testKey(t, "k")
	holder, err := c.Lock(context.Background(), key)
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err = c.Lock(ctx, key)
	require.ErrorIs(t, err, context.DeadlineExceeded)

	// The waiter is gone from the queue: once released, the key is free.
	require.NoError(t, holder.Release(context.Background()))
	require.Eventually(t, func() bool {
		s, err := c.TryLock(context.Background(), key)
		if err != nil {
			return false
		}
		_ = s.Release(context.Background())
		return true
	}, 5*time.Second, 20*time.Millisecond)
}

func TestLockWithACancelledContextSendsNothing(t *testing.T) {
	t.Parallel()
	ln := newSilentListener(t)
	c := newClient(t, []string{ln.Addr()})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := c.Lock(ctx, testKey(t, "k"))
	require.ErrorIs(t, err, context.Canceled)
	assert.Empty(t, ln.accepted, "no connection was made")
}

func TestTryLockOnAHeldKeyIsErrNotAcquired(t *testing.T) {
	t.Parallel()
	addr, _ := testServer(t, dflockdtest.Config{})
	c := newClient(t, []string{addr})
	key := testKey(t, "k")
	holder, err := c.Lock(context.Background(), key)
	require.NoError(t, err)

	_, err = c.TryLock(context.Background(), key)
	require.ErrorIs(t, err, dfstream.ErrNotAcquired)
	assert.ErrorIs(t, err, dfstream.ErrTimeout, "the server's answer stays matchable")
	assert.Contains(t, err.Error(), key)

	st := stats(t, addr)
	waiters, held := lockHolder(st, key)
	assert.True(t, held)
	assert.Zero(t, waiters, "a try leaves nothing queued")
	require.NoError(t, holder.Release(context.Background()))
}

func TestTryLockOnAFreeKeyHoldsIt(t *testing.T) {
	t.Parallel()
	addr, _ := testServer(t, dflockdtest.Config{})
	c := newClient(t, []string{addr})
	s, err := c.TryLock(context.Background(), testKey(t, "k"))
	require.NoError(t, err)
	g, held := s.Held()
	require.True(t, held)
	assert.True(t, g.Deadline.After(time.Now()))
	require.NoError(t, s.Release(context.Background()))
}

func TestTryAcquireSemaphoreWithEverySlotHeldIsErrNotAcquired(t *testing.T) {
	t.Parallel()
	addr, _ := testServer(t, dflockdtest.Config{})
	c := newClient(t, []string{addr})
	key := testKey(t, "k")
	a, err := c.AcquireSemaphore(context.Background(), key, 2)
	require.NoError(t, err)
	b, err := c.TryAcquireSemaphore(context.Background(), key, 2)
	require.NoError(t, err, "a free slot is taken")

	_, err = c.TryAcquireSemaphore(context.Background(), key, 2)
	require.ErrorIs(t, err, dfstream.ErrNotAcquired)
	require.NoError(t, a.Release(context.Background()))
	require.NoError(t, b.Release(context.Background()))
}

func TestAcquireSemaphoreContextBoundsTheAcquireOnly(t *testing.T) {
	t.Parallel()
	addr, _ := testServer(t, dflockdtest.Config{})
	c := newClient(t, []string{addr})
	ctx, cancel := context.WithCancel(context.Background())
	s, err := c.AcquireSemaphore(ctx, testKey(t, "k"), 1, dfstream.WithLease(time.Second))
	require.NoError(t, err)
	cancel()
	time.Sleep(1500 * time.Millisecond)
	_, held := s.Held()
	assert.True(t, held)
	require.NoError(t, s.Release(context.Background()))
}

func TestStartLockContextIsTheStreamsLife(t *testing.T) {
	t.Parallel()
	addr, _ := testServer(t, dflockdtest.Config{})
	c := newClient(t, []string{addr})
	key := testKey(t, "k")
	ctx, cancel := context.WithCancel(context.Background())
	s, err := c.StartLock(ctx, key)
	require.NoError(t, err)
	nextOf[dfstream.Acquired](t, s.Events(), 5*time.Second)

	cancel()
	nextOf[dfstream.Released](t, s.Events(), 5*time.Second)
	assert.ErrorIs(t, s.Err(), context.Canceled)
	other, err := c.TryLock(context.Background(), key)
	require.NoError(t, err, "ending the stream's context released the key")
	require.NoError(t, other.Release(context.Background()))
}
