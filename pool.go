package dfstream

import (
	"context"
	"fmt"
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

// dialLock dials a new lock connection to server i.
func (c *Client) dialLock(ctx context.Context, i int) (*lockConn, error) {
	sc, err := c.dialer.DialSync(ctx, c.cfg.servers[i])
	if err != nil {
		return nil, fmt.Errorf("dfstream: %w", err)
	}
	return &lockConn{SyncConn: sc}, nil
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
// (see wire.SyncConn.ExchangeContext). A failure closes the connection.
func (lc *lockConn) exchange(ctx context.Context, req wire.Request, deadline time.Time) (string, error) {
	if lc.watch == nil {
		return lc.ExchangeContext(ctx, req, deadline)
	}
	lc.watch.Pause()
	line, err := lc.ExchangeContext(ctx, req, deadline)
	if err == nil {
		lc.watch.Resume()
	}
	return line, err
}

func (lc *lockConn) close() {
	if lc.watch != nil {
		lc.watch.Stop()
	}
	_ = lc.SyncConn.Close()
}

// pool keeps idle, authenticated connections to one server. Only
// connections that ended a clean exchange are put back; a connection is
// dropped when the server hung up on it or when it has been idle long
// enough for the server's read timeout to be near.
type pool struct {
	mu         sync.Mutex
	closed     bool
	idle       []*lockConn
	max        int
	staleAfter time.Duration
}

func (p *pool) get() *lockConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.idle) > 0 {
		lc := p.idle[len(p.idle)-1]
		p.idle = p.idle[:len(p.idle)-1]
		if p.usable(lc) {
			return lc
		}
		lc.close()
	}
	return nil
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
	// Watching costs a system call: only for a connection kept.
	if !room || lc.watchWith(w) != nil {
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
