package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/dfstream/dfstream"
	"github.com/dfstream/dfstream/dflockdtest"
)

func runServe(args []string, e *env) error {
	c := newCommand("serve", "[flags]",
		"Run the embedded dflockd-compatible server (locks, semaphores, signals, stats)\n"+
			"until SIGINT or SIGTERM. It prints one line saying where it listens; with\n"+
			"--addr host:0 that line carries the port picked. A second signal stops at once.",
		"  dfstream serve --addr 0.0.0.0:6388 --default-lease 30s --auth-token-file /etc/dfstream/token",
		e.stdout)
	fs := c.fs
	addr := fs.String("addr", dfstream.DefaultServer, "`host:port` to listen on (port 0 picks a free port)")
	lease := fs.Duration("default-lease", 33*time.Second, "lease of requests that do not ask for one")
	readTimeout := fs.Duration("read-timeout", dfstream.DefaultServerReadTimeout, "drop connections idle this long")
	maxLocks := fs.Int("max-locks", 1024, "most keys at once")
	maxWaiters := fs.Int("max-waiters", 0, "most waiters per key (0: unlimited)")
	maxConns := fs.Int("max-connections", 0, "most connections at once (0: unlimited)")
	maxSubs := fs.Int("max-subscriptions", 0, "most signal subscriptions (0: unlimited)")
	drain := fs.Duration("shutdown-drain", 5*time.Second, "on SIGINT/SIGTERM, how long open connections may go on")
	cert := fs.String("tls-cert", "", "PEM server certificate `file` (with --tls-key; turns TLS on)")
	key := fs.String("tls-key", "", "PEM server key `file`")
	auth := c.addAuthFlags()
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
	case *lease < time.Second:
		return usagef("--default-lease must be at least 1s")
	case *readTimeout <= 0:
		return usagef("--read-timeout must be positive")
	case *maxLocks < 1:
		return usagef("--max-locks must be at least 1")
	case *maxWaiters < 0 || *maxConns < 0 || *maxSubs < 0:
		return usagef("--max-waiters, --max-connections and --max-subscriptions must not be negative")
	}
	tok, err := auth.resolve()
	if err != nil {
		return err
	}
	log := newLogger(*verbose, e.stderr)
	cfg := dflockdtest.Config{
		Addr:             *addr,
		DefaultLease:     *lease,
		ReadTimeout:      *readTimeout,
		MaxLocks:         *maxLocks,
		MaxWaiters:       *maxWaiters,
		MaxConnections:   *maxConns,
		MaxSubscriptions: *maxSubs,
		AuthToken:        tok,
		ShutdownDrain:    *drain,
		Logger:           &log,
	}
	if *drain <= 0 {
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

	srv, err := dflockdtest.Start(cfg)
	if err != nil {
		return exitWith(exitUnavailable, fmt.Errorf("serve: %w", lib(err)))
	}
	scheme := "tcp"
	if cfg.TLS != nil {
		scheme = "tls"
	}
	authNote := ""
	if tok != "" {
		authNote = ", auth required"
	}
	fmt.Fprintf(e.stdout, "dfstream: listening on %s (%s%s)\n", srv.Addr(), scheme, authNote)

	sig := <-sigs
	log.Info().Str("signal", sig.String()).Msg("shutting down")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-sigs: // a second signal: stop now
			cancel()
		case <-ctx.Done():
		}
	}()
	if err := srv.Shutdown(ctx); err != nil && ctx.Err() == nil {
		return exitWith(exitFailure, fmt.Errorf("serve: shutdown: %w", err))
	}
	return nil
}
