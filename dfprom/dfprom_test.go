package dfprom_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dfstream/dfstream"
	"github.com/dfstream/dfstream/dflockdtest"
	"github.com/dfstream/dfstream/dfprom"
)

const wait = 10 * time.Second

// setup returns a server, a Client observed by fresh Metrics, and a scraper
// of the registry they are registered with.
func setup(t *testing.T, opts ...dfprom.Option) (*dflockdtest.Server, *dfstream.Client, *scraper) {
	t.Helper()
	srv := dflockdtest.New(t, dflockdtest.Config{})
	reg := prometheus.NewRegistry()
	m, err := dfprom.New(append([]dfprom.Option{dfprom.WithRegisterer(reg)}, opts...)...)
	require.NoError(t, err)
	c, err := dfstream.New(dfstream.WithServers(srv.Addr()), m.Option())
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	return srv, c, serveMetrics(t, reg)
}

func nextEvent[E dfstream.Event](t *testing.T, events <-chan dfstream.Event) E {
	t.Helper()
	deadline := time.After(wait)
	for {
		select {
		case ev, ok := <-events:
			require.True(t, ok, "events closed")
			if e, ok := ev.(E); ok {
				return e
			}
		case <-deadline:
			require.FailNow(t, "no event", "waited %v for %T", wait, *new(E))
		}
	}
}

func TestScrapeAfterAScriptedRun(t *testing.T) {
	t.Parallel()
	srv, c, sc := setup(t)
	ctx := context.Background()
	lock := map[string]string{"kind": "lock"}

	s, err := c.StartLock(ctx, "jobs/1", dfstream.WithLease(time.Second),
		dfstream.WithReacquire(10*time.Millisecond, 50*time.Millisecond))
	require.NoError(t, err)
	nextEvent[dfstream.Acquired](t, s.Events())
	nextEvent[dfstream.Renewed](t, s.Events())

	got := sc.scrape(t)
	assert.Equal(t, 1.0, got.Value("dfstream_held_streams", lock))
	assert.Equal(t, 1.0, got.Value("dfstream_grants_total", lock))
	assert.GreaterOrEqual(t, got.Value("dfstream_renewal_round_trip_seconds", lock), 1.0)

	srv.DropConnections()
	lost := nextEvent[dfstream.Lost](t, s.Events())
	require.ErrorIs(t, lost.Reason, dfstream.ErrConnLost)
	nextEvent[dfstream.Acquired](t, s.Events())
	require.NoError(t, s.Release(ctx))

	got = sc.scrape(t)
	assert.Equal(t, 2.0, got.Value("dfstream_grants_total", lock))
	assert.Equal(t, 2.0, got.Value("dfstream_acquire_wait_seconds", map[string]string{"kind": "lock", "outcome": "granted"}))
	assert.Equal(t, 1.0, got.Value("dfstream_reacquire_attempts_total", lock))
	assert.Equal(t, 1.0, got.Value("dfstream_losses_total", map[string]string{"kind": "lock", "reason": "conn_lost"}))
	assert.Equal(t, 1.0, got.Value("dfstream_losses_total", lock), "one loss, of one reason")
	assert.Equal(t, 1.0, got.Value("dfstream_releases_total", lock))
	assert.Equal(t, 1.0, got.Value("dfstream_hold_duration_seconds", map[string]string{"kind": "lock", "end": "lost"}))
	assert.Equal(t, 1.0, got.Value("dfstream_hold_duration_seconds", map[string]string{"kind": "lock", "end": "released"}))
	assert.Equal(t, 0.0, got.Value("dfstream_held_streams", lock))
	assert.Equal(t, 0.0, got.Value("dfstream_queued_streams", lock))
	assert.Equal(t, 2.0, got.Value("dfstream_pool_gets_total", map[string]string{"result": "miss"}))
	assert.Equal(t, 2.0, got.Value("dfstream_dials_total", map[string]string{"result": "ok"}))
	assert.Equal(t, 1.0, got.Value("dfstream_pool_idle_connections", nil), "the released connection is pooled")
	for _, fam := range got {
		for _, m := range fam.GetMetric() {
			for _, l := range m.GetLabel() {
				assert.NotEqual(t, "key", l.GetName(), "%s: keys are no labels unless asked", fam.GetName())
			}
		}
	}

	// Signals: a consumer that reads nothing overflows the buffer (two
	// signals fit in the Events channel and the buffer each, one more may
	// be staged, the rest drop); then the connection is dropped and the
	// stream reconnects.
	ss, err := c.Signals(ctx, dfstream.WithSignalBuffer(2), dfstream.WithSignalEventBuffer(2),
		dfstream.WithSignalBackoff(10*time.Millisecond, 50*time.Millisecond))
	require.NoError(t, err)
	defer ss.Close()
	_, err = ss.Listen(ctx, "jobs.*")
	require.NoError(t, err)
	const sent = 20
	for i := range sent {
		n, err := c.Emit(ctx, "jobs.a", fmt.Sprint(i))
		require.NoError(t, err)
		require.Equal(t, 1, n)
	}
	require.Eventually(t, func() bool { return ss.Stats().Received == sent }, wait, 5*time.Millisecond)
	st := ss.Stats()
	require.Positive(t, st.Dropped)

	sub := map[string]string{"pattern": "jobs.*", "group": ""}
	got = sc.scrape(t)
	assert.Equal(t, float64(sent), got.Value("dfstream_signals_received_total", sub))
	assert.Equal(t, float64(st.Dropped), got.Value("dfstream_signals_dropped_total", sub))

	srv.DropConnections()
	nextEvent[dfstream.Reconnected](t, ss.Events())
	got = sc.scrape(t)
	server := map[string]string{"server": srv.Addr()}
	assert.Equal(t, 1.0, got.Value("dfstream_signal_disconnects_total", map[string]string{"server": srv.Addr(), "reason": "conn_lost"}))
	assert.Equal(t, 1.0, got.Value("dfstream_signal_reconnects_total", server))
	assert.Equal(t, 1.0, got.Value("dfstream_signal_reconnect_downtime_seconds", server))
}

func TestScrapeCountsQueuedStreams(t *testing.T) {
	t.Parallel()
	_, c, sc := setup(t, dfprom.WithKeyLabel())
	ctx := context.Background()
	first, err := c.Lock(ctx, "q")
	require.NoError(t, err)
	second, err := c.StartLock(ctx, "q")
	require.NoError(t, err)
	nextEvent[dfstream.Queued](t, second.Events())

	key := map[string]string{"kind": "lock", "key": "q"}
	got := sc.scrape(t)
	assert.Equal(t, 1.0, got.Value("dfstream_queued_streams", key))
	assert.Equal(t, 1.0, got.Value("dfstream_held_streams", key))

	// One more gives up at once, another is closed while queued.
	_, err = c.Lock(ctx, "q", dfstream.WithAcquireTimeout(0))
	require.ErrorIs(t, err, dfstream.ErrTimeout)
	third, err := c.StartLock(ctx, "q")
	require.NoError(t, err)
	nextEvent[dfstream.Queued](t, third.Events())
	assert.Equal(t, 2.0, sc.scrape(t).Value("dfstream_queued_streams", key))
	require.NoError(t, third.Close())

	require.NoError(t, first.Release(ctx))
	nextEvent[dfstream.Acquired](t, second.Events())
	require.NoError(t, second.Close())
	got = sc.scrape(t)
	assert.Equal(t, 0.0, got.Value("dfstream_queued_streams", key))
	assert.Equal(t, 0.0, got.Value("dfstream_held_streams", key))
	assert.Equal(t, 2.0, got.Value("dfstream_releases_total", key))
	outcome := func(o string) map[string]string { return map[string]string{"kind": "lock", "key": "q", "outcome": o} }
	assert.Equal(t, 2.0, got.Value("dfstream_acquire_wait_seconds", outcome("granted")))
	assert.Equal(t, 1.0, got.Value("dfstream_acquire_wait_seconds", outcome("timeout")))
	assert.Equal(t, 1.0, got.Value("dfstream_acquire_wait_seconds", outcome("cancelled")))
}

func TestScrapeCountsHandlerOutcomes(t *testing.T) {
	t.Parallel()
	_, c, sc := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	r, err := dfstream.NewRouter(c, dfstream.WithRouterErrorHandler(func(context.Context, dfstream.Signal, error) {}))
	require.NoError(t, err)
	done := make(chan struct{}, 3)
	require.NoError(t, r.HandleFunc("orders.*", func(_ context.Context, sig dfstream.Signal) error {
		defer func() { done <- struct{}{} }()
		if sig.Payload == "bad" {
			return errors.New("refused")
		}
		return nil
	}))
	ran := make(chan error, 1)
	go func() { ran <- r.Run(ctx) }()
	defer func() {
		cancel()
		require.NoError(t, <-ran)
	}()
	<-r.Ready()
	for _, p := range []string{"ok", "bad", "ok"} {
		_, err := c.Emit(ctx, "orders.new", p)
		require.NoError(t, err)
	}
	for range 3 {
		<-done
	}
	require.Eventually(t, func() bool {
		return sc.scrape(t).Value("dfstream_handler_duration_seconds", map[string]string{"pattern": "orders.*"}) == 3
	}, wait, 5*time.Millisecond)
	got := sc.scrape(t)
	assert.Equal(t, 2.0, got.Value("dfstream_handler_duration_seconds", map[string]string{"pattern": "orders.*", "group": "", "outcome": "ok"}))
	assert.Equal(t, 1.0, got.Value("dfstream_handler_duration_seconds", map[string]string{"pattern": "orders.*", "group": "", "outcome": "error"}))
	assert.Equal(t, 3.0, got.Value("dfstream_signals_received_total", map[string]string{"pattern": "orders.*"}))
}
