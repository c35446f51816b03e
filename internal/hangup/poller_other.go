//go:build !linux

package hangup

import (
	"errors"
	"net"
)

// poller is not available on this platform: every watch is portable.
type poller struct{}

var errNotPollable = errors.New("hangup: no poller on this platform")

func (w *Watcher) watchPolled(*Watch, net.Conn) error { return errNotPollable }

func (p *poller) close() {}
