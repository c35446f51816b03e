//go:build unix

package main

import (
	"os"
	"syscall"
)

// forwarded are the signals dfstream passes on to the command.
// SIGQUIT among them: not caught, it would make dfstream dump its goroutines
// and exit, leaving the command running without the lock.
var forwarded = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2}

// jobControl are caught as well, to stop and resume the command with
// dfstream.
var jobControl = []os.Signal{syscall.SIGTSTP, syscall.SIGCONT}

// The job-control signals, named apart so that the code using them builds
// where they do not exist.
const (
	sigTSTP = syscall.SIGTSTP
	sigCONT = syscall.SIGCONT
	sigSTOP = syscall.SIGSTOP
)

// kill sends sig to pid (to the process group -pid when negative).
func kill(pid int, sig syscall.Signal) {
	_ = syscall.Kill(pid, sig)
}

// stopSelf stops dfstream the way the default action of SIGTSTP would
// (dfstream catches SIGTSTP, so that action does not happen). SIGSTOP
// cannot be caught; a later SIGCONT resumes it and is delivered on sigs.
func stopSelf() {
	kill(os.Getpid(), syscall.SIGSTOP)
}
