package wire

import (
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Protocol limits.
const (
	// MaxLineLen is the server's limit on the content of one request line
	// (the LF not counted); one byte more makes it answer error and close.
	MaxLineLen = 256
	// MaxSeconds is the largest seconds value any server accepts: above it
	// 1.10 overflows and newer servers answer error.
	MaxSeconds = 9223372036
	// DefaultMaxReply is the reply line cap a Conn uses unless WithMaxReply
	// overrides it; a stats reply of a busy server needs it.
	DefaultMaxReply = 1 << 20
)

// Kind selects the command set: lock commands (l r n e w) or semaphore
// commands (sl sr sn se sw).
type Kind uint8

// Kinds.
const (
	// KindLock is an exclusive lock (a semaphore with limit 1 on the server).
	KindLock Kind = iota
	// KindSemaphore is a counting semaphore; requests carry its limit.
	KindSemaphore
)

// String returns "lock" or "semaphore".
func (k Kind) String() string {
	switch k {
	case KindLock:
		return "lock"
	case KindSemaphore:
		return "semaphore"
	default:
		return "Kind(" + strconv.Itoa(int(k)) + ")"
	}
}

// keyed picks the command name of k (the lock form or the "s"-prefixed
// semaphore form) and validates the key every lock and semaphore request
// carries.
func (k Kind) keyed(lock, sem, key string) (string, error) {
	var cmd string
	switch k {
	case KindLock:
		cmd = lock
	case KindSemaphore:
		cmd = sem
	default:
		return "", &InputError{Field: "kind", Value: k.String(), Reason: "unknown kind"}
	}
	if err := ValidateKey("key", key); err != nil {
		return "", err
	}
	return cmd, nil
}

// Request is one validated three-line request. The zero value is invalid.
// Build requests with the constructors of this package, which validate every
// input; Conn.Do still checks the framing of hand-made ones.
type Request struct {
	Cmd, Key, Arg string
}

// AppendTo appends "Cmd\nKey\nArg\n" to dst, so callers can reuse a buffer.
func (r Request) AppendTo(dst []byte) []byte {
	dst = append(dst, r.Cmd...)
	dst = append(dst, '\n')
	dst = append(dst, r.Key...)
	dst = append(dst, '\n')
	dst = append(dst, r.Arg...)
	return append(dst, '\n')
}

// String formats the request for logs, with key and argument quoted. The
// auth token is redacted.
func (r Request) String() string {
	arg := r.Arg
	if r.Cmd == "auth" {
		arg = "<redacted>"
	}
	return r.Cmd + " " + strconv.Quote(r.Key) + " " + strconv.Quote(arg)
}

// check verifies the framing of a request: it is what keeps a hand-made
// Request from injecting a second command or tripping the server's line
// limit (which closes the connection).
func (r Request) check() error {
	if r.Cmd == "" {
		return &InputError{Field: "request", Reason: "empty command"}
	}
	for _, l := range [...]struct{ field, v string }{{"command", r.Cmd}, {"key", r.Key}, {"argument", r.Arg}} {
		if strings.IndexByte(l.v, '\n') >= 0 {
			return &InputError{Field: l.field, Value: l.v, Reason: "contains LF"}
		}
		if len(l.v) > MaxLineLen {
			return &InputError{Field: l.field, Value: l.v, Reason: "longer than 256 bytes"}
		}
	}
	return nil
}

// Seconds converts a duration to whole seconds the way the official Go
// client does: rounded up (1ms -> 1, 1.001s -> 2), 0 -> 0. Rounding up keeps
// a short timeout from turning into a try-once and a short lease from
// turning into the server default. Negative durations and values above
// MaxSeconds are rejected.
func Seconds(field string, d time.Duration) (int64, error) {
	if d < 0 {
		return 0, &InputError{Field: field, Value: d.String(), Reason: "negative duration"}
	}
	s := int64(d / time.Second)
	if d%time.Second != 0 {
		s++
	}
	if s > MaxSeconds {
		return 0, &InputError{Field: field, Value: d.String(), Reason: "more than 9223372036 seconds"}
	}
	return s, nil
}

// ValidateKey checks a key (or any key-like word): non-empty, at most
// MaxLineLen bytes, no NUL and no white space of any kind (which covers
// CR and LF). The server itself rejects only space, tab, CR and LF, but it
// splits fields on every Unicode space, so anything wider is unsafe.
func ValidateKey(field, key string) error {
	if key == "" {
		return &InputError{Field: field, Value: key, Reason: "empty"}
	}
	if len(key) > MaxLineLen {
		return &InputError{Field: field, Value: key, Reason: "longer than 256 bytes"}
	}
	for i := 0; i < len(key); {
		c := key[i]
		if c < utf8.RuneSelf {
			// ASCII fast path; unicode.IsSpace covers \t \n \v \f \r and space.
			if c == 0 || unicode.IsSpace(rune(c)) {
				return &InputError{Field: field, Value: key, Reason: "contains white space or NUL"}
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(key[i:])
		if unicode.IsSpace(r) {
			return &InputError{Field: field, Value: key, Reason: "contains white space"}
		}
		i += n
	}
	return nil
}

// ValidatePattern checks a listen pattern: key rules, then on the
// '.'-separated tokens a token containing '*' must be exactly "*" and one
// containing '>' must be exactly ">" and the last. Empty tokens are allowed,
// as on the server.
func ValidatePattern(p string) error {
	if err := ValidateKey("pattern", p); err != nil {
		return err
	}
	rest := p
	for {
		tok, after, more := strings.Cut(rest, ".")
		if strings.IndexByte(tok, '*') >= 0 && tok != "*" {
			return &InputError{Field: "pattern", Value: p, Reason: `a token with "*" must be exactly "*"`}
		}
		if strings.IndexByte(tok, '>') >= 0 && (tok != ">" || more) {
			return &InputError{Field: "pattern", Value: p, Reason: `a token with ">" must be exactly ">" and the last`}
		}
		if !more {
			return nil
		}
		rest = after
	}
}

// ValidateChannel checks a signal channel: key rules and no wildcard
// ('*' or '>') anywhere, since a channel names one subject.
func ValidateChannel(c string) error {
	if err := ValidateKey("channel", c); err != nil {
		return err
	}
	if strings.ContainsAny(c, "*>") {
		return &InputError{Field: "channel", Value: c, Reason: `contains a wildcard ("*" or ">")`}
	}
	return nil
}

// ValidatePayload checks a signal payload: non-empty, at most MaxLineLen
// bytes, no CR, LF or NUL. Spaces and tabs are fine: the payload is the
// whole argument line and arrives verbatim.
func ValidatePayload(p string) error {
	if p == "" {
		return &InputError{Field: "payload", Value: p, Reason: "empty"}
	}
	return validateLine("payload", p, p)
}

// validateLine checks a free-text line: at most MaxLineLen bytes, no CR, LF
// or NUL. shown is what the error displays (empty for secrets).
func validateLine(field, v, shown string) error {
	if len(v) > MaxLineLen {
		return &InputError{Field: field, Value: shown, Reason: "longer than 256 bytes"}
	}
	if strings.ContainsAny(v, "\r\n\x00") {
		return &InputError{Field: field, Value: shown, Reason: "contains CR, LF or NUL"}
	}
	return nil
}

// ValidateGroup checks a queue group name: "" means no group, anything else
// follows the key rules.
func ValidateGroup(g string) error {
	if g == "" {
		return nil
	}
	return ValidateKey("group", g)
}

// ValidateToken checks a lock token as sent back to the server: key rules.
func ValidateToken(tok string) error {
	return ValidateKey("token", tok)
}

// request assembles a request and re-checks the framing, so a builder bug
// (e.g. a long token plus a lease) can never reach the wire.
func request(cmd, key, arg string) (Request, error) {
	r := Request{Cmd: cmd, Key: key, Arg: arg}
	if err := r.check(); err != nil {
		return Request{}, err
	}
	return r, nil
}

// Auth builds "auth _ <token>". The token must be non-empty, at most
// MaxLineLen bytes, without CR, LF or NUL. Errors never show the token.
func Auth(token string) (Request, error) {
	if token == "" {
		return Request{}, &InputError{Field: "auth token", Reason: "empty"}
	}
	if err := validateLine("auth token", token, ""); err != nil {
		return Request{}, err
	}
	return request("auth", "_", token)
}

// checkLimit rejects non-positive semaphore limits (the server would answer
// error).
func checkLimit(limit int) error {
	if limit <= 0 {
		return &InputError{Field: "limit", Value: strconv.Itoa(limit), Reason: "must be positive"}
	}
	return nil
}

// appendLease appends " <seconds>" for a non-zero lease; 0 means "server
// default", which the protocol expresses by omitting the field.
func appendLease(arg []byte, lease time.Duration) ([]byte, error) {
	s, err := Seconds("lease", lease)
	if err != nil {
		return nil, err
	}
	if s == 0 {
		return arg, nil
	}
	if len(arg) > 0 {
		arg = append(arg, ' ')
	}
	return strconv.AppendInt(arg, s, 10), nil
}

// Acquire builds l (KindLock) or sl (KindSemaphore): "<timeout> [<limit>]
// [<lease>]". timeout 0 means try once; lease 0 means the server default;
// limit must be positive for KindSemaphore and is ignored for KindLock.
func Acquire(k Kind, key string, timeout time.Duration, limit int, lease time.Duration) (Request, error) {
	cmd, err := k.keyed("l", "sl", key)
	if err != nil {
		return Request{}, err
	}
	t, err := Seconds("timeout", timeout)
	if err != nil {
		return Request{}, err
	}
	var buf [64]byte
	arg := strconv.AppendInt(buf[:0], t, 10)
	if k == KindSemaphore {
		if err := checkLimit(limit); err != nil {
			return Request{}, err
		}
		arg = append(arg, ' ')
		arg = strconv.AppendInt(arg, int64(limit), 10)
	}
	if arg, err = appendLease(arg, lease); err != nil {
		return Request{}, err
	}
	return request(cmd, key, string(arg))
}

// Enqueue builds e (KindLock) or se (KindSemaphore): "[<limit>] [<lease>]",
// the first phase of a two-phase acquire.
func Enqueue(k Kind, key string, limit int, lease time.Duration) (Request, error) {
	cmd, err := k.keyed("e", "se", key)
	if err != nil {
		return Request{}, err
	}
	var buf [64]byte
	arg := buf[:0]
	if k == KindSemaphore {
		if err := checkLimit(limit); err != nil {
			return Request{}, err
		}
		arg = strconv.AppendInt(arg, int64(limit), 10)
	}
	if arg, err = appendLease(arg, lease); err != nil {
		return Request{}, err
	}
	return request(cmd, key, string(arg))
}

// Wait builds w (KindLock) or sw (KindSemaphore): "<timeout>", the second
// phase of a two-phase acquire. A timed-out wait forgets the enqueue on the
// server.
func Wait(k Kind, key string, timeout time.Duration) (Request, error) {
	cmd, err := k.keyed("w", "sw", key)
	if err != nil {
		return Request{}, err
	}
	t, err := Seconds("timeout", timeout)
	if err != nil {
		return Request{}, err
	}
	return request(cmd, key, strconv.FormatInt(t, 10))
}

// Renew builds n (KindLock) or sn (KindSemaphore): "<token> [<lease>]".
// Callers should always pass their lease: without one the server resets the
// lease to its default, not to the original.
func Renew(k Kind, key, token string, lease time.Duration) (Request, error) {
	cmd, err := k.keyed("n", "sn", key)
	if err != nil {
		return Request{}, err
	}
	if err := ValidateToken(token); err != nil {
		return Request{}, err
	}
	arg := make([]byte, 0, len(token)+21)
	arg = append(arg, token...)
	if arg, err = appendLease(arg, lease); err != nil {
		return Request{}, err
	}
	return request(cmd, key, string(arg))
}

// Release builds r (KindLock) or sr (KindSemaphore): "<token>".
func Release(k Kind, key, token string) (Request, error) {
	cmd, err := k.keyed("r", "sr", key)
	if err != nil {
		return Request{}, err
	}
	if err := ValidateToken(token); err != nil {
		return Request{}, err
	}
	return request(cmd, key, token)
}

// StatsRequest builds stats (key "_", empty argument); it has no inputs to
// validate. It cannot be called Stats: that name is the parsed reply type.
func StatsRequest() Request { return Request{Cmd: "stats", Key: "_"} }

// Ping builds ping (key "_", empty argument), a keepalive: any request
// re-arms the server's read deadline, so even the "error" older servers
// answer keeps the connection alive.
func Ping() Request { return Request{Cmd: "ping", Key: "_"} }

// Barrier builds "barrier _ _" (2.x): a cluster leader answers ok once
// every write committed before it is applied, so reads after it see them;
// a single node answers ok at once, a follower error_not_leader. Servers
// before 2.x answer error. It has no inputs to validate.
func Barrier() Request { return Request{Cmd: "barrier", Key: "_", Arg: "_"} }

// MaxStableRefLen is the longest stable ref a 2.x server accepts, in bytes.
const MaxStableRefLen = 64

// ValidateStableRef checks a stable client ref the way 2.x servers do:
// non-empty, at most MaxStableRefLen bytes, printable ASCII only (0x20 to
// 0x7e, so inner spaces are fine). The server trims blanks off the ends, so
// a ref that has some is refused: the ref the server keeps would not be the
// one given.
func ValidateStableRef(ref string) error {
	switch {
	case ref == "":
		return &InputError{Field: "stable ref", Value: ref, Reason: "empty"}
	case len(ref) > MaxStableRefLen:
		return &InputError{Field: "stable ref", Value: ref, Reason: "longer than 64 bytes"}
	case strings.ContainsFunc(ref, func(c rune) bool { return c < 0x20 || c > 0x7e }):
		return &InputError{Field: "stable ref", Value: ref, Reason: "not printable ASCII"}
	case strings.TrimSpace(ref) != ref:
		return &InputError{Field: "stable ref", Value: ref, Reason: "leading or trailing blank"}
	}
	return nil
}

// StableRef builds "stable-ref <ref> _" (2.x): the ref names the client's
// logical session, so that after a failover or reconnect a request with the
// same ref re-attaches to the slots it held or waited for. Send it once per
// connection, after auth and before any acquire, enqueue or wait; a second
// one on the same connection is answered error. The ref goes on the key
// line.
func StableRef(ref string) (Request, error) {
	if err := ValidateStableRef(ref); err != nil {
		return Request{}, err
	}
	return request("stable-ref", ref, "_")
}

// Listen builds "listen <pattern> [<group>]". group "" subscribes without a
// queue group.
func Listen(pattern, group string) (Request, error) {
	return subscription("listen", pattern, group)
}

// Unlisten builds "unlisten <pattern> [<group>]", undoing the Listen with the
// same pattern and group.
func Unlisten(pattern, group string) (Request, error) {
	return subscription("unlisten", pattern, group)
}

// subscription builds listen and unlisten, which take the same arguments.
func subscription(cmd, pattern, group string) (Request, error) {
	if err := ValidatePattern(pattern); err != nil {
		return Request{}, err
	}
	if err := ValidateGroup(group); err != nil {
		return Request{}, err
	}
	return request(cmd, pattern, group)
}

// Signal builds "signal <channel> <payload>"; the payload is sent verbatim.
func Signal(channel, payload string) (Request, error) {
	if err := ValidateChannel(channel); err != nil {
		return Request{}, err
	}
	if err := ValidatePayload(payload); err != nil {
		return Request{}, err
	}
	return request("signal", channel, payload)
}
