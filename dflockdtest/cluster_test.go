package dflockdtest_test

// Conformance of the in-process 2.x cluster (protocol-v2.md §6, §7). The
// leadership helpers need the embedded cluster, so these tests do not run
// against an external server.

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dfstream/dfstream/dflockdtest"
)

// clusterEnv is a started cluster and one env per node.
type clusterEnv struct {
	cl    *dflockdtest.Cluster
	nodes []*env
}

func newClusterEnv(t *testing.T, cfg dflockdtest.ClusterConfig) *clusterEnv {
	t.Helper()
	needLocal(t, "the cluster helpers need the embedded cluster")
	cl := dflockdtest.NewCluster(t, cfg)
	ce := &clusterEnv{cl: cl}
	lease := int64(rfDefaultLease)
	if cfg.Node.DefaultLease > 0 {
		lease = int64(cfg.Node.DefaultLease / time.Second)
	}
	for i := 0; i < cl.Nodes(); i++ {
		ce.nodes = append(ce.nodes, &env{addr: cl.Node(i).Addr(), srv: cl.Node(i), token: cfg.Node.AuthToken,
			noFences: true, defaultLease: lease})
	}
	return ce
}

// refOf is a stable ref unique to the test and parts: 34 bytes, whatever
// the test's name.
func refOf(t testing.TB, parts ...string) string {
	sum := sha256.Sum256([]byte(key(t, parts...)))
	return "r-" + hex.EncodeToString(sum[:16])
}

// dialRef dials node i and presents ref.
func (ce *clusterEnv) dialRef(t *testing.T, i int, ref string) *rawConn {
	t.Helper()
	c := ce.nodes[i].dial(t)
	require.Equal(t, "ok", c.do("stable-ref", ref, "_"))
	return c
}

type clusterStat struct {
	NodeID        string   `json:"node_id"`
	Role          string   `json:"role"`
	Term          uint64   `json:"term"`
	LeaderID      string   `json:"leader_id"`
	LeaderAddr    *string  `json:"leader_addr"`
	CommitIndex   uint64   `json:"commit_index"`
	LastLogIndex  uint64   `json:"last_log_index"`
	SnapshotIndex uint64   `json:"snapshot_index"`
	Voters        []string `json:"voters"`
}

// clusterStats returns the stats cluster object of the node c is on.
func clusterStats(t testing.TB, c *rawConn) clusterStat {
	t.Helper()
	var doc struct {
		Cluster *clusterStat `json:"cluster"`
	}
	st := c.stats()
	require.NoError(t, json.Unmarshal([]byte(st.JSON), &doc))
	require.NotNil(t, doc.Cluster, "stats without a cluster object: %s", st.JSON)
	return *doc.Cluster
}

// leaderCommands are the commands a follower redirects, with valid args.
var leaderCommands = [][2]string{
	{"l", "0"}, {"sl", "0 2"}, {"e", ""}, {"se", "2"}, {"w", "0"}, {"sw", "0"},
	{"r", "0123456789abcdef0123456789abcdef"}, {"sr", "0123456789abcdef0123456789abcdef"},
	{"n", "0123456789abcdef0123456789abcdef"}, {"sn", "0123456789abcdef0123456789abcdef"},
	{"barrier", "_"},
}

func TestClusterFollowersAnswerNotLeaderWithLeaderAddress(t *testing.T) {
	t.Parallel()
	ce := newClusterEnv(t, dflockdtest.ClusterConfig{})
	for _, i := range []int{1, 2} {
		c := ce.nodes[i].dial(t)
		for _, ca := range leaderCommands {
			require.Equal(t, "error_not_leader "+ce.nodes[0].addr, c.do(ca[0], key(t), ca[1]), "%s on node %d", ca[0], i)
		}
	}
	assert.Empty(t, ce.cl.Node(1).Stats()["locks"], "nothing was done on a follower's say")
}

func TestClusterFollowersServePingStatsAndStableRefThemselves(t *testing.T) {
	t.Parallel()
	ce := newClusterEnv(t, dflockdtest.ClusterConfig{})
	c := ce.nodes[2].dial(t)
	require.Equal(t, "ok", c.do("ping", "_", "_"))
	require.Equal(t, "ok", c.do("stable-ref", refOf(t), "_"))
	require.Equal(t, "error", c.do("stable-ref", refOf(t), "_"), "once per connection on a follower too")
	st := c.stats()
	assert.Equal(t, 1, st.Connections, "the follower's own connections")
	assert.Equal(t, "follower", clusterStats(t, c).Role)
}

func TestClusterFollowerServesAuthItself(t *testing.T) {
	t.Parallel()
	ce := newClusterEnv(t, dflockdtest.ClusterConfig{Node: dflockdtest.Config{AuthToken: localToken}})
	c := ce.nodes[1].dialRaw(t)
	require.Equal(t, "ok", c.do("auth", "_", localToken))
	require.Equal(t, "error_not_leader "+ce.nodes[0].addr, c.do("l", key(t), "0"))
	d := ce.nodes[1].dialRaw(t)
	require.Equal(t, "error_auth", d.do("l", key(t), "0"), "auth before not-leader")
	d.expectEOF(replyWait)
}

func TestClusterLeaderGrantsAndAllNodesShowTheSameTable(t *testing.T) {
	t.Parallel()
	ce := newClusterEnv(t, dflockdtest.ClusterConfig{})
	k := key(t)
	c := ce.nodes[0].dial(t)
	ce.nodes[0].lock(t, c, k, "0 20")
	for i := range ce.nodes {
		st := ce.nodes[i].dial(t).stats()
		assert.NotNil(t, st.lock(k), "node %d lists the lock", i)
		assert.NotContains(t, st.JSON, "signal_channels")
	}
	require.Equal(t, "ok", c.do("barrier", "_", "_"))
}

func TestClusterStatsCarryClusterObjectOnEveryNode(t *testing.T) {
	t.Parallel()
	ce := newClusterEnv(t, dflockdtest.ClusterConfig{})
	ids := []string{"node0", "node1", "node2"}
	var before uint64
	for i := range ce.nodes {
		c := ce.nodes[i].dial(t)
		cs := clusterStats(t, c)
		assert.Equal(t, ids[i], cs.NodeID)
		assert.Equal(t, map[bool]string{true: "leader", false: "follower"}[i == 0], cs.Role)
		assert.Equal(t, uint64(1), cs.Term)
		assert.Equal(t, "node0", cs.LeaderID)
		require.NotNil(t, cs.LeaderAddr)
		assert.Equal(t, ce.nodes[0].addr, *cs.LeaderAddr)
		assert.Equal(t, ids, cs.Voters)
		assert.Equal(t, cs.CommitIndex, cs.LastLogIndex)
		before = cs.CommitIndex
	}
	c := ce.nodes[0].dial(t)
	ce.nodes[0].lock(t, c, key(t), "0")
	assert.Greater(t, clusterStats(t, c).CommitIndex, before, "a write is a log entry")
	_, raw := topKeys(t, c.stats().JSON)
	assert.Contains(t, raw, "cluster")
}

func TestClusterElectionWindowAnswersBareNotLeaderEverywhere(t *testing.T) {
	t.Parallel()
	ce := newClusterEnv(t, dflockdtest.ClusterConfig{})
	old := ce.nodes[0].dial(t)
	require.Equal(t, "ok", old.do("ping", "_", "_"), "the connection is open on the server's side")
	ce.cl.StartElection()
	old.expectEOF(replyWait)
	assert.Equal(t, -1, ce.cl.Leader())
	for i := range ce.nodes {
		c := ce.nodes[i].dial(t)
		for _, ca := range leaderCommands {
			require.Equal(t, "error_not_leader", c.do(ca[0], key(t), ca[1]), "%s on node %d during the election", ca[0], i)
		}
		cs := clusterStats(t, c)
		assert.Equal(t, "candidate", cs.Role)
		assert.Nil(t, cs.LeaderAddr, "leader_addr is omitted when unknown")
		assert.Empty(t, cs.LeaderID)
		assert.Equal(t, uint64(2), cs.Term)
	}
	require.NoError(t, ce.cl.ElectLeader(2))
	c := ce.nodes[2].dial(t)
	ce.nodes[2].lock(t, c, key(t), "0")
	assert.Equal(t, "error_not_leader "+ce.nodes[2].addr, ce.nodes[0].dial(t).do("l", key(t), "0"))
	assert.Equal(t, "leader", clusterStats(t, c).Role)
}

func TestClusterFencesRiseAcrossFailovers(t *testing.T) {
	t.Parallel()
	ce := newClusterEnv(t, dflockdtest.ClusterConfig{})
	var toks []string
	for i := 0; i < 6; i++ {
		l := i % 3
		require.NoError(t, ce.cl.Failover(l))
		c := ce.nodes[l].dial(t)
		toks = append(toks, ce.nodes[l].lock(t, c, key(t), "0").Token)
		toks = append(toks, ce.nodes[l].lock(t, c, key(t, strconv.Itoa(i)), "0").Token)
		c.close()
	}
	requireRising(t, toks...)
	assert.Equal(t, uint64(7), ce.cl.Term(), "one term per failover")
}

func TestClusterReattachAfterFailoverGivesSameTokenWithRenewedLease(t *testing.T) {
	t.Parallel()
	ce := newClusterEnv(t, dflockdtest.ClusterConfig{})
	ref, k := refOf(t), key(t)
	a := ce.dialRef(t, 0, ref)
	g := ce.nodes[0].lock(t, a, k, "0 5")
	require.NoError(t, ce.cl.Failover(1))
	a.expectEOF(replyWait)

	b := ce.dialRef(t, 1, ref)
	line := b.do("l", k, "0 20")
	require.Equal(t, "ok "+g.Token+" 20", line, "the same token, the new lease")
	l := mustLock(t, b.stats(), k)
	assert.InDelta(t, 20, l.LeaseExpiresInS, 5, "the lease was renewed")
	require.Equal(t, "ok 7", b.do("n", k, g.Token+" 7"))
	require.Equal(t, "ok", b.do("r", k, g.Token))
}

func TestClusterReattachByEnqueueAnswersAcquiredSameTokenThenWaitCollects(t *testing.T) {
	t.Parallel()
	ce := newClusterEnv(t, dflockdtest.ClusterConfig{})
	ref, k := refOf(t), key(t)
	a := ce.dialRef(t, 0, ref)
	g := ce.nodes[0].grant(t, a.do("se", k, "2 5"), "acquired")
	require.NoError(t, ce.cl.Failover(2))
	b := ce.dialRef(t, 2, ref)
	require.Equal(t, "acquired "+g.Token+" 9", b.do("se", k, "2 9"))
	require.Equal(t, "ok "+g.Token+" 9", b.do("sw", k, "1"))
}

func TestClusterWaitersKeepTheirFIFOPlacesAcrossFailover(t *testing.T) {
	t.Parallel()
	ce := newClusterEnv(t, dflockdtest.ClusterConfig{})
	k := key(t)
	ref := func(i int) string { return refOf(t, strconv.Itoa(i)) }
	h := ce.dialRef(t, 0, ref(0))
	hg := ce.nodes[0].lock(t, h, k, "0 30")
	// Three waiters, in order: two-phase, blocking, two-phase.
	w1 := ce.dialRef(t, 0, ref(1))
	require.Equal(t, "queued", w1.do("e", k, "30"))
	w2 := ce.dialRef(t, 0, ref(2))
	w2.req("l", k, "30 30")
	waitWaiters(t, ce.nodes[0].dial(t), k, 2)
	w3 := ce.dialRef(t, 0, ref(3))
	require.Equal(t, "queued", w3.do("e", k, "30"))

	require.NoError(t, ce.cl.Failover(1))
	n := ce.nodes[1]
	obs := n.dial(t)
	require.Equal(t, 3, obs.stats().waiters(k), "orphaned waiters keep their places")
	// They come back in reverse order; their places do not change.
	w3 = ce.dialRef(t, 1, ref(3))
	require.Equal(t, "queued", w3.do("e", k, "30"))
	w2 = ce.dialRef(t, 1, ref(2))
	w2.req("l", k, "30 30")
	w1 = ce.dialRef(t, 1, ref(1))
	require.Equal(t, "queued", w1.do("e", k, "30"))
	require.Equal(t, 3, obs.stats().waiters(k), "re-attached, not queued again")
	w1.req("w", k, "30")
	w3.req("w", k, "30")
	h = ce.dialRef(t, 1, ref(0))
	require.Equal(t, "ok "+hg.Token+" 30", h.do("l", k, "0 30"))
	require.Equal(t, "ok", h.do("r", k, hg.Token))

	g1 := n.grant(t, w1.reply(), "ok")
	expectSilenceAll(quiet, w2, w3)
	require.Equal(t, "ok", w1.do("r", k, g1.Token))
	g2 := n.grant(t, w2.reply(), "ok")
	w3.expectSilence(quiet)
	require.Equal(t, "ok", w2.do("r", k, g2.Token))
	g3 := n.grant(t, w3.reply(), "ok")
	requireRising(t, hg.Token, g1.Token, g2.Token, g3.Token)
}

func TestClusterLiveConnectionSlotIsNeverTakenOver(t *testing.T) {
	t.Parallel()
	ce := newClusterEnv(t, dflockdtest.ClusterConfig{})
	ref, k := refOf(t), key(t)
	a := ce.dialRef(t, 0, ref)
	g := ce.nodes[0].lock(t, a, k, "0")
	b := ce.dialRef(t, 0, ref)
	require.Equal(t, "timeout", b.do("l", k, "0"), "the same ref on a live owner's node queues as usual")
	require.Equal(t, "queued", b.do("e", k, ""))
	require.Equal(t, "ok", a.do("r", k, g.Token))
	next := ce.nodes[0].grant(t, b.do("w", k, "5"), "ok")
	assert.NotEqual(t, g.Token, next.Token)
}

func TestClusterReattachNeedsTheSameRefAndKey(t *testing.T) {
	t.Parallel()
	ce := newClusterEnv(t, dflockdtest.ClusterConfig{})
	ref, k := refOf(t), key(t)
	a := ce.dialRef(t, 0, ref)
	g := ce.nodes[0].lock(t, a, k, "0")
	require.NoError(t, ce.cl.Failover(1))
	other := ce.dialRef(t, 1, refOf(t, "other"))
	require.Equal(t, "timeout", other.do("l", k, "0"), "another ref waits for the orphan")
	noRef := ce.nodes[1].dial(t)
	require.Equal(t, "timeout", noRef.do("l", k, "0"), "no ref waits for the orphan")
	same := ce.dialRef(t, 1, ref)
	g2 := ce.nodes[1].lock(t, same, key(t, "other-key"), "0")
	assert.NotEqual(t, g.Token, g2.Token, "another key is a new grant")
	require.Equal(t, "ok "+g.Token+" 33", same.do("l", k, "0"))
}

func TestClusterUntaggedSlotsAreReleasedOnFailover(t *testing.T) {
	t.Parallel()
	ce := newClusterEnv(t, dflockdtest.ClusterConfig{})
	k := key(t)
	a := ce.nodes[0].dial(t)
	ce.nodes[0].lock(t, a, k, "0 60")
	require.NoError(t, ce.cl.Failover(1))
	b := ce.nodes[1].dial(t)
	ce.nodes[1].lock(t, b, k, "0")
}

func TestClusterTokensStayValidForRenewAndReleaseAfterFailover(t *testing.T) {
	t.Parallel()
	ce := newClusterEnv(t, dflockdtest.ClusterConfig{})
	ref, k := refOf(t), key(t)
	a := ce.dialRef(t, 0, ref)
	g := ce.nodes[0].lock(t, a, k, "0")
	require.NoError(t, ce.cl.Failover(2))
	b := ce.nodes[2].dial(t)
	require.Equal(t, "ok 15", b.do("n", k, g.Token+" 15"), "renewed by token on a connection without a ref")
	require.Equal(t, "ok", b.do("r", k, g.Token))
	ce.nodes[2].lock(t, b, k, "0")
}

func TestClusterOrphanIsReleasedAfterOrphanTTL(t *testing.T) {
	t.Parallel()
	ce := newClusterEnv(t, dflockdtest.ClusterConfig{OrphanTTL: time.Second,
		Node: dflockdtest.Config{LeaseSweepInterval: 50 * time.Millisecond}})
	ref, k := refOf(t), key(t)
	a := ce.dialRef(t, 0, ref)
	ce.nodes[0].lock(t, a, k, "0 600")
	require.NoError(t, ce.cl.Failover(1))
	b := ce.nodes[1].dial(t)
	require.Equal(t, "timeout", b.do("l", k, "0"), "an orphan still holds")
	start := time.Now()
	ce.nodes[1].lock(t, b, k, "10")
	between(t, time.Since(start), 0, 8*time.Second, "the orphan's release after a 1 s orphan TTL")
}

func TestClusterWithoutOrphanTTLTaggedSlotsAreReleasedOnFailover(t *testing.T) {
	t.Parallel()
	ce := newClusterEnv(t, dflockdtest.ClusterConfig{OrphanTTL: -1})
	ref, k := refOf(t), key(t)
	a := ce.dialRef(t, 0, ref)
	g := ce.nodes[0].lock(t, a, k, "0")
	require.NoError(t, ce.cl.Failover(1))
	b := ce.dialRef(t, 1, ref)
	assert.NotEqual(t, g.Token, ce.nodes[1].lock(t, b, k, "0").Token)
}

func TestClusterKillLeaderKeepsSlotsForReattachUntilTheirLeaseEnds(t *testing.T) {
	t.Parallel()
	ce := newClusterEnv(t, dflockdtest.ClusterConfig{Node: dflockdtest.Config{LeaseSweepInterval: 50 * time.Millisecond}})
	ref, k, ku := refOf(t), key(t), key(t, "untagged")
	a := ce.dialRef(t, 0, ref)
	g := ce.nodes[0].lock(t, a, k, "0 60")
	u := ce.nodes[0].dial(t)
	ce.nodes[0].lock(t, u, ku, "0 1")
	require.Equal(t, 0, ce.cl.KillLeader())
	a.expectEOF(replyWait)
	_, err := ce.nodes[0].tryDial()
	require.Error(t, err, "the killed node does not listen")
	require.Equal(t, "error_not_leader", ce.nodes[1].dial(t).do("l", k, "0"))
	require.ErrorIs(t, ce.cl.ElectLeader(0), dflockdtest.ErrNodeDown)
	require.NoError(t, ce.cl.ElectLeader(1))

	c := ce.nodes[1].dial(t)
	require.Equal(t, "timeout", c.do("l", ku, "0"), "no clean-up: the untagged slot is held until its lease ends")
	ce.nodes[1].lock(t, c, ku, "10")
	b := ce.dialRef(t, 1, ref)
	require.Equal(t, "ok "+g.Token+" 60", b.do("l", k, "0 60"), "a dead process's slot is re-adopted")
}

func TestClusterKillLeaderWaiterReattachesOnNewLeader(t *testing.T) {
	t.Parallel()
	ce := newClusterEnv(t, dflockdtest.ClusterConfig{})
	k := key(t)
	h := ce.dialRef(t, 0, refOf(t, "h"))
	g := ce.nodes[0].lock(t, h, k, "0 60")
	w := ce.dialRef(t, 0, refOf(t, "w"))
	w.req("l", k, "30")
	waitWaiters(t, ce.nodes[0].dial(t), k, 1)
	ce.cl.KillLeader()
	require.NoError(t, ce.cl.ElectLeader(2))
	late := ce.nodes[2].dial(t)
	require.Equal(t, "queued", late.do("e", k, ""))
	w = ce.dialRef(t, 2, refOf(t, "w"))
	w.req("l", k, "30")
	h = ce.dialRef(t, 2, refOf(t, "h"))
	require.Equal(t, "ok "+g.Token+" 60", h.do("l", k, "0 60"))
	require.Equal(t, "ok", h.do("r", k, g.Token))
	gw := ce.nodes[2].grant(t, w.reply(), "ok")
	late.expectSilence(quiet)
	require.Equal(t, "ok", w.do("r", k, gw.Token))
	ce.nodes[2].grant(t, late.do("w", k, "5"), "ok")
}

func TestClusterRenewRebindsTheSlotToTheRenewingConnection(t *testing.T) {
	t.Parallel()
	ce := newClusterEnv(t, dflockdtest.ClusterConfig{})
	k := key(t)
	a := ce.dialRef(t, 0, refOf(t))
	g := ce.nodes[0].lock(t, a, k, "0")
	b := ce.nodes[0].dial(t)
	require.Equal(t, "ok 30", b.do("n", k, g.Token+" 30"))
	a.close()
	obs := ce.nodes[0].dial(t)
	waitStats(t, obs, replyWait, "a's connection gone", func(s statsDoc) bool { return s.Connections == 2 })
	require.NotNil(t, mustLock(t, obs.stats(), k), "a's close does not release what b renewed")
	b.close()
	waitStats(t, obs, replyWait, "released with b", func(s statsDoc) bool { return s.lock(k) == nil })
}

func TestClusterNodeAddressesAreDistinct(t *testing.T) {
	t.Parallel()
	ce := newClusterEnv(t, dflockdtest.ClusterConfig{Nodes: 5})
	addrs := ce.cl.Addrs()
	require.Len(t, addrs, 5)
	seen := map[string]bool{}
	for _, a := range addrs {
		require.False(t, seen[a], "%s twice", a)
		seen[a] = true
		require.True(t, strings.HasPrefix(a, "127.0.0.1:"))
	}
}

func TestClusterFailoverToAKilledNodeIsRefused(t *testing.T) {
	t.Parallel()
	ce := newClusterEnv(t, dflockdtest.ClusterConfig{})
	require.Equal(t, 0, ce.cl.KillLeader())
	require.ErrorIs(t, ce.cl.Failover(0), dflockdtest.ErrNodeDown)
	assert.Equal(t, -1, ce.cl.Leader())
	require.NoError(t, ce.cl.Failover(1))
	assert.Equal(t, 1, ce.cl.Leader())
}

func TestClusterDroppedConnectionReattachesOnTheSameLeader(t *testing.T) {
	t.Parallel()
	ce := newClusterEnv(t, dflockdtest.ClusterConfig{})
	ref, k := refOf(t), key(t)
	a := ce.dialRef(t, 0, ref)
	g := ce.nodes[0].lock(t, a, k, "0")
	a.close()
	obs := ce.nodes[0].dial(t)
	waitStats(t, obs, replyWait, "a's connection gone", func(s statsDoc) bool { return s.Connections == 1 })
	require.Equal(t, "timeout", obs.do("l", k, "0"), "the orphan still holds")
	b := ce.dialRef(t, 0, ref)
	require.Equal(t, "ok "+g.Token+" 33", b.do("l", k, "0"))
}

func TestClusterHeldSlotSurvivesTwentyFailoversWithTheSameToken(t *testing.T) {
	t.Parallel()
	ce := newClusterEnv(t, dflockdtest.ClusterConfig{})
	ref, k := refOf(t), key(t)
	c := ce.dialRef(t, 0, ref)
	g := ce.nodes[0].lock(t, c, k, "0 10")
	other := []string{g.Token}
	for i := 1; i <= 20; i++ {
		l := i % 3
		require.NoError(t, ce.cl.Failover(l))
		c.expectEOF(replyWait)
		c = ce.dialRef(t, l, ref)
		require.Equal(t, "ok "+g.Token+" 10", c.do("l", k, "0 10"), "failover %d", i)
		other = append(other, ce.nodes[l].lock(t, c, key(t, strconv.Itoa(i)), "0").Token)
	}
	requireRising(t, other...)
	assert.Equal(t, uint64(21), ce.cl.Term())
}

func TestClusterKilledNodeRestartsAsAFollowerOfANewIncarnation(t *testing.T) {
	t.Parallel()
	ce := newClusterEnv(t, dflockdtest.ClusterConfig{})
	ref, k := refOf(t), key(t)
	addr0 := ce.cl.Node(0).Addr()
	a := ce.dialRef(t, 0, ref)
	g := ce.nodes[0].lock(t, a, k, "0 60")
	require.ErrorIs(t, ce.cl.RestartNode(0), dflockdtest.ErrNodeUp)
	ce.cl.KillLeader()
	require.NoError(t, ce.cl.ElectLeader(1))
	require.NoError(t, ce.cl.RestartNode(0))
	require.Equal(t, addr0, ce.cl.Node(0).Addr(), "the same address")
	ce.nodes[0].srv = ce.cl.Node(0)
	c := ce.nodes[0].dial(t)
	require.Equal(t, "error_not_leader "+ce.nodes[1].addr, c.do("l", k, "0"))
	assert.Equal(t, "follower", clusterStats(t, c).Role)

	require.NoError(t, ce.cl.Failover(0))
	b := ce.dialRef(t, 0, ref)
	require.Equal(t, "ok "+g.Token+" 60", b.do("l", k, "0 60"), "the old incarnation's slot is re-adopted on the new one")
}

func TestClusterSurvivesRepeatedLeaderKillsWithRestarts(t *testing.T) {
	t.Parallel()
	ce := newClusterEnv(t, dflockdtest.ClusterConfig{})
	ref, k := refOf(t), key(t)
	c := ce.dialRef(t, 0, ref)
	g := ce.nodes[0].lock(t, c, k, "0 30")
	for i := 1; i <= 10; i++ {
		killed := ce.cl.KillLeader()
		next := (killed + 1) % 3
		require.NoError(t, ce.cl.ElectLeader(next))
		require.NoError(t, ce.cl.RestartNode(killed))
		c = ce.dialRef(t, next, ref)
		require.Equal(t, "ok "+g.Token+" 30", c.do("l", k, "0 30"), "kill %d", i)
	}
	assert.Equal(t, uint64(11), ce.cl.Term())
}

func TestClusterTransferKeepsConnectionsAndTheOldLeaderAnswersNotLeader(t *testing.T) {
	t.Parallel()
	ce := newClusterEnv(t, dflockdtest.ClusterConfig{})
	ref, k := refOf(t), key(t)
	a := ce.dialRef(t, 0, ref)
	g := ce.nodes[0].lock(t, a, k, "0 5")
	require.NoError(t, ce.cl.Transfer(2))
	assert.Equal(t, 2, ce.cl.Leader())
	assert.Equal(t, uint64(2), ce.cl.Term())
	require.Equal(t, "error_not_leader "+ce.nodes[2].addr, a.do("n", k, g.Token+" 5"), "still connected, no longer leading")
	b := ce.dialRef(t, 2, ref)
	require.Equal(t, "ok "+g.Token+" 5", b.do("l", k, "0 5"), "the slot of another node's connection is re-adopted")
	require.Equal(t, "ok", b.do("r", k, g.Token))
}

func TestClusterBlockedWaitWhoseClientClosesIsOrphanedAtOnce(t *testing.T) {
	t.Parallel()
	ce := newClusterEnv(t, dflockdtest.ClusterConfig{})
	ref, k := refOf(t), key(t)
	h := ce.nodes[0].dial(t)
	ce.nodes[0].lock(t, h, k, "0 30")
	a := ce.dialRef(t, 0, ref)
	require.Equal(t, "queued", a.do("e", k, "30"))
	a.req("w", k, "30")
	obs := ce.nodes[0].dial(t)
	waitWaiters(t, obs, k, 1)
	a.close() // while the server blocks in the wait
	waitStats(t, obs, replyWait, "a's connection cleaned up", func(s statsDoc) bool { return s.Connections == 2 })
	b := ce.dialRef(t, 0, ref)
	require.Equal(t, "queued", b.do("e", k, "30"))
	require.Equal(t, 1, obs.stats().waiters(k), "the orphaned place, re-adopted at once: not a second one")
	require.Equal(t, "timeout", b.do("w", k, "0"))
	require.Equal(t, 0, obs.stats().waiters(k), "withdrawn")
}
