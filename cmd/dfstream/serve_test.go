package main

import (
	"bufio"
	"math/rand/v2"
	"net"
	"regexp"
	"strconv"
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

// rawClient is one raw TCP connection to a server started by a test.
type rawClient struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawClient {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return &rawClient{t: t, c: c, r: bufio.NewReader(c)}
}

// do sends one request and returns its reply line without the LF.
func (c *rawClient) do(cmd, key, arg string) string {
	c.t.Helper()
	require.NoError(c.t, c.c.SetDeadline(time.Now().Add(5*time.Second)))
	_, err := c.c.Write([]byte(cmd + "\n" + key + "\n" + arg + "\n"))
	require.NoError(c.t, err)
	line, err := c.r.ReadString('\n')
	require.NoError(c.t, err)
	return strings.TrimSuffix(line, "\n")
}

// fenceOfReply checks a 2.x grant `ok <32 hex> <lease>` and returns the
// fence, the token's first 16 hex digits.
func fenceOfReply(t *testing.T, reply string, lease int) (string, uint64) {
	t.Helper()
	m := regexp.MustCompile(`^ok ([0-9a-f]{32}) (\d+)$`).FindStringSubmatch(reply)
	require.NotNil(t, m, "2.x grant reply %q", reply)
	require.Equal(t, strconv.Itoa(lease), m[2])
	f, err := strconv.ParseUint(m[1][:16], 16, 64)
	require.NoError(t, err)
	return m[1], f
}

func TestServeGeneration2AnswersWithFencedTokensNoSignalsAndBarrier(t *testing.T) {
	t.Parallel()
	p, addr := startServe(t, nil, "--generation", "2")
	require.Contains(t, p.stdout.String(), "2.x")
	c := dialRaw(t, addr)
	tok, f1 := fenceOfReply(t, c.do("l", "k", "0"), 33)
	_, f2 := fenceOfReply(t, c.do("l", "k2", "0"), 33)
	require.Equal(t, "ok", c.do("r", "k", tok))
	_, f3 := fenceOfReply(t, c.do("l", "k", "0"), 33)
	require.Less(t, f1, f2, "the fence rises from grant to grant")
	require.Less(t, f2, f3, "the fence rises from grant to grant")
	require.Equal(t, "error", c.do("listen", "ch", ""))
	require.Equal(t, "ok", c.do("barrier", "_", "_"))
	require.Equal(t, "ok", c.do("ping", "_", "_"))

	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	// The signal lands some time after it is sent: ping until it has.
	deadline := time.Now().Add(10 * time.Second)
	reply := c.do("ping", "_", "_")
	for reply == "ok" && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		reply = c.do("ping", "_", "_")
	}
	require.Equal(t, "error_draining", reply, "a request during the drain")
	require.Equal(t, 0, p.wait(t, 15*time.Second), "stderr: %s", p.stderr)
}

func TestServeClusterRunsNodesOnConsecutivePorts(t *testing.T) {
	t.Parallel()
	p := start(t, nil, "", "serve", "--addr", "127.0.0.1:0", "--cluster", "3")
	p.waitOutput(t, p.stdout, "node2 listening")
	p.waitOutput(t, p.stdout, ")\n")
	re := regexp.MustCompile(`(?m)^dfstream: node(\d) listening on (127\.0\.0\.1:(\d+)) \(tcp, 2\.x, (leader|follower)\)$`)
	ms := re.FindAllStringSubmatch(p.stdout.String(), -1)
	require.Len(t, ms, 3, "stdout: %s", p.stdout)
	port0, err := strconv.Atoi(ms[0][3])
	require.NoError(t, err)
	for i, m := range ms {
		require.Equal(t, strconv.Itoa(i), m[1])
		require.Equal(t, strconv.Itoa(port0+i), m[3], "consecutive ports")
		require.Equal(t, map[bool]string{true: "leader", false: "follower"}[i == 0], m[4])
	}
	leader := ms[0][2]
	f := dialRaw(t, ms[2][2])
	require.Equal(t, "error_not_leader "+leader, f.do("l", "k", "0"))
	require.Equal(t, "ok", f.do("ping", "_", "_"))
	require.Contains(t, f.do("stats", "_", "_"), `"role":"follower"`)
	l := dialRaw(t, leader)
	fenceOfReply(t, l.do("l", "k", "0"), 33)
	require.Equal(t, "ok", l.do("barrier", "_", "_"))

	require.NoError(t, p.cmd.Process.Signal(syscall.SIGINT))
	require.Equal(t, 0, p.wait(t, 15*time.Second), "stderr: %s", p.stderr)
}

func TestServeClusterAtAGivenPortUsesTheNextOnes(t *testing.T) {
	t.Parallel()
	// A random port below the ephemeral range; a clash with a port in use
	// is retried with another.
	for try := 1; ; try++ {
		port := 20000 + rand.IntN(12000)
		p := start(t, nil, "", "serve", "--addr", "127.0.0.1:"+strconv.Itoa(port), "--cluster", "2")
		require.Eventually(t, func() bool {
			select {
			case <-p.done:
				return true
			default:
				return strings.Count(p.stdout.String(), "\n") == 2
			}
		}, 10*time.Second, 10*time.Millisecond, "stdout: %s\nstderr: %s", p.stdout, p.stderr)
		select {
		case <-p.done:
			require.Contains(t, p.stderr.String(), "address already in use")
			require.Less(t, try, 10, "no free pair of ports in 10 tries")
			continue
		default:
		}
		out := p.stdout.String()
		require.Contains(t, out, "node0 listening on 127.0.0.1:"+strconv.Itoa(port)+" ")
		require.Contains(t, out, "node1 listening on 127.0.0.1:"+strconv.Itoa(port+1)+" ")
		require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
		require.Equal(t, 0, p.wait(t, 15*time.Second), "stderr: %s", p.stderr)
		return
	}
}

func TestServeGenerationAndClusterUsageErrors(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"--generation", "3"},
		{"--cluster", "3", "--generation", "signals"},
		{"--cluster", "-1"},
		{"--cluster", "100"},
	} {
		_, stderr, code := dfs(t, nil, append([]string{"serve", "--addr", "127.0.0.1:0"}, args...)...)
		require.Equal(t, 64, code, "serve %v: %s", args, stderr)
		requireOneLineError(t, stderr)
	}
}

// serve says what it does between the signal and its exit: with a
// connection open, the drain can last --shutdown-drain.
func TestServeSaysItIsDraining(t *testing.T) {
	t.Parallel()
	p, addr := startServe(t, nil, "--shutdown-drain", "20s")
	c := dialRaw(t, addr)
	require.Equal(t, "ok", c.do("ping", "_", "_"))
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	p.waitOutput(t, p.stderr, "shutting down: no new connections; waiting up to 20s for 1 open connection to close")
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	require.Equal(t, 0, p.wait(t, 15*time.Second), "stderr: %s", p.stderr)
	require.Contains(t, p.stderr.String(), "again: closing the open connections now")
	require.True(t, strings.HasSuffix(p.stderr.String(), "dfstream: stopped\n"), "stderr: %s", p.stderr)
}
