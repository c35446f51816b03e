// Command metrics-worker runs a worker with Prometheus metrics: it holds the
// lock "role/leader", handles jobs on "jobs.>" with a Router, and serves
// what its Client does on /metrics (dfprom). At the end it scrapes its own
// endpoint over HTTP and prints the dfstream_ lines of the scrape (without
// the histogram buckets).
//
//	go run ./examples/metrics-worker                    # embedded server
//	go run ./examples/metrics-worker -servers host:6388 # a dflockd server
package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/dfstream/dfstream"
	"github.com/dfstream/dfstream/dfprom"
	"github.com/dfstream/dfstream/examples/internal/embedded"
)

const jobs = 10

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run() error {
	addrs, stop := embedded.Servers()
	defer stop()

	// The registry and the endpoint. In a service: the address of a flag,
	// and the registry the service's other metrics use.
	reg := prometheus.NewRegistry()
	metrics, err := dfprom.New(dfprom.WithRegisterer(reg))
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	url := "http://" + ln.Addr().String() + "/metrics"
	fmt.Println("metrics on", url)

	c, err := dfstream.New(dfstream.WithServers(addrs...), metrics.Option())
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// The worker's duty: hold the role, and handle every job.
	leader, err := c.Lock(ctx, "role/leader", dfstream.WithLease(2*time.Second))
	if err != nil {
		return err
	}
	var done sync.WaitGroup
	done.Add(jobs)
	r, err := dfstream.NewRouter(c)
	if err != nil {
		return err
	}
	err = r.HandleFunc("jobs.>", func(_ context.Context, sig dfstream.Signal) error {
		defer done.Done()
		time.Sleep(2 * time.Millisecond) // the work
		if strings.HasSuffix(sig.Payload, "7") {
			return errors.New("job 7 always fails")
		}
		return nil
	})
	if err != nil {
		return err
	}
	runCtx, stopRouter := context.WithCancel(ctx)
	defer stopRouter()
	ran := make(chan error, 1)
	go func() { ran <- r.Run(runCtx) }()
	select {
	case <-r.Ready():
	case err := <-ran:
		return err
	}
	for i := range jobs {
		if _, err := c.Emit(ctx, "jobs.build", fmt.Sprint(i)); err != nil {
			return err
		}
	}
	done.Wait()
	stopRouter()
	if err := <-ran; err != nil {
		return err
	}
	if err := leader.Release(ctx); err != nil {
		return err
	}

	return printScrape(ctx, url)
}

// printScrape prints the dfstream_ series of a scrape of url, buckets left
// out.
func printScrape(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "dfstream_") && !strings.Contains(line, "_bucket{") {
			fmt.Println(line)
		}
	}
	return sc.Err()
}
