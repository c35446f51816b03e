package dfstream

import (
	"context"
	"errors"
	"fmt"

	"github.com/dfstream/dfstream/wire"
)

// Errors reported by the server, re-exported from the wire package so that
// callers match them without importing it. Every server reply that is not a
// success also matches ErrServer.
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
	ErrClosed = errors.New("dfstream: closed")
	// ErrConnLost reports that the connection to the server went away.
	ErrConnLost = errors.New("dfstream: connection lost")
	// ErrUnreachable reports that no connection to the server could be
	// made (refused, timed out, TLS handshake failed).
	ErrUnreachable = errors.New("dfstream: server unreachable")
	// ErrRenewRefused reports that the server refused a renewal: the token
	// is no longer valid there.
	ErrRenewRefused = errors.New("dfstream: renewal refused")
	// ErrDeadlinePassed reports that the local safe deadline passed before a
	// renewal or a grant was confirmed; the server may already have given
	// the lock to someone else. A grant that came too late is never
	// reported: the stream gives it back and queues again while the acquire
	// timeout allows; once that time is over it fails with an error
	// matching both ErrTimeout and this one.
	ErrDeadlinePassed = errors.New("dfstream: safe deadline passed")
	// ErrNotHeld is returned by Release when nothing is held.
	ErrNotHeld = errors.New("dfstream: not held")
)

// Errors of signal streams and routers.
var (
	// ErrOverflow reports that signals arrived faster than they were
	// consumed and the buffer was full, under the FailStream policy.
	ErrOverflow = errors.New("dfstream: signal buffer overflow")
	// ErrSilentConnection reports a connection that stays open but does not
	// deliver: a heartbeat ping went unanswered, the probe signal the
	// stream sent to itself did not come back (protocol.md §4), or the
	// server now listening at the address is not the one the connection
	// talks to (a graceful restart; see WithHeartbeat).
	ErrSilentConnection = errors.New("dfstream: connection silent")
	// ErrHandlerPanic matches the error the Recover middleware makes of a
	// handler's panic; errors.As to *HandlerPanic gives the value and stack.
	ErrHandlerPanic = errors.New("dfstream: handler panicked")
	// ErrHandlerTimeout reports a handler that did not finish within the
	// Timeout middleware's limit; it also matches
	// context.DeadlineExceeded.
	ErrHandlerTimeout = errors.New("dfstream: handler timed out")
	// ErrRouterStarted is returned by Router methods that configure it once
	// Run has started, and by a second Run.
	ErrRouterStarted = errors.New("dfstream: router already running")
)

// ErrUnlistened is returned by a Listen (or ListenGroup) that an Unlisten of
// the same subscription overtook before the server confirmed it: the
// subscription is not in place. It does not match ErrClosed: the stream
// goes on.
var ErrUnlistened = errors.New("dfstream: unlistened before confirmed")

// connLost marks an error of the connection itself as ErrConnLost.
func connLost(err error) error {
	if err != nil && errors.Is(err, wire.ErrClosed) && !errors.Is(err, ErrConnLost) {
		return fmt.Errorf("%w: %w", ErrConnLost, err)
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
