package dfstream

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dfstream/dfstream/dflockdtest"
)

// A Close that comes as a stream queues again, after the stream last
// looked and before its connection is live, finds nothing to interrupt:
// the connection must then not go live at all, or the enqueue on it would
// run its course, unbounded by the Close, on a silent server.
func TestConnectOfAStreamStoppedMeanwhileFailsWithTheStopCause(t *testing.T) {
	t.Parallel()
	srv := dflockdtest.New(t, dflockdtest.Config{})
	c, err := New(WithServers(srv.Addr()))
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Stats(context.Background(), "") // leaves a pooled connection
	require.NoError(t, err)
	require.Equal(t, 1, c.pools[0].idleCount())

	s := &holdStream{c: c, stop: make(chan struct{}), cause: ErrClosed}
	close(s.stop) // what shut does before its hurry, which found no live connection
	lc, err := s.connect(false)
	require.ErrorIs(t, err, ErrClosed)
	assert.Nil(t, lc)
	assert.Nil(t, s.live, "no connection for a later hurry to miss")
	require.NotNil(t, s.conn, "left for the caller to drop")
	s.dropConn()
}
