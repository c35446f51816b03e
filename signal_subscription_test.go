package dfstream_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dfstream/dfstream"
	"github.com/dfstream/dfstream/dflockdtest"
)

// listen subscribes s to pattern (in group, if given) and returns the
// subscription.
func listen(t *testing.T, s *dfstream.SignalStream, pattern string, group ...string) *dfstream.Subscription {
	t.Helper()
	var sub *dfstream.Subscription
	var err error
	if len(group) > 0 {
		sub, err = s.ListenGroup(ctxT(t, 5*time.Second), pattern, group[0])
	} else {
		sub, err = s.Listen(ctxT(t, 5*time.Second), pattern)
	}
	require.NoError(t, err)
	require.NotNil(t, sub)
	return sub
}

// emit sends one signal from c and fails the test unless want connections
// were reached.
func emit(t *testing.T, c *dfstream.Client, channel, payload string, want int) {
	t.Helper()
	n, err := c.Emit(ctxT(t, 5*time.Second), channel, payload)
	require.NoError(t, err)
	require.Equal(t, want, n)
}

// streamOnServer starts a server of the test's own, a Client and a signal
// stream, and returns them with a channel prefix for the test.
func streamOnServer(t *testing.T, opts ...dfstream.SignalOption) (*dfstream.Client, *dfstream.SignalStream, string) {
	t.Helper()
	addr, _ := testServer(t, dflockdtest.Config{})
	c := newClient(t, []string{addr})
	return c, signals(t, c, opts...), chanPrefix(t)
}

func TestSignalListenReturnsTheSubscriptionWithItsPatternAndGroup(t *testing.T) {
	t.Parallel()
	_, s, p := streamOnServer(t)

	plain := listen(t, s, p+".a.*")
	grouped := listen(t, s, p+".b", "g")

	assert.Equal(t, p+".a.*", plain.Pattern)
	assert.Empty(t, plain.Group)
	assert.Equal(t, p+".b", grouped.Pattern)
	assert.Equal(t, "g", grouped.Group)
	assert.True(t, plain.Listening())
	assert.Equal(t, []*dfstream.Subscription{plain, grouped}, s.Subscriptions())
}

func TestSignalListeningAgainReturnsTheSameSubscription(t *testing.T) {
	t.Parallel()
	_, s, p := streamOnServer(t)

	first := listen(t, s, p+".a")
	assert.Same(t, first, listen(t, s, p+".a"))
	assert.NotSame(t, first, listen(t, s, p+".a", "g"), "a group is another subscription")
}

func TestSubscriptionUnlistenDropsThatSubscriptionOnly(t *testing.T) {
	t.Parallel()
	c, s, p := streamOnServer(t)
	a := listen(t, s, p+".a")
	b := listen(t, s, p+".b")

	require.NoError(t, a.Unlisten(ctxT(t, 5*time.Second)))

	assert.False(t, a.Listening())
	assert.True(t, b.Listening())
	assert.Equal(t, []*dfstream.Subscription{b}, s.Subscriptions())
	emit(t, c, p+".a", "gone", 0)
	emit(t, c, p+".b", "kept", 1)
	assert.Equal(t, "kept", nextSignal(t, s, 5*time.Second).Payload)
}

func TestSubscriptionUnlistenAfterListeningAgainLeavesTheNewSubscription(t *testing.T) {
	t.Parallel()
	c, s, p := streamOnServer(t)
	old := listen(t, s, p+".a")
	require.NoError(t, old.Unlisten(ctxT(t, 5*time.Second)))
	renewed := listen(t, s, p+".a")
	require.NotSame(t, old, renewed)

	require.NoError(t, old.Unlisten(ctxT(t, 5*time.Second)))

	assert.True(t, renewed.Listening())
	emit(t, c, p+".a", "still", 1)
	assert.Equal(t, "still", nextSignal(t, s, 5*time.Second).Payload)
}

func TestSubscriptionCountsTheSignalsDeliveredThroughIt(t *testing.T) {
	t.Parallel()
	c, s, p := streamOnServer(t)
	a := listen(t, s, p+".a")
	b := listen(t, s, p+".b")

	for range 3 {
		emit(t, c, p+".a", "x", 1)
	}
	emit(t, c, p+".b", "y", 1)
	for range 4 {
		nextSignal(t, s, 5*time.Second)
	}

	assert.Equal(t, dfstream.SubscriptionStats{Delivered: 3}, a.Stats())
	assert.Equal(t, dfstream.SubscriptionStats{Delivered: 1}, b.Stats())
}

func TestSubscriptionCountsTheSignalsTheOverflowPolicyDropped(t *testing.T) {
	t.Parallel()
	c, s, p := streamOnServer(t, dfstream.WithSignalEventBuffer(1), dfstream.WithSignalBuffer(1))
	a := listen(t, s, p+".a")
	other := listen(t, s, p+".b")

	// Nobody reads: one signal in the channel, one in the buffer, the
	// rest dropped.
	floodPaced(t, c, p+".a", 0, 5, func() uint64 { return s.Stats().Received })

	assert.Equal(t, dfstream.SubscriptionStats{Delivered: 1, Dropped: 3}, a.Stats())
	assert.Equal(t, dfstream.SubscriptionStats{}, other.Stats())
}

func TestSignalMatchingSeveralSubscriptionsNamesTheFirstMadeAndListsThemAll(t *testing.T) {
	t.Parallel()
	c, s, p := streamOnServer(t)
	// Made in this order; the matching visits ">" first.
	narrow := listen(t, s, p+".a.*")
	wide := listen(t, s, p+".>")

	emit(t, c, p+".a.b", "both", 1) // one copy for the connection's plain subscriptions
	sig := nextSignal(t, s, 5*time.Second)

	assert.Equal(t, p+".a.*", sig.Pattern, "the first made")
	assert.Equal(t, []*dfstream.Subscription{narrow, wide}, sig.Subscriptions())
	assert.Equal(t, uint64(1), wide.Stats().Delivered)
	assert.Equal(t, uint64(1), narrow.Stats().Delivered)
}

func TestSignalMatchingOneSubscriptionNamesIt(t *testing.T) {
	t.Parallel()
	c, s, p := streamOnServer(t)
	listen(t, s, p+".a.*")
	deep := listen(t, s, p+".a.>")

	emit(t, c, p+".a.b.c", "one", 1)
	sig := nextSignal(t, s, 5*time.Second)

	assert.Equal(t, p+".a.>", sig.Pattern)
	assert.Equal(t, []*dfstream.Subscription{deep}, sig.Subscriptions())
}

func TestSubscriptionIsNotListeningOnceTheStreamEnds(t *testing.T) {
	t.Parallel()
	_, s, p := streamOnServer(t)
	sub := listen(t, s, p+".a")

	require.NoError(t, s.Close())

	assert.False(t, sub.Listening())
	assert.ErrorIs(t, sub.Unlisten(context.Background()), dfstream.ErrClosed)
}

func TestRouterHandlersGetSignalsWithoutTheRoutersSubscriptions(t *testing.T) {
	t.Parallel()
	addr, _ := testServer(t, dflockdtest.Config{})
	c := newClient(t, []string{addr})
	p := chanPrefix(t)
	r, err := dfstream.NewRouter(c)
	require.NoError(t, err)
	got := make(chan dfstream.Signal, 1)
	require.NoError(t, r.HandleFunc(p+".a", func(_ context.Context, sig dfstream.Signal) error {
		got <- sig
		return nil
	}))
	runRouter(t, r)

	emit(t, c, p+".a", "x", 1)

	select {
	case sig := <-got:
		assert.Equal(t, p+".a", sig.Pattern)
		assert.Empty(t, sig.Subscriptions())
	case <-time.After(5 * time.Second):
		require.FailNow(t, "the handler got nothing")
	}
}

func TestSubscriptionNotMadeByListenCannotUnlisten(t *testing.T) {
	t.Parallel()
	sub := &dfstream.Subscription{Pattern: "a"}
	assert.ErrorIs(t, sub.Unlisten(context.Background()), dfstream.ErrInvalidInput)
	assert.False(t, sub.Listening())
}
