package wire_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dfstream/dfstream/wire"
)

func enc(r wire.Request) string { return string(r.AppendTo(nil)) }

func must(t *testing.T) func(wire.Request, error) wire.Request {
	return func(r wire.Request, err error) wire.Request {
		t.Helper()
		require.NoError(t, err)
		return r
	}
}

func TestBuildersEncode(t *testing.T) {
	t.Parallel()
	m := must(t)
	tok := "0123456789abcdef0123456789abcdef"
	tests := []struct {
		name string
		req  wire.Request
		want string
	}{
		{"auth", m(wire.Auth("s3cret")), "auth\n_\ns3cret\n"},
		{"auth with spaces", m(wire.Auth(" a b\t")), "auth\n_\n a b\t\n"},
		{"l try once default lease", m(wire.Acquire(wire.KindLock, "k", 0, 0, 0)), "l\nk\n0\n"},
		{"l timeout lease", m(wire.Acquire(wire.KindLock, "k", 10*time.Second, 0, 60*time.Second)), "l\nk\n10 60\n"},
		{"l limit ignored", m(wire.Acquire(wire.KindLock, "k", time.Second, 7, 0)), "l\nk\n1\n"},
		{"l rounds up", m(wire.Acquire(wire.KindLock, "k", time.Millisecond, 0, 1500*time.Millisecond)), "l\nk\n1 2\n"},
		{"sl", m(wire.Acquire(wire.KindSemaphore, "s", 5*time.Second, 3, 0)), "sl\ns\n5 3\n"},
		{"sl lease", m(wire.Acquire(wire.KindSemaphore, "s", 0, 3, 30*time.Second)), "sl\ns\n0 3 30\n"},
		{"e default", m(wire.Enqueue(wire.KindLock, "k", 0, 0)), "e\nk\n\n"},
		{"e lease", m(wire.Enqueue(wire.KindLock, "k", 0, 5*time.Second)), "e\nk\n5\n"},
		{"se", m(wire.Enqueue(wire.KindSemaphore, "s", 2, 0)), "se\ns\n2\n"},
		{"se lease", m(wire.Enqueue(wire.KindSemaphore, "s", 2, 9*time.Second)), "se\ns\n2 9\n"},
		{"w", m(wire.Wait(wire.KindLock, "k", 5*time.Second)), "w\nk\n5\n"},
		{"w zero", m(wire.Wait(wire.KindLock, "k", 0)), "w\nk\n0\n"},
		{"sw", m(wire.Wait(wire.KindSemaphore, "s", time.Nanosecond)), "sw\ns\n1\n"},
		{"n default", m(wire.Renew(wire.KindLock, "k", tok, 0)), "n\nk\n" + tok + "\n"},
		{"n lease", m(wire.Renew(wire.KindLock, "k", tok, 20*time.Second)), "n\nk\n" + tok + " 20\n"},
		{"sn", m(wire.Renew(wire.KindSemaphore, "s", tok, 33*time.Second)), "sn\ns\n" + tok + " 33\n"},
		{"r", m(wire.Release(wire.KindLock, "k", tok)), "r\nk\n" + tok + "\n"},
		{"sr", m(wire.Release(wire.KindSemaphore, "s", tok)), "sr\ns\n" + tok + "\n"},
		{"stats", wire.StatsRequest(), "stats\n_\n\n"},
		{"ping", wire.Ping(), "ping\n_\n\n"},
		{"listen", m(wire.Listen("a.>", "")), "listen\na.>\n\n"},
		{"listen group", m(wire.Listen("a.*.c", "workers")), "listen\na.*.c\nworkers\n"},
		{"listen empty tokens", m(wire.Listen("a..b", "")), "listen\na..b\n\n"},
		{"listen dot", m(wire.Listen(".", "")), "listen\n.\n\n"},
		{"listen all", m(wire.Listen(">", "")), "listen\n>\n\n"},
		{"listen stars", m(wire.Listen("*.*", "")), "listen\n*.*\n\n"},
		{"unlisten", m(wire.Unlisten("a.b", "g")), "unlisten\na.b\ng\n"},
		{"signal", m(wire.Signal("a.b", "hello")), "signal\na.b\nhello\n"},
		{"signal blanks kept", m(wire.Signal("a.b", "  x  y\tz ")), "signal\na.b\n  x  y\tz \n"},
		{"signal only spaces", m(wire.Signal("a.b", "   ")), "signal\na.b\n   \n"},
		{"key with odd bytes", m(wire.Acquire(wire.KindLock, "a*b>c\x01é", 0, 0, 0)), "l\na*b>c\x01é\n0\n"},
		{"key 256 bytes", m(wire.Acquire(wire.KindLock, strings.Repeat("k", 256), 0, 0, 0)), "l\n" + strings.Repeat("k", 256) + "\n0\n"},
		{"max seconds", m(wire.Acquire(wire.KindLock, "k", wire.MaxSeconds*time.Second, 0, wire.MaxSeconds*time.Second)), "l\nk\n9223372036 9223372036\n"},
		{"payload 256 bytes", m(wire.Signal("c", strings.Repeat("p", 256))), "signal\nc\n" + strings.Repeat("p", 256) + "\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			assert.Equal(t, tc.want, enc(tc.req))
			// AppendTo appends: existing content is kept.
			assert.Equal(t, "xy"+tc.want, string(tc.req.AppendTo([]byte("xy"))))
		})
	}
}

func TestValidationRejects(t *testing.T) {
	t.Parallel()
	tok := "0123456789abcdef0123456789abcdef"
	long := strings.Repeat("k", 257)
	lock, sem := wire.KindLock, wire.KindSemaphore
	type build func() (wire.Request, error)
	tests := []struct {
		name  string
		build build
		field string
	}{
		{"empty key", func() (wire.Request, error) { return wire.Acquire(lock, "", 0, 0, 0) }, "key"},
		{"space in key", func() (wire.Request, error) { return wire.Acquire(lock, "a b", 0, 0, 0) }, "key"},
		{"tab in key", func() (wire.Request, error) { return wire.Acquire(lock, "a\tb", 0, 0, 0) }, "key"},
		{"CR in key", func() (wire.Request, error) { return wire.Acquire(lock, "a\rb", 0, 0, 0) }, "key"},
		{"LF in key (injection)", func() (wire.Request, error) { return wire.Acquire(lock, "a\nr\nk", 0, 0, 0) }, "key"},
		{"NUL in key", func() (wire.Request, error) { return wire.Acquire(lock, "a\x00b", 0, 0, 0) }, "key"},
		{"VT in key", func() (wire.Request, error) { return wire.Enqueue(lock, "a\vb", 0, 0) }, "key"},
		{"FF in key", func() (wire.Request, error) { return wire.Wait(lock, "a\fb", 0) }, "key"},
		{"NEL in key", func() (wire.Request, error) { return wire.Acquire(lock, "a\u0085b", 0, 0, 0) }, "key"},
		{"NBSP in key", func() (wire.Request, error) { return wire.Acquire(lock, "a\u00a0b", 0, 0, 0) }, "key"},
		{"EM SPACE in key", func() (wire.Request, error) { return wire.Acquire(lock, "a\u2003b", 0, 0, 0) }, "key"},
		{"key 257 bytes", func() (wire.Request, error) { return wire.Acquire(lock, long, 0, 0, 0) }, "key"},
		{"negative timeout", func() (wire.Request, error) { return wire.Acquire(lock, "k", -time.Second, 0, 0) }, "timeout"},
		{"negative lease", func() (wire.Request, error) { return wire.Acquire(lock, "k", 0, 0, -1) }, "lease"},
		{"timeout too large", func() (wire.Request, error) {
			return wire.Acquire(lock, "k", wire.MaxSeconds*time.Second+1, 0, 0)
		}, "timeout"},
		{"lease too large", func() (wire.Request, error) {
			return wire.Enqueue(lock, "k", 0, wire.MaxSeconds*time.Second+1)
		}, "lease"},
		{"sl zero limit", func() (wire.Request, error) { return wire.Acquire(sem, "s", 0, 0, 0) }, "limit"},
		{"sl negative limit", func() (wire.Request, error) { return wire.Acquire(sem, "s", 0, -3, 0) }, "limit"},
		{"se zero limit", func() (wire.Request, error) { return wire.Enqueue(sem, "s", 0, 0) }, "limit"},
		{"unknown kind", func() (wire.Request, error) { return wire.Acquire(wire.Kind(9), "k", 0, 1, 0) }, "kind"},
		{"w negative timeout", func() (wire.Request, error) { return wire.Wait(sem, "s", -time.Nanosecond) }, "timeout"},
		{"renew empty token", func() (wire.Request, error) { return wire.Renew(lock, "k", "", 0) }, "token"},
		{"renew token with space", func() (wire.Request, error) { return wire.Renew(lock, "k", tok+" 5", 0) }, "token"},
		{"renew token with LF", func() (wire.Request, error) { return wire.Renew(lock, "k", tok+"\nr", 0) }, "token"},
		{"renew negative lease", func() (wire.Request, error) { return wire.Renew(sem, "s", tok, -time.Second) }, "lease"},
		{"renew long token plus lease", func() (wire.Request, error) {
			return wire.Renew(lock, "k", strings.Repeat("t", 256), time.Second)
		}, "argument"},
		{"release empty token", func() (wire.Request, error) { return wire.Release(lock, "k", "") }, "token"},
		{"release token with tab", func() (wire.Request, error) { return wire.Release(sem, "s", "a\tb") }, "token"},
		{"release bad key", func() (wire.Request, error) { return wire.Release(lock, "a b", tok) }, "key"},
		{"auth empty", func() (wire.Request, error) { return wire.Auth("") }, "auth token"},
		{"auth LF", func() (wire.Request, error) { return wire.Auth("a\nl") }, "auth token"},
		{"auth CR", func() (wire.Request, error) { return wire.Auth("a\r") }, "auth token"},
		{"auth NUL", func() (wire.Request, error) { return wire.Auth("a\x00") }, "auth token"},
		{"auth 257 bytes", func() (wire.Request, error) { return wire.Auth(long) }, "auth token"},
		{"listen empty", func() (wire.Request, error) { return wire.Listen("", "") }, "pattern"},
		{"listen space", func() (wire.Request, error) { return wire.Listen("a b", "") }, "pattern"},
		{"listen a.>.b", func() (wire.Request, error) { return wire.Listen("a.>.b", "") }, "pattern"},
		{"listen a*", func() (wire.Request, error) { return wire.Listen("a*", "") }, "pattern"},
		{"listen >a", func() (wire.Request, error) { return wire.Listen(">a", "") }, "pattern"},
		{"listen a.>>", func() (wire.Request, error) { return wire.Listen("a.>>", "") }, "pattern"},
		{"listen >.>", func() (wire.Request, error) { return wire.Listen(">.>", "") }, "pattern"},
		{"listen *x.b", func() (wire.Request, error) { return wire.Listen("*x.b", "") }, "pattern"},
		{"listen group with space", func() (wire.Request, error) { return wire.Listen("a", "g h") }, "group"},
		{"listen group with LF", func() (wire.Request, error) { return wire.Listen("a", "g\nsignal") }, "group"},
		{"unlisten bad pattern", func() (wire.Request, error) { return wire.Unlisten("a.>.b", "") }, "pattern"},
		{"unlisten group NUL", func() (wire.Request, error) { return wire.Unlisten("a", "g\x00") }, "group"},
		{"signal star", func() (wire.Request, error) { return wire.Signal("a.*", "x") }, "channel"},
		{"signal gt", func() (wire.Request, error) { return wire.Signal("a.>", "x") }, "channel"},
		{"signal star inside", func() (wire.Request, error) { return wire.Signal("a*b", "x") }, "channel"},
		{"signal empty channel", func() (wire.Request, error) { return wire.Signal("", "x") }, "channel"},
		{"signal empty payload", func() (wire.Request, error) { return wire.Signal("a", "") }, "payload"},
		{"signal payload LF", func() (wire.Request, error) { return wire.Signal("a", "x\nsignal\nb\ny") }, "payload"},
		{"signal payload CR", func() (wire.Request, error) { return wire.Signal("a", "x\r") }, "payload"},
		{"signal payload NUL", func() (wire.Request, error) { return wire.Signal("a", "x\x00") }, "payload"},
		{"signal payload 257", func() (wire.Request, error) { return wire.Signal("a", long) }, "payload"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			req, err := tc.build()
			require.Error(t, err)
			assert.ErrorIs(t, err, wire.ErrInvalidInput)
			var ie *wire.InputError
			require.ErrorAs(t, err, &ie)
			assert.Equal(t, tc.field, ie.Field)
			assert.Equal(t, wire.Request{}, req, "nothing is built on error")
		})
	}
}

func TestAuthErrorHidesToken(t *testing.T) {
	t.Parallel()
	_, err := wire.Auth("topsecret\n")
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "topsecret")
	req, err := wire.Auth("topsecret")
	require.NoError(t, err)
	assert.NotContains(t, req.String(), "topsecret")
}

func TestValidateHelpers(t *testing.T) {
	t.Parallel()
	ok := []struct {
		name string
		err  error
	}{
		{"key", wire.ValidateKey("key", "a.b:c/d")},
		{"key non-ascii", wire.ValidateKey("key", "ключ")},
		{"key invalid utf8", wire.ValidateKey("key", "a\xffb")},
		{"pattern literal", wire.ValidatePattern("a.b")},
		{"pattern >", wire.ValidatePattern(">")},
		{"pattern *.>", wire.ValidatePattern("*.>")},
		{"pattern a..b", wire.ValidatePattern("a..b")},
		{"channel", wire.ValidateChannel("a.b.c")},
		{"payload tabs", wire.ValidatePayload("\t x \t")},
		{"group empty", wire.ValidateGroup("")},
		{"group", wire.ValidateGroup("workers")},
		{"token", wire.ValidateToken("0123456789abcdef0123456789abcdef")},
	}
	for _, tc := range ok {
		assert.NoError(t, tc.err, tc.name)
	}
	bad := []struct {
		name string
		err  error
	}{
		{"key empty", wire.ValidateKey("key", "")},
		{"pattern a.*b", wire.ValidatePattern("a.*b")},
		{"channel >", wire.ValidateChannel(">")},
		{"payload empty", wire.ValidatePayload("")},
		{"group tab", wire.ValidateGroup("\t")},
		{"token space", wire.ValidateToken(" ")},
	}
	for _, tc := range bad {
		assert.ErrorIs(t, tc.err, wire.ErrInvalidInput, tc.name)
	}
}

// Checklist 97: 1 ms is sent as 1, 1.001 s as 2, 0 as 0.
func TestSeconds(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      time.Duration
		want    int64
		wantErr bool
	}{
		{0, 0, false},
		{time.Nanosecond, 1, false},
		{time.Millisecond, 1, false},
		{999 * time.Millisecond, 1, false},
		{time.Second, 1, false},
		{1001 * time.Millisecond, 2, false},
		{1500 * time.Millisecond, 2, false},
		{2 * time.Second, 2, false},
		{33 * time.Second, 33, false},
		{time.Hour, 3600, false},
		{wire.MaxSeconds * time.Second, wire.MaxSeconds, false},
		{wire.MaxSeconds*time.Second + 1, 0, true},
		{1<<63 - 1, 0, true},
		{-1, 0, true},
		{-time.Second, 0, true},
		{-1 << 63, 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.in.String(), func(t *testing.T) {
			t.Parallel()
			got, err := wire.Seconds("timeout", tc.in)
			if tc.wantErr {
				assert.ErrorIs(t, err, wire.ErrInvalidInput)
				var ie *wire.InputError
				require.ErrorAs(t, err, &ie)
				assert.Equal(t, "timeout", ie.Field)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestKindString(t *testing.T) {
	t.Parallel()
	assert.Equal(t, "lock", wire.KindLock.String())
	assert.Equal(t, "semaphore", wire.KindSemaphore.String())
	assert.Equal(t, "Kind(7)", wire.Kind(7).String())
}

func TestRequestString(t *testing.T) {
	t.Parallel()
	r, err := wire.Signal("a.b", "x y")
	require.NoError(t, err)
	assert.Equal(t, `signal "a.b" "x y"`, r.String())
}

func TestInputErrorTruncates(t *testing.T) {
	t.Parallel()
	err := wire.ValidateKey("key", strings.Repeat("k", 300))
	require.Error(t, err)
	assert.Less(t, len(err.Error()), 120)
	assert.True(t, errors.Is(err, wire.ErrInvalidInput))
}
