package wire

import (
	"io"
	"syscall"
)

// Winsock's codes for a connection reset or aborted by the peer. The
// syscall package's ECONNRESET and ECONNABORTED are invented values on
// Windows that no socket call returns.
const (
	wsaECONNABORTED syscall.Errno = 10053
	wsaECONNRESET   syscall.Errno = 10054
)

// peerEnded lists the errors of a read or write on a connection the peer
// closed or reset (see SyncConn.noReply). A write to a reset socket fails
// with one of the same two codes: Windows has no EPIPE for sockets.
var peerEnded = []error{io.EOF, wsaECONNRESET, wsaECONNABORTED}
