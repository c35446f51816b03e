package hangup

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// recvPeek is recv(2) with MSG_PEEK|MSG_DONTWAIT. unix.Recvfrom would do,
// but it asks for the sender's address, which escapes: an allocation per
// peek on the pool's hot path.
func recvPeek(fd int, b []byte) (int, error) {
	n, _, errno := unix.Syscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)),
		unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}
