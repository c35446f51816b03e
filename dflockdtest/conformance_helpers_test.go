package dflockdtest_test

// Helpers of the conformance suite: target selection (in-process server or the
// external one named by DFLOCKD_TEST_ADDR), a tiny raw client that writes exact
// bytes and reads exact LF-terminated lines, and independent parsers for the
// reply lines and the stats JSON. Nothing here imports the wire package: the
// suite checks the bytes on its own.

import (
	"bufio"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dfstream/dfstream/dflockdtest"
)

const (
	// replyWait bounds every read of a reply that is due at once. Generous on
	// purpose: the suite must not flake on a slow 2-core CI under -race.
	replyWait = 5 * time.Second
	// prompt is the tolerant bound for "at once" / "within ~100 ms".
	prompt = time.Second
	// quiet is how long the suite watches a connection to assert that nothing
	// arrives.
	quiet = 250 * time.Millisecond
	// rfDefaultLease is the server default lease in seconds (protocol.md §5).
	rfDefaultLease = 33
	// localToken is the auth token of in-process servers started with auth on.
	localToken = "conformance-token-1"
	// maxSeconds is the largest seconds value the RF server accepts.
	maxSeconds = 9223372036
)

// runID makes keys unique per test process, so that two runs against one
// external server within its GC idle time do not see each other's idle keys.
var runID = func() string {
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}()

var (
	tokenRE  = regexp.MustCompile(`^[0-9a-f]{32}$`)
	uintRE   = regexp.MustCompile(`^(0|[1-9][0-9]*)$`)
	fenceRE  = regexp.MustCompile(`^[1-9][0-9]*$`)
	keySafe  = regexp.MustCompile(`[^A-Za-z0-9_-]+`)
	errNoEOF = errors.New("connection still open")
)

// ---------------------------------------------------------------------------
// target selection

// env is the server a test talks to.
type env struct {
	addr         string
	srv          *dflockdtest.Server // nil when external
	token        string              // auth token dial sends first ("" = none)
	clientTLS    *tls.Config         // nil = plain TCP
	noFences     bool                // grant/renew replies without the fence field
	defaultLease int64               // server default lease in seconds
}

func externalAddr() string { return os.Getenv("DFLOCKD_TEST_ADDR") }

// target starts an in-process server with cfg (closed by t.Cleanup), or, when
// DFLOCKD_TEST_ADDR is set, returns the external server. Against the external
// server a test whose cfg sets anything but AuthToken is skipped: the suite
// cannot know the external server's settings. A test that sets AuthToken runs
// against the external server only when DFLOCKD_TEST_AUTH_TOKEN is set (and
// then uses that token).
func target(t *testing.T, cfg dflockdtest.Config) *env {
	t.Helper()
	if addr := externalAddr(); addr != "" {
		if s := localOnlySettings(cfg); len(s) > 0 {
			t.Skipf("needs server settings %s, which the external server at %s (DFLOCKD_TEST_ADDR) cannot be assumed to have",
				strings.Join(s, ", "), addr)
		}
		tok := os.Getenv("DFLOCKD_TEST_AUTH_TOKEN")
		if cfg.AuthToken != "" && tok == "" {
			t.Skipf("needs auth on, but DFLOCKD_TEST_AUTH_TOKEN is not set for the external server at %s", addr)
		}
		lease := int64(rfDefaultLease)
		if v := os.Getenv("DFLOCKD_TEST_DEFAULT_LEASE"); v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			require.NoError(t, err, "DFLOCKD_TEST_DEFAULT_LEASE")
			lease = n
		}
		return &env{addr: addr, token: tok, defaultLease: lease}
	}
	srv := dflockdtest.New(t, cfg)
	lease := int64(rfDefaultLease)
	if cfg.DefaultLease > 0 {
		lease = int64(cfg.DefaultLease / time.Second)
	}
	return &env{addr: srv.Addr(), srv: srv, token: cfg.AuthToken, noFences: cfg.NoFences, defaultLease: lease}
}

// authOffTarget is target for tests that need a server without auth.
func authOffTarget(t *testing.T, cfg dflockdtest.Config) *env {
	t.Helper()
	if externalAddr() != "" && os.Getenv("DFLOCKD_TEST_AUTH_TOKEN") != "" {
		t.Skip("needs auth off, but the external server has auth on (DFLOCKD_TEST_AUTH_TOKEN is set)")
	}
	return target(t, cfg)
}

// localOnlySettings names the fields of cfg, other than AuthToken, Addr and
// Logger, that differ from their zero value.
func localOnlySettings(cfg dflockdtest.Config) []string {
	var out []string
	v := reflect.ValueOf(cfg)
	for i := 0; i < v.NumField(); i++ {
		name := v.Type().Field(i).Name
		switch name {
		case "AuthToken", "Addr", "Logger":
			continue
		}
		if !v.Field(i).IsZero() {
			out = append(out, name)
		}
	}
	return out
}

// needLocal skips the test when it runs against an external server.
func needLocal(t *testing.T, why string) {
	t.Helper()
	if a := externalAddr(); a != "" {
		t.Skipf("needs the in-process server (%s); skipped against the external server at %s", why, a)
	}
}

// local reports whether the test talks to its own in-process server (so that
// global state such as fences, connection counts and channel lists is its own).
func (e *env) local() bool { return e.srv != nil }

// ---------------------------------------------------------------------------
// keys

// key returns a key unique to the test (and to this process), with optional
// suffix parts joined by '-'. It contains only [A-Za-z0-9_-], so it is also a
// single token of a signal channel and needs no JSON escaping.
func key(t testing.TB, parts ...string) string {
	k := "cf" + runID + "-" + keySafe.ReplaceAllString(t.Name(), "_")
	for _, p := range parts {
		k += "-" + p
	}
	return k
}

// paddedKey returns a unique key of exactly n bytes.
func paddedKey(t testing.TB, n int) string {
	k := key(t) + "-"
	require.Less(t, len(k), n)
	return k + strings.Repeat("x", n-len(k))
}

// ---------------------------------------------------------------------------
// raw client

type rawConn struct {
	t       testing.TB
	c       net.Conn
	r       *bufio.Reader
	partial string   // bytes of a line read before a deadline hit
	sigs    []string // push lines read while waiting for a reply
}

// dialRaw connects without sending anything.
func (e *env) dialRaw(t testing.TB) *rawConn {
	t.Helper()
	c, err := e.tryDial()
	require.NoError(t, err, "dial %s", e.addr)
	t.Cleanup(func() { _ = c.Close() })
	return &rawConn{t: t, c: c, r: bufio.NewReader(c)}
}

// wrapConn wraps a connection dialled with tryDial (closed by t.Cleanup).
func wrapConn(t testing.TB, nc net.Conn) *rawConn {
	t.Cleanup(func() { _ = nc.Close() })
	return &rawConn{t: t, c: nc, r: bufio.NewReader(nc)}
}

func (e *env) tryDial() (net.Conn, error) {
	d := net.Dialer{Timeout: replyWait}
	if e.clientTLS != nil {
		return tls.DialWithDialer(&d, "tcp", e.addr, e.clientTLS)
	}
	return d.Dial("tcp", e.addr)
}

// dial connects and, when the server has auth on, authenticates.
func (e *env) dial(t testing.TB) *rawConn {
	t.Helper()
	c := e.dialRaw(t)
	if e.token != "" {
		require.Equal(t, "ok", c.do("auth", "_", e.token), "auth")
	}
	return c
}

// dialSmallRcvBuf is dial with a tiny socket receive buffer set before the
// handshake, so that a peer that stops reading fills the pipe quickly.
func (e *env) dialSmallRcvBuf(t testing.TB, size int) *rawConn {
	t.Helper()
	require.Nil(t, e.clientTLS)
	d := net.Dialer{Timeout: replyWait, Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = setRcvBuf(fd, size)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	c, err := d.Dial("tcp", e.addr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	rc := &rawConn{t: t, c: c, r: bufio.NewReaderSize(c, 512)}
	if e.token != "" {
		require.Equal(t, "ok", rc.do("auth", "_", e.token), "auth")
	}
	return rc
}

func (c *rawConn) close() { _ = c.c.Close() }

// localAddr is the address the server sees as this connection's remote.
func (c *rawConn) localAddr() string { return c.c.LocalAddr().String() }

// send writes exact bytes.
func (c *rawConn) send(s string) {
	c.t.Helper()
	require.NoError(c.t, c.c.SetWriteDeadline(time.Now().Add(replyWait)))
	_, err := io.WriteString(c.c, s)
	require.NoError(c.t, err, "write %q", trunc(s))
}

// req writes one three-line request.
func (c *rawConn) req(cmd, key, arg string) {
	c.t.Helper()
	c.send(reqBytes(cmd, key, arg))
}

func reqBytes(cmd, key, arg string) string { return cmd + "\n" + key + "\n" + arg + "\n" }

// readLine reads one LF-terminated line (without the LF) within d. A line
// interrupted by the deadline is kept and completed by the next call.
func (c *rawConn) readLine(d time.Duration) (string, error) {
	if err := c.c.SetReadDeadline(time.Now().Add(d)); err != nil {
		return "", err
	}
	s, err := c.r.ReadString('\n')
	c.partial += s
	if err != nil {
		return "", err
	}
	line := c.partial[:len(c.partial)-1]
	c.partial = ""
	return line, nil
}

// lineWithin reads one line within d; every line must be free of CR.
func (c *rawConn) lineWithin(d time.Duration) string {
	c.t.Helper()
	l, err := c.readLine(d)
	require.NoError(c.t, err, "reading a line (partial %q)", trunc(c.partial))
	require.NotContains(c.t, l, "\r", "a reply line contains a CR: %q", trunc(l))
	return l
}

// replyWithin returns the next line that is not a push (`sig …`), stashing
// push lines for sig().
func (c *rawConn) replyWithin(d time.Duration) string {
	c.t.Helper()
	deadline := time.Now().Add(d)
	for {
		l := c.lineWithin(time.Until(deadline))
		if strings.HasPrefix(l, "sig ") {
			c.sigs = append(c.sigs, l)
			continue
		}
		return l
	}
}

func (c *rawConn) reply() string { c.t.Helper(); return c.replyWithin(replyWait) }

// do sends one request and returns its reply.
func (c *rawConn) do(cmd, key, arg string) string {
	c.t.Helper()
	c.req(cmd, key, arg)
	return c.reply()
}

// sig returns the next push line (stashed or read within replyWait).
func (c *rawConn) sig() string {
	c.t.Helper()
	if len(c.sigs) > 0 {
		s := c.sigs[0]
		c.sigs = c.sigs[1:]
		return s
	}
	l := c.lineWithin(replyWait)
	require.True(c.t, strings.HasPrefix(l, "sig "), "expected a push line, got %q", trunc(l))
	return l
}

// expectEOF asserts that the peer closes the connection within d and sends no
// further byte. A reset counts as a close.
func (c *rawConn) expectEOF(d time.Duration) {
	c.t.Helper()
	require.NoError(c.t, eofWithin(c, d))
}

func eofWithin(c *rawConn, d time.Duration) error {
	if err := c.c.SetReadDeadline(time.Now().Add(d)); err != nil {
		return err
	}
	rest, err := io.ReadAll(c.r)
	rest = append([]byte(c.partial), rest...)
	c.partial = ""
	if len(rest) > 0 {
		return errors.New("unexpected bytes before close: " + strconv.Quote(trunc(string(rest))))
	}
	if err == nil || isReset(err) {
		return nil
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return errNoEOF
	}
	return err
}

// expectSilence asserts that nothing (not even a partial line) arrives within
// d and that the connection stays open.
func (c *rawConn) expectSilence(d time.Duration) {
	c.t.Helper()
	l, err := c.readLine(d)
	require.Error(c.t, err, "expected silence, got %q", trunc(l))
	var ne net.Error
	require.True(c.t, errors.As(err, &ne) && ne.Timeout(), "expected silence, got %v", err)
	require.Empty(c.t, c.partial, "expected silence, got a partial line")
}

// expectSilenceAll waits d once, then asserts that nothing arrived on any of
// the connections.
func expectSilenceAll(d time.Duration, conns ...*rawConn) {
	time.Sleep(d)
	for _, c := range conns {
		c.t.Helper()
		c.expectSilence(10 * time.Millisecond)
	}
}

func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

func trunc(s string) string {
	if len(s) > 300 {
		return s[:300] + "…"
	}
	return s
}

// ---------------------------------------------------------------------------
// reply parsing

type grant struct {
	Token string
	Lease int64
	Fence uint64 // 0 when the reply has no fence
}

// grant parses `<status> <token> <lease> <fence>` (or without the fence when
// the server runs with NoFences), requiring single spaces and exact forms.
func (e *env) grant(t testing.TB, line, status string) grant {
	t.Helper()
	f := strings.Split(line, " ")
	want := 4
	if e.noFences {
		want = 3
	}
	require.Len(t, f, want, "grant reply %q", line)
	require.Equal(t, status, f[0], "grant reply %q", line)
	require.Regexp(t, tokenRE, f[1], "token in %q", line)
	require.Regexp(t, uintRE, f[2], "lease in %q", line)
	g := grant{Token: f[1]}
	var err error
	g.Lease, err = strconv.ParseInt(f[2], 10, 64)
	require.NoError(t, err)
	if want == 4 {
		require.Regexp(t, fenceRE, f[3], "fence in %q", line)
		g.Fence, err = strconv.ParseUint(f[3], 10, 64)
		require.NoError(t, err)
	}
	return g
}

// renew parses `ok <lease> <fence>` (or `ok <lease>` with NoFences).
func (e *env) renew(t testing.TB, line string) (lease int64, fence uint64) {
	t.Helper()
	f := strings.Split(line, " ")
	want := 3
	if e.noFences {
		want = 2
	}
	require.Len(t, f, want, "renew reply %q", line)
	require.Equal(t, "ok", f[0], "renew reply %q", line)
	require.Regexp(t, uintRE, f[1], "lease in %q", line)
	lease, err := strconv.ParseInt(f[1], 10, 64)
	require.NoError(t, err)
	if want == 3 {
		require.Regexp(t, fenceRE, f[2], "fence in %q", line)
		fence, err = strconv.ParseUint(f[2], 10, 64)
		require.NoError(t, err)
	}
	return lease, fence
}

// lock sends `l key arg` and requires a grant.
func (e *env) lock(t testing.TB, c *rawConn, key, arg string) grant {
	t.Helper()
	return e.grant(t, c.do("l", key, arg), "ok")
}

// ---------------------------------------------------------------------------
// stats

type lockStat struct {
	Key             string  `json:"key"`
	OwnerConnID     uint64  `json:"owner_conn_id"`
	LeaseExpiresInS float64 `json:"lease_expires_in_s"`
	Waiters         int     `json:"waiters"`
	Fence           *uint64 `json:"fence"`
}

type semStat struct {
	Key     string `json:"key"`
	Limit   int    `json:"limit"`
	Holders int    `json:"holders"`
	Waiters int    `json:"waiters"`
}

type idleStat struct {
	Key   string  `json:"key"`
	IdleS float64 `json:"idle_s"`
}

type chanStat struct {
	Pattern   string `json:"pattern"`
	Group     string `json:"group"`
	Listeners int    `json:"listeners"`
}

type statsDoc struct {
	Connections    int        `json:"connections"`
	Locks          []lockStat `json:"locks"`
	Semaphores     []semStat  `json:"semaphores"`
	IdleLocks      []idleStat `json:"idle_locks"`
	IdleSemaphores []idleStat `json:"idle_semaphores"`
	SignalChannels []chanStat `json:"signal_channels"`

	JSON string `json:"-"` // the raw JSON after "ok "
}

// stats sends `stats` and decodes the reply.
func (c *rawConn) stats() statsDoc {
	c.t.Helper()
	l := c.do("stats", "_", "")
	require.True(c.t, strings.HasPrefix(l, "ok {"), "stats reply %q", trunc(l))
	var st statsDoc
	st.JSON = strings.TrimPrefix(l, "ok ")
	require.NoError(c.t, json.Unmarshal([]byte(st.JSON), &st), "stats JSON %q", trunc(st.JSON))
	return st
}

func (s statsDoc) lock(key string) *lockStat {
	for i := range s.Locks {
		if s.Locks[i].Key == key {
			return &s.Locks[i]
		}
	}
	return nil
}

func (s statsDoc) sem(key string) *semStat {
	for i := range s.Semaphores {
		if s.Semaphores[i].Key == key {
			return &s.Semaphores[i]
		}
	}
	return nil
}

func findIdle(list []idleStat, key string) *idleStat {
	for i := range list {
		if list[i].Key == key {
			return &list[i]
		}
	}
	return nil
}

func (s statsDoc) channel(pattern, group string) *chanStat {
	for i := range s.SignalChannels {
		if s.SignalChannels[i].Pattern == pattern && s.SignalChannels[i].Group == group {
			return &s.SignalChannels[i]
		}
	}
	return nil
}

// mustLock returns the locks[] entry of key, failing the test when missing.
func mustLock(t testing.TB, s statsDoc, key string) *lockStat {
	t.Helper()
	l := s.lock(key)
	require.NotNil(t, l, "%s missing from stats locks: %s", key, trunc(s.JSON))
	return l
}

// mustSem returns the semaphores[] entry of key, failing the test when missing.
func mustSem(t testing.TB, s statsDoc, key string) *semStat {
	t.Helper()
	m := s.sem(key)
	require.NotNil(t, m, "%s missing from stats semaphores: %s", key, trunc(s.JSON))
	return m
}

// mustChannel returns the signal_channels[] entry, failing the test when missing.
func mustChannel(t testing.TB, s statsDoc, pattern, group string) *chanStat {
	t.Helper()
	c := s.channel(pattern, group)
	require.NotNil(t, c, "%s/%q missing from stats signal_channels: %s", pattern, group, trunc(s.JSON))
	return c
}

// waiters returns the waiter count of an active lock or semaphore key (0 when
// the key is not active).
func (s statsDoc) waiters(key string) int {
	if l := s.lock(key); l != nil {
		return l.Waiters
	}
	if m := s.sem(key); m != nil {
		return m.Waiters
	}
	return 0
}

// waitStats polls stats on c until cond holds or d passes.
func waitStats(t testing.TB, c *rawConn, d time.Duration, what string, cond func(statsDoc) bool) statsDoc {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		st := c.stats()
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			require.FailNow(t, "timed out waiting for stats: "+what, "last stats: %s", trunc(st.JSON))
		}
		time.Sleep(15 * time.Millisecond)
	}
}

// waitWaiters waits until key has exactly n waiters.
func waitWaiters(t testing.TB, obs *rawConn, key string, n int) {
	t.Helper()
	waitStats(t, obs, replyWait, key+" waiters == "+strconv.Itoa(n), func(s statsDoc) bool { return s.waiters(key) == n })
}

// ---------------------------------------------------------------------------
// timing

func between(t testing.TB, got, lo, hi time.Duration, what string) {
	t.Helper()
	require.GreaterOrEqual(t, got, lo, "%s took %v, expected at least %v", what, got, lo)
	require.Less(t, got, hi, "%s took %v, expected less than %v", what, got, hi)
}

// ---------------------------------------------------------------------------
// TLS

// selfSignedTLS returns a server config with a fresh self-signed certificate
// for 127.0.0.1 and a client config that trusts exactly that certificate.
func selfSignedTLS(t testing.TB) (server, client *tls.Config) {
	t.Helper()
	c, err := dflockdtest.NewTestCert()
	require.NoError(t, err)
	client = c.ClientConfig()
	client.ServerName = "127.0.0.1"
	return c.ServerConfig(), client
}
