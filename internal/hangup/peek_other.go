//go:build !(linux || darwin || dragonfly || freebsd || netbsd || openbsd)

package hangup

// Without MSG_DONTWAIT a peek could block: Peek reports ErrNoPeek, and a
// watch (a goroutine with a read pending here, which fires on data as on
// a hang-up) is what notices.
const canPeek = false

func peekFd(int) error { return ErrNoPeek }
