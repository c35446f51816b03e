package dfstream

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fullInbox returns an inbox whose one-slot channel holds a signal, with
// the actor holding the next one staged: the consumer is behind.
func fullInbox(t *testing.T, max int, policy OverflowPolicy) (*sigInbox, Event) {
	t.Helper()
	b := newSigInbox(1, max, policy)
	b.pushSignal(Signal{Payload: "0"}) // straight into the channel
	b.pushSignal(Signal{Payload: "1"})
	staged := b.next()
	require.Equal(t, Signal{Payload: "1"}, staged)
	return b, staged
}

func payloads(t *testing.T, b *sigInbox, staged Event) []string {
	t.Helper()
	var out []string
	take := func(ev Event) {
		if s, ok := ev.(Signal); ok {
			out = append(out, s.Payload)
		}
	}
	take(<-b.ch)
	for staged != nil {
		b.ch <- staged // the actor's send
		staged = b.sent(staged)
		take(<-b.ch)
	}
	return out
}

func TestSignalInboxHoldsExactlyMaxSignalsBeyondTheChannel(t *testing.T) {
	t.Parallel()
	for _, policy := range []OverflowPolicy{DropNewest, DropOldest} {
		t.Run(policy.String(), func(t *testing.T) {
			b, staged := fullInbox(t, 3, policy)
			for i := 2; i < 10; i++ {
				b.pushSignal(Signal{Payload: strconv.Itoa(i)})
			}
			st := b.stats()
			assert.Equal(t, 3, st.Buffered, "the staged signal counts")
			assert.Equal(t, uint64(6), st.Dropped)
			staged = b.retake(staged)
			want := []string{"0", "1", "2", "3"}
			if policy == DropOldest {
				want = []string{"0", "7", "8", "9"}
			}
			assert.Equal(t, want, payloads(t, b, staged))
			st = b.stats()
			assert.Equal(t, st.Received, st.Delivered+st.Dropped)
		})
	}
}

func TestSignalInboxDropOldestOfASignalDeliveredMeanwhileDropsNothing(t *testing.T) {
	t.Parallel()
	b, staged := fullInbox(t, 2, DropOldest)
	b.pushSignal(Signal{Payload: "2"})
	b.pushSignal(Signal{Payload: "3"}) // takes the staged "1" back
	// The actor's send of "1" won the race with the take-back: the buffer
	// has room for "2" and "3" again.
	<-b.ch
	b.ch <- staged
	staged = b.sent(staged)
	st := b.stats()
	assert.Zero(t, st.Dropped, "nothing lost")
	assert.Equal(t, 2, st.Buffered)
	assert.Equal(t, []Event{Signal{Payload: "2"}, Signal{Payload: "3"}}, append([]Event{staged}, b.q...), "and no Overflow event")
	assert.Equal(t, []string{"1", "2", "3"}, payloads(t, b, staged))
	st = b.stats()
	assert.Equal(t, st.Received, st.Delivered+st.Dropped)
}

func TestSignalInboxHoldsANewConnectionsSignalsUntilReconnected(t *testing.T) {
	t.Parallel()
	b := newSigInbox(8, 8, DropNewest)
	b.pushSignal(Signal{Payload: "old"})
	b.pushState(Disconnected{})
	b.hold()
	b.pushSignal(Signal{Payload: "new"})
	assert.Nil(t, b.next(), "nothing passes the gate")
	assert.Len(t, b.ch, 2)
	b.pushState(Reconnected{})
	assert.Nil(t, b.next())
	var got []string
	for len(b.ch) > 0 {
		switch e := (<-b.ch).(type) {
		case Signal:
			got = append(got, e.Payload)
		default:
			got = append(got, fmt.Sprintf("%T", e))
		}
	}
	assert.Equal(t, []string{"old", "dfstream.Disconnected", "dfstream.Reconnected", "new"}, got)
}

// drain returns what the channel holds: signal payloads, and the type of
// any other event.
func drain(b *sigInbox) []string {
	var got []string
	for len(b.ch) > 0 {
		switch e := (<-b.ch).(type) {
		case Signal:
			got = append(got, e.Payload)
		case Overflow:
			got = append(got, fmt.Sprintf("Overflow(%d)", e.Dropped))
		default:
			got = append(got, fmt.Sprintf("%T", e))
		}
	}
	return got
}

func TestSignalInboxSignalsHeldForReconnectedNeverFailTheStream(t *testing.T) {
	t.Parallel()
	b := newSigInbox(8, 2, FailStream)
	b.pushState(Disconnected{})
	b.hold()
	for i := range 5 {
		b.pushSignal(Signal{Payload: strconv.Itoa(i)})
	}
	assert.False(t, b.overflowed())
	assert.Equal(t, uint64(3), b.stats().Dropped, "held beyond the buffer: dropped, and counted")
	b.pushState(Reconnected{})
	assert.Nil(t, b.next())
	assert.Equal(t, []string{"dfstream.Disconnected", "dfstream.Reconnected", "0", "1", "Overflow(3)"}, drain(b))
	st := b.stats()
	assert.Equal(t, st.Received, st.Delivered+st.Dropped)
}

func TestSignalInboxReleasedSignalsThatDoNotFitTheChannelDoNotCountTowardTheBuffer(t *testing.T) {
	t.Parallel()
	b := newSigInbox(1, 2, FailStream)
	b.pushState(Disconnected{})
	b.hold()
	for i := range 2 {
		b.pushSignal(Signal{Payload: strconv.Itoa(i)})
	}
	<-b.ch // Disconnected
	b.pushState(Reconnected{})
	staged := b.next()
	require.Equal(t, Signal{Payload: "0"}, staged)
	// "1" waits beyond the channel, and "0" is staged: the buffer is full
	// of what the consumer could not have read yet.
	b.pushSignal(Signal{Payload: "2"})
	assert.False(t, b.overflowed(), "a consumer that keeps up is not failed")
	b.pushSignal(Signal{Payload: "3"})
	assert.True(t, b.overflowed(), "past the buffer beyond what was released, the policy applies")
}

func TestSignalHeartbeatIntervalsSpreadWithinTheLastFifthNeverBeyond(t *testing.T) {
	t.Parallel()
	const h = 15 * time.Second
	seen := map[time.Duration]bool{}
	for range 1000 {
		d := heartbeatJitter(h)
		require.GreaterOrEqual(t, d, h*4/5)
		require.LessOrEqual(t, d, h, "the heartbeat may be the server's read timeout")
		seen[d] = true
	}
	assert.Greater(t, len(seen), 100, "streams started together do not all dial at once")
	assert.Equal(t, time.Nanosecond, heartbeatJitter(time.Nanosecond))
}

// subscribed returns a signal with payload p that matched sub.
func subscribed(sub *Subscription, p string) Signal {
	return Signal{Payload: p, subs: sub.self}
}

func TestSignalInboxCountsTheSubscriptionOfTheOldestSignalDropOldestDrops(t *testing.T) {
	t.Parallel()
	old, recent := &Subscription{}, &Subscription{}
	old.self, recent.self = []*Subscription{old}, []*Subscription{recent}
	b := newSigInbox(1, 1, DropOldest)
	b.pushSignal(subscribed(old, "0")) // straight into the channel
	b.pushSignal(subscribed(old, "1"))
	staged := b.next()
	b.pushSignal(subscribed(recent, "2")) // takes the staged "1" back

	assert.Equal(t, SubscriptionStats{Delivered: 1, Dropped: 1}, old.Stats())
	assert.Equal(t, SubscriptionStats{}, recent.Stats())
	assert.Equal(t, []string{"0", "2"}, payloads(t, b, b.retake(staged)))
	assert.Equal(t, SubscriptionStats{Delivered: 1}, recent.Stats())
}

func TestSignalInboxTakesBackTheSubscriptionsDropOfASignalDeliveredMeanwhile(t *testing.T) {
	t.Parallel()
	sub := &Subscription{}
	sub.self = []*Subscription{sub}
	b := newSigInbox(1, 1, DropOldest)
	b.pushSignal(subscribed(sub, "0"))
	b.pushSignal(subscribed(sub, "1"))
	staged := b.next()
	b.pushSignal(subscribed(sub, "2")) // takes the staged "1" back ...
	<-b.ch
	b.ch <- staged // ... which the actor's send delivered meanwhile
	b.sent(staged)

	assert.Equal(t, SubscriptionStats{Delivered: 2}, sub.Stats())
}
