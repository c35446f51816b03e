package main

import (
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dfstream/dfstream"
	"github.com/dfstream/dfstream/dflockdtest"
)

func TestStatsShowsHolderAndWaiters(t *testing.T) {
	t.Parallel()
	srv := dflockdtest.New(t, dflockdtest.Config{})
	c, err := dfstream.New(dfstream.WithServers(srv.Addr()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	ctx := ctxTimeout(t, 20*time.Second)
	held, err := c.Lock(ctx, "reports/nightly", dfstream.WithLease(30*time.Second))
	require.NoError(t, err)
	t.Cleanup(func() { _ = held.Close() })
	for range 2 {
		w, err := c.StartLock(ctx, "reports/nightly", dfstream.WithAcquireTimeout(time.Minute))
		require.NoError(t, err)
		t.Cleanup(func() { _ = w.Close() })
		acquired, err := w.Enqueued(ctx)
		require.NoError(t, err)
		require.False(t, acquired)
	}
	sem, err := c.AcquireSemaphore(ctx, "pool", 3)
	require.NoError(t, err)
	t.Cleanup(func() { _ = sem.Close() })
	sig, err := c.Signals(context.Background())
	require.NoError(t, err)
	t.Cleanup(func() { _ = sig.Close() })
	_, err = sig.ListenGroup(ctx, "jobs.>", "workers")
	require.NoError(t, err)

	stdout, stderr, code := dfs(t, nil, "stats", "--servers", srv.Addr())
	require.Equal(t, 0, code, stderr)
	require.Regexp(t, regexp.MustCompile(`(?m)^reports/nightly\s+conn \d+\s+\d+(\.\d)?s\s+\d+\s+2$`), stdout)
	require.Regexp(t, regexp.MustCompile(`(?m)^pool\s+1/3\s+0$`), stdout)
	require.Regexp(t, regexp.MustCompile(`(?m)^jobs\.>\s+workers\s+1$`), stdout)
	require.Regexp(t, regexp.MustCompile(`(?m)^CONNECTIONS\s+\d+$`), stdout)
	require.NotContains(t, stdout, dfstream.ProbeChannelPrefix)
	// Aligned: the header's columns start where the row's do.
	var header, row string
	for _, l := range strings.Split(stdout, "\n") {
		if strings.HasPrefix(l, "LOCK ") {
			header = l
		}
		if strings.HasPrefix(l, "reports/nightly") {
			row = l
		}
	}
	require.Equal(t, strings.Index(header, "HOLDER"), strings.Index(row, "conn"))

	stdout, stderr, code = dfs(t, nil, "stats", "--json", "--servers", srv.Addr())
	require.Equal(t, 0, code, stderr)
	var st dfstream.Stats
	require.NoError(t, json.Unmarshal([]byte(stdout), &st))
	require.Len(t, st.Locks, 1)
	require.Equal(t, "reports/nightly", st.Locks[0].Key)
	require.Equal(t, 2, st.Locks[0].Waiters)
	require.NotZero(t, st.Locks[0].OwnerConnID)
	require.Len(t, st.Semaphores, 1)
	require.Equal(t, 1, st.Semaphores[0].Holders)
}

// Issue 9 item 13: a server that is down is named, and the others are still
// shown, in both output forms; the exit code says something failed.
func TestStatsShowsReachableServersAndNamesTheUnreachableOne(t *testing.T) {
	t.Parallel()
	srv := dflockdtest.New(t, dflockdtest.Config{})
	const dead = "127.0.0.1:1"
	servers := dead + "," + srv.Addr() // the dead one first: it must not stop the rest

	stdout, stderr, code := dfs(t, nil, "stats", "--servers", servers, "--connect-timeout", "2s")
	require.Equal(t, exitUnavailable, code, stderr)
	require.Regexp(t, regexp.MustCompile(`(?m)^SERVER\s+`+regexp.QuoteMeta(srv.Addr())+`$`), stdout)
	require.NotContains(t, stdout, dead)
	requireOneLineError(t, stderr)
	require.Contains(t, stderr, dead)
	require.Contains(t, stderr, "1 of 2 servers")
	require.NotContains(t, stderr, srv.Addr())

	stdout, stderr, code = dfs(t, nil, "stats", "--json", "--servers", servers, "--connect-timeout", "2s")
	require.Equal(t, exitUnavailable, code, stderr)
	var all map[string]dfstream.Stats
	require.NoError(t, json.Unmarshal([]byte(stdout), &all), stdout)
	require.Contains(t, all, srv.Addr())
	require.NotContains(t, all, dead)
	requireOneLineError(t, stderr)
	require.Contains(t, stderr, dead)
}

// Every list of stats --json is [] when empty, never null.
func TestStatsJSONShowsEmptyListsAsEmpty(t *testing.T) {
	t.Parallel()
	srv := dflockdtest.New(t, dflockdtest.Config{})
	other := dflockdtest.New(t, dflockdtest.Config{})
	stdout, stderr, code := dfs(t, nil, "stats", "--json", "--servers", srv.Addr())
	require.Equal(t, 0, code, stderr)
	require.NotContains(t, stdout, "null")
	require.Contains(t, stdout, `"signal_channels":[]`)
	stdout, stderr, code = dfs(t, nil, "stats", "--json", "--servers", srv.Addr()+","+other.Addr())
	require.Equal(t, 0, code, stderr)
	require.NotContains(t, stdout, "null")
	require.Equal(t, 2, strings.Count(stdout, `"signal_channels":[]`), stdout)
}
