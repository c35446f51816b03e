package dfstream_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dfstream/dfstream"
	"github.com/dfstream/dfstream/dflockdtest"
)

// A fault that closes every connection the server has, while the Client's
// pool holds some of them.
type serverFault struct {
	name  string
	apply func(t *testing.T, srv **dflockdtest.Server)
}

var serverFaults = []serverFault{
	{"drop", func(_ *testing.T, srv **dflockdtest.Server) { (*srv).DropConnections() }},
	{"restart", restartServer},
}

// restartServer force-closes the server and starts a new one on its
// address, as a server process restarting does.
func restartServer(t *testing.T, srv **dflockdtest.Server) {
	t.Helper()
	addr := (*srv).Addr()
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // no drain: every connection is closed at once
	require.NoError(t, (*srv).Shutdown(ctx))
	next, err := dflockdtest.Start(dflockdtest.Config{Addr: addr})
	require.NoError(t, err)
	t.Cleanup(func() { _ = next.Shutdown(ctx) })
	*srv = next
}

// pooledCalls are the requests that take a connection from the pool.
var pooledCalls = []struct {
	name string
	call func(ctx context.Context, c *dfstream.Client, key string) error
}{
	{"lock", func(ctx context.Context, c *dfstream.Client, key string) error {
		s, err := c.Lock(ctx, key)
		if err != nil {
			return err
		}
		return s.Release(ctx)
	}},
	{"semaphore", func(ctx context.Context, c *dfstream.Client, key string) error {
		s, err := c.AcquireSemaphore(ctx, key, 2)
		if err != nil {
			return err
		}
		return s.Release(ctx)
	}},
	{"emit", func(ctx context.Context, c *dfstream.Client, key string) error {
		_, err := c.Emit(ctx, key, "0")
		return err
	}},
	{"stats", func(ctx context.Context, c *dfstream.Client, _ string) error {
		_, err := c.Stats(ctx, "")
		return err
	}},
}

// After each fault, the pool is full of connections the server closed;
// every call made then must still succeed: 5 faults, 20 calls at once
// after each.
func TestPoolCallsSucceedRightAfterTheServerClosedThePooledConnections(t *testing.T) {
	t.Parallel()
	const rounds, calls = 5, 20
	for _, f := range serverFaults {
		for _, pc := range pooledCalls {
			t.Run(f.name+"/"+pc.name, func(t *testing.T) {
				t.Parallel()
				addr, srv := testServer(t, dflockdtest.Config{})
				needServer(t, srv, f.name)
				c := newClient(t, []string{addr})
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()

				var failed atomic.Int32
				var firstErr atomic.Value
				for round := range rounds + 1 {
					if round > 0 { // round 0 fills the pool
						f.apply(t, &srv)
					}
					var wg sync.WaitGroup
					for i := range calls {
						wg.Go(func() {
							if err := pc.call(ctx, c, testKey(t, fmt.Sprint(i))); err != nil && round > 0 {
								failed.Add(1)
								firstErr.CompareAndSwap(nil, err)
							}
						})
					}
					wg.Wait()
				}
				t.Logf("%d of %d calls failed", failed.Load(), rounds*calls)
				assert.Zero(t, failed.Load(), "failed calls of %d; first: %v", rounds*calls, firstErr.Load())
			})
		}
	}
}

// rawConn is one connection of a rawServer, as its script sees it.
type rawConn struct {
	net.Conn
	requests int // served before this one
}

// rawServer is a stand-in server for what dflockdtest never does: it
// speaks just enough of the protocol (see answer) for the test's script
// to misbehave. serve runs for each request; returning false closes the
// connection.
func rawServer(t *testing.T, serve func(c *rawConn, req [3]string) bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var wg sync.WaitGroup
	t.Cleanup(func() {
		_ = ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer nc.Close()
				_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
				rc := &rawConn{Conn: nc}
				rd := bufio.NewReader(nc)
				for ; ; rc.requests++ {
					var req [3]string
					for i := range req {
						l, err := rd.ReadString('\n')
						if err != nil {
							return
						}
						req[i] = strings.TrimSuffix(l, "\n")
					}
					if !serve(rc, req) {
						return
					}
				}
			})
		}
	})
	return ln.Addr().String()
}

// answer is a well-behaved reply: a signal whose payload is a number is
// answered with that number of receivers; stats, enqueues and releases as
// a server would.
func answer(c *rawConn, req [3]string) bool {
	const grant = "acquired 0123456789abcdef0123456789abcdef 30 1"
	reply := map[string]string{
		"signal": "ok " + req[2],
		"stats":  "ok {}",
		"e":      grant,
		"se":     grant,
		"r":      "ok",
		"sr":     "ok",
	}[req[0]]
	_, err := io.WriteString(c, reply+"\n")
	return err == nil
}

// A server that answers one line too many must not leave later
// exchanges one reply behind: the connection that holds the extra line,
// whether it came with the reply or a moment later, is not reused.
func TestPoolNeverReusesAConnectionWithUnreadBytes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		delay time.Duration
	}{
		{"with the reply", 0},
		{"after the reply", 20 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			wrote := make(chan struct{}, 16)
			addr := rawServer(t, func(c *rawConn, req [3]string) bool {
				if c.requests > 0 {
					return answer(c, req)
				}
				extra := "ok 999\n"
				if tc.delay == 0 { // in the same segment
					req[2] += "\n" + strings.TrimSuffix(extra, "\n")
					extra = ""
				}
				if !answer(c, req) {
					return false
				}
				time.Sleep(tc.delay)
				_, err := io.WriteString(c, extra)
				wrote <- struct{}{}
				return err == nil
			})
			c := newClient(t, []string{addr}, signalsEra)
			for i := range 5 {
				n, err := c.Emit(context.Background(), "ch", strconv.Itoa(i))
				require.NoError(t, err)
				assert.Equal(t, i, n, "each emit reads its own reply")
				select { // the extra line is on its way before the next call
				case <-wrote:
				case <-time.After(time.Second): // a reused connection got none
				}
			}
		})
	}
}

// A server may close an idle connection just as a request arrives on it
// (its read timeout firing then, say): no peek can see that coming. The
// request, which got no byte of reply, goes once more on a fresh
// connection, for every kind of call that uses the pool.
func TestPoolRequestOnAConnectionClosedAsItArrivesGoesAgainOnAFreshOne(t *testing.T) {
	t.Parallel()
	for _, pc := range pooledCalls {
		t.Run(pc.name, func(t *testing.T) {
			t.Parallel()
			var conns atomic.Int32
			var closeNext atomic.Bool // the next request on a used connection finds it closed
			addr := rawServer(t, func(c *rawConn, req [3]string) bool {
				if c.requests == 0 {
					conns.Add(1)
				} else if closeNext.CompareAndSwap(true, false) {
					return false
				}
				return answer(c, req)
			})
			c := newClient(t, []string{addr}, signalsEra)
			ctx := context.Background()
			require.NoError(t, pc.call(ctx, c, "k"))
			closeNext.Store(true)
			require.NoError(t, pc.call(ctx, c, "k"))
			assert.EqualValues(t, 2, conns.Load(), "the second call went on a fresh connection")
		})
	}
}

func TestStatsWithANilContextIsInvalidInput(t *testing.T) {
	t.Parallel()
	addr, _ := testServer(t, dflockdtest.Config{})
	c := newClient(t, []string{addr})
	//lint:ignore SA1012 a nil context is what is tested
	_, err := c.Stats(nil, "")
	assert.ErrorIs(t, err, dfstream.ErrInvalidInput)
}

// deadAddr returns a loopback address nobody listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	require.NoError(t, ln.Close())
	return ln.Addr().String()
}

// A dead address is an unreachable server, for one-off requests as for
// locks.
func TestPooledCallsToADeadAddressAreUnreachable(t *testing.T) {
	t.Parallel()
	c := newClient(t, []string{deadAddr(t)}, dfstream.WithConnectTimeout(time.Second))
	for _, pc := range pooledCalls {
		err := pc.call(context.Background(), c, "k")
		assert.ErrorIs(t, err, dfstream.ErrUnreachable, pc.name)
		var opErr *net.OpError
		assert.ErrorAs(t, err, &opErr, "%s: the cause is kept", pc.name)
	}
}

// A server that requires a token refuses a request made without one: the
// error is ErrAuth, not a lost connection, whether or not an earlier call
// was refused too (a refused connection is never pooled).
func TestPooledCallsRefusedAuthAreErrAuth(t *testing.T) {
	t.Parallel()
	addr, srv := testServer(t, dflockdtest.Config{AuthToken: "sesame"})
	needServer(t, srv, "auth token")
	c := newClient(t, []string{addr})
	for range 2 {
		for _, pc := range pooledCalls {
			err := pc.call(context.Background(), c, "k")
			assert.ErrorIs(t, err, dfstream.ErrAuth, pc.name)
			assert.NotErrorIs(t, err, dfstream.ErrConnLost, pc.name)
		}
	}
}
