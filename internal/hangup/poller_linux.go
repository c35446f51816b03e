//go:build linux

package hangup

import (
	"errors"
	"net"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// poller is one epoll instance and the goroutine that waits on it. Each
// socket is registered for EPOLLRDHUP (EPOLLHUP and EPOLLERR are always
// reported) and one-shot, so it fires at most once and ordinary replies
// arriving on it never wake the poller.
type poller struct {
	epfd int
	wake int // an eventfd, registered with id 0, that stops the loop
	done chan struct{}

	mu      sync.Mutex
	next    uint64
	watches map[uint64]*Watch
}

var errNotPollable = errors.New("hangup: connection has no pollable descriptor")

// watchPolled registers nc with the Watcher's poller, starting it first if
// needed; w.mu is held. It returns errNotPollable when the portable path
// must be used instead.
func (w *Watcher) watchPolled(h *Watch, nc net.Conn) error {
	rc, ok := rawConn(nc)
	if !ok {
		return errNotPollable
	}
	if w.poller == nil {
		p, err := newPoller()
		if err != nil {
			return errNotPollable
		}
		w.poller = p
		w.running.Go(p.loop)
	}
	return w.poller.add(h, rc)
}

func newPoller() (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		_ = unix.Close(epfd)
		return nil, err
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &ev); err != nil {
		_ = unix.Close(wake)
		_ = unix.Close(epfd)
		return nil, err
	}
	return &poller{epfd: epfd, wake: wake, done: make(chan struct{}), watches: make(map[uint64]*Watch)}, nil
}

func (p *poller) add(h *Watch, rc syscall.RawConn) error {
	p.mu.Lock()
	p.next++
	id := p.next
	p.watches[id] = h
	p.mu.Unlock()
	ctl := func(op int) error {
		var cerr error
		err := rc.Control(func(fd uintptr) {
			ev := unix.EpollEvent{
				Events: unix.EPOLLRDHUP | unix.EPOLLONESHOT,
				Fd:     int32(uint32(id)),
				Pad:    int32(uint32(id >> 32)),
			}
			cerr = unix.EpollCtl(p.epfd, op, int(fd), &ev)
		})
		if err != nil {
			return err
		}
		return cerr
	}
	if err := ctl(unix.EPOLL_CTL_ADD); err != nil {
		p.forget(id)
		return err
	}
	h.stop = func() {
		p.forget(id)
		// A descriptor already closed has left the epoll set by itself.
		_ = ctl(unix.EPOLL_CTL_DEL)
	}
	return nil
}

func (p *poller) forget(id uint64) *Watch {
	p.mu.Lock()
	defer p.mu.Unlock()
	h := p.watches[id]
	delete(p.watches, id)
	return h
}

func (p *poller) loop() {
	defer close(p.done)
	evs := make([]unix.EpollEvent, 64)
	for {
		n, err := unix.EpollWait(p.epfd, evs, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return
		}
		for _, ev := range evs[:n] {
			id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			if id == 0 {
				return // close
			}
			if h := p.forget(id); h != nil {
				h.fire()
			}
		}
	}
}

// close stops the loop and releases the descriptors.
func (p *poller) close() {
	one := []byte{1, 0, 0, 0, 0, 0, 0, 0}
	_, _ = unix.Write(p.wake, one)
	<-p.done
	_ = unix.Close(p.wake)
	_ = unix.Close(p.epfd)
}
