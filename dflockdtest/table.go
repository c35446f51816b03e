package dflockdtest

import (
	"crypto/rand"
	"encoding/binary"
	"sort"
	"sync"
	"time"
)

// status is the outcome of a table operation; word() is its wire status.
type status uint8

const (
	stOK status = iota
	stAcquired
	stQueued
	stWait // not a reply: the caller must block on the returned waiter
	stTimeout
	stError
	stMaxLocks
	stMaxWaiters
	stLimitMismatch
	stAlreadyEnqueued
	stNotEnqueued
	stLeaseExpired
)

var statusWords = [...]string{
	stOK:              "ok",
	stAcquired:        "acquired",
	stQueued:          "queued",
	stWait:            "wait",
	stTimeout:         "timeout",
	stError:           "error",
	stMaxLocks:        "error_max_locks",
	stMaxWaiters:      "error_max_waiters",
	stLimitMismatch:   "error_limit_mismatch",
	stAlreadyEnqueued: "error_already_enqueued",
	stNotEnqueued:     "error_not_enqueued",
	stLeaseExpired:    "error_lease_expired",
}

func (s status) word() string { return statusWords[s] }

// session is the lock table's view of one connection: what it holds (for
// auto-release) and its two-phase state per key. All fields except id and
// wake are guarded by table.mu.
type session struct {
	id   uint64
	wake chan struct{} // cap 1: one of this session's waiters was granted
	held map[*holder]struct{}
	enq  map[string]*waiter
	// Cluster mode. inc is the serving node's incarnation tag (set once);
	// ref is the stable ref (set and read on the connection's goroutine
	// only); blocking is the l/sl waiter the connection is blocked on.
	inc      uint64
	ref      string
	blocking *waiter
}

func newSession(id uint64) *session {
	return &session{id: id, wake: make(chan struct{}, 1)}
}

type holderState uint8

const (
	hsHeld holderState = iota
	hsReleased
	hsEvicted
)

// holder is one granted slot.
type holder struct {
	tok     token
	ks      *keyState
	owner   *session // the acquiring connection (auto-release follows it)
	expires time.Time
	lease   int64
	fence   uint64
	state   holderState
	enq     *waiter // two-phase state that will claim this slot with w, if any
	ref     string  // the stable ref of the connection that acquired it
	// orphanUntil is set (cluster mode) when the slot's connection was
	// cleaned up and ref is set: the slot waits for a re-attach until then.
	orphanUntil time.Time
}

// waiter is one queued request (l/sl blocking, or e/se queued), and also the
// two-phase state of an e/se (queued or acquired).
type waiter struct {
	ks          *keyState
	owner       *session
	lease       int64
	prev, next  *waiter
	queued      bool
	twoPhase    bool
	holder      *holder // set once granted
	ref         string  // as holder.ref
	orphanUntil time.Time
}

// keyState is one lock or semaphore (a lock is a semaphore with limit 1).
type keyState struct {
	key        string
	limit      int
	holders    []*holder
	head, tail *waiter
	nwait      int
	lastActive time.Time
	// evicted are holders evicted while a two-phase enqueue still pointed
	// at them; that state lives until w consumes it or GC drops the key.
	evicted []*holder
}

func (ks *keyState) idle() bool { return len(ks.holders) == 0 && ks.nwait == 0 }

// grant is what a grant or renew reply carries.
type grant struct {
	tok   token
	lease int64
	fence uint64
}

// table is the lock/semaphore table: one mutex, one map of keys, one global
// fence counter. Waiters are woken through their session's wake channel, so
// there is no goroutine per key.
type table struct {
	mu         sync.Mutex
	keys       map[string]*keyState
	tokens     map[token]*holder
	fence      uint64
	maxLocks   int
	maxWaiters int
	gcMaxIdle  time.Duration
	// fenced: a token's first 8 bytes are its fence, big-endian (2.x).
	fenced bool
	// cluster: slots re-attach by stable ref; renew rebinds the holder.
	cluster bool

	rnd    [4096]byte // buffered CSPRNG output for tokens
	rndPos int
}

func newTable(maxLocks, maxWaiters int, gcMaxIdle time.Duration) *table {
	return &table{
		keys:       make(map[string]*keyState),
		tokens:     make(map[token]*holder),
		maxLocks:   maxLocks,
		maxWaiters: maxWaiters,
		gcMaxIdle:  gcMaxIdle,
		rndPos:     4096,
	}
}

// fenceTokens makes the table issue 2.x tokens: the fence in the first 8
// bytes. Like a 2.x server without a fence state file, the counter starts
// from the wall clock, so fences keep rising across restarts.
func (t *table) fenceTokens() {
	t.fenced = true
	t.fence = uint64(time.Now().UnixNano())
}

// randomUint64 is 8 bytes of crypto/rand.
func randomUint64() uint64 {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("dflockdtest: crypto/rand failed: " + err.Error())
	}
	return binary.BigEndian.Uint64(b[:])
}

func leaseDur(sec int64) time.Duration { return time.Duration(sec) * time.Second }

func (t *table) newToken() token {
	if t.rndPos+16 > len(t.rnd) {
		if _, err := rand.Read(t.rnd[:]); err != nil {
			panic("dflockdtest: crypto/rand failed: " + err.Error())
		}
		t.rndPos = 0
	}
	var tok token
	copy(tok[:], t.rnd[t.rndPos:])
	t.rndPos += 16
	return tok
}

// getOrCreate returns the key's state, creating it within the max-locks
// budget. The limit must match the existing state's.
func (t *table) getOrCreate(key []byte, limit int, now time.Time) (*keyState, status) {
	if ks := t.keys[string(key)]; ks != nil {
		if ks.limit != limit {
			return nil, stLimitMismatch
		}
		ks.lastActive = now
		return ks, stOK
	}
	if len(t.keys) >= t.maxLocks {
		return nil, stMaxLocks
	}
	ks := &keyState{key: string(key), limit: limit, lastActive: now}
	t.keys[ks.key] = ks
	return ks, stOK
}

func (t *table) push(w *waiter) {
	ks := w.ks
	w.prev = ks.tail
	w.next = nil
	if ks.tail != nil {
		ks.tail.next = w
	} else {
		ks.head = w
	}
	ks.tail = w
	ks.nwait++
	w.queued = true
}

func (t *table) unlink(w *waiter) {
	if !w.queued {
		return
	}
	ks := w.ks
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		ks.head = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	} else {
		ks.tail = w.prev
	}
	w.prev, w.next = nil, nil
	w.queued = false
	ks.nwait--
}

func (t *table) newHolder(ks *keyState, owner *session, ref string, lease int64, now time.Time) *holder {
	t.fence++
	tok := t.newToken()
	if t.fenced {
		binary.BigEndian.PutUint64(tok[:8], t.fence)
	}
	h := &holder{
		tok:     tok,
		ks:      ks,
		owner:   owner,
		expires: now.Add(leaseDur(lease)),
		lease:   lease,
		fence:   t.fence,
		ref:     ref,
	}
	ks.holders = append(ks.holders, h)
	ks.lastActive = now
	t.tokens[h.tok] = h
	if owner.held == nil {
		owner.held = make(map[*holder]struct{})
	}
	owner.held[h] = struct{}{}
	return h
}

// grantHeads hands free slots to the head of the queue, in order.
func (t *table) grantHeads(ks *keyState, now time.Time) {
	for len(ks.holders) < ks.limit && ks.head != nil {
		w := ks.head
		t.unlink(w)
		h := t.newHolder(ks, w.owner, w.ref, w.lease, now)
		h.orphanUntil = w.orphanUntil
		w.holder = h
		if w.twoPhase {
			h.enq = w
		}
		select {
		case w.owner.wake <- struct{}{}:
		default:
		}
	}
}

// removeHolder takes h out of the table (release or eviction) and passes
// the slot on.
func (t *table) removeHolder(h *holder, st holderState, now time.Time) {
	if h.state != hsHeld {
		return
	}
	ks := h.ks
	for i, x := range ks.holders {
		if x == h {
			last := len(ks.holders) - 1
			ks.holders[i] = ks.holders[last]
			ks.holders[last] = nil
			ks.holders = ks.holders[:last]
			break
		}
	}
	delete(t.tokens, h.tok)
	delete(h.owner.held, h)
	h.state = st
	if h.enq != nil {
		if st == hsReleased {
			// A release forgets the two-phase state.
			forgetEnqueue(h, ks.key)
		} else {
			// An eviction keeps it, so that w answers error_lease_expired,
			// until GC drops the key.
			live := ks.evicted[:0]
			for _, e := range ks.evicted {
				if e.enq != nil {
					live = append(live, e)
				}
			}
			ks.evicted = append(live, h)
		}
	}
	ks.lastActive = now
	t.grantHeads(ks, now)
}

func (t *table) evictExpired(ks *keyState, now time.Time) {
	for i := 0; i < len(ks.holders); {
		h := ks.holders[i]
		if !now.Before(h.expires) {
			t.removeHolder(h, hsEvicted, now) // swaps another holder into i
			continue
		}
		i++
	}
}

func (h *holder) grant() grant { return grant{tok: h.tok, lease: h.lease, fence: h.fence} }

// acquire serves l/sl. With wait false (timeout 0) it never queues. With
// wait true it may return stWait and a queued waiter.
func (t *table) acquire(sess *session, key []byte, limit int, lease int64, wait bool, now time.Time) (status, grant, *waiter) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ks, st := t.getOrCreate(key, limit, now)
	if st != stOK {
		return st, grant{}, nil
	}
	t.evictExpired(ks, now)
	if h, w := t.reattach(sess, ks, lease, now); h != nil {
		forgetEnqueue(h, ks.key)
		return stOK, h.grant(), nil
	} else if w != nil {
		if w.twoPhase {
			w.twoPhase = false
			t.forget(w)
		}
		if !wait {
			// Try once: the re-adopted place stays, as after a timeout.
			return stTimeout, grant{}, nil
		}
		sess.blocking = w
		return stWait, grant{}, w
	}
	if len(ks.holders) < ks.limit && ks.nwait == 0 {
		return stOK, t.newHolder(ks, sess, sess.ref, lease, now).grant(), nil
	}
	if t.maxWaiters > 0 && ks.nwait >= t.maxWaiters {
		return stMaxWaiters, grant{}, nil
	}
	if !wait {
		return stTimeout, grant{}, nil
	}
	w := &waiter{ks: ks, owner: sess, lease: lease, ref: sess.ref}
	t.push(w)
	if t.cluster {
		sess.blocking = w
	}
	return stWait, grant{}, w
}

// enqueue serves e/se.
func (t *table) enqueue(sess *session, key []byte, limit int, lease int64, now time.Time) (status, grant) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if sess.enq[string(key)] != nil {
		return stAlreadyEnqueued, grant{}
	}
	ks, st := t.getOrCreate(key, limit, now)
	if st != stOK {
		return st, grant{}
	}
	t.evictExpired(ks, now)
	if sess.enq == nil {
		sess.enq = make(map[string]*waiter)
	}
	if h, w := t.reattach(sess, ks, lease, now); h != nil {
		forgetEnqueue(h, ks.key)
		w := &waiter{ks: ks, owner: sess, lease: lease, twoPhase: true, holder: h, ref: h.ref}
		h.enq = w
		sess.enq[ks.key] = w
		return stAcquired, h.grant()
	} else if w != nil {
		t.forget(w)
		w.twoPhase = true
		sess.enq[ks.key] = w
		return stQueued, grant{}
	}
	if len(ks.holders) < ks.limit && ks.nwait == 0 {
		h := t.newHolder(ks, sess, sess.ref, lease, now)
		w := &waiter{ks: ks, owner: sess, lease: lease, twoPhase: true, holder: h, ref: sess.ref}
		h.enq = w
		sess.enq[ks.key] = w
		return stAcquired, h.grant()
	}
	if t.maxWaiters > 0 && ks.nwait >= t.maxWaiters {
		return stMaxWaiters, grant{}
	}
	w := &waiter{ks: ks, owner: sess, lease: lease, twoPhase: true, ref: sess.ref}
	t.push(w)
	sess.enq[ks.key] = w
	return stQueued, grant{}
}

// forget drops w's two-phase state.
func (t *table) forget(w *waiter) {
	if !w.twoPhase {
		return
	}
	if w.owner.enq[w.ks.key] == w {
		delete(w.owner.enq, w.ks.key)
	}
	if w.holder != nil && w.holder.enq == w {
		w.holder.enq = nil
	}
}

// claimLocked completes a granted waiter: the lease restarts at full length.
func (t *table) claimLocked(w *waiter, now time.Time) (status, grant) {
	h := w.holder
	t.forget(w)
	if h.state != hsHeld {
		return stLeaseExpired, grant{}
	}
	if !now.Before(h.expires) {
		t.removeHolder(h, hsEvicted, now)
		return stLeaseExpired, grant{}
	}
	h.expires = now.Add(leaseDur(w.lease))
	h.ks.lastActive = now
	return stOK, grant{tok: h.tok, lease: w.lease, fence: h.fence}
}

// waitBegin serves w/sw up to the point where it would block.
func (t *table) waitBegin(sess *session, key []byte, try bool, now time.Time) (status, grant, *waiter) {
	t.mu.Lock()
	defer t.mu.Unlock()
	w := sess.enq[string(key)]
	if w == nil {
		return stNotEnqueued, grant{}, nil
	}
	if w.holder != nil {
		st, g := t.claimLocked(w, now)
		return st, g, nil
	}
	if try {
		t.unlink(w)
		w.ks.lastActive = now
		t.forget(w)
		return stTimeout, grant{}, nil
	}
	return stWait, grant{}, w
}

// tryClaim is called when the waiter's session was woken: done is false when
// w has not been granted (the wake was for another waiter of the session).
func (t *table) tryClaim(w *waiter, now time.Time) (st status, g grant, done bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if w.holder == nil {
		return 0, grant{}, false
	}
	unblock(w)
	st, g = t.claimLocked(w, now)
	return st, g, true
}

// cancelWait ends a blocking wait. On timeout a grant that raced in still
// wins; on abort (shutdown, cancelled connection) the waiter just goes and a
// slot it was granted stays with the connection, which is closing.
func (t *table) cancelWait(w *waiter, abort bool, now time.Time) (status, grant) {
	t.mu.Lock()
	defer t.mu.Unlock()
	unblock(w)
	if w.holder != nil {
		if abort {
			t.forget(w)
			return stError, grant{}
		}
		return t.claimLocked(w, now)
	}
	t.unlink(w)
	w.ks.lastActive = now
	t.forget(w)
	return stTimeout, grant{}
}

func (t *table) lookup(key, tokArg []byte) *holder {
	tok, ok := parseToken(tokArg)
	if !ok {
		return nil
	}
	h := t.tokens[tok]
	if h == nil || h.ks.key != string(key) {
		return nil
	}
	return h
}

// release serves r/sr. It does not check expiry.
func (t *table) release(key, tokArg []byte, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	h := t.lookup(key, tokArg)
	if h == nil {
		return false
	}
	t.removeHolder(h, hsReleased, now)
	return true
}

// renew serves n/sn.
func (t *table) renew(key, tokArg []byte, lease int64, now time.Time) (status, grant) {
	return t.renewAs(nil, key, tokArg, lease, now)
}

// renewAs is renew on sess's connection: in cluster mode the holder is
// rebound to it (auto-release and orphaning follow that connection).
func (t *table) renewAs(sess *session, key, tokArg []byte, lease int64, now time.Time) (status, grant) {
	t.mu.Lock()
	defer t.mu.Unlock()
	h := t.lookup(key, tokArg)
	if h == nil {
		return stError, grant{}
	}
	if !now.Before(h.expires) {
		t.removeHolder(h, hsEvicted, now)
		return stLeaseExpired, grant{}
	}
	if t.cluster && sess != nil {
		rebind(h, sess)
	}
	h.expires = now.Add(leaseDur(lease))
	h.ks.lastActive = now
	return stOK, grant{tok: h.tok, lease: lease, fence: h.fence}
}

// sweep evicts every expired holder, and in cluster mode every orphan whose
// time is up, and passes the slots on.
func (t *table) sweep(now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, ks := range t.keys {
		if t.cluster {
			t.dropOrphans(ks, now)
		}
		if len(ks.holders) > 0 {
			t.evictExpired(ks, now)
		}
	}
}

// gc drops keys idle for longer than gcMaxIdle, with the two-phase state
// their evicted holders left, so that a connection that enqueues on ever new
// keys and never waits does not grow without bound.
func (t *table) gc(now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for k, ks := range t.keys {
		if ks.idle() && now.Sub(ks.lastActive) > t.gcMaxIdle {
			for _, h := range ks.evicted {
				forgetEnqueue(h, k)
			}
			delete(t.keys, k)
		}
	}
}

// forgetEnqueue drops the two-phase state that would claim h, if its owner
// still has it.
func forgetEnqueue(h *holder, key string) {
	if h.enq != nil && h.owner.enq[key] == h.enq {
		delete(h.owner.enq, key)
	}
	h.enq = nil
}

// disconnect removes the session's queued waiters and two-phase state and,
// with autoRelease, releases every slot it acquired.
func (t *table) disconnect(sess *session, autoRelease bool, now time.Time) {
	t.leave(sess, autoRelease, 0, now)
}

// leave is disconnect where, with orphanTTL > 0, the slots (held or waiting)
// tagged with the session's stable ref become orphans for orphanTTL instead
// of going. A slot tagged with another ref (renewed here, so rebound to this
// connection) goes as an untagged one would.
func (t *table) leave(sess *session, autoRelease bool, orphanTTL time.Duration, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	orphan := func(ref string) bool { return orphanTTL > 0 && ref != "" && ref == sess.ref }
	if w := sess.blocking; w != nil {
		// Cluster mode leaves a blocked l/sl here, whatever ended it.
		sess.blocking = nil
		switch {
		case !w.queued:
		case orphan(w.ref):
			w.orphanUntil = now.Add(orphanTTL)
		case autoRelease:
			t.unlink(w)
			w.ks.lastActive = now
		}
	}
	if !autoRelease {
		// As dflockd: without auto-release a closed connection's waiters
		// keep their places and its holders their slots, until their
		// timeouts and leases run out.
		return
	}

	for _, w := range sess.enq {
		if orphan(w.ref) {
			if w.queued {
				w.orphanUntil = now.Add(orphanTTL)
			}
			continue
		}
		if w.queued {
			t.unlink(w)
			w.ks.lastActive = now
		}
		if w.holder != nil && w.holder.enq == w {
			w.holder.enq = nil
		}
	}
	sess.enq = nil
	for h := range sess.held {
		if orphan(h.ref) {
			h.orphanUntil = now.Add(orphanTTL)
			continue
		}
		t.removeHolder(h, hsReleased, now)
	}
}

// ---- cluster: stable refs, orphans, re-attach ----

// ownerGone reports whether a slot of owner, orphaned until orphanUntil, may
// be re-adopted by sess: only when its connection is provably gone, that is
// cleaned up (orphaned) or of another node or process incarnation.
func ownerGone(owner *session, orphanUntil time.Time, sess *session) bool {
	return owner != sess && (!orphanUntil.IsZero() || owner.inc != sess.inc)
}

// reattach finds ks's slot tagged with sess's stable ref whose owner is gone
// and rebinds it to sess (protocol-v2.md §7): a held one (h) keeps its token
// and gets a fresh lease, a waiting one (w) keeps its place in the queue.
// Both are nil when there is none.
func (t *table) reattach(sess *session, ks *keyState, lease int64, now time.Time) (*holder, *waiter) {
	if !t.cluster || sess.ref == "" {
		return nil, nil
	}
	for _, h := range ks.holders {
		if h.ref == sess.ref && ownerGone(h.owner, h.orphanUntil, sess) {
			rebind(h, sess)
			h.expires = now.Add(leaseDur(lease))
			h.lease = lease
			ks.lastActive = now
			return h, nil
		}
	}
	for w := ks.head; w != nil; w = w.next {
		if w.ref == sess.ref && ownerGone(w.owner, w.orphanUntil, sess) {
			if w.twoPhase && w.owner.enq[ks.key] == w {
				delete(w.owner.enq, ks.key)
			}
			w.owner = sess
			w.orphanUntil = time.Time{}
			w.lease = lease
			ks.lastActive = now
			return nil, w
		}
	}
	return nil, nil
}

// rebind makes sess h's owner; the slot is no longer an orphan.
func rebind(h *holder, sess *session) {
	h.orphanUntil = time.Time{}
	if h.owner == sess {
		return
	}
	delete(h.owner.held, h)
	h.owner = sess
	if sess.held == nil {
		sess.held = make(map[*holder]struct{})
	}
	sess.held[h] = struct{}{}
}

// unblock forgets w as its owner's blocked l/sl, when it is.
func unblock(w *waiter) {
	if w.owner.blocking == w {
		w.owner.blocking = nil
	}
}

// dropOrphans removes ks's orphans whose time is up and passes the slots on.
func (t *table) dropOrphans(ks *keyState, now time.Time) {
	for w := ks.head; w != nil; {
		next := w.next
		if !w.orphanUntil.IsZero() && !now.Before(w.orphanUntil) {
			t.unlink(w)
			t.forget(w)
			ks.lastActive = now
		}
		w = next
	}
	for i := 0; i < len(ks.holders); {
		h := ks.holders[i]
		if !h.orphanUntil.IsZero() && !now.Before(h.orphanUntil) {
			t.removeHolder(h, hsReleased, now) // swaps another holder into i
			continue
		}
		i++
	}
	t.grantHeads(ks, now)
}

// ---- stats ----

type lockInfo struct {
	Key             string  `json:"key"`
	OwnerConnID     uint64  `json:"owner_conn_id"`
	LeaseExpiresInS float64 `json:"lease_expires_in_s"`
	Waiters         int     `json:"waiters"`
	Fence           uint64  `json:"fence,omitempty"`
}

type semInfo struct {
	Key     string `json:"key"`
	Limit   int    `json:"limit"`
	Holders int    `json:"holders"`
	Waiters int    `json:"waiters"`
}

type idleInfo struct {
	Key   string  `json:"key"`
	IdleS float64 `json:"idle_s"`
}

// stats fills the lock-related arrays of the stats reply, sorted by key.
func (t *table) stats(now time.Time, fences bool) (locks []lockInfo, sems []semInfo, idleLocks, idleSems []idleInfo) {
	locks, sems = []lockInfo{}, []semInfo{}
	idleLocks, idleSems = []idleInfo{}, []idleInfo{}
	t.mu.Lock()
	for _, ks := range t.keys {
		switch {
		case ks.idle() && ks.limit == 1:
			idleLocks = append(idleLocks, idleInfo{Key: ks.key, IdleS: now.Sub(ks.lastActive).Seconds()})
		case ks.idle():
			idleSems = append(idleSems, idleInfo{Key: ks.key, IdleS: now.Sub(ks.lastActive).Seconds()})
		case ks.limit == 1:
			li := lockInfo{Key: ks.key, Waiters: ks.nwait}
			if len(ks.holders) > 0 {
				h := ks.holders[0]
				li.OwnerConnID = h.owner.id
				li.LeaseExpiresInS = max(h.expires.Sub(now).Seconds(), 0)
				if fences {
					li.Fence = h.fence
				}
			}
			locks = append(locks, li)
		default:
			sems = append(sems, semInfo{Key: ks.key, Limit: ks.limit, Holders: len(ks.holders), Waiters: ks.nwait})
		}
	}
	t.mu.Unlock()
	sort.Slice(locks, func(i, j int) bool { return locks[i].Key < locks[j].Key })
	sort.Slice(sems, func(i, j int) bool { return sems[i].Key < sems[j].Key })
	sort.Slice(idleLocks, func(i, j int) bool { return idleLocks[i].Key < idleLocks[j].Key })
	sort.Slice(idleSems, func(i, j int) bool { return idleSems[i].Key < idleSems[j].Key })
	return
}
