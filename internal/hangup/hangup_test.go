package hangup_test

import (
	"bufio"
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/dfstream/dfstream/dflockdtest"
	"github.com/dfstream/dfstream/internal/hangup"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var watchers = []struct {
	name string
	new  func() *hangup.Watcher
}{
	{"poller", hangup.New},
	{"portable", hangup.NewPortable},
}

// pair returns both ends of a loopback TCP connection.
func pair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	server = <-accepted
	require.NotNil(t, server)
	t.Cleanup(func() { _ = client.Close(); _ = server.Close() })
	return client, server
}

func watch(t *testing.T, w *hangup.Watcher, nc net.Conn) (*hangup.Watch, chan struct{}) {
	t.Helper()
	fired := make(chan struct{}, 2)
	h, err := w.Watch(nc, func() { fired <- struct{}{} })
	require.NoError(t, err)
	return h, fired
}

func requireFired(t *testing.T, fired chan struct{}) {
	t.Helper()
	select {
	case <-fired:
	case <-time.After(2 * time.Second):
		t.Fatal("the hang-up was not reported")
	}
}

// eachWatcher runs body in a parallel subtest per kind of watcher, with a
// fresh watcher (closed at the end) and a connected pair.
func eachWatcher(t *testing.T, body func(t *testing.T, w *hangup.Watcher, client, server net.Conn)) {
	t.Parallel()
	for _, tc := range watchers {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := tc.new()
			defer w.Close()
			client, server := pair(t)
			body(t, w, client, server)
		})
	}
}

func requireQuiet(t *testing.T, fired chan struct{}) {
	t.Helper()
	select {
	case <-fired:
		t.Fatal("reported a hang-up that did not happen")
	case <-time.After(100 * time.Millisecond):
	}
}

func TestWatchReportsThePeerClosing(t *testing.T) {
	eachWatcher(t, func(t *testing.T, w *hangup.Watcher, client, server net.Conn) {
		_, fired := watch(t, w, client)
		requireQuiet(t, fired)
		require.NoError(t, server.Close())
		requireFired(t, fired)
		requireQuiet(t, fired) // once only
	})
}

func TestWatchLetsTheOwnerExchangeWhilePaused(t *testing.T) {
	eachWatcher(t, func(t *testing.T, w *hangup.Watcher, client, server net.Conn) {
		h, fired := watch(t, w, client)
		rd := bufio.NewReader(client)
		for range 3 {
			h.Pause()
			_, err := server.Write([]byte("ok\n"))
			require.NoError(t, err)
			time.Sleep(20 * time.Millisecond) // the reply waits unread: not a hang-up
			line, err := rd.ReadString('\n')
			require.NoError(t, err)
			assert.Equal(t, "ok\n", line, "the watch took none of the reply")
			h.Resume()
		}
		requireQuiet(t, fired)
		require.NoError(t, server.Close())
		requireFired(t, fired)
	})
}

func TestStoppedWatchNeverFires(t *testing.T) {
	eachWatcher(t, func(t *testing.T, w *hangup.Watcher, client, server net.Conn) {
		h, fired := watch(t, w, client)
		assert.True(t, h.Stop())
		assert.True(t, h.Stop(), "idempotent")
		require.NoError(t, server.Close())
		requireQuiet(t, fired)
	})
}

func TestStopAfterTheHangUpReportsIt(t *testing.T) {
	eachWatcher(t, func(t *testing.T, w *hangup.Watcher, client, server net.Conn) {
		h, fired := watch(t, w, client)
		require.NoError(t, server.Close())
		requireFired(t, fired)
		assert.False(t, h.Stop())
	})
}

func TestWatchOnAClosedWatcherFails(t *testing.T) {
	t.Parallel()
	w := hangup.New()
	w.Close()
	client, _ := pair(t)
	_, err := w.Watch(client, func() {})
	assert.ErrorIs(t, err, hangup.ErrClosed)
}

func TestCloseStopsEveryWatch(t *testing.T) {
	eachWatcher(t, func(t *testing.T, w *hangup.Watcher, client, server net.Conn) {
		_, fired := watch(t, w, client)
		w.Close() // goleak in TestMain checks that nothing is left running
		w.Close() // idempotent
		require.NoError(t, server.Close())
		requireQuiet(t, fired)
	})
}

// A watch sees through *tls.Conn to the socket. (A TLS 1.3 server's
// session tickets, data the client never asked for, must not count as a
// hang-up; Go's client usually reads them with the handshake, so this
// checks little more than that nothing fires before the hang-up.)
func TestWatchReportsTheHangUpOfATLSConnection(t *testing.T) {
	cert, err := dflockdtest.NewTestCert()
	require.NoError(t, err)
	eachWatcher(t, func(t *testing.T, w *hangup.Watcher, rawClient, rawServer net.Conn) {
		server := tls.Server(rawServer, cert.ServerConfig())
		cfg := cert.ClientConfig()
		cfg.ServerName = "127.0.0.1"
		client := tls.Client(rawClient, cfg)
		go func() { _ = server.Handshake() }()
		require.NoError(t, client.Handshake())
		_, fired := watch(t, w, client)
		requireQuiet(t, fired)
		require.NoError(t, rawServer.Close())
		requireFired(t, fired)
	})
}

func TestWatchIgnoresAReadDeadlineTheOwnerLeft(t *testing.T) {
	eachWatcher(t, func(t *testing.T, w *hangup.Watcher, client, server net.Conn) {
		require.NoError(t, client.SetReadDeadline(time.Now().Add(20*time.Millisecond)))
		_, fired := watch(t, w, client)
		time.Sleep(50 * time.Millisecond)
		requireQuiet(t, fired)
		require.NoError(t, server.Close())
		requireFired(t, fired)
	})
}

func TestFiredReportsAWatchThatFired(t *testing.T) {
	eachWatcher(t, func(t *testing.T, w *hangup.Watcher, client, server net.Conn) {
		h, fired := watch(t, w, client)
		h.Pause()
		assert.False(t, h.Fired())
		h.Resume()
		require.NoError(t, server.Close())
		requireFired(t, fired)
		h.Pause()
		assert.True(t, h.Fired())
		h.Resume()
	})
}
