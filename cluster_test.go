package dfstream_test

// A Client of a dflockd 2.x Raft cluster (WithCluster): leader routing,
// hints, the redirect budget, and failover as Moved rather than Lost. The
// cluster is dflockdtest's in-process one (protocol-v2.md §7).

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dfstream/dfstream"
	"github.com/dfstream/dfstream/dflockdtest"
	"github.com/dfstream/dfstream/internal/faultproxy"
)

// newTestCluster starts an in-process cluster (node 0 leads).
func newTestCluster(t testing.TB, cfg dflockdtest.ClusterConfig) *dflockdtest.Cluster {
	t.Helper()
	if os.Getenv("DFLOCKD_TEST_ADDR") != "" {
		t.Skip("needs the embedded cluster's leadership helpers; DFLOCKD_TEST_ADDR is set")
	}
	return dflockdtest.NewCluster(t, cfg)
}

// three is the configuration of most tests' cluster.
var three = dflockdtest.ClusterConfig{Nodes: 3}

// clusterClient returns a Client of the members, closed when the test ends.
func clusterClient(t testing.TB, members []string, opts ...dfstream.Option) *dfstream.Client {
	t.Helper()
	c, err := dfstream.New(append([]dfstream.Option{dfstream.WithCluster(members...)}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	return c
}

// rotated returns addrs starting at index i: the members in an order
// whose first is not the leader, say.
func rotated(addrs []string, i int) []string {
	return append(append([]string(nil), addrs[i:]...), addrs[:i]...)
}

// failoverLease is the lease of streams that live through failovers: long
// enough that a move on a loaded machine comes well before the deadline.
const failoverLease = 4 * time.Second

// onCluster starts a 3-node cluster and a Client of it, and returns them
// with a context for the test and a key.
func onCluster(t *testing.T) (*dflockdtest.Cluster, *dfstream.Client, context.Context, string) {
	t.Helper()
	cl := newTestCluster(t, three)
	return cl, clusterClient(t, cl.Addrs()), ctxT(t, 60*time.Second), testKey(t, "k")
}

// clusterHold is a 3-node cluster, a Client of it, and a lock stream that
// holds a key there.
type clusterHold struct {
	cl  *dflockdtest.Cluster
	c   *dfstream.Client
	ctx context.Context
	s   *dfstream.LockStream
	a   dfstream.Acquired // the stream's first event
}

// holdOnCluster starts a clusterHold whose stream has failoverLease, or
// what opts say.
func holdOnCluster(t *testing.T, opts ...dfstream.StreamOption) clusterHold {
	t.Helper()
	var h clusterHold
	var key string
	h.cl, h.c, h.ctx, key = onCluster(t)
	var err error
	h.s, err = h.c.Lock(h.ctx, key, append([]dfstream.StreamOption{dfstream.WithLease(failoverLease)}, opts...)...)
	require.NoError(t, err)
	h.a = nextOf[dfstream.Acquired](t, h.s.Events(), time.Second)
	return h
}

func TestClusterLockGoesToTheLeaderWhenTheFirstMemberFollows(t *testing.T) {
	t.Parallel()
	cl := newTestCluster(t, three)
	c := clusterClient(t, rotated(cl.Addrs(), 1))
	ctx := ctxT(t, 10*time.Second)
	s, err := c.Lock(ctx, testKey(t, "k"))
	require.NoError(t, err)
	assert.Equal(t, cl.Node(0).Addr(), c.Leader(), "the hint led to node 0")
	require.NoError(t, s.Release(ctx))
}

func TestClusterLeaderCacheIsSharedByTheClientsStreams(t *testing.T) {
	t.Parallel()
	cl := newTestCluster(t, three)
	c := clusterClient(t, rotated(cl.Addrs(), 1), dfstream.WithPoolSize(0))
	ctx := ctxT(t, 10*time.Second)
	s1, err := c.Lock(ctx, testKey(t, "a"))
	require.NoError(t, err)
	followers := func() int { return len(cl.Node(1).Conns()) + len(cl.Node(2).Conns()) }
	require.Eventually(t, func() bool { return followers() == 0 }, 5*time.Second, 10*time.Millisecond,
		"the follower's connection was dropped after its hint")
	accepted := cl.Node(1).Accepted() + cl.Node(2).Accepted()
	s2, err := c.Lock(ctx, testKey(t, "b"))
	require.NoError(t, err)
	assert.Equal(t, accepted, cl.Node(1).Accepted()+cl.Node(2).Accepted(), "the second stream went straight to the leader")
	assert.Len(t, cl.Node(0).Conns(), 2)
	require.NoError(t, s1.Release(ctx))
	require.NoError(t, s2.Release(ctx))
}

func TestClusterHeldStreamMovesOnFailoverWithTheSameToken(t *testing.T) {
	t.Parallel()
	h := holdOnCluster(t)
	cl, ctx, s, a := h.cl, h.ctx, h.s, h.a
	require.NoError(t, cl.Failover(1))
	m := nextOf[dfstream.Moved](t, s.Events(), failoverLease)
	assert.Equal(t, a.Token, m.Token)
	assert.Equal(t, cl.Node(0).Addr(), m.From)
	assert.Equal(t, cl.Node(1).Addr(), m.To)
	assert.True(t, m.At.Before(a.Deadline), "moved before the old safe deadline")
	assert.True(t, m.Deadline.After(m.At))
	assert.Equal(t, a.Fence, m.Fence)
	g, held := s.Held()
	require.True(t, held)
	assert.Equal(t, m.Deadline, g.Deadline)
	r := nextOf[dfstream.Renewed](t, s.Events(), failoverLease)
	assert.True(t, r.Deadline.After(m.Deadline), "renewed on the new leader")
	require.NoError(t, s.Release(ctx))
	nextOf[dfstream.Released](t, s.Events(), time.Second)
	requireClosed(t, s.Events())
}

func TestClusterHeldStreamSurvivesTwentyFailoversWithOneMovedEach(t *testing.T) {
	t.Parallel()
	h := holdOnCluster(t)
	cl, ctx, s, a := h.cl, h.ctx, h.s, h.a
	deadline, leader := a.Deadline, 0
	for i := range 20 {
		to := (leader + 1) % cl.Nodes()
		require.NoError(t, cl.Failover(to))
		var m dfstream.Moved
		for m.Token == "" {
			switch ev := next(t, s.Events(), failoverLease).(type) {
			case dfstream.Moved:
				m = ev
			case dfstream.Renewed:
				deadline = ev.Deadline
			default:
				require.FailNow(t, "want Moved", "failover %d: got %T %+v", i, ev, ev)
			}
		}
		assert.Equal(t, a.Token, m.Token, "failover %d", i)
		assert.Equal(t, cl.Addrs()[leader], m.From, "failover %d", i)
		assert.Equal(t, cl.Addrs()[to], m.To, "failover %d", i)
		assert.Zero(t, m.Coalesced, "failover %d: one Moved per failover", i)
		assert.True(t, m.At.Before(deadline), "failover %d: moved %v after the safe deadline", i, m.At.Sub(deadline))
		deadline, leader = m.Deadline, to
	}
	_, held := s.Held()
	require.True(t, held)
	require.NoError(t, s.Release(ctx))
	nextOf[dfstream.Released](t, s.Events(), time.Second)
	requireClosed(t, s.Events())
}

func TestClusterQueuedStreamsKeepTheirFIFOOrderAcrossAFailover(t *testing.T) {
	t.Parallel()
	cl, c, ctx, key := onCluster(t)
	holder, err := c.Lock(ctx, key, dfstream.WithLease(failoverLease))
	require.NoError(t, err)
	var waiters []*dfstream.LockStream
	for range 3 {
		waiters = append(waiters, queuedLock(t, c, ctx, key, dfstream.WithLease(failoverLease), dfstream.WithAcquireTimeout(20*time.Second)))
	}
	require.NoError(t, cl.Failover(2))
	nextOf[dfstream.Acquired](t, holder.Events(), time.Second)
	nextOf[dfstream.Moved](t, holder.Events(), failoverLease)
	require.NoError(t, holder.Release(ctx))
	for i, w := range waiters {
		a := nextOf[dfstream.Acquired](t, w.Events(), 10*time.Second)
		for j, other := range waiters[i+1:] {
			_, held := other.Held()
			assert.False(t, held, "waiter %d holds while waiter %d does", i+1+j, i)
		}
		assert.NotEmpty(t, a.Token)
		require.NoError(t, w.Release(ctx), "waiter %d", i)
	}
}

func TestClusterHintToANonMemberIsNeverDialled(t *testing.T) {
	t.Parallel()
	cl := newTestCluster(t, three)
	// Node 0 leads, and is not a member: every hint names it.
	members := cl.Addrs()[1:]
	c := clusterClient(t, members)
	before := cl.Node(0).Accepted()
	_, err := c.Lock(ctxT(t, 10*time.Second), testKey(t, "k"))
	require.ErrorIs(t, err, dfstream.ErrNoLeader)
	var nle *dfstream.NoLeaderError
	require.ErrorAs(t, err, &nle)
	for _, addr := range nle.Tried {
		assert.Contains(t, members, addr)
	}
	assert.Equal(t, before, cl.Node(0).Accepted(), "the non-member was dialled")
	assert.Empty(t, c.Leader(), "a hint to a non-member clears the cache")
}

func TestClusterBudgetEndsALeaderlessClusterWithErrNoLeader(t *testing.T) {
	t.Parallel()
	cl := newTestCluster(t, three)
	cl.StartElection()
	c := clusterClient(t, cl.Addrs(), dfstream.WithRedirectBudget(4))
	start := time.Now()
	_, err := c.Lock(ctxT(t, 10*time.Second), testKey(t, "k"))
	require.ErrorIs(t, err, dfstream.ErrNoLeader)
	require.ErrorIs(t, err, dfstream.ErrNotLeader, "the last attempt's answer")
	var nle *dfstream.NoLeaderError
	require.ErrorAs(t, err, &nle)
	assert.Len(t, nle.Tried, 4, "one attempt per unit of budget")
	assert.Less(t, time.Since(start), 5*time.Second)
}

func TestClusterRedirectBudgetOfOneTriesOneMember(t *testing.T) {
	t.Parallel()
	cl := newTestCluster(t, three)
	c := clusterClient(t, rotated(cl.Addrs(), 1), dfstream.WithRedirectBudget(1))
	_, err := c.Lock(ctxT(t, 10*time.Second), testKey(t, "k"))
	var nle *dfstream.NoLeaderError
	require.ErrorAs(t, err, &nle)
	assert.Equal(t, []string{cl.Addrs()[1]}, nle.Tried)
	assert.Equal(t, cl.Addrs()[0], c.Leader(), "the hint is cached for the next operation")
}

func TestClusterHeldStreamMovesAfterTheLeaderIsKilled(t *testing.T) {
	t.Parallel()
	h := holdOnCluster(t)
	cl, ctx, s, a := h.cl, h.ctx, h.s, h.a
	require.Equal(t, 0, cl.KillLeader())
	time.Sleep(100 * time.Millisecond) // an election: no leader for a while
	require.NoError(t, cl.ElectLeader(2))
	m := nextOf[dfstream.Moved](t, s.Events(), failoverLease)
	assert.Equal(t, a.Token, m.Token)
	assert.Equal(t, cl.Addrs()[2], m.To)
	assert.True(t, m.At.Before(a.Deadline))
	require.NoError(t, s.Release(ctx))
}

func TestClusterHeldStreamIsLostWhenNoLeaderComesBeforeTheDeadline(t *testing.T) {
	t.Parallel()
	h := holdOnCluster(t, dfstream.WithLease(2*time.Second))
	cl, s, a := h.cl, h.s, h.a
	cl.StartElection()
	l := nextOf[dfstream.Lost](t, s.Events(), 5*time.Second)
	assert.ErrorIs(t, l.Reason, dfstream.ErrDeadlinePassed)
	assert.True(t, l.Final)
	assert.False(t, l.At.After(a.Deadline), "Lost %v after the safe deadline", l.At.Sub(a.Deadline))
	requireClosed(t, s.Events())
}

func TestClusterFencesRiseAcrossGrantsAndFailovers(t *testing.T) {
	t.Parallel()
	cl, c, ctx, key := onCluster(t)
	var last uint64
	for i := range 4 {
		s, err := c.Lock(ctx, key, dfstream.WithLease(failoverLease))
		require.NoError(t, err)
		a := nextOf[dfstream.Acquired](t, s.Events(), time.Second)
		assert.Equal(t, tokenFence(t, a.Token), a.Fence, "grant %d: the fence is the token's prefix", i)
		assert.Greater(t, a.Fence, last, "grant %d", i)
		last = a.Fence
		require.NoError(t, cl.Failover((i+1)%cl.Nodes()))
		m := nextOf[dfstream.Moved](t, s.Events(), 2*failoverLease)
		assert.Equal(t, a.Fence, m.Fence, "a move keeps the grant's fence")
		require.NoError(t, s.Release(ctx))
	}
}

func TestClusterExcludesWithServersAndWithSharding(t *testing.T) {
	t.Parallel()
	for name, opts := range map[string][]dfstream.Option{
		"servers after":  {dfstream.WithCluster("127.0.0.1:1"), dfstream.WithServers("127.0.0.1:2")},
		"servers before": {dfstream.WithServers("127.0.0.1:2"), dfstream.WithCluster("127.0.0.1:1")},
		"sharding":       {dfstream.WithCluster("127.0.0.1:1"), dfstream.WithSharding(dfstream.CRC32Shard)},
		"generation":     {dfstream.WithCluster("127.0.0.1:1"), dfstream.WithGeneration(dfstream.GenSignals)},
		"repeated":       {dfstream.WithCluster("127.0.0.1:1", "127.0.0.1:1")},
		"empty":          {dfstream.WithCluster()},
		"budget alone":   {dfstream.WithRedirectBudget(2)},
		"budget zero":    {dfstream.WithCluster("127.0.0.1:1"), dfstream.WithRedirectBudget(0)},
	} {
		_, err := dfstream.New(opts...)
		assert.ErrorIs(t, err, dfstream.ErrInvalidInput, name)
	}
}

func TestClusterStatsComeFromAnyMemberWithTheirRole(t *testing.T) {
	t.Parallel()
	cl := newTestCluster(t, three)
	c := clusterClient(t, cl.Addrs())
	ctx := ctxT(t, 10*time.Second)
	for i, addr := range cl.Addrs() {
		st, err := c.Stats(ctx, addr)
		require.NoError(t, err)
		require.NotNil(t, st.Cluster)
		assert.Equal(t, map[bool]string{true: "leader", false: "follower"}[i == 0], st.Cluster.Role)
		assert.Equal(t, cl.Addrs()[0], st.Cluster.LeaderAddr)
	}
	require.Equal(t, 0, cl.KillLeader())
	st, err := c.Stats(ctx, "")
	require.NoError(t, err, "a follower answers while the leader is down")
	require.NotNil(t, st.Cluster)
	assert.NotEqual(t, "leader", st.Cluster.Role)
}

func TestClusterSignalStreamEndsWithErrUnsupportedAtOnce(t *testing.T) {
	t.Parallel()
	cl := newTestCluster(t, three)
	c := clusterClient(t, cl.Addrs())
	start := time.Now()
	_, err := c.Signals(ctxT(t, 10*time.Second))
	require.ErrorIs(t, err, dfstream.ErrUnsupported)
	assert.Less(t, time.Since(start), time.Second)
	assert.Zero(t, cl.Node(0).Accepted(), "known to be 2.x: not even a connection")
}

func TestClusterHolderAndWaiterOfOneClientMoveWithoutTakingEachOthersSlot(t *testing.T) {
	t.Parallel()
	cl, c, ctx, key := onCluster(t)
	holder, err := c.Lock(ctx, key, dfstream.WithLease(failoverLease))
	require.NoError(t, err)
	a := nextOf[dfstream.Acquired](t, holder.Events(), time.Second)
	waiter := queuedLock(t, c, ctx, key, dfstream.WithLease(failoverLease), dfstream.WithAcquireTimeout(20*time.Second))
	require.NoError(t, cl.Failover(1))
	m := nextOf[dfstream.Moved](t, holder.Events(), failoverLease)
	assert.Equal(t, a.Token, m.Token)
	time.Sleep(100 * time.Millisecond) // the waiter re-queues meanwhile
	_, held := waiter.Held()
	require.False(t, held, "the waiter took the holder's slot")
	assert.Equal(t, dfstream.StateQueued, waiter.State())
	require.NoError(t, holder.Release(ctx))
	w := nextOf[dfstream.Acquired](t, waiter.Events(), 5*time.Second)
	assert.NotEqual(t, a.Token, w.Token)
	assert.Greater(t, w.Fence, a.Fence)
	require.NoError(t, waiter.Release(ctx))
}

func TestClusterSemaphoreSlotsMoveEachWithItsOwnToken(t *testing.T) {
	t.Parallel()
	cl, c, ctx, key := onCluster(t)
	var streams []*dfstream.SemStream
	tokens := map[string]bool{}
	for range 2 {
		s, err := c.AcquireSemaphore(ctx, key, 2, dfstream.WithLease(failoverLease))
		require.NoError(t, err)
		a := nextOf[dfstream.Acquired](t, s.Events(), time.Second)
		tokens[a.Token] = true
		streams = append(streams, s)
	}
	require.NoError(t, cl.Failover(2))
	for _, s := range streams {
		m := nextOf[dfstream.Moved](t, s.Events(), failoverLease)
		assert.True(t, tokens[m.Token], "its own token back")
		delete(tokens, m.Token)
	}
	for _, s := range streams {
		require.NoError(t, s.Release(ctx))
	}
}

func TestClusterReleaseAfterAMoveHandsTheKeyOnAtOnce(t *testing.T) {
	t.Parallel()
	cl := newTestCluster(t, three)
	c := clusterClient(t, cl.Addrs())
	other := clusterClient(t, cl.Addrs())
	ctx := ctxT(t, 20*time.Second)
	key := testKey(t, "k")
	s, err := c.Lock(ctx, key, dfstream.WithLease(failoverLease))
	require.NoError(t, err)
	require.NoError(t, cl.Failover(1))
	nextOf[dfstream.Acquired](t, s.Events(), time.Second)
	nextOf[dfstream.Moved](t, s.Events(), failoverLease)
	require.NoError(t, s.Release(ctx))
	start := time.Now()
	s2, err := other.Lock(ctx, key, dfstream.WithAcquireTimeout(0))
	require.NoError(t, err, "free at once, not after an orphan TTL")
	assert.Less(t, time.Since(start), time.Second)
	require.NoError(t, s2.Release(ctx))
}

func TestClusterMovesBehindASlowConsumerAreCoalesced(t *testing.T) {
	t.Parallel()
	cl := newTestCluster(t, three)
	c := clusterClient(t, cl.Addrs())
	ctx := ctxT(t, 30*time.Second)
	s, err := c.Lock(ctx, testKey(t, "k"), dfstream.WithLease(failoverLease), dfstream.WithEventBuffer(1))
	require.NoError(t, err)
	// Acquired fills the buffer: the moves wait, folded into one.
	deadline := time.Now().Add(failoverLease)
	for i := range 3 {
		require.NoError(t, cl.Failover((i+1)%3))
		to := (i + 1) % 3
		require.Eventually(t, func() bool {
			return len(cl.Node(to).Conns()) == 1 && c.Leader() == cl.Addrs()[to]
		}, failoverLease, 10*time.Millisecond)
		time.Sleep(50 * time.Millisecond)
	}
	require.True(t, time.Now().Before(deadline), "too slow a machine for this test")
	nextOf[dfstream.Acquired](t, s.Events(), time.Second)
	m := nextOf[dfstream.Moved](t, s.Events(), failoverLease) // delivered at the next renewal
	assert.Equal(t, 2, m.Coalesced)
	assert.Equal(t, cl.Addrs()[0], m.From)
	assert.Equal(t, cl.Addrs()[0], m.To, "three moves: back on node 0")
	require.NoError(t, s.Release(ctx))
}

func TestClusterCloseDuringAnElectionEndsTheStreamAtOnce(t *testing.T) {
	t.Parallel()
	h := holdOnCluster(t, dfstream.WithLease(20*time.Second))
	h.cl.StartElection() // and no leader comes: the stream keeps looking
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	require.NoError(t, h.s.Close())
	assert.Less(t, time.Since(start), 5*time.Second, "not when the move runs out of time (18s)")
	l := nextOf[dfstream.Lost](t, h.s.Events(), time.Second)
	assert.True(t, l.Final, "the release could not be sent")
	assert.ErrorIs(t, l.Reason, dfstream.ErrConnLost)
	requireClosed(t, h.s.Events())
}

func TestClusterQueuedStreamKeepsItsPlaceWhenTheLeaderIsKilled(t *testing.T) {
	t.Parallel()
	cl, c, ctx, key := onCluster(t)
	holder, err := c.Lock(ctx, key, dfstream.WithLease(failoverLease))
	require.NoError(t, err)
	waiter := queuedLock(t, c, ctx, key, dfstream.WithLease(failoverLease), dfstream.WithAcquireTimeout(20*time.Second))
	require.Equal(t, 0, cl.KillLeader())
	time.Sleep(100 * time.Millisecond)
	require.NoError(t, cl.ElectLeader(1))
	nextOf[dfstream.Acquired](t, holder.Events(), time.Second)
	nextOf[dfstream.Moved](t, holder.Events(), failoverLease)
	require.Eventually(t, func() bool {
		st, err := c.Stats(ctx, cl.Addrs()[1])
		waiters, held := lockHolder(st, key)
		return err == nil && held && waiters == 1
	}, 5*time.Second, 10*time.Millisecond, "the waiter's place, and no second one")
	require.NoError(t, holder.Release(ctx))
	nextOf[dfstream.Acquired](t, waiter.Events(), 5*time.Second)
	require.NoError(t, waiter.Release(ctx))
}

func TestClusterHeldStreamIsLostWhenTheSteppedDownLeaderReleasedItsSlot(t *testing.T) {
	t.Parallel()
	cl := newTestCluster(t, dflockdtest.ClusterConfig{Nodes: 3, OrphanTTL: -1}) // no orphans
	c := clusterClient(t, cl.Addrs())
	ctx := ctxT(t, 20*time.Second)
	key := testKey(t, "k")
	s, err := c.Lock(ctx, key, dfstream.WithLease(failoverLease))
	require.NoError(t, err)
	nextOf[dfstream.Acquired](t, s.Events(), time.Second)
	require.NoError(t, cl.Failover(1))
	l := nextOf[dfstream.Lost](t, s.Events(), failoverLease)
	assert.ErrorIs(t, l.Reason, dfstream.ErrLeaseExpired, "the re-attach found the slot gone")
	assert.True(t, l.Final)
	requireClosed(t, s.Events())
	// The grant the re-attach was given instead went back at once.
	other, err := c.TryLock(ctx, key)
	require.NoError(t, err)
	require.NoError(t, other.Release(ctx))
}

func TestClusterRenewalAnsweredNotLeaderMovesTheStream(t *testing.T) {
	t.Parallel()
	h := holdOnCluster(t, dfstream.WithLease(2*time.Second))
	require.NoError(t, h.cl.Transfer(2)) // node 0 keeps the connection, and answers not-leader
	m := nextOf[dfstream.Moved](t, h.s.Events(), 2*time.Second)
	assert.Equal(t, h.a.Token, m.Token)
	assert.Equal(t, h.cl.Addrs()[2], m.To)
	assert.True(t, m.At.Before(h.a.Deadline))
	assert.Eventually(t, func() bool { return len(h.cl.Node(0).Conns()) == 0 }, 5*time.Second, 10*time.Millisecond,
		"the old connection was closed: one live connection per ref")
	require.NoError(t, h.s.Release(h.ctx))
}

func TestClusterReleaseAnsweredNotLeaderReleasesOnTheNewLeader(t *testing.T) {
	t.Parallel()
	h := holdOnCluster(t)
	require.NoError(t, h.cl.Transfer(1))
	require.NoError(t, h.s.Release(h.ctx))
	nextOf[dfstream.Released](t, h.s.Events(), time.Second)
	other, err := h.c.TryLock(h.ctx, testKey(t, "k"))
	require.NoError(t, err, "released on node 1, not left to its lease")
	require.NoError(t, other.Release(h.ctx))
}

func TestClusterMemberWithoutStableRefsFailsWithErrUnsupported(t *testing.T) {
	t.Parallel()
	if os.Getenv("DFLOCKD_TEST_ADDR") != "" {
		t.Skip("needs a server without stable refs")
	}
	addr, _ := testServer(t, dflockdtest.Config{}) // signals era: stable-ref is an unknown command
	c := clusterClient(t, []string{addr})
	_, err := c.Lock(ctxT(t, 10*time.Second), testKey(t, "k"))
	require.ErrorIs(t, err, dfstream.ErrUnsupported)
	var ue *dfstream.UnsupportedError
	require.ErrorAs(t, err, &ue)
	assert.Equal(t, addr, ue.Server)
	assert.Equal(t, "stable refs", ue.Feature)
}

func TestClusterMoveDoesNotWaitOnASilentMemberPastTheDeadline(t *testing.T) {
	t.Parallel()
	cl := newTestCluster(t, three)
	silent := newSilentListener(t) // accepts, never answers
	c := clusterClient(t, []string{cl.Addrs()[0], cl.Addrs()[1], silent.Addr()})
	ctx := ctxT(t, 30*time.Second)
	s, err := c.Lock(ctx, testKey(t, "k"), dfstream.WithLease(2*time.Second))
	require.NoError(t, err)
	a := nextOf[dfstream.Acquired](t, s.Events(), time.Second)
	cl.StartElection() // node 1 answers no leader; the move goes on to the silent member
	l := nextOf[dfstream.Lost](t, s.Events(), 15*time.Second)
	assert.ErrorIs(t, l.Reason, dfstream.ErrDeadlinePassed)
	assert.False(t, l.At.After(a.Deadline), "Lost %v after the safe deadline", l.At.Sub(a.Deadline))
}

func TestClusterReacquireAfterALostMoveReadoptsItsOwnSlot(t *testing.T) {
	t.Parallel()
	cl := newTestCluster(t, three)
	c := clusterClient(t, cl.Addrs()[:1]) // one member: the pool is always its
	ctx := ctxT(t, 30*time.Second)
	s, err := c.StartLock(ctx, testKey(t, "k"), dfstream.WithLease(2*time.Second),
		dfstream.WithReacquire(50*time.Millisecond, 100*time.Millisecond))
	require.NoError(t, err)
	a := nextOf[dfstream.Acquired](t, s.Events(), time.Second)
	cl.StartElection() // the slot is orphaned; no leader before the deadline
	_, err = c.Stats(ctx, "")
	require.NoError(t, err, "a pooled connection, with a ref of its own")
	l := nextOf[dfstream.Lost](t, s.Events(), 5*time.Second)
	require.False(t, l.Final)
	require.NoError(t, cl.ElectLeader(0))
	again := nextOf[dfstream.Acquired](t, s.Events(), 5*time.Second) // not after the orphan TTL
	assert.Equal(t, a.Token, again.Token, "its own orphaned slot, re-adopted")
	require.NoError(t, s.Close())
}

func TestClusterWaiterClosedByItsUserLeavesNoOrphanInTheQueue(t *testing.T) {
	t.Parallel()
	_, c, ctx, key := onCluster(t)
	holder, err := c.Lock(ctx, key, dfstream.WithLease(failoverLease))
	require.NoError(t, err)
	waiter := queuedLock(t, c, ctx, key, dfstream.WithAcquireTimeout(20*time.Second))
	time.Sleep(50 * time.Millisecond) // blocked in its wait by now, most likely
	start := time.Now()
	require.NoError(t, waiter.Close())
	assert.Less(t, time.Since(start), 3*time.Second)
	require.NoError(t, holder.Release(ctx))
	next, err := c.TryLock(ctx, key)
	require.NoError(t, err, "the closed waiter's place was withdrawn, not orphaned")
	require.NoError(t, next.Release(ctx))
}

// A re-attach that finds the slot gone gives back the grant it got
// instead before it reports Lost. When the new leader is slow to answer
// that, the Lost must still come no later than the hold's Deadline.
func TestClusterLostAfterAFailedReattachIsNotLateWhenTheLeaderIsSlowToAnswer(t *testing.T) {
	t.Parallel()
	cl := newTestCluster(t, dflockdtest.ClusterConfig{Nodes: 2, OrphanTTL: -1}) // the slot goes with its leader
	links := []*faultproxy.Proxy{faultproxy.New(t, cl.Addrs()[0]), faultproxy.New(t, cl.Addrs()[1])}
	c := clusterClient(t, []string{links[0].Addr(), links[1].Addr()},
		dfstream.WithGeneration(dfstream.Gen2), dfstream.WithConnectTimeout(10*time.Second))
	ctx := ctxT(t, 20*time.Second)

	// Lease 4 s, margin 400 ms: Deadline 3.6 s after the grant, Lost due
	// 250 ms before it. Replies from node 1 take 1.4 s each: the stable-ref
	// and the re-attach's enqueue come back by about 2.9 s, inside the
	// hold; the give-back's reply would not come before 4.3 s.
	s, err := c.StartLock(ctx, testKey(t, "k"), dfstream.WithLease(4*time.Second), dfstream.WithSafetyMargin(400*time.Millisecond))
	require.NoError(t, err)
	a := nextOf[dfstream.Acquired](t, s.Events(), 5*time.Second)
	links[1].SetLatency(faultproxy.ToClient, 1400*time.Millisecond)
	require.NoError(t, cl.Failover(1))

	l := nextOf[dfstream.Lost](t, s.Events(), 10*time.Second)
	assert.False(t, l.At.After(a.Deadline), "Lost %v after the Deadline", l.At.Sub(a.Deadline))
}
