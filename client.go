package dfstream

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"sync"
	"time"

	"github.com/sourcegraph/conc"

	"github.com/dfstream/dfstream/internal/hangup"
	"github.com/dfstream/dfstream/wire"
)

// Stats is the server's view of its state, as the stats command reports it.
type Stats = wire.Stats

// Client starts streams against one or more dflockd servers. It holds the
// configuration shared by its streams and a small pool of idle connections
// per server. A Client is safe for concurrent use; Close it when done.
type Client struct {
	cfg      clientConfig
	dialer   wire.Dialer
	pools    []*pool
	gens     []*serverGen    // per server, as pools
	watcher  *hangup.Watcher // notices servers hanging up on lock connections
	renewals renewals        // when held streams renew
	cl       *cluster        // nil unless WithCluster

	mu        sync.Mutex
	closed    bool
	closeDone chan struct{} // closed when Close has finished
	streams   map[Stream]struct{}
	actors    conc.WaitGroup
}

// New returns a Client configured by opts. It does not connect: connections
// are made by the streams that need them.
func New(opts ...Option) (*Client, error) {
	cfg := defaultClientConfig()
	for _, o := range opts {
		if err := o.applyClient(&cfg); err != nil {
			return nil, err
		}
	}
	if err := cfg.settleCluster(); err != nil {
		return nil, err
	}
	c := &Client{
		cfg: cfg,
		dialer: wire.Dialer{
			Timeout:   cfg.connectTimeout,
			TLS:       cfg.tls,
			AuthToken: cfg.authToken,
		},
		gens:      newServerGens(cfg.servers, cfg.generation),
		cl:        newCluster(cfg.cluster),
		watcher:   hangup.New(),
		streams:   make(map[Stream]struct{}),
		closeDone: make(chan struct{}),
	}
	for range cfg.servers {
		c.pools = append(c.pools, &pool{max: cfg.poolSize, staleAfter: cfg.serverReadTimeout / 2})
	}
	if o := cfg.observer; o != nil {
		o.ClientOpened(c)
	}
	return c, nil
}

// Close closes every stream the Client started (releasing what they hold)
// and the pooled connections, and waits for their goroutines to exit.
// Streams are closed concurrently, so a slow or silent server costs one
// release timeout, not one per stream. Every call returns only once the
// Client is fully closed.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		<-c.closeDone
		return nil
	}
	c.closed = true
	live := make([]Stream, 0, len(c.streams))
	for s := range c.streams {
		live = append(live, s)
	}
	c.mu.Unlock()
	var closing conc.WaitGroup
	for _, s := range live {
		closing.Go(func() { _ = s.Close() })
	}
	closing.Wait()
	c.actors.Wait()
	for _, p := range c.pools {
		p.drain()
	}
	c.watcher.Close()
	c.renewals.close()
	if o := c.cfg.observer; o != nil {
		o.ClientClosed(c)
	}
	close(c.closeDone)
	return nil
}

// Servers returns the configured server addresses, in shard order (a
// cluster's members, in the order given to WithCluster).
func (c *Client) Servers() []string { return append([]string(nil), c.cfg.servers...) }

// ServerFor returns the address of the server that owns key: on a cluster
// Client, the member it believes leads (or would try first).
func (c *Client) ServerFor(key string) (string, error) {
	i, err := c.shard(key)
	if err != nil {
		return "", opError("find the server of", key, "", err)
	}
	return c.cfg.servers[i], nil
}

// CRC32Shard is the default ShardFunc: the CRC-32 (IEEE) of the key's UTF-8
// bytes, as an unsigned number, modulo n. The Python and TypeScript clients
// route the same way, so mixed fleets agree on who owns a key.
func CRC32Shard(key string, n int) int {
	if n == 1 {
		return 0 // spares hashing (and copying) the key
	}
	return int(crc32.ChecksumIEEE([]byte(key)) % uint32(n))
}

func (c *Client) shard(key string) (int, error) {
	if c.cl != nil {
		return c.cl.pick(), nil // one lock table: the leader's
	}
	n := len(c.cfg.servers)
	i := c.cfg.shard(key, n)
	if i < 0 || i >= n {
		return 0, invalid(fmt.Sprintf("the shard function returned %d for %d servers", i, n))
	}
	return i, nil
}

// Stats asks the server at addr (one of the configured servers, or "" for
// the first) for its state. A server that cannot be connected to is an
// error matching ErrUnreachable; a nil ctx, an unknown addr, ErrInvalidInput.
// A 2.x server that answers error_draining on a pooled connection is asked
// again on a fresh one, which reaches the server listening at addr now.
// On a cluster Client, addr "" asks the members in turn (the believed
// leader first) until one answers: any member serves stats.
func (c *Client) Stats(ctx context.Context, addr string) (*Stats, error) {
	if ctx == nil {
		return nil, opError("stats", "", addr, errNilContext)
	}
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return nil, opError("stats", "", addr, ErrClosed)
	}
	if c.cl != nil && addr == "" {
		return c.clusterStats(ctx)
	}
	i, err := c.serverIndex(addr)
	if err != nil {
		return nil, opError("stats", "", addr, err)
	}
	var st *Stats
	err = c.roundTrip(ctx, i, wire.StatsRequest(), func(line string) (err error) {
		st, err = wire.ParseStats(line)
		return err
	})
	if err != nil {
		return nil, opError("stats", "", c.cfg.servers[i], err)
	}
	return st, nil
}

func (c *Client) serverIndex(addr string) (int, error) {
	if addr == "" {
		return 0, nil
	}
	for i, a := range c.cfg.servers {
		if a == addr {
			return i, nil
		}
	}
	return 0, invalid(fmt.Sprintf("%q is not a configured server", addr))
}

// roundTrip sends req on a pooled connection to server i and hands the
// reply to parse, within ctx. A connection that went stale in the pool
// (see lockConn.stale) costs one more try on a fresh one. The connection
// goes back to the pool unless the exchange failed, the reply was not
// understood, or the server refused auth (it closes the connection).
func (c *Client) roundTrip(ctx context.Context, i int, req wire.Request, parse func(line string) error) error {
	var line string
	lc, err := firstExchange(func(fresh bool) (*lockConn, error) {
		if fresh {
			return c.dialLock(ctx, i)
		}
		return c.lockConn(ctx, i)
	}, (*lockConn).close, func(lc *lockConn) (err error) {
		line, err = lc.exchange(ctx, req, time.Time{})
		return err
	})
	if lc == nil {
		return err
	}
	switch {
	case err == nil:
		err = parse(line)
	case ctx.Err() != nil, errors.Is(err, context.DeadlineExceeded):
		// The caller's own deadline or cancellation: said as it is.
	default:
		err = connFailed(ErrConnLost, err)
	}
	if err != nil && (!errors.Is(err, wire.ErrServer) || errors.Is(err, ErrAuth)) {
		lc.close() // out of step, not understood, or refused: never reused
	} else {
		c.pools[i].put(lc, c.watcher)
	}
	return err
}

func (c *Client) dial(ctx context.Context, addr string, opts ...wire.ConnOption) (*wire.Conn, error) {
	conn, err := c.dialer.Dial(ctx, addr, opts...)
	if err != nil {
		return nil, err
	}
	return conn, nil
}

// register records a live stream so that Client.Close can end it, and runs
// its actor, if it has one, on the Client's wait group.
func (c *Client) register(s Stream, actor func()) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrClosed
	}
	c.streams[s] = struct{}{}
	if actor != nil {
		c.actors.Go(func() {
			defer c.unregister(s)
			actor()
		})
	}
	return nil
}

func (c *Client) unregister(s Stream) {
	c.mu.Lock()
	delete(c.streams, s)
	c.mu.Unlock()
}
