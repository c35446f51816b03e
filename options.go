package dfstream

import (
	"crypto/tls"
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"github.com/dfstream/dfstream/wire"
)

// Defaults used when no option says otherwise.
const (
	DefaultServer            = "127.0.0.1:6388"
	DefaultConnectTimeout    = 10 * time.Second
	DefaultAcquireTimeout    = 10 * time.Second
	DefaultRenewRatio        = 0.5
	DefaultServerReadTimeout = 23 * time.Second
	DefaultPoolSize          = 8
)

// The option kinds. Each is an interface with unexported methods only, so
// that options are made only by this package's With… functions and godoc
// shows no configuration internals. Each kind is implemented by a function
// type over its configuration (clientOption, streamOption, …); a new Client
// option is one function returning a clientOption, in any file. See the
// package doc, "Options".

// Option configures a Client. Every StreamOption and SignalOption is also an
// Option: given to New, it sets the default for every stream of its kind the
// Client starts.
type Option interface {
	applyClient(*clientConfig) error
}

// StreamOption configures one lock or semaphore stream, overriding the
// Client's default.
type StreamOption interface {
	Option
	applyStream(*streamConfig) error
}

// SignalOption configures one signal stream (Client.Signals) or a Router's
// streams (WithRouterSignalOptions), overriding the Client's default.
type SignalOption interface {
	Option
	applySignal(*signalConfig) error
}

// RouterOption configures a Router (NewRouter).
type RouterOption interface {
	applyRouter(*routerConfig) error
}

// HandlerOption configures one handler of a Router (Router.Handle).
type HandlerOption interface {
	applyHandler(*handlerConfig) error
}

type clientOption func(*clientConfig) error

func (f clientOption) applyClient(c *clientConfig) error { return f(c) }

type streamOption func(*streamConfig) error

func (f streamOption) applyStream(c *streamConfig) error { return f(c) }
func (f streamOption) applyClient(c *clientConfig) error { return f(&c.stream) }

type signalOption func(*signalConfig) error

func (f signalOption) applySignal(c *signalConfig) error { return f(c) }
func (f signalOption) applyClient(c *clientConfig) error { return f(&c.signal) }

type routerOption func(*routerConfig) error

func (f routerOption) applyRouter(c *routerConfig) error { return f(c) }

type handlerOption func(*handlerConfig) error

func (f handlerOption) applyHandler(c *handlerConfig) error { return f(c) }

// applyAll applies opts to c with apply, skipping nil options, and returns
// the first error.
func applyAll[O any, C any](c *C, opts []O, apply func(O, *C) error) error {
	for _, o := range opts {
		if any(o) == nil {
			continue
		}
		if err := apply(o, c); err != nil {
			return err
		}
	}
	return nil
}

// ShardFunc maps a key to the index of the server that owns it, given the
// number of servers. It must be deterministic and return a value in [0, n).
type ShardFunc func(key string, n int) int

type clientConfig struct {
	servers           []string
	shard             ShardFunc
	tls               *tls.Config
	authToken         string
	connectTimeout    time.Duration
	serverReadTimeout time.Duration
	poolSize          int
	generation        Generation // GenUnknown: probe each server
	logger            zerolog.Logger
	observer          Observer // nil: nothing reported
	cluster           clusterConfig
	stream            streamConfig
	signal            signalConfig
}

type streamConfig struct {
	acquireTimeout time.Duration
	lease          time.Duration // 0: the server's default
	renewRatio     float64
	safetyMargin   time.Duration // 0: derived from the lease
	reacquire      bool
	backoffMin     time.Duration
	backoffMax     time.Duration
	eventBuffer    int
}

func defaultClientConfig() clientConfig {
	return clientConfig{
		servers:           []string{DefaultServer},
		shard:             CRC32Shard,
		connectTimeout:    DefaultConnectTimeout,
		serverReadTimeout: DefaultServerReadTimeout,
		poolSize:          DefaultPoolSize,
		logger:            zerolog.Nop(),
		stream: streamConfig{
			acquireTimeout: DefaultAcquireTimeout,
			renewRatio:     DefaultRenewRatio,
			backoffMin:     100 * time.Millisecond,
			backoffMax:     5 * time.Second,
			eventBuffer:    16,
		},
		signal: defaultSignalConfig(),
	}
}

func invalidOption(name string, v any, why string) error {
	return &OpError{Op: fmt.Sprintf("option %s(%v)", name, v), Err: invalid(why)}
}

// WithServers sets the servers as host:port addresses (default
// 127.0.0.1:6388). Keys are spread over them by the ShardFunc.
func WithServers(addrs ...string) Option {
	return clientOption(func(c *clientConfig) error {
		if len(addrs) == 0 {
			return invalidOption("WithServers", addrs, "no server")
		}
		for _, a := range addrs {
			if why := addrProblem(a); why != "" {
				return invalidOption("WithServers", addrs, why)
			}
		}
		c.servers = append([]string(nil), addrs...)
		c.cluster.serversSet = true
		return nil
	})
}

// WithSharding replaces the default CRC32Shard key-to-server mapping.
func WithSharding(f ShardFunc) Option {
	return clientOption(func(c *clientConfig) error {
		if f == nil {
			return invalidOption("WithSharding", "nil", "nil function")
		}
		c.shard = f
		c.cluster.shardSet = true
		return nil
	})
}

// WithTLS makes every connection speak TLS with the given configuration. An
// empty ServerName is filled in from the server address.
func WithTLS(cfg *tls.Config) Option {
	return clientOption(func(c *clientConfig) error {
		c.tls = cfg
		return nil
	})
}

// WithAuthToken authenticates every connection with the token, for servers
// started with an auth token.
func WithAuthToken(token string) Option {
	return clientOption(func(c *clientConfig) error {
		c.authToken = token
		return nil
	})
}

// WithConnectTimeout bounds dialing, the TLS handshake and authentication
// (default 10s).
func WithConnectTimeout(d time.Duration) Option {
	return clientOption(func(c *clientConfig) error {
		if d <= 0 {
			return invalidOption("WithConnectTimeout", d, "must be positive")
		}
		c.connectTimeout = d
		return nil
	})
}

// WithServerReadTimeout tells the client the servers' idle read timeout
// (default 23s, dflockd's default). A server drops a connection that sends
// nothing for that long, releasing its locks, so a held stream sends a
// request at least every half of it, whatever its lease.
func WithServerReadTimeout(d time.Duration) Option {
	return clientOption(func(c *clientConfig) error {
		if d <= 0 {
			return invalidOption("WithServerReadTimeout", d, "must be positive")
		}
		c.serverReadTimeout = d
		return nil
	})
}

// WithPoolSize sets how many idle, authenticated connections the Client keeps
// per server for new streams (default 8; 0 turns the pool off).
func WithPoolSize(n int) Option {
	return clientOption(func(c *clientConfig) error {
		if n < 0 {
			return invalidOption("WithPoolSize", n, "must not be negative")
		}
		c.poolSize = n
		return nil
	})
}

// WithLogger sets the logger for connection and stream diagnostics. The
// default logs nothing.
func WithLogger(l zerolog.Logger) Option {
	return clientOption(func(c *clientConfig) error {
		c.logger = l
		return nil
	})
}

// WithAcquireTimeout bounds how long a stream waits in the queue (default
// 10s). Zero means try once: acquired if free right now, else ErrTimeout.
func WithAcquireTimeout(d time.Duration) StreamOption {
	return streamOption(func(c *streamConfig) error {
		if d < 0 {
			return invalidOption("WithAcquireTimeout", d, "must not be negative")
		}
		// Checked here, once, rather than on every acquire: the wait
		// request carries it in whole seconds.
		if _, err := wire.Seconds("timeout", d); err != nil {
			return invalidOption("WithAcquireTimeout", d, "longer than the protocol can carry")
		}
		c.acquireTimeout = d
		return nil
	})
}

// WithLease asks for a lease of d, rounded up to whole seconds (default: the
// server's default lease, 33s on dflockd).
func WithLease(d time.Duration) StreamOption {
	return streamOption(func(c *streamConfig) error {
		if d <= 0 {
			return invalidOption("WithLease", d, "must be positive")
		}
		c.lease = d
		return nil
	})
}

// WithRenewRatio renews the lease after lease×ratio has passed (default 0.5).
// The ratio must be in (0, 1).
func WithRenewRatio(r float64) StreamOption {
	return streamOption(func(c *streamConfig) error {
		if !(r > 0 && r < 1) {
			return invalidOption("WithRenewRatio", r, "must be between 0 and 1")
		}
		c.renewRatio = r
		return nil
	})
}

// WithSafetyMargin sets how long before the lease could run out on the server
// the stream stops believing it holds the lock. The default is a tenth of the
// granted lease, at least 50ms; any margin is capped at half the lease.
// Renewals are scheduled early enough to be answered before the margin.
func WithSafetyMargin(d time.Duration) StreamOption {
	return streamOption(func(c *streamConfig) error {
		if d <= 0 {
			return invalidOption("WithSafetyMargin", d, "must be positive")
		}
		c.safetyMargin = d
		return nil
	})
}

// WithReacquire makes a stream queue again after Lost, and retry a failed
// acquire (timeout, unreachable server, server limits; not bad input,
// refused authentication or a limit mismatch), waiting between attempts with
// exponential backoff from min to max (with jitter), until it is closed or
// released. Lost events are then not terminal. Keep reading Events: a
// stream whose consumer has fallen far behind waits for it before queueing
// again, because Acquired and Lost are never dropped.
func WithReacquire(min, max time.Duration) StreamOption {
	return streamOption(func(c *streamConfig) error {
		if min <= 0 || max < min {
			return invalidOption("WithReacquire", [2]time.Duration{min, max}, "need 0 < min <= max")
		}
		c.reacquire, c.backoffMin, c.backoffMax = true, min, max
		return nil
	})
}

// WithEventBuffer sets the capacity of the stream's event channel (default
// 16). The actor never blocks on a slow consumer either way; the buffer only
// saves copies.
func WithEventBuffer(n int) StreamOption {
	return streamOption(func(c *streamConfig) error {
		if n < 1 {
			return invalidOption("WithEventBuffer", n, "must be at least 1")
		}
		c.eventBuffer = n
		return nil
	})
}
