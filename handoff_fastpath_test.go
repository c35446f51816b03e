package dfstream_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dfstream/dfstream"
	"github.com/dfstream/dfstream/dflockdtest"
	"github.com/dfstream/dfstream/internal/faultproxy"
)

// A queued stream's wait is answered when the key is granted to it, and
// the server restarts the lease then. A signals-era server never answers a
// wait with a grant that ran out unclaimed, so a quick reply is held as it
// is; a slow one, or one from a server that may hand over a stale token,
// is confirmed with a renewal first. These tests count the renewals on the
// wire.

// cmdCounter is a relay in front of a server that notes the command of
// every request going through it, and when it went.
type cmdCounter struct {
	ln       net.Listener
	upstream string
	wg       sync.WaitGroup
	mu       sync.Mutex
	sent     []sentCmd
	conns    []net.Conn
	closed   bool
}

func newCmdCounter(t *testing.T, upstream string) *cmdCounter {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	r := &cmdCounter{ln: ln, upstream: upstream}
	r.wg.Add(1)
	go r.accept()
	t.Cleanup(r.close)
	return r
}

func (r *cmdCounter) Addr() string { return r.ln.Addr().String() }

// sentCmd is a request's command and when the relay read it.
type sentCmd struct {
	cmd string
	at  time.Time
}

// count returns how many requests of cmd went through so far.
func (r *cmdCounter) count(cmd string) int { return r.countBefore(cmd, time.Now()) }

// countBefore returns how many requests of cmd went through before t.
func (r *cmdCounter) countBefore(cmd string, t time.Time) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, sc := range r.sent {
		if sc.cmd == cmd && sc.at.Before(t) {
			n++
		}
	}
	return n
}

func (r *cmdCounter) accept() {
	defer r.wg.Done()
	for {
		down, err := r.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.DialTimeout("tcp", r.upstream, 5*time.Second)
		if err != nil || !r.track(down, up) {
			_ = down.Close()
			if up != nil {
				_ = up.Close()
			}
			continue
		}
		r.wg.Add(2)
		go func() {
			defer r.wg.Done()
			_, _ = io.Copy(down, up)
			_ = down.Close()
		}()
		go func() {
			defer r.wg.Done()
			r.forward(up, bufio.NewReader(down))
			_ = up.Close()
		}()
	}
}

// track records a relayed pair for close; false once closed.
func (r *cmdCounter) track(conns ...net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	r.conns = append(r.conns, conns...)
	return true
}

// forward copies requests, three lines each, counting their commands.
func (r *cmdCounter) forward(up net.Conn, down *bufio.Reader) {
	for line := 0; ; line++ {
		b, err := down.ReadBytes('\n')
		if err != nil {
			return
		}
		if line%3 == 0 {
			r.mu.Lock()
			r.sent = append(r.sent, sentCmd{string(b[:len(b)-1]), time.Now()})
			r.mu.Unlock()
		}
		if _, err := up.Write(b); err != nil {
			return
		}
	}
}

func (r *cmdCounter) close() {
	_ = r.ln.Close()
	r.mu.Lock()
	r.closed = true
	for _, c := range r.conns {
		_ = c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}

// handedOver queues a stream of c (a lock, or a semaphore of limit 1) on a
// key a clean client holds, has that holder release it, and returns the
// queued stream and what it acquired.
func handedOver(t *testing.T, c *dfstream.Client, addr string, sem bool, opts ...dfstream.StreamOption) (waiting, dfstream.Acquired) {
	t.Helper()
	ctx := context.Background()
	holder := newClient(t, []string{addr})
	key := testKey(t, "k")
	var (
		held interface{ Release(context.Context) error }
		s    waiting
		err  error
	)
	if sem {
		held, err = holder.AcquireSemaphore(ctx, key, 1)
		require.NoError(t, err)
		s, err = c.StartSemaphore(ctx, key, 1, opts...)
	} else {
		held, err = holder.Lock(ctx, key)
		require.NoError(t, err)
		s, err = c.StartLock(ctx, key, opts...)
	}
	require.NoError(t, err)
	nextOf[dfstream.Queued](t, s.Events(), 5*time.Second)
	require.NoError(t, held.Release(ctx))
	return s, nextOf[dfstream.Acquired](t, s.Events(), 10*time.Second)
}

func TestQueuedGrantFromASignalsEraServerIsHeldWithoutARenewal(t *testing.T) {
	t.Parallel()
	for name, sem := range map[string]bool{"lock": false, "semaphore": true} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			srv := dflockdtest.New(t, dflockdtest.Config{})
			relay := newCmdCounter(t, srv.Addr())
			c := newClient(t, []string{relay.Addr()})
			const lease = 20 * time.Second

			s, acq := handedOver(t, c, srv.Addr(), sem, dfstream.WithLease(lease))
			assert.Zero(t, relay.count("n")+relay.count("sn"), "the wait's reply vouches for the grant")
			assert.Equal(t, 1, relay.count("w")+relay.count("sw"))
			assert.True(t, acq.Deadline.After(acq.At))
			assert.False(t, acq.Deadline.After(acq.At.Add(lease)), "the deadline counts from the wait's sending")
			require.NoError(t, s.Release(context.Background()))
		})
	}
}

func TestQueuedGrantFromAServerThatMayHandOverAStaleTokenIsConfirmed(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		srv  dflockdtest.Config
		opts []dfstream.Option
	}{
		// dflockdtest does not hand over stale tokens; the Client, told it
		// talks to 1.10, must not count on that.
		"1.10": {dflockdtest.Config{NoFences: true, PingError: true}, []dfstream.Option{dfstream.WithGeneration(dfstream.Gen110)}},
		"2.x":  {dflockdtest.Config{Generation: dflockdtest.Gen2}, nil},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			srv := dflockdtest.New(t, tc.srv)
			relay := newCmdCounter(t, srv.Addr())
			c := newClient(t, []string{relay.Addr()}, tc.opts...)

			s, acq := handedOver(t, c, srv.Addr(), false)
			assert.Equal(t, 1, relay.count("n"), "the grant is confirmed before it is reported")
			assert.True(t, acq.Deadline.After(acq.At))
			require.NoError(t, s.Release(context.Background()))
		})
	}
}

// The wait's reply comes back after the grant would be due for renewal:
// it is confirmed. With a 5s lease and renew ratio 0.2, the renewal is due
// 1s after the wait was sent and the reply takes 1.5s; the renewal's
// reply, as slow, comes well before the moment to give the grant up
// (4.25s after the renewal was sent), and so do the later renewals'.
func TestQueuedGrantWhoseWaitIsAnsweredLateIsConfirmed(t *testing.T) {
	t.Parallel()
	srv := dflockdtest.New(t, dflockdtest.Config{})
	relay := newCmdCounter(t, srv.Addr())
	link := faultproxy.New(t, relay.Addr())
	link.SetLatency(faultproxy.ToClient, 1500*time.Millisecond)
	c := newClient(t, []string{link.Addr()}, signalsEra)

	s, acq := handedOver(t, c, srv.Addr(), false, dfstream.WithLease(5*time.Second), dfstream.WithRenewRatio(0.2))
	// Renewals go on after Acquired: only the one before it confirms.
	assert.Equal(t, 1, relay.countBefore("n", acq.At), "the late grant is confirmed before it is reported")
	assert.True(t, acq.Deadline.After(acq.At))
	link.SetLatency(faultproxy.ToClient, 0)
	require.NoError(t, s.Release(context.Background()))
}

// A blocking Lock waits in the queue on its caller's goroutine: what ends
// a stream's wait ends that call too.
func TestLockWaitingInTheQueueEndsWhenTheClientCloses(t *testing.T) {
	t.Parallel()
	srv := dflockdtest.New(t, dflockdtest.Config{})
	holder := newClient(t, []string{srv.Addr()})
	key := testKey(t, "k")
	held, err := holder.Lock(context.Background(), key)
	require.NoError(t, err)

	c, err := dfstream.New(dfstream.WithServers(srv.Addr()))
	require.NoError(t, err)
	locked := make(chan error, 1)
	go func() {
		_, err := c.Lock(context.Background(), key, dfstream.WithAcquireTimeout(time.Minute))
		locked <- err
	}()
	require.Eventually(t, func() bool {
		waiters, _ := lockHolder(stats(t, srv.Addr()), key)
		return waiters == 1
	}, 5*time.Second, 20*time.Millisecond)
	require.NoError(t, c.Close())
	select {
	case err := <-locked:
		require.ErrorIs(t, err, dfstream.ErrClosed)
	case <-time.After(5 * time.Second):
		require.FailNow(t, "Lock still waits after Client.Close")
	}
	require.NoError(t, held.Release(context.Background()))
}
