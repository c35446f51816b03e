package dfstream

import (
	"net"
	"strconv"
)

// addrProblem says what is wrong with addr as a server address, or returns
// "" when it is a usable host:port. It catches the mistakes that would
// otherwise surface only at the first dial, long after New returned: a
// missing port, a port that is not a number, a port out of range.
func addrProblem(addr string) string {
	if addr == "" {
		return "empty address"
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "address " + strconv.Quote(addr) + " is not host:port"
	}
	if host == "" {
		return "address " + strconv.Quote(addr) + " has no host"
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return "address " + strconv.Quote(addr) + " has no port number between 1 and 65535"
	}
	return ""
}
