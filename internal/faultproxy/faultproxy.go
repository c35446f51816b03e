// Package faultproxy is an in-process TCP proxy on 127.0.0.1 that injects
// network faults between a client and one upstream server, for tests that
// must show how a client behaves when the network misbehaves.
//
// One Proxy stands for one link. Its faults are set and cleared at run time
// and apply at once to every connection through it, the ones already open
// included:
//
//   - latency: every chunk of bytes is delivered a fixed time after it was
//     read, in order (SetLatency);
//   - throttling: bytes go on at a limited rate (SetBandwidth);
//   - a pause, or black hole: bytes, the end of stream (FIN) included, are
//     held; the pause heals either by delivering all of them late and in
//     order (Resume) or by resetting every connection (ResetAndResume);
//   - a reset of every connection (Reset): both peers see a TCP RST.
//
// Latency, throttling and pauses are set per Direction. A half-close
// travels through the proxy as a half-close, so a peer that stops writing
// can still read.
package faultproxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// Direction selects the path a fault applies to.
type Direction uint8

const (
	// ToServer is the path from the client to the upstream server.
	ToServer Direction = 1 << iota
	// ToClient is the path from the upstream server back to the client:
	// the path replies take.
	ToClient
	// BothWays is both paths.
	BothWays = ToServer | ToClient
)

// String names the direction.
func (d Direction) String() string {
	switch d {
	case ToServer:
		return "to-server"
	case ToClient:
		return "to-client"
	case BothWays:
		return "both-ways"
	}
	return fmt.Sprintf("Direction(%d)", uint8(d))
}

// maxHeld bounds the bytes one path holds while it delays or pauses: past
// it the proxy stops reading from the sender, which TCP then slows down.
const maxHeld = 1 << 20

// readSize is the most bytes one read takes from a sender.
const readSize = 32 << 10

// dialTimeout bounds the connect to the upstream server.
const dialTimeout = 5 * time.Second

// faults is what one direction suffers.
type faults struct {
	latency   time.Duration
	bandwidth int // bytes per second; 0 is unlimited
	paused    bool
}

// Proxy forwards TCP connections from Addr to an upstream address through
// the faults currently set. Its methods are safe for concurrent use.
type Proxy struct {
	upstream string
	ln       net.Listener
	wg       sync.WaitGroup

	mu      sync.Mutex
	dirs    [2]faults // indexed by dirIndex
	changed chan struct{}
	conns   map[*link]struct{}
	closed  bool
}

// Start listens on 127.0.0.1 on a free port and forwards every connection
// to upstream.
func Start(upstream string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen: %w", err)
	}
	p := &Proxy{
		upstream: upstream,
		ln:       ln,
		changed:  make(chan struct{}),
		conns:    make(map[*link]struct{}),
	}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// New starts a proxy to upstream and closes it when the test ends.
func New(tb testing.TB, upstream string) *Proxy {
	tb.Helper()
	p, err := Start(upstream)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = p.Close() })
	return p
}

// Addr is the address clients connect to.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Upstream is the address the proxy forwards to.
func (p *Proxy) Upstream() string { return p.upstream }

// SetLatency delays every chunk on the paths in d by lat from the moment
// the proxy read it; 0 clears it. A change applies to bytes already held:
// clearing latency delivers them at once, in order.
func (p *Proxy) SetLatency(d Direction, lat time.Duration) {
	p.update(d, func(f *faults) { f.latency = lat })
}

// SetBandwidth limits the paths in d to bytesPerSecond; 0 or less clears
// the limit.
func (p *Proxy) SetBandwidth(d Direction, bytesPerSecond int) {
	p.update(d, func(f *faults) { f.bandwidth = max(bytesPerSecond, 0) })
}

// Pause holds every byte on the paths in d, the end of stream included,
// until Resume, ResetAndResume or Clear. Connections stay open and new ones
// are accepted; their bytes are held too.
func (p *Proxy) Pause(d Direction) {
	p.update(d, func(f *faults) { f.paused = true })
}

// Resume ends a pause on both paths: what was held is delivered, late and
// in order, FIN included.
func (p *Proxy) Resume() {
	p.update(BothWays, func(f *faults) { f.paused = false })
}

// ResetAndResume ends a pause by resetting every connection open now, so
// what was held is never delivered, and then lets bytes flow again.
func (p *Proxy) ResetAndResume() {
	p.Reset()
	p.Resume()
}

// Reset resets every connection open now: both peers see a TCP RST and
// bytes held for them are dropped. New connections are accepted as before.
func (p *Proxy) Reset() {
	p.mu.Lock()
	ls := make([]*link, 0, len(p.conns))
	for l := range p.conns {
		ls = append(ls, l)
	}
	p.mu.Unlock()
	for _, l := range ls {
		l.reset()
	}
}

// Clear removes every fault on both paths; held bytes are delivered late
// and in order.
func (p *Proxy) Clear() {
	p.update(BothWays, func(f *faults) { *f = faults{} })
}

// Conns is the number of connections open through the proxy.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// Close stops accepting, resets every connection and returns once every
// goroutine of the proxy has exited. It is idempotent.
func (p *Proxy) Close() error {
	p.mu.Lock()
	already := p.closed
	p.closed = true
	p.mu.Unlock()
	if !already {
		_ = p.ln.Close()
		p.Reset()
	}
	p.wg.Wait()
	return nil
}

func (p *Proxy) update(d Direction, f func(*faults)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, dir := range []Direction{ToServer, ToClient} {
		if d&dir != 0 {
			f(&p.dirs[i])
		}
	}
	close(p.changed)
	p.changed = make(chan struct{})
}

// state returns the faults on one path and a channel closed at their next
// change.
func (p *Proxy) state(d Direction) (faults, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.dirs[dirIndex(d)], p.changed
}

func dirIndex(d Direction) int {
	if d == ToClient {
		return 1
	}
	return 0
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.DialTimeout("tcp", p.upstream, dialTimeout)
		if err != nil {
			resetConn(c.(*net.TCPConn))
			continue
		}
		l := &link{
			p:      p,
			client: c.(*net.TCPConn),
			server: up.(*net.TCPConn),
			done:   make(chan struct{}),
			open:   2,
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			resetConn(l.client)
			resetConn(l.server)
			return
		}
		p.conns[l] = struct{}{}
		p.wg.Add(4)
		p.mu.Unlock()
		for _, pp := range []*path{
			newPath(l, ToServer, l.client, l.server),
			newPath(l, ToClient, l.server, l.client),
		} {
			go pp.read()
			go pp.write()
		}
	}
}

// link is one proxied connection: the client's side and the server's.
type link struct {
	p              *Proxy
	client, server *net.TCPConn
	done           chan struct{} // closed when the link ends
	once           sync.Once

	mu   sync.Mutex
	open int // paths whose end of stream is not yet delivered
}

// reset ends the link with a TCP RST on both sides.
func (l *link) reset() {
	l.end(func() {
		resetConn(l.client)
		resetConn(l.server)
	})
}

// pathDone records that one path delivered its end of stream; the link
// closes plainly when both have.
func (l *link) pathDone() {
	l.mu.Lock()
	l.open--
	last := l.open == 0
	l.mu.Unlock()
	if last {
		l.end(func() {
			_ = l.client.Close()
			_ = l.server.Close()
		})
	}
}

func (l *link) end(closeConns func()) {
	l.once.Do(func() {
		close(l.done)
		closeConns()
		l.p.mu.Lock()
		delete(l.p.conns, l)
		l.p.mu.Unlock()
	})
}

func resetConn(c *net.TCPConn) {
	_ = c.SetLinger(0)
	_ = c.Close()
}

// chunk is what one read returned, or the end of stream when eof is set.
type chunk struct {
	data []byte
	at   time.Time
	eof  bool
}

// path carries one direction of a link: a reader queues what the sender
// wrote, a writer delivers it when the faults allow.
type path struct {
	l        *link
	dir      Direction
	src, dst *net.TCPConn

	mu    sync.Mutex
	queue []chunk
	held  int
	wake  chan struct{} // the writer's: something was queued
	room  chan struct{} // the reader's: the queue shrank
}

func newPath(l *link, d Direction, src, dst *net.TCPConn) *path {
	return &path{l: l, dir: d, src: src, dst: dst,
		wake: make(chan struct{}, 1), room: make(chan struct{}, 1)}
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (pp *path) read() {
	defer pp.l.p.wg.Done()
	buf := make([]byte, readSize)
	for {
		if !pp.waitRoom() {
			return
		}
		n, err := pp.src.Read(buf)
		if n > 0 {
			pp.push(chunk{data: bytes.Clone(buf[:n]), at: time.Now()})
		}
		if errors.Is(err, io.EOF) {
			pp.push(chunk{at: time.Now(), eof: true})
			return
		}
		if err != nil {
			// A reset by the sender, or the link ended: the receiver is
			// reset too, as a reset on a real path would reach it.
			pp.l.reset()
			return
		}
	}
}

// waitRoom waits until the queue holds less than maxHeld; false when the
// link ended.
func (pp *path) waitRoom() bool {
	for {
		pp.mu.Lock()
		full := pp.held >= maxHeld
		pp.mu.Unlock()
		if !full {
			return true
		}
		select {
		case <-pp.room:
		case <-pp.l.done:
			return false
		}
	}
}

func (pp *path) push(c chunk) {
	pp.mu.Lock()
	pp.queue = append(pp.queue, c)
	pp.held += len(c.data)
	pp.mu.Unlock()
	signal(pp.wake)
}

// head waits for the oldest chunk; false when the link ended.
func (pp *path) head() (chunk, bool) {
	for {
		pp.mu.Lock()
		if len(pp.queue) > 0 {
			c := pp.queue[0]
			pp.mu.Unlock()
			return c, true
		}
		pp.mu.Unlock()
		select {
		case <-pp.wake:
		case <-pp.l.done:
			return chunk{}, false
		}
	}
}

func (pp *path) pop() {
	pp.mu.Lock()
	pp.held -= len(pp.queue[0].data)
	pp.queue[0] = chunk{}
	pp.queue = pp.queue[1:]
	pp.mu.Unlock()
	signal(pp.room)
}

func (pp *path) write() {
	defer pp.l.p.wg.Done()
	for {
		c, ok := pp.head()
		if !ok || !pp.waitDue(c) {
			return
		}
		if c.eof {
			_ = pp.dst.CloseWrite()
			pp.l.pathDone()
			return
		}
		if !pp.deliver(c.data) {
			pp.l.reset()
			return
		}
		pp.pop()
	}
}

// waitDue waits until c may go: no pause on the path and its latency
// served. False when the link ended.
func (pp *path) waitDue(c chunk) bool {
	for {
		f, changed := pp.l.p.state(pp.dir)
		var t *time.Timer
		var timer <-chan time.Time
		if !f.paused {
			wait := time.Until(c.at.Add(f.latency))
			if wait <= 0 {
				return true
			}
			t = time.NewTimer(wait)
			timer = t.C
		}
		ended := false
		select {
		case <-timer:
		case <-changed:
		case <-pp.l.done:
			ended = true
		}
		if t != nil {
			t.Stop()
		}
		if ended {
			return false
		}
	}
}

// deliver writes data at the path's bandwidth, re-reading the limit as it
// goes so a change applies mid-chunk. False when the write failed or the
// link ended.
func (pp *path) deliver(data []byte) bool {
	for len(data) > 0 {
		f, _ := pp.l.p.state(pp.dir)
		n := len(data)
		var pace time.Duration
		if f.bandwidth > 0 {
			// Slices of about 10 ms at the rate keep the pace smooth.
			n = min(n, max(f.bandwidth/100, 1))
			pace = time.Duration(n) * time.Second / time.Duration(f.bandwidth)
		}
		if _, err := pp.dst.Write(data[:n]); err != nil {
			return false
		}
		data = data[n:]
		if pace > 0 {
			t := time.NewTimer(pace)
			select {
			case <-t.C:
			case <-pp.l.done:
				t.Stop()
				return false
			}
		}
	}
	return true
}
