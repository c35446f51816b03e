package dfstream

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dfstream/dfstream/dflockdtest"
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
		s, err := c.AcquireLock(context.Background(), "k")
		require.NoError(t, err)
		for _, ci := range srv.Conns() {
			ids[ci.ID] = true
		}
		require.NoError(t, s.Release(context.Background()))
	}
	assert.Len(t, ids, 1, "one connection, reused")
}
