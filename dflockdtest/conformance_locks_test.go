package dflockdtest_test

// Locks, semaphores, leases, fences and server-side limits
// (protocol.md §2, §3; checklist 12–37, 54, 55, 57–62, 94).

import (
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dfstream/dfstream/dflockdtest"
)

// Checklist 12.
func TestLockRepliesRequestedLeaseOrTheDefault(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	c := e.dial(t)
	g := e.lock(t, c, key(t, "a"), "0 60")
	assert.EqualValues(t, 60, g.Lease)
	g = e.lock(t, c, key(t, "b"), "0")
	assert.Equal(t, e.defaultLease, g.Lease)
	if e.local() {
		assert.EqualValues(t, 33, g.Lease)
	}
}

// §5 defaults: Config.DefaultLease is the lease applied when none is asked.
func TestDefaultLeaseSettingIsAppliedToGrantsAndRenewals(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{DefaultLease: 7 * time.Second})
	c := e.dial(t)
	k := key(t)
	g := e.lock(t, c, k, "0")
	assert.EqualValues(t, 7, g.Lease)
	l, _ := e.renew(t, c.do("n", k, g.Token+" 20"))
	assert.EqualValues(t, 20, l)
	l, _ = e.renew(t, c.do("n", k, g.Token))
	assert.EqualValues(t, 7, l)
	ga := e.grant(t, c.do("e", key(t, "e"), ""), "acquired")
	assert.EqualValues(t, 7, ga.Lease)
}

// Checklist 13.
func TestTokensAre32LowercaseHexAndDifferBetweenGrants(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	c := e.dial(t)
	k := key(t)
	seen := map[string]bool{}
	for i := 0; i < 20; i++ {
		g := e.lock(t, c, k, "0") // grant() checks ^[0-9a-f]{32}$
		require.False(t, seen[g.Token], "token %s granted twice", g.Token)
		seen[g.Token] = true
		require.Equal(t, "ok", c.do("r", k, g.Token))
	}
	for i := 0; i < 3; i++ {
		g := e.grant(t, c.do("sl", key(t, "s"), "0 3"), "ok")
		require.False(t, seen[g.Token])
		seen[g.Token] = true
	}
}

// Checklist 14 ([RF] half; the [1.10] half is TestNoFencesGrantHasThreeFieldsAndRenewTwo).
func TestGrantReplyHasFourFields(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	c := e.dial(t)
	// e.grant requires exactly "ok <32 hex> <lease> <fence>" with single spaces.
	g := e.lock(t, c, key(t), "0 7")
	assert.EqualValues(t, 7, g.Lease)
	assert.NotZero(t, g.Fence)
	e.grant(t, c.do("sl", key(t, "s"), "0 2 7"), "ok")
	e.grant(t, c.do("e", key(t, "e"), "7"), "acquired")
	e.grant(t, c.do("w", key(t, "e"), "0"), "ok")
	e.grant(t, c.do("se", key(t, "se"), "2 7"), "acquired")
	e.grant(t, c.do("sw", key(t, "se"), "0"), "ok")
}

// Checklists 14 and 22, [1.10] halves (Config.NoFences): 3-field grants,
// 2-field renewals, no fence in stats.
func TestNoFencesGrantHasThreeFieldsAndRenewTwo(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{NoFences: true})
	c := e.dial(t)
	k := key(t)
	g := e.lock(t, c, k, "0 7") // e.noFences: exactly 3 fields
	assert.EqualValues(t, 7, g.Lease)
	l, _ := e.renew(t, c.do("n", k, g.Token)) // exactly 2 fields
	assert.EqualValues(t, 33, l)
	l, _ = e.renew(t, c.do("n", k, g.Token+" 20"))
	assert.EqualValues(t, 20, l)
	e.grant(t, c.do("sl", key(t, "s"), "0 2"), "ok")
	e.grant(t, c.do("e", key(t, "e"), ""), "acquired")
	e.grant(t, c.do("w", key(t, "e"), "0"), "ok")
	st := c.stats()
	require.NotNil(t, st.lock(k))
	assert.Nil(t, mustLock(t, st, k).Fence, "stats must not show fences with NoFences: %s", trunc(st.JSON))
	assert.NotContains(t, st.JSON, `"fence"`)
}

// Checklist 15.
func TestLockTryOnceOnHeldKeyAnswersTimeoutImmediately(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	k := key(t)
	a, b := e.dial(t), e.dial(t)
	e.lock(t, a, k, "0")
	start := time.Now()
	require.Equal(t, "timeout", b.do("l", k, "0"))
	assert.Less(t, time.Since(start), prompt)
	require.Equal(t, 0, mustLock(t, b.stats(), k).Waiters, "a try-once request never queues")
}

// Checklist 16.
func TestLockOnHeldKeyAnswersTimeoutAfterItsTimeout(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	k := key(t)
	a, b := e.dial(t), e.dial(t)
	e.lock(t, a, k, "0")
	start := time.Now()
	b.req("l", k, "2")
	require.Equal(t, "timeout", b.replyWithin(replyWait))
	between(t, time.Since(start), 1500*time.Millisecond, 10*time.Second, "l k 2 on a held key")
	require.Equal(t, 0, mustLock(t, a.stats(), k).Waiters, "the timed-out waiter left the queue")
}

// Checklist 17.
func TestWaitersAreGrantedInFIFOOrder(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	k := key(t)
	a, b, c, obs := e.dial(t), e.dial(t), e.dial(t), e.dial(t)
	ga := e.lock(t, a, k, "0")
	b.req("l", k, "10")
	waitWaiters(t, obs, k, 1)
	c.req("l", k, "10")
	waitWaiters(t, obs, k, 2)
	// A newcomer's try-once never overtakes the queue.
	require.Equal(t, "timeout", obs.do("l", k, "0"))

	require.Equal(t, "ok", a.do("r", k, ga.Token))
	gb := e.grant(t, b.reply(), "ok")
	c.expectSilence(quiet)
	require.Equal(t, "ok", b.do("r", k, gb.Token))
	gc := e.grant(t, c.reply(), "ok")
	assert.NotEqual(t, gb.Token, gc.Token)
	assert.Greater(t, gc.Fence, gb.Fence)
	assert.Greater(t, gb.Fence, ga.Fence)
}

// Checklist 18.
func TestReleaseWithRightTokenAnswersOKAndRepeatingItAnswersError(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	k := key(t)
	c := e.dial(t)
	g := e.lock(t, c, k, "0")
	require.Equal(t, "ok", c.do("r", k, g.Token))
	require.Equal(t, "error", c.do("r", k, g.Token))
	// The key is free again.
	e.lock(t, e.dial(t), k, "0")
}

// Checklist 19.
func TestReleaseWithWrongTokenAnswersErrorAndHolderStays(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	k := key(t)
	c := e.dial(t)
	g := e.lock(t, c, k, "0")
	for _, bad := range []string{"0123456789abcdef0123456789abcdef", "00000000000000000000000000000000", g.Token[:31], g.Token + "0", "x", ""} {
		require.Equal(t, "error", c.do("r", k, bad), "token %q", bad)
	}
	// The right token on the wrong key is wrong too.
	require.Equal(t, "error", c.do("r", key(t, "other"), g.Token))
	st := c.stats()
	require.NotNil(t, st.lock(k), "the holder disappeared from stats")
	assert.NotZero(t, mustLock(t, st, k).OwnerConnID)
	assert.Greater(t, mustLock(t, st, k).LeaseExpiresInS, 0.0)
}

// Checklist 20 (tokens are bearer credentials).
func TestReleaseFromAnotherConnectionWithHoldersTokenAnswersOK(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	k := key(t)
	a, b := e.dial(t), e.dial(t)
	g := e.lock(t, a, k, "0")
	l, f := e.renew(t, b.do("n", k, g.Token+" 9"))
	assert.EqualValues(t, 9, l)
	assert.Equal(t, g.Fence, f)
	require.Equal(t, "ok", b.do("r", k, g.Token))
	e.lock(t, e.dial(t), k, "0")
	// Surrounding white space around the token is trimmed.
	g2 := e.lock(t, a, key(t, "2"), "0")
	require.Equal(t, "ok", b.do("r", key(t, "2"), " \t"+g2.Token+"  "))
}

// Checklist 21.
func TestReleaseWithTokenAndExtraFieldAnswersError(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	k := key(t)
	c := e.dial(t)
	g := e.lock(t, c, k, "0")
	require.Equal(t, "error", c.do("r", k, g.Token+" x"))
	require.Equal(t, "error", c.do("sr", k, g.Token+" 1"))
	require.Equal(t, "timeout", e.dial(t).do("l", k, "0"), "the lock must still be held")
	require.Equal(t, "ok", c.do("r", k, g.Token))
}

// Checklist 22 ([RF] half).
func TestRenewAnswersDefaultOrGivenLeaseAndTheFence(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	k := key(t)
	c := e.dial(t)
	g := e.lock(t, c, k, "0 60")
	l, f := e.renew(t, c.do("n", k, g.Token))
	assert.Equal(t, e.defaultLease, l)
	assert.Equal(t, g.Fence, f)
	l, f = e.renew(t, c.do("n", k, g.Token+" 20"))
	assert.EqualValues(t, 20, l)
	assert.Equal(t, g.Fence, f)
	// Malformed renewals.
	for _, arg := range []string{g.Token + " 0", g.Token + " -1", g.Token + " 1.5", g.Token + " 1 2", "", "nothex"} {
		assert.Equal(t, "error", c.do("n", k, arg), "n %q", arg)
	}
}

// Checklist 23.
func TestRenewWithoutLeaseUsesServerDefaultNotTheOriginalLease(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	k := key(t)
	c := e.dial(t)
	g := e.lock(t, c, k, "0 60")
	st := c.stats()
	require.InDelta(t, 60, mustLock(t, st, k).LeaseExpiresInS, 2)
	e.renew(t, c.do("n", k, g.Token))
	st = c.stats()
	require.NotNil(t, st.lock(k))
	assert.InDelta(t, float64(e.defaultLease), mustLock(t, st, k).LeaseExpiresInS, 2, "remaining lease after a renew without lease")
}

// Checklists 24 and 25.
func TestExpiredLeaseIsGrantedToWaiterAndOldTokenIsDead(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	k := key(t)
	a, b := e.dial(t), e.dial(t)
	start := time.Now()
	ga := e.lock(t, a, k, "0 1")
	b.req("l", k, "10")
	gb := e.grant(t, b.replyWithin(replyWait), "ok")
	// Checklist 24: within ~2 s (lease 1 s + sweep interval 1 s).
	between(t, time.Since(start), 800*time.Millisecond, 10*time.Second, "grant after a 1 s lease expired")
	assert.Greater(t, gb.Fence, ga.Fence)
	// Checklist 25.
	assert.Equal(t, "error", a.do("n", k, ga.Token))
	assert.Equal(t, "error", a.do("r", k, ga.Token))
	assert.Equal(t, "timeout", a.do("l", k, "0"), "b holds the key")
}

// Checklist 26 ([RF] half).
func TestRenewAfterDeadlineBeforeSweepAnswersLeaseExpiredThenError(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{LeaseSweepInterval: time.Hour})
	k := key(t)
	c := e.dial(t)
	g := e.lock(t, c, k, "0 1")
	time.Sleep(1200 * time.Millisecond)
	st := c.stats()
	require.NotNil(t, st.lock(k), "not swept yet")
	assert.Equal(t, 0.0, mustLock(t, st, k).LeaseExpiresInS, "an expired, not yet swept holder shows 0")
	assert.Equal(t, "error_lease_expired", c.do("n", k, g.Token))
	assert.Equal(t, "error", c.do("n", k, g.Token))
	e.lock(t, e.dial(t), k, "0")
}

// Checklist 27.
func TestLockEvictsExpiredHolderBeforeSweep(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{LeaseSweepInterval: time.Hour})
	k := key(t)
	a, b := e.dial(t), e.dial(t)
	ga := e.lock(t, a, k, "0 1")
	require.Equal(t, "timeout", b.do("l", k, "0"))
	time.Sleep(1200 * time.Millisecond)
	gb := e.lock(t, b, k, "0")
	assert.Greater(t, gb.Fence, ga.Fence)
	assert.Equal(t, "error", a.do("n", k, ga.Token))
}

// §3 leases: release does not check expiry.
func TestReleaseOfExpiredButNotEvictedTokenAnswersOK(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{LeaseSweepInterval: time.Hour})
	k := key(t)
	c := e.dial(t)
	g := e.lock(t, c, k, "0 1")
	time.Sleep(1200 * time.Millisecond)
	require.Equal(t, "ok", c.do("r", k, g.Token))
	e.lock(t, e.dial(t), k, "0")
}

// Checklist 28.
func TestClosingHoldersConnectionGrantsHeadWaiterPromptly(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	k := key(t)
	a, b, obs := e.dial(t), e.dial(t), e.dial(t)
	ga := e.lock(t, a, k, "0 60")
	b.req("l", k, "10")
	waitWaiters(t, obs, k, 1)
	start := time.Now()
	a.close()
	gb := e.grant(t, b.replyWithin(replyWait), "ok")
	assert.Less(t, time.Since(start), prompt, "grant after the holder's connection closed")
	assert.Greater(t, gb.Fence, ga.Fence)
}

// §3 disconnect: with auto-release off, a closed holder keeps its slot until
// its lease expires.
func TestDisableAutoReleaseKeepsLockUntilLeaseExpiry(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{DisableAutoRelease: true, LeaseSweepInterval: 100 * time.Millisecond})
	k := key(t)
	a, b := e.dial(t), e.dial(t)
	e.lock(t, a, k, "0 1")
	start := time.Now()
	a.close()
	waitStats(t, b, replyWait, "connection closed", func(s statsDoc) bool { return s.Connections == 1 })
	require.Equal(t, "timeout", b.do("l", k, "0"), "the lock must outlive its connection")
	b.req("l", k, "10")
	e.grant(t, b.replyWithin(replyWait), "ok")
	between(t, time.Since(start), 600*time.Millisecond, 10*time.Second, "grant after a 1 s lease without auto-release")
}

// Checklist 29 (no re-entrancy).
func TestSecondLockFromHoldingConnectionAnswersTimeout(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	k := key(t)
	c := e.dial(t)
	e.lock(t, c, k, "0")
	start := time.Now()
	c.req("l", k, "1")
	require.Equal(t, "timeout", c.replyWithin(replyWait))
	between(t, time.Since(start), 700*time.Millisecond, 10*time.Second, "l k 1 on its own lock")
}

// Checklist 30.
func TestClosedBlockedWaiterStillCountsAndIsSkippedOnRelease(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	k := key(t)
	a, b, c, obs := e.dial(t), e.dial(t), e.dial(t), e.dial(t)
	ga := e.lock(t, a, k, "0")
	b.req("l", k, "30")
	waitWaiters(t, obs, k, 1)
	c.req("l", k, "30")
	waitWaiters(t, obs, k, 2)
	b.close()
	time.Sleep(200 * time.Millisecond)
	st := obs.stats()
	require.Equal(t, 2, st.waiters(k), "a waiter blocked in l keeps its place after its peer closed")
	if e.local() {
		assert.Equal(t, 4, st.Connections, "a connection stuck in a wait whose peer is gone still counts")
	}
	require.Equal(t, "ok", a.do("r", k, ga.Token))
	gc := e.grant(t, c.replyWithin(replyWait), "ok")
	if e.local() {
		assert.Equal(t, ga.Fence+2, gc.Fence, "the dead waiter's grant consumes one fence")
	} else {
		assert.GreaterOrEqual(t, gc.Fence, ga.Fence+2)
	}
	assert.Equal(t, 0, obs.stats().waiters(k))
	if e.local() {
		// Its connection ends on its own goroutine after the grant was
		// released, so maybe just after c's grant: wait for it.
		waitStats(t, obs, replyWait, "the dead waiter's connection is gone once its grant was released",
			func(s statsDoc) bool { return s.Connections == 3 })
	}
}

// Checklist 31.
func TestSemaphoreGrantsUpToItsLimit(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	s := key(t)
	a, b := e.dial(t), e.dial(t)
	tokens := map[string]bool{}
	for i := 0; i < 3; i++ {
		g := e.grant(t, a.do("sl", s, "0 3"), "ok")
		tokens[g.Token] = true
	}
	assert.Len(t, tokens, 3)
	require.Equal(t, "timeout", b.do("sl", s, "0 3"))
	st := b.stats()
	require.NotNil(t, st.sem(s))
	assert.Equal(t, semStat{Key: s, Limit: 3, Holders: 3, Waiters: 0}, *st.sem(s))
}

// Checklist 32.
func TestRequestWithAnotherLimitAnswersLimitMismatch(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	s := key(t)
	a, b := e.dial(t), e.dial(t)
	e.grant(t, a.do("sl", s, "0 3"), "ok")
	assert.Equal(t, "error_limit_mismatch", b.do("sl", s, "0 2"))
	assert.Equal(t, "error_limit_mismatch", b.do("l", s, "0"))
	assert.Equal(t, "error_limit_mismatch", b.do("e", s, ""))
	assert.Equal(t, "error_limit_mismatch", b.do("se", s, "2"))
	e.grant(t, b.do("sl", s, "0 3"), "ok")
	// And the other way round: a lock key refuses semaphore limits.
	k := key(t, "lock")
	e.lock(t, a, k, "0")
	assert.Equal(t, "error_limit_mismatch", b.do("sl", k, "0 2"))
	assert.Equal(t, "timeout", b.do("sl", k, "0 1"), "sl with limit 1 is l")
}

// Checklist 33 (first half).
func TestLimitMismatchOutlivesTheLastRelease(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	s := key(t)
	c := e.dial(t)
	var toks []string
	for i := 0; i < 3; i++ {
		toks = append(toks, e.grant(t, c.do("sl", s, "0 3"), "ok").Token)
	}
	for _, tok := range toks {
		require.Equal(t, "ok", c.do("sr", s, tok))
	}
	assert.Equal(t, "error_limit_mismatch", c.do("sl", s, "0 2"))
	assert.Equal(t, "error_limit_mismatch", c.do("l", s, "0"))
	st := c.stats()
	assert.NotNil(t, findIdle(st.IdleSemaphores, s), "released semaphore must be idle, not gone: %s", trunc(st.JSON))
}

// Checklist 33 (second half).
func TestLimitMismatchEndsWhenGCDropsIdleKey(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{GCInterval: 100 * time.Millisecond, GCMaxIdle: 500 * time.Millisecond})
	s := key(t)
	c := e.dial(t)
	g := e.grant(t, c.do("sl", s, "0 3"), "ok")
	// Held keys are never collected, however long they are held.
	time.Sleep(800 * time.Millisecond)
	require.Equal(t, "error_limit_mismatch", c.do("sl", s, "0 2"))
	require.Equal(t, "ok", c.do("sr", s, g.Token))
	released := time.Now()
	require.Equal(t, "error_limit_mismatch", c.do("sl", s, "0 2"))
	st := waitStats(t, c, 5*time.Second, "idle semaphore collected", func(st statsDoc) bool {
		return findIdle(st.IdleSemaphores, s) == nil
	})
	between(t, time.Since(released), 400*time.Millisecond, 5*time.Second, "GC of an idle key")
	assert.Nil(t, st.sem(s))
	g2 := e.grant(t, c.do("sl", s, "0 2"), "ok")
	assert.NotEqual(t, g.Token, g2.Token)
	assert.Equal(t, 2, mustSem(t, c.stats(), s).Limit)
}

// Checklist 34.
func TestLimitOneIsListedUnderLocksOthersUnderSemaphores(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	one, s := key(t, "one"), key(t, "s")
	c := e.dial(t)
	e.grant(t, c.do("sl", one, "0 1"), "ok")
	e.grant(t, c.do("sl", s, "0 2"), "ok")
	st := c.stats()
	require.NotNil(t, st.lock(one), "sl with limit 1 must be under locks: %s", trunc(st.JSON))
	assert.Nil(t, st.sem(one))
	require.NotNil(t, st.sem(s), "sl with limit 2 must be under semaphores: %s", trunc(st.JSON))
	assert.Nil(t, st.lock(s))
	assert.Equal(t, semStat{Key: s, Limit: 2, Holders: 1, Waiters: 0}, *st.sem(s))
	if e.local() {
		assert.EqualValues(t, 1, mustLock(t, st, one).OwnerConnID, "owner_conn_id starts at 1")
	}
	assert.InDelta(t, float64(e.defaultLease), mustLock(t, st, one).LeaseExpiresInS, 2)
}

// Checklist 35.
func TestSemaphoreLimitZeroAnswersError(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	s := key(t)
	c := e.dial(t)
	for _, r := range [][2]string{{"sl", "0 0"}, {"se", "0"}, {"sl", "0 -1"}, {"se", "-2"}, {"sl", "0"}, {"se", ""}, {"sl", "0 1.5"}, {"sl", "0 2 3 4"}, {"se", "2 3 4"}} {
		assert.Equal(t, "error", c.do(r[0], s, r[1]), "%s %q", r[0], r[1])
	}
	assert.Nil(t, c.stats().sem(s))
	e.grant(t, c.do("sl", s, "0 2"), "ok")
}

// Checklist 36 (r ≡ sr, n ≡ sn share one handler).
func TestReleaseAndRenewWorkAcrossLockAndSemaphoreCommands(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	s, k := key(t, "s"), key(t, "k")
	c := e.dial(t)
	g := e.grant(t, c.do("sl", s, "0 2 30"), "ok")
	l, f := e.renew(t, c.do("n", s, g.Token+" 40"))
	assert.EqualValues(t, 40, l)
	assert.Equal(t, g.Fence, f)
	require.Equal(t, "ok", c.do("r", s, g.Token))
	st := c.stats()
	assert.Nil(t, st.sem(s))
	assert.NotNil(t, findIdle(st.IdleSemaphores, s), "released by r: %s", trunc(st.JSON))
	gk := e.lock(t, c, k, "0")
	l, _ = e.renew(t, c.do("sn", k, gk.Token+" 9"))
	assert.EqualValues(t, 9, l)
	require.Equal(t, "ok", c.do("sr", k, gk.Token))
	require.Equal(t, "error", c.do("sr", k, gk.Token))
}

// Checklist 37.
func TestOneConnectionCanHoldTwoSlotsOfASemaphore(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	s := key(t)
	c := e.dial(t)
	g1 := e.grant(t, c.do("sl", s, "0 2"), "ok")
	g2 := e.grant(t, c.do("sl", s, "0 2"), "ok")
	assert.NotEqual(t, g1.Token, g2.Token)
	assert.Equal(t, "timeout", c.do("sl", s, "0 2"))
	assert.Equal(t, 2, mustSem(t, c.stats(), s).Holders)
	// Closing the connection frees both slots.
	c.close()
	o := e.dial(t)
	waitStats(t, o, replyWait, "both slots freed", func(st statsDoc) bool { return st.sem(s) == nil })
	e.grant(t, o.do("sl", s, "0 2"), "ok")
	e.grant(t, o.do("sl", s, "0 2"), "ok")
}

// Checklist 54.
func TestFirstGrantHasFenceOneAndLaterGrantsCountUp(t *testing.T) {
	t.Parallel()
	needLocal(t, "fence numbering of a freshly started server")
	e := target(t, dflockdtest.Config{})
	c := e.dial(t)
	want := uint64(1)
	next := func(line, status string) {
		t.Helper()
		g := e.grant(t, line, status)
		assert.Equal(t, want, g.Fence, "reply %q", line)
		want++
	}
	next(c.do("l", key(t, "a"), "0"), "ok")
	next(c.do("l", key(t, "b"), "0"), "ok")
	next(c.do("sl", key(t, "c"), "0 2"), "ok")
	next(c.do("sl", key(t, "c"), "0 2"), "ok")
	next(c.do("e", key(t, "d"), ""), "acquired")
	require.Equal(t, "timeout", c.do("l", key(t, "a"), "0"), "a refusal consumes no fence")
	next(c.do("l", key(t, "e"), "0"), "ok")
}

// Checklist 55.
func TestRenewReturnsTheGrantsFence(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	c := e.dial(t)
	e.lock(t, c, key(t, "other"), "0") // so that the fence is not trivially 1
	k := key(t)
	g := e.lock(t, c, k, "0")
	for i := 0; i < 3; i++ {
		_, f := e.renew(t, c.do("n", k, g.Token+" 10"))
		assert.Equal(t, g.Fence, f)
	}
}

// Checklist 57.
func TestStatsShowsTheHoldersFence(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	c, w := e.dial(t), e.dial(t)
	k := key(t)
	e.lock(t, c, key(t, "other"), "0")
	g := e.lock(t, c, k, "0")
	st := c.stats()
	require.NotNil(t, st.lock(k))
	require.NotNil(t, mustLock(t, st, k).Fence, "locks[].fence missing: %s", trunc(st.JSON))
	assert.Equal(t, g.Fence, *mustLock(t, st, k).Fence)
	// After a release and a new grant, locks[].fence follows the new holder.
	require.Equal(t, "ok", c.do("r", k, g.Token))
	w.req("l", k, "0")
	g2 := e.grant(t, w.reply(), "ok")
	st = c.stats()
	require.NotNil(t, st.lock(k))
	require.NotNil(t, mustLock(t, st, k).Fence)
	assert.Equal(t, g2.Fence, *mustLock(t, st, k).Fence)
	assert.Greater(t, g2.Fence, g.Fence)
}

// Checklist 58.
func TestEachSemaphoreSlotHasItsOwnFence(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	s := key(t)
	c := e.dial(t)
	seen := map[uint64]bool{}
	for i := 0; i < 4; i++ {
		g := e.grant(t, c.do("sl", s, "0 4"), "ok")
		assert.False(t, seen[g.Fence], "fence %d given twice", g.Fence)
		seen[g.Fence] = true
	}
}

// Checklist 59.
func TestMaxLocksRefusesNewKeysButServesExistingOnes(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{MaxLocks: 2})
	k1, k2, k3 := key(t, "1"), key(t, "2"), key(t, "3")
	a, b := e.dial(t), e.dial(t)
	g1 := e.lock(t, a, k1, "0")
	e.grant(t, a.do("sl", k2, "0 2"), "ok")
	for _, r := range [][2]string{{"l", "0"}, {"l", "5"}, {"sl", "0 2"}, {"e", ""}, {"se", "2"}} {
		assert.Equal(t, "error_max_locks", b.do(r[0], k3, r[1]), "%s on a new key", r[0])
	}
	assert.Equal(t, "timeout", b.do("l", k1, "0"))
	e.grant(t, b.do("sl", k2, "0 2"), "ok")
	require.Equal(t, "ok", a.do("r", k1, g1.Token))
	e.lock(t, b, k1, "0")
}

// Checklist 60.
func TestReleasedKeysCountTowardMaxLocksUntilGC(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{MaxLocks: 1, GCInterval: 100 * time.Millisecond, GCMaxIdle: 500 * time.Millisecond})
	k1, k2 := key(t, "1"), key(t, "2")
	c := e.dial(t)
	g := e.lock(t, c, k1, "0")
	require.Equal(t, "ok", c.do("r", k1, g.Token))
	require.Equal(t, "error_max_locks", c.do("l", k2, "0"), "an idle key still counts")
	deadline := time.Now().Add(5 * time.Second)
	for {
		r := c.do("l", k2, "0")
		if r != "error_max_locks" {
			e.grant(t, r, "ok")
			break
		}
		require.True(t, time.Now().Before(deadline), "k2 never became possible after GC")
		time.Sleep(50 * time.Millisecond)
	}
	assert.Equal(t, "error_max_locks", c.do("l", k1, "0"))
}

// Checklist 61.
func TestMaxWaitersRefusesExtraWaitersButGrantsFreeKeys(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{MaxWaiters: 1})
	k := key(t)
	a, b, c, obs := e.dial(t), e.dial(t), e.dial(t), e.dial(t)
	ga := e.lock(t, a, k, "0")
	b.req("l", k, "10")
	waitWaiters(t, obs, k, 1)
	start := time.Now()
	assert.Equal(t, "error_max_waiters", c.do("l", k, "10"))
	assert.Less(t, time.Since(start), prompt)
	assert.Equal(t, "error_max_waiters", c.do("l", k, "0"), "even a try-once request")
	assert.Equal(t, "error_max_waiters", c.do("e", k, ""))
	e.lock(t, c, key(t, "free"), "0")
	require.Equal(t, "ok", a.do("r", k, ga.Token))
	e.grant(t, b.reply(), "ok")
	// The queue is empty again: one more waiter fits.
	c.req("l", k, "10")
	waitWaiters(t, obs, k, 1)
}

// Checklist 62.
func TestMaxConnectionsClosesExtraConnectionWithoutAByte(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{MaxConnections: 2})
	a, b := e.dial(t), e.dial(t)
	a.stats()
	require.Equal(t, 2, b.stats().Connections)
	c := e.dialRaw(t)
	c.expectEOF(replyWait)
	require.True(t, strings.HasPrefix(a.do("stats", "_", ""), "ok {"), "existing connections keep working")
	a.close()
	// Once a slot is free, a new connection is served.
	deadline := time.Now().Add(replyWait)
	for {
		nc, err := e.tryDial()
		require.NoError(t, err)
		d := wrapConn(t, nc)
		d.req("stats", "_", "")
		l, err := d.readLine(replyWait)
		if err == nil {
			require.True(t, strings.HasPrefix(l, "ok {"), "stats reply %q", l)
			break
		}
		require.True(t, time.Now().Before(deadline), "no connection accepted after one closed")
		time.Sleep(50 * time.Millisecond)
	}
}

// Checklist 62 ([RF]: the limit holds under a burst of connections).
func TestMaxConnectionsHoldsUnderABurst(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{MaxConnections: 2})
	const n = 10
	conns := make([]net.Conn, n)
	var wg sync.WaitGroup
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if nc, err := e.tryDial(); err == nil {
				conns[i] = nc
			}
		}()
	}
	wg.Wait()
	served := 0
	for _, nc := range conns {
		if nc == nil {
			continue
		}
		c := wrapConn(t, nc)
		if _, err := nc.Write([]byte(reqBytes("stats", "_", ""))); err != nil {
			continue
		}
		l, err := c.readLine(replyWait)
		if err == nil {
			require.True(t, strings.HasPrefix(l, "ok {"), "reply %q", l)
			served++
			continue
		}
		require.True(t, errors.Is(err, io.EOF) || isReset(err), "an extra connection must be closed, got %v", err)
		require.Empty(t, c.partial, "an extra connection got bytes")
	}
	assert.Equal(t, 2, served, "connections served out of a burst of %d with max-connections 2", n)
}

// Checklist 94.
func TestHolderIdlePastReadTimeoutIsDisconnectedAndLockFreed(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{ReadTimeout: 400 * time.Millisecond})
	k := key(t)
	a := e.dial(t)
	ga := e.lock(t, a, k, "0 60")
	require.Equal(t, "error", a.lineWithin(replyWait))
	a.expectEOF(replyWait)
	b := e.dial(t)
	b.req("l", k, "2")
	gb := e.grant(t, b.replyWithin(replyWait), "ok")
	assert.Greater(t, gb.Fence, ga.Fence)
}
