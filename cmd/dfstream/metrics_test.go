package main

import (
	"bufio"
	"net"
	"regexp"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dfstream/dfstream/internal/scrapetest"
)

// metricsURL waits for the line saying where p serves its metrics and
// returns the URL.
func metricsURL(t *testing.T, p *proc) string {
	t.Helper()
	p.waitOutput(t, p.stderr, "/metrics\n")
	m := regexp.MustCompile(`(?m)^dfstream: metrics on (http://127\.0\.0\.1:\d+/metrics)$`).FindStringSubmatch(p.stderr.String())
	require.NotNil(t, m, "stderr: %s", p.stderr)
	return m[1]
}

func TestMetricsAddrOfServeLockAndWatch(t *testing.T) {
	t.Parallel()
	srv, addr := startServe(t, nil, "--metrics-addr", "127.0.0.1:0")
	serverURL := metricsURL(t, srv)

	w := start(t, []string{"DFSTREAM_METRICS_ADDR=127.0.0.1:0"}, "", "watch", "jobs.*", "--servers", addr)
	watchURL := metricsURL(t, w)
	require.Eventually(t, func() bool {
		return scrapetest.Scrape(t, serverURL).Value("dfstream_server_subscriptions", nil) >= 1
	}, 10*time.Second, 20*time.Millisecond, "watch subscribed")
	_, stderr, code := dfs(t, nil, "emit", "jobs.a", "hello", "--servers", addr)
	require.Equal(t, 0, code, stderr)
	w.waitOutput(t, w.stdout, "jobs.a hello\n")
	assert.Equal(t, 1.0, scrapetest.Scrape(t, watchURL).Value("dfstream_signals_received_total", map[string]string{"pattern": "jobs.*"}))

	// A raw connection holds k: the lock command queues behind it.
	holder, err := net.DialTimeout("tcp", addr, 5*time.Second)
	require.NoError(t, err)
	defer holder.Close()
	require.NoError(t, holder.SetDeadline(time.Now().Add(10*time.Second)))
	_, err = holder.Write([]byte("l\nk\n0\n"))
	require.NoError(t, err)
	_, err = bufio.NewReader(holder).ReadString('\n')
	require.NoError(t, err)

	l := start(t, nil, "", "lock", "k", "--servers", addr, "--metrics-addr", "127.0.0.1:0", "--", "sleep", "30")
	lockURL := metricsURL(t, l)
	lock := map[string]string{"kind": "lock"}
	require.Eventually(t, func() bool {
		return scrapetest.Scrape(t, lockURL).Value("dfstream_queued_streams", lock) == 1
	}, 10*time.Second, 20*time.Millisecond, "lock queued")
	got := scrapetest.Scrape(t, serverURL)
	assert.Equal(t, 1.0, got.Value("dfstream_server_keys", map[string]string{"kind": "lock", "state": "held"}))
	assert.Equal(t, 1.0, got.Value("dfstream_server_waiters", lock))
	assert.GreaterOrEqual(t, got.Value("dfstream_server_connections", nil), 3.0, "watch, the holder, the lock")

	require.NoError(t, holder.Close())
	require.Eventually(t, func() bool {
		return scrapetest.Scrape(t, lockURL).Value("dfstream_held_streams", lock) == 1
	}, 10*time.Second, 20*time.Millisecond, "lock held")
	got = scrapetest.Scrape(t, lockURL)
	assert.Equal(t, 1.0, got.Value("dfstream_grants_total", lock))
	assert.Equal(t, 0.0, got.Value("dfstream_queued_streams", lock))
	assert.Equal(t, 1.0, got.Value("dfstream_acquire_wait_seconds", map[string]string{"kind": "lock", "outcome": "granted"}))
	assert.Equal(t, 0.0, scrapetest.Scrape(t, serverURL).Value("dfstream_server_waiters", lock))

	require.NoError(t, l.cmd.Process.Signal(syscall.SIGTERM))
	assert.Equal(t, 128+int(syscall.SIGTERM), l.wait(t, 15*time.Second), "stderr: %s", l.stderr)
	require.NoError(t, w.cmd.Process.Signal(syscall.SIGTERM))
	assert.Equal(t, 0, w.wait(t, 15*time.Second), "stderr: %s", w.stderr)
	require.NoError(t, srv.cmd.Process.Signal(syscall.SIGTERM))
	assert.Equal(t, 0, srv.wait(t, 15*time.Second), "stderr: %s", srv.stderr)
}

func TestMetricsAddrRejectsABadAddress(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"serve", "--addr", "127.0.0.1:0", "--metrics-addr", "nocolon"},
		{"watch", "x", "--metrics-addr", "nocolon"},
	} {
		stdout, stderr, code := dfs(t, nil, args...)
		assert.Equal(t, exitUsage, code, args)
		assert.Empty(t, stdout, "refused before anything started")
		requireOneLineError(t, stderr)
		assert.Contains(t, stderr, "metrics-addr")
	}
	_, stderr, code := dfs(t, []string{"DFSTREAM_METRICS_ADDR=nocolon"}, "lock", "k", "--", "true")
	assert.Equal(t, exitUsage, code)
	assert.Contains(t, stderr, "DFSTREAM_METRICS_ADDR")
}
