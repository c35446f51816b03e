package dfstream

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dfstream/dfstream/dflockdtest"
	"github.com/dfstream/dfstream/wire"
)

func (p *pool) idleCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle)
}

// The server closes a connection it refused auth, but only about 100 ms
// after its answer: the connection must not wait in the pool meanwhile.
func TestPoolDoesNotKeepAConnectionRefusedAuth(t *testing.T) {
	t.Parallel()
	srv := dflockdtest.New(t, dflockdtest.Config{AuthToken: "sesame"})
	c, err := New(WithServers(srv.Addr()))
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Stats(context.Background(), "")
	require.ErrorIs(t, err, ErrAuth)
	assert.Zero(t, c.pools[0].idleCount())
}

// The portable watch reads the connection itself; the check on the way
// in and out of the pool must not take that for data nobody asked for,
// which under TLS it would see through the TLS layer.
func TestPortablePoolReusesATLSConnection(t *testing.T) {
	t.Parallel()
	cert, err := dflockdtest.NewTestCert()
	require.NoError(t, err)
	srv := dflockdtest.New(t, dflockdtest.Config{TLS: cert.ServerConfig()})
	c := portableClient(t, srv.Addr(), WithTLS(cert.ClientConfig()))
	ids := map[uint64]bool{}
	for range 5 {
		s, err := c.Lock(context.Background(), "k")
		require.NoError(t, err)
		for _, ci := range srv.Conns() {
			ids[ci.ID] = true
		}
		require.NoError(t, s.Release(context.Background()))
	}
	assert.Len(t, ids, 1, "one connection, reused")
}

// The portable watch fires on a byte nobody asked for, which it has read,
// so the peek on the way out of the pool cannot see it; and the callback
// that marks the connection hung up runs later, on a goroutine of its own.
// Until it has run, the pool must still not hand the connection out: the
// callback would then tell the new owner of a hang-up not its own.
func TestPortablePoolDoesNotHandOutAConnectionWhoseWatchFired(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	c := portableClient(t, ln.Addr().String())
	nc, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	peer, err := ln.Accept()
	require.NoError(t, err)
	defer peer.Close()
	lc := &lockConn{SyncConn: wire.NewSyncConn(nc, 0)}
	c.pools[0].put(lc, c.watcher)
	require.Equal(t, 1, c.pools[0].idleCount())

	_, err = peer.Write([]byte("x")) // one byte, which the watch takes
	require.NoError(t, err)
	require.Eventually(t, lc.hungUp.Load, 5*time.Second, time.Millisecond)
	lc.hungUp.Store(false) // as it is until the callback has run

	assert.Nil(t, c.pools[0].get())
	assert.Zero(t, c.pools[0].idleCount())
}
