package wire

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Conn is one connection to a server. It pairs each request with its reply
// in FIFO order (the server is strictly sequential and answers pipelined
// requests in order) and hands "sig " push lines to the push handler.
//
// It runs exactly one goroutine of its own, the reader, which always has a
// read pending: a connection the peer closed is noticed at once (Done
// closes, Err says why), without waiting for the next request. Writes happen
// on the caller's goroutine under a mutex, one Write per request.
//
// A Conn that stops for any reason stays stopped; make a new one.
type Conn struct {
	nc       net.Conn
	push     func(Push)
	lr       *LineReader
	done     chan struct{}
	lastUsed atomic.Int64 // unix nanoseconds
	stopped  atomic.Bool  // set by fail; the reader stops delivering

	// wmu serialises writes, and with them the order of the pending queue,
	// which must equal the order on the wire.
	wmu sync.Mutex

	mu      sync.Mutex // guards the fields below
	pending []*Call    // awaiting a reply, oldest at head
	head    int
	err     *closedError // non-nil once stopped
}

// Call is one request in flight, started with Go (Do uses one internally).
// It completes exactly once: with the reply line, or with the error that
// stopped the Conn first.
type Call struct {
	done chan struct{} // closed on completion, after line and err are set
	line string
	err  error
}

// Done returns a channel that is closed when the call is complete. Once the
// Conn's Done channel is closed, every Call of that Conn is complete.
func (c *Call) Done() <-chan struct{} { return c.done }

// Result waits for the call to complete and returns the reply line, or the
// error (matching ErrClosed) that stopped the Conn before the reply arrived.
// It may be called any number of times.
func (c *Call) Result() (string, error) {
	<-c.done
	return c.line, c.err
}

func (c *Call) complete(line string, err error) {
	c.line, c.err = line, err
	close(c.done)
}

// writeBufs holds request encoding buffers shared by all Conns, so an idle
// Conn holds none.
var writeBufs = sync.Pool{New: func() any {
	b := make([]byte, 0, 128)
	return &b
}}

type connConfig struct {
	push     func(Push)
	maxReply int
}

// ConnOption configures NewConn and Dialer.Dial.
type ConnOption func(*connConfig)

// WithPushHandler sets the function that receives signal pushes. It is
// called on the reader goroutine, in the order the pushes arrive, and must
// not block (no reply is read while it runs) nor call Close (which waits for
// the reader). nil, the default, drops pushes.
func WithPushHandler(h func(Push)) ConnOption {
	return func(c *connConfig) { c.push = h }
}

// WithMaxReply caps the length of a line read from the server (default
// DefaultMaxReply). A longer line stops the Conn with a protocol error.
// n <= 0 means the default.
func WithMaxReply(n int) ConnOption {
	return func(c *connConfig) { c.maxReply = n }
}

// NewConn takes ownership of nc and starts the reader goroutine. nc must not
// be used by the caller afterwards.
func NewConn(nc net.Conn, opts ...ConnOption) *Conn {
	cfg := connConfig{maxReply: DefaultMaxReply}
	for _, o := range opts {
		o(&cfg)
	}
	c := &Conn{
		nc:   nc,
		push: cfg.push,
		lr:   NewLineReader(nc, cfg.maxReply),
		done: make(chan struct{}),
	}
	c.lastUsed.Store(time.Now().UnixNano())
	go c.readLoop()
	return c
}

// readLoop is the Conn's only goroutine: it reads every line, routes pushes
// to the handler and replies to the oldest pending request, and stops the
// Conn on the first error.
func (c *Conn) readLoop() {
	defer close(c.done)
	for {
		line, err := c.lr.ReadLine()
		if c.stopped.Load() {
			// Stopped by Close or a caller: lines still buffered are for
			// nobody, and the push handler must not run after Close.
			c.fail(nil) // no-op; waits for the stopping fail to finish
			return
		}
		if err != nil {
			if errors.Is(err, ErrLineTooLong) {
				err = newProtocolError("", "", "line longer than the reply cap", err)
			} else {
				err = fmt.Errorf("read: %w", err)
			}
			c.fail(err)
			return
		}
		if IsPush(line) {
			p, err := ParsePush(line)
			if err != nil {
				c.fail(err)
				return
			}
			if c.push != nil {
				c.push(p)
			}
			continue
		}
		call := c.pop()
		if call == nil {
			// Typically the unsolicited "error" a server writes before it
			// closes an idle connection on its read timeout.
			c.fail(newProtocolError("", line, "reply without a request", nil))
			return
		}
		call.complete(line, nil)
	}
}

// pop removes the oldest pending call, or returns nil.
func (c *Conn) pop() *Call {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.head == len(c.pending) {
		return nil
	}
	call := c.pending[c.head]
	c.pending[c.head] = nil
	c.head++
	if c.head == len(c.pending) {
		c.pending, c.head = c.pending[:0], 0
	}
	return call
}

// fail stops the Conn: the first cause is recorded, every pending call
// completes with the error, and the socket is closed. Later calls are
// no-ops. The calls complete under mu, so whoever sees the Conn stopped
// (the reader included, before it closes Done) sees them complete.
func (c *Conn) fail(cause error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	err := &closedError{cause: cause}
	c.err = err
	c.stopped.Store(true)
	for _, call := range c.pending[c.head:] {
		call.complete("", err) // never blocks: it closes a channel
	}
	c.pending, c.head = nil, 0
	c.mu.Unlock()
	_ = c.nc.Close() // unblocks the reader and any writer
}

// Do writes req and waits for its reply line (never a push). Safe for
// concurrent use: replies pair FIFO with writes.
//
// If ctx ends before the reply arrives, the Conn is closed, because the late
// reply would be read as the answer to the next request, and the returned
// error wraps both ctx.Err() and ErrClosed. A ctx that has already ended
// when Do is called writes nothing and leaves the Conn open. A request whose
// framing is invalid (see Request) returns an InputError and writes nothing.
// On a stopped Conn, Do returns Err().
func (c *Conn) Do(ctx context.Context, req Request) (string, error) {
	if err := req.check(); err != nil {
		return "", err
	}
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("%s: %w", req.Cmd, err)
	}
	call := &Call{done: make(chan struct{})}
	if err := c.send(ctx, req, call); err != nil {
		return "", err
	}
	select {
	case <-call.done:
		return call.line, call.err
	case <-ctx.Done():
		select {
		case <-call.done: // the reply won the race; use it
			return call.line, call.err
		default:
		}
		cause := abandoned(ctx, req.Cmd)
		c.fail(cause)
		return "", &closedError{cause: cause}
	}
}

// Go writes req and returns at once with its Call, so a caller can wait for
// the reply in a select next to other events. Pipelining is safe: calls
// complete in the order they were written. A caller that stops waiting for
// a Call must Close the Conn (the late reply would answer the next
// request). Errors known before or while writing (invalid framing, a
// stopped Conn, a failed write) are returned directly, with a nil Call. The
// write is not bounded by a context; it blocks only while the socket's send
// buffer is full.
func (c *Conn) Go(req Request) (*Call, error) {
	if err := req.check(); err != nil {
		return nil, err
	}
	call := &Call{done: make(chan struct{})}
	if err := c.send(context.Background(), req, call); err != nil {
		return nil, err
	}
	return call, nil
}

// send queues call for req's reply and writes req. ctx can end a blocked
// write (by closing the Conn). On error the Conn is stopped, or was already.
func (c *Conn) send(ctx context.Context, req Request, call *Call) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return err
	}
	// Queue before writing: the reply may arrive before Write returns.
	c.pending = append(c.pending, call)
	c.mu.Unlock()

	bp := writeBufs.Get().(*[]byte)
	b := req.AppendTo((*bp)[:0])
	var err error
	if ctx.Done() != nil {
		// A write blocks only when the peer stops reading; ctx must still
		// be able to end it, and closing is the only way.
		stop := context.AfterFunc(ctx, func() { c.fail(abandoned(ctx, req.Cmd)) })
		_, err = c.nc.Write(b)
		stop()
	} else {
		_, err = c.nc.Write(b)
	}
	c.lastUsed.Store(time.Now().UnixNano())
	*bp = b[:0]
	writeBufs.Put(bp)
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		cause := abandoned(ctx, req.Cmd)
		c.fail(cause)
		return &closedError{cause: cause}
	}
	// A partial write leaves the server mid-request: the stream is lost.
	c.fail(fmt.Errorf("write: %w", err))
	return c.Err()
}

// abandoned is the cause recorded when a caller stops waiting for a reply.
func abandoned(ctx context.Context, cmd string) error {
	return fmt.Errorf("%s request abandoned: %w", cmd, ctx.Err())
}

// Close closes the connection. Pending Do and Go calls complete with an
// error matching ErrClosed. It waits for the reader goroutine to exit (so
// it must not be called from the push handler), is idempotent, and always
// returns nil (the cause of an earlier stop is in Err).
func (c *Conn) Close() error {
	c.fail(nil)
	<-c.done
	return nil
}

// Done returns a channel that is closed when the reader has stopped: the
// peer closed, an error occurred, or Close was called. By then every Call
// is complete and the push handler will not run again.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err returns why the Conn stopped, nil while it runs. The error matches
// ErrClosed and, with errors.Is/As, its cause (io.EOF, a *ProtocolError, a
// context error, ...); after a plain Close it is ErrClosed alone.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		return nil // not a typed nil
	}
	return c.err
}

// Idle reports whether no request is outstanding, i.e. the Conn can be
// handed to another user without a reply in flight.
func (c *Conn) Idle() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.head == len(c.pending)
}

// RemoteAddr returns the server's address.
func (c *Conn) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }

// LastUsed returns when the last request was written (the creation time
// before the first one), so pools can tell how close the server's read
// timeout is.
func (c *Conn) LastUsed() time.Time { return time.Unix(0, c.lastUsed.Load()) }

// Dialer dials, TLS-handshakes and authenticates a Conn, all bounded by
// Timeout and ctx.
type Dialer struct {
	// Timeout bounds TCP connect, TLS handshake and auth together; 0 means
	// ctx alone bounds them.
	Timeout time.Duration
	// TLS enables TLS when non-nil. An empty ServerName is filled in from
	// the address's host (on a clone; the config is not modified).
	TLS *tls.Config
	// AuthToken, when non-empty, is sent with auth right after connecting;
	// any reply but "ok" fails the dial with an error matching ErrAuth.
	AuthToken string
	// NetDialer is used for the TCP connect if non-nil.
	NetDialer *net.Dialer
}

// Dial connects to addr ("host:port") and returns a ready Conn with opts
// applied. On any failure the connection is closed and the error, prefixed
// with "dial <addr>", wraps the cause.
func (d *Dialer) Dial(ctx context.Context, addr string, opts ...ConnOption) (*Conn, error) {
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
	c := NewConn(nc, opts...)
	if d.AuthToken != "" {
		line, err := c.Do(ctx, auth)
		if err == nil {
			err = authReply(line)
		}
		if err != nil {
			_ = c.Close()
			return nil, &DialError{Addr: addr, Err: err}
		}
	}
	return c, nil
}

// bound applies d.Timeout to ctx, unless ctx already ends sooner (a
// context less to make on every dial).
func (d *Dialer) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if d.Timeout <= 0 {
		return ctx, func() {}
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= d.Timeout {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, d.Timeout)
}

// authRequest validates the token before connecting: a bad one would
// otherwise cost a round trip and show up as a server error.
func (d *Dialer) authRequest(addr string) (Request, error) {
	if d.AuthToken == "" {
		return Request{}, nil
	}
	auth, err := Auth(d.AuthToken)
	if err != nil {
		return Request{}, &DialError{Addr: addr, Err: err}
	}
	return auth, nil
}

// authReply maps the reply to auth: any reply but ok matches ErrAuth (a
// server without auth configured answers a plain "error").
func authReply(line string) error {
	err := ParseOK("auth", line)
	if err != nil && !errors.Is(err, ErrAuth) {
		err = fmt.Errorf("%w: %w", ErrAuth, err)
	}
	return err
}

// connect makes the TCP connection and, with TLS configured, completes the
// handshake, within ctx.
func (d *Dialer) connect(ctx context.Context, addr string) (net.Conn, error) {
	nd := d.NetDialer
	if nd == nil {
		nd = &net.Dialer{}
	}
	nc, err := nd.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, &DialError{Addr: addr, Err: err}
	}
	if d.TLS == nil {
		return nc, nil
	}
	cfg := d.TLS
	if cfg.ServerName == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			host = addr
		}
		cfg = cfg.Clone()
		cfg.ServerName = host
	}
	tc := tls.Client(nc, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = nc.Close()
		return nil, &DialError{Addr: addr, Step: "tls handshake", Err: err}
	}
	return tc, nil
}
