package dfstream_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dfstream/dfstream"
	"github.com/dfstream/dfstream/dflockdtest"
	"github.com/dfstream/dfstream/dfprom"
)

// The lock-cycle benchmarks run side by side against one dflockdtest
// server: the bare-socket cycle is the floor the streams are measured
// against (see the README for the ratios).
//
// A stream is one lock's life, so its cycle on a connection that is
// already open is its full life with the pool warm (LockStreamCycle/pooled:
// Lock, Wait, Release, Done, no dial); LockStreamCycle/nopool dials and
// closes a connection for every life, like RawWireCycle/dial.
//
// Run them interleaved: every dial leaves a socket in TIME_WAIT, and
// tens of thousands of those slow the kernel's connect down, so a plain
// -count=10 (which runs one benchmark ten times, then the next) favours
// whichever dials first.
//
//	for i in $(seq 10); do go test -run='^$' -bench='RawWireCycle|LockStreamCycle' -count=1 .; done | benchstat -

func BenchmarkRawWireCycle(b *testing.B) {
	srv := dflockdtest.New(b, dflockdtest.Config{})
	b.Run("open", func(b *testing.B) {
		conn, rd := rawDial(b, srv.Addr())
		defer conn.Close()
		b.ResetTimer()
		for range b.N {
			rawCycle(b, conn, rd, "bench/raw-open")
		}
	})
	b.Run("dial", func(b *testing.B) {
		for range b.N {
			conn, rd := rawDial(b, srv.Addr())
			rawCycle(b, conn, rd, "bench/raw-dial")
			_ = conn.Close()
		}
	})
}

// The observed cases are LockStreamCycle/pooled with an Observer: a
// NopObserver (the cost of the calls alone) and dfprom's Metrics.
func BenchmarkLockStreamCycle(b *testing.B) {
	srv := dflockdtest.New(b, dflockdtest.Config{})
	m, err := dfprom.New(dfprom.WithRegisterer(prometheus.NewRegistry()))
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		pool int
		obs  dfstream.Observer
	}{
		{"pooled", dfstream.DefaultPoolSize, nil},
		{"nopool", 0, nil},
		{"pooled-nopobserver", dfstream.DefaultPoolSize, dfstream.NopObserver{}},
		{"pooled-prometheus", dfstream.DefaultPoolSize, m},
	} {
		b.Run(bc.name, func(b *testing.B) {
			benchStreamCycles(b, dfstream.WithServers(srv.Addr()), dfstream.WithPoolSize(bc.pool), dfstream.WithObserver(bc.obs))
		})
	}
}

// benchStreamCycles measures streamCycle on a Client made with opts, its
// pool warmed first.
func benchStreamCycles(b *testing.B, opts ...dfstream.Option) {
	c, err := dfstream.New(opts...)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	streamCycle(b, c, ctx) // warms the pool
	b.ResetTimer()
	for range b.N {
		streamCycle(b, c, ctx)
	}
}

// streamCycle is a stream's full life: start, acquire, release, end.
func streamCycle(b *testing.B, c *dfstream.Client, ctx context.Context) {
	s, err := c.StartLock(ctx, "bench/stream")
	if err != nil {
		b.Fatal(err)
	}
	if _, err := s.Wait(ctx); err != nil {
		b.Fatal(err)
	}
	if err := s.Release(ctx); err != nil {
		b.Fatal(err)
	}
	<-s.Done()
}

func rawDial(b *testing.B, addr string) (net.Conn, *bufio.Reader) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	return conn, bufio.NewReader(conn)
}

// rawCycle is e + r on a bare socket: the least any client can do.
func rawCycle(b *testing.B, conn net.Conn, rd *bufio.Reader, key string) {
	if _, err := fmt.Fprintf(conn, "e\n%s\n\n", key); err != nil {
		b.Fatal(err)
	}
	line, err := rd.ReadString('\n')
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(line)
	if len(f) < 3 || f[0] != "acquired" {
		b.Fatalf("enqueue: %q", line)
	}
	if _, err := fmt.Fprintf(conn, "r\n%s\n%s\n", key, f[1]); err != nil {
		b.Fatal(err)
	}
	if line, err = rd.ReadString('\n'); err != nil || line != "ok\n" {
		b.Fatalf("release: %q %v", line, err)
	}
}

// BenchmarkDropToLost measures how soon a held stream reports Lost after
// the server drops its connection: the hang-up watch's figure, which the
// tests only bound loosely (see dropBound). "watched" drops a connection
// the watch has taken on; "unwatched" drops it at once after the grant,
// before the watch starts (watchDelay), as a lock held briefly would see.
// The metric is ms/drop; the lease puts the first renewal far away.
//
//	go test -run='^$' -bench=DropToLost -benchtime=50x -count=10 . | benchstat -
func BenchmarkDropToLost(b *testing.B) {
	for _, bc := range []struct {
		name string
		held time.Duration
	}{{"watched", 50 * time.Millisecond}, {"unwatched", 0}} {
		b.Run(bc.name, func(b *testing.B) {
			srv := dflockdtest.New(b, dflockdtest.Config{ReadTimeout: time.Minute})
			c, err := dfstream.New(dfstream.WithServers(srv.Addr()), dfstream.WithServerReadTimeout(time.Minute))
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			var total time.Duration
			for range b.N {
				total += dropToLost(b, c, srv, bc.held)
			}
			b.ReportMetric(float64(total)/float64(b.N)/float64(time.Millisecond), "ms/drop")
		})
	}
}

// dropToLost acquires a lock, holds it for held, drops every connection
// and returns how long Lost took to come.
func dropToLost(b *testing.B, c *dfstream.Client, srv *dflockdtest.Server, held time.Duration) time.Duration {
	s, err := c.Lock(context.Background(), "bench/drop", dfstream.WithLease(time.Minute))
	if err != nil {
		b.Fatal(err)
	}
	time.Sleep(held)
	dropped := time.Now()
	srv.DropConnections()
	for ev := range s.Events() {
		if lost, ok := ev.(dfstream.Lost); ok {
			<-s.Done()
			return lost.At.Sub(dropped)
		}
	}
	b.Fatalf("no Lost: %v", s.Err())
	return 0
}
