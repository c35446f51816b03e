package dfstream_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dfstream/dfstream"
)

// holdCost holds n locks through n streams of one client against a server
// in another process and returns goroutines and heap bytes per held stream.
func holdCost(tb testing.TB, n int) (goroutines, heap float64) {
	tb.Helper()
	addr := serverProcess(tb)
	c, err := dfstream.New(dfstream.WithServers(addr), dfstream.WithPoolSize(0))
	require.NoError(tb, err)
	defer c.Close()

	g0, h0 := snapshot()
	streams := make([]*dfstream.LockStream, n)
	for i := range streams {
		streams[i], err = c.StartLock(context.Background(), fmt.Sprintf("cost/%d", i), dfstream.WithLease(time.Minute))
		require.NoError(tb, err)
	}
	for _, s := range streams {
		_, err := s.Wait(context.Background())
		require.NoError(tb, err)
	}
	// Streams have their connections watched for hang-ups 20 ms after the
	// grant, on short-lived goroutines: measure once that has settled.
	time.Sleep(200 * time.Millisecond)
	g1, h1 := snapshot()
	for _, s := range streams {
		require.Equal(tb, dfstream.StateHeld, s.State())
	}
	goroutines = float64(g1-g0) / float64(n)
	heap = float64(int64(h1)-int64(h0)) / float64(n)
	require.NoError(tb, c.Close())
	return goroutines, heap
}

func snapshot() (goroutines int, heap uint64) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return runtime.NumGoroutine(), ms.HeapAlloc
}

func TestHeldStreamCostsAtMostTwoGoroutinesAnd16KiB(t *testing.T) {
	n := 2000
	if testing.Short() {
		n = 200
	}
	goroutines, heap := holdCost(t, n)
	t.Logf("%d held streams: %.4f goroutines and %.0f heap bytes per stream", n, goroutines, heap)
	assert.LessOrEqual(t, goroutines, 2.0)
	if runtime.GOOS == "linux" {
		// One epoll goroutine watches every connection of the Client.
		assert.LessOrEqual(t, goroutines*float64(n), 1.0, "a held stream runs no goroutine of its own")
	}
	if !raceEnabled {
		assert.LessOrEqual(t, heap, 16384.0)
	}
}

// BenchmarkHeldStreams reports what 10,000 locks held at once through
// 10,000 streams cost the client process (the server runs in another).
func BenchmarkHeldStreams(b *testing.B) {
	const n = 10000
	for range b.N {
		goroutines, heap := holdCost(b, n)
		b.ReportMetric(goroutines, "goroutines/stream")
		b.ReportMetric(heap, "heap-B/stream")
	}
}
