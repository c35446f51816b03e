package dfstream

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dfstream/dfstream/internal/hangup"
	"github.com/dfstream/dfstream/wire"
)

// lockConn is a connection for locks, semaphores and one-off requests: a
// wire.SyncConn, which its user drives on its own goroutine, watched for the
// server hanging up while nobody is reading it.
//
// The watch starts late: when the connection first goes into the pool, or
// when a stream has held its key for watchDelay. Registering a fresh socket
// with epoll costs about 8 µs here (5% of a dial and a cycle), which a
// lock released at once never needs.
type lockConn struct {
	*wire.SyncConn
	watch  *hangup.Watch // nil until watched
	pooled bool          // handed out by the pool, before its first exchange: see stale
	ref    string        // the stable ref it presented (cluster members only)
	hungUp atomic.Bool
	owner  atomic.Pointer[holdStream] // told when the server hangs up
}

// watchDelay is how long a stream holds its key on an unwatched connection
// before it has it watched: a hang-up in that time is reported once the
// watch starts, at once (a socket already closed by the peer is reported on
// registration), so a lost server is still noticed within tens of
// milliseconds.
const watchDelay = 20 * time.Millisecond

// lockConn returns an idle pooled connection to server i, or dials one.
func (c *Client) lockConn(ctx context.Context, i int) (*lockConn, error) {
	if lc := c.pools[i].get(); lc != nil {
		return lc, nil
	}
	return c.dialLock(ctx, i)
}

// dialLock dials a new lock connection to server i, and probes the
// server's generation on it when the Client does not know it yet. A server
// that cannot be connected to in time is ErrUnreachable, one that drops the
// connection or stays silent during the probe ErrConnLost; refused
// credentials (ErrAuth), a bad token (ErrInvalidInput) and a cancelled ctx
// are neither.
func (c *Client) dialLock(ctx context.Context, i int) (*lockConn, error) {
	return c.dialSession(ctx, i, "")
}

// dialSession is dialLock for a stream: to a cluster member, the
// connection presents ref, or a new ref when ref is "" (see WithCluster).
func (c *Client) dialSession(ctx context.Context, i int, ref string) (*lockConn, error) {
	start := time.Now()
	sc, err := c.dialer.DialSync(ctx, c.cfg.servers[i])
	c.observeDial(i, start, err)
	probed := err == nil && c.gens[i].load() == GenUnknown
	if probed {
		deadline := time.Now().Add(c.cfg.connectTimeout)
		err = c.learnGeneration(ctx, i, func(req wire.Request) (string, error) {
			return sc.ExchangeContext(ctx, req, deadline)
		})
		if err != nil {
			_ = sc.Close()
		}
	}
	if err == nil && c.cl != nil {
		probed = true // as for the probe: connected, then lost
		if ref, err = c.presentRef(ctx, sc, c.cfg.servers[i], ref); err != nil {
			_ = sc.Close()
		}
	}
	switch {
	case err == nil:
		return &lockConn{SyncConn: sc, ref: ref}, nil
	case errors.Is(err, wire.ErrAuth), errors.Is(err, wire.ErrInvalidInput), errors.Is(err, ErrUnsupported),
		errors.Is(ctx.Err(), context.Canceled):
		return nil, err
	case probed && errors.Is(err, wire.ErrClosed):
		return nil, connLost(err) // connected, and lost during the probe
	default:
		return nil, fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
}

// firstExchange runs exchange on the connection connect(false) returns,
// and, when that connection turns out stale (see lockConn.stale), drops it
// and runs exchange once more on the one connect(true) returns, which must
// be fresh. It returns the connection of the last try, nil when connect
// failed, and the error.
func firstExchange(connect func(fresh bool) (*lockConn, error), drop func(*lockConn), exchange func(*lockConn) error) (*lockConn, error) {
	lc, err := connect(false)
	if err != nil {
		return nil, err
	}
	err = exchange(lc)
	stale := lc.stale(err)
	lc.pooled = false // past its first exchange: stale no longer applies
	if !stale {
		return lc, err
	}
	drop(lc)
	if lc, err = connect(true); err != nil {
		return nil, err
	}
	return lc, exchange(lc)
}

// stale reports whether err, from an exchange on lc, says that lc went
// stale in the pool: the server closed it while it was idle (dropping its
// connections, restarting), which the check on the way out of the pool
// can miss when the close is still in flight. No byte of a reply arrived,
// so the request may be sent once more on a fresh connection (see
// wire.ErrNoReply). So may a request a 2.x server answered error_draining,
// pooled connection or not: it did not act on it, and a fresh connection
// reaches whichever server listens at the address now.
func (lc *lockConn) stale(err error) bool {
	return lc.pooled && errors.Is(err, wire.ErrNoReply) || errors.Is(err, wire.ErrDraining)
}

// watchWith starts watching lc for the server hanging up, once; the caller
// owns lc. An error means lc cannot be watched and must not be kept.
func (lc *lockConn) watchWith(w *hangup.Watcher) error {
	if lc.watch != nil {
		return nil
	}
	h, err := w.Watch(lc.NetConn(), lc.hangUp)
	if err != nil {
		return err
	}
	lc.watch = h
	return nil
}

func (lc *lockConn) hangUp() {
	lc.hungUp.Store(true)
	if s := lc.owner.Load(); s != nil {
		s.hungUp(lc)
	}
}

// exchange sends req and reads its reply before deadline and within ctx
// (see wire.SyncConn.ExchangeContext). After a failure the connection is
// dead, but its socket stays open until the caller closes it. An
// error_draining reply fails the exchange as a connection lost before any
// reply (matching wire.ErrClosed and wire.ErrDraining) and closes the
// connection: the server closes it after that reply anyway, and never
// acted on the request.
func (lc *lockConn) exchange(ctx context.Context, req wire.Request, deadline time.Time) (string, error) {
	if lc.watch != nil {
		lc.watch.Pause()
	}
	line, err := lc.ExchangeContext(ctx, req, deadline)
	if err == nil && strings.HasPrefix(line, "error_draining") && errors.Is(wire.ParseOK(req.Cmd, line), wire.ErrDraining) {
		_ = lc.SyncConn.Close()
		return "", fmt.Errorf("%s: %w: %w", req.Cmd, wire.ErrDraining, wire.ErrClosed)
	}
	if err == nil && lc.watch != nil {
		lc.watch.Resume()
	}
	if err == nil && lc.ref != "" && strings.HasPrefix(line, "error_not_leader") {
		// A cluster member that does not lead: the caller goes on to
		// another (see Client.onLeader). The connection stays usable.
		return "", wire.ParseOK(req.Cmd, line)
	}
	return line, err
}

// errFired is checkIdle's answer for a connection whose watch fired.
var errFired = fmt.Errorf("%w: hung up while idle", wire.ErrClosed)

// checkIdle is wire.SyncConn.CheckIdle, with a watch that reads the
// connection (the portable one) paused meanwhile, and failing when that
// watch has fired: its callback, which sets hungUp, runs later on a
// goroutine of its own, and the portable watch took the byte that made it
// fire, which the peek then misses. A connection handed out after that
// would have the late callback tell its new owner of a hang-up.
func (lc *lockConn) checkIdle() error {
	if lc.watch != nil {
		lc.watch.Pause()
		defer lc.watch.Resume()
		if lc.watch.Fired() {
			return errFired
		}
	}
	return lc.CheckIdle()
}

func (lc *lockConn) close() {
	if lc.watch != nil {
		lc.watch.Stop()
	}
	_ = lc.SyncConn.Close()
}

// pool keeps idle, authenticated connections to one server. Only
// connections that ended a clean exchange with nothing left to read are
// put back; a connection is dropped when the server hung up on it, when
// anything arrived on it unasked, or when it has been idle long enough
// for the server's read timeout to be near. On the way in the check is
// what costs nothing (a line read with the reply, say); on the way out,
// where it matters, the socket is peeked at as well (see
// wire.SyncConn.CheckIdle): one system call per use (see BenchmarkPeek in
// internal/hangup).
type pool struct {
	mu         sync.Mutex
	closed     bool
	idle       []*lockConn
	max        int
	staleAfter time.Duration
}

// get returns an idle connection that passes the checks, or nil.
func (p *pool) get() *lockConn {
	for {
		p.mu.Lock()
		n := len(p.idle)
		if n == 0 {
			p.mu.Unlock()
			return nil
		}
		lc := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		// Outside mu: the peek is a system call.
		if p.usable(lc) && lc.checkIdle() == nil {
			lc.pooled = true
			return lc
		}
		lc.close()
	}
}

// usable reports whether lc may serve another user: the server has not
// hung up, nothing failed, the server's read timeout is not near, and no
// deadline meant for its last user waits for the next exchange.
func (p *pool) usable(lc *lockConn) bool {
	return !lc.hungUp.Load() && lc.Err() == nil && !lc.Expedited() &&
		time.Since(lc.LastUsed()) < p.staleAfter
}

// put returns lc to the pool, watched for hang-ups by w, or closes it when
// the pool is full.
func (p *pool) put(lc *lockConn, w *hangup.Watcher) {
	lc.owner.Store(nil)
	p.mu.Lock()
	room := p.room()
	p.mu.Unlock()
	// Watching costs a system call: only for a connection kept. What
	// arrives from here on, get sees.
	if !room || lc.Buffered() > 0 || lc.watchWith(w) != nil {
		lc.close()
		return
	}
	p.mu.Lock()
	if p.room() && p.usable(lc) {
		p.idle = append(p.idle, lc)
		lc = nil
	}
	p.mu.Unlock()
	if lc != nil {
		lc.close()
	}
}

// room reports whether the pool takes another connection; p.mu is held.
func (p *pool) room() bool { return !p.closed && len(p.idle) < p.max }

func (p *pool) drain() {
	p.mu.Lock()
	idle := p.idle
	p.idle, p.closed = nil, true
	p.mu.Unlock()
	for _, lc := range idle {
		lc.close()
	}
}
