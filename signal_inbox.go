package dfstream

import (
	"slices"
	"sync"
	"time"
)

// sigInbox carries a stream's events, in order, to its Events channel. The
// connection's reader puts signals in with pushSignal and never blocks:
// while the channel has room (and nothing waits before them) they go
// straight in; otherwise they queue here, up to max signals, beyond which
// the overflow policy applies. The actor moves queued events into the
// channel as the consumer makes room (next/sent). Connection events queue
// here too, in order with the signals, but do not count toward max; they
// are few, and coalesced while the consumer is behind.
//
// The signal the actor holds staged counts toward max: the consumer never
// has more than max signals waiting beyond the channel. Under DropOldest it
// is the oldest and the first to go: it is taken back (stagedGone) and the
// actor restages (retake); if the actor delivered it meanwhile, the drop is
// undone (sent): the buffer holds max signals, and the consumer the rest.
//
// While a stream reconnects, the signals of its new connection are held
// behind a gate (gate, an index in q) until the Reconnected event is queued
// in front of them: none reaches the consumer between Disconnected and
// Reconnected. They do not count toward max, and the overflow policy does
// not apply to them: the consumer could not have read them, however fast.
// Up to max of them are held (gated); later ones are dropped and counted,
// in an Overflow event after Reconnected, and never fail the stream: they
// lie in the window Disconnected declares signals may be missed in. Once
// released, they fill the channel's free room, and those that do not fit
// do not count toward max either (grace) until they are delivered.
type sigInbox struct {
	mu         sync.Mutex
	ch         chan Event
	q          []Event
	nsig       int // signals in q
	max        int
	policy     OverflowPolicy
	staged     bool  // the actor holds the event taken from the head of q
	stagedEv   Event // ... that event, for its subscriptions' counters
	stagedSig  bool  // ... and it is a signal, counted toward max
	stagedGone bool  // ... and DropOldest took it back: it counts as dropped
	gate       int   // index in q from which events wait for Reconnected; -1 if none
	gated      int   // signals in q behind gate
	grace      int   // released signals in q that do not count toward max
	graceSpan  int   // signals at the head of q up to the last released one
	closed     bool
	failed     bool
	ovPos      int // index in q of an Overflow event drops can still fold into; -1 if none
	merged     int // outages folded into the next Reconnected
	since      time.Time
	st         SignalStats
	wake       chan struct{}
}

func newSigInbox(eventBuffer, max int, policy OverflowPolicy) *sigInbox {
	return &sigInbox{
		ch:     make(chan Event, eventBuffer),
		max:    max,
		policy: policy,
		ovPos:  -1,
		gate:   -1,
		wake:   make(chan struct{}, 1),
	}
}

func (b *sigInbox) notify() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// pushSignal runs on the reader goroutine. It reports whether the overflow
// policy dropped a signal.
func (b *sigInbox) pushSignal(sig Signal) (dropped bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	b.st.Received++
	if b.gate >= 0 {
		if b.gated >= b.max {
			b.dropped(sig, 1)
			b.overflow(b.ovPos >= b.gate && b.ovPos == len(b.q)-1, DropNewest)
			return true
		}
		b.q = append(b.q, sig)
		b.nsig++
		b.gated++
		return false
	}
	if len(b.q) == 0 && !b.staged {
		select {
		case b.ch <- sig:
			b.delivered(sig, 1)
			return false
		default:
		}
	}
	held := b.nsig - b.grace
	if b.stagedSig {
		held++
	}
	if held >= b.max {
		switch b.policy {
		case DropNewest:
			b.dropped(sig, 1)
			b.overflow(len(b.q) > 0 && b.ovPos == len(b.q)-1, b.policy)
			return true
		case DropOldest:
			if b.stagedSig {
				// The staged signal is the oldest: the actor takes the
				// next one instead (retake).
				b.stagedSig, b.stagedGone = false, true
				b.dropped(b.stagedEv, 1)
			} else {
				b.dropped(b.removeOldestSignal(), 1)
			}
			b.overflow(b.ovPos >= 0, b.policy)
		case FailStream:
			b.dropped(sig, 1)
			b.failed, b.closed = true, true
			b.notify()
			return true
		}
	}
	b.q = append(b.q, sig)
	b.nsig++
	b.notify()
	return held >= b.max
}

// overflow records one dropped signal in an Overflow event: the pending one
// at ovPos when fold is true, a new one at the tail otherwise.
func (b *sigInbox) overflow(fold bool, policy OverflowPolicy) {
	now := time.Now()
	if fold {
		ev := b.q[b.ovPos].(Overflow)
		ev.Dropped++
		ev.Total, ev.At = b.st.Dropped, now
		b.q[b.ovPos] = ev
		return
	}
	b.q = append(b.q, Overflow{Dropped: 1, Total: b.st.Dropped, Policy: policy, At: now})
	b.ovPos = len(b.q) - 1
	b.notify()
}

// delivered counts n (1, or -1 to take one back) signals like ev handed to
// the consumer, in the stream's stats and its subscriptions'.
func (b *sigInbox) delivered(ev Event, n int) {
	sig, ok := ev.(Signal)
	if !ok {
		return
	}
	b.st.Delivered += uint64(n)
	for _, sub := range sig.subs {
		sub.delivered.Add(uint64(n))
	}
}

// dropped counts n (1, or -1 to take one back) signals lost, in the
// stream's stats, and in the subscriptions of ev, the signal lost if known.
func (b *sigInbox) dropped(ev Event, n int) {
	b.st.Dropped += uint64(n)
	sig, _ := ev.(Signal)
	for _, sub := range sig.subs {
		sub.dropped.Add(uint64(n))
	}
}

// undrop takes back the count of the signal sig, dropped but delivered
// after all, from the stats and from the pending Overflow event.
func (b *sigInbox) undrop(sig Event) {
	b.dropped(sig, -1)
	if b.ovPos < 0 {
		return // the consumer has the Overflow event already
	}
	ev := b.q[b.ovPos].(Overflow)
	if ev.Dropped--; ev.Dropped > 0 {
		ev.Total = b.st.Dropped
		b.q[b.ovPos] = ev
		return
	}
	b.q = slices.Delete(b.q, b.ovPos, b.ovPos+1)
	if b.gate > b.ovPos {
		b.gate--
	}
	b.ovPos = -1
}

// removeOldestSignal removes the first signal in q (DropOldest) and returns
// it, nil if there is none. Signals behind the gate are not the consumer's
// yet: the policy does not apply to them.
func (b *sigInbox) removeOldestSignal() Event {
	for i, ev := range b.q {
		if i == b.gate {
			break
		}
		if _, ok := ev.(Signal); !ok {
			continue
		}
		if i == 0 {
			return b.popFront()
		}
		copy(b.q[i:], b.q[i+1:])
		b.q[len(b.q)-1] = nil
		b.q = b.q[:len(b.q)-1]
		b.nsig--
		b.signalLeft()
		if b.ovPos > i {
			b.ovPos--
		}
		if b.gate > i {
			b.gate--
		}
		return ev
	}
	return nil
}

// signalLeft records that one of the signals ahead of the gate left q: the
// grace of released signals ends as they go.
func (b *sigInbox) signalLeft() {
	if b.graceSpan > 0 {
		b.graceSpan--
		b.grace = min(b.grace, b.graceSpan)
	}
}

func (b *sigInbox) popFront() Event {
	ev := b.q[0]
	b.q[0] = nil
	b.q = b.q[1:]
	if len(b.q) == 0 {
		b.q = b.q[:0:0]
	}
	if _, ok := ev.(Signal); ok {
		b.nsig--
		b.signalLeft()
	}
	if b.ovPos >= 0 {
		b.ovPos--
	}
	if b.gate >= 0 {
		b.gate--
	}
	return ev
}

// pushState queues a connection event from the actor. While the consumer
// is behind, a Disconnected that follows a still-unread Reconnected is
// folded with it: the consumer then sees one outage whose Reconnected
// counts the others (Coalesced), so a flapping server cannot grow the queue.
func (b *sigInbox) pushState(ev Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	switch e := ev.(type) {
	case Disconnected:
		if n := len(b.q); n > 0 {
			if r, ok := b.q[n-1].(Reconnected); ok {
				b.q[n-1] = nil
				b.q = b.q[:n-1]
				if b.ovPos == n-1 {
					b.ovPos = -1
				}
				b.merged += r.Coalesced + 1
				b.since = r.Since
				return
			}
		}
	case Reconnected:
		if b.merged > 0 {
			e.Coalesced += b.merged
			e.Since = b.since
			e.Down = e.At.Sub(e.Since)
			b.merged = 0
			ev = e
		}
		if b.gate >= 0 {
			// In front of the signals the new connection brought.
			b.q = slices.Insert(b.q, b.gate, ev)
			if b.ovPos >= b.gate {
				b.ovPos++
			}
			b.gate = -1
			b.grace += b.gated
			b.graceSpan = b.nsig
			b.gated = 0
			return
		}
	}
	if len(b.q) == 0 && !b.staged && b.gate < 0 {
		select {
		case b.ch <- ev:
			return
		default:
		}
	}
	b.q = append(b.q, ev)
}

// hold starts holding signals back until the next Reconnected (pushState),
// unless they are held already.
func (b *sigInbox) hold() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.gate < 0 && !b.closed {
		b.gate = len(b.q)
	}
}

// next moves queued events into the channel while it has room and returns
// the first one that did not fit (now staged: the actor offers it with a
// blocking send in its select), or nil when the queue is empty.
func (b *sigInbox) next() Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.nextLocked()
}

func (b *sigInbox) nextLocked() Event {
	if b.staged {
		return nil
	}
	for len(b.q) > 0 && b.gate != 0 {
		ev := b.q[0]
		select {
		case b.ch <- ev:
			b.popFront()
			b.delivered(ev, 1)
			continue
		default:
		}
		b.popFront()
		b.staged, b.stagedEv = true, ev
		_, b.stagedSig = ev.(Signal)
		return ev
	}
	return nil
}

// sent records that the staged event was delivered and returns the next
// staged one, if any.
func (b *sigInbox) sent(ev Event) Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.staged, b.stagedEv, b.stagedSig = false, nil, false
	b.delivered(ev, 1)
	if b.stagedGone {
		// Delivered before the actor saw it taken back: it was not
		// dropped after all, and the buffer has room for the rest.
		b.stagedGone = false
		b.undrop(ev)
	}
	return b.nextLocked()
}

// retake returns the event the actor should offer instead of staged: the
// next one when DropOldest took staged back, staged itself otherwise.
func (b *sigInbox) retake(staged Event) Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.stagedGone {
		return staged
	}
	b.staged, b.stagedEv, b.stagedGone = false, nil, false
	return b.nextLocked()
}

func (b *sigInbox) overflowed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.failed
}

func (b *sigInbox) stats() SignalStats {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := b.st
	// Queued signals, and the one the actor may hold staged.
	st.Buffered = int(st.Received - st.Delivered - st.Dropped - st.Discarded)
	return st
}

// finish delivers what it can without blocking, then the terminal event
// (making room for it by discarding the oldest unread event if the consumer
// left the channel full), and closes the channel. With block (the Router's
// streams, whose consumer reads until the channel closes) it delivers
// everything instead, waiting for room.
func (b *sigInbox) finish(staged, final Event, block bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	rest := b.q
	if b.gate >= 0 {
		// Signals of a connection the stream never reported: not
		// delivered (see hold).
		for _, ev := range rest[b.gate:] {
			if _, ok := ev.(Signal); ok {
				b.st.Discarded++
			}
		}
		rest = rest[:b.gate]
	}
	if staged != nil && !b.stagedGone {
		rest = append([]Event{staged}, rest...)
	}
	b.q, b.nsig, b.staged, b.stagedEv, b.stagedSig, b.stagedGone, b.gate = nil, 0, false, nil, false, false, -1
	b.gated, b.grace, b.graceSpan = 0, 0, 0
	if block {
		// Send without the lock: Stats stays callable meanwhile, and
		// nothing else touches the queue once closed is set.
		b.mu.Unlock()
		for _, ev := range rest {
			b.ch <- ev
			b.mu.Lock()
			b.delivered(ev, 1)
			b.mu.Unlock()
		}
		b.ch <- final
		close(b.ch)
		b.mu.Lock()
		return
	}
	full := false
	for _, ev := range rest {
		_, isSig := ev.(Signal)
		if !full {
			select {
			case b.ch <- ev:
				b.delivered(ev, 1)
				continue
			default:
				full = true
			}
		}
		if isSig {
			b.st.Discarded++
		}
	}
	for {
		select {
		case b.ch <- final:
			close(b.ch)
			return
		default:
		}
		select {
		case old := <-b.ch:
			if _, ok := old.(Signal); ok {
				b.delivered(old, -1)
				b.st.Discarded++
			}
		default:
		}
	}
}
