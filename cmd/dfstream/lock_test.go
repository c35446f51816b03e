//go:build unix

package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dfstream/dfstream"
	"github.com/dfstream/dfstream/dflockdtest"
)

// Two lock processes on one key run their commands one after the other.
func TestLockMutualExclusion(t *testing.T) {
	t.Parallel()
	srv := dflockdtest.New(t, dflockdtest.Config{})
	log := filepath.Join(t.TempDir(), "log")
	script := `echo "start $1 $(date +%s%N)" >> "$2"; sleep 1; echo "end $1 $(date +%s%N)" >> "$2"`
	var ps []*proc
	for _, id := range []string{"a", "b"} {
		ps = append(ps, start(t, nil, "", "lock", "shared", "--servers", srv.Addr(), "--acquire-timeout", "20s",
			"--", "sh", "-c", script, "sh", id, log))
	}
	for _, p := range ps {
		require.Equal(t, 0, p.wait(t, 30*time.Second), "stderr: %s", p.stderr)
	}
	lines := readLines(t, log)
	require.Len(t, lines, 4, "log: %q", lines)
	type rec struct {
		what, id string
		at       int64
	}
	var recs []rec
	for _, l := range lines {
		f := strings.Fields(l)
		require.Len(t, f, 3, l)
		at, err := strconv.ParseInt(f[2], 10, 64)
		require.NoError(t, err)
		recs = append(recs, rec{f[0], f[1], at})
	}
	// start X, end X, start Y, end Y: the intervals do not overlap.
	require.Equal(t, "start", recs[0].what)
	require.Equal(t, "end", recs[1].what)
	require.Equal(t, recs[0].id, recs[1].id)
	require.Equal(t, "start", recs[2].what)
	require.Equal(t, "end", recs[3].what)
	require.Equal(t, recs[2].id, recs[3].id)
	require.NotEqual(t, recs[0].id, recs[2].id)
	require.GreaterOrEqual(t, recs[2].at, recs[1].at, "the second command started before the first ended")
	// The second one waited for the first: its command ran about a second later.
	require.GreaterOrEqual(t, time.Duration(recs[2].at-recs[0].at), 900*time.Millisecond)
}

func TestLockExitCodePassThrough(t *testing.T) {
	t.Parallel()
	srv := dflockdtest.New(t, dflockdtest.Config{})
	_, stderr, code := dfs(t, nil, "lock", "k", "--servers", srv.Addr(), "--", "sh", "-c", "exit 7")
	require.Equal(t, 7, code)
	require.Empty(t, stderr)

	_, _, code = dfs(t, nil, "sem", "s", "--limit", "2", "--servers", srv.Addr(), "--", "sh", "-c", "exit 3")
	require.Equal(t, 3, code)

	// The command sees the key, token and fence; the lock is released after.
	stdout, stderr, code := dfs(t, nil, "lock", "k", "--servers", srv.Addr(), "--",
		"sh", "-c", `echo "$DFSTREAM_KEY ${#DFSTREAM_TOKEN} $DFSTREAM_FENCE"`)
	require.Equal(t, 0, code, stderr)
	f := strings.Fields(stdout)
	require.Len(t, f, 3, stdout)
	require.Equal(t, "k", f[0])
	require.Equal(t, "32", f[1])
	fence, err := strconv.ParseUint(f[2], 10, 64)
	require.NoError(t, err)
	require.Positive(t, fence)

	_, _, code = dfs(t, nil, "lock", "k", "--servers", srv.Addr(), "--acquire-timeout", "0", "--", "true")
	require.Equal(t, 0, code, "the lock was not released after the command")

	// A command killed by a signal: 128+N.
	_, _, code = dfs(t, nil, "lock", "k", "--servers", srv.Addr(), "--", "sh", "-c", "kill -KILL $$")
	require.Equal(t, 128+9, code)

	// A command that cannot be found: 127, one line.
	_, stderr, code = dfs(t, nil, "lock", "k", "--servers", srv.Addr(), "--", "/nonexistent/command")
	require.Equal(t, 127, code)
	requireOneLineError(t, stderr)
}

func TestSemaphoreLimit(t *testing.T) {
	t.Parallel()
	srv := dflockdtest.New(t, dflockdtest.Config{})
	dir := t.TempDir()
	// Three holders of a two-slot semaphore: at most two at once.
	script := `echo start >> "$1"; sleep 1; echo end >> "$1"`
	var ps []*proc
	for range 3 {
		ps = append(ps, start(t, nil, "", "sem", "pool", "-n", "2", "--servers", srv.Addr(), "--acquire-timeout", "20s",
			"--", "sh", "-c", script, "sh", filepath.Join(dir, "log")))
	}
	for _, p := range ps {
		require.Equal(t, 0, p.wait(t, 30*time.Second), "stderr: %s", p.stderr)
	}
	running, most := 0, 0
	for _, l := range readLines(t, filepath.Join(dir, "log")) {
		if l == "start" {
			running++
		} else {
			running--
		}
		most = max(most, running)
	}
	require.Equal(t, 2, most)
}

// A server that goes silent: the lease cannot be renewed, so the command
// is stopped before the lease can run out there, and dfstream exits 75.
func TestLockLostStopsCommand(t *testing.T) {
	t.Parallel()
	srv := dflockdtest.New(t, dflockdtest.Config{})
	p := start(t, nil, "", "lock", "k", "--servers", srv.Addr(), "--lease", "2s", "--grace", "1s",
		"--", "sh", "-c", `trap 'echo got-term; exit 143' TERM; echo started; sleep 60 & wait`)
	p.waitOutput(t, p.stdout, "started")
	frozen := time.Now()
	srv.Freeze()
	t.Cleanup(srv.Thaw)
	code := p.wait(t, 15*time.Second)
	require.Equal(t, 75, code, "stdout: %s\nstderr: %s", p.stdout, p.stderr)
	// The safe deadline is within the 2s lease; allow for slow machines.
	t.Logf("exited %v after the freeze", time.Since(frozen))
	require.Less(t, time.Since(frozen), 6*time.Second)
	require.Contains(t, p.stdout.String(), "got-term")
	require.Contains(t, p.stderr.String(), "lost")
}

// A command that ignores SIGTERM gets SIGKILL after --grace.
func TestLockLostKillsAfterGrace(t *testing.T) {
	t.Parallel()
	srv := dflockdtest.New(t, dflockdtest.Config{})
	p := start(t, nil, "", "lock", "k", "--servers", srv.Addr(), "--lease", "2s", "--grace", "500ms",
		"--", "sh", "-c", `trap '' TERM; echo started; while :; do sleep 0.1; done`)
	p.waitOutput(t, p.stdout, "started")
	srv.Freeze()
	t.Cleanup(srv.Thaw)
	require.Equal(t, 75, p.wait(t, 15*time.Second), "stderr: %s", p.stderr)
}

func TestLockAcquireTimeout(t *testing.T) {
	t.Parallel()
	srv := dflockdtest.New(t, dflockdtest.Config{})
	c, err := dfstream.New(dfstream.WithServers(srv.Addr()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	held, err := c.Lock(ctxTimeout(t, 10*time.Second), "busy")
	require.NoError(t, err)
	t.Cleanup(func() { _ = held.Close() })

	marker := filepath.Join(t.TempDir(), "ran")
	began := time.Now()
	_, stderr, code := dfs(t, nil, "lock", "busy", "--servers", srv.Addr(), "--acquire-timeout", "300ms",
		"--", "touch", marker)
	require.Equal(t, 73, code, stderr)
	requireOneLineError(t, stderr)
	require.Less(t, time.Since(began), 10*time.Second)
	_, err = os.Stat(marker)
	require.True(t, os.IsNotExist(err), "the command ran")

	_, _, code = dfs(t, nil, "sem", "busy-sem", "--limit", "1", "--servers", srv.Addr(), "--acquire-timeout", "0",
		"--", "true")
	require.Equal(t, 0, code)
}

// Signals sent to dfstream reach the command.
func TestLockForwardsSignals(t *testing.T) {
	t.Parallel()
	srv := dflockdtest.New(t, dflockdtest.Config{})
	p := start(t, nil, "", "lock", "k", "--servers", srv.Addr(), "--",
		"sh", "-c", `trap 'echo got-usr1' USR1; trap 'echo got-hup' HUP; trap 'echo got-term; exit 3' TERM; echo ready; while :; do sleep 0.1; done`)
	p.waitOutput(t, p.stdout, "ready")
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGUSR1))
	p.waitOutput(t, p.stdout, "got-usr1")
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGHUP))
	p.waitOutput(t, p.stdout, "got-hup")
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	require.Equal(t, 3, p.wait(t, 10*time.Second), "stderr: %s", p.stderr)
	require.Contains(t, p.stdout.String(), "got-term")
}

func TestUnreachableAndAuth(t *testing.T) {
	t.Parallel()
	_, stderr, code := dfs(t, nil, "lock", "k", "--servers", "127.0.0.1:1", "--connect-timeout", "2s", "--", "true")
	require.Equal(t, 69, code)
	requireOneLineError(t, stderr)

	srv := dflockdtest.New(t, dflockdtest.Config{AuthToken: "s3cret-token"})
	_, stderr, code = dfs(t, nil, "lock", "k", "--servers", srv.Addr(), "--auth-token", "wrong", "--", "true")
	require.Equal(t, 69, code)
	requireOneLineError(t, stderr)
	require.NotContains(t, stderr, "wrong")

	// From the environment, from a file; and flags beat the environment.
	_, stderr, code = dfs(t, []string{"DFSTREAM_AUTH_TOKEN=s3cret-token", "DFSTREAM_SERVERS=" + srv.Addr()}, "lock", "k", "--", "true")
	require.Equal(t, 0, code, stderr)
	file := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(file, []byte("s3cret-token\n"), 0o600))
	_, stderr, code = dfs(t, []string{"DFSTREAM_SERVERS=127.0.0.1:1"}, "lock", "k", "--servers", srv.Addr(), "--auth-token-file", file, "--", "true")
	require.Equal(t, 0, code, stderr)
	_, stderr, code = dfs(t, []string{"DFSTREAM_AUTH_TOKEN_FILE=" + file, "DFSTREAM_SERVERS=" + srv.Addr()}, "stats")
	require.Equal(t, 0, code, stderr)
	// --auth-token-file beats DFSTREAM_AUTH_TOKEN, --auth-token beats DFSTREAM_AUTH_TOKEN_FILE.
	_, stderr, code = dfs(t, []string{"DFSTREAM_AUTH_TOKEN=wrong"}, "stats", "--servers", srv.Addr(), "--auth-token-file", file)
	require.Equal(t, 0, code, stderr)
	bad := filepath.Join(t.TempDir(), "bad")
	require.NoError(t, os.WriteFile(bad, []byte("wrong\n"), 0o600))
	_, stderr, code = dfs(t, []string{"DFSTREAM_AUTH_TOKEN_FILE=" + bad}, "stats", "--servers", srv.Addr(), "--auth-token", "s3cret-token")
	require.Equal(t, 0, code, stderr)
	// Verbose logs do not show the token.
	_, stderr, code = dfs(t, nil, "lock", "k", "-v", "--servers", srv.Addr(), "--auth-token", "s3cret-token", "--", "true")
	require.Equal(t, 0, code, stderr)
	require.NotContains(t, stderr, "s3cret-token")
}

// -v logs each step once: the library's "acquired" line, with the key, is
// not repeated by the command.
func TestLockVerboseLogsAcquiredOnce(t *testing.T) {
	t.Parallel()
	srv := dflockdtest.New(t, dflockdtest.Config{})
	_, stderr, code := dfs(t, nil, "lock", "once", "-v", "--servers", srv.Addr(), "--", "true")
	require.Equal(t, 0, code, stderr)
	require.Equal(t, 1, strings.Count(stderr, " acquired "), stderr)
	require.Contains(t, stderr, "once")
}
