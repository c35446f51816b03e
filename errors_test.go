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

// takenKey returns a Client, its server and a key held by another Client
// until the test ends.
func takenKey(t *testing.T) (c *dfstream.Client, addr, key string) {
	t.Helper()
	addr, _ = testServer(t, dflockdtest.Config{})
	key = testKey(t, "k")
	held, err := newClient(t, []string{addr}).Lock(t.Context(), key)
	require.NoError(t, err)
	t.Cleanup(func() { _ = held.Close() })
	return newClient(t, []string{addr}), addr, key
}

func TestOpErrorNamesTheOperationKeyAndServer(t *testing.T) {
	t.Parallel()
	c, addr, key := takenKey(t)

	_, err := c.TryLock(t.Context(), key)
	var oe *dfstream.OpError
	require.ErrorAs(t, err, &oe)
	assert.Equal(t, "acquire lock", oe.Op)
	assert.Equal(t, key, oe.Key)
	assert.Equal(t, addr, oe.Server)
	assert.ErrorIs(t, oe.Err, dfstream.ErrTimeout, "Err is the cause")
}

// A stream that fails reports the same sentence in its Failed event, in
// Err and from Wait.
func TestFailedEventSaysWhatWaitSays(t *testing.T) {
	t.Parallel()
	c, _, key := takenKey(t)

	s, err := c.StartLock(t.Context(), key, dfstream.WithAcquireTimeout(0))
	require.NoError(t, err)
	defer s.Close()
	_, waitErr := s.Wait(t.Context())
	want := `dfstream: acquire lock "` + key + `": held by another client`
	require.EqualError(t, waitErr, want)
	for {
		if f, ok := next(t, s.Events(), 5*time.Second).(dfstream.Failed); ok {
			assert.EqualError(t, f.Err, want)
			break
		}
	}
	assert.EqualError(t, s.Err(), want)
}

// A signal stream that the server refuses ends with Failed saying so once,
// and a Listen says that the stream closed, and why, after its own
// operation: never the prefix twice.
func TestSignalStreamRefusedSaysItOnce(t *testing.T) {
	t.Parallel()
	srv := dflockdtest.New(t, dflockdtest.Config{AuthToken: "right"})
	// The generation is stated, so no probe meets the refusal: the first
	// Listen does.
	c := newClient(t, []string{srv.Addr()}, signalsEra)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	s, err := c.Signals(ctx)
	require.NoError(t, err)
	defer s.Close()

	_, err = s.Listen(ctx, "a.b") // refused, or behind the stream's probe that was
	assert.Contains(t, []string{
		`dfstream: listen "a.b": authentication refused`,
		`dfstream: listen "a.b": closed: authentication refused`,
	}, err.Error())
	assert.ErrorIs(t, err, dfstream.ErrAuth)
	for {
		if f, ok := next(t, s.Events(), 5*time.Second).(dfstream.Failed); ok {
			assert.EqualError(t, f.Err, "dfstream: signal stream: authentication refused")
			assert.ErrorIs(t, f.Err, dfstream.ErrAuth)
			break
		}
	}
	<-s.Done()
	assert.EqualError(t, s.Err(), "dfstream: signal stream: authentication refused")

	_, err = s.Listen(ctx, "c.d")
	assert.EqualError(t, err, `dfstream: listen "c.d": closed: authentication refused`, "the stream's reason, said once")
	assert.ErrorIs(t, err, dfstream.ErrClosed)
	assert.ErrorIs(t, err, dfstream.ErrAuth)
}

// A signal stream's connection events and its end by context say
// "dfstream: " once, like its failures.
func TestSignalStreamEventsSayThePrefixOnce(t *testing.T) {
	t.Parallel()
	srv := dflockdtest.New(t, dflockdtest.Config{})
	c := newClient(t, []string{srv.Addr()})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	s, err := c.Signals(ctx)
	require.NoError(t, err)
	defer s.Close()

	srv.DropConnections()
	d := nextOf[dfstream.Disconnected](t, s.Events(), 5*time.Second)
	assert.Contains(t, []string{ // as the drop reached the socket: a FIN, or a reset
		"dfstream: signal stream: connection lost: the server closed the connection",
		"dfstream: signal stream: connection lost: read: connection reset by peer",
	}, d.Reason.Error())
	assert.ErrorIs(t, d.Reason, dfstream.ErrConnLost)

	cancel()
	for {
		if cl, ok := next(t, s.Events(), 5*time.Second).(dfstream.Closed); ok {
			assert.EqualError(t, cl.Err, "dfstream: signal stream: context canceled")
			assert.ErrorIs(t, cl.Err, context.Canceled)
			break
		}
	}
	assert.EqualError(t, s.Err(), "dfstream: signal stream: context canceled")
}

// A held stream ended by its context reports that as its other failures:
// the operation, the key, then the context's error.
func TestHeldStreamEndedByItsContextSaysSo(t *testing.T) {
	t.Parallel()
	addr, _ := testServer(t, dflockdtest.Config{})
	c := newClient(t, []string{addr})
	key := testKey(t, "k")
	ctx, cancel := context.WithCancel(t.Context())
	s, err := c.StartLock(ctx, key)
	require.NoError(t, err)
	_, err = s.Wait(t.Context())
	require.NoError(t, err)
	cancel()
	<-s.Done()
	assert.EqualError(t, s.Err(), `dfstream: hold lock "`+key+`": context canceled`)
	assert.ErrorIs(t, s.Err(), context.Canceled)
}

// A cluster without a leader says so once, after the operation, with the
// members tried.
func TestNoLeaderSaysItOnceWithTheMembersTried(t *testing.T) {
	t.Parallel()
	cl := newTestCluster(t, three)
	cl.StartElection()
	c := clusterClient(t, cl.Addrs(), dfstream.WithRedirectBudget(2))
	_, err := c.Lock(ctxT(t, 10*time.Second), "k")
	var nle *dfstream.NoLeaderError
	require.ErrorAs(t, err, &nle)
	require.Len(t, nle.Tried, 2)
	assert.EqualError(t, err, `dfstream: acquire lock "k": no cluster leader after 2 attempts (`+
		nle.Tried[0]+", "+nle.Tried[1]+"): not the cluster leader (no leader known)")
	assert.ErrorIs(t, err, dfstream.ErrNoLeader)
}
