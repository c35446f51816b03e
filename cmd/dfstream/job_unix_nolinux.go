//go:build unix && !linux

package main

import "syscall"

// sysProcAttr starts the command in a process group of its own unless it
// shares dfstream's. There is no parent-death signal here: a command whose
// dfstream is killed outright keeps running without the lease.
func sysProcAttr(shared bool) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: !shared}
}
