package dfstream

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dfstream/dfstream/dflockdtest"
)

// These tests hold a stream's turn themselves, as a step that runs late
// would (a renewal tick delayed on a loaded machine, a renewal between its
// exchanges), to pin down what the stream promises meanwhile.

// heldStream returns a held lock stream of a fresh server and client.
func heldStream(t *testing.T, key string, clientOpts []Option, opts ...StreamOption) *holdStream {
	t.Helper()
	srv := dflockdtest.New(t, dflockdtest.Config{})
	c, err := New(append([]Option{WithServers(srv.Addr())}, clientOpts...)...)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	s, err := c.Lock(context.Background(), key, opts...)
	require.NoError(t, err)
	return s.holdStream
}

func TestWaitHandsOutNoGrantPastItsSafeDeadlineWhileTheLossIsLate(t *testing.T) {
	t.Parallel()
	s := heldStream(t, "turn/wait", nil, WithLease(time.Second))
	g, held := s.Held()
	require.True(t, held)

	<-s.turn // the renewal, due before the deadline, cannot run
	time.Sleep(time.Until(g.Deadline) + 50*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	got, err := s.Wait(ctx)
	assert.ErrorIs(t, err, context.DeadlineExceeded, "Wait handed out a grant whose deadline passed %v ago",
		time.Since(got.Deadline))
	_, held = s.Held()
	assert.False(t, held, "nor does Held report it")

	s.giveTurn() // the late step declares the loss
	_, err = s.Wait(context.Background())
	assert.ErrorIs(t, err, ErrDeadlinePassed)
}

func TestReleaseThatGivesUpLeavesTheNextRenewalAlone(t *testing.T) {
	t.Parallel()
	// The renewal is due a second after the grant, long after a hurried
	// exchange would have to be answered (the connect timeout).
	s := heldStream(t, "turn/release", []Option{WithConnectTimeout(200 * time.Millisecond)},
		WithLease(2*time.Second))

	<-s.turn // a step is under way between exchanges: Release must wait
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	assert.ErrorIs(t, s.Release(ctx), context.Canceled)
	s.giveTurn()

	for ev := range s.Events() {
		switch ev := ev.(type) {
		case Renewed:
			_, held := s.Held()
			assert.True(t, held)
			return
		case Lost:
			t.Fatalf("the renewal after the abandoned release failed: %v", ev.Reason)
		}
	}
	t.Fatalf("ended: %v", s.Err())
}

// The invariants of the turn itself (see takeHeldTurn).

// takeTurnWithin takes the turn, failing the test when nobody gives it
// back within several seconds.
func takeTurnWithin(t *testing.T, s *holdStream) {
	t.Helper()
	select {
	case <-s.turn:
	case <-time.After(5 * time.Second):
		require.FailNow(t, "the turn was never given back")
	}
}

// requireTurnKept checks that the turn the test took is kept, not free,
// and gives it back.
func requireTurnKept(t *testing.T, s *holdStream) {
	t.Helper()
	select {
	case <-s.turn:
		s.giveTurn()
		require.FailNow(t, "the turn is free")
	default:
	}
	s.giveTurn()
}

func TestTakeHeldTurnWaitsForTheStepThatHasIt(t *testing.T) {
	t.Parallel()
	s := heldStream(t, "turn/take", nil)
	takeTurnWithin(t, s) // a step is at work
	took := make(chan bool, 1)
	go func() { took <- s.takeHeldTurn() }()
	select {
	case <-took:
		require.FailNow(t, "took the turn while another step had it")
	case <-time.After(50 * time.Millisecond):
	}
	s.giveTurn()
	require.True(t, <-took, "the key is held: the turn is kept")
	requireTurnKept(t, s)
	require.NoError(t, s.Close())
}

func TestKeepIfHeldKeepsTheTurnOfAHeldStream(t *testing.T) {
	t.Parallel()
	s := heldStream(t, "turn/keep", nil)
	takeTurnWithin(t, s)
	require.True(t, s.keepIfHeld())
	requireTurnKept(t, s)
	require.NoError(t, s.Close())
}

func TestTheTurnOfAnEndedStreamIsFreeForGood(t *testing.T) {
	t.Parallel()
	s := heldStream(t, "turn/ended", nil)
	require.NoError(t, s.Close())
	for range 3 { // every step that comes late finds the stream ended
		assert.False(t, s.takeHeldTurn())
		takeTurnWithin(t, s)
		assert.False(t, s.keepIfHeld(), "the key is gone: the turn goes back")
	}
	takeTurnWithin(t, s)
	s.giveTurn()
}

func TestEveryStepGivesTheTurnBack(t *testing.T) {
	t.Parallel()
	// A second's lease: the hang-up watch and two renewals run meanwhile.
	s := heldStream(t, "turn/steps", nil, WithLease(time.Second))
	for range 4 {
		time.Sleep(300 * time.Millisecond)
		takeTurnWithin(t, s)
		s.giveTurn()
	}
	_, held := s.Held()
	assert.True(t, held)
	require.NoError(t, s.Release(context.Background()))
	takeTurnWithin(t, s)
	s.giveTurn()
}
