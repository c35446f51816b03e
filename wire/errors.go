package wire

import (
	"errors"
	"strconv"
	"strings"
)

// Sentinel errors. Replies from the server are returned as [*ServerError]
// values that match the sentinel of their status with errors.Is, so callers
// can branch on meaning without parsing messages.
var (
	// ErrTimeout is the "timeout" status: a blocking acquire or wait ran out
	// of time (or a try-once request found the key busy).
	ErrTimeout = errors.New("dflockd: timeout")
	// ErrAuth is the "error_auth" status, and any non-ok reply to auth.
	ErrAuth = errors.New("dflockd: authentication failed")
	// ErrMaxLocks is the "error_max_locks" status: the server's key budget
	// (idle keys included until GC) is exhausted.
	ErrMaxLocks = errors.New("dflockd: server lock limit reached")
	// ErrMaxWaiters is the "error_max_waiters" status: the key's queue is full.
	ErrMaxWaiters = errors.New("dflockd: server waiter limit reached")
	// ErrLimitMismatch is the "error_limit_mismatch" status: the key exists
	// with another semaphore limit (even with no holders, until GC).
	ErrLimitMismatch = errors.New("dflockd: semaphore limit mismatch")
	// ErrNotEnqueued is the "error_not_enqueued" status: a wait without a
	// pending enqueue on this connection.
	ErrNotEnqueued = errors.New("dflockd: not enqueued")
	// ErrAlreadyEnqueued is the "error_already_enqueued" status.
	ErrAlreadyEnqueued = errors.New("dflockd: already enqueued")
	// ErrLeaseExpired is the "error_lease_expired" status: the lease ran out
	// before a renew or wait reached the server; the slot is lost.
	ErrLeaseExpired = errors.New("dflockd: lease expired")
	// ErrTypeMismatch is the "error_type_mismatch" status: the key is held as
	// another kind of lock (a read-write lock) on the server.
	ErrTypeMismatch = errors.New("dflockd: key type mismatch")
	// ErrServer matches every [*ServerError]: the generic "error" status and
	// every status this package does not know (later servers add some).
	ErrServer = errors.New("dflockd: server error")
	// ErrProtocol matches every [*ProtocolError]: a reply or push line that
	// cannot be parsed, or a line nobody asked for.
	ErrProtocol = errors.New("dflockd: protocol error")
	// ErrInvalidInput matches every [*InputError]: a client-side validation
	// failure, detected before anything is written.
	ErrInvalidInput = errors.New("dflockd: invalid input")
	// ErrLineTooLong is returned by [LineReader] for a line over its cap.
	ErrLineTooLong = errors.New("dflockd: line too long")
	// ErrClosed matches the error of every request on a closed or lost
	// [Conn]; the underlying cause (io.EOF, a [*ProtocolError], a context
	// error, ...) is wrapped alongside it.
	ErrClosed = errors.New("dflockd: connection closed")
)

// ServerError is returned for every non-ok status. errors.Is(e, ErrServer)
// is always true; errors.Is(e, ErrTimeout) etc. are true for the matching
// status.
type ServerError struct {
	// Cmd is the request's command ("l", "sn", "signal", ...).
	Cmd string
	// Status is the first word of the reply line.
	Status string
}

// Error implements error.
func (e *ServerError) Error() string {
	return "dflockd: " + e.Cmd + ": server replied " + strconv.Quote(e.Status)
}

// Is reports whether target is ErrServer; the status sentinel is matched
// through Unwrap.
func (e *ServerError) Is(target error) bool { return target == ErrServer }

// Unwrap returns the sentinel for Status, or ErrServer for statuses without
// one ("error" and unknown ones).
func (e *ServerError) Unwrap() error { return statusSentinel(e.Status) }

func statusSentinel(status string) error {
	switch status {
	case "timeout":
		return ErrTimeout
	case "error_auth":
		return ErrAuth
	case "error_max_locks":
		return ErrMaxLocks
	case "error_max_waiters":
		return ErrMaxWaiters
	case "error_limit_mismatch":
		return ErrLimitMismatch
	case "error_not_enqueued":
		return ErrNotEnqueued
	case "error_already_enqueued":
		return ErrAlreadyEnqueued
	case "error_lease_expired":
		return ErrLeaseExpired
	case "error_type_mismatch":
		return ErrTypeMismatch
	default:
		return ErrServer
	}
}

// StatusErr maps a status word to its *ServerError. It returns nil for "ok"
// and a non-nil *ServerError for every other word, known or not.
func StatusErr(cmd, status string) error {
	if status == "ok" {
		return nil
	}
	return &ServerError{Cmd: cmd, Status: status}
}

// maxErrLine bounds the copy of an offending line kept in a ProtocolError:
// a stats reply can be a megabyte, and an error should not pin it.
const maxErrLine = 128

// ProtocolError reports a line from the server that breaks the protocol:
// an ok-line with bad fields, a malformed push, a reply nobody asked for, a
// line over the cap. It always matches ErrProtocol.
type ProtocolError struct {
	// Cmd is the request the line was read for ("" when none was pending).
	Cmd string
	// Line is the offending line, truncated to 128 bytes.
	Line string
	// Reason says what is wrong with it.
	Reason string

	cause error
}

func newProtocolError(cmd, line, reason string, cause error) *ProtocolError {
	if len(line) > maxErrLine {
		line = line[:maxErrLine]
	}
	// Clone so the error does not keep a large reply alive.
	return &ProtocolError{Cmd: cmd, Line: strings.Clone(line), Reason: reason, cause: cause}
}

// Error implements error.
func (e *ProtocolError) Error() string {
	var b strings.Builder
	b.WriteString("dflockd: ")
	if e.Cmd != "" {
		b.WriteString(e.Cmd)
		b.WriteString(": ")
	}
	b.WriteString("protocol error: ")
	b.WriteString(e.Reason)
	b.WriteString(": ")
	b.WriteString(strconv.Quote(e.Line))
	if e.cause != nil {
		b.WriteString(": ")
		b.WriteString(e.cause.Error())
	}
	return b.String()
}

// Is reports whether target is ErrProtocol.
func (e *ProtocolError) Is(target error) bool { return target == ErrProtocol }

// Unwrap returns the lower-level cause (for example ErrLineTooLong or a JSON
// syntax error), or nil.
func (e *ProtocolError) Unwrap() error { return e.cause }

// maxErrValue bounds how much of a rejected value an InputError message
// shows.
const maxErrValue = 40

// InputError reports a value rejected by client-side validation. Nothing
// was written when it is returned. It always matches ErrInvalidInput.
type InputError struct {
	// Field names the rejected input ("key", "lease", "payload", ...).
	Field string
	// Value is the rejected value as given ("" for secrets such as the auth
	// token).
	Value string
	// Reason says what is wrong with it.
	Reason string
}

// Error implements error. The value is quoted (control characters are
// visible) and truncated to about 40 bytes.
func (e *InputError) Error() string {
	v := e.Value
	more := ""
	if len(v) > maxErrValue {
		v, more = v[:maxErrValue], "..."
	}
	return "dflockd: invalid " + e.Field + " " + strconv.Quote(v) + more + ": " + e.Reason
}

// Is reports whether target is ErrInvalidInput.
func (e *InputError) Is(target error) bool { return target == ErrInvalidInput }

// closedError is what a Conn records when it stops: it matches ErrClosed and
// the cause, so callers can ask either "is it gone?" or "why?".
type closedError struct {
	cause error
}

func (e *closedError) Error() string {
	if e.cause == nil {
		return ErrClosed.Error()
	}
	return ErrClosed.Error() + ": " + e.cause.Error()
}

func (e *closedError) Unwrap() []error {
	if e.cause == nil {
		return []error{ErrClosed}
	}
	return []error{ErrClosed, e.cause}
}
