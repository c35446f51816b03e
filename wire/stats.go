package wire

import (
	"encoding/json"
	"strings"
)

// Stats is the reply to stats. It holds the fields every server generation
// sends, plus the signal channels of the signals era and the cluster status
// of 2.x cluster members; other fields of the signals era (read-write locks,
// counters, KV, lists, watches, barriers) are outside this client's scope
// and ignored.
type Stats struct {
	// Connections counts the server's open connections, the asking one
	// included.
	Connections int `json:"connections"`
	// Locks lists active keys with limit 1 (held or with waiters).
	Locks []LockStat `json:"locks"`
	// Semaphores lists active keys with a limit above 1.
	Semaphores []SemStat `json:"semaphores"`
	// IdleLocks lists keys with limit 1 that nobody holds or waits for,
	// until the server's GC drops them.
	IdleLocks []IdleStat `json:"idle_locks"`
	// IdleSemaphores is IdleLocks for keys with a limit above 1.
	IdleSemaphores []IdleStat `json:"idle_semaphores"`
	// SignalChannels lists subscriptions (newer servers only). It is nil
	// both when the server has none (it sends null) and on 1.10.
	SignalChannels []SignalStat `json:"signal_channels"`
	// Cluster is the member's Raft status (2.x cluster members only; nil
	// otherwise). The lock lists of a follower are its own applied copy,
	// which may lag the leader's.
	Cluster *ClusterStat `json:"cluster,omitempty"`
}

// ClusterStat is the "cluster" object of a 2.x cluster member's stats.
type ClusterStat struct {
	// NodeID is this member's node id.
	NodeID string `json:"node_id"`
	// Role is "leader", "follower", "candidate" or "pre-candidate" (kept
	// verbatim: later servers may add roles).
	Role string `json:"role"`
	// Term is the member's current Raft term.
	Term uint64 `json:"term"`
	// LeaderID is the node id of the leader this member knows, "" if none.
	LeaderID string `json:"leader_id"`
	// LeaderAddr is the leader's client address ("host:port"), "" when
	// unknown (the server omits it).
	LeaderAddr string `json:"leader_addr,omitempty"`
	// CommitIndex is the index of the last committed log entry.
	CommitIndex uint64 `json:"commit_index"`
	// LastLogIndex is the index of the last entry in the member's log.
	LastLogIndex uint64 `json:"last_log_index"`
	// SnapshotIndex is the log index of the member's latest snapshot.
	SnapshotIndex uint64 `json:"snapshot_index"`
	// Voters lists the node ids of the voting members.
	Voters []string `json:"voters"`
}

// Cluster roles of ClusterStat.Role.
const (
	RoleLeader       = "leader"
	RoleFollower     = "follower"
	RoleCandidate    = "candidate"
	RolePreCandidate = "pre-candidate"
)

// LockStat is one active key with limit 1.
type LockStat struct {
	// Key is the lock's key.
	Key string `json:"key"`
	// OwnerConnID is the holder's per-process connection number; 0 when
	// nobody holds it (only waiters).
	OwnerConnID uint64 `json:"owner_conn_id"`
	// LeaseExpiresIn is the holder's remaining lease in seconds, clamped at 0.
	LeaseExpiresIn float64 `json:"lease_expires_in_s"`
	// Waiters counts queued requests.
	Waiters int `json:"waiters"`
	// Fence is the holder's fencing token (newer servers; 0 when absent).
	Fence uint64 `json:"fence,omitempty"`
}

// SemStat is one active key with a limit above 1.
type SemStat struct {
	// Key is the semaphore's key.
	Key string `json:"key"`
	// Limit is the limit fixed by the request that created the key.
	Limit int `json:"limit"`
	// Holders counts held slots.
	Holders int `json:"holders"`
	// Waiters counts queued requests.
	Waiters int `json:"waiters"`
}

// IdleStat is one idle key awaiting the server's GC.
type IdleStat struct {
	// Key is the idle key.
	Key string `json:"key"`
	// IdleS is how long it has been idle, in seconds.
	IdleS float64 `json:"idle_s"`
}

// SignalStat is one subscription entry: one per plain pattern, one per
// (pattern, group).
type SignalStat struct {
	// Pattern is the subscribed pattern.
	Pattern string `json:"pattern"`
	// Group is the queue group, "" for plain subscriptions.
	Group string `json:"group,omitempty"`
	// Listeners counts the connections subscribed.
	Listeners int `json:"listeners"`
}

// ParseStats parses "ok <json>", the reply to stats. A non-ok status returns
// StatusErr; anything else that is not "ok " followed by a JSON object is a
// *ProtocolError.
func ParseStats(line string) (*Stats, error) {
	const cmd = "stats"
	body, ok := strings.CutPrefix(line, "ok ")
	if !ok {
		var f [maxFields]string
		switch n := splitFields(line, &f); {
		case n == 0:
			return nil, newProtocolError(cmd, line, "empty reply", nil)
		case f[0] == "ok":
			return nil, newProtocolError(cmd, line, "missing JSON", nil)
		default:
			return nil, lineStatusErr(cmd, line)
		}
	}
	// Unmarshal accepts null into a struct as a no-op; a stats reply must be
	// an object.
	if !strings.HasPrefix(strings.TrimLeft(body, " \t"), "{") {
		return nil, newProtocolError(cmd, line, "stats is not a JSON object", nil)
	}
	var s Stats
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		return nil, newProtocolError(cmd, line, "bad stats JSON", err)
	}
	if s.hasNegative() {
		return nil, newProtocolError(cmd, line, "negative count in stats", nil)
	}
	return &s, nil
}

// hasNegative reports a count or duration below zero: the server sends none
// (remaining leases are clamped at 0), so one is a protocol error, not a
// figure to pass on. Unsigned fields are already refused by Unmarshal.
func (s *Stats) hasNegative() bool {
	neg := s.Connections < 0
	for _, l := range s.Locks {
		neg = neg || l.Waiters < 0 || l.LeaseExpiresIn < 0
	}
	for _, m := range s.Semaphores {
		neg = neg || m.Limit < 0 || m.Holders < 0 || m.Waiters < 0
	}
	for _, i := range s.IdleLocks {
		neg = neg || i.IdleS < 0
	}
	for _, i := range s.IdleSemaphores {
		neg = neg || i.IdleS < 0
	}
	for _, c := range s.SignalChannels {
		neg = neg || c.Listeners < 0
	}
	return neg
}
