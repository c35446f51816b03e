package faultproxy_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/dfstream/dfstream/internal/faultproxy"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// upstream is a real TCP server that hands each accepted connection to the
// test, which plays the server's part by hand.
type upstream struct {
	ln    net.Listener
	conns chan *net.TCPConn
}

func newUpstream(t *testing.T) *upstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	u := &upstream{ln: ln, conns: make(chan *net.TCPConn, 16)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u.conns <- c.(*net.TCPConn)
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
		close(u.conns)
		for c := range u.conns {
			_ = c.Close()
		}
	})
	return u
}

// connect dials the proxy and returns the client's and the server's side
// of the proxied connection.
func connect(t *testing.T, p *faultproxy.Proxy, u *upstream) (client, server *net.TCPConn) {
	t.Helper()
	c, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	select {
	case s := <-u.conns:
		t.Cleanup(func() { _ = s.Close() })
		return c.(*net.TCPConn), s
	case <-time.After(5 * time.Second):
		require.FailNow(t, "the proxy did not connect upstream")
		return nil, nil
	}
}

func readN(t *testing.T, c net.Conn, n int, timeout time.Duration) []byte {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(timeout)))
	buf := make([]byte, n)
	_, err := io.ReadFull(c, buf)
	require.NoError(t, err)
	return buf
}

func write(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	_, err := c.Write([]byte(msg))
	require.NoError(t, err)
}

// requireArrives writes msg on from and asserts it comes out of to.
func requireArrives(t *testing.T, from, to net.Conn, msg string) {
	t.Helper()
	write(t, from, msg)
	assert.Equal(t, msg, string(readN(t, to, len(msg), 5*time.Second)))
}

// requireSilent asserts that nothing arrives on c for d.
func requireSilent(t *testing.T, c net.Conn, d time.Duration) {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(d)))
	n, err := c.Read(make([]byte, 1))
	require.Zero(t, n, "bytes arrived")
	require.ErrorIs(t, err, os.ErrDeadlineExceeded)
}

// requireReset asserts that c was reset, not closed plainly.
func requireReset(t *testing.T, c net.Conn) {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
	_, err := io.ReadAll(c)
	require.ErrorIs(t, err, syscall.ECONNRESET)
}

func TestForwardsBothWaysAndHalfCloses(t *testing.T) {
	t.Parallel()
	p, u := start(t)
	c, s := connect(t, p, u)

	requireArrives(t, c, s, "ping")

	// The client stops writing; the server sees the end and can still answer.
	require.NoError(t, c.CloseWrite())
	require.NoError(t, s.SetReadDeadline(time.Now().Add(5*time.Second)))
	n, err := s.Read(make([]byte, 1))
	require.Zero(t, n)
	require.ErrorIs(t, err, io.EOF)
	requireArrives(t, s, c, "pong")
}

func TestLatencyDelaysEveryChunkOnItsPath(t *testing.T) {
	t.Parallel()
	p, u := start(t)
	c, s := connect(t, p, u)
	const lat = 300 * time.Millisecond
	p.SetLatency(faultproxy.ToClient, lat)

	// The other path is untouched.
	write(t, c, "a")
	readN(t, s, 1, 5*time.Second)

	begin := time.Now()
	for _, b := range []string{"1", "2", "3"} {
		write(t, s, b)
	}
	got := readN(t, c, 3, 5*time.Second)
	assert.Equal(t, "123", string(got), "in order")
	assert.GreaterOrEqual(t, time.Since(begin), lat)

	// Clearing delivers what is held at once.
	write(t, s, "x")
	p.SetLatency(faultproxy.ToClient, 0)
	begin = time.Now()
	readN(t, c, 1, 5*time.Second)
	assert.Less(t, time.Since(begin), lat, "held bytes not released on clear")
}

func TestLatencyCanOutlastASecond(t *testing.T) {
	t.Parallel()
	p, u := start(t)
	c, s := connect(t, p, u)
	p.SetLatency(faultproxy.ToClient, 1500*time.Millisecond)
	begin := time.Now()
	write(t, s, "late")
	requireSilent(t, c, time.Second)
	assert.Equal(t, "late", string(readN(t, c, 4, 5*time.Second)))
	assert.GreaterOrEqual(t, time.Since(begin), 1500*time.Millisecond)
}

func TestPauseHoldsBytesAndFINThenResumeDeliversThemInOrder(t *testing.T) {
	t.Parallel()
	p, u := start(t)
	c, s := connect(t, p, u)
	p.Pause(faultproxy.ToClient)

	write(t, s, "one,")
	write(t, s, "two")
	require.NoError(t, s.CloseWrite())
	requireSilent(t, c, 300*time.Millisecond)

	// The paused path does not stop the other one.
	requireArrives(t, c, s, "up")

	p.Resume()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
	got, err := io.ReadAll(c)
	require.NoError(t, err, "held bytes end with a plain FIN")
	assert.Equal(t, "one,two", string(got))
}

func TestPauseBothWaysIsABlackHole(t *testing.T) {
	t.Parallel()
	p, u := start(t)
	c, s := connect(t, p, u)
	p.Pause(faultproxy.BothWays)
	write(t, c, "q")
	requireSilent(t, s, 300*time.Millisecond)
	p.Clear()
	assert.Equal(t, "q", string(readN(t, s, 1, 5*time.Second)))
}

func TestResetAndResumeResetsHeldConnections(t *testing.T) {
	t.Parallel()
	p, u := start(t)
	c, s := connect(t, p, u)
	p.Pause(faultproxy.BothWays)
	write(t, s, "held")
	requireSilent(t, c, 200*time.Millisecond)

	p.ResetAndResume()
	requireReset(t, c)
	requireReset(t, s)

	// New connections flow again.
	c2, s2 := connect(t, p, u)
	requireArrives(t, s2, c2, "ok")
}

func TestResetResetsEveryOpenConnection(t *testing.T) {
	t.Parallel()
	p, u := start(t)
	c1, s1 := connect(t, p, u)
	c2, s2 := connect(t, p, u)
	// The upstream may accept a link a moment before the proxy counts it.
	require.Eventually(t, func() bool { return p.Conns() == 2 }, 5*time.Second, time.Millisecond)

	p.Reset()
	for _, c := range []net.Conn{c1, s1, c2, s2} {
		requireReset(t, c)
	}
	assert.Zero(t, p.Conns())
}

func TestBandwidthThrottlesItsPath(t *testing.T) {
	t.Parallel()
	p, u := start(t)
	c, s := connect(t, p, u)
	const rate = 10_000 // bytes per second
	p.SetBandwidth(faultproxy.ToClient, rate)

	data := bytes.Repeat([]byte("z"), rate/2)
	begin := time.Now()
	_, err := s.Write(data)
	require.NoError(t, err)
	got := readN(t, c, len(data), 10*time.Second)
	assert.Equal(t, data, got)
	// Half a second's worth at the rate cannot arrive much sooner.
	assert.GreaterOrEqual(t, time.Since(begin), 400*time.Millisecond)
}

func TestPeerResetReachesTheOtherPeer(t *testing.T) {
	t.Parallel()
	p, u := start(t)
	c, s := connect(t, p, u)
	require.NoError(t, s.SetLinger(0))
	require.NoError(t, s.Close())
	require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
	_, err := io.ReadAll(c)
	require.True(t, err == nil || errors.Is(err, syscall.ECONNRESET), "got %v", err)
}

func TestCloseLeavesNoGoroutine(t *testing.T) {
	u := newUpstream(t)
	before := goleak.IgnoreCurrent()
	p, err := faultproxy.Start(u.ln.Addr().String())
	require.NoError(t, err)
	c, s := connect(t, p, u)
	p.SetLatency(faultproxy.BothWays, time.Hour)
	p.Pause(faultproxy.ToServer)
	write(t, c, "held")
	write(t, s, "late")

	require.NoError(t, p.Close())
	require.NoError(t, p.Close(), "idempotent")
	requireReset(t, c)
	goleak.VerifyNone(t, before)
}

// start returns a proxy in front of a fresh upstream.
func start(t *testing.T) (*faultproxy.Proxy, *upstream) {
	t.Helper()
	u := newUpstream(t)
	return faultproxy.New(t, u.ln.Addr().String()), u
}
