package dflockdtest_test

// Conformance suite for dflockd servers of the RF generation, checked item by
// item against the checklist of /work/shared/protocol.md §8 over real TCP with
// raw bytes (no wire package: the suite checks the bytes independently).
//
// Target selection (conformance_helpers_test.go, target/needLocal):
//   - default: every test starts its own in-process dflockdtest server with the
//     settings it needs (short timeouts and intervals, small limits, auth, TLS).
//   - DFLOCKD_TEST_ADDR=host:port: every test talks to that external server
//     instead (DFLOCKD_TEST_AUTH_TOKEN: its auth token, sent first on every
//     connection; DFLOCKD_TEST_DEFAULT_LEASE: its default lease in seconds if
//     not 33). Tests that need fault helpers or server settings they cannot
//     know (read timeout, sweep/GC intervals, max-* limits, auth on/off, TLS,
//     NoFences, PingError, …) are skipped with a message saying why; checks
//     of process-global state (fence numbering, connection counts, empty
//     channel lists) are made exact only against the in-process server. Keys
//     are unique per test and per process, so tests run in parallel.
//
// Plain TCP only against an external server (TLS is checked in-process).
//
// Run time: most tests wait on whole-second leases, so the suite is bound by
// the number of tests allowed to run at once: ~20 s at the default -parallel
// (GOMAXPROCS, 2 on CI) and ~5 s with `go test -race -parallel 16`.
//
// Every test is named after the behaviour it checks and carries the checklist
// number(s) in a comment; tests without a number check other facts of
// protocol.md (section given) or the dflockdtest fault helpers.
//
// Not covered here:
//   - 7 [1.10] half (CR inside a key kept, key rejected), 26/45/46 [1.10]
//     halves (`error`, `error_not_enqueued`, stale `ok`), 70 ([1.10] stats with
//     exactly five fields), 93 ([1.10] `listen` unknown): 1.10-only behaviour
//     the RF in-process server has no setting for (NoFences only drops the
//     fence fields; its stats keep the RF shape). The RF halves of 7, 26, 45,
//     46 are covered; the [1.10] halves of 5, 14 and 22 are covered through
//     the PingError and NoFences settings.
//   - 95–100: client-side behaviour (sharding, duration rounding, reply
//     parsing, unknown statuses) — they belong to the client package's tests.
//   - `error_type_mismatch`, watches, elections, RW locks: out of scope of the
//     RF subset this project implements (protocol.md §2).
//
// No TestMain here: the package's internal tests own the single TestMain of
// this test binary (goleak).

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dfstream/dfstream/dflockdtest"
)

// ---------------------------------------------------------------------------
// §1 framing

// Checklist 1.
func TestStatsAnswersOneLineStartingOKJSON(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	c := e.dial(t)
	c.send("stats\n_\n\n")
	l := c.lineWithin(replyWait)
	require.True(t, strings.HasPrefix(l, "ok {"), "stats reply %q", trunc(l))
	require.True(t, json.Valid([]byte(l[3:])), "stats JSON is not valid: %q", trunc(l))
	// Exactly one line: the next request's reply comes next.
	require.Equal(t, "error", c.do("foo", "_", ""))
}

// Checklist 2.
func TestCRLFRequestIsAcceptedLikeLF(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	k, k2 := key(t, "crlf"), key(t, "lf")
	c := e.dial(t)
	c.send("l\r\n" + k + "\r\n0\r\n")
	g := e.grant(t, c.reply(), "ok") // reply() also asserts the reply has no CR
	c.send("l\n" + k2 + "\n0\n")
	g2 := e.grant(t, c.reply(), "ok")
	assert.Equal(t, g2.Lease, g.Lease, "CRLF and LF requests got different leases")
	assert.Equal(t, e.defaultLease, g.Lease)
	// The key is k, not k+"\r": another connection sees it held.
	o := e.dial(t)
	assert.Equal(t, "timeout", o.do("l", k, "0"))
	// CRLF works for every command.
	c.send("r\r\n" + k + "\r\n" + g.Token + "\r\n")
	assert.Equal(t, "ok", c.reply())
	e.lock(t, o, k, "0")
}

// Checklist 3 (first half).
func TestLockWith256ByteKeyIsGranted(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	k := paddedKey(t, 256)
	c := e.dial(t)
	e.lock(t, c, k, "0")
	st := c.stats()
	require.NotNil(t, st.lock(k), "256-byte key missing from stats")
}

// Checklist 3 (second half).
func TestLockWith257ByteKeyAnswersErrorAndCloses(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	k := paddedKey(t, 257)
	c := e.dial(t)
	c.req("l", k, "0")
	require.Equal(t, "error", c.reply())
	c.expectEOF(replyWait)
	// The lock was not taken (under its 256-byte prefix either) and the
	// server keeps serving others.
	o := e.dial(t)
	e.lock(t, o, k[:256], "0")
}

// §1 line limit: the limit applies to every line, the first over-long line
// ends the connection without reading the rest of the request.
func TestOverLongCommandOrArgumentLineAnswersErrorAndCloses(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	k := key(t)
	for name, req := range map[string]string{
		"command":  strings.Repeat("l", 257) + "\n" + k + "\n0\n",
		"argument": "l\n" + k + "\n0" + strings.Repeat(" ", 256) + "\n",
		"payload":  "signal\n" + k + "\n" + strings.Repeat("p", 257) + "\n",
		"crlf-257": "l\n" + paddedKey(t, 257) + "\r\n0\n",
	} {
		c := e.dial(t)
		c.send(req)
		require.Equal(t, "error", c.reply(), name)
		c.expectEOF(replyWait)
	}
	// A 256-byte argument line (content) is fine: "0" + 255 blanks.
	c := e.dial(t)
	e.lock(t, c, k, "0"+strings.Repeat(" ", 255))
}

// unknownCommands are names no generation of the server knows. Plausible
// names are not safe: the signals-era server has `get` (counters), lists,
// read-write locks and more, and later ones add commands again.
var unknownCommands = []string{"no-such-command", "dfstream_unknown", "zz9", "\x00", "é"}

// Checklist 4.
func TestUnknownCommandAnswersErrorAndNextLockIsGranted(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	c := e.dial(t)
	c.send("no-such-command\nk\n\n")
	require.Equal(t, "error", c.reply())
	for _, cmd := range unknownCommands {
		require.Equal(t, "error", c.do(cmd, key(t), "0"), "command %q", cmd)
	}
	e.lock(t, c, key(t), "0")
}

// Checklist 5 (the in-process server answers `ok` by default, like the newest
// upstream revision; the real RF/1.10 servers answer `error`: both keep the
// connection usable).
func TestPingIsAnsweredAndConnectionStaysUsable(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	c := e.dial(t)
	c.send("ping\n_\n\n")
	r := c.reply()
	if e.local() {
		assert.Equal(t, "ok", r)
	} else {
		assert.Contains(t, []string{"ok", "error"}, r)
	}
	e.lock(t, c, key(t), "0")
	assert.Equal(t, r, c.do("ping", "_", ""), "second ping")
}

// Checklist 5 (`error` mode, Config.PingError).
func TestPingAnswersErrorWithPingErrorAndConnectionStaysUsable(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{PingError: true})
	c := e.dial(t)
	c.send("ping\n_\n\n")
	require.Equal(t, "error", c.reply())
	e.lock(t, c, key(t), "0")
	require.Equal(t, "error", c.do("ping", "_", ""))
}

// Checklist 6.
func TestLockWithBlankInKeyOrEmptyKeyAnswersErrorAndKeepsConnection(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	k := key(t)
	c := e.dial(t)
	for _, bad := range []string{k + " b", k + "\tb", "", " ", "\t", " " + k, k + " "} {
		require.Equal(t, "error", c.do("l", bad, "0"), "key %q", bad)
	}
	// Same rule for the other key-taking commands.
	for _, cmd := range []string{"r", "n", "e", "w", "sl", "sr", "sn", "se", "sw", "listen", "unlisten", "signal"} {
		require.Equal(t, "error", c.do(cmd, k+" b", "1 1"), "command %s", cmd)
	}
	e.lock(t, c, k, "0")
}

// §1 key rule: any byte but space, tab, CR, LF is accepted, byte-wise.
func TestLockKeyAcceptsAnyByteButBlanks(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	k := key(t)
	c := e.dial(t)
	o := e.dial(t)
	for _, suffix := range []string{"\x00", "\f", "\v", "é", "\xff\xfe", "*", ">", "a.b", "\xc2\xa0"} {
		kk := k + suffix
		e.lock(t, c, kk, "0")
		require.Equal(t, "timeout", o.do("l", kk, "0"), "key %q must be held", kk)
	}
	// Keys compare byte-wise: é precomposed vs decomposed are different keys.
	e.lock(t, o, k+"e\u0301", "0")
	// stats escapes <, > and & the way Go's JSON encoder does.
	e.lock(t, c, k+"<&>", "0")
	st := c.stats()
	assert.Contains(t, st.JSON, `"key":"`+k+`\u003c\u0026\u003e"`)
	assert.NotNil(t, st.lock(k+"<&>"))
}

// Checklist 7 ([RF] half).
func TestCRInsideKeyIsDroppedSoKeyABIsGranted(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	k := key(t)
	c := e.dial(t)
	c.send("l\n" + k + "a\rb\n0\n")
	g := e.grant(t, c.reply(), "ok")
	o := e.dial(t)
	require.Equal(t, "timeout", o.do("l", k+"ab", "0"), "key a\\rb must have become ab")
	require.Equal(t, "ok", o.do("r", k+"ab", g.Token))
	// A CR anywhere is dropped and does not count toward the 256 bytes.
	k256 := paddedKey(t, 256)
	c.send("l\n" + k256[:100] + "\r\r" + k256[100:] + "\r\n0\r\n")
	e.grant(t, c.reply(), "ok")
	require.Equal(t, "timeout", o.do("l", k256, "0"))
}

// Checklist 8.
func TestMalformedNumbersAnswerErrorAndKeepConnection(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	k := key(t)
	c := e.dial(t)
	for _, arg := range []string{"1.5", "-1", "0 0", "1 2 3", "x", "", " ", "0 -5", "0x10", "1e3", "0 1.5", "++1", "- 1", "0 x"} {
		require.Equal(t, "error", c.do("l", k, arg), "l argument %q", arg)
	}
	require.Nil(t, c.stats().lock(k), "a rejected request created the key")
	e.lock(t, c, k, "0")
}

// §1 numbers: a leading '+' is accepted and fields split on any run of
// Unicode white space.
func TestNumbersAcceptLeadingPlusAndAnyUnicodeWhiteSpace(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	c := e.dial(t)
	for i, arg := range []string{"+0 +60", "0\t60", "  0   60  ", "0\v60", "0\f60", "0\u008560", "0\u00a060", "0\u200360", "0 \t\u00a0 60"} {
		g := e.lock(t, c, key(t, strconv.Itoa(i)), arg)
		assert.EqualValues(t, 60, g.Lease, "argument %q", arg)
	}
}

// §2 [RF]: a seconds value above 9223372036 answers `error` everywhere; the
// maximum itself is accepted.
func TestSecondsAboveMaximumAnswerError(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	k := key(t)
	c := e.dial(t)
	over := strconv.Itoa(maxSeconds + 1)
	g := e.lock(t, c, k, "0 "+strconv.Itoa(maxSeconds))
	assert.EqualValues(t, maxSeconds, g.Lease)
	for _, r := range [][3]string{
		{"l", k, over},
		{"l", key(t, "b"), "0 " + over},
		{"l", key(t, "b"), "99999999999999999999"},
		{"sl", key(t, "b"), "0 2 " + over},
		{"e", key(t, "b"), over},
		{"se", key(t, "b"), "2 " + over},
		{"n", k, g.Token + " " + over},
		{"w", k, over},
	} {
		assert.Equal(t, "error", c.do(r[0], r[1], r[2]), "%s %s", r[0], r[2])
	}
	// The holder is untouched.
	l, _ := e.renew(t, c.do("n", k, g.Token+" 5"))
	assert.EqualValues(t, 5, l)
}

// §1: stats ignores its key and argument (no key rule).
func TestStatsIgnoresKeyAndArgument(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	c := e.dial(t)
	for _, kv := range [][2]string{{"", ""}, {"a b", "x y"}, {"\t", "1.5"}} {
		c.req("stats", kv[0], kv[1])
		l := c.reply()
		require.True(t, strings.HasPrefix(l, "ok {"), "stats with key %q: %q", kv[0], trunc(l))
	}
}

// Checklist 11.
func TestTwoRequestsInOnePacketGetTwoRepliesInOrder(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	k := key(t)
	c := e.dial(t)
	c.send(reqBytes("l", k, "0") + reqBytes("l", k, "0") + reqBytes("foo", k, "") + reqBytes("stats", "_", ""))
	g := e.grant(t, c.reply(), "ok")
	require.Equal(t, "timeout", c.reply(), "second l on a key the connection holds")
	require.Equal(t, "error", c.reply())
	require.True(t, strings.HasPrefix(c.reply(), "ok {"))
	// A request split over many writes works as well.
	for _, b := range []byte(reqBytes("r", k, g.Token)) {
		c.send(string([]byte{b}))
	}
	require.Equal(t, "ok", c.reply())
}

// ---------------------------------------------------------------------------
// §1 timeouts

// Checklist 9.
func TestSilentConnectionGetsErrorThenEOFAfterReadTimeout(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{ReadTimeout: 400 * time.Millisecond})
	start := time.Now()
	c := e.dial(t)
	require.Equal(t, "error", c.lineWithin(replyWait))
	between(t, time.Since(start), 300*time.Millisecond, 10*time.Second, "unsolicited error")
	c.expectEOF(replyWait)
}

// Checklist 10.
func TestRequestMissingThirdLineGetsErrorThenEOFAfterReadTimeout(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{ReadTimeout: 400 * time.Millisecond})
	k := key(t)
	for _, partial := range []string{"l\n" + k + "\n", "l\n" + k + "\n0"} {
		c := e.dial(t)
		start := time.Now()
		c.send(partial)
		require.Equal(t, "error", c.lineWithin(replyWait), "after %q", partial)
		between(t, time.Since(start), 300*time.Millisecond, 10*time.Second, "unsolicited error")
		c.expectEOF(replyWait)
	}
	// The incomplete request was never executed.
	c := e.dial(t)
	e.lock(t, c, k, "0")
}

// §1 timeouts: the read deadline is re-armed before each line.
func TestReadTimeoutIsRearmedBeforeEachLine(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{ReadTimeout: time.Second})
	c := e.dial(t)
	c.send("l\n")
	time.Sleep(600 * time.Millisecond)
	c.send(key(t) + "\n")
	time.Sleep(600 * time.Millisecond)
	c.send("0\n")
	e.grant(t, c.reply(), "ok")
}

// §1 timeouts: the read timeout does not run while a blocking command is
// being served.
func TestBlockingWaitIsNotCutByReadTimeout(t *testing.T) {
	t.Parallel()
	// Auto-release off: the idle holder is dropped by the read timeout but
	// keeps its lock for the whole test.
	e := target(t, dflockdtest.Config{ReadTimeout: 300 * time.Millisecond, DisableAutoRelease: true})
	k := key(t)
	a := e.dial(t)
	e.lock(t, a, k, "0 60")
	b := e.dial(t)
	start := time.Now()
	b.req("l", k, "1")
	require.Equal(t, "timeout", b.replyWithin(replyWait), "a 1 s wait with a 0.3 s read timeout")
	between(t, time.Since(start), 700*time.Millisecond, 10*time.Second, "l k 1")
	e.lock(t, b, key(t, "b"), "0")
}

// ---------------------------------------------------------------------------
// stats

// Checklist 71.
func TestStatsHasTwelveFieldsInOrderWithNullChannelLists(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	c := e.dial(t)
	st := c.stats()
	dec := json.NewDecoder(strings.NewReader(st.JSON))
	dec.UseNumber()
	tok, err := dec.Token()
	require.NoError(t, err)
	require.Equal(t, json.Delim('{'), tok)
	var names []string
	values := map[string]json.RawMessage{}
	for dec.More() {
		tok, err := dec.Token()
		require.NoError(t, err)
		name := tok.(string)
		var v json.RawMessage
		require.NoError(t, dec.Decode(&v))
		names = append(names, name)
		values[name] = v
	}
	require.Equal(t, []string{"connections", "locks", "semaphores", "rw_locks", "idle_locks", "idle_semaphores",
		"counters", "kv_entries", "lists", "signal_channels", "watch_channels", "barriers"}, names)
	for _, n := range []string{"locks", "semaphores", "rw_locks", "idle_locks", "idle_semaphores", "counters", "kv_entries", "lists", "barriers"} {
		require.True(t, bytes.HasPrefix(values[n], []byte("[")), "%s must be an array, got %s", n, values[n])
	}
	if e.local() {
		for _, n := range []string{"locks", "semaphores", "rw_locks", "idle_locks", "idle_semaphores", "counters", "kv_entries", "lists", "barriers"} {
			assert.Equal(t, "[]", string(values[n]), n)
		}
		assert.Equal(t, "null", string(values["signal_channels"]))
		assert.Equal(t, "null", string(values["watch_channels"]))
		// Once a listener exists, signal_channels becomes an array.
		require.Equal(t, "ok", c.do("listen", key(t), ""))
		var m map[string]json.RawMessage
		require.NoError(t, json.Unmarshal([]byte(c.stats().JSON), &m))
		assert.True(t, bytes.HasPrefix(m["signal_channels"], []byte("[")), "signal_channels = %s", m["signal_channels"])
		assert.Equal(t, "null", string(m["watch_channels"]))
	} else {
		for _, n := range []string{"signal_channels", "watch_channels"} {
			v := string(values[n])
			require.True(t, v == "null" || strings.HasPrefix(v, "["), "%s = %s", n, v)
		}
	}
}

// Checklist 72.
func TestStatsConnectionsCountsTheAskingConnection(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	c := e.dial(t)
	st := c.stats()
	require.GreaterOrEqual(t, st.Connections, 1)
	if !e.local() {
		return
	}
	require.Equal(t, 1, st.Connections)
	o := e.dial(t)
	o.stats()
	require.Equal(t, 2, c.stats().Connections)
	o.close()
	waitStats(t, c, replyWait, "connections back to 1", func(s statsDoc) bool { return s.Connections == 1 })
}

// Checklist 73.
func TestReleasedKeyAppearsInIdleLocksWithSmallIdleTime(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	k, s := key(t), key(t, "s")
	c := e.dial(t)
	g := e.lock(t, c, k, "0")
	gs := e.grant(t, c.do("sl", s, "0 2"), "ok")
	require.Equal(t, "ok", c.do("r", k, g.Token))
	require.Equal(t, "ok", c.do("sr", s, gs.Token))
	st := c.stats()
	assert.Nil(t, st.lock(k))
	il := findIdle(st.IdleLocks, k)
	require.NotNil(t, il, "released key missing from idle_locks: %s", trunc(st.JSON))
	assert.GreaterOrEqual(t, il.IdleS, 0.0)
	assert.Less(t, il.IdleS, 2.0)
	is := findIdle(st.IdleSemaphores, s)
	require.NotNil(t, is, "released semaphore missing from idle_semaphores: %s", trunc(st.JSON))
	assert.Less(t, is.IdleS, 2.0)
	assert.Nil(t, findIdle(st.IdleLocks, s))
}

// ---------------------------------------------------------------------------
// dflockdtest fault helpers and shutdown

// Fault helper DropConnections: every connection closes, the holder's lock is
// auto-released and passed to the queued waiter (whose connection is dropped
// too, so its grant is released again); the key is free right after.
func TestDropConnectionsReleasesLocksAndGrantsTheWaiter(t *testing.T) {
	t.Parallel()
	needLocal(t, "fault helper DropConnections")
	e := target(t, dflockdtest.Config{})
	k := key(t)
	a := e.dial(t)
	ga := e.lock(t, a, k, "0 60")
	b := e.dial(t)
	b.req("l", k, "30")
	obs := e.dial(t)
	waitWaiters(t, obs, k, 1)

	e.srv.DropConnections()
	a.expectEOF(replyWait)
	obs.expectEOF(replyWait)
	// b may or may not see its grant before the close; nothing else.
	if l, err := b.readLine(replyWait); err == nil {
		gb := e.grant(t, l, "ok")
		assert.Equal(t, ga.Fence+1, gb.Fence)
	}
	b.expectEOF(replyWait)

	c := e.dial(t)
	start := time.Now()
	gc := e.lock(t, c, k, "1")
	assert.Less(t, time.Since(start), prompt)
	assert.Contains(t, []uint64{ga.Fence + 1, ga.Fence + 2}, gc.Fence, "the waiter's grant consumes at most one fence")
	st := c.stats()
	assert.Equal(t, 1, st.Connections)
	require.NotNil(t, st.lock(k))
	assert.Equal(t, 0, mustLock(t, st, k).Waiters)
	assert.Len(t, e.srv.Conns(), 1, "only the new connection is left")
}

// Fault helper Freeze: nothing is read or answered while frozen (no read
// timeout fires either), the lease clock keeps running, and after Thaw the
// waiter granted meanwhile gets its reply and the old holder has lost.
func TestFreezeAnswersNothingWhileLeasesExpireAndThawGrantsAnotherClient(t *testing.T) {
	t.Parallel()
	needLocal(t, "fault helper Freeze")
	e := target(t, dflockdtest.Config{ReadTimeout: 1500 * time.Millisecond, LeaseSweepInterval: 200 * time.Millisecond})
	k := key(t)
	a := e.dial(t)
	ga := e.lock(t, a, k, "0 1")
	b := e.dial(t)
	b.req("l", k, "30")
	obs := e.dial(t)
	waitWaiters(t, obs, k, 1)

	e.srv.Freeze()
	frozen := time.Now()
	c := e.dial(t) // new connections are accepted but not served either
	c.req("stats", "_", "")
	a.req("n", k, ga.Token+" 10")
	obs.req("stats", "_", "")
	b.expectSilence(2500 * time.Millisecond) // lease 1 s + sweeps: b is granted meanwhile; longer than the read timeout
	expectSilenceAll(0, a, c, obs)
	require.Greater(t, time.Since(frozen), 2500*time.Millisecond)
	e.srv.Thaw()

	start := time.Now()
	gb := e.grant(t, b.reply(), "ok")
	assert.Less(t, time.Since(start), prompt, "the grant made while frozen is written at Thaw")
	assert.Greater(t, gb.Fence, ga.Fence)
	assert.Contains(t, []string{"error", "error_lease_expired"}, a.reply(), "the frozen holder's renew must report the loss")
	require.True(t, strings.HasPrefix(c.reply(), "ok {"))
	require.True(t, strings.HasPrefix(obs.reply(), "ok {"))
	st := obs.stats()
	require.NotNil(t, st.lock(k))
	require.NotNil(t, mustLock(t, st, k).Fence)
	assert.Equal(t, gb.Fence, *mustLock(t, st, k).Fence)
	assert.Equal(t, "timeout", a.do("l", k, "0"))
}

// Fault helper MutePushes: pushes to the matching connection vanish while it
// stays subscribed, `signal` still counts it, its requests are still answered;
// UnmutePushes restores delivery.
func TestMutePushesDropsPushesButSignalStillCountsTheListener(t *testing.T) {
	t.Parallel()
	needLocal(t, "fault helper MutePushes")
	e := target(t, dflockdtest.Config{})
	ch := key(t) + ".a"
	l := e.dial(t)
	m := e.dial(t)
	s := e.dial(t)
	require.Equal(t, "ok", l.do("listen", ch, ""))
	require.Equal(t, "ok", m.do("listen", ch, ""))

	var found bool
	for _, ci := range e.srv.Conns() {
		if ci.Remote == l.localAddr() {
			found = true
			assert.NotZero(t, ci.ID)
			assert.Len(t, ci.Subscriptions, 1, "Conns() subscriptions of the listener")
		}
	}
	require.True(t, found, "Conns() does not list the listener %s", l.localAddr())

	la := l.localAddr()
	e.srv.MutePushes(func(ci dflockdtest.ConnInfo) bool { return ci.Remote == la })
	require.Equal(t, "ok 2", s.do("signal", ch, "one"))
	require.Equal(t, "sig "+ch+" one", m.sig())
	l.expectSilence(quiet)
	require.True(t, strings.HasPrefix(l.do("stats", "_", ""), "ok {"))
	require.Empty(t, l.sigs, "a muted connection received a push")

	e.srv.UnmutePushes()
	require.Equal(t, "ok 2", s.do("signal", ch, "two"))
	require.Equal(t, "sig "+ch+" two", l.sig())
	require.Equal(t, "sig "+ch+" two", m.sig())
}

// Fault helper PauseAccepting: a new connection is closed (or refused) without
// a byte; existing connections are still served; ResumeAccepting restores.
func TestPauseAcceptingClosesNewConnectionsWithoutAByte(t *testing.T) {
	t.Parallel()
	needLocal(t, "fault helper PauseAccepting")
	e := target(t, dflockdtest.Config{})
	a := e.dial(t)
	a.stats() // make sure a was accepted before the pause
	e.srv.PauseAccepting()
	for i := 0; i < 3; i++ {
		nc, err := e.tryDial()
		if err != nil {
			continue // refused: fine
		}
		c := wrapConn(t, nc)
		_, _ = nc.Write([]byte(reqBytes("stats", "_", "")))
		c.expectEOF(replyWait)
	}
	require.True(t, strings.HasPrefix(a.do("stats", "_", ""), "ok {"), "existing connections keep being served")
	e.srv.ResumeAccepting()
	b := e.dial(t)
	e.lock(t, b, key(t), "0")
}

// §5 shutdown [RF]: Close stops accepting, keeps serving existing connections
// during the drain, then closes them; a blocking wait gets no reply at all.
func TestCloseServesDuringDrainThenClosesWaitersWithoutReply(t *testing.T) {
	t.Parallel()
	needLocal(t, "Close of the in-process server")
	e := target(t, dflockdtest.Config{ShutdownDrain: time.Second})
	k := key(t)
	a := e.dial(t)
	e.lock(t, a, k, "0")
	b := e.dial(t)
	b.req("l", k, "30")
	waitWaiters(t, a, k, 1)

	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- e.srv.Close() }()
	time.Sleep(100 * time.Millisecond)
	e.lock(t, a, key(t, "during-drain"), "0")
	if nc, err := e.tryDial(); err == nil {
		c := wrapConn(t, nc)
		c.expectEOF(replyWait)
	}
	b.expectEOF(replyWait)
	a.expectEOF(replyWait)
	select {
	case err := <-done:
		assert.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
	between(t, time.Since(start), 500*time.Millisecond, 6*time.Second, "Close with open connections and a 1 s drain")
	assert.NoError(t, e.srv.Close(), "Close is idempotent")
}
