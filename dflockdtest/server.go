// Package dflockdtest is an in-process dflockd-compatible server: by default
// the signals-era ("RF") generation of the protocol, with fencing tokens and
// pub/sub signals, answering byte for byte as those dflockd servers do
// (https://github.com/mtingers/dflockd; the conformance tests of this
// package spell out each behaviour); with Config.Generation set to Gen2,
// the dflockd 2.x generation (locks and semaphores only, tokens that carry
// their fence); and, with
// StartCluster, an in-process 2.x Raft cluster of several nodes sharing one
// lock table. It serves FIFO locks
// and semaphores with leases, two-phase acquisition, auto-release on
// disconnect, server-side limits, stats, auth, TLS, and signals with
// wildcards and queue groups. It is meant for tests, examples, benchmarks and
// `dfstream serve`; it is a faithful single-node server, not a replacement
// for a dflockd fleet.
//
// It answers ping with "ok" like the newest upstream servers (Config.PingError
// restores the older "error"), and can leave fences out of its replies
// (Config.NoFences) to behave like the older generation on the wire.
//
// Fault helpers (DropConnections, PauseAccepting, Freeze, MutePushes) let
// tests reproduce what clients must survive.
package dflockdtest

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// Config configures a Server. The zero value is a default server on
// 127.0.0.1 with a random port.
type Config struct {
	Addr               string        // default "127.0.0.1:0"
	DefaultLease       time.Duration // default 33s (whole seconds on the wire, rounded up)
	LeaseSweepInterval time.Duration // default 1s
	GCInterval         time.Duration // default 5s
	GCMaxIdle          time.Duration // default 60s
	ReadTimeout        time.Duration // default 23s (must be > 0; <= 0 means default)
	WriteTimeout       time.Duration // default 5s; negative = none
	MaxLocks           int           // default 1024
	MaxWaiters         int           // 0 = unlimited
	MaxConnections     int           // 0 = unlimited
	MaxSubscriptions   int           // 0 = unlimited
	AuthToken          string        // "" = auth off
	TLS                *tls.Config   // nil = plain TCP; TLS 1.2 minimum is enforced
	PingError          bool          // answer "error" to ping like older servers (default: "ok")
	NoFences           bool          // leave the fence field out of grant/renew replies and stats (1.10 style replies)
	DisableAutoRelease bool          // auto-release-on-disconnect off
	ShutdownDrain      time.Duration // default 30s; negative = force-close at once
	Logger             *zerolog.Logger
	// Generation is the protocol generation spoken; the zero value is
	// GenSignals. Gen2 ignores PingError, NoFences and MaxSubscriptions.
	Generation Generation
}

// Generation is a server generation of the dflockd protocol.
type Generation uint8

const (
	// GenSignals is the signals era (dflockd 1.11 to 1.16):
	// random tokens with a fence field appended to grants and renewals,
	// pub/sub signals. It is the default.
	GenSignals Generation = iota
	// Gen2 is dflockd 2.x: locks and semaphores only;
	// a token's first 16 hex digits are its big-endian fence, which rises
	// strictly with every grant; replies carry no fence field; ping, barrier
	// and stable-ref are answered; semaphore limits stop at 1,048,576; on
	// graceful shutdown the next request on each connection gets
	// error_draining and the connection closes; stats has the five 2.x
	// arrays (and the cluster object on a cluster node).
	Gen2
)

// String names the generation as `dfstream serve --generation` does.
func (g Generation) String() string {
	switch g {
	case GenSignals:
		return "signals"
	case Gen2:
		return "2"
	}
	return fmt.Sprintf("Generation(%d)", uint8(g))
}

// ConnInfo describes one open connection.
type ConnInfo struct {
	ID     uint64 // the per-process connection number (stats owner_conn_id)
	Remote string // the peer's address
	// Subscriptions lists the connection's listen registrations in join
	// order: "pattern" for a plain one, "pattern group" for a queue group.
	Subscriptions []string
}

// Server is a running in-process dflockd server.
type Server struct {
	cfg          Config
	log          zerolog.Logger
	ln           net.Listener
	addr         string
	tbl          *table
	hub          *hub
	defaultLease int64
	authToken    []byte
	gen2         bool
	node         *clusterNode // nil for a standalone server
	inc          uint64       // this process incarnation's tag (cluster re-attach)
	hardKilled   atomic.Bool  // KillLeader: connections go without clean-up

	baseCtx    context.Context
	baseCancel context.CancelFunc
	closing    chan struct{} // closed when shutdown starts
	done       chan struct{} // closed when shutdown has finished
	stopBG     chan struct{} // stops the sweep and GC tickers
	closeOnce  sync.Once
	acceptWG   sync.WaitGroup
	bgWG       sync.WaitGroup
	connWG     sync.WaitGroup // connection readers and push writers

	connsMu sync.Mutex
	conns   map[*conn]struct{}
	nconns  atomic.Int64
	nextID  atomic.Uint64

	paused   atomic.Bool
	pings    atomic.Uint64
	accepted atomic.Uint64 // connections accepted, see Accepted

	frozen    atomic.Bool
	freezeGen atomic.Uint64
	freezeMu  sync.Mutex
	thawCh    chan struct{}

	muteMu    sync.Mutex
	muteMatch func(ConnInfo) bool
}

func (cfg Config) withDefaults() Config {
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.DefaultLease <= 0 {
		cfg.DefaultLease = 33 * time.Second
	}
	if cfg.LeaseSweepInterval <= 0 {
		cfg.LeaseSweepInterval = time.Second
	}
	if cfg.GCInterval <= 0 {
		cfg.GCInterval = 5 * time.Second
	}
	if cfg.GCMaxIdle <= 0 {
		cfg.GCMaxIdle = 60 * time.Second
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = 23 * time.Second
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = 5 * time.Second
	}
	if cfg.MaxLocks <= 0 {
		cfg.MaxLocks = 1024
	}
	if cfg.ShutdownDrain == 0 {
		cfg.ShutdownDrain = 30 * time.Second
	}
	return cfg
}

// Start listens on cfg.Addr and serves in the background.
func Start(cfg Config) (*Server, error) {
	cfg = cfg.withDefaults()
	return start(cfg, newTableFor(cfg), nil)
}

// newTableFor makes the lock table of a server with cfg (defaults applied).
func newTableFor(cfg Config) *table {
	t := newTable(cfg.MaxLocks, cfg.MaxWaiters, cfg.GCMaxIdle)
	if cfg.Generation == Gen2 {
		t.fenceTokens()
	}
	return t
}

// start serves cfg (defaults applied) over tbl, as a cluster node when node
// is not nil.
func start(cfg Config, tbl *table, node *clusterNode) (*Server, error) {
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("dflockdtest: listen %s: %w", cfg.Addr, err)
	}
	addr := ln.Addr().String()
	if cfg.TLS != nil {
		tc := cfg.TLS.Clone()
		if tc.MinVersion < tls.VersionTLS12 {
			tc.MinVersion = tls.VersionTLS12
		}
		tc.ClientAuth = tls.NoClientCert
		ln = tls.NewListener(ln, tc)
	}
	s := &Server{
		cfg:          cfg,
		log:          zerolog.Nop(),
		ln:           ln,
		addr:         addr,
		tbl:          tbl,
		gen2:         cfg.Generation == Gen2,
		node:         node,
		inc:          randomUint64(),
		hub:          newHub(),
		defaultLease: int64((cfg.DefaultLease + time.Second - 1) / time.Second),
		closing:      make(chan struct{}),
		done:         make(chan struct{}),
		stopBG:       make(chan struct{}),
		conns:        make(map[*conn]struct{}),
	}
	if cfg.Logger != nil {
		lc := cfg.Logger.With().Str("component", "dflockdtest")
		if node != nil {
			lc = lc.Str("node", node.id)
		}
		s.log = lc.Logger()
	}
	if cfg.AuthToken != "" {
		s.authToken = []byte(cfg.AuthToken)
	}
	s.baseCtx, s.baseCancel = context.WithCancel(context.Background())
	s.acceptWG.Add(1)
	go s.acceptLoop()
	s.bgWG.Add(2)
	go s.ticker(cfg.LeaseSweepInterval, s.tbl.sweep)
	go s.ticker(cfg.GCInterval, s.tbl.gc)
	s.log.Info().Str("addr", addr).Bool("tls", cfg.TLS != nil).Msg("listening")
	return s, nil
}

// TB is the part of testing.TB that New and NewCluster use; *testing.T and
// *testing.B satisfy it. It is an interface of its own so that importing
// this package (as dfstream serve does) does not link the testing package
// into a program.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
	Cleanup(func())
}

// New is the testing helper: it starts a server or fails the test, and
// registers a cleanup that force-closes it (no drain, so tests stay quick).
func New(tb TB, cfg Config) *Server {
	tb.Helper()
	s, err := Start(cfg)
	if err != nil {
		tb.Fatalf("dflockdtest: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_ = s.Shutdown(ctx)
	})
	return s
}

// Addr returns the listening address, "127.0.0.1:port".
func (s *Server) Addr() string { return s.addr }

// Close shuts the server down gracefully: it stops listening, interrupts
// blocking waits (no reply, the connection closes), lets the other
// connections be served until they close or ShutdownDrain passes, then
// force-closes the rest. It is idempotent.
func (s *Server) Close() error { return s.Shutdown(context.Background()) }

// Shutdown is Close bounded by ctx: when ctx ends before the drain does, the
// remaining connections are force-closed at once.
func (s *Server) Shutdown(ctx context.Context) error {
	first := false
	s.closeOnce.Do(func() { first = true })
	if !first {
		select {
		case <-s.done:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	close(s.closing)
	_ = s.ln.Close()
	s.acceptWG.Wait()
	s.baseCancel()

	allGone := make(chan struct{})
	go func() {
		s.connWG.Wait()
		close(allGone)
	}()
	if s.cfg.ShutdownDrain > 0 {
		drain := time.NewTimer(s.cfg.ShutdownDrain)
		select {
		case <-allGone:
		case <-drain.C:
		case <-ctx.Done():
		}
		drain.Stop()
	}
	for _, c := range s.snapshotConns() {
		c.kill()
	}
	<-allGone
	close(s.stopBG)
	s.bgWG.Wait()
	s.log.Info().Msg("closed")
	close(s.done)
	return nil
}

func (s *Server) isClosing() bool {
	select {
	case <-s.closing:
		return true
	default:
		return false
	}
}

func (s *Server) ticker(d time.Duration, f func(time.Time)) {
	defer s.bgWG.Done()
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			f(time.Now())
		case <-s.stopBG:
			return
		}
	}
}

func (s *Server) acceptLoop() {
	defer s.acceptWG.Done()
	var backoff time.Duration
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			if s.isClosing() || errors.Is(err, net.ErrClosed) {
				return
			}
			// Temporary failure (e.g. too many open files): back off.
			if backoff == 0 {
				backoff = 5 * time.Millisecond
			} else if backoff < time.Second {
				backoff *= 2
			}
			s.log.Warn().Err(err).Dur("retry_in", backoff).Msg("accept")
			select {
			case <-time.After(backoff):
			case <-s.closing:
				return
			}
			continue
		}
		backoff = 0
		s.accepted.Add(1)
		if s.paused.Load() || (s.cfg.MaxConnections > 0 && s.nconns.Load() >= int64(s.cfg.MaxConnections)) {
			// Accepted and closed without a byte.
			_ = nc.Close()
			continue
		}
		c := newConn(s, nc)
		s.connsMu.Lock()
		s.conns[c] = struct{}{}
		s.connsMu.Unlock()
		s.nconns.Add(1)
		c.reevalMute()
		s.connWG.Add(1)
		go c.serve()
	}
}

func (s *Server) unregister(c *conn) {
	s.connsMu.Lock()
	delete(s.conns, c)
	s.connsMu.Unlock()
	s.nconns.Add(-1)
}

func (s *Server) snapshotConns() []*conn {
	s.connsMu.Lock()
	out := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		out = append(out, c)
	}
	s.connsMu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out
}

// ---- fault helpers ----

// DropConnections closes every open connection now; auto-release applies
// (also to connections blocked in a wait). It returns once they are cleaned
// up.
func (s *Server) DropConnections() {
	cs := s.snapshotConns()
	for _, c := range cs {
		c.kill()
	}
	deadline := time.NewTimer(5 * time.Second)
	defer deadline.Stop()
	for _, c := range cs {
		select {
		case <-c.done:
		case <-deadline.C:
			return
		}
	}
}

// PauseAccepting makes the server accept new connections and close them at
// once without a byte, like a server at its connection limit. Open
// connections are not affected.
func (s *Server) PauseAccepting() { s.paused.Store(true) }

// ResumeAccepting undoes PauseAccepting.
func (s *Server) ResumeAccepting() { s.paused.Store(false) }

// Freeze makes the server go silent, like a partitioned or stopped process
// that keeps its lease clock: connections (also new ones) stay open, but no
// request is executed, nothing is written, no read timeout fires and no
// disconnect is noticed. The lock table keeps running: leases expire and are
// swept, so after Thaw another client can be granted the key. Waiters granted
// while frozen get their reply after Thaw.
func (s *Server) Freeze() {
	s.freezeMu.Lock()
	defer s.freezeMu.Unlock()
	if s.frozen.Load() {
		return
	}
	s.thawCh = make(chan struct{})
	s.freezeGen.Add(1)
	s.frozen.Store(true)
	s.log.Info().Msg("frozen")
}

// Thaw undoes Freeze: pending requests are executed and replies written;
// read timeouts restart from now.
func (s *Server) Thaw() {
	s.freezeMu.Lock()
	defer s.freezeMu.Unlock()
	if !s.frozen.Load() {
		return
	}
	s.freezeGen.Add(1) // deadlines armed while frozen restart in full
	s.frozen.Store(false)
	close(s.thawCh)
	s.log.Info().Msg("thawed")
}

// waitThaw blocks while the server is frozen. It returns false when the
// connection was killed or the server is shutting down meanwhile.
func (s *Server) waitThaw(c *conn) bool {
	if !s.frozen.Load() {
		return true
	}
	s.freezeMu.Lock()
	ch := s.thawCh
	fr := s.frozen.Load()
	s.freezeMu.Unlock()
	if !fr {
		return true
	}
	select {
	case <-ch:
		return true
	case <-c.killed:
		return false
	case <-s.closing:
		return false
	}
}

// MutePushes turns matching connections into a black hole, as a dflockd
// server does to a connection whose push queue is full: sig lines to them
// are silently discarded while they stay open and subscribed, and signal
// still counts them. The predicate is evaluated now
// for every open connection and again whenever a connection opens or its
// subscriptions change, until UnmutePushes.
func (s *Server) MutePushes(connMatch func(ConnInfo) bool) {
	s.muteMu.Lock()
	s.muteMatch = connMatch
	s.muteMu.Unlock()
	for _, c := range s.snapshotConns() {
		c.reevalMute()
	}
}

// UnmutePushes ends MutePushes; pushes flow again from the next signal on.
func (s *Server) UnmutePushes() {
	s.muteMu.Lock()
	s.muteMatch = nil
	s.muteMu.Unlock()
	for _, c := range s.snapshotConns() {
		c.sub.muted.Store(false)
	}
}

func (s *Server) muteMatcher() func(ConnInfo) bool {
	s.muteMu.Lock()
	defer s.muteMu.Unlock()
	return s.muteMatch
}

// Accepted returns how many connections the server has accepted, closed
// ones included: proof that a client never dialled it.
func (s *Server) Accepted() uint64 { return s.accepted.Load() }

// Pings returns how many ping requests the server has received, on every
// connection, since it started: for tests of heartbeats.
func (s *Server) Pings() uint64 { return s.pings.Load() }

// Conns returns the open connections, ordered by ID.
func (s *Server) Conns() []ConnInfo {
	cs := s.snapshotConns()
	out := make([]ConnInfo, len(cs))
	for i, c := range cs {
		out[i] = c.info()
	}
	return out
}

// Stats returns what the stats command answers (the JSON after "ok "),
// decoded into a generic map: "connections" is a float64, the arrays are
// []any of map[string]any, "signal_channels" and "watch_channels" are nil
// when empty (signals era; a Gen2 server has neither, and a cluster node
// adds "cluster").
func (s *Server) Stats() map[string]any {
	var m map[string]any
	if err := json.Unmarshal(s.statsJSON(), &m); err != nil {
		panic("dflockdtest: stats JSON: " + err.Error())
	}
	return m
}

type statsReply struct {
	Connections    int64               `json:"connections"`
	Locks          []lockInfo          `json:"locks"`
	Semaphores     []semInfo           `json:"semaphores"`
	RWLocks        []struct{}          `json:"rw_locks"`
	IdleLocks      []idleInfo          `json:"idle_locks"`
	IdleSemaphores []idleInfo          `json:"idle_semaphores"`
	Counters       []struct{}          `json:"counters"`
	KVEntries      []struct{}          `json:"kv_entries"`
	Lists          []struct{}          `json:"lists"`
	SignalChannels []signalChannelInfo `json:"signal_channels"`
	WatchChannels  []struct{}          `json:"watch_channels"`
	Barriers       []struct{}          `json:"barriers"`
}

// statsReplyV2 is the 2.x stats object (protocol-v2.md §6).
type statsReplyV2 struct {
	Connections    int64          `json:"connections"`
	Locks          []lockInfo     `json:"locks"`
	Semaphores     []semInfo      `json:"semaphores"`
	IdleLocks      []idleInfo     `json:"idle_locks"`
	IdleSemaphores []idleInfo     `json:"idle_semaphores"`
	Cluster        *clusterStatus `json:"cluster,omitempty"`
}

// statsJSON renders the stats object of the server's generation (Go's
// encoder, HTML escaping on).
func (s *Server) statsJSON() []byte {
	now := time.Now()
	if s.gen2 {
		r := statsReplyV2{Connections: s.nconns.Load()}
		r.Locks, r.Semaphores, r.IdleLocks, r.IdleSemaphores = s.tbl.stats(now, false)
		if s.node != nil {
			st := s.node.status()
			r.Cluster = &st
		}
		return mustMarshal(&r)
	}
	r := statsReply{
		Connections: s.nconns.Load(),
		RWLocks:     []struct{}{},
		Counters:    []struct{}{},
		KVEntries:   []struct{}{},
		Lists:       []struct{}{},
		Barriers:    []struct{}{},
	}
	r.Locks, r.Semaphores, r.IdleLocks, r.IdleSemaphores = s.tbl.stats(now, !s.cfg.NoFences)
	r.SignalChannels = s.hub.stats()
	return mustMarshal(&r)
}

func mustMarshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic("dflockdtest: marshal stats: " + err.Error())
	}
	return b
}
