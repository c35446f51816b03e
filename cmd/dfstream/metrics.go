package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/dfstream/dfstream"
	"github.com/dfstream/dfstream/dflockdtest"
	"github.com/dfstream/dfstream/dfprom"
)

// metricsFlag is --metrics-addr, of lock, sem, watch and serve: a
// host:port, checked when the flag is parsed.
type metricsFlag struct{ addr string }

func (m *metricsFlag) String() string {
	if m == nil {
		return ""
	}
	return m.addr
}

func (m *metricsFlag) Set(s string) error {
	if _, _, err := net.SplitHostPort(s); err != nil {
		return errors.New("not a host:port")
	}
	m.addr = s
	return nil
}

func (c *command) addMetricsFlag() *metricsFlag {
	m := &metricsFlag{}
	c.fs.Var(m, "metrics-addr", "serve Prometheus metrics on http://`host:port`/metrics (port 0 picks a free port; the address is printed on stderr)")
	c.bindEnv("metrics-addr", "DFSTREAM_METRICS_ADDR")
	return m
}

// client starts the metrics endpoint, when --metrics-addr is given, and
// returns the Client options that feed it and the function that stops it.
func (m *metricsFlag) client(stderr io.Writer) ([]dfstream.Option, func(), error) {
	if m.addr == "" {
		return nil, func() {}, nil
	}
	reg := newRegistry()
	mt, err := dfprom.New(dfprom.WithRegisterer(reg))
	if err != nil {
		return nil, nil, err
	}
	stop, err := m.serve(reg, stderr)
	if err != nil {
		return nil, nil, err
	}
	return []dfstream.Option{mt.Option()}, stop, nil
}

// server starts the metrics endpoint of serve, when --metrics-addr is
// given, exporting the state of the servers nodes returns.
func (m *metricsFlag) server(stderr io.Writer, nodes func() []*dflockdtest.Server) (func(), error) {
	if m.addr == "" {
		return func() {}, nil
	}
	reg := newRegistry()
	reg.MustRegister(serverCollector{nodes})
	return m.serve(reg, stderr)
}

// newRegistry returns a registry with the Go runtime and process metrics
// every Prometheus target is expected to have.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// serve listens on the flag's address, says where on stderr, and serves
// reg's /metrics until the returned function is called.
func (m *metricsFlag) serve(reg *prometheus.Registry, stderr io.Writer) (func(), error) {
	ln, err := net.Listen("tcp", m.addr)
	if err != nil {
		return nil, exitWith(exitUnavailable, fmt.Errorf("--metrics-addr: %w", err))
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintf(stderr, "dfstream: metrics: %v\n", err)
		}
	}()
	fmt.Fprintf(stderr, "dfstream: metrics on http://%s/metrics\n", ln.Addr())
	return func() {
		// A scrape in flight may finish; a stuck one must not hold the
		// process up.
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if srv.Shutdown(ctx) != nil {
			_ = srv.Close()
		}
		<-done
	}, nil
}

// serverCollector exports the embedded servers' own state, read from their
// Stats and Conns at each scrape.
type serverCollector struct {
	nodes func() []*dflockdtest.Server
}

var (
	serverConnsDesc = prometheus.NewDesc("dfstream_server_connections",
		"Open client connections.", []string{"server"}, nil)
	serverKeysDesc = prometheus.NewDesc("dfstream_server_keys",
		"Keys the server knows, by kind (lock, semaphore) and state (held, idle).", []string{"server", "kind", "state"}, nil)
	serverWaitersDesc = prometheus.NewDesc("dfstream_server_waiters",
		"Requests waiting in the keys' queues, by kind.", []string{"server", "kind"}, nil)
	serverSubsDesc = prometheus.NewDesc("dfstream_server_subscriptions",
		"Signal subscriptions (listen registrations) of the open connections.", []string{"server"}, nil)
)

// Describe implements prometheus.Collector.
func (serverCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{serverConnsDesc, serverKeysDesc, serverWaitersDesc, serverSubsDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c serverCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, s := range c.nodes() {
		addr := s.Addr()
		st := s.Stats()
		conns := s.Conns()
		subs := 0
		for _, ci := range conns {
			subs += len(ci.Subscriptions)
		}
		gauge(serverConnsDesc, float64(len(conns)), addr)
		gauge(serverSubsDesc, float64(subs), addr)
		for _, k := range []struct{ kind, held, idle string }{
			{"lock", "locks", "idle_locks"},
			{"semaphore", "semaphores", "idle_semaphores"},
		} {
			held, _ := st[k.held].([]any)
			idle, _ := st[k.idle].([]any)
			waiters := 0.0
			for _, e := range held {
				if m, ok := e.(map[string]any); ok {
					w, _ := m["waiters"].(float64)
					waiters += w
				}
			}
			gauge(serverKeysDesc, float64(len(held)), addr, k.kind, "held")
			gauge(serverKeysDesc, float64(len(idle)), addr, k.kind, "idle")
			gauge(serverWaitersDesc, waiters, addr, k.kind)
		}
	}
}
