package dfstream

import (
	"slices"
	"time"
)

// Event is something that happened to a stream. Every stream reports its
// events in order on the channel returned by its Events method; the concrete
// types are listed below and are meant to be used in a type switch.
type Event interface {
	// When is the local time at which the stream observed the event.
	When() time.Time
	// Terminal reports whether this is the last event of its stream: after
	// it, the channel is closed.
	Terminal() bool
}

// Queued reports that the request joined the server's FIFO queue for the key.
type Queued struct {
	Key string
	At  time.Time
}

// Acquired reports that the lock or semaphore slot is held.
type Acquired struct {
	Key   string
	Token string        // the server's token for this grant (a bearer credential)
	Lease time.Duration // the lease the server applied
	// Fence is the server's fencing token for this grant; 0 when the server
	// does not issue fences (dflockd 1.10). Signals-era servers send it in
	// the reply; on 2.x it is the token's first 16 hex digits (see
	// Generation). Compare the fences of one key only.
	Fence uint64
	// Deadline is the local safe deadline: the holder must stop relying on
	// the lock by then unless a renewal moves it. The stream emits Lost no
	// later than this instant.
	Deadline time.Time
	At       time.Time
}

// Renewed reports a successful renewal. Renewed events only restate state:
// when the consumer falls behind they are coalesced to the newest, and
// Coalesced counts the renewals folded into this one.
type Renewed struct {
	Key       string
	Lease     time.Duration // the lease the server applied
	Fence     uint64
	Deadline  time.Time // the new local safe deadline
	Coalesced int
	At        time.Time
}

// Moved reports that a held lock or slot moved to another connection
// without being lost: the stream's connection to a dflockd cluster's leader
// dropped (the leader failed or stepped down), and the stream re-attached
// to the new leader with its stable ref before its safe deadline (see
// WithCluster). The token is the same; the lease was renewed, and
// Deadline is the new safe deadline. From and To are the members'
// addresses, equal when the same member leads again.
//
// Like Renewed, Moved restates state: behind a consumer that has fallen
// far behind, moves in a row are coalesced into one (From the first one's,
// the rest the last one's), Coalesced counting those folded in, and a
// Moved replaces a Renewed still waiting to be delivered.
type Moved struct {
	Key       string
	From, To  string
	Token     string
	Lease     time.Duration // the lease the new leader applied
	Fence     uint64        // the grant's fence (unchanged: the token is)
	Deadline  time.Time     // the new local safe deadline
	Coalesced int
	At        time.Time
}

// Lost reports that the lock or slot was held and no longer is, without the
// user asking (or found gone when the user released it). Reason is
// matchable with errors.Is: ErrConnLost, ErrRenewRefused, ErrDeadlinePassed
// or ErrLeaseExpired, or ErrProtocol for a reply that could not be parsed. A
// 2.x server shutting down answers error_draining and closes the
// connection: ErrConnLost, and ErrDraining too.
type Lost struct {
	Key    string
	Reason error
	// Final is true when the stream ends with this event; with re-acquire
	// enabled it is false and the stream queues again.
	Final bool
	At    time.Time
}

// Released reports that the lock or slot was released at the user's request
// (Release, Close, or the stream's context ending while held).
type Released struct {
	Key string
	At  time.Time
}

// Failed ends a stream that ended while it did not hold the key: acquire
// timeout, authentication refused, unreachable server, a server limit, or
// Close or its context ending while it waited. Err is matchable with
// errors.Is (ErrTimeout, ErrAuth, ErrUnreachable, ErrConnLost, ErrMaxLocks,
// ErrClosed after Close, context.Canceled, …).
type Failed struct {
	Key string
	Err error
	At  time.Time
}

func (e Queued) When() time.Time   { return e.At }
func (e Acquired) When() time.Time { return e.At }
func (e Renewed) When() time.Time  { return e.At }
func (e Moved) When() time.Time    { return e.At }
func (e Lost) When() time.Time     { return e.At }
func (e Released) When() time.Time { return e.At }
func (e Failed) When() time.Time   { return e.At }

// Terminal is false: a Queued stream goes on.
func (Queued) Terminal() bool { return false }

// Terminal is false: an Acquired stream goes on until released or lost.
func (Acquired) Terminal() bool { return false }

// Terminal is false.
func (Renewed) Terminal() bool { return false }

// Terminal is false: a stream that moved still holds its key.
func (Moved) Terminal() bool { return false }

// Terminal reports whether the stream ends with this loss (no re-acquire).
func (e Lost) Terminal() bool { return e.Final }

// Terminal is true: Released always ends its stream.
func (Released) Terminal() bool { return true }

// Terminal is true: Failed always ends its stream.
func (Failed) Terminal() bool { return true }

// ---- signal streams and routers ----

// Signal is a signal that arrived: Channel is the channel it was sent to,
// Payload its payload, verbatim.
//
// Pattern and Group name the subscription the signal came through. On a
// SignalStream, when several of the stream's subscriptions match the
// channel, they name the one made first, and Subscriptions lists them all:
// the server sends a stream one copy for all its matching plain
// subscriptions together, plus one per matching queue group, and the copies
// are indistinguishable on the wire. A Router sets them for each handler
// (the handler's own pattern and group).
type Signal struct {
	Channel string
	Payload string
	Pattern string
	Group   string
	At      time.Time // when the stream received it

	subs []*Subscription // the stream's subscriptions that match, first made first
}

// Subscriptions returns the receiving SignalStream's subscriptions whose
// pattern matches the signal's channel, first made first (the first is the
// one Pattern and Group name). It is empty for the signals a Router
// hands to its handlers, and for a signal that arrived as the stream was
// unlistening from its last matching subscription.
func (sig Signal) Subscriptions() []*Subscription { return slices.Clone(sig.subs) }

// Disconnected reports that a signal stream lost its connection. Reason says
// why (ErrConnLost, or ErrSilentConnection when the heartbeat found the
// connection open but not delivering). The stream reconnects by itself;
// signals sent from Since until Reconnected may not be received (delivery
// is at most once), and no signal is delivered between this event and
// Reconnected.
type Disconnected struct {
	Server string
	Reason error
	// Since is the last moment delivery was known to work: when the last
	// signal or probe came in on the lost connection (or its subscriptions
	// were confirmed, if later). With heartbeat probes emitted on a
	// connection of their own (WithSignalHeartbeat, WithSignalProbe), no later than
	// when the newest of them that came back was emitted: during a graceful
	// restart the old process still delivers what reaches it, while the
	// signals sent through the new one are missed, so the connection's own
	// traffic proves nothing. A silent connection is noticed some time
	// after it stopped delivering; Since is before that, At after.
	Since time.Time
	At    time.Time
}

// Reconnected reports that a signal stream has a connection again and
// listens to all its subscriptions again: signals are received from At on,
// and every signal delivered after this event came through a connection
// opened since Disconnected: the new one, a later one, or an attempt of the
// same outage lost before it was ready (its signals wait for this event
// too). Since is the Disconnected event's Since, the last moment delivery
// was known to work, so the window in which signals may have been missed
// is [Since, At]. Signals brought before this event come right after it,
// up to the stream's signal buffer; an Overflow event after them counts
// any dropped beyond it.
//
// While the consumer is behind, outages that follow one another without a
// signal between them are folded into one: the consumer sees one
// Disconnected and one Reconnected whose Coalesced counts the outages folded
// in, and whose Since is the start of the first.
type Reconnected struct {
	Server    string
	Attempts  int           // connection attempts it took
	Since     time.Time     // when delivery was last known to work (Disconnected.Since)
	Down      time.Duration // At - Since
	Coalesced int
	At        time.Time
}

// Overflow reports signals lost because the consumer fell behind and the
// buffer was full. Dropped counts the losses this event reports (events are
// coalesced while the consumer is behind) and Total every loss so far. On a
// SignalStream it marks the place in the stream where the signals are
// missing (under DropNewest); a Router reports it per handler, with the
// handler's Pattern and Group. Signals a new connection brought beyond the
// buffer before Reconnected are reported by one after Reconnected, with
// Policy DropNewest whatever the stream's policy (see WithSignalBuffer).
type Overflow struct {
	Pattern string
	Group   string
	Dropped uint64
	Total   uint64
	Policy  OverflowPolicy
	At      time.Time
}

// Closed ends a signal stream that was closed: by Close (Err is nil) or by
// its context ending (Err is the context's error). Failures end a signal
// stream with Failed instead.
type Closed struct {
	Err error
	At  time.Time
}

func (e Signal) When() time.Time       { return e.At }
func (e Disconnected) When() time.Time { return e.At }
func (e Reconnected) When() time.Time  { return e.At }
func (e Overflow) When() time.Time     { return e.At }
func (e Closed) When() time.Time       { return e.At }

// Terminal is false.
func (Signal) Terminal() bool { return false }

// Terminal is false: the stream reconnects.
func (Disconnected) Terminal() bool { return false }

// Terminal is false.
func (Reconnected) Terminal() bool { return false }

// Terminal is false: under FailStream the stream ends with Failed instead.
func (Overflow) Terminal() bool { return false }

// Terminal is true: Closed always ends its stream.
func (Closed) Terminal() bool { return true }
