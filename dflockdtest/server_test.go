package dflockdtest

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const replyWait = 3 * time.Second

type rawClient struct {
	t  testing.TB
	nc net.Conn
	br *bufio.Reader
}

func dialRaw(t testing.TB, s *Server) *rawClient {
	t.Helper()
	nc, err := net.Dial("tcp", s.Addr())
	require.NoError(t, err)
	t.Cleanup(func() { _ = nc.Close() })
	return &rawClient{t: t, nc: nc, br: bufio.NewReader(nc)}
}

func (c *rawClient) send(raw string) {
	c.t.Helper()
	_, err := c.nc.Write([]byte(raw))
	require.NoError(c.t, err)
}

func (c *rawClient) req(cmd, key, arg string) { c.send(cmd + "\n" + key + "\n" + arg + "\n") }

func (c *rawClient) readLine(d time.Duration) (string, error) {
	_ = c.nc.SetReadDeadline(time.Now().Add(d))
	l, err := c.br.ReadString('\n')
	if err != nil {
		return l, err
	}
	return strings.TrimSuffix(l, "\n"), nil
}

func (c *rawClient) reply() string {
	c.t.Helper()
	l, err := c.readLine(replyWait)
	require.NoError(c.t, err, "reading a reply")
	return l
}

func (c *rawClient) do(cmd, key, arg string) string {
	c.t.Helper()
	c.req(cmd, key, arg)
	return c.reply()
}

func (c *rawClient) expectEOF() {
	c.t.Helper()
	l, err := c.readLine(replyWait)
	require.Error(c.t, err, "expected EOF, got %q", l)
	require.Empty(c.t, l)
	var ne net.Error
	require.False(c.t, errors.As(err, &ne) && ne.Timeout(), "expected EOF, got a timeout")
}

func (c *rawClient) expectSilence(d time.Duration) {
	c.t.Helper()
	l, err := c.readLine(d)
	var ne net.Error
	require.True(c.t, errors.As(err, &ne) && ne.Timeout(), "expected silence, got %q %v", l, err)
}

var grantRE = regexp.MustCompile(`^ok ([0-9a-f]{32}) (\d+) (\d+)$`)

func (c *rawClient) lock(key, arg string) (tok string) {
	c.t.Helper()
	r := c.do("l", key, arg)
	m := grantRE.FindStringSubmatch(r)
	require.NotNil(c.t, m, "grant reply %q", r)
	return m[1]
}

func TestServerLineParsing(t *testing.T) {
	t.Parallel()
	long := func(n int) string { return strings.Repeat("k", n) }
	cases := []struct {
		name  string
		raw   string
		want  []string // regexps, one per reply
		eof   bool
		fence bool
	}{
		{"crlf", "l\r\nk\r\n0\r\n", []string{`^ok [0-9a-f]{32} 33 1$`}, false, true},
		{"cr inside a key is dropped", "l\na\rb\n0 60\nl\nab\n0\n", []string{`^ok \S+ 60 1$`, `^timeout$`}, false, true},
		{"256-byte key", "l\n" + long(256) + "\n0\n", []string{`^ok `}, false, false},
		{"CRs do not count", "l\n" + long(256) + "\r\r\n0\n", []string{`^ok `}, false, false},
		{"257-byte key", "l\n" + long(257) + "\n0\n", []string{`^error$`}, true, false},
		{"overlong first line: the rest is not read", long(300) + "\nk\n0\n", []string{`^error$`}, true, false},
		{"unknown command keeps the connection", "foo\nk\n\nl\nk\n0\n", []string{`^error$`, `^ok `}, false, false},
		{"ping", "ping\n_\n\n", []string{`^ok$`}, false, false},
		{"bad keys", "l\na b\n0\nl\na\tb\n0\nl\n\n0\n", []string{`^error$`, `^error$`, `^error$`}, false, false},
		{"bad arguments", "l\nk\n1.5\nl\nk\n-1\nl\nk\n0 0\nl\nk\n1 2 3\nl\nk\nx\nl\nk\n\n",
			[]string{`^error$`, `^error$`, `^error$`, `^error$`, `^error$`, `^error$`}, false, false},
		{"plus signs and unicode spaces", "l\nk\n+0\u00a0+60\n", []string{`^ok \S+ 60 1$`}, false, true},
		{"seconds above the cap", "l\nk\n0 9223372037\ne\nk\n9223372037\n", []string{`^error$`, `^error$`}, false, false},
		{"validation order: command first", "nope\na b\nx\n", []string{`^error$`}, false, false},
		{"pipelined", "l\nk\n0\nl\nk\n0\nstats\n_\n\n", []string{`^ok `, `^timeout$`, `^ok \{`}, false, false},
		{"release argument is the whole token", "r\nk\n0123456789abcdef0123456789abcdef x\n", []string{`^error$`}, false, false},
		{"signal payload verbatim", "listen\nch\n\nsignal\nch\n  x  y\tz \n", []string{`^ok$`, `^sig ch   x  y\tz $`, `^ok 1$`}, false, false},
		{"signal errors", "signal\na.*\nx\nsignal\na.b\n\nsignal\na.b\n   \n", []string{`^error$`, `^error$`, `^ok 0$`}, false, false},
		{"auth when off", "auth\n_\nsecret\n", []string{`^error$`}, false, false},
		{"unlisten anything", "unlisten\nnope\n\n", []string{`^ok$`}, false, false},
		{"bad patterns", "listen\na.>.b\n\nlisten\na*\n\nlisten\n>a\n\nlisten\na.>>\n\nlisten\n>\n\nlisten\n*.*\n\nlisten\na..b\n\n",
			[]string{`^error$`, `^error$`, `^error$`, `^error$`, `^ok$`, `^ok$`, `^ok$`}, false, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := New(t, Config{})
			c := dialRaw(t, s)
			c.send(tc.raw)
			for _, w := range tc.want {
				assert.Regexp(t, w, c.reply())
			}
			if tc.eof {
				c.expectEOF()
			} else {
				assert.Regexp(t, `^ok \{`, c.do("stats", "_", ""), "connection still usable")
			}
		})
	}
}

func TestServerPingError(t *testing.T) {
	t.Parallel()
	s := New(t, Config{PingError: true})
	c := dialRaw(t, s)
	assert.Equal(t, "error", c.do("ping", "_", ""))
	c.lock("k", "0")
}

func TestServerNoFences(t *testing.T) {
	t.Parallel()
	s := New(t, Config{NoFences: true})
	c := dialRaw(t, s)
	r := c.do("l", "k", "0")
	assert.Regexp(t, `^ok [0-9a-f]{32} 33$`, r)
	tok := strings.Fields(r)[1]
	assert.Equal(t, "ok 20", c.do("n", "k", tok+" 20"))
	assert.Regexp(t, `^acquired [0-9a-f]{32} 33$`, c.do("e", "k2", ""))
	assert.Regexp(t, `^ok [0-9a-f]{32} 33$`, c.do("w", "k2", "0"))
	assert.NotContains(t, c.do("stats", "_", ""), "fence")
}

func TestServerStatsFormat(t *testing.T) {
	t.Parallel()
	s := New(t, Config{})
	c := dialRaw(t, s)
	r := c.do("stats", "_", "")
	require.True(t, strings.HasPrefix(r, "ok {"))
	assert.Equal(t, `ok {"connections":1,"locks":[],"semaphores":[],"rw_locks":[],"idle_locks":[],"idle_semaphores":[],"counters":[],"kv_entries":[],"lists":[],"signal_channels":null,"watch_channels":null,"barriers":[]}`, r)

	c.lock("k", "0 60")
	assert.Equal(t, "ok", c.do("listen", "a.>", "g 1"))
	assert.Equal(t, "ok", c.do("listen", "a.>", ""))
	r = c.do("stats", "k", "ignored")
	assert.Contains(t, r, `"locks":[{"key":"k","owner_conn_id":1,"lease_expires_in_s":`)
	assert.Contains(t, r, `,"waiters":0,"fence":1}]`)
	assert.Contains(t, r, `"signal_channels":[{"pattern":"a.\u003e","listeners":1},{"pattern":"a.\u003e","group":"g 1","listeners":1}]`)
	var keys []string
	dec := json.NewDecoder(strings.NewReader(strings.TrimPrefix(r, "ok ")))
	_, _ = dec.Token()
	for dec.More() {
		k, err := dec.Token()
		require.NoError(t, err)
		keys = append(keys, k.(string))
		var skip json.RawMessage
		require.NoError(t, dec.Decode(&skip))
	}
	assert.Equal(t, []string{"connections", "locks", "semaphores", "rw_locks", "idle_locks", "idle_semaphores",
		"counters", "kv_entries", "lists", "signal_channels", "watch_channels", "barriers"}, keys)

	m := s.Stats()
	assert.EqualValues(t, 1, m["connections"])
	assert.Nil(t, m["watch_channels"])
}

func TestServerAuth(t *testing.T) {
	t.Parallel()
	s := New(t, Config{AuthToken: "s3cret"})

	ok := dialRaw(t, s)
	assert.Equal(t, "ok", ok.do("auth", "", "  s3cret \t"), "trimmed token, empty key")
	assert.Equal(t, "error", ok.do("auth", "_", "s3cret"), "second auth")
	ok.lock("k", "0")

	for _, first := range [][3]string{{"auth", "_", "wrong"}, {"l", "free", "0"}, {"stats", "_", ""}, {"ping", "_", ""}} {
		c := dialRaw(t, s)
		start := time.Now()
		assert.Equal(t, "error_auth", c.do(first[0], first[1], first[2]))
		c.expectEOF()
		assert.GreaterOrEqual(t, time.Since(start), 80*time.Millisecond, "pause before close")
	}
	c := dialRaw(t, s)
	c.send(strings.Repeat("x", 300) + "\n")
	assert.Equal(t, "error_auth", c.reply())
	c.expectEOF()

	assert.Regexp(t, `^ok `, ok.do("l", "free", "0"), "the unauthenticated l was not executed")
}

func TestServerReadTimeout(t *testing.T) {
	t.Parallel()
	// Two seconds, so that the chatty connection's pauses below leave a
	// loaded machine 1.5 s of slack before the server would drop it.
	const rt = 2 * time.Second
	s := New(t, Config{ReadTimeout: rt})
	idle := dialRaw(t, s)
	partial := dialRaw(t, s)
	partial.send("l\nk\n")
	holder := dialRaw(t, s)
	holder.lock("held", "0 60")
	start := time.Now()
	assert.Equal(t, "error", idle.reply())
	idle.expectEOF()
	assert.Equal(t, "error", partial.reply())
	partial.expectEOF()
	assert.Equal(t, "error", holder.reply())
	holder.expectEOF()
	assert.GreaterOrEqual(t, time.Since(start), rt-100*time.Millisecond)

	// Re-armed per line and per request: a chatty connection survives
	// although a whole request takes longer than the read timeout.
	chatty := dialRaw(t, s)
	for i := 0; i < 2; i++ {
		time.Sleep(rt / 4)
		chatty.send("stats\n")
		time.Sleep(rt / 4)
		chatty.send("_\n")
		time.Sleep(rt / 4)
		chatty.send("\n")
		assert.Regexp(t, `^ok \{`, chatty.reply())
	}
	// The lock of the timed-out holder was auto-released.
	chatty.lock("held", "0")
}

func TestServerReadTimeoutNotRunningDuringBlockingWait(t *testing.T) {
	t.Parallel()
	const rt = time.Second
	s := New(t, Config{ReadTimeout: rt})
	a := dialRaw(t, s)
	a.lock("k", "0")
	b := dialRaw(t, s)
	start := time.Now()
	b.req("l", "k", "2")
	for time.Since(start) < 2500*time.Millisecond { // the holder stays alive
		time.Sleep(rt / 4)
		assert.Regexp(t, `^ok \{`, a.do("stats", "_", ""))
	}
	assert.Equal(t, "timeout", b.reply(), "a 2 s wait, longer than the read timeout, is answered")
	assert.GreaterOrEqual(t, time.Since(start), 1900*time.Millisecond)
	// After the wait the read timeout runs again.
	assert.Equal(t, "error", b.reply())
	b.expectEOF()
}

func TestServerDeadWaiterKeepsItsPlace(t *testing.T) {
	t.Parallel()
	s := New(t, Config{})
	a := dialRaw(t, s)
	r := a.do("l", "k", "0")
	m := grantRE.FindStringSubmatch(r)
	require.NotNil(t, m)
	queued := func(n int) func() bool {
		return func() bool { return strings.Contains(a.do("stats", "_", ""), fmt.Sprintf(`"waiters":%d`, n)) }
	}
	// Each waiter is queued before the next asks: their connections are
	// served concurrently, so only that fixes the order.
	dead := dialRaw(t, s)
	dead.req("l", "k", "5")
	require.Eventually(t, queued(1), 2*time.Second, 5*time.Millisecond)
	live := dialRaw(t, s)
	live.req("l", "k", "5")
	require.Eventually(t, queued(2), 2*time.Second, 5*time.Millisecond)
	_ = dead.nc.Close()
	time.Sleep(50 * time.Millisecond)
	st := a.do("stats", "_", "")
	assert.Contains(t, st, `"waiters":2`, "the dead waiter is not noticed while blocked")
	assert.Contains(t, st, `"connections":3`, "the dead waiter's connection still counts")
	assert.Equal(t, "ok", a.do("r", "k", m[1]))
	g := grantRE.FindStringSubmatch(live.reply())
	require.NotNil(t, g)
	assert.Equal(t, "3", g[3], "the dead waiter's grant consumed fence 2")
}

func TestServerPushBeforeReplyAndBlackHole(t *testing.T) {
	t.Parallel()
	s := New(t, Config{})
	c := dialRaw(t, s)
	assert.Equal(t, "ok", c.do("listen", "self", ""))
	c.req("signal", "self", "hi")
	assert.Equal(t, "sig self hi", c.reply(), "a sig queued before the reply comes first")
	assert.Equal(t, "ok 1", c.reply())

	// A failed push write turns the connection into a black hole that
	// signal still counts.
	conns := s.snapshotConns()
	require.Len(t, conns, 1)
	conns[0].sub.dead.Store(true)
	e := dialRaw(t, s)
	for i := 0; i < 2*pushQueueLen; i++ {
		require.Equal(t, "ok 1", e.do("signal", "self", "x"))
	}
	assert.Regexp(t, `^ok \{`, c.do("stats", "_", ""), "replies still flow, pushes do not")
}

func TestServerSlowListenerCancelClosesOnlyOnBlockingWait(t *testing.T) {
	t.Parallel()
	s := New(t, Config{})
	h := dialRaw(t, s)
	h.lock("k", "0")
	c := dialRaw(t, s)
	assert.Equal(t, "ok", c.do("listen", "x", ""))
	var victim *conn
	for _, cc := range s.snapshotConns() {
		if cc.remote == c.nc.LocalAddr().String() {
			victim = cc
		}
	}
	require.NotNil(t, victim)
	victim.sub.cancelConn()
	assert.Regexp(t, `^ok \{`, c.do("stats", "_", ""), "cancel does not close an idle listener")
	assert.Equal(t, "timeout", c.do("l", "k", "0"), "a try-once does not wait")
	c.req("l", "k", "5")
	c.expectEOF()
}

func TestServerMaxConnectionsAndPause(t *testing.T) {
	t.Parallel()
	s := New(t, Config{MaxConnections: 1})
	a := dialRaw(t, s)
	a.lock("k", "0")
	b := dialRaw(t, s)
	b.expectEOF()
	_ = a.nc.Close()
	require.Eventually(t, func() bool { return len(s.Conns()) == 0 }, replyWait, 10*time.Millisecond)
	s.PauseAccepting()
	c := dialRaw(t, s)
	c.expectEOF()
	s.ResumeAccepting()
	d := dialRaw(t, s)
	d.lock("k", "0")
}

func TestServerShutdownInterruptsWaitWithoutReply(t *testing.T) {
	t.Parallel()
	s, err := Start(Config{ShutdownDrain: 200 * time.Millisecond})
	require.NoError(t, err)
	a := dialRaw(t, s)
	a.lock("k", "0")
	b := dialRaw(t, s)
	b.req("l", "k", "30")
	time.Sleep(50 * time.Millisecond)
	done := make(chan error)
	go func() { done <- s.Close() }()
	b.expectEOF()
	a.expectEOF()
	require.NoError(t, <-done)
	require.NoError(t, s.Close(), "idempotent")
	require.NoError(t, s.Shutdown(context.Background()))
	_, err = net.Dial("tcp", s.Addr())
	assert.Error(t, err, "no longer listening")
}

func TestServerFreezeAndThaw(t *testing.T) {
	t.Parallel()
	s := New(t, Config{ReadTimeout: time.Second, LeaseSweepInterval: 50 * time.Millisecond})
	a := dialRaw(t, s)
	tok := a.lock("k", "0 1")
	b := dialRaw(t, s)
	b.req("l", "k", "10")
	time.Sleep(50 * time.Millisecond)
	s.Freeze()
	s.Freeze() // idempotent
	a.req("n", "k", tok)
	_ = b.nc.SetReadDeadline(time.Now().Add(1500 * time.Millisecond))
	b.expectSilence(1500 * time.Millisecond) // longer than the read timeout (1 s) and the lease
	a.expectSilence(50 * time.Millisecond)
	s.Thaw()
	s.Thaw()
	assert.Regexp(t, `^ok [0-9a-f]{32} 33 2$`, b.reply(), "granted while frozen, answered at thaw")
	assert.Equal(t, "error", a.reply(), "the holder was evicted meanwhile")
	// Read timeouts run again after thaw.
	assert.Equal(t, "error", a.reply())
	a.expectEOF()
}

func TestServerDropConnections(t *testing.T) {
	t.Parallel()
	s := New(t, Config{})
	a := dialRaw(t, s)
	a.lock("k", "0")
	a.do("listen", "x", "")
	s.DropConnections()
	a.expectEOF()
	assert.Empty(t, s.Conns())
	c := dialRaw(t, s)
	c.lock("k", "0")
	assert.Equal(t, "ok 0", c.do("signal", "x", "y"))
	require.Len(t, s.Conns(), 1)
	assert.NotZero(t, s.Conns()[0].ID)
}

func TestServerMutePushes(t *testing.T) {
	t.Parallel()
	s := New(t, Config{})
	l := dialRaw(t, s)
	assert.Equal(t, "ok", l.do("listen", "m.*", ""))
	s.MutePushes(func(ci ConnInfo) bool {
		return len(ci.Subscriptions) == 1 && ci.Subscriptions[0] == "m.*"
	})
	e := dialRaw(t, s)
	assert.Equal(t, "ok 1", e.do("signal", "m.a", "lost"))
	l.expectSilence(100 * time.Millisecond)
	s.UnmutePushes()
	assert.Equal(t, "ok 1", e.do("signal", "m.a", "back"))
	assert.Equal(t, "sig m.a back", l.reply())
}

func TestServerTLS(t *testing.T) {
	t.Parallel()
	cert := selfSigned(t)
	s := New(t, Config{TLS: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS10}})
	nc, err := tls.Dial("tcp", s.Addr(), &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // test
	require.NoError(t, err)
	defer nc.Close()
	c := &rawClient{t: t, nc: nc, br: bufio.NewReader(nc)}
	c.lock("k", "0")
	assert.Equal(t, tls.VersionTLS13, int(nc.ConnectionState().Version))

	old, err := tls.Dial("tcp", s.Addr(), &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS11}) //nolint:gosec // test
	if err == nil {
		_ = old.Close()
	}
	assert.Error(t, err, "TLS 1.2 is the minimum")

	plain := dialRaw(t, s)
	plain.req("stats", "_", "")
	_, err = plain.readLine(replyWait)
	assert.Error(t, err, "plain TCP is not spoken")
}

func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	c, err := NewTestCert()
	require.NoError(t, err)
	return c.Cert
}

// Not parallel: it is CPU-heavy under -race and would starve the timing-sensitive
// tests (sequential tests finish before the parallel ones resume).
func TestServerManyConnectionsAndKeys(t *testing.T) {
	s := New(t, Config{MaxLocks: 100000})
	const n = 200
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		go func(i int) {
			nc, err := net.Dial("tcp", s.Addr())
			if err != nil {
				errs <- err
				return
			}
			defer nc.Close()
			br := bufio.NewReader(nc)
			for j := 0; j < 20; j++ {
				for _, k := range []string{"shared", "own-" + strconv.Itoa(i) + "-" + strconv.Itoa(j)} {
					if _, err := io.WriteString(nc, "l\n"+k+"\n5\n"); err != nil {
						errs <- err
						return
					}
					line, err := br.ReadString('\n')
					if err != nil {
						errs <- err
						return
					}
					f := strings.Fields(line)
					if len(f) != 4 || f[0] != "ok" {
						errs <- errors.New("unexpected " + line)
						return
					}
					if _, err := io.WriteString(nc, "r\n"+k+"\n"+f[1]+"\n"); err != nil {
						errs <- err
						return
					}
					if l, err := br.ReadString('\n'); err != nil || l != "ok\n" {
						errs <- errors.New("release: " + l)
						return
					}
				}
			}
			errs <- nil
		}(i)
	}
	for i := 0; i < n; i++ {
		require.NoError(t, <-errs)
	}
}

func TestServerWithoutAutoReleaseAClosedQueuedWaiterKeepsItsPlace(t *testing.T) {
	t.Parallel()
	s := New(t, Config{DisableAutoRelease: true})
	a := dialRaw(t, s)
	tok := a.lock("k", "0")
	x := dialRaw(t, s)
	require.Equal(t, "queued", x.do("e", "k", ""))
	_ = x.nc.Close()
	time.Sleep(100 * time.Millisecond) // the server notices the idle close
	assert.Contains(t, a.do("stats", "_", ""), `"waiters":1`, "the closed waiter is still queued")
	assert.Equal(t, "ok", a.do("r", "k", tok))
	y := dialRaw(t, s)
	assert.Equal(t, "timeout", y.do("l", "k", "0"), "the slot went to the closed waiter")
}

func TestServerGCForgetsTheEnqueueOfAnEvictedHolder(t *testing.T) {
	t.Parallel()
	s := New(t, Config{LeaseSweepInterval: 50 * time.Millisecond, GCInterval: 50 * time.Millisecond, GCMaxIdle: 100 * time.Millisecond})
	c := dialRaw(t, s)
	require.Regexp(t, `^acquired [0-9a-f]{32} 1 \d+$`, c.do("e", "k", "1"))
	time.Sleep(1500 * time.Millisecond) // lease out, evicted, then the idle key collected
	assert.Equal(t, `ok {"connections":1,"locks":[],"semaphores":[],"rw_locks":[],"idle_locks":[],"idle_semaphores":[],"counters":[],"kv_entries":[],"lists":[],"signal_channels":null,"watch_channels":null,"barriers":[]}`,
		c.do("stats", "_", ""), "the key is gone")
	assert.Regexp(t, `^acquired `, c.do("e", "k", "1"), "no stale two-phase state: a fresh enqueue")
}
