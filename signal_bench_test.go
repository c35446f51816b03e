package dfstream_test

import (
	"bufio"
	"context"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dfstream/dfstream"
	"github.com/dfstream/dfstream/dflockdtest"
	"github.com/dfstream/dfstream/wire"
)

// The end-to-end signal benchmarks send signals from one emitter through a
// dflockdtest server to one listener: a Router handler, or a bare socket
// that parses sig lines itself (the floor). Run them side by side:
//
//	go test -run '^$' -bench 'Signal(Router|Raw)E2E' -benchtime 200000x -count 5 .
//
// The emitter pipelines its signal requests but keeps at most a window of
// signals sent and not yet received: 32 (throughput; the latency then
// includes the queueing of the window), well below the 64-line push queue
// the server keeps per connection, or 1 (latency of one signal at a time).
// Below the server's limits no signal may be lost (the benchmark fails if
// one is). Each payload carries its send time, so the listener measures the
// latency to the handler.

// e2eListener starts a listener for channel that calls got with each
// payload, and returns a function that stops it.
type e2eListener func(b *testing.B, addr, channel string, got func(payload string)) (stop func())

func BenchmarkSignalRouterE2E(b *testing.B) {
	benchE2E(b, func(b *testing.B, addr, channel string, got func(string)) func() {
		c, err := dfstream.New(dfstream.WithServers(addr))
		if err != nil {
			b.Fatal(err)
		}
		r, err := dfstream.NewRouter(c)
		if err != nil {
			b.Fatal(err)
		}
		if err := r.HandleFunc(channel, func(_ context.Context, sig dfstream.Signal) error {
			got(sig.Payload)
			return nil
		}); err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		ran := make(chan error, 1)
		go func() { ran <- r.Run(ctx) }()
		select {
		case <-r.Ready():
		case err := <-ran:
			b.Fatal(err)
		}
		return func() {
			cancel()
			if err := <-ran; err != nil {
				b.Error(err)
			}
			if d := r.Stats().Dropped; d != 0 {
				b.Errorf("router dropped %d signals", d)
			}
			_ = c.Close()
		}
	})
}

func BenchmarkSignalRawE2E(b *testing.B) {
	benchE2E(b, func(b *testing.B, addr, channel string, got func(string)) func() {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		rd := bufio.NewReader(nc)
		if _, err := nc.Write([]byte("listen\n" + channel + "\n\n")); err != nil {
			b.Fatal(err)
		}
		if line, err := rd.ReadString('\n'); err != nil || line != "ok\n" {
			b.Fatalf("listen: %q %v", line, err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				line, err := rd.ReadString('\n')
				if err != nil {
					return
				}
				rest, ok := strings.CutPrefix(line[:len(line)-1], "sig ")
				if !ok {
					continue
				}
				if _, payload, ok := strings.Cut(rest, " "); ok {
					got(payload)
				}
			}
		}()
		return func() {
			_ = nc.Close()
			<-done
		}
	})
}

func benchE2E(b *testing.B, listen e2eListener) {
	for _, window := range []int{32, 1} {
		b.Run("window="+strconv.Itoa(window), func(b *testing.B) { benchE2EWindow(b, listen, window) })
	}
}

func benchE2EWindow(b *testing.B, listen e2eListener, window int) {
	srv := dflockdtest.New(b, dflockdtest.Config{})
	const channel = "bench.e2e"
	credits := make(chan struct{}, window)
	lat := make([]int64, b.N)
	var received atomic.Int64
	stop := listen(b, srv.Addr(), channel, func(payload string) {
		sent, err := strconv.ParseInt(payload, 10, 64)
		if err != nil {
			b.Errorf("payload %q", payload)
			return
		}
		if i := received.Add(1) - 1; int(i) < len(lat) {
			lat[i] = time.Now().UnixNano() - sent
		}
		<-credits
	})
	defer stop()

	emitter, err := (&wire.Dialer{}).Dial(context.Background(), srv.Addr())
	if err != nil {
		b.Fatal(err)
	}
	defer emitter.Close()
	calls := make(chan *wire.Call, window)
	var refused atomic.Int64
	replies := make(chan struct{})
	go func() { // checks the replies, in order
		defer close(replies)
		for call := range calls {
			line, err := call.Result()
			if err == nil {
				var n int
				if n, err = wire.ParseSignalReply(line); err == nil && n != 1 {
					refused.Add(1) // the server's push queue was full
					<-credits
				}
			}
			if err != nil {
				b.Error(err)
				return
			}
		}
	}()

	b.ResetTimer()
	start := time.Now()
	for range b.N {
		credits <- struct{}{}
		req, err := wire.Signal(channel, strconv.FormatInt(time.Now().UnixNano(), 10))
		if err != nil {
			b.Fatal(err)
		}
		call, err := emitter.Go(req)
		if err != nil {
			b.Fatal(err)
		}
		calls <- call
	}
	close(calls)
	<-replies
	deadline := time.Now().Add(10 * time.Second)
	for received.Load()+refused.Load() < int64(b.N) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Microsecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()

	got := received.Load()
	if lost := int64(b.N) - got - refused.Load(); lost != 0 {
		b.Errorf("%d of %d signals lost (%d refused by the server)", lost, b.N, refused.Load())
	}
	if r := refused.Load(); r != 0 {
		b.Logf("the server refused %d of %d copies (push queue full)", r, b.N)
	}
	b.ReportMetric(float64(got)/elapsed.Seconds(), "signals/s")
	if got > 0 {
		l := slices.Clone(lat[:min(int(got), len(lat))])
		slices.Sort(l)
		b.ReportMetric(float64(l[len(l)/2])/1e3, "p50-µs")
		b.ReportMetric(float64(l[len(l)*99/100])/1e3, "p99-µs")
	}
	b.ReportMetric(float64(refused.Load()), "refused")
}
