package dfstream

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dfstream/dfstream/dflockdtest"
	"github.com/dfstream/dfstream/wire"
)

// closeRecorder is a TCP connection that records when it was closed.
type closeRecorder struct {
	*net.TCPConn
	at atomic.Int64
}

func (c *closeRecorder) Close() error {
	c.at.CompareAndSwap(0, time.Now().UnixNano())
	return c.TCPConn.Close()
}

// closedAt is when the socket was closed; zero if it was not.
func (c *closeRecorder) closedAt() time.Time {
	if ns := c.at.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// clientWithRecordedConn returns a Client whose pool holds one connection
// to srv that records when it is closed: the next stream takes it.
func clientWithRecordedConn(t *testing.T, srv *dflockdtest.Server, opts ...Option) (*Client, *closeRecorder) {
	t.Helper()
	c, err := New(append([]Option{WithServers(srv.Addr())}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	nc, err := net.Dial("tcp", srv.Addr())
	require.NoError(t, err)
	rec := &closeRecorder{TCPConn: nc.(*net.TCPConn)}
	c.pools[0].put(&lockConn{SyncConn: wire.NewSyncConn(rec, 0)}, c.watcher)
	require.Equal(t, 1, c.pools[0].idleCount())
	return c, rec
}

// lastLost reads events until the channel closes and returns the last Lost.
func lastLost(t *testing.T, events <-chan Event) Lost {
	t.Helper()
	var lost Lost
	for ev := range events {
		if l, ok := ev.(Lost); ok {
			lost = l
		}
	}
	require.False(t, lost.At.IsZero(), "no Lost")
	return lost
}

// Closing a holder's connection makes the server hand the key on at once,
// so the stream must have said Lost before its socket closes, also when
// the exchange that failed was a renewal or a release.
func TestLostIsStampedBeforeTheSocketCloses(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		opts []Option
		lose func(t *testing.T, s *LockStream)
	}{
		{"renewal that reaches the loss instant", nil, func(*testing.T, *LockStream) {}},
		{"release that times out", []Option{WithConnectTimeout(200 * time.Millisecond)}, func(t *testing.T, s *LockStream) {
			require.Error(t, s.Release(context.Background()))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := dflockdtest.New(t, dflockdtest.Config{})
			c, rec := clientWithRecordedConn(t, srv, tc.opts...)
			s, err := c.Lock(context.Background(), "k", WithLease(time.Second))
			require.NoError(t, err)
			srv.Freeze()
			defer srv.Thaw()
			tc.lose(t, s)
			lost := lastLost(t, s.Events())
			<-s.Done() // the socket closes after the final event is out
			closed := rec.closedAt()
			require.False(t, closed.IsZero(), "the socket was not closed")
			assert.False(t, closed.Before(lost.At), "the socket closed %v before Lost was stamped", lost.At.Sub(closed))
		})
	}
}
