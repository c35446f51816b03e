package dfstream_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dfstream/dfstream"
	"github.com/dfstream/dfstream/dflockdtest"
)

func TestSemaphoreNeverHasMoreThanLimitHolders(t *testing.T) {
	t.Parallel()
	addr, _ := testServer(t, dflockdtest.Config{})
	c := newClient(t, []string{addr})
	key := testKey(t, "s")
	const limit, workers, rounds = 3, 8, 4

	var inside, most atomic.Int32
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range rounds {
				s, err := c.AcquireSemaphore(context.Background(), key, limit, dfstream.WithAcquireTimeout(30*time.Second))
				if !assert.NoError(t, err) {
					return
				}
				n := inside.Add(1)
				for {
					m := most.Load()
					if n <= m || most.CompareAndSwap(m, n) {
						break
					}
				}
				time.Sleep(20 * time.Millisecond)
				inside.Add(-1)
				assert.NoError(t, s.Release(context.Background()))
			}
		}()
	}
	wg.Wait()
	assert.LessOrEqual(t, most.Load(), int32(limit))
	assert.Equal(t, int32(limit), most.Load(), "contention filled every slot")
}

func TestSemaphoreSlotsShowOnTheServer(t *testing.T) {
	t.Parallel()
	addr, _ := testServer(t, dflockdtest.Config{})
	c := newClient(t, []string{addr})
	key := testKey(t, "s")

	var held []*dfstream.SemStream
	for range 2 {
		s, err := c.AcquireSemaphore(context.Background(), key, 2)
		require.NoError(t, err)
		assert.Equal(t, 2, s.Limit())
		held = append(held, s)
	}
	queued, err := c.StartSemaphore(context.Background(), key, 2)
	require.NoError(t, err)
	nextOf[dfstream.Queued](t, queued.Events(), time.Second)

	var found bool
	for _, sem := range stats(t, addr).Semaphores {
		if sem.Key == key {
			found = true
			assert.Equal(t, 2, sem.Limit)
			assert.Equal(t, 2, sem.Holders)
			assert.Equal(t, 1, sem.Waiters)
		}
	}
	assert.True(t, found, "semaphore listed in stats")
	require.NoError(t, held[0].Release(context.Background()))
	_, err = queued.Wait(context.Background())
	require.NoError(t, err)
	require.NoError(t, queued.Close())
	require.NoError(t, held[1].Close())
}

func TestSemaphoreLimitMismatchIsATypedFailure(t *testing.T) {
	t.Parallel()
	addr, _ := testServer(t, dflockdtest.Config{})
	c := newClient(t, []string{addr})
	key := testKey(t, "s")

	s, err := c.AcquireSemaphore(context.Background(), key, 3)
	require.NoError(t, err)
	other, err := c.StartSemaphore(context.Background(), key, 2)
	require.NoError(t, err)
	failed := nextOf[dfstream.Failed](t, other.Events(), 5*time.Second)
	assert.ErrorIs(t, failed.Err, dfstream.ErrLimitMismatch)
	assert.ErrorIs(t, failed.Err, dfstream.ErrServer)
	assert.ErrorIs(t, other.Err(), dfstream.ErrLimitMismatch)

	_, err = c.Lock(context.Background(), key)
	assert.ErrorIs(t, err, dfstream.ErrLimitMismatch, "a lock is a semaphore of limit 1")
	require.NoError(t, s.Close())
}

func TestSemaphoreSlotIsLostWhenTheConnectionDrops(t *testing.T) {
	t.Parallel()
	c, srv := longRenewalClient(t)

	s, err := c.AcquireSemaphore(context.Background(), testKey(t, "s"), 2, longRenewal()...)
	require.NoError(t, err)
	nextOf[dfstream.Acquired](t, s.Events(), time.Second)
	dropped := time.Now()
	srv.DropConnections()
	lost := nextOf[dfstream.Lost](t, s.Events(), 2*dropBound)
	assert.ErrorIs(t, lost.Reason, dfstream.ErrConnLost)
	assert.Less(t, lost.At.Sub(dropped), dropBound, "noticed at once, not at the next renewal")
}
