package dflockdtest

// maxSemLimitV2 is the largest semaphore limit a 2.x server accepts.
const maxSemLimitV2 = 1 << 20

// maxAuthArgV2 is the longest argument line of a 2.x auth (the token).
const maxAuthArgV2 = 64 << 10

// maxStableRef is the longest stable ref, in bytes after trimming.
const maxStableRef = 64

var lineNotLeader = []byte("error_not_leader\n")

// dispatchV2 serves what 2.x does differently from the signals era: no
// signals, ping always ok, barrier, stable-ref, and on a cluster follower
// error_not_leader for the commands that need the leader. done is false when
// the shared dispatch is to serve the request.
func (c *conn) dispatchV2(cmd, key []byte) (ok, done bool) {
	switch string(cmd) {
	case "listen", "unlisten", "signal":
		return c.writeReply(lineError), true
	case "ping":
		c.s.pings.Add(1)
		return c.writeReply(lineOK), true
	case "stable-ref":
		return c.cmdStableRef(key), true
	case "barrier", "l", "sl", "e", "se", "w", "sw", "r", "sr", "n", "sn":
		if c.s.node != nil {
			if nl := c.s.node.notLeaderReply(); nl != nil {
				return c.writeReply(nl), true
			}
			c.s.node.cl.appendEntry()
		}
		if string(cmd) == "barrier" {
			return c.writeReply(lineOK), true
		}
	}
	return false, false
}

// cmdStableRef serves stable-ref: the ref is the trimmed key line, set once
// per connection.
func (c *conn) cmdStableRef(key []byte) bool {
	ref := trimSpace(key)
	if c.sess.ref != "" || !validStableRef(ref) {
		return c.writeReply(lineError)
	}
	c.sess.ref = string(ref)
	return c.writeReply(lineOK)
}

// validStableRef: 1 to 64 bytes of printable ASCII (0x20 to 0x7e).
func validStableRef(ref []byte) bool {
	if len(ref) == 0 || len(ref) > maxStableRef {
		return false
	}
	for _, b := range ref {
		if b < 0x20 || b > 0x7e {
			return false
		}
	}
	return true
}
