package dfstream

import (
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
type sigInbox struct {
	mu     sync.Mutex
	ch     chan Event
	q      []Event
	nsig   int // signals in q
	max    int
	policy OverflowPolicy
	staged bool // the actor holds the event taken from the head of q
	closed bool
	failed bool
	ovPos  int // index in q of an Overflow event drops can still fold into; -1 if none
	merged int // outages folded into the next Reconnected
	since  time.Time
	st     SignalStats
	wake   chan struct{}
}

func newSigInbox(eventBuffer, max int, policy OverflowPolicy) *sigInbox {
	return &sigInbox{
		ch:     make(chan Event, eventBuffer),
		max:    max,
		policy: policy,
		ovPos:  -1,
		wake:   make(chan struct{}, 1),
	}
}

func (b *sigInbox) notify() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// pushSignal runs on the reader goroutine.
func (b *sigInbox) pushSignal(sig Signal) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	b.st.Received++
	if len(b.q) == 0 && !b.staged {
		select {
		case b.ch <- sig:
			b.st.Delivered++
			return
		default:
		}
	}
	if b.nsig >= b.max {
		b.st.Dropped++
		switch b.policy {
		case DropNewest:
			b.overflow(len(b.q) > 0 && b.ovPos == len(b.q)-1)
			return
		case DropOldest:
			b.removeOldestSignal()
			b.overflow(b.ovPos >= 0)
		case FailStream:
			b.failed, b.closed = true, true
			b.notify()
			return
		}
	}
	b.q = append(b.q, sig)
	b.nsig++
	b.notify()
}

// overflow records one dropped signal in an Overflow event: the pending one
// at ovPos when fold is true, a new one at the tail otherwise.
func (b *sigInbox) overflow(fold bool) {
	now := time.Now()
	if fold {
		ev := b.q[b.ovPos].(Overflow)
		ev.Dropped++
		ev.Total, ev.At = b.st.Dropped, now
		b.q[b.ovPos] = ev
		return
	}
	b.q = append(b.q, Overflow{Dropped: 1, Total: b.st.Dropped, Policy: b.policy, At: now})
	b.ovPos = len(b.q) - 1
	b.notify()
}

// removeOldestSignal removes the first signal in q (DropOldest).
func (b *sigInbox) removeOldestSignal() {
	for i, ev := range b.q {
		if _, ok := ev.(Signal); !ok {
			continue
		}
		if i == 0 {
			b.popFront()
		} else {
			copy(b.q[i:], b.q[i+1:])
			b.q[len(b.q)-1] = nil
			b.q = b.q[:len(b.q)-1]
			b.nsig--
			if b.ovPos > i {
				b.ovPos--
			}
		}
		return
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
	}
	if b.ovPos >= 0 {
		b.ovPos--
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
	}
	if len(b.q) == 0 && !b.staged {
		select {
		case b.ch <- ev:
			return
		default:
		}
	}
	b.q = append(b.q, ev)
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
	for len(b.q) > 0 {
		ev := b.q[0]
		select {
		case b.ch <- ev:
			b.popFront()
			if _, ok := ev.(Signal); ok {
				b.st.Delivered++
			}
			continue
		default:
		}
		b.popFront()
		b.staged = true
		return ev
	}
	return nil
}

// sent records that the staged event was delivered and returns the next
// staged one, if any.
func (b *sigInbox) sent(ev Event) Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.staged = false
	if _, ok := ev.(Signal); ok {
		b.st.Delivered++
	}
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
	if staged != nil {
		rest = append([]Event{staged}, rest...)
	}
	b.q, b.nsig, b.staged = nil, 0, false
	if block {
		// Send without the lock: Stats stays callable meanwhile, and
		// nothing else touches the queue once closed is set.
		b.mu.Unlock()
		for _, ev := range rest {
			b.ch <- ev
			if _, ok := ev.(Signal); ok {
				b.mu.Lock()
				b.st.Delivered++
				b.mu.Unlock()
			}
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
				if isSig {
					b.st.Delivered++
				}
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
				b.st.Delivered--
				b.st.Discarded++
			}
		default:
		}
	}
}
