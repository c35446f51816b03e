package wire_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dfstream/dfstream/wire"
)

const tok = "0123456789abcdef0123456789abcdef"

// Checklist 98 and 100: grants with and without fence; unknown statuses
// are generic server errors; malformed ok-lines are protocol errors.
func TestParseGrant(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		line   string
		want   wire.Grant
		target error // nil: success
	}{
		{"1.10 three fields", "ok " + tok + " 33", wire.Grant{Token: tok, Lease: 33 * time.Second}, nil},
		{"RF four fields", "ok " + tok + " 60 7", wire.Grant{Token: tok, Lease: time.Minute, Fence: 7}, nil},
		{"fence max", "ok t 1 18446744073709551615", wire.Grant{Token: "t", Lease: time.Second, Fence: 1<<64 - 1}, nil},
		{"token form not checked", "ok X:y 5", wire.Grant{Token: "X:y", Lease: 5 * time.Second}, nil},
		{"lease max", "ok t 9223372036", wire.Grant{Token: "t", Lease: wire.MaxSeconds * time.Second}, nil},
		{"timeout", "timeout", wire.Grant{}, wire.ErrTimeout},
		{"max locks", "error_max_locks", wire.Grant{}, wire.ErrMaxLocks},
		{"max waiters", "error_max_waiters", wire.Grant{}, wire.ErrMaxWaiters},
		{"limit mismatch", "error_limit_mismatch", wire.Grant{}, wire.ErrLimitMismatch},
		{"type mismatch", "error_type_mismatch", wire.Grant{}, wire.ErrTypeMismatch},
		{"not enqueued", "error_not_enqueued", wire.Grant{}, wire.ErrNotEnqueued},
		{"lease expired", "error_lease_expired", wire.Grant{}, wire.ErrLeaseExpired},
		{"generic", "error", wire.Grant{}, wire.ErrServer},
		{"unknown status", "error_draining", wire.Grant{}, wire.ErrServer},
		{"unknown status with fields", "busy 1 2 3 4 5 6", wire.Grant{}, wire.ErrServer},
		{"empty", "", wire.Grant{}, wire.ErrProtocol},
		{"blank", "   ", wire.Grant{}, wire.ErrProtocol},
		{"ok alone", "ok", wire.Grant{}, wire.ErrProtocol},
		{"ok token only", "ok " + tok, wire.Grant{}, wire.ErrProtocol},
		{"five fields", "ok t 1 2 3", wire.Grant{}, wire.ErrProtocol},
		{"lease not a number", "ok t x", wire.Grant{}, wire.ErrProtocol},
		{"lease float", "ok t 1.5", wire.Grant{}, wire.ErrProtocol},
		{"lease zero", "ok t 0", wire.Grant{}, wire.ErrProtocol},
		{"lease negative (1.10 overflow)", "ok t -9223372036", wire.Grant{}, wire.ErrProtocol},
		{"lease overflows duration", "ok t 9223372037", wire.Grant{}, wire.ErrProtocol},
		{"fence negative", "ok t 1 -1", wire.Grant{}, wire.ErrProtocol},
		{"fence not a number", "ok t 1 f", wire.Grant{}, wire.ErrProtocol},
		{"lease with plus", "ok t +5", wire.Grant{}, wire.ErrProtocol},
		{"lease minus zero", "ok t -0", wire.Grant{}, wire.ErrProtocol},
		{"fence with plus", "ok t 1 +1", wire.Grant{}, wire.ErrProtocol},
		{"fence minus zero", "ok t 1 -0", wire.Grant{}, wire.ErrProtocol},
		{"lease with underscore", "ok t 1_0", wire.Grant{}, wire.ErrProtocol},
		{"fence overflow", "ok t 1 18446744073709551616", wire.Grant{}, wire.ErrProtocol},
		{"acquired is not a grant reply", "acquired t 1", wire.Grant{}, wire.ErrProtocol},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			g, err := wire.ParseGrant("l", tc.line)
			if tc.target == nil {
				require.NoError(t, err)
				assert.Equal(t, tc.want, g)
				return
			}
			require.ErrorIs(t, err, tc.target)
			assert.Equal(t, wire.Grant{}, g)
			if tc.target != wire.ErrProtocol {
				var se *wire.ServerError
				require.ErrorAs(t, err, &se)
				assert.ErrorIs(t, err, wire.ErrServer, "every status error is a server error")
				assert.Equal(t, "l", se.Cmd)
				assert.Equal(t, strings.Fields(tc.line)[0], se.Status)
				assert.NotErrorIs(t, err, wire.ErrProtocol)
			} else {
				var pe *wire.ProtocolError
				require.ErrorAs(t, err, &pe)
				assert.Equal(t, "l", pe.Cmd)
				assert.NotErrorIs(t, err, wire.ErrServer)
			}
		})
	}
}

func TestParseEnqueue(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		line     string
		want     wire.Grant
		acquired bool
		target   error
	}{
		{"queued", "queued", wire.Grant{}, false, nil},
		{"acquired 1.10", "acquired " + tok + " 33", wire.Grant{Token: tok, Lease: 33 * time.Second}, true, nil},
		{"acquired RF", "acquired " + tok + " 5 12", wire.Grant{Token: tok, Lease: 5 * time.Second, Fence: 12}, true, nil},
		{"already enqueued", "error_already_enqueued", wire.Grant{}, false, wire.ErrAlreadyEnqueued},
		{"max locks", "error_max_locks", wire.Grant{}, false, wire.ErrMaxLocks},
		{"unknown", "nope", wire.Grant{}, false, wire.ErrServer},
		{"queued with field", "queued 1", wire.Grant{}, false, wire.ErrProtocol},
		{"acquired short", "acquired t", wire.Grant{}, false, wire.ErrProtocol},
		{"acquired bad lease", "acquired t -1", wire.Grant{}, false, wire.ErrProtocol},
		{"acquired lease with plus", "acquired t +5", wire.Grant{}, false, wire.ErrProtocol},
		{"acquired fence with plus", "acquired t 5 +12", wire.Grant{}, false, wire.ErrProtocol},
		{"ok is not an enqueue reply", "ok t 1", wire.Grant{}, false, wire.ErrProtocol},
		{"empty", "", wire.Grant{}, false, wire.ErrProtocol},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			g, acq, err := wire.ParseEnqueue("e", tc.line)
			if tc.target != nil {
				require.ErrorIs(t, err, tc.target)
				assert.False(t, acq)
				assert.Equal(t, wire.Grant{}, g)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.acquired, acq)
			assert.Equal(t, tc.want, g)
		})
	}
}

// Checklist 99: renew replies with and without fence.
func TestParseRenew(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		line   string
		lease  time.Duration
		fence  uint64
		target error
	}{
		{"1.10", "ok 33", 33 * time.Second, 0, nil},
		{"RF", "ok 20 4", 20 * time.Second, 4, nil},
		{"1.10 lost", "error", 0, 0, wire.ErrServer},
		{"RF lost", "error_lease_expired", 0, 0, wire.ErrLeaseExpired},
		{"unknown", "error_draining", 0, 0, wire.ErrServer},
		{"ok alone", "ok", 0, 0, wire.ErrProtocol},
		{"too many", "ok 1 2 3", 0, 0, wire.ErrProtocol},
		{"bad lease", "ok x", 0, 0, wire.ErrProtocol},
		{"zero lease", "ok 0 1", 0, 0, wire.ErrProtocol},
		{"bad fence", "ok 1 -2", 0, 0, wire.ErrProtocol},
		{"lease with plus", "ok +3", 0, 0, wire.ErrProtocol},
		{"fence with plus", "ok 3 +4", 0, 0, wire.ErrProtocol},
		{"fence minus zero", "ok 3 -0", 0, 0, wire.ErrProtocol},
		{"empty", "", 0, 0, wire.ErrProtocol},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			lease, fence, err := wire.ParseRenew("n", tc.line)
			if tc.target != nil {
				require.ErrorIs(t, err, tc.target)
				assert.Zero(t, lease)
				assert.Zero(t, fence)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.lease, lease)
			assert.Equal(t, tc.fence, fence)
		})
	}
}

func TestParseOK(t *testing.T) {
	t.Parallel()
	require.NoError(t, wire.ParseOK("r", "ok"))
	assert.ErrorIs(t, wire.ParseOK("r", "error"), wire.ErrServer)
	assert.ErrorIs(t, wire.ParseOK("auth", "error_auth"), wire.ErrAuth)
	assert.ErrorIs(t, wire.ParseOK("ping", "error"), wire.ErrServer)
	assert.ErrorIs(t, wire.ParseOK("r", "ok 1"), wire.ErrProtocol)
	assert.ErrorIs(t, wire.ParseOK("r", ""), wire.ErrProtocol)
}

func TestParseSignalReply(t *testing.T) {
	t.Parallel()
	n, err := wire.ParseSignalReply("ok 0")
	require.NoError(t, err)
	assert.Equal(t, 0, n)
	n, err = wire.ParseSignalReply("ok 3")
	require.NoError(t, err)
	assert.Equal(t, 3, n)
	for _, bad := range []string{"ok", "ok -1", "ok x", "ok 1 2", "", "ok +3", "ok -0", "ok +0", "ok 9223372036854775808"} {
		_, err := wire.ParseSignalReply(bad)
		assert.ErrorIs(t, err, wire.ErrProtocol, bad)
	}
	_, err = wire.ParseSignalReply("error")
	var se *wire.ServerError
	require.ErrorAs(t, err, &se)
	assert.Equal(t, "signal", se.Cmd)
}

func TestParsePush(t *testing.T) {
	t.Parallel()
	tests := []struct {
		line string
		want wire.Push
	}{
		{"sig a.b hello", wire.Push{Channel: "a.b", Payload: "hello"}},
		// Checklist 76: payload byte-identical, blanks and tabs kept.
		{"sig a.b   x  y\tz ", wire.Push{Channel: "a.b", Payload: "  x  y\tz "}},
		{"sig c \t", wire.Push{Channel: "c", Payload: "\t"}},
		{"sig c    ", wire.Push{Channel: "c", Payload: "   "}},
		{"sig c sig d e", wire.Push{Channel: "c", Payload: "sig d e"}},
	}
	for _, tc := range tests {
		assert.True(t, wire.IsPush(tc.line))
		p, err := wire.ParsePush(tc.line)
		require.NoError(t, err, tc.line)
		assert.Equal(t, tc.want, p)
	}
	for _, bad := range []string{"sig ", "sig a", "sig  payload", "sig"} {
		_, err := wire.ParsePush(bad)
		assert.ErrorIs(t, err, wire.ErrProtocol, "%q", bad)
	}
	for _, notPush := range []string{"sig", "signal", "ok 1", "", "SIG a b"} {
		assert.False(t, wire.IsPush(notPush), notPush)
	}
}

func TestStatusErr(t *testing.T) {
	t.Parallel()
	assert.NoError(t, wire.StatusErr("l", "ok"))
	err := wire.StatusErr("sl", "timeout")
	var se *wire.ServerError
	require.ErrorAs(t, err, &se)
	assert.Equal(t, &wire.ServerError{Cmd: "sl", Status: "timeout"}, se)
	assert.ErrorIs(t, err, wire.ErrTimeout)
	assert.ErrorIs(t, err, wire.ErrServer)
	assert.NotErrorIs(t, err, wire.ErrAuth)
	assert.Equal(t, "timed out", err.Error(), "a known status in words, without a prefix")
	assert.Equal(t, `server replied "error_new"`, wire.StatusErr("sl", "error_new").Error(), "an unknown one as sent")
	assert.Equal(t, wire.ErrTimeout, se.Unwrap())
	// Unwrap chains to the status sentinel.
	assert.Equal(t, wire.ErrServer, (&wire.ServerError{Status: "weird"}).Unwrap())
}

func TestProtocolErrorTruncatesLine(t *testing.T) {
	t.Parallel()
	_, err := wire.ParseStats("ok {" + strings.Repeat("x", 10000))
	var pe *wire.ProtocolError
	require.ErrorAs(t, err, &pe)
	assert.LessOrEqual(t, len(pe.Line), 128)
	assert.Less(t, len(err.Error()), 400)
}
