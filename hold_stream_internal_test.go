package dfstream

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dfstream/dfstream/dflockdtest"
	"github.com/dfstream/dfstream/internal/hangup"
)

// The tests in the root package run on Linux with the epoll watcher; these
// run lock streams on the portable one, which other platforms use: a
// goroutine with a read pending per connection, paused around exchanges.

func portableClient(t *testing.T, addr string, opts ...Option) *Client {
	t.Helper()
	c, err := New(append([]Option{WithServers(addr)}, opts...)...)
	require.NoError(t, err)
	c.watcher = hangup.NewPortable()
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	return c
}

func TestPortableWatcherReportsADroppedConnectionAtOnce(t *testing.T) {
	t.Parallel()
	srv := dflockdtest.New(t, dflockdtest.Config{})
	c := portableClient(t, srv.Addr())
	s, err := c.Lock(context.Background(), "portable/drop", WithLease(time.Minute))
	require.NoError(t, err)

	srv.DropConnections()
	dropped := time.Now()
	for ev := range s.Events() {
		if lost, ok := ev.(Lost); ok {
			assert.ErrorIs(t, lost.Reason, ErrConnLost)
			// Long before the first renewal, 11.5 s away: a bound load
			// cannot break (BenchmarkDropToLost has the figure).
			assert.Less(t, lost.At.Sub(dropped), 5*time.Second)
			return
		}
	}
	t.Fatal("no Lost")
}

func TestPortableWatcherLetsRenewalsAndReleasesThrough(t *testing.T) {
	t.Parallel()
	srv := dflockdtest.New(t, dflockdtest.Config{})
	c := portableClient(t, srv.Addr())
	const key = "portable/renew"

	s, err := c.Lock(context.Background(), key, WithLease(600*time.Millisecond))
	require.NoError(t, err)
	time.Sleep(2 * time.Second)
	renewed := 0
	for len(s.Events()) > 0 {
		ev := <-s.Events()
		_, lost := ev.(Lost)
		require.False(t, lost)
		if _, ok := ev.(Renewed); ok {
			renewed++
		}
	}
	assert.GreaterOrEqual(t, renewed, 3)
	require.NoError(t, s.Release(context.Background()))
	assert.Len(t, c.pools[0].idle, 1, "the released connection is pooled")

	again, err := c.Lock(context.Background(), key)
	require.NoError(t, err, "on the pooled connection, its watch resumed")
	assert.Empty(t, c.pools[0].idle)
	require.NoError(t, again.Release(context.Background()))
}

// An exchange leaves its deadline on the socket; the watch's pending read
// must not inherit it and report a hang-up when it passes.
func TestPortableWatcherIgnoresDeadlinesExchangesLeftBehind(t *testing.T) {
	t.Parallel()
	srv := dflockdtest.New(t, dflockdtest.Config{})
	const connectTimeout = 200 * time.Millisecond // each exchange's deadline
	c := portableClient(t, srv.Addr(), WithConnectTimeout(connectTimeout))

	s, err := c.Lock(context.Background(), "portable/held", WithLease(30*time.Second))
	require.NoError(t, err)
	warm, err := c.Lock(context.Background(), "portable/pooled")
	require.NoError(t, err)
	require.NoError(t, warm.Release(context.Background()))
	time.Sleep(5 * connectTimeout)

	assert.Equal(t, StateHeld, s.State(), "no false Lost")
	require.NoError(t, s.Release(context.Background()))
	require.Len(t, c.pools[0].idle, 2)
	for _, lc := range c.pools[0].idle {
		assert.False(t, lc.hungUp.Load(), "pooled connections are not taken for hung up")
	}
}
