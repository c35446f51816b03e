package wire_test

import (
	"bufio"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dfstream/dfstream/wire"
)

// peer is the far end of a loopback TCP connection, scripted by the test:
// it reads raw request lines and writes raw reply lines, so the Conn is
// tested at the byte level without a server.
type peer struct {
	nc net.Conn
	r  *bufio.Reader
	wg sync.WaitGroup
}

// listen returns a loopback listener closed at cleanup.
func listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	return ln
}

// pair connects a Conn to a scripted peer. Cleanup closes both and waits
// for the peer's script goroutines.
func pair(t testing.TB, opts ...wire.ConnOption) (*wire.Conn, *peer) {
	t.Helper()
	ln := listen(t)
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	pc, ok := <-accepted
	require.True(t, ok, "accept failed")
	c := wire.NewConn(nc, opts...)
	p := &peer{nc: pc, r: bufio.NewReader(pc)}
	t.Cleanup(func() {
		// Closing the Conn first lets every script see EOF and finish
		// before its own end is closed under it.
		_ = c.Close()
		p.wg.Wait()
		_ = pc.Close()
	})
	return c, p
}

// run runs a peer script on its own goroutine; cleanup waits for it. The
// script reports failures by returning an error, since require must not be
// used off the test goroutine.
func (p *peer) run(t testing.TB, script func() error) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		if err := script(); err != nil {
			t.Errorf("peer: %v", err)
		}
	}()
}

// readRequest reads one three-line request.
func (p *peer) readRequest() ([3]string, error) {
	var req [3]string
	for i := range req {
		l, err := p.r.ReadString('\n')
		if err != nil {
			return req, err
		}
		req[i] = strings.TrimSuffix(l, "\n")
	}
	return req, nil
}

func (p *peer) write(s string) error {
	_, err := io.WriteString(p.nc, s)
	return err
}

// expectEOF waits for the Conn's side to close.
func (p *peer) expectEOF() error {
	_ = p.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := io.Copy(io.Discard, p.r)
	return err
}

// echo answers every request with "ok <key>" until the Conn closes.
func (p *peer) echo() error {
	for {
		req, err := p.readRequest()
		if err != nil {
			return nil
		}
		if err := p.write("ok " + req[1] + "\n"); err != nil {
			return nil
		}
	}
}

func waitDone(t *testing.T, c *wire.Conn) {
	t.Helper()
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Conn did not stop")
	}
}
