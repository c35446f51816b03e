package wire_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dfstream/dfstream/wire"
)

// Tests of what a pool relies on: ErrNoReply says when a request may be
// sent again, CheckIdle when a connection may be reused.

func TestSyncConnEndedBeforeAnyReplyByteIsErrNoReply(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		script func(p *peer, closed chan<- struct{}) error
	}{
		{"closed after the request", func(p *peer, _ chan<- struct{}) error {
			_, err := p.readRequest()
			return err // the server closes the connection on return
		}},
		{"reset after the request", func(p *peer, _ chan<- struct{}) error {
			if _, err := p.readRequest(); err != nil {
				return err
			}
			return p.nc.(*net.TCPConn).SetLinger(0)
		}},
		{"closed before the request", func(p *peer, closed chan<- struct{}) error {
			_ = p.nc.Close()
			close(closed)
			return nil
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			closed := make(chan struct{})
			c := syncConn(t, func(p *peer) error { return tc.script(p, closed) })
			if tc.name == "closed before the request" {
				<-closed
			}
			_, err := c.Exchange(lreq("k"), soon())
			assert.ErrorIs(t, err, wire.ErrNoReply)
			assert.ErrorIs(t, err, wire.ErrClosed)
		})
	}
}

func TestSyncConnFailureThatIsNotErrNoReply(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		script   func(p *peer) error
		exchange func(c *wire.SyncConn) error
	}{
		{"part of the reply arrived", func(p *peer) error {
			if _, err := p.readRequest(); err != nil {
				return err
			}
			return p.write("ok")
		}, nil},
		{"a deadline", silent, func(c *wire.SyncConn) error {
			_, err := c.Exchange(lreq("k"), time.Now().Add(50*time.Millisecond))
			return err
		}},
		{"its context ended", silent, func(c *wire.SyncConn) error {
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			_, err := c.ExchangeContext(ctx, lreq("k"), soon())
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := syncConn(t, tc.script)
			var err error
			if tc.exchange != nil {
				err = tc.exchange(c)
			} else {
				_, err = c.Exchange(lreq("k"), soon())
			}
			require.ErrorIs(t, err, wire.ErrClosed)
			assert.NotErrorIs(t, err, wire.ErrNoReply, "the server may have acted on it")
		})
	}
}

func TestSyncConnCheckIdleAfterACleanExchangeKeepsIt(t *testing.T) {
	t.Parallel()
	c := syncConn(t, (*peer).echo)
	_, err := c.Exchange(lreq("a"), soon())
	require.NoError(t, err)
	require.NoError(t, c.CheckIdle())
	line, err := c.Exchange(lreq("b"), soon())
	require.NoError(t, err)
	assert.Equal(t, "ok b", line)
}

// answerThen answers the first request, then runs after.
func answerThen(after func(p *peer) error) func(p *peer) error {
	return func(p *peer) error {
		req, err := p.readRequest()
		if err != nil {
			return err
		}
		if err := p.write("ok " + req[1] + "\n"); err != nil {
			return err
		}
		return after(p)
	}
}

func TestSyncConnCheckIdleStopsAConnectionWithSomethingToRead(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		script func(p *peer) error
		target error
	}{
		{"a line read with the reply", func(p *peer) error {
			if _, err := p.readRequest(); err != nil {
				return err
			}
			return p.write("ok k\nok extra\n")
		}, wire.ErrProtocol},
		{"a line after the reply", answerThen(func(p *peer) error {
			if err := p.write("ok extra\n"); err != nil {
				return err
			}
			return p.expectEOF()
		}), wire.ErrProtocol},
		{"the peer closed", answerThen(func(*peer) error { return nil }), io.EOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := syncConn(t, tc.script)
			_, err := c.Exchange(lreq("k"), soon())
			require.NoError(t, err)
			// What the peer sent after the reply arrives soon, not at once.
			require.Eventually(t, func() bool { return c.CheckIdle() != nil }, 5*time.Second, time.Millisecond)
			assert.ErrorIs(t, c.CheckIdle(), tc.target)
			assert.ErrorIs(t, c.Err(), wire.ErrClosed, "never used again")
		})
	}
}

// batchConn holds what is written to it until flush, so that two TLS
// records written one after the other reach the peer in one segment.
type batchConn struct {
	net.Conn
	mu       sync.Mutex
	batching bool
	buf      bytes.Buffer
}

func (b *batchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.batching {
		return b.buf.Write(p)
	}
	return b.Conn.Write(p)
}

func (b *batchConn) flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.batching = false
	_, err := b.Conn.Write(b.buf.Bytes())
	return err
}

// Under TLS, an extra line in a record of its own that arrived with the
// reply's record is held by the TLS layer: neither the SyncConn's buffer
// nor the socket has it. CheckIdle finds it all the same.
func TestSyncConnCheckIdleFindsALineTheTLSLayerHolds(t *testing.T) {
	t.Parallel()
	cert, pool := selfSigned(t)
	ln := listen(t)
	done := make(chan error, 1)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer nc.Close()
		bc := &batchConn{Conn: nc}
		tc := tls.Server(bc, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
		p := &peer{nc: tc, r: bufio.NewReader(tc)}
		if _, err := p.readRequest(); err != nil {
			done <- err
			return
		}
		bc.mu.Lock()
		bc.batching = true
		bc.mu.Unlock()
		for _, line := range []string{"ok k\n", "ok extra\n"} {
			if err := p.write(line); err != nil {
				done <- err
				return
			}
		}
		if err := bc.flush(); err != nil {
			done <- err
			return
		}
		done <- p.expectEOF()
	}()
	d := &wire.Dialer{TLS: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, Timeout: 5 * time.Second}
	c, err := d.DialSync(t.Context(), ln.Addr().String())
	require.NoError(t, err)
	line, err := c.Exchange(lreq("k"), soon())
	require.NoError(t, err)
	require.Equal(t, "ok k", line)
	assert.ErrorIs(t, c.CheckIdle(), wire.ErrProtocol)
	require.NoError(t, c.Close())
	require.NoError(t, <-done)
}

// TLS 1.3 session tickets reach the socket after the handshake; they are
// not data, and a connection whose only traffic they were stays in use.
func TestSyncConnCheckIdleOverTLSKeepsACleanConnection(t *testing.T) {
	t.Parallel()
	cert, pool := selfSigned(t)
	addr := server(t, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}, (*peer).echo)
	d := &wire.Dialer{TLS: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}, Timeout: 5 * time.Second}
	c, err := d.DialSync(t.Context(), addr)
	require.NoError(t, err)
	defer c.Close()
	for _, k := range []string{"a", "b"} {
		line, err := c.Exchange(lreq(k), soon())
		require.NoError(t, err)
		assert.Equal(t, "ok "+k, line)
		require.NoError(t, c.CheckIdle())
	}
}
