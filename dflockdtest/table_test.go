package dflockdtest

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var t0 = time.Unix(1_700_000_000, 0)

func at(sec float64) time.Time { return t0.Add(time.Duration(sec * float64(time.Second))) }

func b(s string) []byte { return []byte(s) }

// woken reports whether sess got a wake-up (and consumes it).
func woken(sess *session) bool {
	select {
	case <-sess.wake:
		return true
	default:
		return false
	}
}

func TestTableFIFOAndFences(t *testing.T) {
	t.Parallel()
	tbl := newTable(100, 0, time.Minute)
	a, bb, c := newSession(1), newSession(2), newSession(3)

	st, ga, _ := tbl.acquire(a, b("k"), 1, 33, false, at(0))
	require.Equal(t, stOK, st)
	assert.EqualValues(t, 1, ga.fence, "first grant after start has fence 1")
	assert.EqualValues(t, 33, ga.lease)

	st, _, _ = tbl.acquire(bb, b("k"), 1, 33, false, at(0))
	assert.Equal(t, stTimeout, st, "try-once on a held key")

	st, _, wb := tbl.acquire(bb, b("k"), 1, 33, true, at(0))
	require.Equal(t, stWait, st)
	st, _, wc := tbl.acquire(c, b("k"), 1, 10, true, at(0))
	require.Equal(t, stWait, st)

	st, _, _ = tbl.acquire(a, b("other"), 1, 33, false, at(0))
	require.Equal(t, stOK, st)

	_, _, done := tbl.tryClaim(wb, at(0))
	assert.False(t, done, "not granted yet")

	require.True(t, tbl.release(b("k"), b(ga.tok.String()), at(1)))
	assert.True(t, woken(bb))
	assert.False(t, woken(c), "FIFO: only the head is granted")
	st, gb, done := tbl.tryClaim(wb, at(1))
	require.True(t, done)
	require.Equal(t, stOK, st)
	assert.EqualValues(t, 3, gb.fence, "fences are global: other key took 2")
	assert.False(t, tbl.release(b("k"), b(ga.tok.String()), at(1)), "second release fails")

	require.True(t, tbl.release(b("k"), b(gb.tok.String()), at(2)))
	assert.True(t, woken(c))
	st, gc, done := tbl.tryClaim(wc, at(2))
	require.True(t, done)
	require.Equal(t, stOK, st)
	assert.EqualValues(t, 10, gc.lease, "the grantee's own lease")
	assert.EqualValues(t, 4, gc.fence)
	assert.NotEqual(t, gb.tok, gc.tok)
}

func TestTableNewcomerNeverOvertakes(t *testing.T) {
	t.Parallel()
	tbl := newTable(100, 0, time.Minute)
	a, w1, n := newSession(1), newSession(2), newSession(3)
	st, _, _ := tbl.acquire(a, b("s"), 2, 33, false, at(0))
	require.Equal(t, stOK, st)
	st, _, _ = tbl.acquire(a, b("s"), 2, 33, false, at(0))
	require.Equal(t, stOK, st, "one connection may hold two slots")
	st, _, w := tbl.acquire(w1, b("s"), 2, 33, true, at(0))
	require.Equal(t, stWait, st)
	// Timeout of the head waiter: the queue empties.
	st, _ = tbl.cancelWait(w, false, at(1))
	assert.Equal(t, stTimeout, st)
	st, _, _ = tbl.acquire(n, b("s"), 2, 33, false, at(1))
	assert.Equal(t, stTimeout, st)
}

func TestTableLimitMismatchUntilGC(t *testing.T) {
	t.Parallel()
	tbl := newTable(100, 0, 60*time.Second)
	a := newSession(1)
	var toks []grant
	for i := 0; i < 3; i++ {
		st, g, _ := tbl.acquire(a, b("s"), 3, 33, false, at(0))
		require.Equal(t, stOK, st)
		toks = append(toks, g)
	}
	st, _, _ := tbl.acquire(a, b("s"), 3, 33, false, at(0))
	assert.Equal(t, stTimeout, st, "fourth slot")
	st, _, _ = tbl.acquire(a, b("s"), 2, 33, false, at(0))
	assert.Equal(t, stLimitMismatch, st)
	st, _, _ = tbl.acquire(a, b("s"), 1, 33, false, at(0))
	assert.Equal(t, stLimitMismatch, st, "l counts as limit 1")
	st, _ = tbl.enqueue(a, b("s"), 2, 33, at(0))
	assert.Equal(t, stLimitMismatch, st)
	for _, g := range toks {
		require.True(t, tbl.release(b("s"), b(g.tok.String()), at(1)))
	}
	st, _, _ = tbl.acquire(a, b("s"), 2, 33, false, at(2))
	assert.Equal(t, stLimitMismatch, st, "idle state keeps its limit")
	tbl.gc(at(30))
	st, _, _ = tbl.acquire(a, b("s"), 2, 33, false, at(30))
	assert.Equal(t, stLimitMismatch, st, "not idle long enough")
	tbl.gc(at(61.5))
	st, _, _ = tbl.acquire(a, b("s"), 2, 33, false, at(62))
	assert.Equal(t, stOK, st, "after GC the key is new again")
}

func TestTableMaxLocksCountsIdleKeys(t *testing.T) {
	t.Parallel()
	tbl := newTable(2, 0, 60*time.Second)
	a := newSession(1)
	_, g1, _ := tbl.acquire(a, b("k1"), 1, 33, false, at(0))
	st, _, _ := tbl.acquire(a, b("k2"), 1, 33, false, at(0))
	require.Equal(t, stOK, st)
	st, _, _ = tbl.acquire(a, b("k3"), 1, 33, false, at(0))
	assert.Equal(t, stMaxLocks, st)
	st, _ = tbl.enqueue(a, b("k3"), 1, 33, at(0))
	assert.Equal(t, stMaxLocks, st)
	require.True(t, tbl.release(b("k1"), b(g1.tok.String()), at(0)))
	st, _, _ = tbl.acquire(a, b("k3"), 1, 33, false, at(1))
	assert.Equal(t, stMaxLocks, st, "released keys count until GC")
	st, _, _ = tbl.acquire(a, b("k1"), 1, 33, false, at(1))
	assert.Equal(t, stOK, st, "existing keys still work")
}

func TestTableMaxWaiters(t *testing.T) {
	t.Parallel()
	tbl := newTable(10, 1, time.Minute)
	a, w1, w2 := newSession(1), newSession(2), newSession(3)
	tbl.acquire(a, b("k"), 1, 33, false, at(0))
	st, _, _ := tbl.acquire(w1, b("k"), 1, 33, true, at(0))
	require.Equal(t, stWait, st)
	st, _, _ = tbl.acquire(w2, b("k"), 1, 33, true, at(0))
	assert.Equal(t, stMaxWaiters, st)
	st, _, _ = tbl.acquire(w2, b("k"), 1, 33, false, at(0))
	assert.Equal(t, stMaxWaiters, st, "even a try-once that would never queue")
	st, _ = tbl.enqueue(w2, b("k"), 1, 33, at(0))
	assert.Equal(t, stMaxWaiters, st)
	st, _, _ = tbl.acquire(w2, b("free"), 1, 33, false, at(0))
	assert.Equal(t, stOK, st, "a free key is still granted")
}

func TestTableSweepEvictsAndGrantsHead(t *testing.T) {
	t.Parallel()
	tbl := newTable(10, 0, time.Minute)
	a, w := newSession(1), newSession(2)
	_, ga, _ := tbl.acquire(a, b("k"), 1, 1, false, at(0))
	_, _, ww := tbl.acquire(w, b("k"), 1, 33, true, at(0))
	tbl.sweep(at(0.9))
	assert.False(t, woken(w))
	tbl.sweep(at(1.0))
	require.True(t, woken(w), "deadline reached: evicted and passed on")
	st, gw, done := tbl.tryClaim(ww, at(1.0))
	require.True(t, done)
	require.Equal(t, stOK, st)
	assert.Equal(t, ga.fence+1, gw.fence)
	st, _ = tbl.renew(b("k"), b(ga.tok.String()), 33, at(1.1))
	assert.Equal(t, stError, st, "evicted token is gone")
	assert.False(t, tbl.release(b("k"), b(ga.tok.String()), at(1.1)))
}

func TestTableEvictionOnAcquire(t *testing.T) {
	t.Parallel()
	tbl := newTable(10, 0, time.Minute)
	a, bb := newSession(1), newSession(2)
	tbl.acquire(a, b("k"), 1, 1, false, at(0))
	st, _, _ := tbl.acquire(bb, b("k"), 1, 33, false, at(1.5))
	assert.Equal(t, stOK, st, "an expired holder is evicted by the next acquire")
}

func TestTableRenew(t *testing.T) {
	t.Parallel()
	tbl := newTable(10, 0, time.Minute)
	a, other := newSession(1), newSession(2)
	_, g, _ := tbl.acquire(a, b("k"), 1, 60, false, at(0))
	tok := b(g.tok.String())
	st, gr := tbl.renew(b("k"), tok, 33, at(10))
	require.Equal(t, stOK, st)
	assert.EqualValues(t, 33, gr.lease)
	assert.Equal(t, g.fence, gr.fence, "renew returns the existing fence")
	st, _ = tbl.renew(b("other-key"), tok, 33, at(10))
	assert.Equal(t, stError, st, "token of another key")
	st, _ = tbl.renew(b("k"), b("0123456789abcdef0123456789abcdef"), 33, at(10))
	assert.Equal(t, stError, st)

	// The renewed deadline is 10+33 = 43.
	_, _, wo := tbl.acquire(other, b("k"), 1, 5, true, at(11))
	st, _ = tbl.renew(b("k"), tok, 33, at(43))
	assert.Equal(t, stLeaseExpired, st, "after the deadline, before eviction")
	assert.True(t, woken(other), "the renew's eviction passes the slot on")
	st, _, _ = tbl.tryClaim(wo, at(43))
	assert.Equal(t, stOK, st)
	st, _ = tbl.renew(b("k"), tok, 33, at(43))
	assert.Equal(t, stError, st, "second renew: gone")
}

func TestTableReleaseDoesNotCheckExpiry(t *testing.T) {
	t.Parallel()
	tbl := newTable(10, 0, time.Minute)
	a := newSession(1)
	_, g, _ := tbl.acquire(a, b("k"), 1, 1, false, at(0))
	assert.True(t, tbl.release(b("k"), b(g.tok.String()), at(5)), "expired but not evicted: ok")
}

func TestTableTwoPhase(t *testing.T) {
	t.Parallel()
	tbl := newTable(10, 0, time.Minute)
	x, y, h := newSession(1), newSession(2), newSession(3)

	st, ge := tbl.enqueue(x, b("k"), 1, 33, at(0))
	require.Equal(t, stAcquired, st)
	st, _ = tbl.enqueue(x, b("k"), 1, 33, at(0))
	assert.Equal(t, stAlreadyEnqueued, st)
	st, _, _ = tbl.waitBegin(y, b("k"), true, at(0))
	assert.Equal(t, stNotEnqueued, st, "enqueued on another connection")
	st, gw, _ := tbl.waitBegin(x, b("k"), true, at(5))
	require.Equal(t, stOK, st)
	assert.Equal(t, ge.tok, gw.tok)
	assert.Equal(t, ge.fence, gw.fence)
	st, _, _ = tbl.waitBegin(x, b("k"), true, at(5))
	assert.Equal(t, stNotEnqueued, st, "already waited")

	// Queued behind x, timeout forgets the enqueue.
	st, _ = tbl.enqueue(y, b("k"), 1, 5, at(6))
	require.Equal(t, stQueued, st)
	st, _, w := tbl.waitBegin(y, b("k"), false, at(6))
	require.Equal(t, stWait, st)
	st, _ = tbl.cancelWait(w, false, at(7))
	assert.Equal(t, stTimeout, st)
	st, _, _ = tbl.waitBegin(y, b("k"), true, at(7))
	assert.Equal(t, stNotEnqueued, st)
	assert.Zero(t, tbl.keys["k"].nwait)

	// Granted before w: the lease restarts at w with the full length.
	st, _ = tbl.enqueue(y, b("k"), 1, 5, at(8))
	require.Equal(t, stQueued, st)
	require.True(t, tbl.release(b("k"), b(ge.tok.String()), at(9)))
	st, g, _ := tbl.waitBegin(y, b("k"), false, at(12))
	require.Equal(t, stOK, st)
	assert.EqualValues(t, 5, g.lease)
	hy := tbl.tokens[g.tok]
	assert.Equal(t, at(17), hy.expires)

	// e after the same connection's l: queued behind itself.
	st, gl, _ := tbl.acquire(h, b("self"), 1, 33, false, at(0))
	require.Equal(t, stOK, st)
	st, _ = tbl.enqueue(h, b("self"), 1, 33, at(0))
	assert.Equal(t, stQueued, st)
	// Released: the two-phase state of the released holder is forgotten.
	require.True(t, tbl.release(b("self"), b(gl.tok.String()), at(1)))
	st, _, _ = tbl.waitBegin(h, b("self"), true, at(1))
	assert.Equal(t, stOK, st, "granted to the queued e")
}

func TestTableTwoPhaseExpiry(t *testing.T) {
	t.Parallel()
	tbl := newTable(10, 0, time.Minute)
	x, y := newSession(1), newSession(2)

	// Acquired, lease runs out, evicted by the sweep: RF error_lease_expired.
	st, _ := tbl.enqueue(x, b("a"), 1, 1, at(0))
	require.Equal(t, stAcquired, st)
	tbl.sweep(at(2))
	st, _, _ = tbl.waitBegin(x, b("a"), true, at(2.5))
	assert.Equal(t, stLeaseExpired, st)
	st, _, _ = tbl.waitBegin(x, b("a"), true, at(2.5))
	assert.Equal(t, stNotEnqueued, st)

	// Acquired, expired, not yet evicted.
	st, _ = tbl.enqueue(x, b("b"), 1, 1, at(0))
	require.Equal(t, stAcquired, st)
	st, _, _ = tbl.waitBegin(x, b("b"), true, at(1.5))
	assert.Equal(t, stLeaseExpired, st)
	assert.Empty(t, tbl.keys["b"].holders, "w evicts the expired holder")

	// Queued, granted, expired before w (RF fixed behaviour: no stale token).
	tbl.acquire(y, b("c"), 1, 33, false, at(0))
	hy := tbl.keys["c"].holders[0]
	st, _ = tbl.enqueue(x, b("c"), 1, 1, at(0))
	require.Equal(t, stQueued, st)
	require.True(t, tbl.release(b("c"), b(hy.tok.String()), at(1)))
	tbl.sweep(at(2.1))
	st, _, _ = tbl.waitBegin(x, b("c"), true, at(3.5))
	assert.Equal(t, stLeaseExpired, st)

	// Acquired then released: not enqueued.
	st, g := tbl.enqueue(x, b("d"), 1, 33, at(0))
	require.Equal(t, stAcquired, st)
	require.True(t, tbl.release(b("d"), b(g.tok.String()), at(0)))
	st, _, _ = tbl.waitBegin(x, b("d"), true, at(0))
	assert.Equal(t, stNotEnqueued, st)
}

func TestTableDisconnect(t *testing.T) {
	t.Parallel()
	tbl := newTable(10, 0, time.Minute)
	a, q, w := newSession(1), newSession(2), newSession(3)
	tbl.acquire(a, b("k"), 1, 33, false, at(0))
	tbl.acquire(a, b("k2"), 1, 33, false, at(0))
	st, _ := tbl.enqueue(q, b("k"), 1, 33, at(0))
	require.Equal(t, stQueued, st)
	_, _, ww := tbl.acquire(w, b("k"), 1, 33, true, at(0))
	assert.Equal(t, 2, tbl.keys["k"].nwait)

	tbl.disconnect(q, true, at(1))
	assert.Equal(t, 1, tbl.keys["k"].nwait, "a queued e disappears at once")
	tbl.disconnect(a, true, at(1))
	assert.True(t, woken(w))
	st, _, _ = tbl.tryClaim(ww, at(1))
	assert.Equal(t, stOK, st)
	assert.Empty(t, tbl.keys["k2"].holders)
	assert.Len(t, tbl.tokens, 1)

	// Auto-release off: holders stay until expiry.
	tbl2 := newTable(10, 0, time.Minute)
	h := newSession(9)
	tbl2.acquire(h, b("k"), 1, 2, false, at(0))
	tbl2.disconnect(h, false, at(0))
	assert.Len(t, tbl2.keys["k"].holders, 1)
	tbl2.sweep(at(2))
	assert.Empty(t, tbl2.keys["k"].holders)
}

func TestTableDeadWaiterConsumesFence(t *testing.T) {
	t.Parallel()
	tbl := newTable(10, 0, time.Minute)
	a, dead, live := newSession(1), newSession(2), newSession(3)
	_, ga, _ := tbl.acquire(a, b("k"), 1, 33, false, at(0))
	_, _, wd := tbl.acquire(dead, b("k"), 1, 33, true, at(0))
	_, _, wl := tbl.acquire(live, b("k"), 1, 33, true, at(0))
	tbl.release(b("k"), b(ga.tok.String()), at(1))
	// The dead waiter's reader wakes, claims, writes into the void, then
	// notices EOF and disconnects.
	st, gd, _ := tbl.tryClaim(wd, at(1))
	require.Equal(t, stOK, st)
	tbl.disconnect(dead, true, at(1))
	st, gl, _ := tbl.tryClaim(wl, at(1))
	require.Equal(t, stOK, st)
	assert.Equal(t, ga.fence+2, gl.fence, "the dead waiter's grant consumed one fence")
	assert.Equal(t, ga.fence+1, gd.fence)
}

func TestTableStats(t *testing.T) {
	t.Parallel()
	tbl := newTable(10, 0, time.Minute)
	a, w := newSession(7), newSession(8)
	_, g, _ := tbl.acquire(a, b("one"), 1, 60, false, at(0))
	tbl.acquire(w, b("one"), 1, 60, true, at(0))
	tbl.acquire(a, b("s"), 2, 60, false, at(0))
	_, gi, _ := tbl.acquire(a, b("idle"), 1, 60, false, at(0))
	tbl.release(b("idle"), b(gi.tok.String()), at(1))
	_, gs, _ := tbl.acquire(a, b("idlesem"), 3, 60, false, at(0))
	tbl.release(b("idlesem"), b(gs.tok.String()), at(1))

	locks, sems, il, is := tbl.stats(at(10), true)
	require.Len(t, locks, 1)
	assert.Equal(t, lockInfo{Key: "one", OwnerConnID: 7, LeaseExpiresInS: 50, Waiters: 1, Fence: g.fence}, locks[0])
	require.Len(t, sems, 1)
	assert.Equal(t, semInfo{Key: "s", Limit: 2, Holders: 1, Waiters: 0}, sems[0])
	assert.Equal(t, []idleInfo{{Key: "idle", IdleS: 9}}, il)
	assert.Equal(t, []idleInfo{{Key: "idlesem", IdleS: 9}}, is)

	locks, _, _, _ = tbl.stats(at(100), false)
	assert.Zero(t, locks[0].LeaseExpiresInS, "clamped at 0")
	assert.Zero(t, locks[0].Fence, "no fences")
}
