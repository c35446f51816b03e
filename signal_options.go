package dfstream

import "time"

// The options of signal streams. Each is also an Option: given to New, it
// sets the default of every signal stream the Client starts, a Router's
// included.

type signalConfig struct {
	server       string // "" = the Client's first server
	heartbeat    time.Duration
	heartbeatSet bool
	probe        bool
	buffer       int
	policy       OverflowPolicy
	backoffMin   time.Duration
	backoffMax   time.Duration
	eventBuffer  int
	// drain makes the end of the stream deliver everything still buffered
	// with blocking sends: for the Router, whose dispatchers read the
	// Events channel until it closes.
	drain bool
}

func defaultSignalConfig() signalConfig {
	return signalConfig{
		heartbeat:   DefaultHeartbeat,
		probe:       true,
		buffer:      DefaultSignalBuffer,
		policy:      DefaultOverflow,
		backoffMin:  100 * time.Millisecond,
		backoffMax:  5 * time.Second,
		eventBuffer: DefaultSignalEventBuffer,
	}
}

// WithSignalServer picks the server a signal stream connects to (default:
// the Client's first server), one of the Client's servers. Signals are not
// sharded: an emitter and its listeners must use the same server. Given to
// New, it is checked when a signal stream starts.
func WithSignalServer(addr string) SignalOption {
	return signalOption(func(c *signalConfig) error {
		if addr == "" {
			return invalidOption("WithSignalServer", addr, "empty address")
		}
		c.server = addr
		return nil
	})
}

// WithSignalHeartbeat sets how often the stream sends ping to keep an idle
// connection alive past the server's read timeout (default 15s, or half the
// configured server read timeout when that is shorter; 0 turns the heartbeat
// off). Servers that answer error to ping are fine: any request re-arms the
// server's read deadline.
//
// Each heartbeat is also an end-to-end probe: the stream emits a signal to a
// private channel (under ProbeChannelPrefix) that its own connection listens
// to, on a freshly dialled connection to the same address, the way any
// emitter reaches the server. If that signal has not come back by the next
// heartbeat (by the one after, if the server was slow to answer it), or a
// ping is still unanswered, the connection is deemed silent
// (ErrSilentConnection: the server keeps it open but delivers nothing,
// protocol.md §4) and the stream reconnects. A black hole is therefore
// noticed within two intervals, three if the server answers slowly. So is
// a server restarted gracefully: the old process keeps serving this
// connection while it drains, and a new one takes the address and everyone
// else's signals; the new one counts no copy of the probe, twice in a row,
// and the stream reconnects to it (within three intervals of the
// takeover). A single probe the server counts no copy of (it may have found
// the connection's push queue full, and dropped the copy) is not held
// against the connection. When no other connection can be made, the probe
// goes on the stream's own connection, as it does while the previous
// probe's dial still hangs.
//
// The cost, per stream and per interval, is one short-lived connection: a
// TCP handshake, a TLS one with WithTLS, the token exchange with
// WithAuthToken, and one request. A Router's streams each dial their own.
// Each interval is drawn between four fifths of interval and interval, so
// that streams started together do not all dial at the same instant.
//
// Servers that answer error to ping (those of the signals era, which log a
// warning each time) are not pinged again on that connection: a signal to
// the probe channel on the connection itself keeps it alive instead.
func WithSignalHeartbeat(interval time.Duration) SignalOption {
	return signalOption(func(c *signalConfig) error {
		if interval < 0 {
			return invalidOption("WithSignalHeartbeat", interval, "must not be negative")
		}
		c.heartbeat, c.heartbeatSet = interval, true
		return nil
	})
}

// WithSignalProbe turns the end-to-end probe of each heartbeat on (the
// default) or off. Without it the heartbeat only pings, which keeps the
// connection open but cannot tell a connection whose pushes the server
// discards.
func WithSignalProbe(on bool) SignalOption {
	return signalOption(func(c *signalConfig) error {
		c.probe = on
		return nil
	})
}

// WithSignalBuffer sets how many signals the stream holds for a consumer
// that has fallen behind, beyond those already in the Events channel
// (default 1024, at least 1). What happens beyond it is the overflow policy.
//
// Signals that arrive on a new connection before Reconnected is queued are
// held back until it is, and are not counted against the buffer, nor
// subject to the policy (the consumer could not have read them): up to n
// are held, and later ones are dropped, counted in Stats().Dropped and in
// an Overflow event after Reconnected. They never fail the stream: they lie
// in the window Disconnected declares signals may have been missed in.
func WithSignalBuffer(n int) SignalOption {
	return signalOption(func(c *signalConfig) error {
		if n < 1 {
			return invalidOption("WithSignalBuffer", n, "must be at least 1")
		}
		c.buffer = n
		return nil
	})
}

// WithSignalOverflow sets the overflow policy (default DropNewest).
func WithSignalOverflow(p OverflowPolicy) SignalOption {
	return signalOption(func(c *signalConfig) error {
		if !p.valid() {
			return invalidOption("WithSignalOverflow", p, "unknown policy")
		}
		c.policy = p
		return nil
	})
}

// WithSignalBackoff bounds the wait between reconnection attempts: it starts
// at min, doubles up to max, and is jittered (default 100ms to 5s).
func WithSignalBackoff(min, max time.Duration) SignalOption {
	return signalOption(func(c *signalConfig) error {
		if min <= 0 || max < min {
			return invalidOption("WithSignalBackoff", [2]time.Duration{min, max}, "need 0 < min <= max")
		}
		c.backoffMin, c.backoffMax = min, max
		return nil
	})
}

// drainOnClose is the Router's option for its own streams (signalConfig.drain).
func drainOnClose() SignalOption {
	return signalOption(func(c *signalConfig) error {
		c.drain = true
		return nil
	})
}

// WithSignalEventBuffer sets the capacity of the stream's Events channel
// (default 64, at least 1).
func WithSignalEventBuffer(n int) SignalOption {
	return signalOption(func(c *signalConfig) error {
		if n < 1 {
			return invalidOption("WithSignalEventBuffer", n, "must be at least 1")
		}
		c.eventBuffer = n
		return nil
	})
}
