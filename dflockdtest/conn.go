package dflockdtest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/subtle"
	"errors"
	"net"
	"os"
	"strconv"
	"sync"
	"time"
)

// readBufSize is the per-connection bufio.Reader size.
const readBufSize = 4096

// maxKeptWriteBuf caps the write buffer kept between writes.
const maxKeptWriteBuf = 64 << 10

var (
	lineDraining = []byte("error_draining\n")
	lineError    = []byte("error\n")
	lineErrAuth  = []byte("error_auth\n")
	lineOK       = []byte("ok\n")
	authFailWait = 100 * time.Millisecond
)

// conn is one client connection: one reader goroutine that reads, executes
// and answers requests strictly in order, plus (from its first listen on) one
// push-writer goroutine draining the bounded push queue.
type conn struct {
	s      *Server
	nc     net.Conn
	id     uint64
	remote string
	br     *bufio.Reader
	sess   *session
	sub    subscriber

	ctx      context.Context // cancelled by shutdown, kill, or the slow-listener policy
	cancel   context.CancelFunc
	killed   chan struct{} // closed when the server closes the connection
	killOnce sync.Once
	done     chan struct{} // closed once the connection is cleaned up

	authed bool
	lines  [3][maxLine]byte
	n      [3]int
	// authArg holds the argument line of a 2.x auth, which may be up to
	// 64 KiB; longArg says the current request's argument is there.
	authArg []byte
	longArg bool
	out     []byte // reply scratch (reader goroutine only)
	timer   *time.Timer

	wmu  sync.Mutex // serialises socket writes (replies vs pushes)
	wbuf []byte     // guarded by wmu
}

func newConn(s *Server, nc net.Conn) *conn {
	id := s.nextID.Add(1)
	c := &conn{
		s:      s,
		nc:     nc,
		id:     id,
		remote: nc.RemoteAddr().String(),
		br:     bufio.NewReaderSize(nc, readBufSize),
		sess:   newSession(id),
		killed: make(chan struct{}),
		done:   make(chan struct{}),
		authed: s.authToken == nil,
		out:    make([]byte, 0, 128),
	}
	c.sess.inc = s.inc
	c.ctx, c.cancel = context.WithCancel(s.baseCtx)
	c.sub.id = id
	c.sub.cancel = c.cancel
	return c
}

func (c *conn) info() ConnInfo {
	return ConnInfo{ID: c.id, Remote: c.remote, Subscriptions: c.s.hub.subscriptions(&c.sub)}
}

func (c *conn) reevalMute() {
	if m := c.s.muteMatcher(); m != nil {
		c.sub.muted.Store(m(c.info()))
	}
}

// kill closes the connection from the server side (drop, force-close).
func (c *conn) kill() {
	c.killOnce.Do(func() {
		close(c.killed)
		c.cancel()
		_ = c.nc.Close()
	})
}

func (c *conn) cleanup() {
	s := c.s
	// Left before the socket closes: a client that sees the close finds
	// the clean-up done (a cluster's orphans ready to re-adopt, say).
	s.leave(c.sess)
	_ = c.nc.Close()
	s.hub.removeAll(&c.sub)
	c.cancel()
	if c.timer != nil {
		c.timer.Stop()
	}
	s.unregister(c)
	close(c.done)
	s.log.Debug().Uint64("conn", c.id).Str("remote", c.remote).Msg("connection closed")
	s.connWG.Done()
}

type readStatus uint8

const (
	rdOK readStatus = iota
	rdTooLong
	rdTimeout
	rdClosed
)

func (c *conn) serve() {
	defer c.cleanup()
	c.s.log.Debug().Uint64("conn", c.id).Str("remote", c.remote).Msg("connection opened")
	for {
		st := c.readRequest()
		// Nothing is acted upon, not even a disconnect, while frozen.
		if !c.s.waitThaw(c) {
			return
		}
		switch st {
		case rdOK:
		case rdTooLong, rdTimeout:
			if !c.authed {
				c.authFail()
				return
			}
			c.writeReply(lineError)
			return
		default:
			return
		}
		if c.s.gen2 && c.s.isClosing() {
			// 2.x drains: whatever the request, the answer is
			// error_draining and the connection closes.
			c.writeReply(lineDraining)
			return
		}
		if !c.authed {
			if !c.doAuth() {
				return
			}
			continue
		}
		if !c.dispatch() {
			return
		}
	}
}

// readRequest reads the three lines of one request. It stops at the first
// line that is too long (the rest is not read).
func (c *conn) readRequest() readStatus {
	for i := range c.lines {
		if st := c.readLine(i); st != rdOK {
			return st
		}
	}
	return rdOK
}

// lineBuffered reports whether a complete line is already buffered, in which
// case reading it cannot block and the read deadline need not be re-armed.
func (c *conn) lineBuffered() bool {
	n := c.br.Buffered()
	if n == 0 {
		return false
	}
	b, _ := c.br.Peek(n)
	return bytes.IndexByte(b, '\n') >= 0
}

// readLine reads one LF-terminated line into c.lines[i], dropping every CR.
// More than maxLine bytes: the rest of the line is skipped up to its LF and
// rdTooLong returned. The read deadline is re-armed before each line.
func (c *conn) readLine(i int) readStatus {
	buf := c.lines[i][:]
	if i == 2 {
		// Kept for this request only: auth comes once per connection.
		c.longArg = c.s.gen2 && string(c.line(0)) == "auth"
		c.authArg = nil
		if c.longArg {
			c.authArg = make([]byte, maxAuthArgV2)
			buf = c.authArg
		}
	}
	n := 0
	over := false
	armed := false
	var gen uint64
	for {
		if !armed {
			if !c.lineBuffered() {
				gen = c.s.freezeGen.Load()
				_ = c.nc.SetReadDeadline(time.Now().Add(c.s.cfg.ReadTimeout))
			}
			armed = true
		}
		frag, err := c.br.ReadSlice('\n')
		body := frag
		if err == nil {
			body = frag[:len(frag)-1]
		}
		for len(body) > 0 {
			seg := body
			j := bytes.IndexByte(body, '\r')
			if j >= 0 {
				seg = body[:j]
			}
			if room := len(buf) - n; len(seg) > room {
				copy(buf[n:], seg[:room])
				n = len(buf)
				over = true
			} else {
				n += copy(buf[n:], seg)
			}
			if j < 0 {
				break
			}
			body = body[j+1:]
		}
		switch {
		case err == nil:
			c.n[i] = n
			if over {
				return rdTooLong
			}
			return rdOK
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, os.ErrDeadlineExceeded):
			if c.s.frozen.Load() || c.s.freezeGen.Load() != gen {
				// The deadline ran (partly) while frozen: it does not count.
				if !c.s.waitThaw(c) {
					return rdClosed
				}
				armed = false
				continue
			}
			return rdTimeout
		default:
			return rdClosed
		}
	}
}

func (c *conn) line(i int) []byte {
	if i == 2 && c.longArg {
		return c.authArg[:c.n[2]]
	}
	return c.lines[i][:c.n[i]]
}

// writeLocked writes b with the write timeout. wmu must be held.
func (c *conn) writeLocked(b []byte) error {
	if wt := c.s.cfg.WriteTimeout; wt > 0 {
		_ = c.nc.SetWriteDeadline(time.Now().Add(wt))
	}
	_, err := c.nc.Write(b)
	return err
}

// writeReply writes one reply line. Pushes queued before it are written
// first, so a sig line queued before a reply is read before that reply.
func (c *conn) writeReply(b []byte) bool {
	if !c.s.waitThaw(c) {
		return false
	}
	c.wmu.Lock()
	out := b
	if q := c.sub.pq; q != nil {
		c.wbuf = q.drain(c.wbuf[:0], c.sub.muted.Load() || c.sub.dead.Load())
		if len(c.wbuf) > 0 {
			c.wbuf = append(c.wbuf, b...)
			out = c.wbuf
		}
	}
	err := c.writeLocked(out)
	if cap(c.wbuf) > maxKeptWriteBuf {
		c.wbuf = nil
	}
	c.wmu.Unlock()
	return err == nil
}

// pushWriter drains the push queue. After a failed push write every later
// push is silently discarded (the connection stays open and subscribed).
func (c *conn) pushWriter(q *pushQueue) {
	defer c.s.connWG.Done()
	for {
		select {
		case <-q.wake:
		case <-c.done:
			return
		}
		if !c.s.waitThaw(c) {
			return
		}
		c.wmu.Lock()
		c.wbuf = q.drain(c.wbuf[:0], c.sub.muted.Load() || c.sub.dead.Load())
		if len(c.wbuf) > 0 {
			if err := c.writeLocked(c.wbuf); err != nil {
				c.sub.dead.Store(true)
				c.s.log.Debug().Uint64("conn", c.id).Err(err).Msg("push write failed; pushes discarded from now on")
			}
		}
		if cap(c.wbuf) > maxKeptWriteBuf {
			c.wbuf = nil
		}
		c.wmu.Unlock()
	}
}

func (c *conn) authFail() {
	c.writeReply(lineErrAuth)
	t := time.NewTimer(authFailWait)
	defer t.Stop()
	select {
	case <-t.C:
	case <-c.killed:
	case <-c.s.closing:
	}
}

// doAuth handles the first request when auth is on.
func (c *conn) doAuth() bool {
	if string(c.line(0)) != "auth" ||
		subtle.ConstantTimeCompare(trimSpace(c.line(2)), c.s.authToken) != 1 {
		c.authFail()
		return false
	}
	c.authed = true
	return c.writeReply(lineOK)
}

func (c *conn) replyStatus(st status) bool {
	c.out = append(append(c.out[:0], st.word()...), '\n')
	return c.writeReply(c.out)
}

func (c *conn) replyGrant(word string, g grant) bool {
	b := append(c.out[:0], word...)
	b = append(b, ' ')
	b = g.tok.appendHex(b)
	b = append(b, ' ')
	b = strconv.AppendInt(b, g.lease, 10)
	c.out = append(c.s.appendFence(b, g), '\n')
	return c.writeReply(c.out)
}

// appendFence appends the signals era's fence field, when the server sends it.
func (s *Server) appendFence(b []byte, g grant) []byte {
	if s.cfg.NoFences || s.gen2 {
		return b
	}
	b = append(b, ' ')
	return strconv.AppendUint(b, g.fence, 10)
}

func (c *conn) replyRenew(g grant) bool {
	b := append(c.out[:0], "ok "...)
	b = strconv.AppendInt(b, g.lease, 10)
	c.out = append(c.s.appendFence(b, g), '\n')
	return c.writeReply(c.out)
}

// dispatch executes one request; false closes the connection.
func (c *conn) dispatch() bool {
	cmd, key, arg := c.line(0), c.line(1), c.line(2)
	if c.s.gen2 {
		if ok, done := c.dispatchV2(cmd, key); done {
			return ok
		}
	}
	switch string(cmd) {
	case "l":
		return c.cmdAcquire(key, arg, false)
	case "sl":
		return c.cmdAcquire(key, arg, true)
	case "r", "sr":
		return c.cmdRelease(key, arg)
	case "n", "sn":
		return c.cmdRenew(key, arg)
	case "e":
		return c.cmdEnqueue(key, arg, false)
	case "se":
		return c.cmdEnqueue(key, arg, true)
	case "w", "sw":
		return c.cmdWait(key, arg)
	case "stats":
		c.out = append(append(append(c.out[:0], "ok "...), c.s.statsJSON()...), '\n')
		ok := c.writeReply(c.out)
		if cap(c.out) > maxKeptWriteBuf {
			c.out = make([]byte, 0, 128)
		}
		return ok
	case "auth":
		// Auth off, or already authenticated.
		return c.writeReply(lineError)
	case "listen":
		return c.cmdListen(key, arg)
	case "unlisten":
		return c.cmdUnlisten(key, arg)
	case "signal":
		return c.cmdSignal(key, arg)
	case "ping":
		c.s.pings.Add(1)
		if c.s.cfg.PingError {
			return c.writeReply(lineError)
		}
		return c.writeReply(lineOK)
	default:
		return c.writeReply(lineError)
	}
}

// cmdAcquire serves l (timeout [lease]) and sl (timeout limit [lease]).
func (c *conn) cmdAcquire(key, arg []byte, sem bool) bool {
	if !validKey(key) {
		return c.writeReply(lineError)
	}
	var f [3][]byte
	nf := splitFields(arg, f[:])
	if nf < 1 {
		return c.writeReply(lineError)
	}
	timeout, ok := parseTimeout(f[0])
	if !ok {
		return c.writeReply(lineError)
	}
	limit, lease, ok := c.limitAndLease(f[1:], nf-1, sem)
	if !ok {
		return c.writeReply(lineError)
	}
	st, g, w := c.s.tbl.acquire(c.sess, key, limit, lease, timeout > 0, time.Now())
	if st == stWait {
		if st, g, ok = c.block(w, timeout); !ok {
			return false
		}
	}
	if st == stOK {
		return c.replyGrant("ok", g)
	}
	return c.replyStatus(st)
}

// block waits for w to be granted, for the timeout, or for the connection's
// context (shutdown, kill, slow-listener cancel). The peer closing is not
// noticed meanwhile (the reader is here, not reading), except on a cluster
// node, which watches for it as dflockd 2.x does (protocol-v2.md §4) and
// leaves the clean-up (orphan or release) to the connection's end. ok
// false means: no reply, close.
func (c *conn) block(w *waiter, timeoutSec int64) (st status, g grant, ok bool) {
	var peerGone <-chan struct{}
	if c.s.node != nil {
		var stop func()
		peerGone, stop = c.watchPeer()
		defer stop()
	}
	d := time.Duration(timeoutSec) * time.Second
	if c.timer == nil {
		c.timer = time.NewTimer(d)
	} else {
		c.timer.Reset(d)
	}
	defer c.timer.Stop()
	tbl := c.s.tbl
	for {
		select {
		case <-c.sess.wake:
			if st, g, done := tbl.tryClaim(w, time.Now()); done {
				return st, g, true
			}
		case <-c.timer.C:
			st, g = tbl.cancelWait(w, false, time.Now())
			return st, g, true
		case <-c.ctx.Done():
			if c.s.node == nil {
				tbl.cancelWait(w, true, time.Now())
			} // else the connection's clean-up decides: orphan, release or keep
			return 0, grant{}, false
		case <-peerGone:
			return 0, grant{}, false
		}
	}
}

// watchPeer watches, while the reader blocks in a wait, for the client
// closing its side: a peek on a goroutine of its own. A byte that arrives
// instead stays buffered for the next request. stop ends the watch and
// returns once the goroutine has; the next line read re-arms the read
// deadline.
func (c *conn) watchPeer() (gone <-chan struct{}, stop func()) {
	closed, done := make(chan struct{}), make(chan struct{})
	_ = c.nc.SetReadDeadline(time.Time{})
	go func() {
		defer close(done)
		if _, err := c.br.Peek(1); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			close(closed)
		}
	}()
	return closed, func() {
		_ = c.nc.SetReadDeadline(time.Unix(1, 0))
		<-done
	}
}

// cmdRelease serves r/sr: the whole trimmed argument is the token.
func (c *conn) cmdRelease(key, arg []byte) bool {
	if !validKey(key) {
		return c.writeReply(lineError)
	}
	tok := trimSpace(arg)
	if len(tok) == 0 || !c.s.tbl.release(key, tok, time.Now()) {
		return c.writeReply(lineError)
	}
	return c.writeReply(lineOK)
}

// cmdRenew serves n/sn: token [lease]; no lease = the server default.
func (c *conn) cmdRenew(key, arg []byte) bool {
	if !validKey(key) {
		return c.writeReply(lineError)
	}
	var f [2][]byte
	nf := splitFields(arg, f[:])
	if nf < 1 || nf > 2 {
		return c.writeReply(lineError)
	}
	lease := c.s.defaultLease
	if nf == 2 {
		var ok bool
		if lease, ok = parseLease(f[1]); !ok {
			return c.writeReply(lineError)
		}
	}
	st, g := c.s.tbl.renewAs(c.sess, key, f[0], lease, time.Now())
	if st == stOK {
		return c.replyRenew(g)
	}
	return c.replyStatus(st)
}

// limitAndLease parses what l/sl and e/se take after their leading
// fields: a limit for a semaphore (1 for a lock), then an optional lease
// (the server default when absent). tail holds the fields, n how many there
// were (more than len(tail) when there were too many). ok is false for a
// wrong count or a bad value.
func (c *conn) limitAndLease(tail [][]byte, n int, sem bool) (limit int, lease int64, ok bool) {
	need := 0
	if sem {
		need = 1
	}
	if n < need || n > need+1 {
		return 0, 0, false
	}
	limit = 1
	if sem {
		if limit, ok = parseLimit(tail[0]); !ok || (c.s.gen2 && limit > maxSemLimitV2) {
			return 0, 0, false
		}
	}
	lease = c.s.defaultLease
	if n > need {
		if lease, ok = parseLease(tail[need]); !ok {
			return 0, 0, false
		}
	}
	return limit, lease, true
}

// cmdEnqueue serves e ([lease]) and se (limit [lease]).
func (c *conn) cmdEnqueue(key, arg []byte, sem bool) bool {
	if !validKey(key) {
		return c.writeReply(lineError)
	}
	var f [2][]byte
	nf := splitFields(arg, f[:])
	limit, lease, ok := c.limitAndLease(f[:], nf, sem)
	if !ok {
		return c.writeReply(lineError)
	}
	st, g := c.s.tbl.enqueue(c.sess, key, limit, lease, time.Now())
	if st == stAcquired {
		return c.replyGrant("acquired", g)
	}
	return c.replyStatus(st)
}

// cmdWait serves w/sw (timeout).
func (c *conn) cmdWait(key, arg []byte) bool {
	if !validKey(key) {
		return c.writeReply(lineError)
	}
	var f [1][]byte
	if splitFields(arg, f[:]) != 1 {
		return c.writeReply(lineError)
	}
	timeout, ok := parseTimeout(f[0])
	if !ok {
		return c.writeReply(lineError)
	}
	st, g, w := c.s.tbl.waitBegin(c.sess, key, timeout == 0, time.Now())
	if st == stWait {
		if st, g, ok = c.block(w, timeout); !ok {
			return false
		}
	}
	if st == stOK {
		return c.replyGrant("ok", g)
	}
	return c.replyStatus(st)
}

func (c *conn) cmdListen(key, arg []byte) bool {
	if !validPattern(key) {
		return c.writeReply(lineError)
	}
	if c.sub.pq == nil {
		q := newPushQueue()
		c.sub.pq = q
		c.s.connWG.Add(1)
		go c.pushWriter(q)
	}
	if !c.s.hub.listen(&c.sub, key, trimSpace(arg), c.s.cfg.MaxSubscriptions) {
		return c.writeReply(lineError)
	}
	c.reevalMute()
	return c.writeReply(lineOK)
}

func (c *conn) cmdUnlisten(key, arg []byte) bool {
	if !validKey(key) {
		return c.writeReply(lineError)
	}
	c.s.hub.unlisten(&c.sub, key, trimSpace(arg))
	c.reevalMute()
	return c.writeReply(lineOK)
}

func (c *conn) cmdSignal(key, arg []byte) bool {
	if !validChannel(key) || len(arg) == 0 {
		return c.writeReply(lineError)
	}
	n := c.s.hub.signal(key, arg)
	b := append(c.out[:0], "ok "...)
	b = strconv.AppendInt(b, int64(n), 10)
	c.out = append(b, '\n')
	return c.writeReply(c.out)
}
