//go:build unix

package dfstream_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dfstream/dfstream"
	"github.com/dfstream/dfstream/dflockdtest"
)

// The contention benchmarks of issue 11, run side by side against one
// dflockdtest server. HandoffRaw is the floor: bare sockets sending what
// a careful client must send (e, then w when queued, then r). b.N is the
// number of handoffs across all goroutines, so ns/op is the mean time per
// handoff. HeldFill reports acq/s for 10,000 distinct keys acquired and
// held by 32 goroutines. Run them interleaved:
//
//	for i in $(seq 4); do go test -run='^$' -bench='Handoff|HeldFill' -benchtime=1s -count=1 .; done | benchstat -
//
// They are Unix only: HeldFill needs some 20,000 descriptors (see
// heldFillKeys).

// handoffCase is one contention shape: workers goroutines on one key with
// limit slots (limit 1 is a lock: e/w/r rather than se/sw/sr).
type handoffCase struct {
	name    string
	workers int
	limit   int
}

var handoffCases = []handoffCase{{"lock", 8, 1}, {"sem", 16, 4}}

func BenchmarkHandoffRaw(b *testing.B) {
	srv := dflockdtest.New(b, dflockdtest.Config{})
	for _, hc := range handoffCases {
		b.Run(hc.name, func(b *testing.B) {
			conns := make([]rawSock, hc.workers)
			for i := range conns {
				conns[i] = newRawSock(b, srv.Addr())
				defer conns[i].conn.Close()
			}
			key := "bench/handoff-raw-" + hc.name
			runHandoffs(b, hc.workers, func(i int) error {
				tok, err := conns[i].acquire(key, hc.limit)
				if err != nil {
					return err
				}
				return conns[i].release(key, tok, hc.limit)
			})
		})
	}
}

func BenchmarkHandoffStream(b *testing.B) {
	srv := dflockdtest.New(b, dflockdtest.Config{})
	for _, hc := range handoffCases {
		b.Run(hc.name, func(b *testing.B) {
			// One pooled connection per goroutine, as the raw side has.
			c, err := dfstream.New(dfstream.WithServers(srv.Addr()), dfstream.WithPoolSize(hc.workers))
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			ctx := context.Background()
			key := "bench/handoff-stream-" + hc.name
			runHandoffs(b, hc.workers, func(int) error {
				return streamHandoff(ctx, c, key, hc.limit)
			})
		})
	}
}

// streamHandoff is one acquire and release through the public API.
func streamHandoff(ctx context.Context, c *dfstream.Client, key string, limit int) error {
	var (
		s interface {
			Release(context.Context) error
			Done() <-chan struct{}
		}
		err error
	)
	if limit == 1 {
		s, err = c.Lock(ctx, key)
	} else {
		s, err = c.AcquireSemaphore(ctx, key, limit)
	}
	if err != nil {
		return err
	}
	if err := s.Release(ctx); err != nil {
		return err
	}
	<-s.Done()
	return nil
}

// runHandoffs runs b.N handoffs over workers goroutines: each takes a
// ticket before every cycle, so the total is b.N whoever runs them.
func runHandoffs(b *testing.B, workers int, cycle func(worker int) error) {
	var (
		tickets atomic.Int64
		wg      sync.WaitGroup
		errs    = make(chan error, workers)
	)
	n := int64(b.N)
	b.ResetTimer()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for tickets.Add(1) <= n {
				if err := cycle(w); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}

// rawSock is a bare socket with the least parsing a client can do.
type rawSock struct {
	conn net.Conn
	rd   *bufio.Reader
}

func newRawSock(b *testing.B, addr string) rawSock {
	conn, rd := rawDial(b, addr)
	return rawSock{conn, rd}
}

// call sends one request and returns its reply line without the LF.
func (r rawSock) call(cmd, key, arg string) (string, error) {
	if _, err := fmt.Fprintf(r.conn, "%s\n%s\n%s\n", cmd, key, arg); err != nil {
		return "", err
	}
	line, err := r.rd.ReadString('\n')
	return strings.TrimSuffix(line, "\n"), err
}

// acquire sends e (se), then w (sw) if queued, and returns the token.
func (r rawSock) acquire(key string, limit int) (string, error) {
	enq, wait, arg := "e", "w", ""
	if limit > 1 {
		enq, wait, arg = "se", "sw", fmt.Sprint(limit)
	}
	line, err := r.call(enq, key, arg)
	if err != nil {
		return "", err
	}
	want := "acquired"
	if line == "queued" {
		if line, err = r.call(wait, key, "60"); err != nil {
			return "", err
		}
		want = "ok"
	}
	f := strings.Fields(line)
	if len(f) < 3 || f[0] != want {
		return "", fmt.Errorf("acquire %s: %q", key, line)
	}
	return f[1], nil
}

func (r rawSock) release(key, token string, limit int) error {
	cmd := "r"
	if limit > 1 {
		cmd = "sr"
	}
	line, err := r.call(cmd, key, token)
	if err == nil && line != "ok" {
		err = fmt.Errorf("release %s: %q", key, line)
	}
	return err
}

const (
	heldKeys    = 10_000
	heldWorkers = 32
)

// BenchmarkHeldFill acquires heldKeys distinct keys (or as many as the
// descriptor limit allows) from heldWorkers
// goroutines and keeps them all held until the fill is over; one op is one
// fill, and acq/s is the rate across fills. "raw" dials one socket per key
// and sends e; "stream" calls Lock. The release and close after
// each fill are not timed.
func BenchmarkHeldFill(b *testing.B) {
	keys := heldFillKeys(b)
	for _, bc := range []struct {
		name string
		fill func(b *testing.B, addr string, keys int) (cleanup func())
	}{{"raw", rawFill}, {"stream", streamFill}} {
		b.Run(bc.name, func(b *testing.B) {
			srv := dflockdtest.New(b, dflockdtest.Config{MaxLocks: 2 * heldKeys})
			var filling time.Duration
			b.ResetTimer()
			for range b.N {
				start := time.Now()
				cleanup := bc.fill(b, srv.Addr(), keys)
				filling += time.Since(start)
				b.StopTimer()
				cleanup()
				b.StartTimer()
			}
			b.ReportMetric(float64(keys*b.N)/filling.Seconds(), "acq/s")
		})
	}
}

// fillKeys runs acquire for every key over heldWorkers goroutines and
// fails b on the first error.
func fillKeys(b *testing.B, keys int, acquire func(i int, key string) error) {
	var (
		next  atomic.Int64
		wg    sync.WaitGroup
		first atomic.Value
	)
	for range heldWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1)) - 1; i < keys; i = int(next.Add(1)) - 1 {
				if err := acquire(i, fmt.Sprintf("bench/held-%d", i)); err != nil {
					first.CompareAndSwap(nil, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err, ok := first.Load().(error); ok {
		b.Fatal(err)
	}
}

func rawFill(b *testing.B, addr string, keys int) func() {
	conns := make([]net.Conn, keys)
	cleanup := func() {
		for _, c := range conns {
			if c != nil {
				_ = c.Close()
			}
		}
	}
	defer func() {
		if b.Failed() {
			cleanup()
		}
	}()
	fillKeys(b, keys, func(i int, key string) error {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			return err
		}
		conns[i] = conn
		rc := rawSock{conn, bufio.NewReader(conn)}
		line, err := rc.call("e", key, "")
		if err == nil && !strings.HasPrefix(line, "acquired ") {
			err = fmt.Errorf("enqueue %s: %q", key, line)
		}
		return err
	})
	return cleanup
}

func streamFill(b *testing.B, addr string, keys int) func() {
	c, err := dfstream.New(dfstream.WithServers(addr))
	if err != nil {
		b.Fatal(err)
	}
	streams := make([]*dfstream.LockStream, keys)
	cleanup := func() {
		for _, s := range streams {
			if s != nil {
				_ = s.Close()
				<-s.Done()
			}
		}
		_ = c.Close()
	}
	defer func() {
		if b.Failed() {
			cleanup()
		}
	}()
	ctx := context.Background()
	fillKeys(b, keys, func(i int, key string) error {
		s, err := c.Lock(ctx, key)
		streams[i] = s
		return err
	})
	return cleanup
}

// heldFillKeys raises the soft descriptor limit to the hard one and
// returns how many keys fit: both ends of every held connection live in
// this process, with some room left for everything else. Without the
// privilege to raise the hard limit, a hard limit of 20,000 leaves
// slightly fewer than heldKeys, which the benchmark logs.
func heldFillKeys(b *testing.B) int {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatal(err)
	}
	const spare = 256
	if want := uint64(2*heldKeys + spare); lim.Max < want {
		raised := lim
		raised.Max, raised.Cur = want, want // needs CAP_SYS_RESOURCE
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised) == nil {
			return heldKeys
		}
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatal(err)
	}
	n := min(heldKeys, int(lim.Cur-spare)/2)
	if n < heldWorkers {
		b.Skipf("ulimit -n %d is too low for HeldFill", lim.Cur)
	}
	if n < heldKeys {
		b.Logf("ulimit -n %d: filling %d keys, not %d", lim.Cur, n, heldKeys)
	}
	return n
}
