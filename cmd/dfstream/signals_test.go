//go:build linux

// The process-control tests need Linux: pseudo-terminals opened the Linux
// way and process states read from /proc.

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/dfstream/dfstream"
	"github.com/dfstream/dfstream/dflockdtest"
)

// openPTY opens a pseudo-terminal and returns its master and slave ends.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { _ = m.Close() })
	var unlock int32
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, m.Fd(), syscall.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); errno != 0 {
		t.Skipf("unlocking the pseudo-terminal: %v", errno)
	}
	var n uint32
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, m.Fd(), syscall.TIOCGPTN, uintptr(unsafe.Pointer(&n))); errno != 0 {
		t.Skipf("pseudo-terminal number: %v", errno)
	}
	s, err := os.OpenFile("/dev/pts/"+strconv.Itoa(int(n)), os.O_RDWR|syscall.O_NOCTTY, 0)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	go func() { _, _ = io.Copy(io.Discard, m) }() // echo, so that it never blocks
	return m, s
}

// startOnTerminal runs dfstream with a pseudo-terminal as its stdin and
// controlling terminal, in a session of its own: its process group is the
// terminal's foreground group, as in an interactive shell. It returns the
// terminal's master end, to type on.
func startOnTerminal(t *testing.T, env []string, args ...string) (*proc, *os.File) {
	t.Helper()
	master, slave := openPTY(t)
	p := startWith(t, env, func(cmd *exec.Cmd) {
		cmd.Stdin = slave
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	}, args...)
	return p, master
}

// procState is the state letter of pid in /proc ("" when it is gone).
func procState(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) == 0 {
		return ""
	}
	return f[0]
}

func requireState(t *testing.T, pid int, what string, ok func(state string) bool) {
	t.Helper()
	require.Eventually(t, func() bool { return ok(procState(pid)) }, 10*time.Second, 10*time.Millisecond,
		"%s: pid %d is in state %q", what, pid, procState(pid))
}

func stopped(s string) bool { return s == "T" }
func running(s string) bool { return s != "T" && s != "" && s != "Z" }
func dead(s string) bool    { return s == "" || s == "Z" || s == "X" }

// pidFrom waits for "WORD PID" on p's stdout and returns PID.
func pidFrom(t *testing.T, p *proc, word string) int {
	t.Helper()
	re := regexp.MustCompile(`(?m)^` + word + ` (\d+)$`)
	var pid int
	require.Eventually(t, func() bool {
		m := re.FindStringSubmatch(p.stdout.String())
		if m == nil {
			return false
		}
		pid, _ = strconv.Atoi(m[1])
		return true
	}, 10*time.Second, 10*time.Millisecond, "waiting for %q\nstdout: %s\nstderr: %s", word, p.stdout, p.stderr)
	// Should dfstream fail to end it, the process does not outlive the test.
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
	return pid
}

// Ctrl-Z (SIGTSTP) stops the command with dfstream, and SIGCONT resumes
// both: the command never runs while nothing renews the lease.
func TestLockStopAndContinue(t *testing.T) {
	t.Parallel()
	srv := dflockdtest.New(t, dflockdtest.Config{})
	// The command does not fork: a shell stopped while it vforks a child
	// shows state D, not T, for as long as the child is stopped too.
	p := start(t, nil, "", "lock", "k", "--servers", srv.Addr(), "--",
		"sh", "-c", `echo "pid $$"; exec sleep 600`)
	child := pidFrom(t, p, "pid")
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTSTP))
	requireState(t, p.cmd.Process.Pid, "dfstream after SIGTSTP", stopped)
	requireState(t, child, "the command after SIGTSTP", stopped)

	require.NoError(t, p.cmd.Process.Signal(syscall.SIGCONT))
	requireState(t, p.cmd.Process.Pid, "dfstream after SIGCONT", running)
	requireState(t, child, "the command after SIGCONT", running)
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	require.Equal(t, 128+int(syscall.SIGTERM), p.wait(t, 10*time.Second), "stderr: %s", p.stderr)
}

// Stopped for longer than the lease: on SIGCONT the command is not resumed
// to go on working but stopped (SIGTERM), and dfstream exits 75.
func TestLockLeaseLostWhileStopped(t *testing.T) {
	t.Parallel()
	srv := dflockdtest.New(t, dflockdtest.Config{})
	p := start(t, nil, "", "lock", "k", "--servers", srv.Addr(), "--lease", "1s", "--grace", "5s", "--",
		"sh", "-c", `trap 'echo got-term; kill $! 2>/dev/null; exit 9' TERM; echo "pid $$"; sleep 600 & wait`) // no fork while stopped: see TestLockStopAndContinue
	child := pidFrom(t, p, "pid")
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTSTP))
	requireState(t, child, "the command after SIGTSTP", stopped)
	time.Sleep(2500 * time.Millisecond) // the 1s lease runs out on the server
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGCONT))
	require.Equal(t, exitLeaseLost, p.wait(t, 10*time.Second), "stdout: %s\nstderr: %s", p.stdout, p.stderr)
	require.Contains(t, p.stdout.String(), "got-term")
	require.Contains(t, p.stderr.String(), "lost")
}

// SIGQUIT is forwarded like SIGTERM: dfstream does not die with a stack
// dump and leave the command running.
func TestLockForwardsSIGQUIT(t *testing.T) {
	t.Parallel()
	srv := dflockdtest.New(t, dflockdtest.Config{})
	p := start(t, nil, "", "lock", "k", "--servers", srv.Addr(), "--",
		"sh", "-c", `trap 'echo got-quit; exit 5' QUIT; echo "pid $$"; while :; do sleep 0.05; done`)
	pidFrom(t, p, "pid")
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGQUIT))
	require.Equal(t, 5, p.wait(t, 10*time.Second), "stderr: %s", p.stderr)
	require.Contains(t, p.stdout.String(), "got-quit")
	require.NotContains(t, p.stderr.String(), "goroutine")
}

// A killed dfstream takes its command down (Pdeathsig).
func TestLockKilledTakesCommandDown(t *testing.T) {
	t.Parallel()
	srv := dflockdtest.New(t, dflockdtest.Config{})
	p := start(t, nil, "", "lock", "k", "--servers", srv.Addr(), "--",
		"sh", "-c", `echo "pid $$"; while :; do sleep 0.05; done`)
	child := pidFrom(t, p, "pid")
	// Let the Go runtime start (and possibly retire) threads first.
	time.Sleep(200 * time.Millisecond)
	require.NoError(t, p.cmd.Process.Kill())
	p.wait(t, 10*time.Second)
	requireState(t, child, "the command after dfstream was killed", dead)
}

// A command that stopped itself (as SIGTTIN does to a background reader of
// the terminal) still ends on a forwarded SIGTERM: SIGCONT follows it.
func TestLockForwardedTermReachesStoppedCommand(t *testing.T) {
	t.Parallel()
	srv := dflockdtest.New(t, dflockdtest.Config{})
	p := start(t, nil, "", "lock", "k", "--servers", srv.Addr(), "--",
		"sh", "-c", `echo "pid $$"; kill -STOP $$; echo resumed; sleep 60`)
	child := pidFrom(t, p, "pid")
	requireState(t, child, "the command", stopped)
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	require.Equal(t, 128+int(syscall.SIGTERM), p.wait(t, 10*time.Second), "stdout: %s\nstderr: %s", p.stdout, p.stderr)
}

// On a terminal, one Ctrl-C (or Ctrl-\) reaches the command once: the
// terminal sends it to the foreground group, which the command shares with
// dfstream, so dfstream does not forward it again.
func TestLockTerminalInterruptOnce(t *testing.T) {
	t.Parallel()
	srv := dflockdtest.New(t, dflockdtest.Config{})
	self, err := os.Executable()
	require.NoError(t, err)
	p, tty := startOnTerminal(t, []string{"DFSTREAM_TEST_HELPER=count-signals"},
		"lock", "k", "--servers", srv.Addr(), "--", self)
	p.waitOutput(t, p.stdout, "ready")
	for _, key := range []struct {
		char string
		sig  syscall.Signal
	}{{"\x03", syscall.SIGINT}, {"\x1c", syscall.SIGQUIT}} {
		_, err = tty.WriteString(key.char)
		require.NoError(t, err)
		line := "got " + key.sig.String()
		p.waitOutput(t, p.stdout, line)
		time.Sleep(300 * time.Millisecond) // time for a second one to arrive
		require.Equal(t, 1, strings.Count(p.stdout.String(), line), "stdout: %s\nstderr: %s", p.stdout, p.stderr)
	}
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	require.Equal(t, 128+int(syscall.SIGTERM), p.wait(t, 10*time.Second), "stderr: %s", p.stderr)
}

// On a terminal the command shares dfstream's process group, so a lost
// lease cannot signal a group of its own: the command's descendants are
// stopped one by one, those it left behind included.
func TestLockTerminalLostStopsDescendants(t *testing.T) {
	t.Parallel()
	srv := dflockdtest.New(t, dflockdtest.Config{})
	// The background sleep ignores SIGHUP, which the terminal sends when
	// dfstream (the session leader here) exits: only dfstream can end it.
	p, _ := startOnTerminal(t, nil, "lock", "k", "--servers", srv.Addr(), "--lease", "1s", "--grace", "500ms", "--",
		"sh", "-c", `trap '' HUP; sleep 300 >/dev/null 2>&1 & echo "bg $!"; wait`)
	bg := pidFrom(t, p, "bg")
	srv.Freeze()
	t.Cleanup(srv.Thaw)
	require.Equal(t, exitLeaseLost, p.wait(t, 15*time.Second), "stdout: %s\nstderr: %s", p.stdout, p.stderr)
	requireState(t, bg, "the command's background job", dead)
}

// fakeHolder is a holder whose Release and Err are set by the test.
type fakeHolder struct {
	releaseErr, err error
}

func (f *fakeHolder) Events() <-chan dfstream.Event { return nil }
func (f *fakeHolder) Wait(context.Context) (dfstream.Acquired, error) {
	return dfstream.Acquired{}, nil
}
func (f *fakeHolder) Release(context.Context) error   { return f.releaseErr }
func (f *fakeHolder) Close() error                    { return nil }
func (f *fakeHolder) Err() error                      { return f.err }
func (f *fakeHolder) Held() (dfstream.Acquired, bool) { return dfstream.Acquired{}, f.err == nil }

// The outcome after the command exits does not depend on whether the
// stream had already ended by the loss (Release: ErrNotHeld) or ends with
// it during Release.
func TestSettleAfterExit(t *testing.T) {
	t.Parallel()
	lost := fmt.Errorf("%w: reset", dfstream.ErrConnLost)
	for _, tc := range []struct {
		name            string
		releaseErr, err error
		want            int
	}{
		{"released", nil, nil, 7},
		{"stream ended by a loss before", dfstream.ErrNotHeld, lost, exitLeaseLost},
		{"loss found by the release", lost, lost, exitLeaseLost},
		{"deadline passed", dfstream.ErrNotHeld, dfstream.ErrDeadlinePassed, exitLeaseLost},
		{"release timed out", context.DeadlineExceeded, nil, 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := settle("lock", "k", &fakeHolder{tc.releaseErr, tc.err}, 7, zerolog.Nop())
			var ee *exitError
			require.True(t, errors.As(err, &ee))
			require.Equal(t, tc.want, ee.code)
			if tc.want == exitLeaseLost {
				var buf strings.Builder
				report(err, &buf)
				requireOneLineError(t, buf.String())
				require.Equal(t, 1, strings.Count(buf.String(), "dfstream: "), buf.String())
				require.Contains(t, buf.String(), "exit code was 7")
			}
		})
	}
}

// emit reading stdin ends on SIGINT or SIGTERM with 128+N, though stdin
// stays open.
func TestEmitStdinInterrupted(t *testing.T) {
	t.Parallel()
	srv := dflockdtest.New(t, dflockdtest.Config{})
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		var stdin io.WriteCloser
		p := startWith(t, nil, func(cmd *exec.Cmd) {
			var err error
			stdin, err = cmd.StdinPipe()
			require.NoError(t, err)
		}, "emit", "chan", "--servers", srv.Addr())
		t.Cleanup(func() { _ = stdin.Close() })
		_, err := io.WriteString(stdin, "one\n")
		require.NoError(t, err)
		p.waitOutput(t, p.stdout, "\n") // the first line was sent: the signal handler is in place
		require.NoError(t, p.cmd.Process.Signal(sig))
		require.Equal(t, 128+int(sig), p.wait(t, 10*time.Second), "stderr: %s", p.stderr)
	}
}

// --acquire-timeout inf waits as long as it takes.
func TestLockAcquireForever(t *testing.T) {
	t.Parallel()
	srv := dflockdtest.New(t, dflockdtest.Config{})
	c, err := dfstream.New(dfstream.WithServers(srv.Addr()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	held, err := c.Lock(ctxTimeout(t, 10*time.Second), "busy")
	require.NoError(t, err)
	t.Cleanup(func() { _ = held.Close() })

	for _, v := range []string{"inf", "-1"} {
		p := start(t, nil, "", "lock", "busy", "--servers", srv.Addr(), "--acquire-timeout", v, "--", "echo", "ran")
		time.Sleep(300 * time.Millisecond)
		require.NotContains(t, p.stdout.String(), "ran")
		require.NoError(t, held.Release(ctxTimeout(t, 5*time.Second)))
		require.Equal(t, 0, p.wait(t, 15*time.Second), "stderr: %s", p.stderr)
		require.Contains(t, p.stdout.String(), "ran")
		held, err = c.Lock(ctxTimeout(t, 10*time.Second), "busy")
		require.NoError(t, err)
	}
	_, stderr, code := dfs(t, nil, "lock", "busy", "--acquire-timeout", "-2s", "--", "true")
	require.Equal(t, exitUsage, code)
	requireOneLineError(t, stderr)
}

// "dfstream: " is said once, and only the library's copies are dropped: a
// path that holds it stays whole.
func TestErrorPrefixOnce(t *testing.T) {
	t.Parallel()
	_, stderr, code := dfs(t, nil, "stats", "--servers", "127.0.0.1:1", "--connect-timeout", "2s")
	require.Equal(t, exitUnavailable, code)
	requireOneLineError(t, stderr)
	require.Equal(t, 1, strings.Count(stderr, "dfstream: "), stderr)

	file := t.TempDir() + "/dfstream: token"
	_, stderr, code = dfs(t, nil, "stats", "--auth-token-file", file)
	require.Equal(t, exitUsage, code)
	require.Contains(t, stderr, file)
}

// -v log lines carry milliseconds.
func TestVerboseMilliseconds(t *testing.T) {
	t.Parallel()
	srv := dflockdtest.New(t, dflockdtest.Config{})
	// A line at a whole second shows .000 honestly; several lines cannot
	// all be at one.
	_, stderr, code := dfs(t, nil, "lock", "k", "-v", "--servers", srv.Addr(), "--", "sleep", "0.3")
	require.Equal(t, 0, code, stderr)
	stamps := regexp.MustCompile(`(?m)^\d\d:\d\d:\d\d\.(\d\d\d) `).FindAllStringSubmatch(stderr, -1)
	require.NotEmpty(t, stamps, stderr)
	allZero := true
	for _, m := range stamps {
		allZero = allZero && m[1] == "000"
	}
	require.False(t, allZero, "no milliseconds in: %s", stderr)
}

// serve reads DFSTREAM_SERVE_TLS_CERT/KEY, not the clients' DFSTREAM_TLS_CERT/KEY.
func TestServeTLSEnvironment(t *testing.T) {
	t.Parallel()
	// The clients' variables, set in the same shell, do not turn TLS on.
	p, _ := startServe(t, []string{"DFSTREAM_TLS_CERT=/nonexistent/client.crt", "DFSTREAM_TLS_KEY=/nonexistent/client.key"})
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	require.Equal(t, 0, p.wait(t, 15*time.Second), "stderr: %s", p.stderr)

	cert, key := writeCert(t, t.TempDir(), "server")
	p = start(t, []string{"DFSTREAM_SERVE_TLS_CERT=" + cert, "DFSTREAM_SERVE_TLS_KEY=" + key}, "", "serve", "--addr", "127.0.0.1:0")
	p.waitOutput(t, p.stdout, "\n")
	require.Regexp(t, `\(tls\)`, p.stdout.String())
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	require.Equal(t, 0, p.wait(t, 15*time.Second), "stderr: %s", p.stderr)

	stdout, _, code := dfs(t, nil, "serve", "--help")
	require.Equal(t, 0, code)
	require.Contains(t, stdout, "DFSTREAM_SERVE_TLS_CERT")
	require.NotContains(t, stdout, "DFSTREAM_TLS_CERT ")
}
