package dfstream

import (
	"container/heap"
	"sync"
	"time"
)

// renewals is a Client's schedule of lock and semaphore renewals: a heap of
// held streams by renewal time behind one runtime timer. A timer per stream
// costs its creation on every acquire (about a microsecond of a 30 µs
// cycle); here scheduling a stream is a heap push, and the timer is reset
// only when the earliest renewal moves earlier. A stream taken off the
// schedule leaves the timer as it is: it may fire for nothing, and is then
// set for the next renewal due.
type renewals struct {
	mu    sync.Mutex
	due   renewalHeap
	timer *time.Timer
	armed time.Time // when timer fires; zero when it is not set
	stop  bool
}

// add schedules (or reschedules) s's next renewal at at.
func (r *renewals) add(s *holdStream, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stop {
		return
	}
	s.renewAt = at
	if s.renewIndex >= 0 {
		heap.Fix(&r.due, s.renewIndex)
	} else {
		heap.Push(&r.due, s)
	}
	if r.armed.IsZero() || at.Before(r.armed) {
		r.arm(at)
	}
}

// remove takes s off the schedule.
func (r *renewals) remove(s *holdStream) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s.renewIndex >= 0 {
		heap.Remove(&r.due, s.renewIndex)
	}
}

// arm sets the timer for at; r.mu is held.
func (r *renewals) arm(at time.Time) {
	r.armed = at
	if r.timer == nil {
		r.timer = time.AfterFunc(time.Until(at), r.fire)
	} else {
		r.timer.Reset(time.Until(at))
	}
}

// fire starts the renewals that are due, each on a goroutine of its own (a
// renewal waits for its reply), and sets the timer for the next.
func (r *renewals) fire() { r.fireAt(time.Now()) }

func (r *renewals) fireAt(now time.Time) {
	r.mu.Lock()
	var ready []*holdStream
	for len(r.due) > 0 && !r.due[0].renewAt.After(now) {
		ready = append(ready, heap.Pop(&r.due).(*holdStream))
	}
	r.armed = time.Time{}
	if len(r.due) > 0 && !r.stop {
		r.arm(r.due[0].renewAt)
	}
	r.mu.Unlock()
	for _, s := range ready {
		go s.renewTick()
	}
}

// close stops the timer; the Client's streams have ended.
func (r *renewals) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stop = true
	if r.timer != nil {
		r.timer.Stop()
	}
}

// renewalHeap orders streams by renewal time; each knows its index.
type renewalHeap []*holdStream

func (h renewalHeap) Len() int           { return len(h) }
func (h renewalHeap) Less(i, j int) bool { return h[i].renewAt.Before(h[j].renewAt) }
func (h renewalHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].renewIndex, h[j].renewIndex = i, j
}

func (h *renewalHeap) Push(x any) {
	s := x.(*holdStream)
	s.renewIndex = len(*h)
	*h = append(*h, s)
}

func (h *renewalHeap) Pop() any {
	old := *h
	s := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	s.renewIndex = -1
	return s
}
