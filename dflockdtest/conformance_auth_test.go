package dflockdtest_test

// Auth, TLS and robustness against bad requests (protocol.md §1 "Malformed
// requests", §5; checklist 63–69).

import (
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dfstream/dfstream/dflockdtest"
)

// expectAuthRejected asserts `error_auth` then a close about 100 ms later.
func expectAuthRejected(t *testing.T, c *rawConn, what string) {
	t.Helper()
	// Timed from before the reply is read: a reader slowed by a loaded
	// machine must not eat into the pause it measures.
	start := time.Now()
	require.Equal(t, "error_auth", c.lineWithin(replyWait), what)
	c.expectEOF(replyWait)
	between(t, time.Since(start), 50*time.Millisecond, 5*time.Second, "close after error_auth ("+what+")")
}

// Checklist 63.
func TestAuthWithRightTokenAnswersOKThenLockWorks(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{AuthToken: localToken})
	c := e.dialRaw(t)
	c.send("auth\n_\n" + e.token + "\n")
	require.Equal(t, "ok", c.reply())
	e.lock(t, c, key(t), "0")
	require.True(t, strings.HasPrefix(c.do("stats", "_", ""), "ok {"))
}

// Checklist 64.
func TestAuthWithWrongTokenAnswersErrorAuthAndClosesAfterPause(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{AuthToken: localToken})
	for _, bad := range []string{"wrong", e.token + "x", e.token[:len(e.token)-1], strings.ToUpper(e.token), "", e.token + " x"} {
		c := e.dialRaw(t)
		c.req("auth", "_", bad)
		expectAuthRejected(t, c, "token "+bad)
	}
}

// Checklist 65.
func TestCommandBeforeAuthAnswersErrorAuthAndIsNotExecuted(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{AuthToken: localToken})
	k := key(t)
	c := e.dialRaw(t)
	c.req("l", k, "0")
	expectAuthRejected(t, c, "l before auth")
	o := e.dial(t)
	e.lock(t, o, k, "0") // the lock was not taken
	for _, first := range []string{reqBytes("stats", "_", ""), reqBytes("ping", "_", ""), reqBytes("foo", "k", ""), reqBytes("l", k, "x"), reqBytes("listen", k, ""), reqBytes("signal", k, "x")} {
		c := e.dialRaw(t)
		c.send(first)
		expectAuthRejected(t, c, "first request "+first)
	}
}

// §5 auth: an over-long first request answers error_auth too.
func TestOverLongRequestBeforeAuthAnswersErrorAuth(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{AuthToken: localToken})
	c := e.dialRaw(t)
	c.send("auth\n_\n" + strings.Repeat("t", 257) + "\n")
	expectAuthRejected(t, c, "257-byte token line")
	c = e.dialRaw(t)
	c.send("l\n" + paddedKey(t, 257) + "\n0\n")
	expectAuthRejected(t, c, "257-byte key before auth")
}

// §5 auth: a read timeout before auth answers error_auth.
func TestReadTimeoutBeforeAuthAnswersErrorAuth(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{AuthToken: localToken, ReadTimeout: 400 * time.Millisecond})
	start := time.Now()
	c := e.dialRaw(t)
	expectAuthRejected(t, c, "silent unauthenticated connection")
	between(t, time.Since(start), 300*time.Millisecond, 10*time.Second, "error_auth after the read timeout")
	// After auth the read timeout answers plain error.
	c = e.dial(t)
	require.Equal(t, "error", c.lineWithin(replyWait))
	c.expectEOF(replyWait)
}

// Checklist 66.
func TestAuthTokenPaddedWithBlanksIsAccepted(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{AuthToken: localToken})
	c := e.dialRaw(t)
	c.send("auth\n_\n   " + e.token + " \t \n")
	require.Equal(t, "ok", c.reply())
	e.lock(t, c, key(t), "0")
}

// Checklist 67.
func TestSecondAuthAnswersErrorAndKeepsConnection(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{AuthToken: localToken})
	c := e.dial(t)
	require.Equal(t, "error", c.do("auth", "_", e.token))
	require.Equal(t, "error", c.do("auth", "_", "wrong"))
	e.lock(t, c, key(t), "0")
}

// Checklist 68.
func TestAuthWithAuthOffAnswersErrorAndKeepsConnection(t *testing.T) {
	t.Parallel()
	e := authOffTarget(t, dflockdtest.Config{})
	c := e.dial(t)
	require.Equal(t, "error", c.do("auth", "_", "anything"))
	require.Equal(t, "error", c.do("auth", "_", ""))
	e.lock(t, c, key(t), "0")
}

// Checklist 69.
func TestAuthWithEmptyKeyLineIsAccepted(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{AuthToken: localToken})
	c := e.dialRaw(t)
	c.send("auth\n\n" + e.token + "\n")
	require.Equal(t, "ok", c.reply())
	c2 := e.dialRaw(t)
	c2.send("auth\nany key at all\n" + e.token + "\n")
	require.Equal(t, "ok", c2.reply())
	e.lock(t, c, key(t), "0")
}

// The title requirement: bad requests sent raw (malformed numbers, over-long
// lines, unknown commands, wrong auth, garbage) get the replies protocol.md
// gives, and the server keeps serving a healthy client interleaved with them.
func TestBadRequestsGetDocumentedRepliesAndOtherClientsKeepBeingServed(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{AuthToken: localToken})
	k := key(t)
	h := e.dial(t)
	g := e.lock(t, h, k, "0 60")
	healthy := func(after string) {
		t.Helper()
		l, f := e.renew(t, h.do("n", k, g.Token+" 60"))
		require.EqualValues(t, 60, l, "healthy client after %s", after)
		require.Equal(t, g.Fence, f)
		st := h.stats()
		require.NotNil(t, st.lock(k), "healthy client lost its lock after %s", after)
	}

	// Malformed numbers: error, connection kept.
	b := e.dial(t)
	for _, r := range [][3]string{{"l", k, "1.5"}, {"l", k, "-1"}, {"l", k, "0 0"}, {"l", k, "1 2 3"}, {"l", k, "x"},
		{"sl", k, "0 0"}, {"n", k, g.Token + " 0"}, {"e", k, "0"}, {"w", k, ""}, {"l", k, "9223372037"}} {
		require.Equal(t, "error", b.do(r[0], r[1], r[2]), "%s %q", r[0], r[2])
		healthy(r[0] + " " + r[2])
	}
	// Unknown commands and bad keys: error, connection kept.
	for _, cmd := range unknownCommands {
		require.Equal(t, "error", b.do(cmd, k, "0"), "command %q", cmd)
	}
	require.Equal(t, "error", b.do("l", "a b", "0"))
	require.Equal(t, "error", b.do("l", "", "0"))
	healthy("unknown commands")
	require.Equal(t, "timeout", b.do("l", k, "0"), "the bad client is still served")

	// Over-long lines: error, then close.
	for _, req := range []string{
		"l\n" + paddedKey(t, 257) + "\n0\n",
		strings.Repeat("x", 300) + "\n",
		"l\n" + k + "\n" + strings.Repeat("9", 1000) + "\n",
	} {
		c := e.dial(t)
		c.send(req)
		require.Equal(t, "error", c.reply())
		c.expectEOF(replyWait)
		healthy("an over-long line")
	}

	// Wrong auth, no auth, garbage before auth: error_auth, then close.
	if e.token != "" {
		for _, first := range []string{
			reqBytes("auth", "_", "wrong"),
			reqBytes("l", k, "0"),
			"\x00\xff\xfe\n\x01\n\x02\n",
			"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		} {
			c := e.dialRaw(t)
			c.send(first)
			require.Equal(t, "error_auth", c.lineWithin(replyWait), "first request %q", first)
			c.expectEOF(replyWait)
			healthy("a rejected auth")
		}
	}

	// Peers that vanish mid-request or right after connecting.
	for _, partial := range []string{"", "l\n", "l\n" + k + "\n", "l\n" + k + "\n0"} {
		nc, err := e.tryDial()
		require.NoError(t, err)
		if partial != "" {
			_, _ = nc.Write([]byte(partial))
		}
		require.NoError(t, nc.Close())
		healthy("a peer closing mid-request")
	}

	// Still the sole holder, and a clean release.
	require.Equal(t, "timeout", b.do("l", k, "0"))
	require.Equal(t, "ok", h.do("r", k, g.Token))
	e.lock(t, b, k, "0")
}

// §5 TLS: with a certificate the same protocol is spoken over TLS.
func TestTLSServesTheSameProtocol(t *testing.T) {
	t.Parallel()
	serverTLS, clientTLS := selfSignedTLS(t)
	e := target(t, dflockdtest.Config{TLS: serverTLS, AuthToken: localToken})
	e.clientTLS = clientTLS
	k := key(t)
	a := e.dial(t) // auth over TLS
	b := e.dial(t)
	g := e.lock(t, a, k, "0 60")
	require.Equal(t, "timeout", b.do("l", k, "0"))
	b.send(reqBytes("l", k, "5") + reqBytes("stats", "_", ""))
	require.Equal(t, "ok", a.do("r", k, g.Token))
	e.grant(t, b.reply(), "ok")
	require.True(t, strings.HasPrefix(b.reply(), "ok {"))
	// Signals over TLS.
	ch := k + ".a"
	require.Equal(t, "ok", a.do("listen", ch, ""))
	require.Equal(t, "ok 1", b.do("signal", ch, "  tls payload "))
	require.Equal(t, "sig "+ch+"   tls payload ", a.sig())
	// Over-long line over TLS: error then close.
	c := e.dial(t)
	c.req("l", paddedKey(t, 257), "0")
	require.Equal(t, "error", c.reply())
	c.expectEOF(replyWait)
	// The connection state is TLS ≥ 1.2 with the test's certificate.
	state := a.c.(*tls.Conn).ConnectionState()
	assert.GreaterOrEqual(t, state.Version, uint16(tls.VersionTLS12))
	require.NotEmpty(t, state.PeerCertificates)
	assert.Equal(t, serverTLS.Certificates[0].Leaf, state.PeerCertificates[0], "the server presents the test's certificate")
}

// §5 TLS: every connection must speak TLS; a plain request never gets a
// protocol reply.
func TestTLSServerDoesNotAnswerPlainTCP(t *testing.T) {
	t.Parallel()
	serverTLS, clientTLS := selfSignedTLS(t)
	e := target(t, dflockdtest.Config{TLS: serverTLS})
	nc, err := net.DialTimeout("tcp", e.addr, replyWait)
	require.NoError(t, err)
	c := wrapConn(t, nc)
	c.send(reqBytes("stats", "_", ""))
	_ = c.c.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 4096)
	n, _ := c.r.Read(buf)
	assert.NotContains(t, string(buf[:n]), "ok", "a plain-TCP request was answered")
	assert.NotContains(t, string(buf[:n]), "error\n")
	// And TLS clients are still served.
	e.clientTLS = clientTLS
	d := e.dial(t)
	e.lock(t, d, key(t), "0")
}
