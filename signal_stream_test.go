package dfstream_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dfstream/dfstream"
	"github.com/dfstream/dfstream/dflockdtest"
	"github.com/dfstream/dfstream/wire"
)

// chanPrefix returns a token unique to this test run, so that tests sharing
// an external server never see each other's signals.
func chanPrefix(t testing.TB) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return "t" + hex.EncodeToString(b[:])
}

// signals starts a signal stream on c, closed when the test ends.
func signals(t *testing.T, c *dfstream.Client, opts ...dfstream.SignalOption) *dfstream.SignalStream {
	t.Helper()
	s, err := c.Signals(context.Background(), opts...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// errOf returns the error of a Listen, for assertions on it alone.
func errOf(_ *dfstream.Subscription, err error) error { return err }

// subNames returns the String of each subscription.
func subNames(subs []*dfstream.Subscription) []string {
	names := make([]string, len(subs))
	for i, sub := range subs {
		names[i] = sub.String()
	}
	return names
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// nextSignal returns the next Signal, failing on any other event.
func nextSignal(t *testing.T, s *dfstream.SignalStream, timeout time.Duration) dfstream.Signal {
	t.Helper()
	return nextOf[dfstream.Signal](t, s.Events(), timeout)
}

// noEvent asserts that nothing arrives for d.
func noEvent(t *testing.T, events <-chan dfstream.Event, d time.Duration) {
	t.Helper()
	select {
	case ev := <-events:
		require.FailNow(t, "unexpected event", "%T %+v", ev, ev)
	case <-time.After(d):
	}
}

func TestSignalListenEmitDeliversChannelPayloadAndSubscription(t *testing.T) {
	t.Parallel()
	addr, _ := testServer(t, dflockdtest.Config{})
	c := newClient(t, []string{addr})
	p := chanPrefix(t)
	s := signals(t, c)

	require.NoError(t, errOf(s.Listen(ctxT(t, 5*time.Second), p+".orders.*")))
	assert.Equal(t, []string{p + ".orders.*"}, subNames(s.Subscriptions()))

	n, err := c.Emit(ctxT(t, 5*time.Second), p+".orders.created", "  x  y\tz ")
	require.NoError(t, err)
	assert.Equal(t, 1, n, "one listening connection")

	sig := nextSignal(t, s, 5*time.Second)
	assert.Equal(t, p+".orders.created", sig.Channel)
	assert.Equal(t, "  x  y\tz ", sig.Payload, "payload arrives verbatim")
	assert.Equal(t, p+".orders.*", sig.Pattern)
	assert.Empty(t, sig.Group)
	assert.WithinDuration(t, time.Now(), sig.At, 5*time.Second)

	// A channel the pattern does not match is not delivered; the stream
	// itself emits too, and counts as a receiver of its own signal.
	n, err = s.Emit(ctxT(t, 5*time.Second), p+".orders.x.y", "no")
	require.NoError(t, err)
	assert.Equal(t, 0, n)
	n, err = s.Emit(ctxT(t, 5*time.Second), p+".orders.shipped", "yes")
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	sig = nextSignal(t, s, 5*time.Second)
	assert.Equal(t, "yes", sig.Payload)

	require.NoError(t, s.Close())
	ev := nextOf[dfstream.Closed](t, s.Events(), time.Second)
	assert.NoError(t, ev.Err)
	requireClosed(t, s.Events())
	assert.NoError(t, s.Err())
	<-s.Done()
}

// TestSignalWildcardTableEndToEnd sends every channel of the wildcard table
// through the server to one stream per pattern: the server's deliveries and
// counts must follow the table (the same table the router's trie is checked
// against).
func TestSignalWildcardTableEndToEnd(t *testing.T) {
	t.Parallel()
	addr, _ := testServer(t, dflockdtest.Config{})
	c := newClient(t, []string{addr})
	p := chanPrefix(t)
	ctx := ctxT(t, 30*time.Second)

	streams := make([]*dfstream.SignalStream, len(dfstream.WildcardTable))
	for i, tc := range dfstream.WildcardTable {
		streams[i] = signals(t, c, dfstream.WithSignalEventBuffer(64))
		require.NoError(t, errOf(streams[i].Listen(ctx, p+"."+tc.Pattern)), tc.Pattern)
		// The end marker: emitted last, it tells the stream has seen all.
		require.NoError(t, errOf(streams[i].Listen(ctx, p+"-end")), tc.Pattern)
	}
	for _, ch := range dfstream.WildcardChannels {
		want := 0
		for _, tc := range dfstream.WildcardTable {
			if slices.Contains(tc.Matches, ch) {
				want++
			}
		}
		n, err := c.Emit(ctx, p+"."+ch, ch)
		require.NoError(t, err)
		assert.Equal(t, want, n, "receivers of %q", ch)
	}
	n, err := c.Emit(ctx, p+"-end", "end")
	require.NoError(t, err)
	require.Equal(t, len(streams), n)

	for i, tc := range dfstream.WildcardTable {
		var got []string
		for {
			sig := nextSignal(t, streams[i], 5*time.Second)
			if sig.Channel == p+"-end" {
				break
			}
			assert.Equal(t, p+"."+tc.Pattern, sig.Pattern, "attributed to the pattern that matched")
			got = append(got, sig.Payload)
		}
		assert.ElementsMatch(t, tc.Matches, got, "pattern %q", tc.Pattern)
	}
}

func TestSignalQueueGroupMembersShareAndPlainListenersGetAll(t *testing.T) {
	t.Parallel()
	addr, _ := testServer(t, dflockdtest.Config{})
	c := newClient(t, []string{addr})
	p := chanPrefix(t)
	ctx := ctxT(t, 30*time.Second)

	members := []*dfstream.SignalStream{signals(t, c), signals(t, c), signals(t, c)}
	for _, m := range members {
		require.NoError(t, errOf(m.ListenGroup(ctx, p+".jobs.>", "workers")))
	}
	plain := signals(t, c)
	require.NoError(t, errOf(plain.Listen(ctx, p+".jobs.>")))

	const n = 9
	for i := range n {
		got, err := c.Emit(ctx, p+".jobs.run", strconv.Itoa(i))
		require.NoError(t, err)
		assert.Equal(t, 2, got, "one copy for the group, one for the plain listener")
	}
	for i := range n {
		m := members[i%3] // round robin in join order
		sig := nextSignal(t, m, 5*time.Second)
		assert.Equal(t, strconv.Itoa(i), sig.Payload, "member %d", i%3)
		assert.Equal(t, "workers", sig.Group)
		assert.Equal(t, p+".jobs.>", sig.Pattern)
		psig := nextSignal(t, plain, 5*time.Second)
		assert.Equal(t, strconv.Itoa(i), psig.Payload)
		assert.Empty(t, psig.Group)
	}
	for _, m := range members {
		noEvent(t, m.Events(), 100*time.Millisecond)
	}

	// Leaving the group keeps nothing else: the others share the work.
	require.NoError(t, members[0].UnlistenGroup(ctx, p+".jobs.>", "workers"))
	require.NoError(t, plain.Unlisten(ctx, p+".jobs.>"))
	got, err := c.Emit(ctx, p+".jobs.run", "x")
	require.NoError(t, err)
	assert.Equal(t, 1, got)
	noEvent(t, members[0].Events(), 100*time.Millisecond)
	noEvent(t, plain.Events(), 0)
}

func TestSignalStreamReconnectsAndListensAgain(t *testing.T) {
	t.Parallel()
	addr, srv := testServer(t, dflockdtest.Config{})
	needServer(t, srv, "DropConnections")
	c := newClient(t, []string{addr})
	p := chanPrefix(t)
	ctx := ctxT(t, 30*time.Second)
	s := signals(t, c, dfstream.WithSignalBackoff(20*time.Millisecond, 200*time.Millisecond))
	require.NoError(t, errOf(s.Listen(ctx, p+".a")))
	require.NoError(t, errOf(s.ListenGroup(ctx, p+".b", "g")))
	_, err := c.Emit(ctx, p+".a", "before")
	require.NoError(t, err)

	before := nextSignal(t, s, 5*time.Second)
	assert.Equal(t, "before", before.Payload)
	dropped := time.Now()
	srv.DropConnections()
	d := nextOf[dfstream.Disconnected](t, s.Events(), 5*time.Second)
	assert.ErrorIs(t, d.Reason, dfstream.ErrConnLost)
	assert.Equal(t, addr, d.Server)
	r := nextOf[dfstream.Reconnected](t, s.Events(), 10*time.Second)
	assert.GreaterOrEqual(t, r.Attempts, 1)
	assert.Equal(t, d.Since, r.Since, "one window")
	assert.Equal(t, r.At.Sub(r.Since), r.Down)
	assert.False(t, r.Since.Before(before.At), "delivery worked until the last signal")
	assert.False(t, r.Since.After(dropped), "the window starts at the last delivery, not at the detection")
	assert.True(t, !d.At.Before(dropped) && r.At.After(d.At), "gap %v..%v", d.At, r.At)
	assert.True(t, s.Connected())

	// Both subscriptions are back: Emit counts them, and they deliver.
	n, err := c.Emit(ctx, p+".a", "after")
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	n, err = c.Emit(ctx, p+".b", "group")
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	assert.Equal(t, "after", nextSignal(t, s, 5*time.Second).Payload)
	sig := nextSignal(t, s, 5*time.Second)
	assert.Equal(t, "group", sig.Payload)
	assert.Equal(t, "g", sig.Group)
	assert.ElementsMatch(t, []string{p + ".a", p + ".b (group g)"}, subNames(s.Subscriptions()))
}

func TestSignalEmitWaitsForTheConnectionWhileReconnecting(t *testing.T) {
	t.Parallel()
	addr, srv := testServer(t, dflockdtest.Config{})
	needServer(t, srv, "PauseAccepting")
	c := newClient(t, []string{addr})
	p := chanPrefix(t)
	ctx := ctxT(t, 30*time.Second)
	s := signals(t, c, dfstream.WithSignalBackoff(20*time.Millisecond, 50*time.Millisecond))
	require.NoError(t, errOf(s.Listen(ctx, p+".a")))

	srv.PauseAccepting()
	srv.DropConnections()
	nextOf[dfstream.Disconnected](t, s.Events(), 5*time.Second)

	// While the server refuses, an Emit bounded by a short context gives up
	// and is never sent; Listen is registered and confirmed later.
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	_, err := s.Emit(short, p+".a", "abandoned")
	cancel()
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	listened := make(chan error, 1)
	go func() { listened <- errOf(s.Listen(ctx, p+".c")) }()
	emitted := make(chan error, 1)
	go func() { _, err := s.Emit(ctx, p+".c", "queued"); emitted <- err }()
	time.Sleep(200 * time.Millisecond)
	assert.False(t, s.Connected())
	select {
	case err := <-emitted:
		require.FailNow(t, "Emit returned while disconnected", "%v", err)
	default:
	}

	srv.ResumeAccepting()
	require.NoError(t, <-listened)
	require.NoError(t, <-emitted)
	nextOf[dfstream.Reconnected](t, s.Events(), 10*time.Second)
	sig := nextSignal(t, s, 5*time.Second)
	assert.Equal(t, "queued", sig.Payload, "the abandoned emit was not sent")
}

func TestSignalIdleStreamSurvivesServerReadTimeouts(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		pingError, probe bool
	}{{false, true}, {true, true}, {false, false}, {true, false}} {
		t.Run(fmt.Sprintf("pingError=%v/probe=%v", tc.pingError, tc.probe), func(t *testing.T) {
			t.Parallel()
			const readTimeout = 500 * time.Millisecond
			addr, srv := testServer(t, dflockdtest.Config{ReadTimeout: readTimeout, PingError: tc.pingError})
			needServer(t, srv, "short read timeout")
			c := newClient(t, []string{addr})
			p := chanPrefix(t)
			s := signals(t, c, dfstream.WithSignalHeartbeat(100*time.Millisecond), dfstream.WithSignalProbe(tc.probe))
			require.NoError(t, errOf(s.Listen(ctxT(t, 5*time.Second), p+".idle")))

			noEvent(t, s.Events(), 5*readTimeout)
			assert.True(t, s.Connected())
			n, err := c.Emit(ctxT(t, 5*time.Second), p+".idle", "still here")
			require.NoError(t, err)
			assert.Equal(t, 1, n)
			assert.Equal(t, "still here", nextSignal(t, s, 5*time.Second).Payload)
		})
	}
}

func TestSignalWithoutHeartbeatIsDroppedByTheReadTimeout(t *testing.T) {
	t.Parallel()
	const readTimeout = 500 * time.Millisecond
	addr, srv := testServer(t, dflockdtest.Config{ReadTimeout: readTimeout})
	needServer(t, srv, "short read timeout")
	c := newClient(t, []string{addr})
	s := signals(t, c, dfstream.WithSignalHeartbeat(0), dfstream.WithSignalBackoff(20*time.Millisecond, 50*time.Millisecond))
	require.NoError(t, errOf(s.Listen(ctxT(t, 5*time.Second), chanPrefix(t)+".idle")))

	start := time.Now()
	d := nextOf[dfstream.Disconnected](t, s.Events(), 10*readTimeout)
	assert.ErrorIs(t, d.Reason, dfstream.ErrConnLost)
	assert.GreaterOrEqual(t, time.Since(start), readTimeout*8/10, "dropped by the read timeout, not before")
	nextOf[dfstream.Reconnected](t, s.Events(), 5*time.Second)
}

// muteStream mutes the pushes to the connections that listen to pattern now
// (not to later ones: the stream's next connection is not muted).
func muteStream(t *testing.T, srv *dflockdtest.Server, pattern string) {
	t.Helper()
	ids := map[uint64]bool{}
	for _, ci := range srv.Conns() {
		if slices.Contains(ci.Subscriptions, pattern) {
			ids[ci.ID] = true
		}
	}
	require.NotEmpty(t, ids, "no connection listens to %q", pattern)
	srv.MutePushes(func(ci dflockdtest.ConnInfo) bool { return ids[ci.ID] })
	t.Cleanup(srv.UnmutePushes)
}

func TestSignalHeartbeatProbeDetectsASilentConnectionAndRecovers(t *testing.T) {
	t.Parallel()
	addr, srv := testServer(t, dflockdtest.Config{})
	needServer(t, srv, "MutePushes")
	c := newClient(t, []string{addr})
	p := chanPrefix(t)
	ctx := ctxT(t, 30*time.Second)
	const hb = 300 * time.Millisecond
	s := signals(t, c, dfstream.WithSignalHeartbeat(hb), dfstream.WithSignalBackoff(20*time.Millisecond, 50*time.Millisecond))
	require.NoError(t, errOf(s.Listen(ctx, p+".a")))
	time.Sleep(hb / 2) // the probe subscription is in place

	muteStream(t, srv, p+".a")
	muted := time.Now()
	n, err := c.Emit(ctx, p+".a", "into the void")
	require.NoError(t, err)
	assert.Equal(t, 1, n, "the server still counts the muted listener")

	d := nextOf[dfstream.Disconnected](t, s.Events(), 10*hb)
	took := time.Since(muted)
	assert.ErrorIs(t, d.Reason, dfstream.ErrSilentConnection)
	t.Logf("black hole noticed after %v (heartbeat %v)", took, hb)
	assert.Less(t, took, 2*hb+time.Second, "noticed within two heartbeat intervals (with slack for a slow machine)")
	nextOf[dfstream.Reconnected](t, s.Events(), 5*time.Second)

	_, err = c.Emit(ctx, p+".a", "heard again")
	require.NoError(t, err)
	assert.Equal(t, "heard again", nextSignal(t, s, 5*time.Second).Payload)
}

func TestSignalWithoutProbeASilentConnectionGoesUnnoticed(t *testing.T) {
	t.Parallel()
	// A short read timeout: a heartbeat that did not ping would lose the
	// connection, so "no event" below shows that the pings went on.
	const readTimeout = 500 * time.Millisecond
	addr, srv := testServer(t, dflockdtest.Config{ReadTimeout: readTimeout})
	needServer(t, srv, "MutePushes")
	c := newClient(t, []string{addr})
	p := chanPrefix(t)
	const hb = 200 * time.Millisecond
	s := signals(t, c, dfstream.WithSignalHeartbeat(hb), dfstream.WithSignalProbe(false))
	require.NoError(t, errOf(s.Listen(ctxT(t, 5*time.Second), p+".a")))
	muteStream(t, srv, p+".a")
	_, err := c.Emit(ctxT(t, 5*time.Second), p+".a", "lost")
	require.NoError(t, err)
	noEvent(t, s.Events(), 3*readTimeout) // pings alone cannot tell
	assert.True(t, s.Connected())
}

// flood emits n numbered signals to channel, one at a time, and returns
// how many copies the server queued.
func flood(t *testing.T, c *dfstream.Client, channel string, from, n int) int {
	t.Helper()
	return floodPaced(t, c, channel, from, n, nil)
}

// floodPaced is flood that, after each signal, waits until received()
// reports it arrived. On a loaded machine an unpaced emitter can outrun the
// listener's socket, and the server then refuses copies when the
// connection's 64-line push queue is full (protocol.md §4): pacing keeps
// every test below the server's limits, so that what the client does is
// exact.
func floodPaced(t *testing.T, c *dfstream.Client, channel string, from, n int, received func() uint64) int {
	t.Helper()
	ctx := ctxT(t, 60*time.Second)
	copies := 0
	var want uint64
	if received != nil {
		want = received()
	}
	for i := from; i < from+n; i++ {
		k, err := c.Emit(ctx, channel, strconv.Itoa(i))
		require.NoError(t, err)
		copies += k
		if received == nil {
			continue
		}
		want += uint64(k)
		deadline := time.Now().Add(10 * time.Second)
		for received() < want {
			require.True(t, time.Now().Before(deadline), "signal %d not received", i)
			time.Sleep(20 * time.Microsecond)
		}
	}
	return copies
}

// drain reads the events until the channel is empty for a moment.
func drain(t *testing.T, s *dfstream.SignalStream) (payloads []int, overflow []dfstream.Overflow, other []dfstream.Event) {
	t.Helper()
	for {
		select {
		case ev := <-s.Events():
			switch e := ev.(type) {
			case dfstream.Signal:
				i, err := strconv.Atoi(e.Payload)
				require.NoError(t, err)
				payloads = append(payloads, i)
			case dfstream.Overflow:
				overflow = append(overflow, e)
			default:
				other = append(other, ev)
			}
		case <-time.After(300 * time.Millisecond):
			return
		}
	}
}

func TestSignalSlowConsumerOverflowPolicies(t *testing.T) {
	t.Parallel()
	const (
		n      = 200
		events = 5
	)
	for _, tc := range []struct {
		policy dfstream.OverflowPolicy
		buffer int
	}{{dfstream.DropNewest, 10}, {dfstream.DropOldest, 10}, {dfstream.DropNewest, 1}, {dfstream.DropOldest, 1}} {
		policy, buffer := tc.policy, tc.buffer
		t.Run(fmt.Sprintf("%v/%d", policy, buffer), func(t *testing.T) {
			t.Parallel()
			const readTimeout = 500 * time.Millisecond
			addr, srv := testServer(t, dflockdtest.Config{ReadTimeout: readTimeout})
			c := newClient(t, []string{addr})
			p := chanPrefix(t)
			s := signals(t, c, dfstream.WithSignalHeartbeat(100*time.Millisecond),
				dfstream.WithSignalEventBuffer(events), dfstream.WithSignalBuffer(buffer), dfstream.WithSignalOverflow(policy))
			require.NoError(t, errOf(s.Listen(ctxT(t, 5*time.Second), p+".flood")))

			// Nobody reads: the reader goes on, and so do heartbeats and
			// command replies, past several server read timeouts.
			copies := floodPaced(t, c, p+".flood", 0, n, func() uint64 { return s.Stats().Received })
			require.Equal(t, n, copies)
			if srv != nil {
				time.Sleep(3 * readTimeout)
			} else {
				t.Log("external server: its read timeout is unknown; survival past it not checked")
			}
			ctx := ctxT(t, 5*time.Second)
			require.NoError(t, errOf(s.Listen(ctx, p+".other")), "commands are answered behind a stuck consumer")
			got, err := s.Emit(ctx, p+".nobody", "x")
			require.NoError(t, err)
			assert.Equal(t, 0, got)
			assert.True(t, s.Connected())

			st := s.Stats()
			assert.Equal(t, uint64(n), st.Received)
			kept := n - int(st.Dropped)
			assert.Equal(t, events+buffer, kept, "the channel and the buffer are full, and no more")
			assert.Equal(t, buffer, st.Buffered, "WithSignalBuffer(%d) holds %[1]d", buffer)

			payloads, overflow, other := drain(t, s)
			assert.Empty(t, other, "no disconnection while the consumer was stuck")
			require.Len(t, payloads, kept)
			var total uint64
			for _, o := range overflow {
				total += o.Dropped
				assert.Equal(t, policy, o.Policy)
			}
			require.NotEmpty(t, overflow)
			assert.Equal(t, st.Dropped, total, "Overflow events account for every drop")
			assert.Equal(t, st.Dropped, overflow[len(overflow)-1].Total)
			st = s.Stats()
			assert.Equal(t, st.Received, st.Delivered+st.Dropped, "every signal delivered or counted as dropped")
			assert.Zero(t, st.Buffered)

			assert.True(t, slices.IsSorted(payloads), "arrival order kept")
			switch policy {
			case dfstream.DropNewest:
				for i, v := range payloads {
					assert.Equal(t, i, v, "the oldest are kept, with no hole")
				}
			case dfstream.DropOldest:
				assert.Equal(t, n-1, payloads[len(payloads)-1], "the newest is kept")
				for i := 1; i <= buffer; i++ {
					assert.Equal(t, n-i, payloads[len(payloads)-i], "the newest are kept")
				}
			}

			// Consumed: the stream is back to normal.
			flood(t, c, p+".flood", n, 1)
			assert.Equal(t, strconv.Itoa(n), nextSignal(t, s, 5*time.Second).Payload)
		})
	}
}

func TestSignalOverflowFailStreamEndsWithATypedError(t *testing.T) {
	t.Parallel()
	addr, _ := testServer(t, dflockdtest.Config{})
	c := newClient(t, []string{addr})
	p := chanPrefix(t)
	s := signals(t, c, dfstream.WithSignalEventBuffer(2), dfstream.WithSignalBuffer(3), dfstream.WithSignalOverflow(dfstream.FailStream))
	require.NoError(t, errOf(s.Listen(ctxT(t, 5*time.Second), p+".f")))
	ctx := ctxT(t, 20*time.Second)
	for i := 0; ; i++ {
		if _, err := c.Emit(ctx, p+".f", strconv.Itoa(i)); err != nil || i > 1000 {
			require.NoError(t, err)
			require.FailNow(t, "the stream did not fail")
		}
		select {
		case <-s.Done():
		default:
			continue
		}
		break
	}
	assert.ErrorIs(t, s.Err(), dfstream.ErrOverflow)
	var failed dfstream.Failed
	for ev := range s.Events() {
		if f, ok := ev.(dfstream.Failed); ok {
			failed = f
		}
	}
	assert.ErrorIs(t, failed.Err, dfstream.ErrOverflow)
	st := s.Stats()
	assert.Equal(t, uint64(1), st.Dropped)
	assert.Equal(t, st.Received, st.Delivered+st.Dropped+st.Discarded)
}

func TestSignalCommandsAreAnsweredWhileSignalsArrive(t *testing.T) {
	t.Parallel()
	addr, _ := testServer(t, dflockdtest.Config{})
	c := newClient(t, []string{addr})
	emitter := newClient(t, []string{addr})
	p := chanPrefix(t)
	ctx := ctxT(t, 30*time.Second)
	s := signals(t, c)
	require.NoError(t, errOf(s.Listen(ctx, p+".busy")))

	var selfSeen, busy atomic.Int64
	consumed := make(chan struct{})
	go func() {
		defer close(consumed)
		for ev := range s.Events() {
			sig, ok := ev.(dfstream.Signal)
			if !ok {
				if _, closed := ev.(dfstream.Closed); !closed {
					t.Errorf("unexpected event %T %+v", ev, ev)
				}
				continue
			}
			if sig.Payload == "self" {
				selfSeen.Add(1)
			} else {
				busy.Add(1)
			}
		}
	}()
	stop := make(chan struct{})
	flooded := make(chan int64, 1)
	go func() {
		var i int64
		defer func() { flooded <- i }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			n, err := emitter.Emit(ctx, p+".busy", "b")
			if err != nil {
				return
			}
			// The server may refuse a copy when the connection's push
			// queue (64 lines) is full; it then counts 0 and the signal is
			// lost there. Every copy it counted must arrive.
			i += int64(n)
		}
	}()
	var self int64
	for i := range 50 {
		ch := fmt.Sprintf("%s.cmd.%d", p, i)
		require.NoError(t, errOf(s.Listen(ctx, ch)))
		n, err := s.Emit(ctx, ch, "self")
		require.NoError(t, err)
		assert.LessOrEqual(t, n, 1)
		self += int64(n) // 0 when the flood filled the server's push queue
		require.NoError(t, s.Unlisten(ctx, ch))
	}
	close(stop)
	sent := <-flooded
	require.NotZero(t, sent)
	require.NotZero(t, self)
	assert.Eventually(t, func() bool { return selfSeen.Load() == self && busy.Load() == sent }, 10*time.Second, 5*time.Millisecond,
		"self %d of %d, busy %d of %d, stats %+v", selfSeen.Load(), self, busy.Load(), sent, s.Stats())
	assert.Zero(t, s.Stats().Dropped, "no signal lost under the buffer's limit")
	require.NoError(t, s.Close())
	<-consumed
}

func TestSignalInvalidInputIsATypedErrorAndNothingIsSent(t *testing.T) {
	t.Parallel()
	l := newSilentListener(t)
	c := newClient(t, []string{l.Addr()}, signalsEra)
	ctx := ctxT(t, 5*time.Second)

	long := strings.Repeat("x", 257)
	badChannels := []string{"", "a b", "a\tb", "a\nb", "a\rb", "a*", "a.>", "*", ">", long}
	badPayloads := []string{"", "a\nb", "a\rb", "a\x00b", long}
	badPatterns := []string{"", "a b", "a\nlisten", "a.>.b", "a*", ">a", "a.>>", "a.b*", long}

	// Client.Emit does not even connect.
	for _, ch := range badChannels {
		_, err := c.Emit(ctx, ch, "p")
		assertInputError(t, err, "channel %q", ch)
	}
	for _, pl := range badPayloads {
		_, err := c.Emit(ctx, "a.b", pl)
		assertInputError(t, err, "payload %q", pl)
	}
	select {
	case <-l.accepted:
		require.FailNow(t, "Client.Emit connected for invalid input")
	case <-time.After(50 * time.Millisecond):
	}

	// A stream is connected, but writes nothing for invalid input.
	s := signals(t, c, dfstream.WithSignalHeartbeat(0))
	var conn interface {
		Read([]byte) (int, error)
		SetReadDeadline(time.Time) error
	}
	select {
	case nc := <-l.accepted:
		conn = nc
	case <-time.After(5 * time.Second):
		require.FailNow(t, "stream did not connect")
	}
	for _, ch := range badChannels {
		_, err := s.Emit(ctx, ch, "p")
		assertInputError(t, err, "channel %q", ch)
	}
	for _, pl := range badPayloads {
		_, err := s.Emit(ctx, "a.b", pl)
		assertInputError(t, err, "payload %q", pl)
	}
	for _, pat := range badPatterns {
		assertInputError(t, errOf(s.Listen(ctx, pat)), "pattern %q", pat)
		assertInputError(t, s.Unlisten(ctx, pat), "pattern %q", pat)
		assertInputError(t, errOf(s.ListenGroup(ctx, pat, "g")), "pattern %q", pat)
	}
	for _, g := range []string{"a b", "a\nb", "a\tb", long} {
		assertInputError(t, errOf(s.ListenGroup(ctx, "a.b", g)), "group %q", g)
	}
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(200*time.Millisecond)))
	buf := make([]byte, 1)
	n, err := conn.Read(buf)
	assert.Zero(t, n, "bytes were sent")
	var ne interface{ Timeout() bool }
	require.ErrorAs(t, err, &ne)
	assert.True(t, ne.Timeout())
	assert.Empty(t, s.Subscriptions())
}

func assertInputError(t *testing.T, err error, msg string, args ...any) {
	t.Helper()
	assert.ErrorIs(t, err, dfstream.ErrInvalidInput, append([]any{msg}, args...)...)
	var ie *wire.InputError
	assert.ErrorAs(t, err, &ie, append([]any{msg}, args...)...)
}

func TestSignalServerRejectionIsATypedErrorAndTheSubscriptionIsForgotten(t *testing.T) {
	t.Parallel()
	addr, srv := testServer(t, dflockdtest.Config{MaxSubscriptions: 2})
	needServer(t, srv, "MaxSubscriptions")
	c := newClient(t, []string{addr})
	ctx := ctxT(t, 5*time.Second)
	s := signals(t, c) // the probe takes one subscription
	require.NoError(t, errOf(s.Listen(ctx, "a")))
	err := errOf(s.Listen(ctx, "b"))
	assert.ErrorIs(t, err, dfstream.ErrServer)
	var se *wire.ServerError
	assert.ErrorAs(t, err, &se)
	assert.Equal(t, []string{"a"}, subNames(s.Subscriptions()))

	// At the limit even a duplicate listen fails (the server checks the
	// limit first), but a confirmed subscription is kept, and delivers.
	assert.ErrorIs(t, errOf(s.Listen(ctx, "a")), dfstream.ErrServer)
	assert.Equal(t, []string{"a"}, subNames(s.Subscriptions()))
	n, err := c.Emit(ctx, "a", "still")
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	assert.Equal(t, "still", nextSignal(t, s, 5*time.Second).Payload)
}

func TestSignalAuthRefusedIsAnError(t *testing.T) {
	t.Parallel()
	addr, srv := testServer(t, dflockdtest.Config{AuthToken: "secret"})
	needServer(t, srv, "auth token")
	c, err := dfstream.New(dfstream.WithServers(addr), dfstream.WithAuthToken("wrong"))
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Signals(ctxT(t, 5*time.Second))
	assert.ErrorIs(t, err, dfstream.ErrAuth)
	_, err = c.Emit(ctxT(t, 5*time.Second), "a", "b")
	assert.ErrorIs(t, err, dfstream.ErrAuth)

	good, err := dfstream.New(dfstream.WithServers(addr), dfstream.WithAuthToken("secret"))
	require.NoError(t, err)
	defer good.Close()
	s, err := good.Signals(ctxT(t, 5*time.Second))
	require.NoError(t, err)
	require.NoError(t, errOf(s.Listen(ctxT(t, 5*time.Second), "a")))
	n, err := good.Emit(ctxT(t, 5*time.Second), "a", "b")
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	require.NoError(t, s.Close())
}

func TestSignalStreamEndsWithItsContextAndWithClientClose(t *testing.T) {
	t.Parallel()
	addr, _ := testServer(t, dflockdtest.Config{})
	c, err := dfstream.New(dfstream.WithServers(addr))
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	s1, err := c.Signals(ctx)
	require.NoError(t, err)
	cancel()
	ev := nextOf[dfstream.Closed](t, s1.Events(), 5*time.Second)
	assert.ErrorIs(t, ev.Err, context.Canceled)
	requireClosed(t, s1.Events())
	assert.ErrorIs(t, s1.Err(), context.Canceled)
	_, err = s1.Emit(context.Background(), "a", "b")
	assert.ErrorIs(t, err, dfstream.ErrClosed)

	s2, err := c.Signals(context.Background())
	require.NoError(t, err)
	require.NoError(t, errOf(s2.Listen(context.Background(), "x")))
	require.NoError(t, c.Close())
	select {
	case <-s2.Done():
	default:
		require.FailNow(t, "Client.Close returned before the stream ended")
	}
	nextOf[dfstream.Closed](t, s2.Events(), time.Second)
	requireClosed(t, s2.Events())
	assert.NoError(t, s2.Err())
	_, err = c.Signals(context.Background())
	assert.ErrorIs(t, err, dfstream.ErrClosed)
	assert.True(t, errors.Is(errOf(s2.Listen(context.Background(), "y")), dfstream.ErrClosed))
}

func TestSignalInvalidOptionsAreTypedErrors(t *testing.T) {
	t.Parallel()
	c := newClient(t, []string{"127.0.0.1:1"})
	for name, o := range map[string]dfstream.SignalOption{
		"heartbeat":    dfstream.WithSignalHeartbeat(-1),
		"buffer":       dfstream.WithSignalBuffer(0),
		"events":       dfstream.WithSignalEventBuffer(0),
		"policy":       dfstream.WithSignalOverflow(dfstream.OverflowPolicy(9)),
		"backoff":      dfstream.WithSignalBackoff(time.Second, time.Millisecond),
		"server":       dfstream.WithSignalServer(""),
		"not-a-server": dfstream.WithSignalServer("127.0.0.2:2"),
	} {
		_, err := c.Signals(context.Background(), o)
		assert.ErrorIs(t, err, dfstream.ErrInvalidInput, name)
	}
}

func TestSignalProbesOfOtherStreamsAreNotDelivered(t *testing.T) {
	t.Parallel()
	addr, srv := testServer(t, dflockdtest.Config{})
	needServer(t, srv, "a server of its own: '>' sees every signal")
	c := newClient(t, []string{addr})
	ctx := ctxT(t, 5*time.Second)
	wide := signals(t, c)
	require.NoError(t, errOf(wide.Listen(ctx, ">")))
	busy := signals(t, c, dfstream.WithSignalHeartbeat(200*time.Millisecond))
	require.NoError(t, errOf(busy.Listen(ctx, "x")))

	// Heartbeat probes of busy reach wide's connection (the server counts
	// it), but never show as signals.
	time.Sleep(700 * time.Millisecond)
	n, err := c.Emit(ctx, "x", "real")
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	sig := nextSignal(t, wide, 5*time.Second)
	assert.Equal(t, "real", sig.Payload, "only the real signal is delivered")
	assert.Equal(t, uint64(1), wide.Stats().Received)
	assert.Equal(t, "real", nextSignal(t, busy, 5*time.Second).Payload)
}

// scriptedServer answers each request of its n-th connection (from 0) with
// reply(n, cmd, key); a reply of "" closes the connection instead, and one
// of "close:" + line writes line, then closes the connection.
func scriptedServer(t *testing.T, reply func(conn int, cmd, key string) string) string {
	t.Helper()
	return scriptedPushServer(t, func(r scriptReq, _ func(int, string)) string { return reply(r.conn, r.cmd, r.key) })
}

// scriptReq is one request a scriptedPushServer received.
type scriptReq struct {
	conn          int
	cmd, key, arg string
}

// scriptedPushServer is scriptedServer whose reply function can also write
// a line (a push) to any connection it accepted.
func scriptedPushServer(t *testing.T, reply func(r scriptReq, push func(conn int, line string)) string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var wg sync.WaitGroup
	var conns []net.Conn
	var wmu []*sync.Mutex
	var mu sync.Mutex
	write := func(n int, line string) error {
		mu.Lock()
		nc, m := conns[n], wmu[n]
		mu.Unlock()
		m.Lock()
		defer m.Unlock()
		_, err := nc.Write([]byte(line + "\n"))
		return err
	}
	push := func(n int, line string) { _ = write(n, line) }
	wg.Add(1)
	go func() {
		defer wg.Done()
		for n := 0; ; n++ {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, nc)
			wmu = append(wmu, new(sync.Mutex))
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer nc.Close()
				rd := bufio.NewReader(nc)
				for {
					var lines [3]string
					for i := range lines {
						l, err := rd.ReadString('\n')
						if err != nil {
							return
						}
						lines[i] = strings.TrimSuffix(l, "\n")
					}
					out := reply(scriptReq{n, lines[0], lines[1], lines[2]}, push)
					last, closing := strings.CutPrefix(out, "close:")
					if closing {
						out = last
					}
					if out == "" {
						return
					}
					if err := write(n, out); err != nil || closing {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, nc := range conns {
			_ = nc.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

func TestSignalStreamEndsWhenReconnectingCannotSucceed(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		token string
		reply func(conn int, cmd, key string) string
		want  error
	}{{
		name: "subscription rejected",
		reply: func(conn int, cmd, key string) string {
			switch {
			case conn == 0 && cmd == "listen" && key == "a":
				return "" // accepted, then the connection is lost
			case conn > 0 && cmd == "listen" && key == "a":
				return "error" // now the server refuses it
			}
			return "ok"
		},
		want: dfstream.ErrServer,
	}, {
		name:  "auth refused",
		token: "secret",
		reply: func(conn int, cmd, key string) string {
			switch {
			case conn > 0 && cmd == "auth":
				return "error_auth"
			case conn == 0 && cmd == "listen" && key == "a":
				return ""
			}
			return "ok"
		},
		want: dfstream.ErrAuth,
	}, {
		// No token configured: the server closes the first connection
		// without a reply (a client may miss the error_auth before the
		// close), and refuses the next one with error_auth.
		name: "auth wanted, no token",
		reply: func(conn int, cmd, key string) string {
			if conn == 0 {
				return ""
			}
			return "close:error_auth"
		},
		want: dfstream.ErrAuth,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			addr := scriptedServer(t, tc.reply)
			opts := []dfstream.Option{dfstream.WithServers(addr), signalsEra}
			if tc.token != "" {
				opts = append(opts, dfstream.WithAuthToken(tc.token))
			}
			c, err := dfstream.New(opts...)
			require.NoError(t, err)
			defer c.Close()
			s, err := c.Signals(context.Background(), dfstream.WithSignalHeartbeat(0), dfstream.WithSignalBackoff(time.Millisecond, 10*time.Millisecond))
			require.NoError(t, err)
			listened := make(chan error, 1)
			go func() { listened <- errOf(s.Listen(ctxT(t, 10*time.Second), "a")) }()

			d := nextOf[dfstream.Disconnected](t, s.Events(), 5*time.Second)
			assert.False(t, d.Since.After(d.At))
			assert.WithinDuration(t, d.At, d.Since, 5*time.Second, "the window starts with the stream at the earliest")
			f := nextOf[dfstream.Failed](t, s.Events(), 5*time.Second)
			assert.ErrorIs(t, f.Err, tc.want)
			requireClosed(t, s.Events())
			assert.ErrorIs(t, s.Err(), tc.want)
			assert.Error(t, <-listened, "the Listen that never took effect fails")
		})
	}
}

// scriptedSignals connects a signal stream, with no heartbeat and a short
// backoff unless opts say otherwise, to a scriptedServer.
func scriptedSignals(t *testing.T, addr string, opts ...dfstream.SignalOption) *dfstream.SignalStream {
	t.Helper()
	c, err := dfstream.New(dfstream.WithServers(addr), signalsEra)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	all := append([]dfstream.SignalOption{dfstream.WithSignalHeartbeat(0), dfstream.WithSignalBackoff(time.Millisecond, 10*time.Millisecond)}, opts...)
	return signals(t, c, all...)
}

// waitErr returns what arrives on errc, failing the test after d.
func waitErr(t *testing.T, what string, errc <-chan error, d time.Duration) error {
	t.Helper()
	select {
	case err := <-errc:
		return err
	case <-time.After(d):
		require.FailNow(t, what+" never returned")
		return nil
	}
}

func TestSignalListenOvertakenByUnlistenIsAnsweredWhenTheConnectionDrops(t *testing.T) {
	t.Parallel()
	gotListen, drop := make(chan struct{}), make(chan struct{})
	addr := scriptedServer(t, func(conn int, cmd, key string) string {
		if conn == 0 && cmd == "listen" && key == "a" {
			close(gotListen)
			select { // the Unlisten is sent meanwhile
			case <-drop:
			case <-time.After(10 * time.Second):
			}
			return "" // the connection drops with both unanswered
		}
		return "ok"
	})
	s := scriptedSignals(t, addr)
	listened, unlistened := make(chan error, 1), make(chan error, 1)
	go func() { listened <- errOf(s.Listen(context.Background(), "a")) }()
	<-gotListen
	go func() { unlistened <- s.Unlisten(context.Background(), "a") }()
	time.Sleep(100 * time.Millisecond)
	close(drop)

	err := waitErr(t, "Listen", listened, 5*time.Second)
	assert.ErrorIs(t, err, dfstream.ErrUnlistened)
	assert.NotErrorIs(t, err, dfstream.ErrClosed, "the stream goes on")
	assert.NoError(t, waitErr(t, "Unlisten", unlistened, 5*time.Second))
	nextOf[dfstream.Disconnected](t, s.Events(), 5*time.Second)
	nextOf[dfstream.Reconnected](t, s.Events(), 5*time.Second)
	assert.Empty(t, s.Subscriptions())
}

// TestSignalResubscribeRejectedWithCallsInFlightAnswersThemAll: on a new
// connection the server rejects a resubscription while a user's Listen is in
// flight, and the connection drops right after. Whichever the stream sees
// first, the Listen is answered when the stream ends. Which one it sees
// first is up to the scheduler, and it rarely picks the lost connection:
// TestSignalActorAnswersEveryCallWhenAReplyToALostConnectionEndsIt forces
// that order.
func TestSignalResubscribeRejectedWithCallsInFlightAnswersThemAll(t *testing.T) {
	t.Parallel()
	for i := range 5 {
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			t.Parallel()
			gotResub, listenSent := make(chan struct{}), make(chan struct{})
			addr := scriptedServer(t, func(conn int, cmd, key string) string {
				switch {
				case conn == 0 && cmd == "signal":
					return "" // drops the first connection
				case conn == 1 && cmd == "listen" && key == "a":
					close(gotResub)
					select {
					case <-listenSent:
					case <-time.After(10 * time.Second):
					}
					return "close:error" // the connection drops right after the rejection
				}
				return "ok"
			})
			s := scriptedSignals(t, addr)
			require.NoError(t, errOf(s.Listen(ctxT(t, 5*time.Second), "a")))
			_, err := s.Emit(ctxT(t, 5*time.Second), "x", "y")
			require.ErrorIs(t, err, dfstream.ErrConnLost)
			select {
			case <-gotResub:
			case <-time.After(5 * time.Second):
				require.FailNow(t, "no resubscription")
			}
			listened := make(chan error, 1)
			go func() { listened <- errOf(s.Listen(context.Background(), "b")) }()
			time.Sleep(20 * time.Millisecond) // the Listen is sent
			close(listenSent)
			assert.Error(t, waitErr(t, "Listen", listened, 5*time.Second))
			<-s.Done()
			assert.ErrorIs(t, s.Err(), dfstream.ErrServer)
		})
	}
}

func TestSignalProbeTheServerCouldNotQueueOnceIsNotASilentConnection(t *testing.T) {
	t.Parallel()
	// "ok 0" to a probe: the server's push queue for the connection was
	// full, so it dropped the copy without counting it (protocol.md §4).
	// That is not a black hole, which the server counts. Here every other
	// probe is refused so; the others are delivered to connection 0.
	var probes atomic.Int64
	addr := scriptedPushServer(t, func(r scriptReq, push func(int, string)) string {
		if r.cmd == "signal" && strings.HasPrefix(r.key, dfstream.ProbeChannelPrefix) && r.arg != "keepalive" {
			if probes.Add(1)%2 == 1 {
				return "ok 0"
			}
			push(0, "sig "+r.key+" "+r.arg)
			return "ok 1"
		}
		return "ok"
	})
	const hb = 200 * time.Millisecond
	s := scriptedSignals(t, addr, dfstream.WithSignalHeartbeat(hb))
	require.NoError(t, errOf(s.Listen(ctxT(t, 5*time.Second), "a")))
	noEvent(t, s.Events(), 8*hb)
	assert.True(t, s.Connected())
	assert.GreaterOrEqual(t, probes.Load(), int64(4))
}

func TestSignalProbeTheServerAtTheAddressKeepsNotCountingReconnects(t *testing.T) {
	t.Parallel()
	// Every probe "ok 0", from whatever connection: the process at the
	// address does not know the stream's connection (protocol.md §5, a
	// graceful restart), so the stream reconnects.
	addr := scriptedServer(t, func(_ int, cmd, key string) string {
		if cmd == "signal" && strings.HasPrefix(key, dfstream.ProbeChannelPrefix) {
			return "ok 0"
		}
		return "ok"
	})
	const hb = 200 * time.Millisecond
	s := scriptedSignals(t, addr, dfstream.WithSignalHeartbeat(hb))
	require.NoError(t, errOf(s.Listen(ctxT(t, 5*time.Second), "a")))
	d := nextOf[dfstream.Disconnected](t, s.Events(), 10*time.Second)
	assert.ErrorIs(t, d.Reason, dfstream.ErrSilentConnection)
	nextOf[dfstream.Reconnected](t, s.Events(), 10*time.Second)
}

func TestSignalMissingAuthTokenEndsTheStreamWithErrAuth(t *testing.T) {
	t.Parallel()
	addr, srv := testServer(t, dflockdtest.Config{AuthToken: "secret"})
	needServer(t, srv, "auth token")
	for name, opts := range map[string][]dfstream.SignalOption{
		"probe first":  nil,
		"listen first": {dfstream.WithSignalHeartbeat(0)},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			// No token; the generation stated, so that the first request
			// is the stream's rather than the Client's probe.
			c, err := dfstream.New(dfstream.WithServers(addr), signalsEra)
			require.NoError(t, err)
			defer c.Close()
			start := time.Now()
			s, err := c.Signals(ctxT(t, 10*time.Second), opts...)
			require.NoError(t, err, "the server takes the connection and refuses its first request")
			err = errOf(s.Listen(ctxT(t, 10*time.Second), "a"))
			assert.ErrorIs(t, err, dfstream.ErrAuth)
			f := nextOf[dfstream.Failed](t, s.Events(), 5*time.Second)
			assert.ErrorIs(t, f.Err, dfstream.ErrAuth)
			requireClosed(t, s.Events())
			assert.ErrorIs(t, s.Err(), dfstream.ErrAuth)
			assert.Less(t, time.Since(start), 5*time.Second, "at once, not after retries")
			_, err = s.Emit(context.Background(), "a", "b")
			assert.ErrorIs(t, err, dfstream.ErrClosed)
		})
	}
}

// With the generation unknown, the first request on the connection is the
// Client's probe of it: its refusal is Signals' error, at once.
func TestSignalMissingAuthTokenWithTheGenerationUnknownIsErrAuthFromSignals(t *testing.T) {
	t.Parallel()
	addr, srv := testServer(t, dflockdtest.Config{AuthToken: "secret"})
	needServer(t, srv, "auth token")
	c, err := dfstream.New(dfstream.WithServers(addr)) // no token
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Signals(ctxT(t, 10*time.Second))
	assert.ErrorIs(t, err, dfstream.ErrAuth)
	assert.NotErrorIs(t, err, dfstream.ErrUnreachable)
}

func TestSignalListenOvertakenByUnlistenOnALiveConnectionIsErrUnlistened(t *testing.T) {
	t.Parallel()
	addr, srv := testServer(t, dflockdtest.Config{})
	needServer(t, srv, "Freeze")
	c := newClient(t, []string{addr})
	s := signals(t, c, dfstream.WithSignalHeartbeat(0))
	p := chanPrefix(t)
	ctx := ctxT(t, 10*time.Second)

	// Frozen, the server answers neither until both are sent.
	srv.Freeze()
	listened, unlistened := make(chan error, 1), make(chan error, 1)
	go func() { listened <- errOf(s.Listen(ctx, p+".a")) }()
	time.Sleep(50 * time.Millisecond) // the actor sends what it takes at once
	go func() { unlistened <- s.Unlisten(ctx, p+".a") }()
	time.Sleep(50 * time.Millisecond)
	srv.Thaw()

	err := waitErr(t, "Listen", listened, 5*time.Second)
	assert.ErrorIs(t, err, dfstream.ErrUnlistened)
	assert.NotErrorIs(t, err, dfstream.ErrClosed, "the stream goes on")
	assert.NoError(t, waitErr(t, "Unlisten", unlistened, 5*time.Second))
	assert.Empty(t, s.Subscriptions())
	n, err := c.Emit(ctx, p+".a", "x")
	require.NoError(t, err)
	assert.Zero(t, n, "nothing listens")

	// Listen, Unlisten, Listen: the last one is in place.
	srv.Freeze()
	first, second := make(chan error, 1), make(chan error, 1)
	go func() { first <- errOf(s.Listen(ctx, p+".b")) }()
	time.Sleep(50 * time.Millisecond)
	go func() { unlistened <- s.Unlisten(ctx, p+".b") }()
	time.Sleep(50 * time.Millisecond)
	go func() { second <- errOf(s.Listen(ctx, p+".b")) }()
	time.Sleep(50 * time.Millisecond)
	srv.Thaw()
	assert.ErrorIs(t, waitErr(t, "first Listen", first, 5*time.Second), dfstream.ErrUnlistened)
	assert.NoError(t, waitErr(t, "Unlisten", unlistened, 5*time.Second))
	assert.NoError(t, waitErr(t, "second Listen", second, 5*time.Second))
	assert.Equal(t, []string{p + ".b"}, subNames(s.Subscriptions()))
	n, err = c.Emit(ctx, p+".b", "y")
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	assert.Equal(t, "y", nextSignal(t, s, 5*time.Second).Payload)
}

func TestSignalEntryPointsRejectANilContext(t *testing.T) {
	t.Parallel()
	addr, _ := testServer(t, dflockdtest.Config{})
	c := newClient(t, []string{addr})
	s := signals(t, c)
	r := newRouter(t, c)
	require.NoError(t, r.Handle("a", dfstream.HandlerFunc(func(context.Context, dfstream.Signal) error { return nil })))
	var nilCtx context.Context
	for name, call := range map[string]func() error{
		"Client.Signals":           func() error { _, err := c.Signals(nilCtx); return err },
		"Client.Emit":              func() error { _, err := c.Emit(nilCtx, "a", "b"); return err },
		"SignalStream.Listen":      func() error { return errOf(s.Listen(nilCtx, "a")) },
		"SignalStream.ListenGroup": func() error { return errOf(s.ListenGroup(nilCtx, "a", "g")) },
		"SignalStream.Unlisten":    func() error { return s.Unlisten(nilCtx, "a") },
		"SignalStream.UnlistenGroup": func() error {
			return s.UnlistenGroup(nilCtx, "a", "g")
		},
		"SignalStream.Emit": func() error { _, err := s.Emit(nilCtx, "a", "b"); return err },
		"Router.Run":        func() error { return r.Run(nilCtx) },
	} {
		var err error
		require.NotPanics(t, func() { err = call() }, name)
		assert.ErrorIs(t, err, dfstream.ErrInvalidInput, name)
	}
	assert.Empty(t, s.Subscriptions(), "nothing was listened to")
	// The router did not start: it still runs.
	stop := runRouter(t, r)
	require.NoError(t, stop())
}

func TestSignalsToAnUnreachableServerIsErrUnreachable(t *testing.T) {
	t.Parallel()
	l := newSilentListener(t)
	addr := l.Addr()
	require.NoError(t, l.ln.Close()) // nothing listens there now
	c := newClient(t, []string{addr}, dfstream.WithConnectTimeout(time.Second))
	_, err := c.Signals(ctxT(t, 5*time.Second))
	assert.ErrorIs(t, err, dfstream.ErrUnreachable)
	assert.NotErrorIs(t, err, dfstream.ErrInvalidInput)
}

func TestSignalServerRefusingPingIsNotPingedAgain(t *testing.T) {
	t.Parallel()
	const (
		hb          = 100 * time.Millisecond
		readTimeout = 500 * time.Millisecond
	)
	for _, tc := range []struct {
		name      string
		pingError bool
	}{{"refused", true}, {"answered", false}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := dflockdtest.New(t, dflockdtest.Config{PingError: tc.pingError, ReadTimeout: readTimeout})
			c := newClient(t, []string{srv.Addr()})
			s := signals(t, c, dfstream.WithSignalHeartbeat(hb))
			p := chanPrefix(t)
			require.NoError(t, errOf(s.Listen(ctxT(t, 5*time.Second), p+".a")))
			require.Eventually(t, func() bool { return srv.Pings() >= 1 }, 5*time.Second, 10*time.Millisecond)
			// Several read timeouts: the connection is kept alive all along.
			noEvent(t, s.Events(), 3*readTimeout)
			assert.True(t, s.Connected())
			if tc.pingError {
				assert.Equal(t, uint64(1), srv.Pings(), "no ping after the one answered error")
			} else {
				assert.Greater(t, srv.Pings(), uint64(5), "a server that answers ok is pinged every interval")
			}
			n, err := c.Emit(ctxT(t, 5*time.Second), p+".a", "alive")
			require.NoError(t, err)
			assert.Equal(t, 1, n)
			assert.Equal(t, "alive", nextSignal(t, s, 5*time.Second).Payload)
		})
	}
}

// emitRecord is one signal a test emitted: when the Emit call started and
// returned, and how many copies the server counted.
type emitRecord struct {
	payload       string
	sent, replied time.Time
	n             int
	err           error
}

// emitFresh emits through a Client of its own, so through a new connection
// to whichever process listens at addr now.
func emitFresh(addr, channel, payload string) emitRecord {
	rec := emitRecord{payload: payload, sent: time.Now()}
	c, err := dfstream.New(dfstream.WithServers(addr), dfstream.WithConnectTimeout(2*time.Second))
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		rec.n, err = c.Emit(ctx, channel, payload)
		cancel()
		_ = c.Close()
	}
	rec.err, rec.replied = err, time.Now()
	return rec
}

// restartGracefully starts shutting old down with a long drain (it keeps
// serving its connections) and starts a new server configured by cfg on its
// address, as a restarted dflockd does. It returns the new server and when
// it took over.
func restartGracefully(t *testing.T, old *dflockdtest.Server, cfg dflockdtest.Config) (*dflockdtest.Server, time.Time) {
	t.Helper()
	drainCtx, stopDrain := context.WithCancel(context.Background())
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		_ = old.Shutdown(drainCtx)
	}()
	t.Cleanup(func() { stopDrain(); <-drained })
	// The old listener closes first; SO_REUSEADDR (Go sets it) lets the new
	// one bind while the old process still has connections on the port.
	var srv *dflockdtest.Server
	cfg.Addr = old.Addr()
	require.Eventually(t, func() bool {
		var err error
		srv, err = dflockdtest.Start(cfg)
		return err == nil
	}, 5*time.Second, time.Millisecond, "the new server cannot bind %s", old.Addr())
	took := time.Now()
	t.Cleanup(func() {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_ = srv.Shutdown(ctx)
	})
	return srv, took
}

func TestSignalGracefulRestartIsNoticedAndTheMissedWindowIsHonest(t *testing.T) {
	t.Parallel()
	const hb = 200 * time.Millisecond
	old := dflockdtest.New(t, dflockdtest.Config{ShutdownDrain: time.Minute})
	addr := old.Addr()
	c := newClient(t, []string{addr})
	s := signals(t, c, dfstream.WithSignalHeartbeat(hb), dfstream.WithSignalBackoff(20*time.Millisecond, 100*time.Millisecond))
	ch := chanPrefix(t) + ".x"
	require.NoError(t, errOf(s.Listen(ctxT(t, 5*time.Second), ch)))
	require.Equal(t, 1, emitFresh(addr, ch, "old").n)
	last := nextSignal(t, s, 5*time.Second) // the last delivery through the old process

	_, took := restartGracefully(t, old, dflockdtest.Config{})
	assert.NotEmpty(t, old.Conns(), "the old process still serves the stream's connection")

	// An emitter goes on through the new process all along.
	var mu sync.Mutex
	var emitted []emitRecord
	stop := emitEvery(20*time.Millisecond, func(i int) {
		rec := emitFresh(addr, ch, strconv.Itoa(i))
		mu.Lock()
		emitted = append(emitted, rec)
		mu.Unlock()
	})
	defer stop()

	var d dfstream.Disconnected
	var r dfstream.Reconnected
	received := map[string]dfstream.Signal{}
	deadline := time.After(15 * time.Second)
	var settled <-chan time.Time // after Reconnected: time for later signals to arrive
	for done := false; !done; {
		select {
		case ev := <-s.Events():
			switch e := ev.(type) {
			case dfstream.Signal:
				require.False(t, !d.At.IsZero() && r.At.IsZero(), "signal %q between Disconnected and Reconnected", e.Payload)
				received[e.Payload] = e
			case dfstream.Disconnected:
				require.True(t, d.At.IsZero(), "one outage")
				d = e
			case dfstream.Reconnected:
				require.False(t, d.At.IsZero(), "Reconnected without Disconnected")
				r = e
				settled = time.After(10 * hb)
			default:
				require.FailNow(t, "unexpected event", "%T %+v", ev, ev)
			}
		case <-settled:
			done = true
		case <-deadline:
			require.FailNow(t, "the stream did not move to the new process", "received %d", len(received))
		}
	}
	stop()
	// What the emitter's last signals brought.
	for {
		ev, ok := tryEvent(s.Events(), hb)
		if !ok {
			break
		}
		sig, isSig := ev.(dfstream.Signal)
		require.True(t, isSig, "unexpected event %T %+v", ev, ev)
		received[sig.Payload] = sig
	}

	assert.ErrorIs(t, d.Reason, dfstream.ErrSilentConnection)
	detected := d.At.Sub(took)
	t.Logf("takeover noticed after %v (heartbeat %v), reconnected after %v; window reported %v..%v", detected.Round(time.Millisecond), hb, r.At.Sub(took).Round(time.Millisecond), d.Since.Sub(took).Round(time.Millisecond), r.At.Sub(took).Round(time.Millisecond))
	assert.Less(t, detected, 20*hb, "noticed within a few heartbeats (3 at most on an idle machine)")
	assert.Equal(t, d.Since, r.Since)
	assert.False(t, d.Since.After(took), "the window starts no later than the takeover: nothing proved delivery after it")
	// Signals through the old process prove nothing after the takeover:
	// Since is when the last probe that went through the address's server
	// was emitted, a heartbeat or so before the last delivery at most.
	assert.False(t, d.Since.Before(last.At.Add(-10*hb)), "nor long before the last delivery")
	mu.Lock()
	defer mu.Unlock()
	missed, after := 0, 0
	for _, e := range emitted {
		if e.err != nil {
			continue // never reached the server
		}
		if _, ok := received[e.payload]; ok {
			continue
		}
		missed++
		assert.False(t, e.replied.Before(r.Since), "signal %s missed before the reported window", e.payload)
		assert.False(t, e.sent.After(r.At), "signal %s missed after Reconnected", e.payload)
	}
	for _, e := range emitted {
		if e.sent.After(r.At) && e.err == nil {
			after++
			assert.Equal(t, 1, e.n, "signal %s counted by the new process", e.payload)
			assert.Contains(t, received, e.payload, "signal %s emitted after Reconnected arrives", e.payload)
		}
	}
	t.Logf("%d emitted, %d missed in the window, %d emitted after Reconnected", len(emitted), missed, after)
	assert.Positive(t, after)
}

// tryEvent returns the next event, or false when none comes within d.
func tryEvent(events <-chan dfstream.Event, d time.Duration) (dfstream.Event, bool) {
	select {
	case ev := <-events:
		return ev, true
	case <-time.After(d):
		return nil, false
	}
}

func TestSignalNoSignalOfANewConnectionPrecedesReconnected(t *testing.T) {
	t.Parallel()
	addr, srv := testServer(t, dflockdtest.Config{})
	needServer(t, srv, "DropConnections")
	c := newClient(t, []string{addr})
	p := chanPrefix(t)
	s := signals(t, c, dfstream.WithSignalBackoff(time.Millisecond, 10*time.Millisecond))
	// Many subscriptions: their confirmations take a while on a new
	// connection, and the first ones deliver before the last is confirmed.
	ctx := ctxT(t, 30*time.Second)
	require.NoError(t, errOf(s.Listen(ctx, p+".hot")))
	for i := range 1000 {
		require.NoError(t, errOf(s.Listen(ctx, p+".cold."+strconv.Itoa(i))))
	}
	defer emitFlood(ctx, p+".hot", c)() // through its own connection

	for range 5 {
		nextSignal(t, s, 5*time.Second) // connected, and delivering
		srv.DropConnections()
		for { // signals of the old connection come first
			ev := next(t, s.Events(), 5*time.Second)
			if _, ok := ev.(dfstream.Disconnected); ok {
				break
			}
			require.IsType(t, dfstream.Signal{}, ev)
		}
		// nextOf fails on a Signal before Reconnected.
		r := nextOf[dfstream.Reconnected](t, s.Events(), 10*time.Second)
		assert.Zero(t, r.Coalesced)
	}
}

func TestSignalConnectionLostBeforeReadyReportsAWindowFromTheStart(t *testing.T) {
	t.Parallel()
	addr := scriptedServer(t, func(conn int, _, _ string) string {
		if conn == 0 {
			return "" // the probe's listen, first of all: closed
		}
		return "ok"
	})
	started := time.Now()
	s := scriptedSignals(t, addr, dfstream.WithSignalHeartbeat(time.Minute))
	d := nextOf[dfstream.Disconnected](t, s.Events(), 5*time.Second)
	assert.False(t, d.Since.Before(started), "Since %v: nothing was missed before the stream started", d.Since)
	assert.False(t, d.Since.After(d.At))
	r := nextOf[dfstream.Reconnected](t, s.Events(), 5*time.Second)
	assert.Equal(t, d.Since, r.Since)
}

func TestSignalStreamConsumerThatKeepsUpIsNotFailedByAReconnectWithManySubscriptions(t *testing.T) {
	t.Parallel()
	srv := dflockdtest.New(t, dflockdtest.Config{})
	addr := srv.Addr()
	c := newClient(t, []string{addr})
	p := chanPrefix(t)
	s := signals(t, c, dfstream.WithSignalBackoff(time.Millisecond, 10*time.Millisecond),
		dfstream.WithSignalBuffer(256), dfstream.WithSignalOverflow(dfstream.FailStream))
	ctx := ctxT(t, 30*time.Second)
	require.NoError(t, errOf(s.Listen(ctx, p+".hot")))
	// Resubscribing takes a while: the hot channel's signals pile up
	// behind the gate meanwhile.
	for i := range 1000 {
		require.NoError(t, errOf(s.Listen(ctx, p+".cold."+strconv.Itoa(i))))
	}
	// The consumer reads as fast as it can all along.
	var seen atomic.Int64
	reconnected := make(chan struct{}, 16)
	failed := make(chan error, 1)
	go func() {
		for ev := range s.Events() {
			switch e := ev.(type) {
			case dfstream.Signal:
				seen.Add(1)
			case dfstream.Reconnected:
				reconnected <- struct{}{}
			case dfstream.Failed:
				failed <- e.Err
			}
		}
	}()
	// A flood two emitters strong, against a buffer a consumer that keeps
	// up does not fill at that rate, while a thousand resubscriptions take
	// long enough for many more than that to arrive behind the gate.
	defer emitFlood(ctx, p+".hot", newClient(t, []string{addr}), newClient(t, []string{addr}))()
	for round := range 3 {
		require.Eventually(t, func() bool { return seen.Load() > 0 }, 5*time.Second, time.Millisecond)
		srv.DropConnections()
		select {
		case <-reconnected:
		case err := <-failed:
			require.FailNow(t, "a consumer that keeps up failed", "round %d: %v; stats %+v", round, err, s.Stats())
		case <-time.After(10 * time.Second):
			require.FailNow(t, "no Reconnected", "round %d", round)
		}
		seen.Store(0)
	}
	// Past Reconnected too: the held signals it released do not count.
	select {
	case err := <-failed:
		require.FailNow(t, "a consumer that keeps up failed", "%v; stats %+v", err, s.Stats())
	case <-time.After(300 * time.Millisecond):
	}
	t.Logf("stats %+v", s.Stats())
}

// emitFlood emits to channel as fast as it can, from each emitter, until the
// returned stop is called.
func emitFlood(ctx context.Context, channel string, emitters ...*dfstream.Client) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	for _, c := range emitters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				_, _ = c.Emit(ctx, channel, "x")
			}
		}()
	}
	return func() { close(done); wg.Wait() }
}

func TestSignalDisconnectedSinceIsNotAfterARestartWhileAnOldProcessPublisherStillDelivers(t *testing.T) {
	t.Parallel()
	const hb = 200 * time.Millisecond
	old := dflockdtest.New(t, dflockdtest.Config{ShutdownDrain: time.Minute})
	addr := old.Addr()
	s := signals(t, newClient(t, []string{addr}), dfstream.WithSignalHeartbeat(hb),
		dfstream.WithSignalBackoff(20*time.Millisecond, 100*time.Millisecond))
	ch := chanPrefix(t) + ".x"
	require.NoError(t, errOf(s.Listen(ctxT(t, 5*time.Second), ch)))
	// A long-lived publisher: a connection of its own, to the old process.
	pub := signals(t, newClient(t, []string{addr}), dfstream.WithSignalHeartbeat(0))
	n, err := pub.Emit(ctxT(t, 5*time.Second), ch, "before")
	require.NoError(t, err)
	require.Equal(t, 1, n)
	nextSignal(t, s, 5*time.Second)

	_, took := restartGracefully(t, old, dflockdtest.Config{})
	// Its signals keep reaching the stream through the old process, while
	// those emitted through the new one are missed.
	defer emitEvery(20*time.Millisecond, func(int) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, _ = pub.Emit(ctx, ch, "through the old process")
		cancel()
	})()

	var d dfstream.Disconnected
	deadline := time.After(15 * time.Second)
	for d.At.IsZero() {
		select {
		case ev := <-s.Events():
			if e, ok := ev.(dfstream.Disconnected); ok {
				d = e
			}
		case <-deadline:
			require.FailNow(t, "no Disconnected")
		}
	}
	assert.False(t, d.Since.After(took), "Since is %v after the takeover", d.Since.Sub(took))
}

func TestSignalProbeAnsweredJustBeforeTheHeartbeatHasTimeToArrive(t *testing.T) {
	t.Parallel()
	const hb = 300 * time.Millisecond
	// The server answers the probe's own connection just before the next
	// heartbeat, and pushes the probe a little later, as a real server's
	// per-connection push queue may.
	addr := scriptedPushServer(t, func(r scriptReq, push func(int, string)) string {
		if r.conn != 0 && r.cmd == "signal" && strings.HasPrefix(r.key, dfstream.ProbeChannelPrefix) {
			time.Sleep(hb - 30*time.Millisecond)
			line := "sig " + r.key + " " + r.arg
			time.AfterFunc(60*time.Millisecond, func() { push(0, line) })
			return "ok 1"
		}
		return "ok"
	})
	s := scriptedSignals(t, addr, dfstream.WithSignalHeartbeat(hb))
	require.NoError(t, errOf(s.Listen(ctxT(t, 5*time.Second), "a")))
	select {
	case ev := <-s.Events():
		require.FailNow(t, "a delivering connection was dropped", "%T %+v", ev, ev)
	case <-time.After(10 * hb):
	}
}

// emitEvery calls emit(0), emit(1), ... with a pause between calls, until
// the returned stop (which may be called more than once) is called.
func emitEvery(pause time.Duration, emit func(i int)) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			emit(i)
			select {
			case <-done:
				return
			case <-time.After(pause):
			}
		}
	}()
	return sync.OnceFunc(func() { close(done); wg.Wait() })
}

func TestSignalProbeWhoseDialHangsLeavesTheNextOnTheStreamsConnection(t *testing.T) {
	t.Parallel()
	const hb = 100 * time.Millisecond
	hang := make(chan struct{})
	here := make(chan struct{}, 1)
	addr := scriptedPushServer(t, func(r scriptReq, push func(int, string)) string {
		if r.cmd != "signal" || !strings.HasPrefix(r.key, dfstream.ProbeChannelPrefix) {
			return "ok"
		}
		if r.conn != 0 {
			<-hang // the probe's own connection never gets an answer
			return ""
		}
		select {
		case here <- struct{}{}:
		default:
		}
		push(0, "sig "+r.key+" "+r.arg)
		return "ok 1"
	})
	t.Cleanup(func() { close(hang) }) // before the server's cleanup
	s := scriptedSignals(t, addr, dfstream.WithSignalHeartbeat(hb))
	require.NoError(t, errOf(s.Listen(ctxT(t, 5*time.Second), "a")))
	select {
	case <-here:
	case ev := <-s.Events():
		require.FailNow(t, "unexpected event", "%T %+v", ev, ev)
	case <-time.After(dfstream.DefaultConnectTimeout / 2):
		require.FailNow(t, "no probe while the dial of the previous one hangs")
	}
}

func TestSignalProbeTheStreamNeverEmittedProvesNothing(t *testing.T) {
	t.Parallel()
	const hb = 100 * time.Millisecond
	future := strconv.FormatInt(time.Now().Add(time.Hour).UnixNano(), 10)
	addr := scriptedPushServer(t, func(r scriptReq, push func(int, string)) string {
		if !strings.HasPrefix(r.key, dfstream.ProbeChannelPrefix) {
			return "ok"
		}
		if r.cmd == "listen" {
			// A probe from far ahead, in sequence and in time.
			push(r.conn, "sig "+r.key+" 1000000 "+future)
			return "ok"
		}
		return "ok 1" // counted, and never delivered: a black hole
	})
	s := scriptedSignals(t, addr, dfstream.WithSignalHeartbeat(hb))
	start := time.Now()
	require.NoError(t, errOf(s.Listen(ctxT(t, 5*time.Second), "a")))
	ev := next(t, s.Events(), 50*hb)
	d, ok := ev.(dfstream.Disconnected)
	require.True(t, ok, "%T %+v", ev, ev)
	assert.ErrorIs(t, d.Reason, dfstream.ErrSilentConnection)
	assert.True(t, d.Since.Before(start.Add(time.Minute)), "Since %v is not in the future", d.Since)
}
