package dflockdtest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// ClusterConfig configures StartCluster.
type ClusterConfig struct {
	Nodes int    // default 3
	Node  Config // every node's settings; Generation is always Gen2
	// Addrs are the nodes' listen addresses, one per node; nil: Node.Addr
	// for every node (default "127.0.0.1:0", a random port each).
	Addrs []string
	// OrphanTTL is how long a slot tagged with a stable ref waits for a
	// re-attach after its connection was cleaned up on the leader (the
	// server's --orphan-ttl). Default 30s; negative: off, such slots are
	// released like the others.
	OrphanTTL time.Duration
}

// Cluster is an in-process 2.x Raft cluster as a client sees it
// (protocol-v2.md §7): Nodes() nodes, each a Server with its own listener,
// sharing one lock table and one fence counter, one of them the leader.
//
// The leader serves every command. Followers answer
// `error_not_leader <leader addr>` (bare `error_not_leader` while no leader
// is known) to l, sl, e, se, w, sw, r, sr, n, sn and barrier, and serve ping,
// stats, auth and stable-ref themselves. Stats on every node carry the
// cluster object. A slot acquired on a connection that presented a stable
// ref is tagged with it; when the leader cleans that connection up (it
// closed, or the leader stepped down) the slot becomes an orphan for
// OrphanTTL, and a later l/sl/e/se with the same ref and key on a connection
// to the leader re-adopts it: the same token with a renewed lease, or the
// same place in the queue. Only slots whose owner is provably gone are
// re-adopted: orphans, and slots of a connection on another node (or a
// killed one); a live connection's slot is never taken over. A successful
// renew rebinds the slot to the renewing connection. A follower whose
// connection closes cleans nothing up: lease expiry is the fallback.
//
// Node 0 is the leader at the start, in term 1. The helpers (Failover,
// StartElection, ElectLeader, KillLeader, RestartNode) change leadership and
// membership; they are serialised with one another. The cluster is usable
// once StartCluster has returned.
type Cluster struct {
	nodes     []atomic.Pointer[Server] // replaced by RestartNode
	cfgs      []Config                 // each node's settings, Addr its address
	ids       []string
	tbl       *table
	orphanTTL time.Duration

	helpers sync.Mutex // serialises the helpers
	leader  atomic.Int64
	term    atomic.Uint64
	index   atomic.Uint64 // the replicated log's last index, commit = last
	dead    []atomic.Bool
}

// clusterNode is a Server's place in its Cluster.
type clusterNode struct {
	cl        *Cluster
	idx       int
	id        string
	stepping  atomic.Bool // stepping down: connections are cleaned up as on the leader
	notLeader []byte      // "error_not_leader <this node's addr>\n"
}

// clusterStatus is the stats "cluster" object (protocol-v2.md §6).
type clusterStatus struct {
	NodeID        string   `json:"node_id"`
	Role          string   `json:"role"`
	Term          uint64   `json:"term"`
	LeaderID      string   `json:"leader_id"`
	LeaderAddr    string   `json:"leader_addr,omitempty"`
	CommitIndex   uint64   `json:"commit_index"`
	LastLogIndex  uint64   `json:"last_log_index"`
	SnapshotIndex uint64   `json:"snapshot_index"`
	Voters        []string `json:"voters"`
}

// ErrNodeDown is returned by Failover and ElectLeader for a node that
// KillLeader killed.
var ErrNodeDown = errors.New("dflockdtest: the node is down")

// ErrNodeUp is returned by RestartNode for a node that is running.
var ErrNodeUp = errors.New("dflockdtest: the node is up")

// StartCluster starts cfg.Nodes nodes; node 0 leads.
func StartCluster(cfg ClusterConfig) (*Cluster, error) {
	if cfg.Nodes <= 0 {
		cfg.Nodes = 3
	}
	if cfg.Addrs != nil && len(cfg.Addrs) != cfg.Nodes {
		return nil, fmt.Errorf("dflockdtest: %d addresses for %d nodes", len(cfg.Addrs), cfg.Nodes)
	}
	if cfg.OrphanTTL == 0 {
		cfg.OrphanTTL = 30 * time.Second
	}
	nodeCfg := cfg.Node.withDefaults()
	nodeCfg.Generation = Gen2
	cl := &Cluster{
		nodes:     make([]atomic.Pointer[Server], cfg.Nodes),
		cfgs:      make([]Config, cfg.Nodes),
		ids:       make([]string, cfg.Nodes),
		tbl:       newTableFor(nodeCfg),
		orphanTTL: max(cfg.OrphanTTL, 0),
		dead:      make([]atomic.Bool, cfg.Nodes),
	}
	cl.tbl.cluster = true
	cl.term.Store(1)
	cl.index.Store(1)
	for i := range cl.ids {
		cl.ids[i] = fmt.Sprintf("node%d", i)
	}
	for i := 0; i < cfg.Nodes; i++ {
		cl.cfgs[i] = nodeCfg
		if cfg.Addrs != nil {
			cl.cfgs[i].Addr = cfg.Addrs[i]
		}
		if err := cl.startNode(i); err != nil {
			cl.forceClose()
			return nil, err
		}
	}
	return cl, nil
}

// startNode starts node i, a new process incarnation, with its settings;
// its address is then kept for a restart.
func (cl *Cluster) startNode(i int) error {
	n := &clusterNode{cl: cl, idx: i, id: cl.ids[i]}
	s, err := start(cl.cfgs[i], cl.tbl, n)
	if err != nil {
		return err
	}
	cl.cfgs[i].Addr = s.Addr()
	n.notLeader = []byte("error_not_leader " + s.Addr() + "\n")
	cl.nodes[i].Store(s)
	return nil
}

// RestartNode brings node i, killed by KillLeader, back on its address as
// a follower. It is a new process incarnation: slots of the old one's
// connections stay re-adoptable. It returns ErrNodeUp for a running node.
func (cl *Cluster) RestartNode(i int) error {
	cl.helpers.Lock()
	defer cl.helpers.Unlock()
	if !cl.dead[i].Load() {
		return fmt.Errorf("%w: node %d", ErrNodeUp, i)
	}
	if err := cl.startNode(i); err != nil {
		return err
	}
	cl.dead[i].Store(false)
	return nil
}

// NewCluster is the testing helper: it starts a cluster or fails the test,
// and registers a cleanup that force-closes every node.
func NewCluster(tb TB, cfg ClusterConfig) *Cluster {
	tb.Helper()
	cl, err := StartCluster(cfg)
	if err != nil {
		tb.Fatalf("dflockdtest: %v", err)
	}
	tb.Cleanup(cl.forceClose)
	return cl
}

func (cl *Cluster) forceClose() {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = cl.Shutdown(ctx)
}

// Close shuts every node down gracefully (see Server.Close).
func (cl *Cluster) Close() error { return cl.Shutdown(context.Background()) }

// Shutdown is Close bounded by ctx; the nodes drain at the same time.
func (cl *Cluster) Shutdown(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make([]error, len(cl.nodes))
	for i := range cl.nodes {
		s := cl.nodes[i].Load()
		if s == nil {
			continue // StartCluster failed before starting it
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.Shutdown(ctx)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Nodes returns the number of nodes.
func (cl *Cluster) Nodes() int { return len(cl.nodes) }

// Node returns node i (0-based): after RestartNode, the new process.
func (cl *Cluster) Node(i int) *Server { return cl.nodes[i].Load() }

// Addrs returns the nodes' client addresses, in node order.
func (cl *Cluster) Addrs() []string {
	out := make([]string, len(cl.nodes))
	for i := range cl.nodes {
		out[i] = cl.Node(i).Addr()
	}
	return out
}

// Leader returns the leader's index, or -1 while no leader is known.
func (cl *Cluster) Leader() int { return int(cl.leader.Load()) }

// Term returns the current term.
func (cl *Cluster) Term() uint64 { return cl.term.Load() }

// Failover makes node to the leader: the leader steps down as in
// StartElection (its client connections drop; their slots tagged with a
// stable ref become orphans, the others are released), then node to is
// elected. The term rises by one. Failover to the current leader is a
// step-down and re-election of the same node. It returns ErrNodeDown, and
// changes nothing, for a node killed by KillLeader.
func (cl *Cluster) Failover(to int) error {
	cl.helpers.Lock()
	defer cl.helpers.Unlock()
	if cl.dead[to].Load() {
		return fmt.Errorf("%w: node %d", ErrNodeDown, to)
	}
	cl.stepDown()
	cl.elect(to)
	return nil
}

// Transfer moves leadership to node to without dropping any connection, as
// a Raft leadership transfer or a partitioned leader losing its term does:
// the old leader's clients stay connected and from now on get
// error_not_leader <new leader> for the commands that need the leader;
// their slots stay bound to those connections (re-adoptable by ref on the
// new leader, whose process is another). The term rises by one. It
// returns ErrNodeDown for a node killed by KillLeader.
func (cl *Cluster) Transfer(to int) error {
	cl.helpers.Lock()
	defer cl.helpers.Unlock()
	if cl.dead[to].Load() {
		return fmt.Errorf("%w: node %d", ErrNodeDown, to)
	}
	cl.term.Add(1)
	cl.elect(to)
	return nil
}

// StartElection opens an election window: the leader steps down, its client
// connections drop (cleaned up as on the leader: slots tagged with a stable
// ref become orphans, the others are released), the term rises, and every
// node answers a bare error_not_leader until ElectLeader.
func (cl *Cluster) StartElection() {
	cl.helpers.Lock()
	defer cl.helpers.Unlock()
	cl.stepDown()
}

// ElectLeader ends an election: node i leads from now on. When a leader is
// known it steps down first, as in Failover. It returns ErrNodeDown for a
// node killed by KillLeader.
func (cl *Cluster) ElectLeader(i int) error {
	cl.helpers.Lock()
	defer cl.helpers.Unlock()
	if cl.dead[i].Load() {
		return fmt.Errorf("%w: node %d", ErrNodeDown, i)
	}
	if cl.Leader() >= 0 {
		cl.stepDown()
	}
	cl.elect(i)
	return nil
}

// KillLeader kills the leader's process without clean-up: its listener and
// connections close, its slots stay in the table with their leases (tagged
// or not), and its queued waiters keep their places. A client reconnecting
// to the next leader with the same stable ref re-adopts them, since their
// connections belonged to a process that is gone. No leader is known until
// ElectLeader; the term rises. The killed node stays down until RestartNode.
// It returns the killed node's index, or -1 when no leader was known.
func (cl *Cluster) KillLeader() int {
	cl.helpers.Lock()
	defer cl.helpers.Unlock()
	old := cl.Leader()
	if old < 0 {
		return -1
	}
	s := cl.Node(old)
	s.hardKilled.Store(true)
	cl.dead[old].Store(true)
	cl.leader.Store(-1)
	cl.term.Add(1)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = s.Shutdown(ctx)
	return old
}

// stepDown ends the current leadership (helpers held).
func (cl *Cluster) stepDown() {
	old := cl.Leader()
	cl.term.Add(1)
	if old < 0 {
		return
	}
	s := cl.Node(old)
	s.node.stepping.Store(true)
	cl.leader.Store(-1)
	s.DropConnections()
	s.node.stepping.Store(false)
}

// elect makes node i the leader (helpers held).
func (cl *Cluster) elect(i int) {
	cl.leader.Store(int64(i))
	cl.appendEntry() // a new leader commits a no-op entry
	cl.Node(i).log.Info().Uint64("term", cl.Term()).Msg("elected leader")
}

func (cl *Cluster) appendEntry() { cl.index.Add(1) }

// notLeaderReply is the reply of a node that is not the leader, nil on the
// leader.
func (n *clusterNode) notLeaderReply() []byte {
	l := n.cl.Leader()
	switch {
	case l == n.idx:
		return nil
	case l < 0:
		return lineNotLeader
	}
	return n.cl.Node(l).node.notLeader
}

// cleansUp reports whether a connection closing on this node is cleaned up:
// on the leader (or a leader stepping down) it is; a follower proposes
// nothing.
func (n *clusterNode) cleansUp() bool {
	return n.cl.Leader() == n.idx || n.stepping.Load()
}

func (n *clusterNode) status() clusterStatus {
	cl := n.cl
	l := cl.Leader()
	st := clusterStatus{
		NodeID:       n.id,
		Role:         "follower",
		Term:         cl.Term(),
		CommitIndex:  cl.index.Load(),
		LastLogIndex: cl.index.Load(),
		Voters:       cl.ids,
	}
	switch {
	case l == n.idx:
		st.Role = "leader"
	case l < 0:
		st.Role = "candidate"
	}
	if l >= 0 {
		st.LeaderID = cl.ids[l]
		st.LeaderAddr = cl.Node(l).Addr()
	}
	return st
}

// leave cleans a closed connection's session up: as a standalone server
// does, or in a cluster as the leader does (orphaning ref-tagged slots),
// and not at all on a follower or a killed node.
func (s *Server) leave(sess *session) {
	now := time.Now()
	if s.node == nil {
		s.tbl.disconnect(sess, !s.cfg.DisableAutoRelease, now)
		return
	}
	if s.hardKilled.Load() || !s.node.cleansUp() {
		return
	}
	s.tbl.leave(sess, !s.cfg.DisableAutoRelease, s.node.cl.orphanTTL, now)
}
