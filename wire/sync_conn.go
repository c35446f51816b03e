package wire

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dfstream/dfstream/internal/hangup"
)

// ErrNoReply matches the error of an exchange that failed because the peer
// closed or reset the connection (or the write failed for that reason)
// before a single byte of the reply arrived. A deadline, an interrupt or
// a context ending never produce it, nor does a reply cut off part way.
//
// The server did not answer: it closed the connection before it read the
// request (a server dropping idle connections, or restarting), or it
// failed before it could reply. A dflockd server answers each request
// before it reads the next, so in the first case, the usual one for a
// connection that was idle, it did not act on the request at all; in the
// second, whatever the request gained there (a lock, say) went with the
// connection, which the server releases. Sending the request again on a
// fresh connection is therefore safe for locks and stats; a signal may
// have been delivered already (a server that failed between delivering it
// and replying).
var ErrNoReply = errors.New("connection ended before any reply")

// SyncConn is a connection for strict request/reply exchanges made by one
// goroutine at a time. It has no goroutine of its own: Exchange writes the
// request and reads the reply on the caller's goroutine, which is the
// cheapest way to talk to a server that answers in order, and what a lock
// connection needs (the server never pushes on it).
//
// Every exchange is bounded by a deadline. Any failure (a write or read
// error, a deadline, a line over the cap) stops the SyncConn: the reply
// stream is out of step, so the connection is never used again, and every
// later read or write on it fails at once. The socket stays open until the
// owner calls Close, so that the owner decides when the server sees the
// connection end: a lock holder must say Lost before that, since the
// server releases the connection's locks as soon as it does. Input that
// fails validation returns an InputError and leaves it open.
type SyncConn struct {
	nc       net.Conn
	lr       *LineReader
	peeker   *hangup.Peeker // made by the first CheckIdle
	lastUsed atomic.Int64   // unix nanoseconds of the last write
	err      atomic.Pointer[closedError]

	dmu      sync.Mutex // guards the deadline fields, and the socket's deadline
	inflight bool       // an exchange is between its write and its reply
	current  time.Time  // the deadline of the exchange in flight
	limit    time.Time  // Expedite's bound for the next exchange
}

// NewSyncConn takes ownership of nc. Replies longer than maxReply bytes
// stop it (maxReply <= 0 means DefaultMaxReply).
func NewSyncConn(nc net.Conn, maxReply int) *SyncConn {
	c := &SyncConn{nc: nc, lr: NewLineReader(nc, maxReply)}
	c.lastUsed.Store(time.Now().UnixNano())
	return c
}

// Exchange writes req and reads its reply line, both before deadline (zero
// means none). It must not be called concurrently with itself. On a
// stopped SyncConn it returns Err.
func (c *SyncConn) Exchange(req Request, deadline time.Time) (string, error) {
	return c.exchange(context.Background(), req, deadline)
}

// ExchangeContext is Exchange bounded by ctx as well. If ctx ends first
// the exchange is cut short (stopping the SyncConn, as any failure does)
// and the error matches ctx's error; a ctx that has ended already writes
// nothing and leaves the SyncConn as it is. A ctx that ends as the reply
// arrives leaves nothing behind: the next exchange is not cut short.
func (c *SyncConn) ExchangeContext(ctx context.Context, req Request, deadline time.Time) (string, error) {
	if ctx.Done() == nil {
		return c.exchange(context.Background(), req, deadline)
	}
	if err := req.check(); err != nil {
		return "", err
	}
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("%s: %w", req.Cmd, err)
	}
	ctxDeadline, bounded := ctx.Deadline()
	if bounded = bounded && (deadline.IsZero() || ctxDeadline.Before(deadline)); bounded {
		deadline = ctxDeadline
	}
	interrupted := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(interrupted)
		c.interruptInFlight()
	})
	line, err := c.exchange(ctx, req, deadline)
	if !stop() {
		<-interrupted // so that it cannot reach a later exchange
	}
	switch {
	case err == nil:
	case ctx.Err() != nil:
		err = fmt.Errorf("%w: %w", ctx.Err(), err)
	case bounded && errors.Is(err, os.ErrDeadlineExceeded):
		// The socket's deadline is ctx's, and may pass just before ctx's
		// own timer fires.
		err = fmt.Errorf("%w: %w", context.DeadlineExceeded, err)
	}
	return line, err
}

// exchange is Exchange, cut short at its start when ctx has ended: ctx's
// AfterFunc may have run before the exchange was in flight.
func (c *SyncConn) exchange(ctx context.Context, req Request, deadline time.Time) (string, error) {
	if err := req.check(); err != nil {
		return "", err
	}
	if err := c.Err(); err != nil {
		return "", err
	}
	c.dmu.Lock()
	if !c.limit.IsZero() && (deadline.IsZero() || c.limit.Before(deadline)) {
		deadline = c.limit
	}
	if ctx.Err() != nil {
		deadline = aLongTimeAgo
	}
	c.limit, c.current, c.inflight = time.Time{}, deadline, true
	err := c.nc.SetDeadline(deadline)
	c.dmu.Unlock()
	if err != nil {
		return "", c.fail(req.Cmd, err)
	}

	bp := writeBufs.Get().(*[]byte)
	b := req.AppendTo((*bp)[:0])
	_, err = c.nc.Write(b)
	c.lastUsed.Store(time.Now().UnixNano())
	*bp = b[:0]
	writeBufs.Put(bp)
	var line string
	if err == nil {
		line, err = c.lr.ReadLine()
	}

	c.dmu.Lock()
	c.inflight = false
	c.dmu.Unlock()
	if err != nil {
		return "", c.fail(req.Cmd, c.noReply(err))
	}
	if IsPush(line) {
		return "", c.fail(req.Cmd, newProtocolError(req.Cmd, line, "push on a request/reply connection", nil))
	}
	return line, nil
}

// noReply marks err, which failed the exchange, with ErrNoReply when the
// peer ended the connection and not one byte of the reply had arrived.
func (c *SyncConn) noReply(err error) error {
	if c.Buffered() > 0 { // part of a reply, or bytes nobody asked for
		return err
	}
	for _, ended := range peerEnded {
		if errors.Is(err, ended) {
			return fmt.Errorf("%w: %w", ErrNoReply, err)
		}
	}
	return err
}

// Buffered returns the number of bytes c has read but not returned. On an
// idle connection they are bytes nobody asked for: the cheap part of
// CheckIdle, with no system call.
func (c *SyncConn) Buffered() int { return c.lr.end - c.lr.start }

// CheckIdle returns nil when c may serve its next exchange in step: it
// has not stopped, holds no byte it read but did not return, and nothing
// waits to be read on its connection. Otherwise it stops c and returns
// why (matching ErrClosed and the cause: io.EOF when the peer hung up, an
// ErrProtocol for bytes nobody asked for). A server never writes on a
// request/reply connection unasked, so anything there is a reply that
// would answer the next request in place of its own, or a hang-up.
//
// The socket is peeked at without blocking on Linux, Darwin and the BSDs;
// elsewhere only what c itself holds is checked. Under TLS the peek sees
// records: TLS 1.3 session tickets come with the handshake and are read
// with the first reply, so after an exchange a record waiting there is a
// close_notify, data, or a rare late handshake message, and CheckIdle
// fails for each (the last costs a new connection, never a reply out of
// step). What the TLS layer itself has buffered is checked by a read that
// cannot block.
//
// CheckIdle must not run during an exchange or alongside another reader of
// the connection (a hangup watch that reads must be paused).
func (c *SyncConn) CheckIdle() error {
	if err := c.Err(); err != nil {
		return err
	}
	if c.Buffered() > 0 {
		return c.fail("idle", newProtocolError("", "", "reply nobody asked for", nil))
	}
	if c.peeker == nil {
		c.peeker = hangup.NewPeeker(c.nc)
	}
	err := c.peeker.Peek()
	switch {
	case errors.Is(err, hangup.ErrNoPeek):
		err = nil
	case errors.Is(err, hangup.ErrPending):
		err = newProtocolError("", "", "data nobody asked for", err)
	}
	if _, wrapped := c.nc.(interface{ NetConn() net.Conn }); wrapped && err == nil {
		err = c.readNothing()
	}
	if err != nil {
		return c.fail("idle", err)
	}
	return nil
}

// readNothing reads from a wrapping connection (TLS) with a deadline that
// has passed, so that only what the wrapper has buffered can be read: no
// byte is the answer wanted.
func (c *SyncConn) readNothing() error {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	if err := c.nc.SetReadDeadline(aLongTimeAgo); err != nil {
		return err
	}
	var b [1]byte
	n, err := c.nc.Read(b[:])
	switch {
	case n > 0:
		return newProtocolError("", "", "data nobody asked for", nil)
	case errors.Is(err, os.ErrDeadlineExceeded):
		return c.nc.SetReadDeadline(time.Time{})
	case err == nil:
		return io.ErrNoProgress
	default:
		return err
	}
}

// Expedite bounds the exchange in flight by t, or the next exchange when
// none is in flight. It only ever brings a deadline forward, and may be
// called from any goroutine: it is how another goroutine interrupts an
// exchange (a t in the past ends it at once).
func (c *SyncConn) Expedite(t time.Time) {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	if !c.inflight {
		if c.limit.IsZero() || t.Before(c.limit) {
			c.limit = t
		}
		return
	}
	if c.current.IsZero() || t.Before(c.current) {
		c.current = t
		_ = c.nc.SetDeadline(t)
	}
}

// Expedited reports whether an Expedite or Interrupt is waiting to bound
// the next exchange: a connection handed to a new user must not carry one.
func (c *SyncConn) Expedited() bool {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	return !c.limit.IsZero()
}

// Unexpedite withdraws the bound an Expedite or Interrupt left for the
// next exchange, for a caller that learns that exchange is not the one it
// meant to bound. The exchange in flight, if any, keeps its deadline.
func (c *SyncConn) Unexpedite() {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	c.limit = time.Time{}
}

// interruptInFlight ends the exchange in flight at once, if there is one,
// and leaves later exchanges alone.
func (c *SyncConn) interruptInFlight() {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	if c.inflight {
		c.current = aLongTimeAgo
		_ = c.nc.SetDeadline(aLongTimeAgo)
	}
}

// Interrupt ends the exchange in flight at once, or the next one.
func (c *SyncConn) Interrupt() { c.Expedite(aLongTimeAgo) }

// aLongTimeAgo is a deadline that has passed.
var aLongTimeAgo = time.Unix(1, 0)

// fail stops the SyncConn with the cause of a failed exchange and returns
// the error that reports it.
func (c *SyncConn) fail(cmd string, err error) error {
	switch {
	case errors.Is(err, ErrLineTooLong):
		err = newProtocolError(cmd, "", "line longer than the reply cap", err)
	case errors.Is(err, os.ErrDeadlineExceeded):
		err = fmt.Errorf("%s: no reply in time: %w", cmd, err)
	case errors.Is(err, ErrProtocol):
	default:
		err = fmt.Errorf("%s: %w", cmd, err)
	}
	c.err.CompareAndSwap(nil, &closedError{cause: err})
	// Not closed here (see SyncConn): a deadline long past fails whatever
	// else touches the socket until the owner closes it.
	_ = c.nc.SetDeadline(aLongTimeAgo)
	return c.Err()
}

// Close closes the connection; later exchanges fail with an error matching
// ErrClosed. It is idempotent and always returns nil.
func (c *SyncConn) Close() error {
	c.err.CompareAndSwap(nil, &closedError{})
	_ = c.nc.Close()
	return nil
}

// Err returns why the SyncConn stopped (matching ErrClosed and its cause),
// or nil while it is usable.
func (c *SyncConn) Err() error {
	if e := c.err.Load(); e != nil {
		return e
	}
	return nil
}

// NetConn returns the underlying connection, for watching it (see
// internal/hangup); reading or writing it directly breaks the SyncConn.
func (c *SyncConn) NetConn() net.Conn { return c.nc }

// LastUsed returns when the last request was written (the creation time
// before the first), so that a pool can tell how near the server's idle
// timeout is.
func (c *SyncConn) LastUsed() time.Time { return time.Unix(0, c.lastUsed.Load()) }

// DialSync is Dial for a SyncConn: connect, TLS handshake and auth, bounded
// by d.Timeout and ctx.
func (d *Dialer) DialSync(ctx context.Context, addr string) (*SyncConn, error) {
	auth, err := d.authRequest(addr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := d.bound(ctx)
	defer cancel()
	nc, err := d.connect(ctx, addr)
	if err != nil {
		return nil, err
	}
	c := NewSyncConn(nc, 0)
	if d.AuthToken == "" {
		return c, nil
	}
	line, err := c.ExchangeContext(ctx, auth, time.Time{})
	if err == nil {
		err = authReply(line)
	}
	if err != nil {
		_ = c.Close()
		return nil, &DialError{Addr: addr, Err: err}
	}
	return c, nil
}
