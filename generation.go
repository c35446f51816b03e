package dfstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/dfstream/dfstream/wire"
)

// Generation is a generation of the dflockd server protocol. What a server
// offers depends on it: fences, signals, draining. A Client learns each
// server's generation from its first connection to it (see WithGeneration).
type Generation uint8

// The server generations.
const (
	// GenUnknown is the generation of a server the Client has not probed
	// yet.
	GenUnknown Generation = iota
	// Gen110 is dflockd 1.10: locks and semaphores, random tokens, no
	// fences, no signals, no ping.
	Gen110
	// GenSignals is the signals era (the 1.11 to 1.16 line and the embedded
	// dflockdtest server by default): locks, semaphores and signals; grant
	// and renew replies carry the fence; tokens are random.
	GenSignals
	// Gen2 is dflockd 2.x: locks and semaphores only; a token's first 16
	// hex digits are its fence; a server shutting down answers
	// error_draining and closes the connection.
	Gen2
)

// String returns "unknown", "1.10", "signals" or "2.x".
func (g Generation) String() string {
	switch g {
	case GenUnknown:
		return "unknown"
	case Gen110:
		return "1.10"
	case GenSignals:
		return "signals"
	case Gen2:
		return "2.x"
	}
	return fmt.Sprintf("Generation(%d)", uint8(g))
}

// signals reports whether servers of g speak pub/sub signals.
func (g Generation) signals() bool { return g == GenSignals }

// WithGeneration states the generation of every configured server, so that
// the Client does not probe them. By default a Client probes each server
// once, on its first connection to it: a stats request (whose signal
// channels only the signals era lists) and, when that is not conclusive, a
// ping (which only 2.x answers ok), one or two round trips per server for
// the Client's life. A wrong generation is trusted: fences read from random
// tokens, or signals refused by a server that has them, and, worst, GenSignals
// stated for a 1.10 server skips the renewal that confirms a grant from a
// wait, which 1.10 may answer with a token already expired. State it only
// when you know it.
func WithGeneration(g Generation) Option {
	return clientOption(func(c *clientConfig) error {
		if g < Gen110 || g > Gen2 {
			return invalidOption("WithGeneration", g, "not a known generation")
		}
		c.generation = g
		return nil
	})
}

// ErrUnsupported reports a request the server's generation does not serve:
// signals on 1.10 and 2.x servers, and stable refs (WithCluster) on servers
// older than dflockd's cluster mode. errors.As with *UnsupportedError tells
// which server and generation.
var ErrUnsupported = errors.New("not supported by the server")

// UnsupportedError reports a feature the generation of a server lacks. It
// matches ErrUnsupported.
type UnsupportedError struct {
	Feature    string     // what was asked for ("signals")
	Server     string     // the server's address
	Generation Generation // the server's generation
}

// Error implements error.
func (e *UnsupportedError) Error() string {
	return fmt.Sprintf("the server at %s speaks dflockd %s, which has no %s", e.Server, e.Generation, e.Feature)
}

// Is reports whether target is ErrUnsupported.
func (e *UnsupportedError) Is(target error) bool { return target == ErrUnsupported }

// serverGen is what a Client knows of one server's generation.
type serverGen struct {
	gen     atomic.Uint32 // a Generation; GenUnknown until learnt
	probing chan struct{} // holds a token while a connection probes
}

func (g *serverGen) load() Generation { return Generation(g.gen.Load()) }

// newServerGens returns the generation records of the servers: one per
// address, shared by an address configured twice.
func newServerGens(servers []string, known Generation) []*serverGen {
	byAddr := make(map[string]*serverGen, len(servers))
	gens := make([]*serverGen, len(servers))
	for i, addr := range servers {
		g := byAddr[addr]
		if g == nil {
			g = &serverGen{probing: make(chan struct{}, 1)}
			g.gen.Store(uint32(known))
			byAddr[addr] = g
		}
		gens[i] = g
	}
	return gens
}

// learnGeneration makes sure the generation of server i is known: unless it
// is, it probes the server with exchange, which sends a request on a
// connection just made and returns the reply. One connection probes at a
// time; the others wait for its answer (within ctx), so a server is probed
// once per Client unless a probe fails.
func (c *Client) learnGeneration(ctx context.Context, i int, exchange func(wire.Request) (string, error)) error {
	g := c.gens[i]
	if g.load() != GenUnknown {
		return nil
	}
	select {
	case g.probing <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-g.probing }()
	if g.load() != GenUnknown {
		return nil
	}
	gen, err := probeGeneration(exchange)
	if err != nil {
		return err // the connection's first request: its failure speaks for itself
	}
	g.gen.Store(uint32(gen))
	c.cfg.logger.Debug().Str("server", c.cfg.servers[i]).Stringer("generation", gen).Msg("server generation")
	return nil
}

// probeGeneration tells the generations apart (protocol-v2.md §11): only the
// signals era lists signal channels in stats (null when there are none),
// and of the others only 2.x answers ok to ping. Stats goes first, so that
// a signals-era server, which logs a warning for every ping, gets none.
func probeGeneration(exchange func(wire.Request) (string, error)) (Generation, error) {
	line, err := exchange(wire.StatsRequest())
	if err != nil {
		return GenUnknown, err
	}
	if _, err := wire.ParseStats(line); err != nil {
		return GenUnknown, err
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal([]byte(line[len("ok "):]), &fields); err != nil {
		return GenUnknown, err // cannot happen: ParseStats decoded it
	}
	if _, ok := fields["signal_channels"]; ok {
		return GenSignals, nil
	}
	if line, err = exchange(wire.Ping()); err != nil {
		return GenUnknown, err
	}
	err = wire.ParseOK("ping", line)
	var se *wire.ServerError
	switch {
	case err == nil:
		return Gen2, nil
	case errors.As(err, &se) && se.Status == "error":
		return Gen110, nil // an unknown command
	default:
		return GenUnknown, err
	}
}

// generation returns the generation of server i, probing it on a pooled or
// new connection if it is not known yet.
func (c *Client) generation(ctx context.Context, i int) (Generation, error) {
	if g := c.gens[i].load(); g != GenUnknown {
		return g, nil
	}
	lc, err := c.lockConn(ctx, i) // a new connection: dialLock probes it
	if err != nil {
		return GenUnknown, err
	}
	c.pools[i].put(lc, c.watcher)
	return c.gens[i].load(), nil
}

// Generation returns the generation of the server at addr (one of the
// configured servers, or "" for the first), probing it if the Client has
// not yet (see WithGeneration). Errors are those of Stats.
func (c *Client) Generation(ctx context.Context, addr string) (Generation, error) {
	if ctx == nil {
		return GenUnknown, opError("generation", "", addr, errNilContext)
	}
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return GenUnknown, opError("generation", "", addr, ErrClosed)
	}
	i, err := c.serverIndex(addr)
	if err != nil {
		return GenUnknown, opError("generation", "", addr, err)
	}
	g, err := c.generation(ctx, i)
	return g, opError("generation", "", c.cfg.servers[i], err)
}

// needSignals returns an *UnsupportedError when server i is known to have
// no signals.
func (c *Client) needSignals(i int) error {
	if g := c.gens[i].load(); g != GenUnknown && !g.signals() {
		return &UnsupportedError{Feature: "signals", Server: c.cfg.servers[i], Generation: g}
	}
	return nil
}

// grantFence is the fence of a grant of token by server i whose reply
// carried fence (0 for none): on 2.x, which sends no fence field, the
// token's prefix. Other generations' tokens are random: never read.
func (c *Client) grantFence(i int, token string, fence uint64) uint64 {
	if c.gens[i].load() != Gen2 {
		return fence
	}
	if f, err := wire.FenceFromToken(token); err == nil {
		return f
	}
	return fence
}
