package dfstream_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dfstream/dfstream"
	"github.com/dfstream/dfstream/dflockdtest"
)

// errEnv is what a case of TestErrorMessages runs against: a server of its
// own (fresh per case, so that its faults touch nobody else), a Client for
// it, and an address where nothing listens.
type errEnv struct {
	srv  *dflockdtest.Server
	addr string
	c    *dfstream.Client
	dead string // an address that refuses connections
	key  string
}

// refusedAddr returns a loopback address nothing listens on, and the error
// a dial to it gets: the tail of every "unreachable" message.
func refusedAddr(t *testing.T) (addr string, dialErr error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr = ln.Addr().String()
	require.NoError(t, ln.Close())
	_, dialErr = net.Dial("tcp", addr)
	require.Error(t, dialErr)
	return addr, dialErr
}

// hold starts a stream holding key until the test ends.
func (e *errEnv) hold(t *testing.T, key string) {
	t.Helper()
	s, err := e.c.Lock(context.Background(), key)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
}

// lostReason holds key with a short lease, has fault strike, and returns
// the reason of the Lost that follows.
func (e *errEnv) lostReason(t *testing.T, fault func()) error {
	t.Helper()
	s, err := e.c.Lock(context.Background(), e.key, dfstream.WithLease(2*time.Second))
	require.NoError(t, err)
	defer s.Close()
	nextOf[dfstream.Acquired](t, s.Events(), 5*time.Second)
	fault()
	for {
		if lost, ok := next(t, s.Events(), 10*time.Second).(dfstream.Lost); ok {
			return lost.Reason
		}
	}
}

// TestErrorMessages checks, for every entry point, the full text of the
// error a user sees and that it still matches its sentinels: one
// "dfstream: " prefix, the operation in words, the key.
func TestErrorMessages(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cases := []struct {
		name string
		cfg  dflockdtest.Config
		opts []dfstream.Option
		run  func(t *testing.T, e *errEnv) error
		want string // {key}, {addr}, {dead} and {refused} (why a dial to dead fails) are filled in
		is   []error
	}{
		{
			name: "New without servers",
			run: func(t *testing.T, e *errEnv) error {
				_, err := dfstream.New(dfstream.WithServers())
				return err
			},
			want: `dfstream: option WithServers([]): no server`,
			is:   []error{dfstream.ErrInvalidInput},
		},
		{
			name: "New with a negative connect timeout",
			run: func(t *testing.T, e *errEnv) error {
				_, err := dfstream.New(dfstream.WithConnectTimeout(-time.Second))
				return err
			},
			want: `dfstream: option WithConnectTimeout(-1s): must be positive`,
			is:   []error{dfstream.ErrInvalidInput},
		},
		{
			name: "Lock with an invalid key",
			run: func(t *testing.T, e *errEnv) error {
				_, err := e.c.StartLock(ctx, "a b")
				return err
			},
			want: `dfstream: acquire lock: invalid key "a b": contains white space or NUL`,
			is:   []error{dfstream.ErrInvalidInput},
		},
		{
			name: "Lock with a nil context",
			run: func(t *testing.T, e *errEnv) error {
				//lint:ignore SA1012 a nil context is what is tested
				_, err := e.c.StartLock(nil, e.key)
				return err
			},
			want: `dfstream: acquire lock "{key}": nil context`,
			is:   []error{dfstream.ErrInvalidInput},
		},
		{
			name: "TryLock of a held key",
			run: func(t *testing.T, e *errEnv) error {
				e.hold(t, e.key)
				_, err := e.c.TryLock(ctx, e.key)
				return err
			},
			want: `dfstream: acquire lock "{key}": held by another client`,
			is:   []error{dfstream.ErrNotAcquired, dfstream.ErrTimeout, dfstream.ErrServer},
		},
		{
			name: "TryAcquireSemaphore with every slot held",
			run: func(t *testing.T, e *errEnv) error {
				s, err := e.c.AcquireSemaphore(ctx, e.key, 1)
				require.NoError(t, err)
				defer s.Close()
				_, err = e.c.TryAcquireSemaphore(ctx, e.key, 1)
				return err
			},
			want: `dfstream: acquire semaphore "{key}": held by another client`,
			is:   []error{dfstream.ErrNotAcquired, dfstream.ErrTimeout},
		},
		{
			name: "Lock times out",
			run: func(t *testing.T, e *errEnv) error {
				e.hold(t, e.key)
				_, err := e.c.Lock(ctx, e.key, dfstream.WithAcquireTimeout(time.Second))
				return err
			},
			want: `dfstream: acquire lock "{key}": not acquired within 1s`,
			is:   []error{dfstream.ErrTimeout, dfstream.ErrServer},
		},
		{
			name: "Lock on an unreachable server",
			run: func(t *testing.T, e *errEnv) error {
				c := newClient(t, []string{e.dead}, signalsEra)
				_, err := c.Lock(ctx, e.key)
				return err
			},
			want: `dfstream: acquire lock "{key}": server unreachable: dial {dead}: {refused}`,
			is:   []error{dfstream.ErrUnreachable},
		},
		{
			name: "Lock with a refused token",
			cfg:  dflockdtest.Config{AuthToken: "right"},
			opts: []dfstream.Option{dfstream.WithAuthToken("wrong")},
			run: func(t *testing.T, e *errEnv) error {
				_, err := e.c.Lock(ctx, e.key)
				return err
			},
			want: `dfstream: acquire lock "{key}": dial {addr}: authentication refused`,
			is:   []error{dfstream.ErrAuth, dfstream.ErrServer},
		},
		{
			name: "Lock with a full queue",
			cfg:  dflockdtest.Config{MaxWaiters: 1},
			run: func(t *testing.T, e *errEnv) error {
				e.hold(t, e.key)
				s, err := e.c.StartLock(ctx, e.key)
				require.NoError(t, err)
				defer s.Close()
				_, err = e.c.Lock(ctx, e.key)
				return err
			},
			want: `dfstream: acquire lock "{key}": the key has as many waiters as the server allows`,
			is:   []error{dfstream.ErrMaxWaiters, dfstream.ErrServer},
		},
		{
			name: "AcquireSemaphore with another limit",
			run: func(t *testing.T, e *errEnv) error {
				s, err := e.c.AcquireSemaphore(ctx, e.key, 3)
				require.NoError(t, err)
				defer s.Close()
				_, err = e.c.AcquireSemaphore(ctx, e.key, 2)
				return err
			},
			want: `dfstream: acquire semaphore "{key}": the key exists with a limit other than 2 (stats shows it)`,
			is:   []error{dfstream.ErrLimitMismatch, dfstream.ErrServer},
		},
		{
			name: "Lock on a semaphore's key",
			run: func(t *testing.T, e *errEnv) error {
				s, err := e.c.AcquireSemaphore(ctx, e.key, 3)
				require.NoError(t, err)
				defer s.Close()
				_, err = e.c.Lock(ctx, e.key)
				return err
			},
			want: `dfstream: acquire lock "{key}": the key exists as a semaphore (stats shows its limit)`,
			is:   []error{dfstream.ErrLimitMismatch, dfstream.ErrServer},
		},
		{
			name: "Semaphore with limit 0",
			run: func(t *testing.T, e *errEnv) error {
				_, err := e.c.StartSemaphore(ctx, e.key, 0)
				return err
			},
			want: `dfstream: acquire semaphore "{key}": invalid limit "0": must be positive`,
			is:   []error{dfstream.ErrInvalidInput},
		},
		{
			name: "Release of a lock not held",
			run: func(t *testing.T, e *errEnv) error {
				s, err := e.c.Lock(ctx, e.key)
				require.NoError(t, err)
				require.NoError(t, s.Release(ctx))
				return s.Release(ctx)
			},
			want: `dfstream: release lock "{key}": not held`,
			is:   []error{dfstream.ErrNotHeld},
		},
		{
			name: "Release with a context already ended",
			run: func(t *testing.T, e *errEnv) error {
				s, err := e.c.Lock(ctx, e.key)
				require.NoError(t, err)
				ended, cancel := context.WithCancel(ctx)
				cancel()
				return s.Release(ended)
			},
			want: `dfstream: release lock "{key}": connection lost: closed to free the key: context canceled`,
			is:   []error{dfstream.ErrConnLost, context.Canceled},
		},
		{
			name: "Wait on a closed stream",
			run: func(t *testing.T, e *errEnv) error {
				e.hold(t, e.key)
				s, err := e.c.StartLock(ctx, e.key)
				require.NoError(t, err)
				require.NoError(t, s.Close())
				_, err = s.Wait(ctx)
				return err
			},
			want: `dfstream: acquire lock "{key}": closed`,
			is:   []error{dfstream.ErrClosed},
		},
		{
			name: "Wait when the server drops the queued connection",
			// Without auto-release the holder's dropped connection cannot
			// hand the key to the waiter before the waiter's goes too.
			cfg: dflockdtest.Config{DisableAutoRelease: true},
			run: func(t *testing.T, e *errEnv) error {
				e.hold(t, e.key)
				s, err := e.c.StartLock(ctx, e.key)
				require.NoError(t, err)
				defer s.Close()
				e.srv.DropConnections()
				_, err = s.Wait(ctx)
				return err
			},
			want: `dfstream: acquire lock "{key}": connection lost: the server closed the connection`,
			is:   []error{dfstream.ErrConnLost},
		},
		{
			name: "Lost: renewal unanswered",
			run: func(t *testing.T, e *errEnv) error {
				defer e.srv.Thaw()
				return e.lostReason(t, e.srv.Freeze)
			},
			want: `dfstream: renew lock "{key}": safe deadline passed: no reply in time`,
			is:   []error{dfstream.ErrDeadlinePassed},
		},
		{
			name: "Lost: the server hangs up",
			run: func(t *testing.T, e *errEnv) error {
				return e.lostReason(t, e.srv.DropConnections)
			},
			want: `dfstream: hold lock "{key}": connection lost: the server closed the connection`,
			is:   []error{dfstream.ErrConnLost},
		},
		{
			name: "Stats of an unknown server",
			run: func(t *testing.T, e *errEnv) error {
				_, err := e.c.Stats(ctx, "example.com:1")
				return err
			},
			want: `dfstream: stats: "example.com:1" is not a configured server`,
			is:   []error{dfstream.ErrInvalidInput},
		},
		{
			name: "Stats of an unreachable server",
			run: func(t *testing.T, e *errEnv) error {
				c := newClient(t, []string{e.dead}, signalsEra)
				_, err := c.Stats(ctx, "")
				return err
			},
			want: `dfstream: stats: server unreachable: dial {dead}: {refused}`,
			is:   []error{dfstream.ErrUnreachable},
		},
		{
			name: "Signals on an unreachable server",
			run: func(t *testing.T, e *errEnv) error {
				c := newClient(t, []string{e.dead}, signalsEra)
				_, err := c.Signals(ctx)
				return err
			},
			want: `dfstream: signal stream: server unreachable: dial {dead}: {refused}`,
			is:   []error{dfstream.ErrUnreachable},
		},
		{
			name: "Signals on a 2.x server",
			cfg:  dflockdtest.Config{Generation: dflockdtest.Gen2},
			run: func(t *testing.T, e *errEnv) error {
				_, err := e.c.Signals(ctx)
				return err
			},
			want: `dfstream: signal stream: the server at {addr} speaks dflockd 2.x, which has no signals`,
			is:   []error{dfstream.ErrUnsupported},
		},
		{
			name: "Listen to an invalid pattern",
			run: func(t *testing.T, e *errEnv) error {
				s, err := e.c.Signals(ctx)
				require.NoError(t, err)
				defer s.Close()
				_, err = s.Listen(ctx, "a.>.b")
				return err
			},
			want: `dfstream: listen: invalid pattern "a.>.b": a token with ">" must be exactly ">" and the last`,
			is:   []error{dfstream.ErrInvalidInput},
		},
		{
			name: "Listen on a closed stream",
			run: func(t *testing.T, e *errEnv) error {
				s, err := e.c.Signals(ctx)
				require.NoError(t, err)
				require.NoError(t, s.Close())
				_, err = s.Listen(ctx, "a.b")
				return err
			},
			want: `dfstream: listen "a.b": closed`,
			is:   []error{dfstream.ErrClosed},
		},
		{
			name: "Unlisten of a Subscription Listen did not return",
			run: func(t *testing.T, e *errEnv) error {
				return new(dfstream.Subscription).Unlisten(ctx)
			},
			want: `dfstream: unlisten: not a subscription Listen returned`,
			is:   []error{dfstream.ErrInvalidInput},
		},
		{
			name: "Emit to a channel with a wildcard",
			run: func(t *testing.T, e *errEnv) error {
				_, err := e.c.Emit(ctx, "a.*", "x")
				return err
			},
			want: `dfstream: emit: invalid channel "a.*": contains a wildcard ("*" or ">")`,
			is:   []error{dfstream.ErrInvalidInput},
		},
		{
			name: "Emit on an unreachable server",
			run: func(t *testing.T, e *errEnv) error {
				c := newClient(t, []string{e.dead}, signalsEra)
				_, err := c.Emit(ctx, "a", "x")
				return err
			},
			want: `dfstream: emit "a": server unreachable: dial {dead}: {refused}`,
			is:   []error{dfstream.ErrUnreachable},
		},
		{
			name: "Emit on a closed Client",
			run: func(t *testing.T, e *errEnv) error {
				c := newClient(t, []string{e.addr})
				require.NoError(t, c.Close())
				_, err := c.Emit(ctx, "a", "x")
				return err
			},
			want: `dfstream: emit "a": closed`,
			is:   []error{dfstream.ErrClosed},
		},
		{
			name: "Lock with a negative lease",
			run: func(t *testing.T, e *errEnv) error {
				_, err := e.c.Lock(ctx, e.key, dfstream.WithLease(-time.Second))
				return err
			},
			want: `dfstream: option WithLease(-1s): must be positive`,
			is:   []error{dfstream.ErrInvalidInput},
		},
		{
			name: "Lock whose context ends in the queue",
			run: func(t *testing.T, e *errEnv) error {
				e.hold(t, e.key)
				ctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
				defer cancel()
				_, err := e.c.Lock(ctx, e.key)
				return err
			},
			want: `dfstream: acquire lock "{key}": context deadline exceeded`,
			is:   []error{context.DeadlineExceeded},
		},
		{
			name: "Lock on a silent server",
			opts: []dfstream.Option{dfstream.WithConnectTimeout(300 * time.Millisecond)},
			run: func(t *testing.T, e *errEnv) error {
				e.srv.Freeze()
				defer e.srv.Thaw()
				_, err := e.c.Lock(ctx, e.key)
				return err
			},
			want: `dfstream: acquire lock "{key}": connection lost: no reply in time`,
			is:   []error{dfstream.ErrConnLost},
		},
		{
			name: "StartLock on a closed Client",
			run: func(t *testing.T, e *errEnv) error {
				require.NoError(t, e.c.Close())
				_, err := e.c.StartLock(ctx, e.key)
				return err
			},
			want: `dfstream: acquire lock "{key}": closed`,
			is:   []error{dfstream.ErrClosed},
		},
		{
			name: "ServerFor with a shard out of range",
			opts: []dfstream.Option{dfstream.WithSharding(func(string, int) int { return 5 })},
			run: func(t *testing.T, e *errEnv) error {
				_, err := e.c.ServerFor(e.key)
				return err
			},
			want: `dfstream: find the server of "{key}": the shard function returned 5 for 1 servers`,
			is:   []error{dfstream.ErrInvalidInput},
		},
		{
			name: "Generation of an unknown server",
			run: func(t *testing.T, e *errEnv) error {
				_, err := e.c.Generation(ctx, "example.com:1")
				return err
			},
			want: `dfstream: generation: "example.com:1" is not a configured server`,
			is:   []error{dfstream.ErrInvalidInput},
		},
		{
			name: "Signals on an unknown server",
			run: func(t *testing.T, e *errEnv) error {
				_, err := e.c.Signals(ctx, dfstream.WithSignalServer("example.com:1"))
				return err
			},
			want: `dfstream: signal stream: "example.com:1" is not a configured server`,
			is:   []error{dfstream.ErrInvalidInput},
		},
		{
			name: "Signals without the token the server wants",
			cfg:  dflockdtest.Config{AuthToken: "right"},
			run: func(t *testing.T, e *errEnv) error {
				_, err := e.c.Signals(ctx)
				return err
			},
			want: `dfstream: signal stream: authentication refused`,
			is:   []error{dfstream.ErrAuth},
		},
		{
			name: "ListenGroup on a closed stream",
			run: func(t *testing.T, e *errEnv) error {
				s, err := e.c.Signals(ctx)
				require.NoError(t, err)
				require.NoError(t, s.Close())
				_, err = s.ListenGroup(ctx, "a.b", "workers")
				return err
			},
			want: `dfstream: join group "workers" on "a.b": closed`,
			is:   []error{dfstream.ErrClosed},
		},
		{
			name: "Emit on a closed signal stream",
			run: func(t *testing.T, e *errEnv) error {
				s, err := e.c.Signals(ctx)
				require.NoError(t, err)
				require.NoError(t, s.Close())
				_, err = s.Emit(ctx, "a.b", "x")
				return err
			},
			want: `dfstream: emit "a.b": closed`,
			is:   []error{dfstream.ErrClosed},
		},
		{
			name: "NewRouter without a Client",
			run: func(t *testing.T, e *errEnv) error {
				_, err := dfstream.NewRouter(nil)
				return err
			},
			want: `dfstream: new router: nil Client`,
			is:   []error{dfstream.ErrInvalidInput},
		},
		{
			name: "Handle an invalid pattern",
			run: func(t *testing.T, e *errEnv) error {
				r, err := dfstream.NewRouter(e.c)
				require.NoError(t, err)
				return r.Handle("a.>>", dfstream.HandlerFunc(func(context.Context, dfstream.Signal) error { return nil }))
			},
			want: `dfstream: handle: invalid pattern "a.>>": a token with ">" must be exactly ">" and the last`,
			is:   []error{dfstream.ErrInvalidInput},
		},
		{
			name: "Run a router without handlers",
			run: func(t *testing.T, e *errEnv) error {
				r, err := dfstream.NewRouter(e.c)
				require.NoError(t, err)
				return r.Run(ctx)
			},
			want: `dfstream: run router: no handlers`,
			is:   []error{dfstream.ErrInvalidInput},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := dflockdtest.New(t, tc.cfg)
			dead, dialErr := refusedAddr(t)
			e := &errEnv{
				srv:  srv,
				addr: srv.Addr(),
				c:    newClient(t, []string{srv.Addr()}, tc.opts...),
				dead: dead,
				key:  "k",
			}
			err := tc.run(t, e)
			require.Error(t, err)
			var refused *net.OpError
			require.ErrorAs(t, dialErr, &refused)
			want := strings.NewReplacer("{key}", e.key, "{addr}", e.addr, "{dead}", dead, "{refused}", refused.Err.Error()).Replace(tc.want)
			assert.Equal(t, want, err.Error())
			assert.Equal(t, 1, strings.Count(err.Error(), "dfstream: "), "one prefix: %q", err)
			assert.NotContains(t, err.Error(), "dflockd: ")
			for _, target := range tc.is {
				assert.True(t, errors.Is(err, target), "errors.Is(%q, %v)", err, target)
			}
		})
	}
}
