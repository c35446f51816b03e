package dfstream

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/dfstream/dfstream/wire"
)

// A Client of a dflockd 2.x Raft cluster (protocol-v2.md §7).
//
// The members are the servers of the Client, in the order given. Every lock
// and semaphore request goes to the member believed to lead (a cache shared
// by all the Client's streams); a member that answers error_not_leader
// sends the request on: to the leader it names when that is a configured
// member, to the next member otherwise (a hint naming any other host is
// never dialled, and clears the cache). A member that cannot be reached,
// or that drops the connection before answering, is skipped the same way.
// Each operation makes at most the redirect budget's attempts (see
// WithRedirectBudget); then it fails with a *NoLeaderError.
//
// Every lock connection presents a stable ref once, right after it is
// dialled: a random one for a new connection, and the ref of the
// connection it replaces when a stream reconnects. A ref is thus one
// logical session (a connection and the reconnections of the stream that
// used it), and no two live connections of the Client carry the same one.
// When the leader fails or the connection drops, a held stream reconnects
// to the new leader with its ref and re-attaches (same token, renewed
// lease) and emits Moved instead of Lost; a queued stream keeps its place
// in the queue the same way.

// ErrNoLeader reports that a cluster operation found no leader within its
// redirect budget: an election in progress, members unreachable, or
// hints naming hosts that are not members. errors.As with *NoLeaderError
// tells which members were tried.
var ErrNoLeader = errors.New("no cluster leader")

// ErrNotLeader matches the error_not_leader answer of a cluster member
// that does not lead; errors.As with *wire.NotLeaderError gives the
// leader it named, if any. It ends an operation only inside a
// *NoLeaderError.
var ErrNotLeader = wire.ErrNotLeader

// NoLeaderError is the error of a cluster operation that ran out of its
// redirect budget. It matches ErrNoLeader and unwraps to the last
// attempt's error (a *wire.NotLeaderError, or ErrUnreachable, ...).
type NoLeaderError struct {
	Cmd   string   // the request ("e", "se", "r", ...)
	Tried []string // the members tried, in order, one entry per attempt
	Last  error    // why the last attempt failed
}

// Error implements error.
func (e *NoLeaderError) Error() string {
	return fmt.Sprintf("no cluster leader after %d attempts (%s): %v",
		len(e.Tried), strings.Join(e.Tried, ", "), e.Last)
}

// Is reports whether target is ErrNoLeader.
func (e *NoLeaderError) Is(target error) bool { return target == ErrNoLeader }

// Unwrap returns the last attempt's error.
func (e *NoLeaderError) Unwrap() error { return e.Last }

// clusterConfig is what the options say about a cluster.
type clusterConfig struct {
	members    []string // nil: no cluster
	budget     int      // 0: the default, see budgetFor
	serversSet bool     // WithServers was given
	shardSet   bool     // WithSharding was given
}

// WithCluster makes the Client talk to one dflockd 2.x Raft cluster whose
// members listen at the given client addresses (their --advertise-addr).
// The Client speaks 2.x to them without probing, sends lock and semaphore
// requests to the leader, follows error_not_leader hints only to
// configured members, and turns a leader failover into a Moved event (see
// Moved) rather than a loss.
//
// A move relies on the cluster keeping the stream's slot while it
// re-attaches: a killed leader's slots keep their leases, but a leader
// that steps down gracefully releases its connections' slots at once
// unless the servers run with --orphan-ttl. Give them an orphan TTL no
// shorter than the longest lease the clients ask for; with none, a held
// stream finds its slot gone when it re-attaches (a few milliseconds after
// the step-down, unless no leader is known yet) and emits Lost. Hints are
// matched against the members verbatim: list the members as the servers
// advertise themselves (--advertise-addr).
//
// A cluster is one lock table, so it is not sharded: WithCluster excludes
// WithServers and WithSharding (New returns an error matching
// ErrInvalidInput). To spread keys over several clusters, use one Client
// per cluster. Stats and Generation take a member's address, or "" for any
// member that answers.
func WithCluster(members ...string) Option {
	return clientOption(func(c *clientConfig) error {
		if len(members) == 0 {
			return invalidOption("WithCluster", members, "no member")
		}
		seen := make(map[string]bool, len(members))
		for _, m := range members {
			if m == "" || seen[m] {
				return invalidOption("WithCluster", members, "empty or repeated member")
			}
			seen[m] = true
		}
		c.cluster.members = append([]string(nil), members...)
		return nil
	})
}

// WithRedirectBudget bounds the attempts one cluster operation makes
// (connecting to a member and sending the request there) before it fails
// with ErrNoLeader. The default is twice the number of members, at least
// 3: enough to try every member once and follow one hint from each.
func WithRedirectBudget(n int) Option {
	return clientOption(func(c *clientConfig) error {
		if n < 1 {
			return invalidOption("WithRedirectBudget", n, "must be at least 1")
		}
		c.cluster.budget = n
		return nil
	})
}

// settleCluster checks the cluster settings once every option is applied
// and makes the members the Client's servers.
func (c *clientConfig) settleCluster() error {
	cc := &c.cluster
	if cc.members == nil {
		if cc.budget != 0 {
			return invalidOption("WithRedirectBudget", cc.budget, "without WithCluster")
		}
		return nil
	}
	switch {
	case cc.serversSet:
		return invalidOption("WithCluster", cc.members, "a cluster is one lock table: not with WithServers")
	case cc.shardSet:
		return invalidOption("WithCluster", cc.members, "a cluster is one lock table: not with WithSharding")
	case c.generation != GenUnknown && c.generation != Gen2:
		return invalidOption("WithCluster", cc.members, "cluster members speak 2.x, not "+c.generation.String())
	}
	if cc.budget == 0 {
		cc.budget = max(3, 2*len(cc.members))
	}
	c.servers = cc.members
	c.generation = Gen2
	return nil
}

// cluster is a Client's view of its cluster: the leader cache its streams
// share.
type cluster struct {
	members []string
	budget  int
	leader  atomic.Int32  // index of the member believed to lead; -1: unknown
	cursor  atomic.Uint32 // where the search for a leader goes on
}

func newCluster(cc clusterConfig) *cluster {
	if cc.members == nil {
		return nil
	}
	cl := &cluster{members: cc.members, budget: cc.budget}
	cl.leader.Store(-1)
	return cl
}

// pick returns the member to try first: the cached leader, or the next
// member in turn.
func (cl *cluster) pick() int {
	if l := cl.leader.Load(); l >= 0 {
		return int(l)
	}
	return int(cl.cursor.Load() % uint32(len(cl.members)))
}

// member returns the index of addr among the members, -1 if it is none.
func (cl *cluster) member(addr string) int {
	for i, m := range cl.members {
		if m == addr {
			return i
		}
	}
	return -1
}

// led records that member i answered as the leader.
func (cl *cluster) led(i int) { cl.leader.Store(int32(i)) }

// skip records that member i is not the leader (it said so, or could not
// be reached) and returns the member to try next: the leader its hint
// names when that is a configured member, the member after i otherwise.
// A hint naming any other host is never followed and clears the cache.
func (cl *cluster) skip(i int, hint string) int {
	if j := cl.member(hint); hint != "" && j >= 0 && j != i {
		cl.leader.Store(int32(j))
		return j
	}
	cl.leader.CompareAndSwap(int32(i), -1)
	next := (i + 1) % len(cl.members)
	cl.cursor.Store(uint32(next))
	return next
}

// Leader returns the address of the cluster member the Client believes
// leads, "" when it does not know (no cluster, or no request answered by
// a leader yet, or the last leader stepped down).
func (c *Client) Leader() string {
	if c.cl == nil {
		return ""
	}
	if l := c.cl.leader.Load(); l >= 0 {
		return c.cl.members[l]
	}
	return ""
}

// newStableRef returns a random ref: 32 hex digits, as dflockd's own
// client makes them.
func newStableRef() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}

// presentRef sends stable-ref on a connection just dialled to the cluster
// member at addr: ref, or a new one when ref is "". It returns the ref
// presented. A member that answers error has no stable refs: an
// *UnsupportedError.
func (c *Client) presentRef(ctx context.Context, sc *wire.SyncConn, addr, ref string) (string, error) {
	if ref == "" {
		ref = newStableRef()
	}
	req, err := wire.StableRef(ref)
	if err != nil {
		return "", err
	}
	line, err := sc.ExchangeContext(ctx, req, time.Now().Add(c.cfg.connectTimeout))
	if err == nil {
		err = wire.ParseOK(req.Cmd, line)
	}
	var se *wire.ServerError
	if errors.As(err, &se) && se.Status == "error" {
		// A server from before the cluster work: it cannot re-attach.
		return "", &UnsupportedError{Feature: "stable refs", Server: addr, Generation: Gen2}
	}
	if err != nil {
		return "", fmt.Errorf("presenting the stable ref: %w", err)
	}
	return ref, nil
}

// skippable reports whether an attempt that failed with err may go to
// another member: the member is not the leader, could not be reached, or
// dropped the connection (the leader failing, or draining). The request
// was not acted on, or it carried a stable ref, so that sending it again
// re-attaches to whatever it did. A reply too late for the safe deadline
// is not: that grant is the stream's own business (see again).
func skippable(err error) (hint string, ok bool) {
	var nl *wire.NotLeaderError
	switch {
	case errors.Is(err, ErrDeadlinePassed):
		return "", false
	case errors.As(err, &nl):
		return nl.Leader, true
	case errors.Is(err, ErrUnreachable), errors.Is(err, ErrConnLost), errors.Is(err, wire.ErrClosed):
		return "", true
	}
	return "", false
}

// onLeader runs one operation of the stream on the cluster's leader: it
// connects to the member the cache names (s.srv), runs exchange, and on an
// answer that says another member leads, or a member out of reach, tries
// the next within the redirect budget. With fresh, every connection is
// dialled with the stream's ref (a reconnection, to re-attach); otherwise
// the first may come from the pool. On success s.conn is on the leader.
func (s *holdStream) onLeader(cmd string, fresh bool, exchange func(*lockConn) error) error {
	cl := s.c.cl
	i := cl.pick()
	var tried []string
	var err error
	for range cl.budget {
		if s.stopped() {
			return s.stopCause()
		}
		if !s.dialBy.IsZero() && !time.Now().Before(s.dialBy) && err != nil {
			break // a move out of time: see move
		}
		s.srv = i
		tried = append(tried, cl.members[i])
		var lc *lockConn
		if lc, err = s.connect(fresh); err == nil {
			err = exchange(lc)
			stale := lc.pooled && errors.Is(err, wire.ErrNoReply)
			lc.pooled = false
			if stale {
				// A pooled connection the server closed while idle: the
				// next attempt dials, to the same member.
				s.dropConn()
				fresh = true
				continue
			}
		}
		if err == nil {
			cl.led(i)
			return nil
		}
		hint, ok := skippable(err)
		if !ok || s.stopped() {
			return err
		}
		s.dropConn() // never pooled: its ref goes on with the stream
		fresh = true // only the stream's own ref re-attaches
		i = cl.skip(i, hint)
	}
	return &NoLeaderError{Cmd: cmd, Tried: tried, Last: err}
}

// dialDeadline bounds a dial of the stream: the connect timeout, and
// while the stream re-attaches a held key, the moment it declares Lost.
func (s *holdStream) dialDeadline() time.Time {
	d := time.Now().Add(s.c.cfg.connectTimeout)
	if !s.dialBy.IsZero() {
		d = earliest(d, s.dialBy)
	}
	return d
}

// reach runs the stream's enqueue exchange: on the leader for a cluster
// Client, else on the server of the key (a pooled connection, and a fresh
// one when that turns out stale). A cluster stream that has had a
// connection enqueues again only on one dialled with its ref: whatever its
// last connection left behind (a place in the queue, a slot given back or
// lost by dropping the connection, now an orphan) is its to re-adopt, and
// would otherwise stand in its way until the orphan TTL ran out.
func (s *holdStream) reach(exchange func(*lockConn) error) error {
	if s.c.cl == nil {
		_, err := firstExchange(s.connect, func(*lockConn) { s.dropConn() }, exchange)
		return err
	}
	return s.onLeader(s.enqueueReq.Cmd, s.sref != "", exchange)
}

// movable reports whether a held stream of a cluster Client that lost its
// connection for reason reconnects and re-attaches instead: the connection
// dropped or the member stopped leading, the stream still runs, and its
// safe deadline is ahead.
func (s *holdStream) movable(reason error) bool {
	if s.c.cl == nil || s.stopped() || !time.Now().Before(s.lossAt) || errors.Is(reason, ErrDeadlinePassed) {
		return false
	}
	hint, ok := skippable(reason)
	if ok {
		s.c.cl.skip(s.srv, hint)
	}
	return ok
}

// rejoin reports whether a queued stream of a cluster Client whose wait
// failed with err enqueues again with its ref, which keeps its place in the
// queue: the connection dropped or the member stopped leading (or, on a
// rejoin already, no leader was found yet: it pauses a little first),
// while the acquire timeout allows.
func (s *holdStream) rejoin(err error) bool {
	if s.c.cl == nil || s.stopped() || time.Since(s.roundStart) >= s.cfg.acquireTimeout {
		return false
	}
	if errors.Is(err, ErrNoLeader) {
		if s.sref == "" || !s.pause(rejoinPause) {
			return false
		}
	} else if hint, ok := skippable(err); ok {
		s.c.cl.skip(s.srv, hint)
	} else {
		return false
	}
	s.dropConn() // the next enqueue dials with the ref: see reach
	return true
}

// rejoinPause is how long a stream that found no leader waits before it
// looks again: an election is usually over within a few hundred
// milliseconds.
const rejoinPause = 20 * time.Millisecond

// pause waits d, or until the stream stops (false).
func (s *holdStream) pause(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.stop:
		return false
	}
}

// move runs on a goroutine of its own, with the turn, for a held stream
// whose connection was lost for reason (see movable): it reconnects to
// the leader with the stream's ref and re-attaches, until the moment the
// stream declares Lost. Re-attached, the stream holds on with the same
// token and a renewed lease, and emits Moved; otherwise it is Lost.
func (s *holdStream) move(reason error) {
	from := s.c.cfg.servers[s.srv]
	s.c.renewals.remove(s)
	s.dropConn() // its ref goes on with the new connection
	wait := rejoinPause
	for {
		err := s.reattach(from)
		if err == nil {
			s.giveTurn()
			return
		}
		var gone *slotGone
		switch {
		case s.stopped():
			s.lose(s.opErr("hold", reason), true)
			return
		case errors.As(err, &gone):
			s.lose(s.opErr("hold", err), false)
			return
		case !time.Now().Add(wait).Before(s.lossAt):
			s.lose(s.opErr("hold", fmt.Errorf("%w: not re-attached on a leader in time: %w", ErrDeadlinePassed, errors.Join(reason, err))), false)
			return
		}
		s.log.Debug().Err(err).Msg("re-attach failed; trying again")
		if !s.pause(wait) {
			s.lose(s.opErr("hold", reason), true)
			return
		}
		wait = min(2*wait, 200*time.Millisecond)
	}
}

// slotGone reports a re-attach that found the stream's slot gone: the
// server did not give the same token back.
type slotGone struct{ err error }

func (e *slotGone) Error() string { return e.err.Error() }
func (e *slotGone) Unwrap() error { return e.err }

// reattach sends the stream's enqueue on a new connection to the leader,
// with its ref, and takes the grant that comes back when it carries the
// same token: the slot re-attached with a renewed lease. The exchange is
// bounded by the moment the stream declares Lost, and the grant obeys the
// stale-grant rule as any other.
func (s *holdStream) reattach(from string) error {
	var line string
	var sent time.Time
	lossAt := s.lossAt
	s.dialBy = lossAt
	defer func() { s.dialBy = time.Time{} }()
	err := s.onLeader(s.enqueueReq.Cmd, true, func(lc *lockConn) (err error) {
		sent = time.Now()
		line, err = lc.exchange(context.Background(), s.enqueueReq, earliest(sent.Add(s.c.cfg.connectTimeout), lossAt))
		if err != nil {
			return s.exchangeErr(err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	g, granted, err := wire.ParseEnqueue(s.enqueueReq.Cmd, line)
	switch {
	case err != nil:
		return err
	case !granted:
		// Queued as a new waiter: the slot was gone. Forget the place
		// (a wait of 0 does), or it would hold the key for the orphan
		// TTL once granted.
		s.forgetPlace()
		return &slotGone{fmt.Errorf("%w: re-attach found the slot gone (queued anew)", ErrLeaseExpired)}
	case g.Token != s.token:
		s.giveBack(g.Token)
		return &slotGone{fmt.Errorf("%w: re-attach found the slot gone (a new grant)", ErrLeaseExpired)}
	}
	now := time.Now()
	deadline, newLossAt := s.safeDeadline(sent, g.Lease)
	if !now.Before(lossAt) || !now.Before(newLossAt) {
		return fmt.Errorf("%w: the re-attached grant came too late to be held", ErrDeadlinePassed)
	}
	fence := s.c.grantFence(s.srv, g.Token, g.Fence)
	s.fence, s.granted = fence, g.Lease
	s.lease = s.wantedLease(g.Lease)
	s.deadline, s.lossAt = deadline, newLossAt
	ev := Moved{Key: s.key, From: from, To: s.c.cfg.servers[s.srv], Token: g.Token, Lease: g.Lease,
		Fence: fence, Deadline: deadline, At: now}
	s.mu.Lock()
	s.grant.Lease, s.grant.Fence, s.grant.Deadline = ev.Lease, ev.Fence, ev.Deadline
	s.heldUntil = s.lossAt
	s.notify()
	s.mu.Unlock()
	s.out.emit(ev)
	s.schedule(sent)
	s.log.Debug().Str("from", from).Str("to", ev.To).Msg("moved")
	return nil
}

// forgetPlace withdraws the enqueue just answered queued on the stream's
// connection: a wait of 0 answers timeout and forgets it. Like giveBack,
// it gives up at the loss instant, since the Lost it precedes must not
// come later than that; a place not forgotten goes with the connection.
func (s *holdStream) forgetPlace() {
	if req, err := wire.Wait(s.kind, s.key, 0); err == nil {
		_, _ = s.conn.exchange(context.Background(), req, s.tidyBy())
	}
}

// giveBack releases a grant of token the stream does not want.
func (s *holdStream) giveBack(token string) {
	if req, err := wire.Release(s.kind, s.key, token); err == nil {
		_, _ = s.conn.exchange(context.Background(), req, s.tidyBy())
	}
}

// tidyBy bounds the clean-up exchanges a failed re-attach makes before its
// Lost: the connect timeout, and never past the loss instant of the hold
// it reports lost.
func (s *holdStream) tidyBy() time.Time {
	return earliest(time.Now().Add(s.c.cfg.connectTimeout), s.lossAt)
}

// releaseOnLeader sends a release that failed with err again, on the
// leader, when the stream's member no longer leads or dropped the
// connection: a token is valid on any connection. It returns the
// connection the release ends on, and its error.
func (s *holdStream) releaseOnLeader(ctx context.Context, req wire.Request, lc *lockConn, err error) (*lockConn, error) {
	if _, ok := skippable(err); !ok || s.c.cl == nil || ctx.Err() != nil {
		return lc, err
	}
	s.dropConn() // its ref goes on with the new connection
	s.dialBy = s.lossAt
	defer func() { s.dialBy = time.Time{} }()
	err = s.onLeader(req.Cmd, true, func(lc *lockConn) error {
		line, err := lc.exchange(ctx, req, earliest(time.Now().Add(s.c.cfg.connectTimeout), s.lossAt))
		if err == nil {
			err = wire.ParseOK(req.Cmd, line)
		}
		return err
	})
	return s.conn, err
}

// withdraw gives up the place in the queue (or the grant) of a cluster
// stream its user stopped while it waited: closing the connection leaves
// an orphan there, which a cluster with an orphan TTL keeps, grants in
// its turn, and holds until the TTL runs out. The old connection is
// half-closed and read until the server closes it (the server has then
// cleaned it up), and a new one, with the stream's ref, re-adopts the
// place and withdraws it: a wait of 0 forgets it, a grant is released. It
// is best effort: one member, and a server that has not closed the old
// connection within withdrawWait may not have orphaned the place yet (an
// enqueue that finds none makes a place of its own, withdrawn the same
// way).
func (s *holdStream) withdraw() {
	if st := s.State(); s.c.cl == nil || s.sref == "" || !s.stopped() || (st != StateQueued && st != StateConnecting) {
		return
	}
	if s.conn != nil {
		awaitHangUp(s.conn.NetConn(), time.Now().Add(min(s.c.cfg.connectTimeout, withdrawWait)))
	}
	s.dropConn() // its ref goes on with the connection below
	ctx, cancel := context.WithTimeout(context.Background(), s.c.cfg.connectTimeout)
	defer cancel()
	lc, err := s.c.dialSession(ctx, s.srv, s.sref)
	if err != nil {
		return
	}
	defer lc.close()
	line, err := lc.exchange(ctx, s.enqueueReq, time.Time{})
	if err != nil {
		return
	}
	g, granted, err := wire.ParseEnqueue(s.enqueueReq.Cmd, line)
	if err != nil {
		return
	}
	req, err := wire.Wait(s.kind, s.key, 0)
	if granted {
		req, err = wire.Release(s.kind, s.key, g.Token)
	}
	if err == nil {
		_, _ = lc.exchange(ctx, req, time.Time{})
	}
}

// withdrawWait bounds how long withdraw waits for the server to close the
// old connection.
const withdrawWait = time.Second

// awaitHangUp half-closes nc and reads it until the server closes its
// side, or until deadline.
func awaitHangUp(nc net.Conn, deadline time.Time) {
	cw, ok := nc.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil || nc.SetReadDeadline(deadline) != nil {
		return
	}
	_, _ = io.Copy(io.Discard, nc)
}

// clusterStats asks the members in turn, the believed leader first, until
// one answers stats.
func (c *Client) clusterStats(ctx context.Context) (*Stats, error) {
	i := c.cl.pick()
	var err error
	for range c.cl.members {
		var st *Stats
		if st, err = c.Stats(ctx, c.cl.members[i]); err == nil {
			return st, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		i = (i + 1) % len(c.cl.members)
	}
	return nil, err
}
