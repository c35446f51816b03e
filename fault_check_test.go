package dfstream_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/dfstream/dfstream"
)

// The fault suite's record of what every worker believed, and the checker
// of the library's promise over it. The checker is exact: it compares the
// instants the library itself reported, on the one clock of this process.

// belief is one grant as its holder saw it: from the Acquired event to the
// Lost event or the moment the holder decided to release, and never beyond
// the last Deadline announced (a correct user stops relying on the key
// there).
type belief struct {
	worker   int
	key      string
	fence    uint64
	at       time.Time // Acquired.At
	deadline time.Time // the last Deadline announced (Acquired or Renewed)
	end      time.Time // zero while still believed held
	released bool      // the holder called Release
	how      string    // how the belief ended, for the report
	lostErr  error     // the reason of the Lost that ended it
	stale    bool      // reported with its Deadline already past
}

// interval is the time the holder could rely on the key; empty when the
// grant was reported with its deadline already past.
func (b *belief) interval() (from, to time.Time) {
	to = b.end
	if to.IsZero() || to.After(b.deadline) {
		to = b.deadline
	}
	return b.at, to
}

// history collects every belief and the breaches seen as they happened.
type history struct {
	mu       sync.Mutex
	beliefs  []*belief
	acquired map[int]time.Time // worker → At of its latest Acquired
	stale    []string          // Acquired whose Deadline was not after its At
	lateLost []string          // Lost after the Deadline last announced
	refenced []string          // Renewed with another fence than the grant
	failed   map[string]int    // streams ended with Failed, by reason
	halted   time.Time         // when the test told every holder to stop
}

func newHistory() *history {
	return &history{acquired: make(map[int]time.Time), failed: make(map[string]int)}
}

func (h *history) acquire(worker int, key string, ev dfstream.Acquired) *belief {
	h.mu.Lock()
	defer h.mu.Unlock()
	b := &belief{worker: worker, key: key, fence: ev.Fence, at: ev.At, deadline: ev.Deadline}
	h.beliefs = append(h.beliefs, b)
	if !ev.Deadline.After(ev.At) {
		b.stale = true
		h.stale = append(h.stale, fmt.Sprintf("worker %d %s fence %d: Acquired with Deadline %v before its At",
			worker, key, ev.Fence, ev.At.Sub(ev.Deadline)))
	} else if ev.At.After(h.acquired[worker]) {
		h.acquired[worker] = ev.At
	}
	return b
}

func (h *history) renew(b *belief, ev dfstream.Renewed) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if ev.Fence != b.fence {
		h.refenced = append(h.refenced, fmt.Sprintf("worker %d %s: renewed with fence %d, granted %d",
			b.worker, b.key, ev.Fence, b.fence))
	}
	b.deadline = ev.Deadline
}

func (h *history) lose(b *belief, ev dfstream.Lost) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if ev.At.After(b.deadline) {
		during := ""
		if b.released {
			during = " during Release"
		}
		if b.stale {
			during += " of a stale grant"
		}
		h.lateLost = append(h.lateLost, fmt.Sprintf("worker %d %s fence %d: Lost (%v)%s %v after the Deadline",
			b.worker, b.key, b.fence, ev.Reason, during, ev.At.Sub(b.deadline)))
	}
	if b.end.IsZero() {
		b.end = ev.At
		b.how = fmt.Sprintf("Lost (%v)", ev.Reason)
		b.lostErr = ev.Reason
	}
}

// stop records that the holder stopped relying on the key at t, and
// whether it is releasing it.
func (h *history) stop(b *belief, t time.Time, releasing bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if b.end.IsZero() {
		b.end = t
		b.how = "stopped"
		if releasing {
			b.how = "released"
		}
	}
	b.released = b.released || releasing
}

// halt records that the test tells every holder to stop now: each belief
// still held ends here, not when its worker gets round to noticing, since
// the streams' context ends right after and releases what they hold.
func (h *history) halt() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.halted = time.Now()
}

// haltedAt is when the test told the holders to stop (now, if it did not
// say).
func (h *history) haltedAt() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.halted.IsZero() {
		return time.Now()
	}
	return h.halted
}

// fail counts a stream that ended with Failed, by its reason.
func (h *history) fail(err error) {
	reason := err.Error()
	for _, known := range []error{dfstream.ErrTimeout, dfstream.ErrConnLost, dfstream.ErrUnreachable,
		dfstream.ErrDeadlinePassed, dfstream.ErrClosed, context.Canceled} {
		if errors.Is(err, known) {
			reason = known.Error()
			break
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.failed[reason]++
}

// notAcquiredSince reports the workers out of n with no valid Acquired at or
// after t.
func (h *history) notAcquiredSince(n int, t time.Time) []int {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []int
	for w := range n {
		if h.acquired[w].Before(t) {
			out = append(out, w)
		}
	}
	return out
}

func (h *history) acquisitions() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.beliefs)
}

// verdict is what the checker found.
type verdict struct {
	overlaps   []overlap // more holders at once than the key allows
	inversions []string  // a lock grant with a fence not above the one before
	duplicates []string  // two semaphore grants with the same fence
}

// check compares every key's beliefs with its limit (1 for a lock).
func (h *history) check(limits map[string]int) verdict {
	h.mu.Lock()
	defer h.mu.Unlock()
	byKey := make(map[string][]*belief)
	for _, b := range h.beliefs {
		byKey[b.key] = append(byKey[b.key], b)
	}
	var v verdict
	for key, bs := range byKey {
		sort.Slice(bs, func(i, j int) bool { return bs[i].at.Before(bs[j].at) })
		v.overlaps = append(v.overlaps, overlaps(key, bs, limits[key])...)
		if limits[key] == 1 {
			v.inversions = append(v.inversions, inversions(key, bs)...)
		} else {
			v.duplicates = append(v.duplicates, duplicateFences(key, bs)...)
		}
	}
	return v
}

// overlap is a grant that made more holders at once than limit.
type overlap struct {
	key     string
	limit   int
	holders []*belief // the grant last
}

func (o overlap) String() string {
	b := o.holders[len(o.holders)-1]
	return fmt.Sprintf("%s: %d holders at once (limit %d) at worker %d's grant, fence %d: %s",
		o.key, len(o.holders), o.limit, b.worker, b.fence, describe(o.holders))
}

// overlaps sweeps the beliefs of one key (sorted by At) and reports every
// grant that made more than limit holders at once. An interval ending at
// the instant another starts does not overlap it.
func overlaps(key string, bs []*belief, limit int) []overlap {
	var out []overlap
	var open []*belief
	for _, b := range bs {
		from, to := b.interval()
		if !to.After(from) {
			continue
		}
		kept := open[:0]
		for _, o := range open {
			if _, oto := o.interval(); oto.After(from) {
				kept = append(kept, o)
			}
		}
		open = append(kept, b)
		if len(open) > limit {
			out = append(out, overlap{key: key, limit: limit, holders: slices.Clone(open)})
		}
	}
	return out
}

// inversions reports lock grants, in the order their holders saw them,
// whose fence is not above every earlier one. Holds of one lock never
// overlap, so that order is the server's grant order.
func inversions(key string, bs []*belief) []string {
	var out []string
	var top *belief
	for _, b := range bs {
		if b.fence == 0 {
			continue // a server without fences
		}
		if top != nil && b.fence <= top.fence {
			out = append(out, fmt.Sprintf("%s: worker %d's fence %d after worker %d's fence %d",
				key, b.worker, b.fence, top.worker, top.fence))
		}
		if top == nil || b.fence > top.fence {
			top = b
		}
	}
	return out
}

// duplicateFences reports semaphore grants that share a fence: each slot
// grant has its own. Slots may be granted and seen in different orders, so
// only distinctness is checked.
func duplicateFences(key string, bs []*belief) []string {
	var out []string
	seen := make(map[uint64]int)
	for _, b := range bs {
		if w, ok := seen[b.fence]; ok && b.fence != 0 {
			out = append(out, fmt.Sprintf("%s: fence %d granted to workers %d and %d", key, b.fence, w, b.worker))
		}
		seen[b.fence] = b.worker
	}
	return out
}

func describe(bs []*belief) string {
	s := ""
	for _, b := range bs {
		from, to := b.interval()
		s += fmt.Sprintf("[worker %d fence %d from %s for %v, %s after %v] ",
			b.worker, b.fence, from.Format(faultClock), to.Sub(from), b.how, b.end.Sub(from))
	}
	return s
}

// faultClock formats instants in reports.
const faultClock = "15:04:05.000"

// holdStream is what a worker needs of a LockStream or SemStream.
type holdStream interface {
	Events() <-chan dfstream.Event
	Release(ctx context.Context) error
	Close() error
}

// follow consumes s's events until its channel closes, recording what the
// worker believes in h. Once it holds the key it keeps it for holdFor, then
// decides to release: the belief ends at that decision, before Release is
// called, because the server may grant the next holder before the release
// reply arrives. When stop closes it releases or closes at once.
func follow(h *history, worker int, key string, s holdStream, holdFor time.Duration, stop <-chan struct{}) {
	var b *belief
	var release <-chan time.Time
	events := s.Events()
	for events != nil {
		select {
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			switch e := ev.(type) {
			case dfstream.Acquired:
				b = h.acquire(worker, key, e)
				t := time.NewTimer(holdFor)
				defer t.Stop()
				release = t.C
			case dfstream.Renewed:
				if b != nil {
					h.renew(b, e)
				}
			case dfstream.Lost:
				if b != nil {
					h.lose(b, e)
				}
			case dfstream.Failed:
				h.fail(e.Err)
			}
		case <-release:
			release = nil
			h.stop(b, time.Now(), true)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = s.Release(ctx)
			cancel()
		case <-stop:
			stop = nil
			if b != nil {
				h.stop(b, h.haltedAt(), true)
			}
			_ = s.Close()
		}
	}
	if b != nil {
		// A stream that ended without Lost or a release decision (Close
		// from the Client) stops the belief at its end at the latest.
		h.stop(b, time.Now(), false)
	}
}
