package dflockdtest_test

// Pub/sub signals [RF] (protocol.md §4; checklist 74–92). Every channel starts
// with the test's unique key as its first token, so tests can share one
// external server; patterns made only of wildcards (`>`, `*.*`) are used
// literally only against the in-process server.

import (
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dfstream/dfstream/dflockdtest"
)

// Checklist 74 (and §4: group names are trimmed, inner spaces kept).
func TestStatsListsListenPatternEscapedAndGroups(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	p := key(t)
	l, m := e.dial(t), e.dial(t)
	require.Equal(t, "ok", l.do("listen", p+".a.>", ""))
	require.Equal(t, "ok", m.do("listen", p+".a.>", ""))
	require.Equal(t, "ok", l.do("listen", p+".g", "  my group\t"))
	require.Equal(t, "ok", m.do("listen", p+".g", "my group"))
	st := l.stats()
	assert.Contains(t, st.JSON, `"pattern":"`+p+`.a.\u003e"`)
	c := st.channel(p+".a.>", "")
	require.NotNil(t, c, "stats: %s", trunc(st.JSON))
	assert.Equal(t, 2, c.Listeners)
	g := st.channel(p+".g", "my group")
	require.NotNil(t, g, "group entry missing: %s", trunc(st.JSON))
	assert.Equal(t, 2, g.Listeners)
	assert.Nil(t, st.channel(p+".g", ""), "no non-grouped entry for a grouped-only pattern")
	assert.NotContains(t, st.JSON, `"group":""`, "group is omitted when empty")
	// unlisten takes the trimmed group name too.
	require.Equal(t, "ok", l.do("unlisten", p+".g", " my group "))
	assert.Equal(t, 1, mustChannel(t, l.stats(), p+".g", "my group").Listeners)
}

// Checklist 75.
func TestSignalReachesListenerAndCountsIt(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	ch := key(t) + ".a.b"
	l, s := e.dial(t), e.dial(t)
	require.Equal(t, "ok", l.do("listen", ch, ""))
	require.Equal(t, "ok 1", s.do("signal", ch, "hello"))
	require.Equal(t, "sig "+ch+" hello", l.sig())
	// The signaller's own connection gets nothing; a listener also signals.
	s.expectSilence(quiet)
	require.Equal(t, "ok 1", l.do("signal", ch, "self"))
	require.Equal(t, "sig "+ch+" self", l.sig())
}

// Checklist 76.
func TestSignalPayloadArrivesByteIdentical(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	ch := key(t) + ".a"
	l, s := e.dial(t), e.dial(t)
	require.Equal(t, "ok", l.do("listen", ch, ""))
	for _, payload := range []string{"  x  y\tz ", "\t", "a b c", "é\x00\x01\xff", "sig " + ch + " fake", "{\"json\": [1, 2]}", "x\u00a0y\u2003"} {
		require.Equal(t, "ok 1", s.do("signal", ch, payload), "payload %q", payload)
		require.Equal(t, "sig "+ch+" "+payload, l.sig(), "payload %q", payload)
	}
	// [RF] a CR inside the payload silently disappears.
	s.send("signal\n" + ch + "\nx\ry\r\n")
	require.Equal(t, "ok 1", s.reply())
	require.Equal(t, "sig "+ch+" xy", l.sig())
}

// Checklist 77.
func TestSignalWithWildcardOrEmptyPayloadAnswersErrorAndBlankPayloadIsOK(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	p := key(t)
	s := e.dial(t)
	for _, ch := range []string{p + ".a.*", p + ".>", p + ".a*", p + ".a>b", "*", ">", p + " x", ""} {
		assert.Equal(t, "error", s.do("signal", ch, "x"), "channel %q", ch)
	}
	assert.Equal(t, "error", s.do("signal", p+".a.b", ""))
	assert.Equal(t, "ok 0", s.do("signal", p+".a.b", "   "))
	// Empty tokens are fine in channels.
	assert.Equal(t, "ok 0", s.do("signal", p+"..b.", "x"))
}

// Checklist 78.
func TestSignalPayloadOf256BytesIsDeliveredAnd257ClosesTheConnection(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	ch := key(t) + ".a"
	l, s := e.dial(t), e.dial(t)
	require.Equal(t, "ok", l.do("listen", ch, ""))
	payload := strings.Repeat("p", 255) + "!"
	require.Equal(t, "ok 1", s.do("signal", ch, payload))
	require.Equal(t, "sig "+ch+" "+payload, l.sig())
	s.req("signal", ch, payload+"q")
	require.Equal(t, "error", s.reply())
	s.expectEOF(replyWait)
	l.expectSilence(quiet)
}

// Checklist 79.
func TestListenPatternRules(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	p := key(t)
	c := e.dial(t)
	// Invalid patterns register nothing, so they are safe to send literally.
	for _, pat := range []string{"a.>.b", "a*", ">a", "a.>>", "*a", "a.b*", ">.a", "a.>.>", p + ".>.x", p + ".x*"} {
		assert.Equal(t, "error", c.do("listen", pat, ""), "pattern %q", pat)
	}
	valid := []string{">", "*.*", "a..b", "*", ".", p + ".*.>", p + "..x"}
	if !e.local() {
		valid = []string{p + ".>", p + ".*.*", p + ".a..b", p + ".*", p + ".", p + ".*.>", p + "..x"}
	}
	for _, pat := range valid {
		assert.Equal(t, "ok", c.do("listen", pat, ""), "pattern %q", pat)
	}
	// unlisten checks only the key rules.
	assert.Equal(t, "ok", c.do("unlisten", "a*", ""))
	assert.Equal(t, "error", c.do("unlisten", "a b", ""))
	assert.Equal(t, "error", c.do("unlisten", "", ""))
	// The connection is still fine.
	require.True(t, strings.HasPrefix(c.do("stats", "_", ""), "ok {"))
}

// Checklist 80.
func TestWildcardMatching(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	p := key(t)
	gt, star, lit, s := e.dial(t), e.dial(t), e.dial(t), e.dial(t)
	require.Equal(t, "ok", gt.do("listen", p+".a.>", ""))
	require.Equal(t, "ok", star.do("listen", p+".a.*", ""))
	require.Equal(t, "ok", lit.do("listen", p+".a.b", ""))
	for _, tc := range []struct {
		ch   string
		want []*rawConn
	}{
		{p + ".a.b", []*rawConn{gt, star, lit}},
		{p + ".a.b.c", []*rawConn{gt}},
		{p + ".a", nil},
		{p + ".a.c", []*rawConn{gt, star}},
		{p + ".a.", []*rawConn{gt, star}}, // one empty token
		{p + ".a..", []*rawConn{gt}},
		{p + ".b.b", nil},
		{p + ".a.bb", []*rawConn{gt, star}},
	} {
		require.Equal(t, "ok "+strconv.Itoa(len(tc.want)), s.do("signal", tc.ch, "x"), "signal %q", tc.ch)
		for _, l := range tc.want {
			require.Equal(t, "sig "+tc.ch+" x", l.sig(), "signal %q", tc.ch)
		}
	}
	expectSilenceAll(quiet, gt, star, lit)
	if e.local() {
		// `>` alone matches every channel, `*` every one-token channel.
		all, one := e.dial(t), e.dial(t)
		require.Equal(t, "ok", all.do("listen", ">", ""))
		require.Equal(t, "ok", one.do("listen", "*", ""))
		require.Equal(t, "ok 2", s.do("signal", p, "y"))
		require.Equal(t, "sig "+p+" y", all.sig())
		require.Equal(t, "sig "+p+" y", one.sig())
		require.Equal(t, "ok 1", s.do("signal", "x.y", "z"))
		require.Equal(t, "sig x.y z", all.sig())
		one.expectSilence(quiet)
	}
}

// Checklist 81.
func TestOverlappingPlainSubscriptionsDeliverOneCopy(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	p := key(t)
	l, s := e.dial(t), e.dial(t)
	for _, pat := range []string{p + ".a.b", p + ".a.*", p + ".a.>"} {
		require.Equal(t, "ok", l.do("listen", pat, ""))
	}
	require.Equal(t, "ok 1", s.do("signal", p+".a.b", "once"))
	require.Equal(t, "sig "+p+".a.b once", l.sig())
	l.expectSilence(quiet)
}

// Checklist 82.
func TestPlainAndGroupSubscriptionDeliverTwoCopies(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	ch := key(t) + ".a.b"
	l, s := e.dial(t), e.dial(t)
	require.Equal(t, "ok", l.do("listen", ch, ""))
	require.Equal(t, "ok", l.do("listen", ch, "g"))
	require.Equal(t, "ok 2", s.do("signal", ch, "twice"))
	require.Equal(t, "sig "+ch+" twice", l.sig())
	require.Equal(t, "sig "+ch+" twice", l.sig())
	l.expectSilence(quiet)
}

// Checklist 83.
func TestGroupDeliversRoundRobinInJoinOrder(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	ch := key(t) + ".a.b"
	l, m, n, s := e.dial(t), e.dial(t), e.dial(t), e.dial(t)
	for _, c := range []*rawConn{l, m, n} {
		require.Equal(t, "ok", c.do("listen", ch, "g"))
	}
	order := []*rawConn{l, m, n, l, m, n, l}
	for i, c := range order {
		payload := "n" + strconv.Itoa(i)
		require.Equal(t, "ok 1", s.do("signal", ch, payload))
		require.Equal(t, "sig "+ch+" "+payload, c.sig(), "signal %d", i)
	}
	expectSilenceAll(quiet, l, m, n)
}

// Checklist 84.
func TestSameGroupNameOnDifferentPatternsIsTwoGroups(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	p := key(t)
	m, n, s := e.dial(t), e.dial(t), e.dial(t)
	require.Equal(t, "ok", m.do("listen", p+".a.b", "g"))
	require.Equal(t, "ok", n.do("listen", p+".a.*", "g"))
	require.Equal(t, "ok 2", s.do("signal", p+".a.b", "x"))
	require.Equal(t, "sig "+p+".a.b x", m.sig())
	require.Equal(t, "sig "+p+".a.b x", n.sig())
	require.Equal(t, "ok 1", s.do("signal", p+".a.c", "y"))
	require.Equal(t, "sig "+p+".a.c y", n.sig())
	m.expectSilence(quiet)
}

// Checklist 85.
func TestDuplicateListenIsIdempotent(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	ch := key(t) + ".a.b"
	l, s := e.dial(t), e.dial(t)
	require.Equal(t, "ok", l.do("listen", ch, ""))
	require.Equal(t, "ok", l.do("listen", ch, ""))
	require.Equal(t, "ok", l.do("listen", ch, "g"))
	require.Equal(t, "ok", l.do("listen", ch, "g"))
	require.Equal(t, "ok 2", s.do("signal", ch, "x"))
	l.sig()
	l.sig()
	l.expectSilence(quiet)
	st := s.stats()
	assert.Equal(t, 1, mustChannel(t, st, ch, "").Listeners)
	assert.Equal(t, 1, mustChannel(t, st, ch, "g").Listeners)
	// One unlisten undoes the duplicate.
	require.Equal(t, "ok", l.do("unlisten", ch, ""))
	require.Equal(t, "ok 1", s.do("signal", ch, "y"))
}

// Checklist 86.
func TestUnlistenOfUnknownPatternAnswersOK(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	c := e.dial(t)
	require.Equal(t, "ok", c.do("unlisten", "nope", ""))
	require.Equal(t, "ok", c.do("unlisten", key(t)+".nope", "g"))
	require.Equal(t, "ok", c.do("unlisten", key(t)+".>", ""))
}

// Checklist 87.
func TestUnlistenGroupKeepsPlainSubscription(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	ch := key(t) + ".a.b"
	l, s := e.dial(t), e.dial(t)
	require.Equal(t, "ok", l.do("listen", ch, ""))
	require.Equal(t, "ok", l.do("listen", ch, "g"))
	require.Equal(t, "ok", l.do("unlisten", ch, "g"))
	require.Equal(t, "ok 1", s.do("signal", ch, "x"))
	require.Equal(t, "sig "+ch+" x", l.sig())
	l.expectSilence(quiet)
	// And unlisten without group keeps the group membership.
	require.Equal(t, "ok", l.do("listen", ch, "g"))
	require.Equal(t, "ok", l.do("unlisten", ch, ""))
	require.Equal(t, "ok 1", s.do("signal", ch, "y"))
	require.Equal(t, "sig "+ch+" y", l.sig())
	require.Equal(t, "ok", l.do("unlisten", ch, "g"))
	require.Equal(t, "ok 0", s.do("signal", ch, "z"))
	st := s.stats()
	assert.Nil(t, st.channel(ch, ""))
	assert.Nil(t, st.channel(ch, "g"))
}

// Checklist 88.
func TestSignalAfterListenerDisconnectsCountsZero(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	ch := key(t) + ".a"
	l, g, s := e.dial(t), e.dial(t), e.dial(t)
	require.Equal(t, "ok", l.do("listen", ch, ""))
	require.Equal(t, "ok", g.do("listen", ch, "grp"))
	require.Equal(t, "ok 2", s.do("signal", ch, "x"))
	l.close()
	g.close()
	waitStats(t, s, replyWait, "subscriptions removed", func(st statsDoc) bool {
		return st.channel(ch, "") == nil && st.channel(ch, "grp") == nil
	})
	require.Equal(t, "ok 0", s.do("signal", ch, "y"))
	if e.local() {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(s.stats().JSON), &m))
		assert.Nil(t, m["signal_channels"], "signal_channels is null again")
	}
}

// Checklist 89 (and §3: the limit is checked before the duplicate test).
func TestMaxSubscriptionsRefusesOneMoreListen(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{MaxSubscriptions: 2})
	p := key(t)
	c, s := e.dial(t), e.dial(t)
	require.Equal(t, "ok", c.do("listen", p+".a", ""))
	require.Equal(t, "ok", c.do("listen", p+".b", "g"))
	require.Equal(t, "error", c.do("listen", p+".c", ""))
	require.Equal(t, "error", c.do("listen", p+".a", ""), "even a duplicate once the limit is reached")
	require.True(t, strings.HasPrefix(c.do("stats", "_", ""), "ok {"), "connection kept")
	require.Equal(t, "ok 1", s.do("signal", p+".a", "x"))
	require.Equal(t, "ok 0", s.do("signal", p+".c", "x"))
	require.Equal(t, "sig "+p+".a x", c.sig())
	// The limit is per connection, and unlisten frees a place.
	require.Equal(t, "ok", s.do("listen", p+".c", ""))
	require.Equal(t, "ok", c.do("unlisten", p+".a", ""))
	require.Equal(t, "ok", c.do("listen", p+".c", ""))
}

// Checklist 90: pushes come from a queue of their own, so one queued before
// a request may be read before or after that request's reply. The `sig `
// prefix tells them apart; no order between them is assumed (the in-process
// server may keep one, the real one does not).
func TestPushesAndRepliesAreToldApartByPrefixInAnyOrder(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	ch := key(t) + ".a"
	l, s := e.dial(t), e.dial(t)
	require.Equal(t, "ok", l.do("listen", ch, ""))
	for i := 0; i < 20; i++ {
		payload := "p" + strconv.Itoa(i)
		require.Equal(t, "ok 1", s.do("signal", ch, payload))
		l.req("l", key(t, strconv.Itoa(i)), "0")
		var reply, push string
		for reply == "" || push == "" {
			line := l.lineWithin(replyWait)
			if strings.HasPrefix(line, "sig ") {
				require.Empty(t, push, "one push per signal: %q", line)
				push = line
				continue
			}
			require.Empty(t, reply, "one reply per request: %q", line)
			reply = line
		}
		require.Equal(t, "sig "+ch+" "+payload, push)
		e.grant(t, reply, "ok")
	}
}

// Checklist 91.
func TestIdleListenerIsDroppedAfterReadTimeoutButPingingOneIsNot(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{ReadTimeout: 800 * time.Millisecond})
	ch := key(t) + ".a"
	idle, pinger, s := e.dial(t), e.dial(t), e.dial(t)
	require.Equal(t, "ok", idle.do("listen", ch, ""))
	require.Equal(t, "ok", pinger.do("listen", ch, ""))
	start := time.Now()
	for time.Since(start) < 1600*time.Millisecond { // twice the read timeout
		time.Sleep(200 * time.Millisecond) // a quarter of it
		require.Equal(t, "ok", pinger.do("ping", "_", ""))
		require.Equal(t, "ok", s.do("ping", "_", ""))
	}
	require.Equal(t, "error", idle.lineWithin(replyWait), "idle listener gets the unsolicited error")
	idle.expectEOF(replyWait)
	require.Equal(t, "ok 1", s.do("signal", ch, "alive"))
	require.Equal(t, "sig "+ch+" alive", pinger.sig())
}

// §2 ping: any request re-arms the read deadline, so even an `error` reply
// to ping (older servers, Config.PingError) keeps an idle listener alive.
func TestPingAnsweredErrorStillKeepsListenerAlive(t *testing.T) {
	t.Parallel()
	// Pings every quarter of the read timeout for two of them: 1.5 s of
	// slack for a loaded machine before the server would drop a listener.
	const rt = 2 * time.Second
	e := target(t, dflockdtest.Config{ReadTimeout: rt, PingError: true})
	ch := key(t) + ".a"
	l, s := e.dial(t), e.dial(t)
	require.Equal(t, "ok", l.do("listen", ch, ""))
	start := time.Now()
	for time.Since(start) < 2*rt {
		time.Sleep(rt / 4)
		require.Equal(t, "error", l.do("ping", "_", ""))
		require.Equal(t, "error", s.do("ping", "_", ""))
	}
	require.Equal(t, "ok 1", s.do("signal", ch, "alive"))
	require.Equal(t, "sig "+ch+" alive", l.sig())
}

// Checklist 92: a listener that stops reading during a flood ends up a black
// hole: the server discards every later push to it while `signal` still
// counts it.
//
// How the suite knows the push write has failed without timing guesses: the
// listener never reads, so while its pushes are still being written the pipe
// (its small receive buffer plus the server's socket send buffer, at most
// tcp_wmem's maximum) fills up, the 64-line push queue fills, and `signal`
// answers `ok 0`. Once more than that capacity has been answered `ok 1` in a
// row after the last `ok 0`, those copies cannot have been written: they are
// being discarded.
func TestListenerThatStopsReadingDuringFloodBecomesBlackHole(t *testing.T) {
	t.Parallel()
	// A long read timeout: a loaded machine can stretch the flood and the
	// drain past the default, which would close the listener mid-test.
	e := target(t, dflockdtest.Config{WriteTimeout: 200 * time.Millisecond, ReadTimeout: 5 * time.Minute})
	ch := key(t) + ".a"
	l := e.dialSmallRcvBuf(t, 4096)
	s := e.dial(t)
	require.Equal(t, "ok", l.do("listen", ch, ""))
	payload := strings.Repeat("f", 256)
	const perBatch = 64
	batch := strings.Repeat(reqBytes("signal", ch, payload), perBatch)
	lineLen := len("sig " + ch + " " + payload + "\n")
	pipeBytes := 3*maxSendBuffer() + (1 << 20)

	deadline := time.Now().Add(60 * time.Second)
	sent, zeros, onesInARow := 0, 0, 0
	for zeros == 0 || onesInARow*lineLen <= pipeBytes {
		require.True(t, time.Now().Before(deadline),
			"no black hole after %d signals (%d answered ok 0, %d ok 1 in a row)", sent, zeros, onesInARow)
		s.send(batch)
		for i := 0; i < perBatch; i++ {
			switch r := s.reply(); r {
			case "ok 1":
				onesInARow++
			case "ok 0": // push queue full: copy dropped, not counted
				zeros++
				onesInARow = 0
			default:
				require.Failf(t, "unexpected signal reply", "%q", r)
			}
			sent++
		}
	}
	require.Equal(t, "ok 1", s.do("signal", ch, "MARK"), "the black hole is still counted")

	// Drain everything that reached the listener: the marker is not there.
	got := 0
	drainBy := time.Now().Add(60 * time.Second)
	for time.Now().Before(drainBy) {
		line, err := l.readLine(time.Second)
		if err != nil {
			break
		}
		got++
		require.NotEqual(t, "sig "+ch+" MARK", line, "a push after the write failure was delivered")
	}
	t.Logf("flood: %d signals (%d refused with ok 0), %d lines reached the stalled listener, partial tail %d bytes",
		sent, zeros, got, len(l.partial))
	l.partial = "" // a push cut by the failed write leaves an incomplete line
	assert.Less(t, got, sent-zeros)
	// Still open and subscribed: requests are answered, signal counts it,
	// nothing arrives.
	require.True(t, strings.HasPrefix(l.do("stats", "_", ""), "ok {"))
	require.Equal(t, "ok 1", s.do("signal", ch, "after"))
	l.expectSilence(quiet)

	// §4: the refused copies cancelled the listener's context, which closes
	// it only when a later blocking command has to wait.
	held := key(t, "held")
	e.lock(t, s, held, "0")
	require.Equal(t, "timeout", l.do("l", held, "0"), "a try-once request does not wait")
	start := time.Now()
	l.req("l", held, "5")
	l.expectEOF(replyWait)
	assert.Less(t, time.Since(start), 3*time.Second, "closed when the wait starts, not at its timeout")
}

// maxSendBuffer is the kernel's largest TCP send buffer (tcp_wmem max),
// 4 MiB when unknown.
func maxSendBuffer() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_wmem")
	if err == nil {
		if f := strings.Fields(string(b)); len(f) == 3 {
			if n, err := strconv.Atoi(f[2]); err == nil && n > 0 {
				return n
			}
		}
	}
	return 4 << 20
}
