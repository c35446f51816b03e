package dfstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/dfstream/dfstream/wire"
)

// Errors reported by the server, re-exported from the wire package so that
// callers match them without importing it. Every server reply that is not a
// success also matches ErrServer.
//
// The sentinels' texts carry no "dfstream: " prefix: an error the package
// returns or reports says it once, at the start, followed by the operation
// and the key (see OpError) and then the cause.
var (
	ErrTimeout         = wire.ErrTimeout         // acquire or wait timed out
	ErrAuth            = wire.ErrAuth            // authentication refused
	ErrMaxLocks        = wire.ErrMaxLocks        // the server's key budget is used up
	ErrMaxWaiters      = wire.ErrMaxWaiters      // the key's queue is full
	ErrLimitMismatch   = wire.ErrLimitMismatch   // the key exists with another semaphore limit
	ErrNotEnqueued     = wire.ErrNotEnqueued     // wait without a pending enqueue
	ErrAlreadyEnqueued = wire.ErrAlreadyEnqueued // a second enqueue on one connection
	ErrLeaseExpired    = wire.ErrLeaseExpired    // the server says the lease ran out
	ErrTypeMismatch    = wire.ErrTypeMismatch    // the key is a read-write lock
	ErrDraining        = wire.ErrDraining        // a 2.x server shutting down: the connection is gone
	ErrServer          = wire.ErrServer          // any server error, including unknown statuses
	ErrProtocol        = wire.ErrProtocol        // a reply that could not be parsed
	ErrInvalidInput    = wire.ErrInvalidInput    // rejected before anything was sent
)

// Errors of the client itself.
var (
	// ErrClosed is returned by calls on a closed Client or stream.
	ErrClosed = errors.New("closed")
	// ErrConnLost reports that the connection to the server went away.
	ErrConnLost = errors.New("connection lost")
	// ErrUnreachable reports that no connection to the server could be
	// made (refused, timed out, TLS handshake failed).
	ErrUnreachable = errors.New("server unreachable")
	// ErrRenewRefused reports that the server refused a renewal: the token
	// is no longer valid there.
	ErrRenewRefused = errors.New("renewal refused")
	// ErrDeadlinePassed reports that the local safe deadline passed before a
	// renewal or a grant was confirmed; the server may already have given
	// the lock to someone else. A grant that came too late is never
	// reported: the stream gives it back and queues again while the acquire
	// timeout allows; once that time is over it fails with an error
	// matching both ErrTimeout and this one.
	ErrDeadlinePassed = errors.New("safe deadline passed")
	// ErrNotHeld is returned by Release when nothing is held.
	ErrNotHeld = errors.New("not held")
)

// Errors of signal streams and routers.
var (
	// ErrOverflow reports that signals arrived faster than they were
	// consumed and the buffer was full, under the FailStream policy.
	ErrOverflow = errors.New("signal buffer overflow")
	// ErrSilentConnection reports a connection that stays open but does not
	// deliver: a heartbeat ping went unanswered, the probe signal the
	// stream sent to itself did not come back (protocol.md §4), or the
	// server now listening at the address is not the one the connection
	// talks to (a graceful restart; see WithHeartbeat).
	ErrSilentConnection = errors.New("connection silent")
	// ErrHandlerPanic matches the error the Recover middleware makes of a
	// handler's panic; errors.As to *HandlerPanic gives the value and stack.
	ErrHandlerPanic = errors.New("handler panicked")
	// ErrHandlerTimeout reports a handler that did not finish within the
	// Timeout middleware's limit; it also matches
	// context.DeadlineExceeded.
	ErrHandlerTimeout = errors.New("handler timed out")
	// ErrRouterStarted is returned by Router methods that configure it once
	// Run has started, and by a second Run.
	ErrRouterStarted = errors.New("router already running")
)

// ErrUnlistened is returned by a Listen (or ListenGroup) that an Unlisten of
// the same subscription overtook before the server confirmed it: the
// subscription is not in place. It does not match ErrClosed: the stream
// goes on.
var ErrUnlistened = errors.New("unlistened before confirmed")

// OpError is the error of an operation of the package: it names the
// operation in words and what it was on, and wraps why it failed. Its
// message is the only one of a chain to start with "dfstream: ":
//
//	dfstream: acquire lock "jobs/42": not acquired within 5s
//	dfstream: renew semaphore "pool": safe deadline passed: no reply in time
//	dfstream: emit "orders.created": server unreachable: dial 10.0.0.7:6388: connect: connection refused
//
// Match the cause with errors.Is (ErrTimeout, ErrConnLost, ...); errors.As
// with *OpError gives the operation, key and server.
type OpError struct {
	// Op is the operation in words: "acquire lock", "acquire semaphore"
	// (also for Wait and Enqueued), "renew lock", "hold lock" (the
	// connection failed while held), "release semaphore", "signal stream",
	// "listen", "unlisten", "join group \"g\" on", "emit", "stats",
	// "handle", "run router", "option WithLease(-1s)", ...
	Op string
	// Key is the lock or semaphore key, the pattern or the channel the
	// operation was on; "" when none.
	Key string
	// Server is the address of the server the operation went to; "" when
	// it failed before one was chosen.
	Server string
	// Err is the cause.
	Err error
}

// Error implements error.
func (e *OpError) Error() string {
	var b strings.Builder
	b.WriteString("dfstream: ")
	b.WriteString(e.Op)
	if e.Key != "" && !e.keyRejected() {
		b.WriteByte(' ')
		b.WriteString(strconv.Quote(e.Key))
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// keyRejected reports whether Err rejects the key itself, whose message
// already quotes it.
func (e *OpError) keyRejected() bool {
	var ie *wire.InputError
	return errors.As(e.Err, &ie) && ie.Value == e.Key
}

// Unwrap returns the cause.
func (e *OpError) Unwrap() error { return e.Err }

// opError wraps err, the failure of op on key at server, in an *OpError;
// nil stays nil, and an *OpError is returned as it is, so that the prefix
// is never said twice.
func opError(op, key, server string, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := err.(*OpError); ok {
		return err
	}
	return &OpError{Op: op, Key: key, Server: server, Err: err}
}

// startErr is the error of a lock or semaphore stream that could not
// start.
func startErr(kind wire.Kind, key string, err error) error {
	return opError("acquire "+kind.String(), key, "", err)
}

// opErr is opError for an operation of the stream ("acquire", "renew",
// "release", ...) on its key.
func (s *holdStream) opErr(verb string, err error) error {
	return opError(verb+" "+s.kind.String(), s.key, s.c.cfg.servers[s.srv], s.explain(err))
}

// explain replaces the server's word for why an acquire failed, where
// the stream knows better: how long it waited, and what a limit mismatch
// means for this key.
func (s *holdStream) explain(err error) error {
	var se *wire.ServerError
	if !errors.As(err, &se) {
		return err
	}
	switch se.Status {
	case "timeout":
		if s.cfg.acquireTimeout > 0 {
			return &explained{fmt.Sprintf("not acquired within %v", s.cfg.acquireTimeout), err}
		}
		if s.limit > 1 {
			return &explained{fmt.Sprintf("all %d slots are held by other clients", s.limit), err}
		}
		return &explained{"held by another client", err}
	case "error_limit_mismatch":
		// The server does not say which limit the key has. Asking stats
		// would cost a round trip, and one that can be a megabyte, on a
		// path where the answer may already be stale: the message says
		// where to look instead.
		if s.kind == wire.KindSemaphore {
			return &explained{fmt.Sprintf("the key exists with a limit other than %d (stats shows it)", s.limit), err}
		}
		return &explained{"the key exists as a semaphore (stats shows its limit)", err}
	}
	return err
}

// subErr is the error of a Listen (listen true) or Unlisten of sub.
func (s *SignalStream) subErr(listen bool, sub subKey, err error) error {
	op := "listen"
	switch {
	case sub.group != "" && listen:
		op = "join group " + strconv.Quote(sub.group) + " on"
	case sub.group != "":
		op = "leave group " + strconv.Quote(sub.group) + " on"
	case !listen:
		op = "unlisten"
	}
	return opError(op, sub.pattern, s.addr, err)
}

// emitErr is the error of Client.Emit to channel.
func (c *Client) emitErr(channel string, err error) error {
	return opError("emit", channel, c.cfg.servers[0], err)
}

// signalsErr is the error of a signal stream that could not start, or
// ended, on server addr.
func signalsErr(addr string, err error) error { return opError("signal stream", "", addr, err) }

// routeErr is the error of registering a handler for pattern (in group).
func routeErr(pattern, group string, err error) error {
	op := "handle"
	if group != "" {
		op = "handle as group " + strconv.Quote(group)
	}
	return opError(op, pattern, "", err)
}

// explained is an error with a message of its own that matches what it
// wraps.
type explained struct {
	msg string
	err error
}

func (e *explained) Error() string { return e.msg }
func (e *explained) Unwrap() error { return e.err }

// invalid is a rejection of input with its reason, matching
// ErrInvalidInput.
func invalid(reason string) error { return &explained{reason, ErrInvalidInput} }

// connError reports a failed exchange as sentinel (ErrConnLost,
// ErrDeadlinePassed, ...) followed by what happened to the connection in a
// few words, rather than the wire's account of it; both match.
type connError struct {
	sentinel error
	err      error
}

func (e *connError) Error() string { return e.sentinel.Error() + ": " + connCause(e.err) }

func (e *connError) Unwrap() []error { return []error{e.sentinel, e.err} }

// connFailed wraps err, the failure of an exchange, as sentinel.
func connFailed(sentinel, err error) error { return &connError{sentinel, err} }

// connCause says in a few words why a connection failed.
func connCause(err error) string {
	var oe *net.OpError
	switch {
	case errors.Is(err, wire.ErrDraining):
		return "the server is shutting down"
	case errors.Is(err, io.EOF), errors.Is(err, wire.ErrNoReply):
		return "the server closed the connection"
	case errors.Is(err, os.ErrDeadlineExceeded):
		return "no reply in time"
	case errors.As(err, &oe) && oe.Err != nil:
		return oe.Err.Error() // "read: connection reset by peer"
	}
	return err.Error()
}

// asConnLost is err, which ended a connection, as an error matching
// ErrConnLost, said once.
func asConnLost(err error) error {
	if errors.Is(err, ErrConnLost) {
		return err
	}
	return connFailed(ErrConnLost, err)
}

// connLost marks an error of the connection itself as ErrConnLost.
func connLost(err error) error {
	if err != nil && errors.Is(err, wire.ErrClosed) && !errors.Is(err, ErrConnLost) {
		return connFailed(ErrConnLost, err)
	}
	return err
}

// retryable reports whether a failed acquire may succeed if tried again:
// not when the request itself or the credentials are wrong.
func retryable(err error) bool {
	for _, fatal := range []error{ErrInvalidInput, ErrAuth, ErrLimitMismatch, ErrTypeMismatch} {
		if errors.Is(err, fatal) {
			return false
		}
	}
	return true
}

// userCause is the error a stream ended by its context reports: nil when
// the user closed it, the context's error otherwise.
func userCause(ctx context.Context) error { return closedBy(context.Cause(ctx)) }

// closedBy is the error a stream the user stopped with cause reports: nil
// after Close, the context's error otherwise.
func closedBy(cause error) error {
	if cause != nil && !errors.Is(cause, ErrClosed) {
		return cause
	}
	return nil
}
