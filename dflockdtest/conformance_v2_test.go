package dflockdtest_test

// Conformance of the 2.x generation (shared/protocol-v2.md): in-process with
// Config.Generation = Gen2, or against an external 2.x server named by
// DFLOCKD_TEST_ADDR with DFLOCKD_TEST_GENERATION=2.

import (
	"context"
	"encoding/json"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dfstream/dfstream/dflockdtest"
)

// v2Target is target for a 2.x server: a Gen2 in-process one, or the
// external server when DFLOCKD_TEST_GENERATION=2 says it speaks 2.x.
func v2Target(t *testing.T, cfg dflockdtest.Config) *env {
	t.Helper()
	if a := externalAddr(); a != "" && os.Getenv("DFLOCKD_TEST_GENERATION") != "2" {
		t.Skipf("a 2.x test; the external server at %s is not declared 2.x (set DFLOCKD_TEST_GENERATION=2)", a)
	}
	if externalAddr() == "" {
		cfg.Generation = dflockdtest.Gen2
	}
	e := target(t, cfg)
	e.noFences = true // 2.x replies carry no fence field
	return e
}

// fenceOf decodes a 2.x token's fence: its first 16 hex digits, big-endian.
func fenceOf(t testing.TB, tok string) uint64 {
	t.Helper()
	require.Regexp(t, tokenRE, tok)
	f, err := strconv.ParseUint(tok[:16], 16, 64)
	require.NoError(t, err)
	return f
}

// requireRising asserts that the tokens' fences rise strictly, in order.
func requireRising(t testing.TB, toks ...string) {
	t.Helper()
	for i := 1; i < len(toks); i++ {
		require.Greater(t, fenceOf(t, toks[i]), fenceOf(t, toks[i-1]),
			"fence of grant %d (%s) must exceed the one before (%s)", i, toks[i], toks[i-1])
	}
}

func TestV2GrantIsTokenAndLeaseWithFenceInTokenPrefix(t *testing.T) {
	t.Parallel()
	e := v2Target(t, dflockdtest.Config{})
	c := e.dial(t)
	k := key(t)
	line := c.do("l", k, "0 7")
	require.Regexp(t, `^ok [0-9a-f]{32} 7$`, line)
	g := e.grant(t, line, "ok")
	assert.NotZero(t, fenceOf(t, g.Token))
	require.Equal(t, "ok", c.do("r", k, g.Token))
	g2 := e.lock(t, c, k, "0")
	assert.Equal(t, e.defaultLease, g2.Lease, "no lease asked: the default")
	requireRising(t, g.Token, g2.Token)
}

func TestV2FencesRiseStrictlyWithEveryGrantOnEveryKind(t *testing.T) {
	t.Parallel()
	e := v2Target(t, dflockdtest.Config{})
	a, b := e.dial(t), e.dial(t)
	var toks []string
	for i := 0; i < 5; i++ {
		toks = append(toks, e.lock(t, a, key(t, "l", strconv.Itoa(i)), "0").Token)
		toks = append(toks, e.grant(t, b.do("sl", key(t, "s"), "0 100"), "ok").Token)
		toks = append(toks, e.grant(t, a.do("e", key(t, "e", strconv.Itoa(i)), ""), "acquired").Token)
		toks = append(toks, e.grant(t, b.do("se", key(t, "se", strconv.Itoa(i)), "3"), "acquired").Token)
	}
	requireRising(t, toks...)
}

func TestV2QueuedGrantFromWaitCarriesLaterFence(t *testing.T) {
	t.Parallel()
	e := v2Target(t, dflockdtest.Config{})
	k := key(t)
	a, b := e.dial(t), e.dial(t)
	ga := e.lock(t, a, k, "0")
	require.Equal(t, "queued", b.do("e", k, "9"))
	require.Equal(t, "ok", a.do("r", k, ga.Token))
	line := b.do("w", k, "5")
	require.Regexp(t, `^ok [0-9a-f]{32} 9$`, line)
	requireRising(t, ga.Token, e.grant(t, line, "ok").Token)
}

func TestV2RenewAnswersRemainingSecondsOnly(t *testing.T) {
	t.Parallel()
	e := v2Target(t, dflockdtest.Config{})
	c := e.dial(t)
	k := key(t)
	g := e.lock(t, c, k, "0 5")
	require.Equal(t, "ok 40", c.do("n", k, g.Token+" 40"))
	require.Equal(t, "ok "+strconv.FormatInt(e.defaultLease, 10), c.do("n", k, g.Token))
	sg := e.grant(t, c.do("sl", key(t, "s"), "0 2 5"), "ok")
	require.Equal(t, "ok 12", c.do("sn", key(t, "s"), sg.Token+" 12"))
}

func TestV2SignalCommandsAnswerErrorAndPushNothing(t *testing.T) {
	t.Parallel()
	e := v2Target(t, dflockdtest.Config{})
	c := e.dial(t)
	ch := key(t)
	require.Equal(t, "error", c.do("listen", ch, ""))
	require.Equal(t, "error", c.do("listen", ch+".>", "grp"))
	require.Equal(t, "error", c.do("unlisten", ch, ""))
	require.Equal(t, "error", c.do("signal", ch, "payload"))
	c.expectSilence(quiet)
	e.lock(t, c, key(t, "after"), "0") // the connection is still served
}

func TestV2PingAnswersOK(t *testing.T) {
	t.Parallel()
	// A Gen2 server ignores PingError; set only locally, since a setting
	// would skip the test against an external server.
	e := v2Target(t, dflockdtest.Config{PingError: externalAddr() == ""})
	c := e.dial(t)
	require.Equal(t, "ok", c.do("ping", "_", "_"))
	require.Equal(t, "ok", c.do("ping", "", ""))
}

func TestV2BarrierAnswersOKWhateverItsKeyAndArg(t *testing.T) {
	t.Parallel()
	e := v2Target(t, dflockdtest.Config{})
	c := e.dial(t)
	require.Equal(t, "ok", c.do("barrier", "_", "_"))
	require.Equal(t, "ok", c.do("barrier", "", ""))
	require.Equal(t, "ok", c.do("barrier", "any key", "any arg"))
}

func TestV2StableRefIsAcceptedOncePerConnection(t *testing.T) {
	t.Parallel()
	e := v2Target(t, dflockdtest.Config{})
	c := e.dial(t)
	require.Equal(t, "ok", c.do("stable-ref", refOf(t), "_"))
	require.Equal(t, "error", c.do("stable-ref", refOf(t), "_"), "the same ref again")
	require.Equal(t, "error", c.do("stable-ref", refOf(t, "other"), "_"), "another ref")
	e.lock(t, c, key(t), "0") // the connection stays open
	d := e.dial(t)
	require.Equal(t, "ok", d.do("stable-ref", refOf(t), "_"), "a ref is per connection")
}

func TestV2StableRefMustBe1To64PrintableASCIIAfterTrim(t *testing.T) {
	t.Parallel()
	e := v2Target(t, dflockdtest.Config{})
	bad := []string{"", "   ", strings.Repeat("r", 65), "ref\x01x", "ref\x7fx", "réf"}
	for _, ref := range bad {
		c := e.dial(t)
		require.Equal(t, "error", c.do("stable-ref", ref, "_"), "ref %q", ref)
		require.Equal(t, "ok", c.do("ping", "_", "_"), "an invalid ref keeps the connection (ref %q)", ref)
		require.Equal(t, "ok", c.do("stable-ref", "then-a-good-one", "_"), "an invalid ref does not count (ref %q)", ref)
	}
	good := []string{"r", strings.Repeat("r", 64), "  padded  ", "with inner spaces", "~!@#$%^&*()_+{}|:<>?", " " + strings.Repeat("x", 64) + " "}
	for _, ref := range good {
		c := e.dial(t)
		require.Equal(t, "ok", c.do("stable-ref", ref, "_"), "ref %q", ref)
	}
}

func TestV2SemaphoreLimitStopsAt1048576(t *testing.T) {
	t.Parallel()
	e := v2Target(t, dflockdtest.Config{})
	c := e.dial(t)
	e.grant(t, c.do("sl", key(t, "max"), "0 1048576"), "ok")
	require.Equal(t, "error", c.do("sl", key(t, "over"), "0 1048577"))
	e.grant(t, c.do("se", key(t, "emax"), "1048576"), "acquired")
	require.Equal(t, "error", c.do("se", key(t, "eover"), "1048577 5"))
	require.Equal(t, "error", c.do("sl", key(t, "huge"), "0 9223372036854775807"))
}

func TestV2EnqueueWithExtraFieldsAnswersError(t *testing.T) {
	t.Parallel()
	e := v2Target(t, dflockdtest.Config{})
	c := e.dial(t)
	k := key(t)
	require.Equal(t, "error", c.do("e", k, "30 junk"))
	require.Equal(t, "error", c.do("se", k, "2 30 junk"))
	e.grant(t, c.do("e", k, "30"), "acquired") // nothing was enqueued before
}

// v2StatsKeys are the top-level keys of 2.x single-node stats.
var v2StatsKeys = []string{"connections", "idle_locks", "idle_semaphores", "locks", "semaphores"}

// topKeys decodes a stats JSON object's keys, sorted, and its raw values.
func topKeys(t testing.TB, js string) ([]string, map[string]json.RawMessage) {
	t.Helper()
	var m map[string]json.RawMessage
	require.NoError(t, json.Unmarshal([]byte(js), &m))
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks, m
}

func TestV2StatsHasFiveArraysNeverNullAndNoSignalChannels(t *testing.T) {
	t.Parallel()
	e := v2Target(t, dflockdtest.Config{})
	c := e.dial(t)
	st := c.stats()
	ks, raw := topKeys(t, st.JSON)
	if !e.local() {
		ks = without(ks, "cluster") // a cluster build may add it
	}
	require.Equal(t, v2StatsKeys, ks)
	for _, k := range v2StatsKeys[1:] {
		require.True(t, strings.HasPrefix(string(raw[k]), "["), "%s is an array, never null: %s", k, raw[k])
	}
	if e.local() {
		require.Equal(t, `{"connections":1,"locks":[],"semaphores":[],"idle_locks":[],"idle_semaphores":[]}`, st.JSON)
	}
}

func without(ss []string, s string) []string {
	out := ss[:0:0]
	for _, x := range ss {
		if x != s {
			out = append(out, x)
		}
	}
	return out
}

func TestV2StatsListLocksWithoutFence(t *testing.T) {
	t.Parallel()
	e := v2Target(t, dflockdtest.Config{})
	c := e.dial(t)
	k := key(t)
	e.lock(t, c, k, "0 20")
	e.grant(t, c.do("sl", key(t, "s"), "0 3"), "ok")
	st := c.stats()
	l := mustLock(t, st, k)
	assert.Nil(t, l.Fence, "2.x stats carry no fence")
	assert.InDelta(t, 20, l.LeaseExpiresInS, 5)
	assert.Equal(t, 1, mustSem(t, st, key(t, "s")).Holders)
	assert.NotContains(t, st.JSON, "signal_channels")
}

func TestV2GracefulShutdownAnswersNextRequestErrorDrainingAndCloses(t *testing.T) {
	t.Parallel()
	needLocal(t, "Shutdown of the in-process server")
	e := v2Target(t, dflockdtest.Config{ShutdownDrain: time.Minute})
	k := key(t)
	a, b, c := e.dial(t), e.dial(t), e.dial(t)
	e.lock(t, a, k, "0")
	require.Equal(t, "ok", c.do("ping", "_", "_"))

	done := make(chan error, 1)
	go func() { done <- e.srv.Close() }()
	require.Eventually(t, func() bool {
		nc, err := e.tryDial()
		if err == nil {
			_ = nc.Close()
		}
		return err != nil
	}, replyWait, 10*time.Millisecond, "the listener closes")

	require.Equal(t, "error_draining", a.do("ping", "_", "_"), "ping too")
	a.expectEOF(replyWait)
	require.Equal(t, "error_draining", b.do("stats", "_", "_"), "stats too")
	b.expectEOF(replyWait)
	require.Equal(t, "error_draining", c.do("l", k, "0"))
	c.expectEOF(replyWait)
	select {
	case err := <-done:
		require.NoError(t, err, "the drain ends once every connection is gone")
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return after the last connection closed")
	}
}

func TestV2FencesRiseAcrossServerRestarts(t *testing.T) {
	t.Parallel()
	needLocal(t, "two in-process servers one after the other")
	e1 := v2Target(t, dflockdtest.Config{})
	g1 := e1.lock(t, e1.dial(t), key(t), "0")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.NoError(t, e1.srv.Shutdown(ctx))
	e2 := v2Target(t, dflockdtest.Config{})
	g2 := e2.lock(t, e2.dial(t), key(t), "0")
	requireRising(t, g1.Token, g2.Token)
}

func TestV2AuthStillComesFirst(t *testing.T) {
	t.Parallel()
	e := v2Target(t, dflockdtest.Config{AuthToken: localToken})
	c := e.dialRaw(t)
	require.Equal(t, "error_auth", c.do("barrier", "_", "_"))
	c.expectEOF(replyWait)
	d := e.dial(t)
	require.Equal(t, "ok", d.do("stable-ref", refOf(t), "_"))
}

func TestSignalsEraAnswersErrorToBarrierAndStableRef(t *testing.T) {
	t.Parallel()
	if externalAddr() != "" && os.Getenv("DFLOCKD_TEST_GENERATION") == "2" {
		t.Skip("a signals-era test; the external server is declared 2.x")
	}
	e := target(t, dflockdtest.Config{})
	c := e.dial(t)
	require.Equal(t, "error", c.do("barrier", "_", "_"))
	require.Equal(t, "error", c.do("stable-ref", "ref", "_"))
	require.Equal(t, "ok", c.do("listen", key(t), ""))
}

func TestV2AuthTokenMayBeUpTo64KiB(t *testing.T) {
	t.Parallel()
	needLocal(t, "a server with a 64 KiB token")
	long := strings.Repeat("t", 64<<10-4)
	e := v2Target(t, dflockdtest.Config{AuthToken: long})
	c := e.dialRaw(t)
	require.Equal(t, "ok", c.do("auth", "_", "  "+long+"  "), "a 64 KiB line, padding included")
	c = e.dialRaw(t)
	require.Equal(t, "ok", c.do("auth", "_", long))
	e.lock(t, c, key(t), "0")
	require.Equal(t, "error", c.do("l", key(t), strings.Repeat("1", 257)), "other lines keep the 256-byte limit")
	c.expectEOF(replyWait)
	d := e.dialRaw(t)
	require.Equal(t, "error_auth", d.do("auth", "_", "   "+long+"  "), "one byte over 64 KiB")
	d.expectEOF(replyWait)
}
