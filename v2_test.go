package dfstream_test

import (
	"context"
	"io"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dfstream/dfstream"
	"github.com/dfstream/dfstream/dflockdtest"
	"github.com/dfstream/dfstream/wire"
)

// gen2 is the configuration of a 2.x server.
var gen2 = dflockdtest.Config{Generation: dflockdtest.Gen2}

// v2Server returns a 2.x server: dflockdtest's, or the external one
// DFLOCKD_TEST_ADDR names when DFLOCKD_TEST_GENERATION is 2 (other
// external servers skip the test).
func v2Server(t *testing.T, cfg dflockdtest.Config) (string, *dflockdtest.Server) {
	t.Helper()
	cfg.Generation = dflockdtest.Gen2
	addr, srv := testServer(t, cfg)
	if srv == nil && os.Getenv("DFLOCKD_TEST_GENERATION") != "2" {
		t.Skip("needs a 2.x server; DFLOCKD_TEST_ADDR is set without DFLOCKD_TEST_GENERATION=2")
	}
	return addr, srv
}

// tokenFence is the fence a 2.x token carries.
func tokenFence(t *testing.T, token string) uint64 {
	t.Helper()
	f, err := wire.FenceFromToken(token)
	require.NoError(t, err)
	return f
}

func TestV2FencesComeFromTheTokenAndRiseAcrossGrants(t *testing.T) {
	t.Parallel()
	addr, _ := v2Server(t, dflockdtest.Config{})
	c := newClient(t, []string{addr})
	ctx := ctxT(t, 10*time.Second)
	key := testKey(t, "k")
	var last uint64
	for range 3 {
		s, err := c.Lock(ctx, key)
		require.NoError(t, err)
		a, _ := s.Held()
		assert.Equal(t, tokenFence(t, a.Token), a.Fence, "the fence is the token's prefix")
		assert.Greater(t, a.Fence, last, "fences rise from grant to grant")
		last = a.Fence
		require.NoError(t, s.Release(ctx))
	}

	// A grant that comes after a wait, and its renewals, carry it too.
	first, err := c.Lock(ctx, key, dfstream.WithLease(2*time.Second))
	require.NoError(t, err)
	queued, err := c.StartLock(ctx, key, dfstream.WithLease(2*time.Second))
	require.NoError(t, err)
	nextOf[dfstream.Queued](t, queued.Events(), 5*time.Second)
	require.NoError(t, first.Release(ctx))
	a := nextOf[dfstream.Acquired](t, queued.Events(), 5*time.Second)
	assert.Equal(t, tokenFence(t, a.Token), a.Fence)
	assert.Greater(t, a.Fence, last)
	r := nextOf[dfstream.Renewed](t, queued.Events(), 5*time.Second)
	assert.Equal(t, a.Fence, r.Fence, "a renewal keeps the grant's fence")
	require.NoError(t, queued.Release(ctx))
}

// Signals-era tokens are random: their prefix is never taken for a fence.
func TestGenerationSignalsEraFencesComeFromTheReplyNotTheToken(t *testing.T) {
	t.Parallel()
	for name, cfg := range map[string]dflockdtest.Config{
		"fences":    {},
		"no fences": {NoFences: true},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			srv := dflockdtest.New(t, cfg)
			c := newClient(t, []string{srv.Addr()})
			s, err := c.Lock(ctxT(t, 5*time.Second), testKey(t, "k"))
			require.NoError(t, err)
			a, _ := s.Held()
			if cfg.NoFences {
				assert.Zero(t, a.Fence)
			} else {
				assert.Positive(t, a.Fence)
				assert.Less(t, a.Fence, uint64(1000), "the server's counter, not a token's random prefix")
			}
			gen, err := c.Generation(ctxT(t, 5*time.Second), "")
			require.NoError(t, err)
			assert.Equal(t, dfstream.GenSignals, gen)
			assert.Zero(t, srv.Pings(), "a signals-era server is never pinged by the probe")
			require.NoError(t, s.Close())
		})
	}
}

func TestV2SignalsEndWithErrUnsupportedWithinOneRoundTrip(t *testing.T) {
	t.Parallel()
	for name, try := range map[string]func(ctx context.Context, c *dfstream.Client) error{
		"signal stream": func(ctx context.Context, c *dfstream.Client) error {
			s, err := c.Signals(ctx)
			if err == nil {
				_ = s.Close()
			}
			return err
		},
		"router": func(ctx context.Context, c *dfstream.Client) error {
			r, err := dfstream.NewRouter(c)
			if err != nil {
				return err
			}
			if err := r.Handle("a.>", dfstream.HandlerFunc(func(context.Context, dfstream.Signal) error { return nil })); err != nil {
				return err
			}
			return r.Run(ctx)
		},
		"emit": func(ctx context.Context, c *dfstream.Client) error {
			_, err := c.Emit(ctx, "a.b", "p")
			return err
		},
	} {
		for _, stated := range []bool{false, true} {
			t.Run(name+map[bool]string{false: "/probed", true: "/stated"}[stated], func(t *testing.T) {
				t.Parallel()
				addr, _ := v2Server(t, dflockdtest.Config{})
				var opts []dfstream.Option
				if stated {
					opts = append(opts, dfstream.WithGeneration(dfstream.Gen2))
				}
				c := newClient(t, []string{addr}, opts...)
				start := time.Now()
				err := try(ctxT(t, 10*time.Second), c)
				took := time.Since(start)
				require.ErrorIs(t, err, dfstream.ErrUnsupported)
				var ue *dfstream.UnsupportedError
				require.ErrorAs(t, err, &ue)
				assert.Equal(t, dfstream.Gen2, ue.Generation)
				assert.Equal(t, addr, ue.Server)
				assert.Less(t, took, time.Second, "at once, not after retries")
				// Known now (or from the start): no connection at all.
				start = time.Now()
				assert.ErrorIs(t, try(ctxT(t, 10*time.Second), c), dfstream.ErrUnsupported)
				assert.Less(t, time.Since(start), time.Second)
			})
		}
	}
}

func TestV2ServerIsProbedOncePerClient(t *testing.T) {
	t.Parallel()
	for name, pool := range map[string]int{"pooled": dfstream.DefaultPoolSize, "nopool": 0} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			srv := dflockdtest.New(t, gen2)
			c := newClient(t, []string{srv.Addr()}, dfstream.WithPoolSize(pool))
			ctx := ctxT(t, 10*time.Second)
			for range 3 {
				s, err := c.Lock(ctx, testKey(t, "k"))
				require.NoError(t, err)
				require.NoError(t, s.Release(ctx))
				_, err = c.Stats(ctx, "")
				require.NoError(t, err)
				_, err = c.Signals(ctx)
				require.ErrorIs(t, err, dfstream.ErrUnsupported)
			}
			gen, err := c.Generation(ctx, "")
			require.NoError(t, err)
			assert.Equal(t, dfstream.Gen2, gen)
			assert.EqualValues(t, 1, srv.Pings(), "one probe for the Client's life")

			other := newClient(t, []string{srv.Addr()}, dfstream.WithPoolSize(pool))
			gen, err = other.Generation(ctx, "")
			require.NoError(t, err)
			assert.Equal(t, dfstream.Gen2, gen)
			assert.EqualValues(t, 2, srv.Pings(), "and one per Client")

			stated := newClient(t, []string{srv.Addr()}, dfstream.WithPoolSize(pool), dfstream.WithGeneration(dfstream.Gen2))
			s, err := stated.Lock(ctx, testKey(t, "k"))
			require.NoError(t, err)
			a, _ := s.Held()
			assert.Equal(t, tokenFence(t, a.Token), a.Fence)
			require.NoError(t, s.Release(ctx))
			assert.EqualValues(t, 2, srv.Pings(), "none when the generation is stated")
		})
	}
}

// A held stream whose renewal a draining 2.x server answers error_draining
// has lost its connection: Lost, as on a dropped connection, never a
// grant or a refused renewal; under re-acquire it queues again, on the
// server that listens at the address now.
func TestV2HeldStreamOnADrainingServerIsLostAsOnADroppedConnection(t *testing.T) {
	t.Parallel()
	for name, reacquire := range map[string]bool{"final": false, "reacquire": true} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			old := dflockdtest.New(t, dflockdtest.Config{Generation: dflockdtest.Gen2, ShutdownDrain: time.Minute})
			c := newClient(t, []string{old.Addr()})
			key := testKey(t, "k")
			opts := []dfstream.StreamOption{dfstream.WithLease(2 * time.Second)}
			if reacquire {
				opts = append(opts, dfstream.WithReacquire(10*time.Millisecond, 50*time.Millisecond))
			}
			s, err := c.StartLock(ctxT(t, 5*time.Second), key, opts...)
			require.NoError(t, err)
			first := nextOf[dfstream.Acquired](t, s.Events(), 5*time.Second)
			renewed := nextOf[dfstream.Renewed](t, s.Events(), 5*time.Second) // on the old server's watch
			assert.Equal(t, first.Fence, renewed.Fence)

			srv, _ := restartGracefully(t, old, gen2)
			var lost dfstream.Lost
			for lost.At.IsZero() {
				switch ev := next(t, s.Events(), 5*time.Second).(type) {
				case dfstream.Renewed: // one that went out before the drain began
				case dfstream.Lost:
					lost = ev
				default:
					require.FailNow(t, "want Lost", "got %T %+v", ev, ev)
				}
			}
			assert.ErrorIs(t, lost.Reason, dfstream.ErrConnLost)
			assert.ErrorIs(t, lost.Reason, dfstream.ErrDraining)
			assert.NotErrorIs(t, lost.Reason, dfstream.ErrRenewRefused)
			assert.NotErrorIs(t, lost.Reason, dfstream.ErrServer)
			assert.Equal(t, !reacquire, lost.Final)
			if !reacquire {
				requireClosed(t, s.Events())
				assert.ErrorIs(t, s.Err(), dfstream.ErrDraining)
				return
			}
			again := nextOf[dfstream.Acquired](t, s.Events(), 5*time.Second)
			assert.NotEqual(t, first.Token, again.Token)
			assert.Equal(t, tokenFence(t, again.Token), again.Fence)
			_, held := lockHolder(stats(t, srv.Addr()), key)
			assert.True(t, held, "held on the new server")
			require.NoError(t, s.Close())
		})
	}
}

// A request a draining 2.x server answers error_draining on a pooled
// connection goes once more on a fresh one, which reaches the new server
// on the address.
func TestV2RequestsAsTheServerStartsDrainingGoAgainOnAFreshConnection(t *testing.T) {
	t.Parallel()
	for _, pc := range pooledCalls {
		if pc.name == "emit" {
			continue // no 2.x server has signals; see the ErrUnsupported test
		}
		t.Run(pc.name, func(t *testing.T) {
			t.Parallel()
			old := dflockdtest.New(t, dflockdtest.Config{Generation: dflockdtest.Gen2, ShutdownDrain: time.Minute})
			c := newClient(t, []string{old.Addr()})
			ctx := ctxT(t, 10*time.Second)
			key := testKey(t, "k")
			require.NoError(t, pc.call(ctx, c, key)) // leaves a connection in the pool
			require.Len(t, old.Conns(), 1)

			srv, _ := restartGracefully(t, old, gen2)
			require.NoError(t, pc.call(ctx, c, key))
			assert.Len(t, srv.Conns(), 1, "the request went to the new server")
			assert.Eventually(t, func() bool { return len(old.Conns()) == 0 }, 5*time.Second, time.Millisecond,
				"the drained connection is closed")
		})
	}
}

// An enqueue answered error_draining is never a grant: it goes once more
// on a fresh connection, and when nobody listens at the address any more
// the acquire fails as the server being unreachable.
func TestV2LockOnADrainingServerWithNoSuccessorFailsUnreachable(t *testing.T) {
	t.Parallel()
	old := dflockdtest.New(t, dflockdtest.Config{Generation: dflockdtest.Gen2, ShutdownDrain: time.Minute})
	c := newClient(t, []string{old.Addr()}, dfstream.WithConnectTimeout(time.Second))
	ctx := ctxT(t, 10*time.Second)
	_, err := c.Stats(ctx, "") // leaves a connection in the pool
	require.NoError(t, err)
	drainCtx, stopDrain := context.WithCancel(context.Background())
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		_ = old.Shutdown(drainCtx)
	}()
	t.Cleanup(func() { stopDrain(); <-drained })
	require.Eventually(t, func() bool { // the listener is closed
		nc, err := net.Dial("tcp", old.Addr())
		if err == nil {
			_ = nc.Close()
		}
		return err != nil
	}, 5*time.Second, time.Millisecond)

	s, err := c.StartLock(ctx, testKey(t, "k"))
	require.NoError(t, err)
	f := nextOf[dfstream.Failed](t, s.Events(), 5*time.Second)
	assert.ErrorIs(t, f.Err, dfstream.ErrUnreachable, "the fresh connection finds nobody listening")
	assert.NotErrorIs(t, f.Err, dfstream.ErrServer)
	requireClosed(t, s.Events())
}

// A server that answers error_draining on every connection costs an
// enqueue one more try, on one fresh connection, not a loop.
func TestV2EnqueueAnsweredDrainingGoesAgainOnOneFreshConnectionOnly(t *testing.T) {
	t.Parallel()
	var conns atomic.Int32
	addr := rawServer(t, func(c *rawConn, _ [3]string) bool {
		conns.Add(1)
		_, _ = io.WriteString(c, "error_draining\n")
		return false
	})
	c := newClient(t, []string{addr}, dfstream.WithGeneration(dfstream.Gen2))
	s, err := c.StartLock(ctxT(t, 5*time.Second), testKey(t, "k"))
	require.NoError(t, err)
	f := nextOf[dfstream.Failed](t, s.Events(), 5*time.Second)
	assert.ErrorIs(t, f.Err, dfstream.ErrDraining)
	assert.ErrorIs(t, f.Err, dfstream.ErrConnLost)
	assert.EqualValues(t, 2, conns.Load())
}

// A server that answers stats without signal channels and ping with error
// is 1.10: its tokens are random, and their prefix is never a fence.
func TestGenerationProbeTells110ApartAndNeverReadsItsTokens(t *testing.T) {
	t.Parallel()
	var pings atomic.Int32
	addr := rawServer(t, func(c *rawConn, req [3]string) bool {
		if req[0] == "ping" {
			pings.Add(1)
			_, err := io.WriteString(c, "error\n")
			return err == nil
		}
		return answer(c, req)
	})
	c := newClient(t, []string{addr})
	ctx := ctxT(t, 5*time.Second)
	gen, err := c.Generation(ctx, "")
	require.NoError(t, err)
	assert.Equal(t, dfstream.Gen110, gen)
	s, err := c.StartLock(ctx, testKey(t, "k"))
	require.NoError(t, err)
	a := nextOf[dfstream.Acquired](t, s.Events(), 5*time.Second)
	assert.EqualValues(t, 1, a.Fence, "the reply's fence field, not the token's prefix")
	_, err = c.Signals(ctx)
	assert.ErrorIs(t, err, dfstream.ErrUnsupported)
	assert.EqualValues(t, 1, pings.Load())
	require.NoError(t, s.Close())
}
