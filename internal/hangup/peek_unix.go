//go:build linux || darwin || dragonfly || freebsd || netbsd || openbsd

package hangup

import (
	"io"
	"os"

	"golang.org/x/sys/unix"
)

const canPeek = true

// peekFd asks the kernel for one byte without taking it or waiting.
func peekFd(fd int) error {
	var b [1]byte
	for {
		n, err := recvPeek(fd, b[:])
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN: // EWOULDBLOCK is the same number here
			return nil
		case err != nil:
			return os.NewSyscallError("recvfrom", err)
		case n == 0:
			return io.EOF
		default:
			return ErrPending
		}
	}
}
