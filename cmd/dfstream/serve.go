package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/dfstream/dfstream"
	"github.com/dfstream/dfstream/dflockdtest"
)

func runServe(args []string, e *env) error {
	c := newCommand("serve", "[flags]",
		"Run the embedded dflockd-compatible server (locks, semaphores, signals, stats)\n"+
			"until SIGINT or SIGTERM. It prints one line saying where it listens; with\n"+
			"--addr host:0 that line carries the port picked. A second signal stops at once.\n"+
			"--generation 2 speaks dflockd 2.x instead of the signals era: tokens carry\n"+
			"their fence, no signals, barrier and stable-ref. --cluster N runs N 2.x nodes\n"+
			"sharing one lock table on consecutive ports from --addr's (node0 leads), one\n"+
			"line per node.",
		"  dfstream serve --addr 0.0.0.0:6388 --default-lease 30s --auth-token-file /etc/dfstream/token\n"+
			"  dfstream serve --generation 2\n"+
			"  dfstream serve --cluster 3 --addr 127.0.0.1:7000",
		exitCodesServe, e.stdout)
	fs := c.fs
	addr := fs.String("addr", dfstream.DefaultServer, "`host:port` to listen on (port 0 picks a free port)")
	var lease, readTimeout, drain time.Duration
	c.durationVar(&lease, "default-lease", 33*time.Second, "lease (a `duration`) of requests that do not ask for one")
	c.durationVar(&readTimeout, "read-timeout", dfstream.DefaultServerReadTimeout, "drop connections idle for this `duration`")
	maxLocks := fs.Int("max-locks", 1024, "most keys at once")
	maxWaiters := fs.Int("max-waiters", 0, "most waiters per key (0: unlimited)")
	maxConns := fs.Int("max-connections", 0, "most connections at once (0: unlimited)")
	maxSubs := fs.Int("max-subscriptions", 0, "most signal subscriptions (0: unlimited)")
	c.durationVar(&drain, "shutdown-drain", 5*time.Second, "on SIGINT/SIGTERM, the `duration` open connections may go on")
	cert := fs.String("tls-cert", "", "PEM server certificate `file` (with --tls-key; turns TLS on)")
	key := fs.String("tls-key", "", "PEM server key `file`")
	auth := c.addAuthFlags()
	metrics := c.addMetricsFlag()
	generation := fs.String("generation", "", "protocol generation: signals (1.11-1.16, the default) or 2 (dflockd 2.x)")
	clusterNodes := fs.Int("cluster", 0, "run this many 2.x cluster `nodes` on consecutive ports (0: one server)")
	verbose := fs.Bool("v", false, "debug logs on stderr")
	c.bindEnv("addr", "DFSTREAM_ADDR")
	// Not DFSTREAM_TLS_CERT/KEY: those are the client certificate of the
	// other commands, and one shell may well run both.
	c.bindEnv("tls-cert", "DFSTREAM_SERVE_TLS_CERT")
	c.bindEnv("tls-key", "DFSTREAM_SERVE_TLS_KEY")

	pos, rest, dashdash, err := c.parse(args)
	if err != nil {
		return err
	}
	if len(pos) > 0 || dashdash || len(rest) > 0 {
		return usagef("serve takes no arguments (see dfstream serve --help)")
	}
	switch {
	case lease < time.Second:
		return usagef("--default-lease must be at least 1s")
	case readTimeout <= 0:
		return usagef("--read-timeout must be positive")
	case *maxLocks < 1:
		return usagef("--max-locks must be at least 1")
	case *maxWaiters < 0 || *maxConns < 0 || *maxSubs < 0:
		return usagef("--max-waiters, --max-connections and --max-subscriptions must not be negative")
	case *clusterNodes < 0 || *clusterNodes > maxClusterNodes:
		return usagef("--cluster takes 1 to %d nodes", maxClusterNodes)
	}
	gen, err := parseGeneration(*generation)
	if err != nil {
		return err
	}
	if *clusterNodes > 0 {
		if *generation != "" && gen != dflockdtest.Gen2 {
			return usagef("--cluster runs 2.x nodes; it does not go with --generation %s", *generation)
		}
		gen = dflockdtest.Gen2
	}
	tok, err := auth.resolve()
	if err != nil {
		return err
	}
	log := newLogger(*verbose, e.stderr)
	cfg := dflockdtest.Config{
		Addr:             *addr,
		DefaultLease:     lease,
		ReadTimeout:      readTimeout,
		MaxLocks:         *maxLocks,
		MaxWaiters:       *maxWaiters,
		MaxConnections:   *maxConns,
		MaxSubscriptions: *maxSubs,
		AuthToken:        tok,
		ShutdownDrain:    drain,
		Logger:           &log,
		Generation:       gen,
	}
	if drain <= 0 {
		cfg.ShutdownDrain = -1
	}
	if *cert != "" || *key != "" {
		if *cert == "" || *key == "" {
			return usagef("--tls-cert and --tls-key go together")
		}
		pair, err := tls.LoadX509KeyPair(*cert, *key)
		if err != nil {
			return usagef("TLS certificate: %v", err)
		}
		// The embedded server does not verify client certificates.
		cfg.TLS = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pair}}
	}

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)

	scheme := "tcp"
	if cfg.TLS != nil {
		scheme = "tls"
	}
	if tok != "" {
		scheme += ", auth required"
	}
	if gen == dflockdtest.Gen2 {
		scheme += ", 2.x"
	}
	var srv interface{ Shutdown(context.Context) error }
	var nodes func() []*dflockdtest.Server // read at each scrape
	if *clusterNodes > 0 {
		cl, err := startCluster(cfg, *clusterNodes)
		if err != nil {
			return exitWith(exitUnavailable, fmt.Errorf("serve: %w", lib(err)))
		}
		for i, a := range cl.Addrs() {
			role := "follower"
			if i == cl.Leader() {
				role = "leader"
			}
			fmt.Fprintf(e.stdout, "dfstream: node%d listening on %s (%s, %s)\n", i, a, scheme, role)
		}
		srv = cl
		nodes = func() []*dflockdtest.Server {
			out := make([]*dflockdtest.Server, cl.Nodes())
			for i := range out {
				out[i] = cl.Node(i)
			}
			return out
		}
	} else {
		s, err := dflockdtest.Start(cfg)
		if err != nil {
			return exitWith(exitUnavailable, fmt.Errorf("serve: %w", lib(err)))
		}
		fmt.Fprintf(e.stdout, "dfstream: listening on %s (%s)\n", s.Addr(), scheme)
		srv = s
		nodes = func() []*dflockdtest.Server { return []*dflockdtest.Server{s} }
	}
	stopMetrics, err := metrics.server(e.stderr, nodes)
	if err != nil {
		_ = srv.Shutdown(context.Background())
		return err
	}
	defer stopMetrics()

	sig := <-sigs
	sayDraining(e.stderr, sig, nodes(), drain)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case sig := <-sigs: // a second signal: stop now
			fmt.Fprintf(e.stderr, "dfstream: %v again: closing the open connections now\n", sig)
			cancel()
		case <-ctx.Done():
		}
	}()
	if err := srv.Shutdown(ctx); err != nil && ctx.Err() == nil {
		return exitWith(exitFailure, fmt.Errorf("serve: shutdown: %w", err))
	}
	fmt.Fprintln(e.stderr, "dfstream: stopped")
	return nil
}

// sayDraining tells, on a shutdown signal, what serve does before it exits:
// a drain with open connections can take a while, and a silent wait reads
// as a hang.
func sayDraining(w io.Writer, sig os.Signal, nodes []*dflockdtest.Server, drain time.Duration) {
	conns := 0
	for _, n := range nodes {
		conns += len(n.Conns())
	}
	if drain <= 0 || conns == 0 {
		fmt.Fprintf(w, "dfstream: %v: shutting down\n", sig)
		return
	}
	what := "1 open connection"
	if conns > 1 {
		what = strconv.Itoa(conns) + " open connections"
	}
	fmt.Fprintf(w, "dfstream: %v: shutting down: no new connections; waiting up to %v for %s to close (signal again to close now)\n",
		sig, drain, what)
}

// maxClusterNodes bounds --cluster: enough for any test of a Raft cluster.
const maxClusterNodes = 9

// parseGeneration reads --generation.
func parseGeneration(v string) (dflockdtest.Generation, error) {
	switch v {
	case "", "signals", "1":
		return dflockdtest.GenSignals, nil
	case "2", "2.x":
		return dflockdtest.Gen2, nil
	}
	return 0, usagef("--generation is signals or 2, not %q", v)
}

// startCluster starts n cluster nodes with cfg on consecutive ports from
// cfg.Addr's. Port 0 picks a free run of ports at random below the usual
// ephemeral range (32768 up): within it, ports next to a free one are often
// held by the TIME_WAIT of outgoing connections.
func startCluster(cfg dflockdtest.Config, n int) (*dflockdtest.Cluster, error) {
	host, portStr, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("--addr %s: %w", cfg.Addr, err)
	}
	base, err := strconv.Atoi(portStr)
	if err != nil || base < 0 || base+n-1 > 65535 {
		return nil, fmt.Errorf("--addr %s: no room for %d ports from there", cfg.Addr, n)
	}
	tries := 1
	if base == 0 {
		tries = 50
	}
	for try := 1; ; try++ {
		port := base
		if base == 0 {
			port = clusterPortLow + rand.IntN(clusterPortHigh-clusterPortLow-n)
		}
		addrs := make([]string, n)
		for i := range addrs {
			addrs[i] = net.JoinHostPort(host, strconv.Itoa(port+i))
		}
		cl, err := dflockdtest.StartCluster(dflockdtest.ClusterConfig{Nodes: n, Node: cfg, Addrs: addrs})
		if err == nil || try >= tries {
			return cl, err
		}
	}
}

// The range --cluster with port 0 picks its ports from.
const (
	clusterPortLow  = 20000
	clusterPortHigh = 32000
)
