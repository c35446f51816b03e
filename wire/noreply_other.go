//go:build !windows

package wire

import (
	"io"
	"syscall"
)

// peerEnded lists the errors of a read or write on a connection the peer
// closed or reset (see SyncConn.noReply).
var peerEnded = []error{io.EOF, syscall.ECONNRESET, syscall.EPIPE, syscall.ECONNABORTED}
