// Package hangup tells the owner of a connection that the peer hung up,
// without a goroutine per connection where the platform allows it.
//
// A dflockd server never writes on a lock connection unless asked, so an
// idle lock connection that becomes readable has been closed by the server
// (or is about to be). Watching for that is how a held lock notices a lost
// server at once instead of at its next renewal.
//
// On Linux one goroutine per Watcher waits in epoll for EPOLLRDHUP, EPOLLHUP
// and EPOLLERR on every watched socket; arriving data does not count, so
// the owner reads and writes the connection as it likes while it is watched
// and Pause and Resume cost nothing. Elsewhere, and for connections without
// a socket descriptor, each watch is a goroutine with a read pending, which
// the owner must Pause before reading and Resume after.
//
// A Peeker answers the same question on demand, without blocking: whether
// anything (data, the end of the stream, an error) waits on a socket.
package hangup

import (
	"errors"
	"net"
	"os"
	"sync"
	"time"

	"github.com/sourcegraph/conc"
)

// ErrClosed is returned by Watch on a closed Watcher.
var ErrClosed = errors.New("hangup: watcher closed")

// Watcher watches connections for the peer hanging up. The zero value is
// not usable; make one with New. It is safe for concurrent use.
type Watcher struct {
	portable bool // always use a goroutine per watch (tests, other platforms)

	mu      sync.Mutex
	closed  bool
	poller  *poller // started by the first watch that can use it
	watches map[*Watch]struct{}
	running conc.WaitGroup // callbacks and portable readers
}

// New returns a Watcher that uses the platform's poller where it can.
func New() *Watcher { return &Watcher{watches: make(map[*Watch]struct{})} }

// NewPortable returns a Watcher that uses a goroutine with a pending read
// per watch on every platform. Tests use it to exercise that path.
func NewPortable() *Watcher {
	return &Watcher{portable: true, watches: make(map[*Watch]struct{})}
}

// Watch is one watched connection.
type Watch struct {
	w  *Watcher
	fn func()

	// Set on the poller path: removes the descriptor from the poller.
	stop func()

	// Set on the portable path.
	reader *reader

	mu    sync.Mutex // guards fired and stopped
	fired bool
	done  bool // stopped
}

// Watch starts watching nc and calls fn once, on a goroutine of its own,
// when the peer hangs up or the connection fails. On the portable path fn
// is also called when data arrives while the watch is not paused, and nc's
// read deadline is cleared. Stop the watch before closing nc.
func (w *Watcher) Watch(nc net.Conn, fn func()) (*Watch, error) {
	h := &Watch{w: w, fn: fn}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil, ErrClosed
	}
	if !w.portable {
		if err := w.watchPolled(h, nc); err == nil {
			w.watches[h] = struct{}{}
			return h, nil
		} else if !errors.Is(err, errNotPollable) {
			return nil, err
		}
	}
	// The owner may have left a read deadline from its last exchange; the
	// pending read must not inherit it.
	if err := nc.SetReadDeadline(time.Time{}); err != nil {
		return nil, err
	}
	h.reader = newReader(nc)
	w.watches[h] = struct{}{}
	w.running.Go(func() { h.reader.run(h.fire) })
	return h, nil
}

// fire runs fn unless the watch was stopped or has fired; it reports
// whether it did.
func (h *Watch) fire() bool {
	h.mu.Lock()
	if h.fired || h.done {
		h.mu.Unlock()
		return false
	}
	h.fired = true
	h.mu.Unlock()
	h.w.forget(h)
	h.w.running.Go(h.fn)
	return true
}

func (w *Watcher) forget(h *Watch) {
	w.mu.Lock()
	delete(w.watches, h)
	w.mu.Unlock()
}

// Pause must be called before the owner reads from the connection, and
// Resume after, on the portable path; on the poller path they do nothing.
// A paused watch still ends with Stop.
func (h *Watch) Pause() {
	if h.reader != nil {
		h.reader.pause()
	}
}

// Fired reports whether the watch has fired: fn has run, or is about to
// run on a goroutine of its own. On the portable path a watch fires when
// its read returns a byte, the end of the stream or an error, and the
// byte is then gone from the connection, where a peek would not see it;
// once Pause returns, the watch can no longer fire, so the answer holds
// until Resume.
func (h *Watch) Fired() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.fired
}

// Resume undoes Pause. It clears the connection's read deadline on the
// portable path.
func (h *Watch) Resume() {
	if h.reader != nil {
		h.reader.resume()
	}
}

// Stop ends the watch and reports whether fn had not been called, in which
// case it never will be. After Stop the watch reads nothing more from the
// connection. Stop is idempotent.
func (h *Watch) Stop() bool {
	h.mu.Lock()
	fired, done := h.fired, h.done
	h.done = true
	h.mu.Unlock()
	if done {
		return !fired
	}
	h.w.forget(h)
	if h.stop != nil {
		h.stop()
	}
	if h.reader != nil {
		h.reader.stop()
	}
	return !fired
}

// Close stops every watch and waits for callbacks that are running. It is
// idempotent.
func (w *Watcher) Close() {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		w.running.Wait()
		return
	}
	w.closed = true
	live := make([]*Watch, 0, len(w.watches))
	for h := range w.watches {
		live = append(live, h)
	}
	p := w.poller
	w.mu.Unlock()
	for _, h := range live {
		h.Stop()
	}
	if p != nil {
		p.close()
	}
	w.running.Wait()
}

// reader is the portable watch: a goroutine with a one-byte read pending.
type reader struct {
	nc      net.Conn
	mu      sync.Mutex
	cond    sync.Cond // broadcast when paused, stopped or reading changes
	paused  bool
	stopped bool
	reading bool // a Read is in progress
}

func newReader(nc net.Conn) *reader {
	r := &reader{nc: nc}
	r.cond.L = &r.mu
	return r
}

// aLongTimeAgo is a read deadline that makes a pending Read return at once.
var aLongTimeAgo = time.Unix(1, 0)

func (r *reader) run(fire func() bool) {
	var b [1]byte
	for {
		r.mu.Lock()
		for r.paused && !r.stopped {
			r.cond.Wait()
		}
		if r.stopped {
			r.mu.Unlock()
			return
		}
		r.reading = true
		r.mu.Unlock()

		n, err := r.nc.Read(b[:])

		r.mu.Lock()
		asked, stopped := r.paused || r.stopped, r.stopped
		// Data nobody asked for, end of stream, or an error: the
		// connection is no good any more. The watch fires before reading
		// is cleared, so that a Pause, which waits for that, returns with
		// Fired true.
		ended := !stopped && !(asked && n == 0 && errors.Is(err, os.ErrDeadlineExceeded))
		if ended {
			fire()
		}
		r.reading = false
		r.cond.Broadcast()
		r.mu.Unlock()
		if stopped || ended {
			return
		}
		// Paused: wait for Resume.
	}
}

// leave makes a pending Read return and waits until it has; r.mu is held
// and paused or stopped is set.
func (r *reader) leave() {
	if r.reading {
		_ = r.nc.SetReadDeadline(aLongTimeAgo)
	}
	for r.reading {
		r.cond.Wait()
	}
}

func (r *reader) pause() {
	r.mu.Lock()
	r.paused = true
	r.leave()
	r.mu.Unlock()
	// The owner reads next, with deadlines of its own or none.
	_ = r.nc.SetReadDeadline(time.Time{})
}

func (r *reader) resume() {
	_ = r.nc.SetReadDeadline(time.Time{})
	r.mu.Lock()
	r.paused = false
	r.cond.Broadcast()
	r.mu.Unlock()
}

func (r *reader) stop() {
	r.mu.Lock()
	r.stopped = true
	r.cond.Broadcast()
	r.leave()
	r.mu.Unlock()
}
