package dfstream

// outbox delivers a stream's events without ever blocking the actor.
//
// The channel's capacity is the user's buffer ("soft") plus a reserve.
// Renewed events, which only restate state, use the soft part alone: behind
// a consumer that far behind they wait in pending, where consecutive ones
// are coalesced, until the actor next wakes with room. Every other event
// is never dropped: it is queued behind what is pending and flushed at once
// into whatever capacity is left. The stream bounds how many of those can
// pile up (a handful per acquire round, and a new round only starts once
// the consumer has caught up), so the reserve always has room for them and
// for the terminal event, and the actor can exit without waiting for the
// consumer.
type outbox struct {
	ch      chan Event
	soft    int
	pending []Event
}

const outboxReserve = 8

func newOutbox(buffer int) outbox {
	return outbox{ch: make(chan Event, buffer+outboxReserve), soft: buffer}
}

func (o *outbox) emit(ev Event) {
	if restates(ev) {
		if len(o.pending) == 0 && len(o.ch) < o.soft {
			o.ch <- ev
			return
		}
		o.pending = fold(o.pending, ev)
		return
	}
	if len(o.pending) == 0 {
		// Nothing to queue behind: send it straight away, sparing pending
		// a slice it would give up at once.
		select {
		case o.ch <- ev:
			return
		default:
		}
	}
	o.pending = append(o.pending, ev)
	o.flush()
}

// restates reports whether ev only restates the state of a held stream
// (Renewed, Moved): it goes into the soft part of the channel alone, and
// waiting to, it is coalesced.
func restates(ev Event) bool {
	switch ev.(type) {
	case Renewed, Moved:
		return true
	}
	return false
}

// fold adds ev, which restates state, to pending: a Renewed into a Renewed
// it follows; a Moved in place of a Renewed it follows, and into a Moved.
// So a held stream has at most a Moved and a Renewed waiting, however
// many renewals and failovers the consumer sleeps through.
func fold(pending []Event, ev Event) []Event {
	last := func() Event {
		if len(pending) == 0 {
			return nil
		}
		return pending[len(pending)-1]
	}
	switch e := ev.(type) {
	case Renewed:
		if r, ok := last().(Renewed); ok {
			e.Coalesced = r.Coalesced + 1
			pending[len(pending)-1] = e
			return pending
		}
	case Moved:
		if _, ok := last().(Renewed); ok {
			pending[len(pending)-1] = nil
			pending = pending[:len(pending)-1]
		}
		if m, ok := last().(Moved); ok {
			e.From, e.Coalesced = m.From, m.Coalesced+1
			pending[len(pending)-1] = e
			return pending
		}
		ev = e
	}
	return append(pending, ev)
}

// flush moves pending events into the channel while it has capacity.
func (o *outbox) flush() {
	for len(o.pending) > 0 {
		select {
		case o.ch <- o.pending[0]:
			o.sent()
		default:
			return
		}
	}
}

// deliver moves pending events into the channel as far as the consumer
// has made room: Renewed only into the soft part, as in emit.
func (o *outbox) deliver() {
	for o.out() != nil {
		select {
		case o.ch <- o.pending[0]:
			o.sent()
		default:
			return
		}
	}
}

// out returns the channel the oldest pending event may be sent on now, or
// nil when none may.
func (o *outbox) out() chan<- Event {
	if len(o.pending) == 0 {
		return nil
	}
	if restates(o.pending[0]) && len(o.ch) >= o.soft {
		return nil
	}
	return o.ch
}

// sent records that the head was delivered.
func (o *outbox) sent() {
	o.pending[0] = nil
	o.pending = o.pending[1:]
	if len(o.pending) == 0 {
		o.pending = nil
	}
}

// roundEvents is the most events one acquire round can leave in the reserve
// (TestEveryEventIsCountedInTheRoundReserve checks the count against every
// event type, so a new event cannot be forgotten here):
// Queued, Acquired, a coalesced Renewed, Lost, and the terminal event.
// (Moved, like Renewed, is only ever sent into the soft part, and
// coalesced while it waits: see fold.)
const roundEvents = 5

// roomForRound reports whether the reserve can take another acquire round's
// events whatever the consumer does meanwhile.
func (o *outbox) roomForRound() bool {
	return len(o.pending) == 0 && len(o.ch) <= o.soft+outboxReserve-roundEvents
}

// close delivers what is pending into the reserve and closes the channel.
func (o *outbox) close() {
	o.flush()
	o.pending = nil
	close(o.ch)
}
