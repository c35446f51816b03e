package wire

import (
	"errors"
	"net"
	"strconv"
	"strings"
)

// Sentinel errors. Replies from the server are returned as [*ServerError]
// values that match the sentinel of their status with errors.Is, so callers
// can branch on meaning without parsing messages.
//
// No error of this package starts with a package name: they are parts of
// the message of whoever wraps them (the dfstream package says "dfstream: "
// once, at the start), and a prefix at every level would repeat.
var (
	// ErrTimeout is the "timeout" status: a blocking acquire or wait ran out
	// of time (or a try-once request found the key busy).
	ErrTimeout = errors.New("timed out")
	// ErrAuth is the "error_auth" status, and any non-ok reply to auth.
	ErrAuth = errors.New("authentication refused")
	// ErrMaxLocks is the "error_max_locks" status: the server's key budget
	// (idle keys included until GC) is exhausted.
	ErrMaxLocks = errors.New("server lock limit reached")
	// ErrMaxWaiters is the "error_max_waiters" status: the key's queue is full.
	ErrMaxWaiters = errors.New("server waiter limit reached")
	// ErrLimitMismatch is the "error_limit_mismatch" status: the key exists
	// with another semaphore limit (even with no holders, until GC).
	ErrLimitMismatch = errors.New("semaphore limit mismatch")
	// ErrNotEnqueued is the "error_not_enqueued" status: a wait without a
	// pending enqueue on this connection.
	ErrNotEnqueued = errors.New("not enqueued")
	// ErrAlreadyEnqueued is the "error_already_enqueued" status.
	ErrAlreadyEnqueued = errors.New("already enqueued")
	// ErrLeaseExpired is the "error_lease_expired" status: the lease ran out
	// before a renew or wait reached the server; the slot is lost.
	ErrLeaseExpired = errors.New("lease expired")
	// ErrTypeMismatch is the "error_type_mismatch" status: the key is held as
	// another kind of lock (a read-write lock) on the server.
	ErrTypeMismatch = errors.New("key type mismatch")
	// ErrDraining is the "error_draining" status (2.x): the server is shutting
	// down gracefully and closes the connection after this reply; the
	// request was not executed.
	ErrDraining = errors.New("server draining")
	// ErrNotLeader is the "error_not_leader [<addr>]" status of a 2.x cluster
	// member that is not the leader; the request was not executed. The
	// error is a [*NotLeaderError] carrying the leader's address, if known.
	ErrNotLeader = errors.New("not the cluster leader")
	// ErrServer matches every [*ServerError]: the generic "error" status and
	// every status this package does not know (later servers add some).
	ErrServer = errors.New("server error")
	// ErrProtocol matches every [*ProtocolError]: a reply or push line that
	// cannot be parsed, or a line nobody asked for.
	ErrProtocol = errors.New("protocol error")
	// ErrInvalidInput matches every [*InputError]: a client-side validation
	// failure, detected before anything is written.
	ErrInvalidInput = errors.New("invalid input")
	// ErrLineTooLong is returned by [LineReader] for a line over its cap.
	ErrLineTooLong = errors.New("line too long")
	// ErrClosed matches the error of every request on a closed or lost
	// [Conn]; the underlying cause (io.EOF, a [*ProtocolError], a context
	// error, ...) is wrapped alongside it.
	ErrClosed = errors.New("connection closed")
)

// ServerError is returned for every non-ok status. errors.Is(e, ErrServer)
// is always true; errors.Is(e, ErrTimeout) etc. are true for the matching
// status.
type ServerError struct {
	// Cmd is the request's command ("l", "sn", "signal", ...).
	Cmd string
	// Status is the first word of the reply line.
	Status string
	// Detail is the rest of the line, trimmed and cut to 128 bytes: ""
	// for most statuses; 2.x servers may follow "error" with a word
	// ("error stable_ref_already_set"), and "error_not_leader" with the
	// leader's address. It is informative only: branch on Status.
	Detail string
}

// Error implements error. A status this package knows is said in words
// (the request is the caller's to name); the generic "error" and unknown
// statuses, which carry no meaning of their own, are quoted as the server
// sent them, with the detail.
func (e *ServerError) Error() string {
	if msg := statusText(e.Status); msg != "" {
		if e.Detail != "" {
			msg += " (" + strconv.Quote(e.Detail) + ")"
		}
		return msg
	}
	line := e.Status
	if e.Detail != "" {
		line += " " + e.Detail
	}
	return "server replied " + strconv.Quote(line)
}

// statusText says what a known status means, "" for "error" and unknown
// ones.
func statusText(status string) string {
	switch status {
	case "timeout":
		return "timed out"
	case "error_auth":
		return "authentication refused"
	case "error_max_locks":
		return "the server has as many keys as it allows"
	case "error_max_waiters":
		return "the key has as many waiters as the server allows"
	case "error_limit_mismatch":
		return "the key exists with another limit"
	case "error_not_enqueued":
		return "not enqueued on this connection"
	case "error_already_enqueued":
		return "already enqueued on this connection"
	case "error_lease_expired":
		return "the lease expired"
	case "error_type_mismatch":
		return "the key is a read-write lock"
	case "error_draining":
		return "the server is shutting down"
	case "error_not_leader":
		return "not the cluster leader"
	}
	return ""
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
	case "error_draining":
		return ErrDraining
	case "error_not_leader":
		return ErrNotLeader
	default:
		return ErrServer
	}
}

// StatusErr maps a status word to its *ServerError. It returns nil for "ok"
// and a non-nil *ServerError for every other word, known or not;
// "error_not_leader" gives a *NotLeaderError with no leader known.
func StatusErr(cmd, status string) error {
	if status == "ok" {
		return nil
	}
	if status == "error_not_leader" {
		return &NotLeaderError{err: &ServerError{Cmd: cmd, Status: status}}
	}
	return &ServerError{Cmd: cmd, Status: status}
}

// lineStatusErr is StatusErr for a whole non-ok reply line: the words after
// the status become the Detail, and the one after "error_not_leader" the
// leader's address. A not-leader line with more than one word after the
// status is a *ProtocolError: an address has no blank in it.
func lineStatusErr(cmd, line string) error {
	status, rest := strings.Trim(line, " \t"), ""
	if i := strings.IndexAny(status, " \t"); i >= 0 {
		status, rest = status[:i], strings.Trim(status[i+1:], " \t")
	}
	// Trimmed again after the cut, which may end on a blank.
	se := &ServerError{Cmd: cmd, Status: clip(status), Detail: strings.TrimRight(clip(rest), " \t")}
	if status != "error_not_leader" {
		return se
	}
	if strings.ContainsAny(rest, " \t") {
		return newProtocolError(cmd, line, "more than one leader address", nil)
	}
	return &NotLeaderError{Leader: rest, err: se}
}

// NotLeaderError is the "error_not_leader [<addr>]" reply of a 2.x cluster
// member that is not the leader. It matches ErrNotLeader and ErrServer with
// errors.Is, and unwraps to its *ServerError.
type NotLeaderError struct {
	// Leader is the leader's client address as the member knows it,
	// verbatim ("host:port"), or "" when no leader is known (an election).
	// It comes from the server: dial it only if it is a configured member.
	Leader string

	err *ServerError
}

// Error implements error.
func (e *NotLeaderError) Error() string {
	if e.Leader == "" {
		return "not the cluster leader (no leader known)"
	}
	return "not the cluster leader (leader " + strconv.Quote(e.Leader) + ")"
}

// Is reports whether target is ErrNotLeader or ErrServer, also for a
// NotLeaderError built by hand.
func (e *NotLeaderError) Is(target error) bool { return target == ErrNotLeader || target == ErrServer }

// Unwrap returns the *ServerError of the reply (nil for one built by hand).
func (e *NotLeaderError) Unwrap() error {
	if e.err == nil {
		return nil
	}
	return e.err
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
	return &ProtocolError{Cmd: cmd, Line: clip(line), Reason: reason, cause: cause}
}

// clip copies at most maxErrLine bytes of s, so that an error does not keep
// a large reply alive.
func clip(s string) string {
	if len(s) > maxErrLine {
		s = s[:maxErrLine]
	}
	return strings.Clone(s)
}

// Error implements error.
func (e *ProtocolError) Error() string {
	var b strings.Builder
	b.WriteString("protocol error: ")
	b.WriteString(e.Reason)
	if e.Cmd != "" {
		b.WriteString(" in the reply to ")
		b.WriteString(e.Cmd)
	}
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
	return "invalid " + e.Field + " " + strconv.Quote(v) + more + ": " + e.Reason
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

// DialError reports a connection to a server that could not be made or
// set up: the TCP connect, the TLS handshake, or authentication failed. It
// unwraps to the cause (a *net.OpError, a TLS error, an error matching
// ErrAuth, ...).
type DialError struct {
	// Addr is the address dialled.
	Addr string
	// Step is "tls handshake" when the TLS handshake failed, "" otherwise
	// (the connect, or authentication, whose errors say so).
	Step string
	// Err is the cause.
	Err error
}

// Error implements error. The text of a *net.OpError is cut to its cause:
// it names the address again.
func (e *DialError) Error() string {
	msg := "dial " + e.Addr + ": "
	if e.Step != "" {
		msg += e.Step + ": "
	}
	var oe *net.OpError
	if errors.As(e.Err, &oe) && oe.Err != nil {
		return msg + oe.Err.Error()
	}
	return msg + e.Err.Error()
}

// Unwrap returns the cause.
func (e *DialError) Unwrap() error { return e.Err }
