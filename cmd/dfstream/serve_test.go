package main

import (
	"bufio"
	"net"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// startServe runs dfstream serve on a free port and returns the process and
// the address from its one line.
func startServe(t *testing.T, env []string, args ...string) (*proc, string) {
	t.Helper()
	p := start(t, env, "", append([]string{"serve", "--addr", "127.0.0.1:0"}, args...)...)
	p.waitOutput(t, p.stdout, "\n")
	line := p.stdout.String()
	m := regexp.MustCompile(`^dfstream: listening on (127\.0\.0\.1:\d+) \(tcp[^)]*\)\n$`).FindStringSubmatch(line)
	require.NotNil(t, m, "serve printed %q", line)
	return p, m[1]
}

func TestServeSpeaksTheProtocol(t *testing.T) {
	t.Parallel()
	p, addr := startServe(t, nil)
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.SetDeadline(time.Now().Add(5*time.Second)))
	_, err = conn.Write([]byte("l\nk\n0\n"))
	require.NoError(t, err)
	reply, err := bufio.NewReader(conn).ReadString('\n')
	require.NoError(t, err)
	require.Regexp(t, `^ok [0-9a-f]{32} 33 1\n$`, reply)
	conn.Close()

	// The dfstream commands work against it.
	_, stderr, code := dfs(t, nil, "lock", "k2", "--servers", addr, "--", "true")
	require.Equal(t, 0, code, stderr)

	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	require.Equal(t, 0, p.wait(t, 15*time.Second), "stderr: %s", p.stderr)
}

func TestServeFlagsAndAuth(t *testing.T) {
	t.Parallel()
	const token = "very-secret-token-42"
	p, addr := startServe(t, []string{"DFSTREAM_AUTH_TOKEN=" + token}, "-v", "--default-lease", "5s", "--max-locks", "2")
	require.Contains(t, p.stdout.String(), "auth required")

	_, stderr, code := dfs(t, nil, "lock", "k", "--servers", addr, "--", "true")
	require.Equal(t, 69, code, "no token: %s", stderr)
	stdout, stderr, code := dfs(t, []string{"DFSTREAM_AUTH_TOKEN=" + token}, "stats", "--json", "--servers", addr)
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stdout, `"connections"`)

	// The default lease applies: the raw reply says 5.
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.SetDeadline(time.Now().Add(5*time.Second)))
	_, err = conn.Write([]byte("auth\n_\n" + token + "\nl\nk\n0\n"))
	require.NoError(t, err)
	r := bufio.NewReader(conn)
	line, err := r.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "ok\n", line)
	line, err = r.ReadString('\n')
	require.NoError(t, err)
	require.Regexp(t, `^ok [0-9a-f]{32} 5 \d+\n$`, line)

	require.NoError(t, p.cmd.Process.Signal(syscall.SIGINT))
	require.Equal(t, 0, p.wait(t, 15*time.Second), "stderr: %s", p.stderr)
	require.NotContains(t, p.stdout.String()+p.stderr.String(), token)
	require.True(t, strings.Contains(p.stderr.String(), "listening"), "-v logs: %s", p.stderr)
}

func TestServeAddressInUse(t *testing.T) {
	t.Parallel()
	_, addr := startServe(t, nil)
	_, stderr, code := dfs(t, nil, "serve", "--addr", addr)
	require.Equal(t, 69, code)
	requireOneLineError(t, stderr)
}
