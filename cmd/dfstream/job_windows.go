package main

import (
	"os"
	"syscall"
)

// forwarded are the signals dfstream passes on to the command: Windows
// delivers only these two (Ctrl-C and Ctrl-Break; closing the console,
// logoff, shutdown).
var forwarded = []os.Signal{syscall.SIGINT, syscall.SIGTERM}

// jobControl is empty: Windows has no job-control signals.
var jobControl []os.Signal

// Values no signal delivers: the job-control cases of the signal switch
// never match on Windows. Distinct, as constant cases must be.
const (
	sigTSTP = syscall.Signal(-1)
	sigCONT = syscall.Signal(-2)
	sigSTOP = syscall.Signal(-3)
)

// sysProcAttr has nothing to set: no process groups, no parent-death signal.
func sysProcAttr(bool) *syscall.SysProcAttr { return nil }

// kill ends the process |pid| (Windows has no groups to signal) for SIGKILL
// and SIGTERM, which it cannot deliver otherwise; other signals have no
// Windows counterpart and are dropped.
func kill(pid int, sig syscall.Signal) {
	if sig != syscall.SIGKILL && sig != syscall.SIGTERM {
		return
	}
	if p, err := os.FindProcess(max(pid, -pid)); err == nil {
		_ = p.Kill()
		_ = p.Release()
	}
}

// stopSelf does nothing: no SIGTSTP reaches dfstream on Windows.
func stopSelf() {}
