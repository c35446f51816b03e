package dflockdtest

import (
	"bufio"
	"bytes"
	"net"
	"strconv"
	"testing"
	"time"
)

func benchDial(b *testing.B, s *Server) (net.Conn, *bufio.Reader) {
	b.Helper()
	nc, err := net.Dial("tcp", s.Addr())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = nc.Close() })
	return nc, bufio.NewReader(nc)
}

// BenchmarkServerLockCycle: one raw TCP connection doing `l k 0` then
// `r k <token>` per op (two round trips).
func BenchmarkServerLockCycle(b *testing.B) {
	s := New(b, Config{})
	nc, br := benchDial(b, s)
	lreq := []byte("l\nk\n0\n")
	rreq := make([]byte, 0, 64)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if _, err := nc.Write(lreq); err != nil {
			b.Fatal(err)
		}
		line, err := br.ReadSlice('\n')
		if err != nil {
			b.Fatal(err)
		}
		if len(line) < 3+32 || !bytes.HasPrefix(line, []byte("ok ")) {
			b.Fatalf("grant: %q", line)
		}
		rreq = append(append(append(rreq[:0], "r\nk\n"...), line[3:3+32]...), '\n')
		if _, err := nc.Write(rreq); err != nil {
			b.Fatal(err)
		}
		line, err = br.ReadSlice('\n')
		if err != nil {
			b.Fatal(err)
		}
		if string(line) != "ok\n" {
			b.Fatalf("release: %q", line)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "cycles/s")
}

// BenchmarkServerSignalFanout: one emitter, four raw listeners each reading
// every sig line; per op one signal is emitted, answered `ok 4`, and
// received by all four listeners.
func BenchmarkServerSignalFanout(b *testing.B) {
	const listeners = 4
	s := New(b, Config{})
	got := make(chan struct{}, listeners*128)
	errc := make(chan error, listeners)
	var lconns []net.Conn
	for i := 0; i < listeners; i++ {
		nc, br := benchDial(b, s)
		lconns = append(lconns, nc)
		if _, err := nc.Write([]byte("listen\nbench.>\n\n")); err != nil {
			b.Fatal(err)
		}
		if l, err := br.ReadString('\n'); err != nil || l != "ok\n" {
			b.Fatalf("listen: %q %v", l, err)
		}
		go func() {
			for {
				line, err := br.ReadSlice('\n')
				if err != nil {
					errc <- err
					return
				}
				if !bytes.HasPrefix(line, []byte("sig bench.x ")) {
					errc <- &net.AddrError{Err: "unexpected line " + strconv.Quote(string(line))}
					return
				}
				got <- struct{}{}
			}
		}()
	}
	em, ebr := benchDial(b, s)
	req := []byte("signal\nbench.x\npayload\n")
	want := "ok " + strconv.Itoa(listeners) + "\n"
	stuck := time.NewTimer(time.Hour)
	defer stuck.Stop()
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		stuck.Reset(5 * time.Second)
		if _, err := em.Write(req); err != nil {
			b.Fatal(err)
		}
		line, err := ebr.ReadSlice('\n')
		if err != nil {
			b.Fatal(err)
		}
		if string(line) != want {
			b.Fatalf("signal: %q", line)
		}
		for j := 0; j < listeners; j++ {
			select {
			case <-got:
			case err := <-errc:
				b.Fatal(err)
			case <-stuck.C:
				b.Fatal("a listener did not receive the signal")
			}
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "signals/s")
	b.StopTimer()
	for _, nc := range lconns {
		_ = nc.Close()
	}
	for j := 0; j < listeners; j++ {
		<-errc // the reader goroutines end on the closed connections
	}
}
