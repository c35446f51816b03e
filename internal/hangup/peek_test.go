package hangup_test

import (
	"io"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dfstream/dfstream/internal/hangup"
)

func needPeek(t *testing.T) {
	t.Helper()
	switch runtime.GOOS {
	case "linux", "darwin", "dragonfly", "freebsd", "netbsd", "openbsd":
	default:
		t.Skip("no non-blocking peek on " + runtime.GOOS)
	}
}

// eventually waits for what the peer did to reach the socket.
func eventually(t *testing.T, p *hangup.Peeker, target error) {
	t.Helper()
	require.Eventually(t, func() bool { return p.Peek() != nil }, 5*time.Second, time.Millisecond)
	assert.ErrorIs(t, p.Peek(), target)
}

func TestPeekAtAnIdleConnectionFindsNothing(t *testing.T) {
	t.Parallel()
	needPeek(t)
	client, _ := pair(t)
	assert.NoError(t, hangup.NewPeeker(client).Peek())
}

func TestPeekFindsDataAndLeavesItThere(t *testing.T) {
	t.Parallel()
	needPeek(t)
	client, server := pair(t)
	_, err := server.Write([]byte("x"))
	require.NoError(t, err)
	eventually(t, hangup.NewPeeker(client), hangup.ErrPending)
	var b [2]byte
	n, err := client.Read(b[:])
	require.NoError(t, err)
	assert.Equal(t, "x", string(b[:n]))
}

func TestPeekFindsTheEndOfStream(t *testing.T) {
	t.Parallel()
	needPeek(t)
	client, server := pair(t)
	require.NoError(t, server.Close())
	eventually(t, hangup.NewPeeker(client), io.EOF)
}

func TestPeekAtAClosedConnectionFails(t *testing.T) {
	t.Parallel()
	needPeek(t)
	client, _ := pair(t)
	p := hangup.NewPeeker(client)
	require.NoError(t, client.Close())
	assert.ErrorIs(t, p.Peek(), net.ErrClosed)
}

func TestPeekWithoutASocketCannotLook(t *testing.T) {
	t.Parallel()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	assert.ErrorIs(t, hangup.NewPeeker(a).Peek(), hangup.ErrNoPeek)
}

// The pool peeks at a connection on its way out (get): this is the cost.
func BenchmarkPeek(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(b, err)
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			defer c.Close()
			_, _ = io.Copy(io.Discard, c)
		}
	}()
	client, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(b, err)
	defer client.Close()
	p := hangup.NewPeeker(client)
	b.ReportAllocs()
	for b.Loop() {
		if err := p.Peek(); err != nil {
			b.Fatal(err)
		}
	}
}
