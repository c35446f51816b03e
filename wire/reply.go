package wire

import (
	"math"
	"strconv"
	"strings"
	"time"
)

// Grant is a granted lock or semaphore slot.
type Grant struct {
	// Token identifies the slot in renew and release requests.
	Token string
	// Lease is the lease the server applied, in whole seconds.
	Lease time.Duration
	// Fence is the server's fencing token; 0 when the server sends none
	// (1.10) — newer servers start at 1.
	Fence uint64
}

// FenceFromToken returns the fence a 2.x server writes into its tokens:
// the first 16 of the token's 32 lower-case hex digits, a big-endian uint64
// that rises with every grant on that server (or cluster). Compare fences of
// one key only. Tokens of 1.10 and signals-era servers have the same form
// but are random: only the caller knows the generation, so only it can tell
// whether the number means anything. A token not of that form is an
// *InputError.
func FenceFromToken(token string) (uint64, error) {
	if len(token) != 32 || strings.ContainsFunc(token, func(c rune) bool {
		return (c < '0' || c > '9') && (c < 'a' || c > 'f')
	}) {
		return 0, &InputError{Field: "token", Value: token, Reason: "not 32 lower-case hex digits"}
	}
	return strconv.ParseUint(token[:16], 16, 64)
}

// maxFields is more than any reply has, so one extra field is detected.
const maxFields = 5

// splitFields splits line on runs of spaces and tabs into dst without
// allocating. It returns the number of fields, or len(dst)+1 when there are
// more than fit.
func splitFields(line string, dst *[maxFields]string) int {
	n := 0
	i := 0
	for {
		for i < len(line) && (line[i] == ' ' || line[i] == '\t') {
			i++
		}
		if i == len(line) {
			return n
		}
		j := i
		for j < len(line) && line[j] != ' ' && line[j] != '\t' {
			j++
		}
		if n == len(dst) {
			return n + 1
		}
		dst[n] = line[i:j]
		n++
		i = j
	}
}

// unexpected reports a reply whose status is a success word of another
// command: the stream is out of step or the server is not dflockd.
func unexpected(cmd, line string) error {
	return newProtocolError(cmd, line, "unexpected reply", nil)
}

// parseCount parses a number field of a reply: decimal digits only. The
// server writes no sign, so "+5" or "-0" is not a number it sent, and
// strconv alone would take the plus (and the minus of a zero).
func parseCount(s string) (uint64, bool) {
	if s == "" || strings.ContainsFunc(s, func(c rune) bool { return c < '0' || c > '9' }) {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 64)
	return n, err == nil
}

// parseLease parses a lease in whole seconds. The server applies only
// positive leases, and anything above MaxSeconds would overflow a Duration.
func parseLease(cmd, line, s string) (time.Duration, error) {
	n, ok := parseCount(s)
	if !ok || n == 0 || n > MaxSeconds {
		return 0, newProtocolError(cmd, line, "bad lease", nil)
	}
	return time.Duration(n) * time.Second, nil
}

func parseFence(cmd, line, s string) (uint64, error) {
	n, ok := parseCount(s)
	if !ok {
		return 0, newProtocolError(cmd, line, "bad fence", nil)
	}
	return n, nil
}

// parseGrantFields parses "<token> <lease>[ <fence>]" (f[1:n] of a split
// line). The token's form is the server's business; only presence matters.
func parseGrantFields(cmd, line string, f *[maxFields]string, n int) (Grant, error) {
	if n != 3 && n != 4 {
		return Grant{}, newProtocolError(cmd, line, "want 3 or 4 fields", nil)
	}
	lease, err := parseLease(cmd, line, f[2])
	if err != nil {
		return Grant{}, err
	}
	var fence uint64
	if n == 4 {
		if fence, err = parseFence(cmd, line, f[3]); err != nil {
			return Grant{}, err
		}
	}
	return Grant{Token: f[1], Lease: lease, Fence: fence}, nil
}

// ParseGrant parses "ok <token> <lease>[ <fence>]", the reply to l, sl, w
// and sw. Both generations are accepted: 1.10 sends no fence (Fence is 0).
// A non-ok status returns a *ServerError (a *NotLeaderError for
// error_not_leader); a malformed ok-line a *ProtocolError.
func ParseGrant(cmd, line string) (Grant, error) {
	var f [maxFields]string
	n := splitFields(line, &f)
	if n == 0 {
		return Grant{}, newProtocolError(cmd, line, "empty reply", nil)
	}
	if f[0] != "ok" {
		if f[0] == "acquired" || f[0] == "queued" {
			return Grant{}, unexpected(cmd, line)
		}
		return Grant{}, lineStatusErr(cmd, line)
	}
	return parseGrantFields(cmd, line, &f, n)
}

// ParseEnqueue parses the reply to e and se: "acquired <token>
// <lease>[ <fence>]" (acquired is true) or "queued" (the zero Grant and
// false; wait with w/sw).
func ParseEnqueue(cmd, line string) (g Grant, acquired bool, err error) {
	var f [maxFields]string
	n := splitFields(line, &f)
	if n == 0 {
		return Grant{}, false, newProtocolError(cmd, line, "empty reply", nil)
	}
	switch f[0] {
	case "queued":
		if n != 1 {
			return Grant{}, false, newProtocolError(cmd, line, "want 1 field", nil)
		}
		return Grant{}, false, nil
	case "acquired":
		g, err := parseGrantFields(cmd, line, &f, n)
		return g, err == nil, err
	case "ok":
		return Grant{}, false, unexpected(cmd, line)
	default:
		return Grant{}, false, lineStatusErr(cmd, line)
	}
}

// ParseRenew parses "ok <lease>[ <fence>]", the reply to n and sn. Both
// generations are accepted: 1.10 sends no fence (fence is 0).
func ParseRenew(cmd, line string) (lease time.Duration, fence uint64, err error) {
	var f [maxFields]string
	n := splitFields(line, &f)
	if n == 0 {
		return 0, 0, newProtocolError(cmd, line, "empty reply", nil)
	}
	if f[0] != "ok" {
		return 0, 0, lineStatusErr(cmd, line)
	}
	if n != 2 && n != 3 {
		return 0, 0, newProtocolError(cmd, line, "want 2 or 3 fields", nil)
	}
	if lease, err = parseLease(cmd, line, f[1]); err != nil {
		return 0, 0, err
	}
	if n == 3 {
		if fence, err = parseFence(cmd, line, f[2]); err != nil {
			return 0, 0, err
		}
	}
	return lease, fence, nil
}

// ParseOK accepts exactly "ok", the reply to release, listen, unlisten,
// auth, barrier, stable-ref and (on newer servers) ping. For ping, older servers answer "error",
// which comes back as StatusErr like any other status; the caller decides
// whether that matters.
func ParseOK(cmd, line string) error {
	var f [maxFields]string
	n := splitFields(line, &f)
	if n == 0 {
		return newProtocolError(cmd, line, "empty reply", nil)
	}
	if f[0] != "ok" {
		return lineStatusErr(cmd, line)
	}
	if n != 1 {
		return newProtocolError(cmd, line, "want 1 field", nil)
	}
	return nil
}

// ParseSignalReply parses "ok <receivers>", the reply to signal: the number
// of copies the server queued (0 when nobody listens).
func ParseSignalReply(line string) (int, error) {
	const cmd = "signal"
	var f [maxFields]string
	n := splitFields(line, &f)
	if n == 0 {
		return 0, newProtocolError(cmd, line, "empty reply", nil)
	}
	if f[0] != "ok" {
		return 0, lineStatusErr(cmd, line)
	}
	if n != 2 {
		return 0, newProtocolError(cmd, line, "want 2 fields", nil)
	}
	r, ok := parseCount(f[1])
	if !ok || r > math.MaxInt {
		return 0, newProtocolError(cmd, line, "bad receiver count", nil)
	}
	return int(r), nil
}

// Push is one "sig <channel> <payload>" line pushed by the server to a
// connection that listens.
type Push struct {
	// Channel is the channel the signal was sent to (not the pattern that
	// matched it).
	Channel string
	// Payload is the signal's payload, verbatim.
	Payload string
}

// pushPrefix starts every signal push; nothing else a server sends on a
// listening connection does.
const pushPrefix = "sig "

// IsPush reports whether line is a signal push rather than a reply.
func IsPush(line string) bool { return strings.HasPrefix(line, pushPrefix) }

// ParsePush parses "sig <channel> <payload>": the channel runs up to the
// first space after the prefix, the payload is everything after that space,
// verbatim (it may hold spaces and tabs, leading and trailing ones too).
func ParsePush(line string) (Push, error) {
	rest, ok := strings.CutPrefix(line, pushPrefix)
	if !ok {
		return Push{}, newProtocolError("", line, "not a push", nil)
	}
	ch, payload, ok := strings.Cut(rest, " ")
	if !ok || ch == "" {
		return Push{}, newProtocolError("", line, "malformed push", nil)
	}
	return Push{Channel: ch, Payload: payload}, nil
}
