package wire

import (
	"errors"
	"net"
	"os"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
)

// How a reset reads on Windows: Winsock's codes, not the syscall package's
// invented ECONNRESET and ECONNABORTED.
func TestResetByWindowsPeerBeforeAnyReplyByteIsErrNoReply(t *testing.T) {
	c := pipeConn(t)
	for _, code := range []syscall.Errno{10054, 10053} {
		err := &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("wsarecv", code)}
		assert.True(t, errors.Is(c.noReply(err), ErrNoReply), "%v", code)
	}
}
