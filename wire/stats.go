package wire

import (
	"encoding/json"
	"strings"
)

// Stats is the reply to stats. It holds the fields both server generations
// send, plus the signal channels of the newer one; other fields of the newer
// generation (read-write locks, counters, KV, lists, watches, barriers) are
// outside this client's scope and ignored.
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
}

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
		status, _, _ := strings.Cut(line, " ")
		if status == "" {
			return nil, newProtocolError(cmd, line, "empty reply", nil)
		}
		if status == "ok" {
			return nil, newProtocolError(cmd, line, "missing JSON", nil)
		}
		return nil, StatusErr(cmd, status)
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
