//go:build !race

package wire_test

import (
	"net"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dfstream/dfstream/wire"
)

// memInUse is the process's live heap plus goroutine stacks after a GC.
func memInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc + ms.StackInuse
}

// TestConnMemory checks the budget of 10,000 held connections in one process
// at under 16 KiB each: an idle Conn (its reader goroutine, read buffer and
// bookkeeping) together with its net.Conn. The peers' ends live in this
// process too and are counted, so the figure is an upper bound. Not run
// under -race, which inflates memory.
func TestConnMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("opens many sockets")
	}
	// Not parallel: it measures the whole process.
	const n = 1000
	ln := listen(t)
	accepted := make(chan net.Conn, n)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()

	before := memInUse()
	clients := make([]net.Conn, 0, n)
	servers := make([]net.Conn, 0, n)
	t.Cleanup(func() {
		for _, s := range servers {
			_ = s.Close()
		}
	})
	for range n {
		c, err := net.Dial("tcp", ln.Addr().String())
		require.NoError(t, err)
		clients = append(clients, c)
		servers = append(servers, <-accepted)
	}
	sockets := memInUse()

	var pushes atomic.Int64
	conns := make([]*wire.Conn, 0, n)
	for _, c := range clients {
		conns = append(conns, wire.NewConn(c, wire.WithPushHandler(func(wire.Push) { pushes.Add(1) })))
	}
	// Run every reader through a line once, so its stack is what a used
	// Conn keeps, then let it go back to its pending read.
	for _, s := range servers {
		_, err := s.Write([]byte("sig a.b some payload\n"))
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool { return pushes.Load() == n }, 10*time.Second, time.Millisecond)
	time.Sleep(50 * time.Millisecond)
	held := memInUse()

	perSocketPair := float64(sockets-before) / n
	perConn := float64(held-sockets) / n
	total := perSocketPair + perConn
	t.Logf("per connection: wire.Conn %.0f B, both socket ends %.0f B, total %.0f B", perConn, perSocketPair, total)
	assert.Less(t, total, 16*1024.0)

	for _, c := range conns {
		require.NoError(t, c.Close())
	}
	runtime.KeepAlive(servers)
}
