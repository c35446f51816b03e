package dfstream_test

import (
	"context"
	"crypto/tls"
	"net"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dfstream/dfstream"
	"github.com/dfstream/dfstream/dflockdtest"
)

// testServer returns the address of the server a test runs against: a
// fresh dflockdtest server configured by cfg, or the external server named
// by DFLOCKD_TEST_ADDR, in which case srv is nil (see needServer).
func testServer(t *testing.T, cfg dflockdtest.Config) (addr string, srv *dflockdtest.Server) {
	t.Helper()
	if ext := os.Getenv("DFLOCKD_TEST_ADDR"); ext != "" {
		return ext, nil
	}
	srv = dflockdtest.New(t, cfg)
	return srv.Addr(), srv
}

// needServer skips a test that needs the embedded server's settings or
// fault helpers when it runs against an external server.
func needServer(t *testing.T, srv *dflockdtest.Server, why string) {
	t.Helper()
	if srv == nil {
		t.Skipf("needs the embedded server (%s); DFLOCKD_TEST_ADDR is set", why)
	}
}

// signalsEra states the generation of the servers a test fakes (raw,
// scripted, silent, or behind a lagging proxy): they speak the signals era
// but cannot, or must not, answer the Client's probe of it.
var signalsEra = dfstream.WithGeneration(dfstream.GenSignals)

// newClient returns a Client for addr, closed when the test ends. It adds
// the auth token of an external server when one is configured.
func newClient(t *testing.T, addrs []string, opts ...dfstream.Option) *dfstream.Client {
	t.Helper()
	all := []dfstream.Option{dfstream.WithServers(addrs...)}
	if tok := os.Getenv("DFLOCKD_TEST_AUTH_TOKEN"); tok != "" {
		all = append(all, dfstream.WithAuthToken(tok))
	}
	c, err := dfstream.New(append(all, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	return c
}

// testKey returns a key unique to the test, so tests can share a server.
func testKey(t *testing.T, suffix string) string {
	return t.Name() + "/" + suffix
}

// next returns the stream's next event, failing the test after timeout.
func next(t *testing.T, events <-chan dfstream.Event, timeout time.Duration) dfstream.Event {
	t.Helper()
	select {
	case ev, ok := <-events:
		require.True(t, ok, "event channel closed")
		return ev
	case <-time.After(timeout):
		require.FailNow(t, "no event", "waited %v", timeout)
		return nil
	}
}

// nextOf returns the next event, which must be of type E.
func nextOf[E dfstream.Event](t *testing.T, events <-chan dfstream.Event, timeout time.Duration) E {
	t.Helper()
	ev := next(t, events, timeout)
	got, ok := ev.(E)
	require.True(t, ok, "want %T, got %T %+v", *new(E), ev, ev)
	return got
}

// requireClosed asserts that the channel is closed, with nothing left in it.
func requireClosed(t *testing.T, events <-chan dfstream.Event) {
	t.Helper()
	select {
	case ev, ok := <-events:
		require.False(t, ok, "unexpected event %T %+v", ev, ev)
	case <-time.After(5 * time.Second):
		require.FailNow(t, "event channel not closed")
	}
}

// stats fetches the server's stats through a client of its own.
func stats(t *testing.T, addr string) *dfstream.Stats {
	t.Helper()
	c := newClient(t, []string{addr}, dfstream.WithPoolSize(0))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := c.Stats(ctx, addr)
	require.NoError(t, err)
	require.NoError(t, c.Close())
	return st
}

// lockHolder returns the stats entry of a held lock, or false.
func lockHolder(st *dfstream.Stats, key string) (waiters int, held bool) {
	for _, l := range st.Locks {
		if l.Key == key {
			return l.Waiters, l.OwnerConnID != 0
		}
	}
	return 0, false
}

// silentListener accepts connections and records whether any byte arrived:
// the stand-in for "the server received nothing" in input-validation tests.
type silentListener struct {
	ln       net.Listener
	accepted chan net.Conn
}

func newSilentListener(t *testing.T) *silentListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	l := &silentListener{ln: ln, accepted: make(chan net.Conn, 64)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			l.accepted <- c
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
		close(l.accepted)
		for c := range l.accepted {
			_ = c.Close()
		}
	})
	return l
}

func (l *silentListener) Addr() string { return l.ln.Addr().String() }

// testTLS returns a server configuration with a fresh self-signed
// certificate for 127.0.0.1 and a client configuration that trusts it.
func testTLS(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	c, err := dflockdtest.NewTestCert()
	require.NoError(t, err)
	return c.ServerConfig(), c.ClientConfig()
}

// queuedLock starts a lock stream on a held key and waits until it is queued.
func queuedLock(t *testing.T, c *dfstream.Client, ctx context.Context, key string, opts ...dfstream.StreamOption) *dfstream.LockStream {
	t.Helper()
	s, err := c.StartLock(ctx, key, opts...)
	require.NoError(t, err)
	nextOf[dfstream.Queued](t, s.Events(), time.Second)
	return s
}
