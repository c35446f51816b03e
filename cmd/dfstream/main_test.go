package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// countSignals is the command of the terminal tests (the test binary run
// with DFSTREAM_TEST_HELPER=count-signals): it prints "ready", then one line
// per SIGINT or SIGQUIT it gets; SIGTERM ends it.
func countSignals() {
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGQUIT)
	fmt.Println("ready")
	for sig := range sigs {
		fmt.Println("got", sig)
	}
}

// bin is the dfstream binary built once by TestMain.
var bin string

func TestMain(m *testing.M) {
	if os.Getenv("DFSTREAM_TEST_HELPER") == "count-signals" {
		countSignals() // the test binary as a command run under dfstream
		return
	}
	dir, err := os.MkdirTemp("", "dfstream-cmd-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "dfstream")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building dfstream:", err)
		_ = os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// syncBuffer is a bytes.Buffer safe for a writer goroutine and readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// proc is a running dfstream process.
type proc struct {
	cmd    *exec.Cmd
	stdout *syncBuffer
	stderr *syncBuffer
	done   chan struct{}
	err    error
	start  time.Time
}

// cleanEnv is the test process's environment without DFSTREAM_ variables,
// plus extra.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DFSTREAM_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// start runs dfstream with args in the background; env is added to a clean
// environment. It is killed at the end of the test.
func start(t *testing.T, env []string, stdin string, args ...string) *proc {
	t.Helper()
	return startWith(t, env, func(cmd *exec.Cmd) {
		if stdin != "" {
			cmd.Stdin = strings.NewReader(stdin)
		}
	}, args...)
}

// startWith is start with setup called on the command before it starts.
func startWith(t *testing.T, env []string, setup func(*exec.Cmd), args ...string) *proc {
	t.Helper()
	p := &proc{
		cmd:    exec.Command(bin, args...),
		stdout: &syncBuffer{},
		stderr: &syncBuffer{},
		done:   make(chan struct{}),
	}
	p.cmd.Env = cleanEnv(env...)
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	// A command left running by a failing dfstream may hold the output
	// pipes open: do not wait for it beyond the exit of dfstream itself.
	p.cmd.WaitDelay = 2 * time.Second
	setup(p.cmd)
	p.start = time.Now()
	require.NoError(t, p.cmd.Start())
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Fatalf("dfstream %v did not exit within %v\nstdout: %s\nstderr: %s",
			p.cmd.Args[1:], timeout, p.stdout, p.stderr)
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	require.NoError(t, p.err)
	return 0
}

// waitOutput waits until stdout (or stderr) contains s.
func (p *proc) waitOutput(t *testing.T, buf *syncBuffer, s string) {
	t.Helper()
	require.Eventually(t, func() bool { return strings.Contains(buf.String(), s) }, 10*time.Second, 10*time.Millisecond,
		"waiting for %q\nstdout: %s\nstderr: %s", s, p.stdout, p.stderr)
}

// dfs runs dfstream to completion and returns stdout, stderr and the exit
// code.
func dfs(t *testing.T, env []string, args ...string) (string, string, int) {
	t.Helper()
	p := start(t, env, "", args...)
	code := p.wait(t, 30*time.Second)
	return p.stdout.String(), p.stderr.String(), code
}

// requireOneLineError checks stderr is one "dfstream: " line.
func requireOneLineError(t *testing.T, stderr string) {
	t.Helper()
	require.True(t, strings.HasPrefix(stderr, "dfstream: "), "stderr: %q", stderr)
	require.Equal(t, 1, strings.Count(stderr, "\n"), "stderr: %q", stderr)
	require.True(t, strings.HasSuffix(stderr, "\n"))
	require.NotContains(t, stderr, "goroutine")
	require.NotContains(t, stderr, "panic")
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return lines
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
