package dflockdtest_test

// Two-phase acquisition: e/se then w/sw (protocol.md §3 "Two-phase";
// checklist 38–53, 56).

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dfstream/dfstream/dflockdtest"
)

// Checklists 38 and 56.
func TestEnqueueOnFreeKeyAcquiresAndWaitReturnsSameTokenAndFence(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	k := key(t)
	c := e.dial(t)
	e.lock(t, c, key(t, "other"), "0") // so that the fence is not trivially 1
	ga := e.grant(t, c.do("e", k, ""), "acquired")
	assert.Equal(t, e.defaultLease, ga.Lease)
	gw := e.grant(t, c.do("w", k, "0"), "ok")
	assert.Equal(t, ga, gw, "w after acquired returns the same token, lease and fence")
	// The slot is a normal holder now.
	assert.Equal(t, "timeout", e.dial(t).do("l", k, "0"))
	require.Equal(t, "ok", c.do("r", k, gw.Token))
}

// Checklist 44 and §3: w resets the lease to its full length.
func TestWaitAfterAcquiredResetsTheLease(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	k := key(t)
	c := e.dial(t)
	ga := e.grant(t, c.do("e", k, "3"), "acquired")
	assert.EqualValues(t, 3, ga.Lease)
	time.Sleep(1200 * time.Millisecond)
	gw := e.grant(t, c.do("w", k, "0"), "ok")
	assert.EqualValues(t, 3, gw.Lease)
	st := c.stats()
	require.NotNil(t, st.lock(k))
	assert.Greater(t, mustLock(t, st, k).LeaseExpiresInS, 2.5, "w must restart the lease")
}

// Checklist 39.
func TestEnqueueOnHeldKeyQueuesAndWaitIsGrantedOnRelease(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	k := key(t)
	a, x := e.dial(t), e.dial(t)
	ga := e.lock(t, a, k, "0")
	require.Equal(t, "queued", x.do("e", k, ""))
	require.Equal(t, 1, mustLock(t, a.stats(), k).Waiters)
	x.req("w", k, "5")
	x.expectSilence(quiet)
	start := time.Now()
	require.Equal(t, "ok", a.do("r", k, ga.Token))
	gx := e.grant(t, x.replyWithin(replyWait), "ok")
	assert.Less(t, time.Since(start), prompt)
	assert.Equal(t, e.defaultLease, gx.Lease)
	assert.Greater(t, gx.Fence, ga.Fence)
	// A newcomer cannot overtake an enqueued waiter either.
	b := e.dial(t)
	require.Equal(t, "ok", x.do("r", k, gx.Token))
	gb := e.lock(t, b, k, "0")
	require.Equal(t, "queued", x.do("e", k, ""))
	require.Equal(t, "timeout", e.dial(t).do("l", k, "0"), "the enqueued waiter is first in line")
	require.Equal(t, "ok", b.do("r", k, gb.Token))
	e.grant(t, x.do("w", k, "0"), "ok")
}

// Checklist 40.
func TestSecondEnqueueOnOneConnectionAnswersAlreadyEnqueued(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	k, held := key(t), key(t, "held")
	c := e.dial(t)
	e.grant(t, c.do("e", k, ""), "acquired")
	require.Equal(t, "error_already_enqueued", c.do("e", k, ""))
	require.Equal(t, "error_already_enqueued", c.do("se", k, "1"))
	e.grant(t, c.do("w", k, "0"), "ok")

	// The same when queued, and per key: enqueuing elsewhere is fine.
	a := e.dial(t)
	e.lock(t, a, held, "0")
	require.Equal(t, "queued", c.do("e", held, ""))
	require.Equal(t, "error_already_enqueued", c.do("e", held, ""))
	e.grant(t, c.do("e", key(t, "third"), ""), "acquired")
	require.Equal(t, 1, mustLock(t, a.stats(), held).Waiters)
}

// Checklist 41.
func TestWaitWithoutEnqueueAnswersNotEnqueued(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	k := key(t)
	c := e.dial(t)
	start := time.Now()
	require.Equal(t, "error_not_enqueued", c.do("w", k, "1"))
	require.Equal(t, "error_not_enqueued", c.do("sw", k, "1"))
	assert.Less(t, time.Since(start), prompt, "error_not_enqueued must not wait")
	// Holding via l is not an enqueue either.
	e.lock(t, c, k, "0")
	require.Equal(t, "error_not_enqueued", c.do("w", k, "0"))
}

// Checklist 42.
func TestWaitTimeoutForgetsTheEnqueue(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	k := key(t)
	a, x := e.dial(t), e.dial(t)
	ga := e.lock(t, a, k, "0")
	require.Equal(t, "queued", x.do("e", k, ""))
	start := time.Now()
	x.req("w", k, "1")
	require.Equal(t, "timeout", x.replyWithin(replyWait))
	between(t, time.Since(start), 700*time.Millisecond, 10*time.Second, "w k 1")
	require.Equal(t, "error_not_enqueued", x.do("w", k, "1"))
	assert.Equal(t, 0, mustLock(t, a.stats(), k).Waiters)
	// `w 0` times out at once and forgets as well.
	require.Equal(t, "queued", x.do("e", k, ""))
	require.Equal(t, "timeout", x.do("w", k, "0"))
	require.Equal(t, "error_not_enqueued", x.do("w", k, "0"))
	assert.Equal(t, 0, mustLock(t, a.stats(), k).Waiters)
	// The forgotten waiter is not granted on release.
	require.Equal(t, "ok", a.do("r", k, ga.Token))
	e.lock(t, e.dial(t), k, "0")
}

// Checklist 43.
func TestWaitOnAnotherConnectionAnswersNotEnqueued(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	k, held := key(t), key(t, "held")
	x, y := e.dial(t), e.dial(t)
	e.grant(t, x.do("e", k, ""), "acquired")
	require.Equal(t, "error_not_enqueued", y.do("w", k, "0"))
	e.grant(t, x.do("w", k, "0"), "ok")
	e.lock(t, y, held, "0")
	require.Equal(t, "queued", x.do("e", held, ""))
	require.Equal(t, "error_not_enqueued", y.do("w", held, "0"))
	assert.Equal(t, 1, mustLock(t, y.stats(), held).Waiters, "y's w did not touch x's enqueue")
}

// Checklist 44.
func TestQueuedWaiterGrantedBeforeWaitGetsFullLeaseAtWait(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	k := key(t)
	a, b := e.dial(t), e.dial(t)
	ga := e.lock(t, a, k, "0")
	require.Equal(t, "queued", b.do("e", k, "5"))
	require.Equal(t, "ok", a.do("r", k, ga.Token))
	// b is granted now, before any w: the key is held.
	assert.Equal(t, "timeout", a.do("l", k, "0"))
	time.Sleep(2 * time.Second) // without the reset at w, 3 s would remain
	gb := e.grant(t, b.do("w", k, "0"), "ok")
	assert.EqualValues(t, 5, gb.Lease)
	st := b.stats()
	require.NotNil(t, st.lock(k))
	assert.InDelta(t, 5, mustLock(t, st, k).LeaseExpiresInS, 1, "lease reset to full length at w")
}

// Checklist 45 ([RF] half).
func TestWaitAfterAcquiredLeaseExpiredAndSweptAnswersLeaseExpired(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	k := key(t)
	c := e.dial(t)
	e.grant(t, c.do("e", k, "1"), "acquired")
	time.Sleep(2500 * time.Millisecond)
	require.Nil(t, c.stats().lock(k), "the expired holder must have been swept")
	require.Equal(t, "error_lease_expired", c.do("w", k, "0"))
	e.lock(t, e.dial(t), k, "0")
}

// Checklist 46 ([RF] half).
func TestWaitAfterUnclaimedGrantExpiredAnswersLeaseExpired(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	k := key(t)
	a, b := e.dial(t), e.dial(t)
	ga := e.lock(t, a, k, "0")
	require.Equal(t, "queued", b.do("e", k, "1"))
	require.Equal(t, "ok", a.do("r", k, ga.Token))
	time.Sleep(2500 * time.Millisecond)
	require.Equal(t, "error_lease_expired", b.do("w", k, "0"))
	e.lock(t, a, k, "0")
}

// Checklist 47.
func TestWaitAfterAcquiredLeaseExpiredBeforeSweepAnswersLeaseExpired(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{LeaseSweepInterval: time.Hour})
	k := key(t)
	c := e.dial(t)
	e.grant(t, c.do("e", k, "1"), "acquired")
	time.Sleep(1200 * time.Millisecond)
	require.NotNil(t, c.stats().lock(k), "not swept yet")
	require.Equal(t, "error_lease_expired", c.do("w", k, "0"))
	// The expired holder was evicted by the w: the key is free.
	e.lock(t, e.dial(t), k, "0")
}

// Checklist 48.
func TestEnqueueAfterOwnLockQueuesBehindItself(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	k := key(t)
	c := e.dial(t)
	g := e.lock(t, c, k, "0")
	require.Equal(t, "queued", c.do("e", k, ""))
	require.Equal(t, "timeout", c.do("w", k, "0"), "self-deadlock: the slot is its own")
	require.Equal(t, "queued", c.do("e", k, ""))
	require.Equal(t, "ok", c.do("r", k, g.Token))
	g2 := e.grant(t, c.do("w", k, "0"), "ok")
	assert.NotEqual(t, g.Token, g2.Token)
}

// Checklist 49.
func TestWaitAfterAcquiredAndReleasedAnswersNotEnqueued(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	k := key(t)
	c := e.dial(t)
	g := e.grant(t, c.do("e", k, ""), "acquired")
	require.Equal(t, "ok", c.do("r", k, g.Token))
	require.Equal(t, "error_not_enqueued", c.do("w", k, "0"))
	// Already waited is not enqueued either.
	e.grant(t, c.do("e", k, ""), "acquired")
	e.grant(t, c.do("w", k, "0"), "ok")
	require.Equal(t, "error_not_enqueued", c.do("w", k, "0"))
}

// Checklist 50.
func TestEnqueueLeaseZeroAnswersErrorAndEmptyMeansDefault(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	k := key(t)
	c := e.dial(t)
	for _, arg := range []string{"0", "-1", "1.5", "x", "1 2"} {
		require.Equal(t, "error", c.do("e", k, arg), "e %q", arg)
	}
	require.Nil(t, c.stats().lock(k))
	g := e.grant(t, c.do("e", k, ""), "acquired")
	assert.Equal(t, e.defaultLease, g.Lease)
	g = e.grant(t, c.do("e", key(t, "2"), "  12 "), "acquired")
	assert.EqualValues(t, 12, g.Lease)
}

// Checklist 51.
func TestWaitWithEmptyArgumentAnswersError(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	k := key(t)
	c := e.dial(t)
	ga := e.grant(t, c.do("e", k, ""), "acquired")
	for _, arg := range []string{"", " ", "-1", "1.5", "1 2", "x"} {
		require.Equal(t, "error", c.do("w", k, arg), "w %q", arg)
	}
	// A request rejected at parse level changes nothing: the enqueue is pending.
	gw := e.grant(t, c.do("w", k, "0"), "ok")
	assert.Equal(t, ga.Token, gw.Token)
}

// Checklist 52 (w ≡ sw: one handler).
func TestWaitCompletesSemaphoreEnqueueLikeSemaphoreWait(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	s := key(t)
	a, x := e.dial(t), e.dial(t)
	g1 := e.grant(t, a.do("sl", s, "0 2"), "ok")
	e.grant(t, a.do("sl", s, "0 2"), "ok")
	require.Equal(t, "queued", x.do("se", s, "2"))
	start := time.Now()
	x.req("w", s, "1")
	require.Equal(t, "timeout", x.replyWithin(replyWait))
	between(t, time.Since(start), 700*time.Millisecond, 10*time.Second, "w s 1")
	require.Equal(t, "error_not_enqueued", x.do("sw", s, "0"))

	require.Equal(t, "queued", x.do("se", s, "2"))
	x.req("w", s, "5")
	x.expectSilence(quiet)
	require.Equal(t, "ok", a.do("sr", s, g1.Token))
	e.grant(t, x.replyWithin(replyWait), "ok")
	// And sw completes an e.
	k := key(t, "lock")
	e.grant(t, x.do("e", k, ""), "acquired")
	e.grant(t, x.do("sw", k, "0"), "ok")
}

// Checklist 53.
func TestClosedEnqueuedConnectionLeavesTheQueueAtOnce(t *testing.T) {
	t.Parallel()
	e := target(t, dflockdtest.Config{})
	k := key(t)
	a, x := e.dial(t), e.dial(t)
	ga := e.lock(t, a, k, "0")
	require.Equal(t, "queued", x.do("e", k, ""))
	require.Equal(t, 1, mustLock(t, a.stats(), k).Waiters)
	start := time.Now()
	x.close()
	waitStats(t, a, replyWait, "waiter gone", func(st statsDoc) bool { return mustLock(t, st, k).Waiters == 0 })
	assert.Less(t, time.Since(start), prompt)
	// The release goes to nobody: the key is free.
	require.Equal(t, "ok", a.do("r", k, ga.Token))
	g := e.lock(t, e.dial(t), k, "0")
	if e.local() {
		assert.Equal(t, ga.Fence+1, g.Fence, "no fence was consumed by the gone waiter")
	}
}
