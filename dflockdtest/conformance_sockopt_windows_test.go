package dflockdtest_test

import "syscall"

// setRcvBuf sets a socket's receive buffer (SO_RCVBUF); Windows takes a
// socket handle where Unix takes a descriptor.
func setRcvBuf(fd uintptr, size int) error {
	return syscall.SetsockoptInt(syscall.Handle(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, size)
}
