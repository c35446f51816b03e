//go:build !windows

package dflockdtest_test

import "syscall"

// setRcvBuf sets a socket's receive buffer (SO_RCVBUF).
func setRcvBuf(fd uintptr, size int) error {
	return syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, size)
}
