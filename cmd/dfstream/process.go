package main

import (
	"errors"
	"os"
	"os/exec"
	"runtime"
	"syscall"

	"github.com/mattn/go-isatty"
)

// The process control of lock and sem: starting the command, signalling it
// and its descendants, and reading its exit code. What differs between
// systems is in the job_*.go files.

// The signals sent to the command, named once for every system.
const (
	sigTERM = syscall.SIGTERM
	sigKILL = syscall.SIGKILL
)

// job is the running command and, when it shares dfstream's process group,
// the processes it started.
type job struct {
	cmd    *exec.Cmd
	pid    int
	exited chan error // receives cmd.Wait's result once the command exits
	shared bool       // in dfstream's process group (stdin is a terminal)
	// seen are the command's descendants found so far (pid → start time),
	// kept so that those orphaned when their parent exits are still
	// reached. The start time tells a reused pid from the process seen.
	seen map[int]uint64
	// reaped: the command has been waited for, so its pid may belong to
	// another process by now.
	reaped bool
}

// startJob starts argv with env and dfstream's standard streams. It runs in
// its own process group (so that a lost lease stops the whole job, shell
// pipelines included), unless it may want the terminal: then it shares
// dfstream's group, the terminal's foreground group. On Linux, if dfstream
// is killed (SIGKILL, a crash), nothing renews the lease any more, so the
// command must not outlive it (see sysProcAttr).
func startJob(argv []string, e *env, environ []string) (*job, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = e.stdin, e.stdout, e.stderr
	cmd.Env = environ
	j := &job{cmd: cmd, shared: isTerminal(os.Stdin), exited: make(chan error, 1)}
	cmd.SysProcAttr = sysProcAttr(j.shared)
	started := make(chan error, 1)
	go func() {
		// Linux's parent-death signal fires when the thread that started
		// the child ends, not the process; Go may end or reuse threads at
		// will. Keep this goroutine on its own thread until the child has
		// been reaped.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		j.exited <- cmd.Wait()
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	j.pid = cmd.Process.Pid
	return j, nil
}

// notFound reports whether startJob failed because the command does not
// exist (exit 127, not 126).
func notFound(err error) bool {
	return errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist)
}

// reap records that the command has exited (after j.exited) and returns its
// exit code.
func (j *job) reap() int {
	j.reaped = true
	return exitCode(j.cmd)
}

// forward passes a signal sent to dfstream on: to the command's group, or
// to the command alone when it shares dfstream's group. After a signal
// that ends processes by default, SIGCONT follows (as shells do): a
// stopped command (SIGTTIN from reading the terminal in the background,
// say) would otherwise keep it pending, and hold the key, forever.
func (j *job) forward(s os.Signal) {
	sig, ok := s.(syscall.Signal)
	if !ok || sig == 0 {
		return
	}
	target := -j.pid
	if j.shared {
		target = j.pid
	}
	kill(target, sig)
	switch sig {
	case syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT:
		kill(target, sigCONT)
	}
}

// signal sends sig to the whole job: its process group, or, sharing
// dfstream's group, the command and every descendant that can be found
// (those that left for a group of their own included).
func (j *job) signal(sig syscall.Signal) {
	if !j.shared {
		kill(-j.pid, sig)
		return
	}
	j.scan()
	if !j.reaped {
		kill(j.pid, sig)
	}
	for pid, started := range j.seen {
		if _, st, ok := procStat(pid); ok && st == started {
			kill(pid, sig)
		}
	}
}

// isInterrupt reports whether sig is one a terminal sends to its whole
// foreground group (Ctrl-C, Ctrl-\).
func isInterrupt(sig os.Signal) bool {
	return sig == syscall.SIGINT || sig == syscall.SIGQUIT
}

// exitCode is the command's exit code, 128+N when signal N killed it.
func exitCode(cmd *exec.Cmd) int {
	if cmd.ProcessState == nil {
		return exitFailure
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	if code := cmd.ProcessState.ExitCode(); code >= 0 {
		return code
	}
	return exitFailure
}

func signum(sig os.Signal) int {
	if s, ok := sig.(syscall.Signal); ok {
		return int(s)
	}
	return 1
}

// isTerminal reports whether f is a terminal.
func isTerminal(f *os.File) bool {
	return isatty.IsTerminal(f.Fd())
}
