package dfstream_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/dfstream/dfstream"
	"github.com/dfstream/dfstream/dflockdtest"
	"github.com/dfstream/dfstream/internal/faultproxy"
)

// The fault suite: workers contend on a few keys through links that a
// seeded schedule breaks at random, and the checker of fault_check_test.go
// holds the library to its promise over everything they believed.
//
// DFSTREAM_FAULT_ACQUISITIONS sets how many grants to reach (default
// faultShortForm); DFSTREAM_FAULT_SEED replays a schedule.

const (
	faultShortForm      = 250
	faultWorkers        = 6
	faultLease          = time.Second
	faultAcquireTimeout = 2 * time.Second
	faultSemLimit       = 2
	// faultHealBound is how long after the faults heal every worker must
	// have been granted again: a few leases and acquire timeouts, the
	// longest hold, and room for a loaded 2-core machine.
	faultHealBound = 15 * time.Second
	// faultSweep makes the server expire leases promptly, so a holder that
	// believes too long meets the next holder at once.
	faultSweep = 50 * time.Millisecond
)

// faultSeed is the schedule's seed: DFSTREAM_FAULT_SEED, or a fresh one.
func faultSeed(t *testing.T) uint64 {
	t.Helper()
	if s := os.Getenv("DFSTREAM_FAULT_SEED"); s != "" {
		seed, err := strconv.ParseUint(s, 10, 64)
		require.NoError(t, err, "DFSTREAM_FAULT_SEED")
		return seed
	}
	return rand.Uint64()
}

// faultAcquisitions is the number of grants a run reaches.
func faultAcquisitions(t *testing.T) int {
	t.Helper()
	if s := os.Getenv("DFSTREAM_FAULT_ACQUISITIONS"); s != "" {
		n, err := strconv.Atoi(s)
		require.NoError(t, err, "DFSTREAM_FAULT_ACQUISITIONS")
		require.Positive(t, n, "DFSTREAM_FAULT_ACQUISITIONS")
		return n
	}
	return faultShortForm
}

// The kinds of fault the schedule injects.
const (
	faultLatency     = "reply latency > lease"
	faultHoleClose   = "black hole, healed by closing"
	faultHoleDeliver = "black hole, healed by delivering"
	faultReset       = "reset"
	faultThrottle    = "throttle"
	faultFreeze      = "server freeze"
)

var (
	// faultLinkKinds break a client's link: all an external server allows.
	faultLinkKinds = []string{faultLatency, faultHoleClose, faultHoleDeliver, faultReset, faultThrottle}
	faultKinds     = append(slices.Clip(faultLinkKinds), faultFreeze)
)

// injector breaks links and the server at random, from a seeded RNG.
type injector struct {
	rng    *rand.Rand
	links  []*faultproxy.Proxy
	srv    *dflockdtest.Server // nil against an external server
	counts map[string]int
	log    []*faultRecord
	resets map[int][]span // worker → when its link's connections were reset
}

// span is an instant known to lie between from and to.
type span struct{ from, to time.Time }

// faultRecord is one fault injected, for the report of a violation.
type faultRecord struct {
	kind     string
	worker   int // whose link; -1 for the server
	from, to time.Time
}

// inject starts one fault and returns what heals it.
func (in *injector) inject() (heal func()) {
	kinds := faultKinds
	if in.srv == nil {
		kinds = faultLinkKinds
	}
	kind := kinds[in.rng.IntN(len(kinds))]
	in.counts[kind]++
	w := in.rng.IntN(len(in.links))
	rec := &faultRecord{kind: kind, worker: w, from: time.Now()}
	if kind == faultFreeze {
		rec.worker = -1
	}
	in.log = append(in.log, rec)
	undo := in.start(kind, w)
	return func() {
		undo()
		rec.to = time.Now()
	}
}

// reset resets worker w's link by calling do, and records when.
func (in *injector) reset(w int, do func()) {
	from := time.Now()
	do()
	in.resets[w] = append(in.resets[w], span{from, time.Now()})
}

// disconnectRace reports whether an overlap is one the server made by
// auto-release on disconnect, which no client can precede: every holder
// past the limit lost the key because the injector reset its connection
// while it held it (the Lost says the connection went), and the reset had
// begun before the grant that made the overlap was reported (the server
// may hand the key on before Reset returns).
func (in *injector) disconnectRace(o overlap) bool {
	grant := o.holders[len(o.holders)-1]
	excused := 0
	for _, b := range o.holders[:len(o.holders)-1] {
		if !errors.Is(b.lostErr, dfstream.ErrConnLost) {
			continue
		}
		for _, r := range in.resets[b.worker] {
			if !r.from.After(grant.at) && !r.from.After(b.end) && !r.to.Before(b.at) {
				excused++
				break
			}
		}
	}
	return len(o.holders)-excused <= o.limit
}

// around describes the faults that touched the workers of o, or the
// server, from a few leases before the first grant to the last end.
func (in *injector) around(o overlap) string {
	from, to := o.holders[0].at.Add(-3*faultLease), time.Time{}
	involved := map[int]bool{-1: true}
	for _, b := range o.holders {
		_, end := b.interval()
		if end.After(to) {
			to = end
		}
		involved[b.worker] = true
	}
	var out []string
	for _, r := range in.log {
		if involved[r.worker] && r.from.Before(to) && (r.to.IsZero() || r.to.After(from)) {
			out = append(out, fmt.Sprintf("%s on worker %d's link %s-%s", r.kind, r.worker,
				r.from.Format(faultClock), r.to.Format(faultClock)))
		}
	}
	return strings.Join(out, "; ")
}

// start injects one fault of kind on link (or the server) and returns what
// heals it.
func (in *injector) start(kind string, w int) (heal func()) {
	link := in.links[w]
	switch kind {
	case faultLatency:
		// 1.2 to 2.5 leases on every reply.
		lat := faultLease + time.Duration(in.rng.Int64N(int64(faultLease)*3/2)) + faultLease/5
		link.SetLatency(faultproxy.ToClient, lat)
		return func() { link.SetLatency(faultproxy.ToClient, 0) }
	case faultHoleClose:
		link.Pause(faultproxy.BothWays)
		return func() { in.reset(w, link.ResetAndResume) }
	case faultHoleDeliver:
		link.Pause(faultproxy.BothWays)
		return link.Resume
	case faultReset:
		in.reset(w, link.Reset)
		return func() {}
	case faultThrottle:
		// A request or reply line of a few dozen bytes takes up to a second.
		link.SetBandwidth(faultproxy.BothWays, 30+in.rng.IntN(300))
		return func() { link.SetBandwidth(faultproxy.BothWays, 0) }
	default:
		in.srv.Freeze()
		return in.srv.Thaw
	}
}

func (in *injector) summary() string {
	var parts []string
	total := 0
	for _, k := range faultKinds {
		parts = append(parts, fmt.Sprintf("%s %d", k, in.counts[k]))
		total += in.counts[k]
	}
	return fmt.Sprintf("%d (%s)", total, strings.Join(parts, ", "))
}

func TestFaultLocksAndSemaphoresKeepTheirPromise(t *testing.T) {
	target := faultAcquisitions(t)
	seed := faultSeed(t)
	t.Logf("seed %d (replay the fault schedule with DFSTREAM_FAULT_SEED=%d)", seed, seed)
	addr, srv := testServer(t, dflockdtest.Config{LeaseSweepInterval: faultSweep})
	baseline := goleak.IgnoreCurrent()

	lockA, lockB, sem := testKey(t, "lock-a"), testKey(t, "lock-b"), testKey(t, "sem")
	limits := map[string]int{lockA: 1, lockB: 1, sem: faultSemLimit}
	keys := []string{lockA, lockB, sem}
	opts := []dfstream.StreamOption{dfstream.WithLease(faultLease), dfstream.WithAcquireTimeout(faultAcquireTimeout)}

	h := newHistory()
	in := &injector{rng: rand.New(rand.NewPCG(seed, 0)), srv: srv,
		counts: make(map[string]int), resets: make(map[int][]span)}
	clients := make([]*dfstream.Client, faultWorkers)
	for w := range faultWorkers {
		link := faultproxy.New(t, addr) // closed below, and by Cleanup on failure
		in.links = append(in.links, link)
		clients[w] = newClient(t, []string{link.Addr()})
	}

	ctx, cancel := context.WithCancel(context.Background())
	stop := make(chan struct{})
	var workers sync.WaitGroup
	for w, c := range clients {
		rng := rand.New(rand.NewPCG(seed, uint64(w)+1))
		workers.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				key := keys[rng.IntN(len(keys))]
				var s holdStream
				var err error
				if limits[key] == 1 {
					s, err = c.StartLock(ctx, key, opts...)
				} else {
					s, err = c.StartSemaphore(ctx, key, limits[key], opts...)
				}
				if err != nil {
					continue // only bad input or a closed Client: stop ends the loop
				}
				follow(h, w, key, s, faultHoldTime(rng), stop)
			}
		})
	}

	begin := time.Now()
	limit := begin.Add(time.Minute + time.Duration(target)*300*time.Millisecond)
	var stuck []string
	for h.acquisitions() < target && time.Now().Before(limit) {
		var heals []func()
		for range 1 + in.rng.IntN(3) {
			heals = append(heals, in.inject())
		}
		// Long enough for a delayed grant to outlive its lease.
		time.Sleep(faultLease + time.Duration(in.rng.Int64N(int64(faultLease)*3/2)))
		for _, heal := range slices.Backward(heals) {
			heal()
		}
		stuck = append(stuck, awaitEveryWorker(h, time.Now())...)
		time.Sleep(time.Duration(in.rng.Int64N(int64(faultLease / 2))))
	}
	elapsed := time.Since(begin)
	h.halt()
	close(stop)
	cancel()
	workers.Wait()
	for _, c := range clients {
		require.NoError(t, c.Close())
	}
	for _, link := range in.links {
		require.NoError(t, link.Close())
	}
	leaked := goleak.Find(baseline)

	v := h.check(limits)
	var races []overlap
	v.overlaps = slices.DeleteFunc(v.overlaps, func(o overlap) bool {
		if in.disconnectRace(o) {
			races = append(races, o)
			return true
		}
		return false
	})
	t.Logf("%d acquisitions in %v; faults injected: %s", h.acquisitions(), elapsed.Round(time.Millisecond), in.summary())
	t.Logf("overlaps %d, fence inversions %d, duplicate semaphore fences %d, stale Acquired %d, late Lost %d, renewals with another fence %d, stuck workers %d, leaked goroutines %d",
		len(v.overlaps), len(v.inversions), len(v.duplicates), len(h.stale), len(h.lateLost), len(h.refenced), len(stuck), leakedCount(leaked))

	t.Logf("streams ended with Failed, by reason: %v", h.failed)

	t.Logf("overlaps made by auto-release when a reset reached the server first (not counted above): %d", len(races))
	for _, o := range races {
		t.Logf("disconnect race: %v", o)
	}
	for _, o := range v.overlaps[:min(len(v.overlaps), 5)] {
		t.Logf("%v\n\tfaults around it: %s", o, in.around(o))
	}

	assert.GreaterOrEqual(t, h.acquisitions(), target, "acquisitions before the time limit")
	assert.Empty(t, v.overlaps, "holds that overlap")
	assert.Empty(t, v.inversions, "fences out of grant order")
	assert.Empty(t, v.duplicates, "semaphore fences granted twice")
	assert.Empty(t, h.stale, "Acquired with its Deadline already past")
	assert.Empty(t, h.lateLost, "Lost after the Deadline last announced")
	assert.Empty(t, h.refenced, "renewals that changed the fence")
	assert.Empty(t, stuck, "workers not granted again within %v of the faults healing", faultHealBound)
	assert.NoError(t, leaked, "goroutines left after every Client closed")
}

// faultHoldTime is how long a worker keeps a grant: mostly briefly, so
// grants change hands often; sometimes for over a lease, so renewals meet
// the faults too.
func faultHoldTime(rng *rand.Rand) time.Duration {
	if rng.IntN(10) == 0 {
		return faultLease + time.Duration(rng.Int64N(int64(faultLease)*3/4))
	}
	return 10*time.Millisecond + time.Duration(rng.Int64N(int64(110*time.Millisecond)))
}

// awaitEveryWorker waits until every worker has been granted a key since
// healed, and returns those that were not within faultHealBound.
func awaitEveryWorker(h *history, healed time.Time) []string {
	for {
		missing := h.notAcquiredSince(faultWorkers, healed)
		if len(missing) == 0 {
			return nil
		}
		if time.Since(healed) > faultHealBound {
			var out []string
			for _, w := range missing {
				out = append(out, fmt.Sprintf("worker %d after the heal at %v", w, healed.Format(time.StampMilli)))
			}
			return out
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// leakedCount counts the goroutines goleak reported.
func leakedCount(err error) int {
	if err == nil {
		return 0
	}
	return max(strings.Count(err.Error(), "[Goroutine "), 1)
}

func TestFaultReplyLatencyLongerThanLeaseNeverReportsAStaleGrant(t *testing.T) {
	t.Parallel()
	addr, _ := testServer(t, dflockdtest.Config{LeaseSweepInterval: faultSweep})
	key := testKey(t, "k")
	slow := faultproxy.New(t, addr)
	slowClient := newClient(t, []string{slow.Addr()})
	fastClient := newClient(t, []string{addr})
	opts := []dfstream.StreamOption{dfstream.WithLease(faultLease), dfstream.WithAcquireTimeout(8 * time.Second)}

	// Every reply to the slow client arrives after the lease it grants ran
	// out on the server, which meanwhile grants the key to the waiter.
	slow.SetLatency(faultproxy.ToClient, 2500*time.Millisecond)
	h := newHistory()
	stop := make(chan struct{})
	var streams sync.WaitGroup
	streams.Go(func() {
		s, err := slowClient.StartLock(context.Background(), key, opts...)
		if assert.NoError(t, err) {
			follow(h, 0, key, s, 500*time.Millisecond, stop)
		}
	})
	for start := time.Now(); ; time.Sleep(20 * time.Millisecond) {
		if _, held := lockHolder(stats(t, addr), key); held {
			break
		}
		require.Less(t, time.Since(start), 5*time.Second, "the slow client's grant")
	}
	streams.Go(func() {
		s, err := fastClient.StartLock(context.Background(), key, opts...)
		if assert.NoError(t, err) {
			follow(h, 1, key, s, 2*time.Second, stop)
		}
	})
	// Heal once the stale reply is on its way, so a new grant can arrive.
	time.Sleep(3 * time.Second)
	slow.SetLatency(faultproxy.ToClient, 0)

	ended := make(chan struct{})
	go func() { streams.Wait(); close(ended) }()
	select {
	case <-ended:
	case <-time.After(20 * time.Second):
		close(stop)
		<-ended
		t.Error("the streams did not end within 20s")
	}

	v := h.check(map[string]int{key: 1})
	assert.Empty(t, h.stale, "Acquired with its Deadline already past")
	assert.Empty(t, v.overlaps, "two holders at once")
	assert.Empty(t, v.inversions, "fences out of grant order")
	assert.Empty(t, h.lateLost, "Lost after the Deadline last announced")
}
