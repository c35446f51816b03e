package hangup

import (
	"errors"
	"net"
	"syscall"
)

// ErrPending is what Peek reports when bytes wait to be read.
var ErrPending = errors.New("hangup: unread data on the connection")

// ErrNoPeek is what Peek reports where it cannot look: on platforms
// without a non-blocking peek (Windows, Plan 9, ...), and for connections
// without a socket descriptor (net.Pipe, say).
var ErrNoPeek = errors.New("hangup: cannot peek at this connection")

// Peeker looks at what waits to be read on one connection's socket,
// without blocking and without consuming it. For a connection that should
// be idle, such as a pooled lock connection (the server never writes on
// one unasked), anything there means the peer hung up or is out of step.
//
// It looks at the socket under wrappers such as *tls.Conn, so under TLS it
// sees records, not application data: what a wrapper has already read is
// for the caller to check, through the wrapper.
//
// A Peeker is not safe for concurrent use.
type Peeker struct {
	rc   syscall.RawConn
	peek func(fd uintptr) // made once, so that a peek does not allocate
	err  error            // what the last peek found
}

// NewPeeker returns a Peeker for nc.
func NewPeeker(nc net.Conn) *Peeker {
	p := &Peeker{}
	if rc, ok := rawConn(nc); ok && canPeek {
		p.rc = rc
		p.peek = func(fd uintptr) { p.err = peekFd(int(fd)) }
	}
	return p
}

// Peek reports what waits on the socket: nil when nothing does, io.EOF
// when the peer closed its side, ErrPending when data waits, the socket's
// error when it has one (a reset, say), or ErrNoPeek.
func (p *Peeker) Peek() error {
	if p.rc == nil {
		return ErrNoPeek
	}
	if err := p.rc.Control(p.peek); err != nil {
		return err // closed
	}
	return p.err
}

// rawConn finds the socket under nc, looking through wrappers such as
// *tls.Conn. Data those wrappers read (TLS session tickets, say) does not
// matter to a watch: only the peer's hang-up is watched.
func rawConn(nc net.Conn) (syscall.RawConn, bool) {
	for range 8 {
		u, ok := nc.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		nc = u.NetConn()
	}
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil, false
	}
	rc, err := sc.SyscallConn()
	return rc, err == nil
}
