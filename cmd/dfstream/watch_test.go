package main

import (
	"encoding/json"
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dfstream/dfstream/dflockdtest"
)

func TestWatchPrintsEmitted(t *testing.T) {
	t.Parallel()
	srv := dflockdtest.New(t, dflockdtest.Config{})

	plain := start(t, nil, "", "watch", "orders.>", "--servers", srv.Addr())
	jsonl := start(t, nil, "", "watch", "orders.*", "--json", "--servers", srv.Addr())
	plain.waitOutput(t, plain.stderr, "watching orders.>")
	jsonl.waitOutput(t, jsonl.stderr, "watching orders.*")

	stdout, stderr, code := dfs(t, nil, "emit", "orders.eu", "hello world", "--servers", srv.Addr())
	require.Equal(t, 0, code, stderr)
	require.Equal(t, "2\n", stdout)
	// Several payloads from stdin, one count per non-empty line.
	p := start(t, nil, "second\n\nthird\n", "emit", "orders.us", "--servers", srv.Addr())
	require.Equal(t, 0, p.wait(t, 10*time.Second), "stderr: %s", p.stderr)
	require.Equal(t, "2\n2\n", p.stdout.String())
	// Not matched by orders.*, matched by orders.>.
	_, _, code = dfs(t, nil, "emit", "orders.eu.late", "x", "--servers", srv.Addr())
	require.Equal(t, 0, code)

	plain.waitOutput(t, plain.stdout, "orders.eu.late x\n")
	require.Equal(t, "orders.eu hello world\norders.us second\norders.us third\norders.eu.late x\n", plain.stdout.String())

	jsonl.waitOutput(t, jsonl.stdout, "third")
	lines := strings.Split(strings.TrimSpace(jsonl.stdout.String()), "\n")
	require.Len(t, lines, 3)
	want := [][2]string{{"orders.eu", "hello world"}, {"orders.us", "second"}, {"orders.us", "third"}}
	for i, l := range lines {
		var got struct {
			Channel string `json:"channel"`
			Payload string `json:"payload"`
			Time    string `json:"time"`
		}
		require.NoError(t, json.Unmarshal([]byte(l), &got), l)
		require.Equal(t, want[i][0], got.Channel)
		require.Equal(t, want[i][1], got.Payload)
		at, err := time.Parse(time.RFC3339Nano, got.Time)
		require.NoError(t, err)
		require.WithinDuration(t, time.Now(), at, time.Minute)
	}

	// SIGINT ends watch cleanly.
	require.NoError(t, plain.cmd.Process.Signal(syscall.SIGINT))
	require.Equal(t, 0, plain.wait(t, 10*time.Second), "stderr: %s", plain.stderr)
}

func TestWatchReconnects(t *testing.T) {
	t.Parallel()
	srv := dflockdtest.New(t, dflockdtest.Config{})
	w := start(t, nil, "", "watch", "a.b", "--servers", srv.Addr())
	w.waitOutput(t, w.stderr, "watching")
	srv.DropConnections()
	w.waitOutput(t, w.stderr, "reconnected")
	require.Contains(t, w.stderr.String(), "lost")
	// Emit until the new subscription is in place.
	require.Eventually(t, func() bool {
		_, _, _ = dfs(t, nil, "emit", "a.b", "again", "--servers", srv.Addr())
		return strings.Contains(w.stdout.String(), "a.b again")
	}, 10*time.Second, 100*time.Millisecond)
}

func TestWatchQueueGroup(t *testing.T) {
	t.Parallel()
	srv := dflockdtest.New(t, dflockdtest.Config{})
	w1 := start(t, nil, "", "watch", "jobs.>", "--group", "workers", "--servers", srv.Addr())
	w2 := start(t, nil, "", "watch", "jobs.>", "--group", "workers", "--servers", srv.Addr())
	w1.waitOutput(t, w1.stderr, "group workers")
	w2.waitOutput(t, w2.stderr, "group workers")
	p := start(t, nil, "1\n2\n3\n4\n", "emit", "jobs.x", "--servers", srv.Addr())
	require.Equal(t, 0, p.wait(t, 10*time.Second))
	require.Equal(t, "1\n1\n1\n1\n", p.stdout.String())
	require.Eventually(t, func() bool {
		return strings.Count(w1.stdout.String(), "\n")+strings.Count(w2.stdout.String(), "\n") == 4
	}, 10*time.Second, 10*time.Millisecond)
}

func TestWatchWithoutTheAuthTokenTheServerWantsExits69AtOnce(t *testing.T) {
	t.Parallel()
	srv := dflockdtest.New(t, dflockdtest.Config{AuthToken: "s3cret-token"})
	w := start(t, nil, "", "watch", "a.>", "--servers", srv.Addr())
	code := w.wait(t, 30*time.Second)
	took := time.Since(w.start)
	t.Logf("watch exited %d after %v", code, took.Round(time.Millisecond))
	require.Equal(t, 69, code, "stderr: %s", w.stderr)
	require.Less(t, took, 2*time.Second)
	requireOneLineError(t, w.stderr.String())
	require.Contains(t, w.stderr.String(), "authentication refused")
	require.NotContains(t, w.stderr.String(), "closed")
	require.Contains(t, w.stderr.String(), "--auth-token")
	require.Empty(t, w.stdout.String())

	// A wrong token: refused when connecting, with another hint.
	_, stderr, code := dfs(t, nil, "watch", "a.>", "--servers", srv.Addr(), "--auth-token", "wrong")
	require.Equal(t, 69, code, stderr)
	requireOneLineError(t, stderr)
	require.Contains(t, stderr, "check the auth token")
	require.NotContains(t, stderr, "wrong")
}

func TestWatchUnreachableServerExits69(t *testing.T) {
	t.Parallel()
	_, stderr, code := dfs(t, nil, "watch", "a", "--servers", "127.0.0.1:1", "--connect-timeout", "2s")
	require.Equal(t, 69, code, stderr)
	requireOneLineError(t, stderr)
	require.Contains(t, stderr, "unreachable")
}

// watch ends with 0 on SIGINT or SIGTERM whatever the state of its
// connection: connected (TestWatchPrintsEmitted) or reconnecting to a server
// that does not answer, also when the signal comes twice.
func TestWatchInterruptedWhileReconnectingExits0(t *testing.T) {
	t.Parallel()
	for _, sigs := range [][]syscall.Signal{{syscall.SIGINT}, {syscall.SIGTERM}, {syscall.SIGINT, syscall.SIGINT}} {
		srv := dflockdtest.New(t, dflockdtest.Config{})
		w := start(t, nil, "", "watch", "a.b", "--servers", srv.Addr(), "--connect-timeout", "20s")
		w.waitOutput(t, w.stderr, "watching")
		srv.Freeze() // new connections hang unanswered
		srv.DropConnections()
		w.waitOutput(t, w.stderr, "reconnecting")
		for _, sig := range sigs {
			if err := w.cmd.Process.Signal(sig); errors.Is(err, os.ErrProcessDone) {
				break // gone after the first one
			}
			time.Sleep(100 * time.Millisecond)
		}
		require.Equal(t, 0, w.wait(t, 15*time.Second), "%v: stderr: %s", sigs, w.stderr)
		srv.Thaw()
	}
}
