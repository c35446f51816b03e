// Package dfprom exports what dfstream Clients do as Prometheus metrics. A
// Metrics is a dfstream.Observer: give it to dfstream.New with Option (or
// dfstream.WithObserver), and register it with a prometheus.Registerer
// (WithRegisterer, or Register on a registry of your own: a Metrics is a
// prometheus.Collector). Nothing is registered globally unless you pass
// prometheus.DefaultRegisterer.
//
//	m, err := dfprom.New(dfprom.WithRegisterer(reg))
//	c, err := dfstream.New(dfstream.WithServers(addr), m.Option())
//
// One Metrics may observe several Clients: their figures add up.
//
// # Metrics
//
// Label values are bounded: kind is "lock" or "semaphore"; pattern and
// group are the subscriptions and handlers the program registered (empty
// for a signal that matched several of a stream's subscriptions); server
// is a configured server address. Keys are labels only with WithKeyLabel.
//
//	Name                                        Type       Labels
//	dfstream_acquire_wait_seconds               histogram  kind, outcome (granted, timeout, unreachable, cancelled, error)
//	dfstream_grants_total                       counter    kind
//	dfstream_reacquire_attempts_total           counter    kind
//	dfstream_queued_streams                     gauge      kind
//	dfstream_held_streams                       gauge      kind
//	dfstream_hold_duration_seconds              histogram  kind, end (released, lost)
//	dfstream_renewal_round_trip_seconds         histogram  kind
//	dfstream_renewal_failures_total             counter    kind
//	dfstream_losses_total                       counter    kind, reason (conn_lost, renew_refused, deadline_passed, lease_expired, other)
//	dfstream_releases_total                     counter    kind
//	dfstream_pool_gets_total                    counter    result (hit, miss)
//	dfstream_dials_total                        counter    result (ok, error)
//	dfstream_pool_idle_connections              gauge      -
//	dfstream_signals_received_total             counter    pattern, group
//	dfstream_signals_dropped_total              counter    pattern, group
//	dfstream_signal_disconnects_total           counter    server, reason (conn_lost, silent, other)
//	dfstream_signal_reconnects_total            counter    server
//	dfstream_signal_reconnect_downtime_seconds  histogram  server
//	dfstream_handler_duration_seconds           histogram  pattern, group, outcome (ok, error, timeout, panic)
//	dfstream_handler_dropped_total              counter    pattern, group
//
// With WithKeyLabel, every metric labelled with kind is labelled with key
// too.
package dfprom

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dfstream/dfstream"
)

// Option configures a Metrics.
type Option func(*config)

type config struct {
	reg      prometheus.Registerer
	keyLabel bool
	buckets  []float64
}

// WithRegisterer registers the Metrics with reg when New makes it.
func WithRegisterer(reg prometheus.Registerer) Option {
	return func(c *config) { c.reg = reg }
}

// WithKeyLabel adds a key label to the per-stream metrics. Each key then
// makes series of its own: only for programs with a small, fixed set of
// keys.
func WithKeyLabel() Option {
	return func(c *config) { c.keyLabel = true }
}

// WithBuckets replaces the buckets (in seconds) of every histogram
// (default DefaultBuckets).
func WithBuckets(b []float64) Option {
	return func(c *config) { c.buckets = append([]float64(nil), b...) }
}

// DefaultBuckets are the histogram buckets, in seconds: from a millisecond
// (a renewal on a LAN) to a minute (a long wait in a queue, a long hold).
var DefaultBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

// Metrics is a dfstream.Observer that keeps Prometheus metrics (see the
// package documentation for the list), and the prometheus.Collector that
// exports them. It is safe for concurrent use.
type Metrics struct {
	dfstream.NopObserver
	keyLabel bool

	acquireWait  *prometheus.HistogramVec
	grants       *prometheus.CounterVec
	reacquires   *prometheus.CounterVec
	queued       *prometheus.GaugeVec
	held         *prometheus.GaugeVec
	holdDuration *prometheus.HistogramVec
	renewRTT     *prometheus.HistogramVec
	renewFails   *prometheus.CounterVec
	losses       *prometheus.CounterVec
	releases     *prometheus.CounterVec
	poolGets     *prometheus.CounterVec
	poolHits     prometheus.Counter // poolGets, resolved once: on every cycle
	poolMisses   prometheus.Counter
	dials        *prometheus.CounterVec
	poolIdle     prometheus.GaugeFunc
	sigReceived  *prometheus.CounterVec
	sigDropped   *prometheus.CounterVec
	disconnects  *prometheus.CounterVec
	reconnects   *prometheus.CounterVec
	downtime     *prometheus.HistogramVec
	handlerTime  *prometheus.HistogramVec
	handlerDrops *prometheus.CounterVec

	mu      sync.Mutex
	clients map[*dfstream.Client]struct{}

	// The series of each kind (and key, with WithKeyLabel), resolved once:
	// a lookup by label values hashes them, and a lock cycle touches
	// several.
	seriesMu sync.RWMutex
	series   map[seriesKey]*streamSeries
}

type seriesKey struct{ kind, key string }

// streamSeries are the per-stream series of one kind (and key).
type streamSeries struct {
	lv                                       []string
	grants, releases, reacquires, renewFails prometheus.Counter
	held, queued                             prometheus.Gauge
	renewRTT, holdReleased, holdLost         prometheus.Observer
	waitGranted                              prometheus.Observer
}

var _ dfstream.Observer = (*Metrics)(nil)
var _ prometheus.Collector = (*Metrics)(nil)

// New returns a Metrics, registered with the Registerer of WithRegisterer
// if given.
func New(opts ...Option) (*Metrics, error) {
	cfg := config{buckets: DefaultBuckets}
	for _, o := range opts {
		o(&cfg)
	}
	m := &Metrics{
		keyLabel: cfg.keyLabel,
		clients:  map[*dfstream.Client]struct{}{},
		series:   map[seriesKey]*streamSeries{},
	}
	stream := func(extra ...string) []string {
		l := []string{"kind"}
		if cfg.keyLabel {
			l = append(l, "key")
		}
		return append(l, extra...)
	}
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	}
	gauge := func(name, help string, labels ...string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
	}
	histogram := func(name, help string, labels ...string) *prometheus.HistogramVec {
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: cfg.buckets}, labels)
	}
	m.acquireWait = histogram("dfstream_acquire_wait_seconds", "Time from the start of an acquire round to its grant or failure.", stream("outcome")...)
	m.grants = counter("dfstream_grants_total", "Keys granted to lock and semaphore streams.", stream()...)
	m.reacquires = counter("dfstream_reacquire_attempts_total", "Acquire rounds started again after a loss or a failed round (WithReacquire).", stream()...)
	m.queued = gauge("dfstream_queued_streams", "Streams waiting in a server's queue.", stream()...)
	m.held = gauge("dfstream_held_streams", "Streams holding their key.", stream()...)
	m.holdDuration = histogram("dfstream_hold_duration_seconds", "How long keys were held, by how the hold ended.", stream("end")...)
	m.renewRTT = histogram("dfstream_renewal_round_trip_seconds", "Round trip of answered lease renewals.", stream()...)
	m.renewFails = counter("dfstream_renewal_failures_total", "Renewals that got no answer (connection lost, deadline passed).", stream()...)
	m.losses = counter("dfstream_losses_total", "Held keys lost, by reason.", stream("reason")...)
	m.releases = counter("dfstream_releases_total", "Held keys released cleanly.", stream()...)
	m.poolGets = counter("dfstream_pool_gets_total", "Connections taken by lock and semaphore streams: from the pool (hit) or to be dialled (miss).", "result")
	m.poolHits, m.poolMisses = m.poolGets.WithLabelValues("hit"), m.poolGets.WithLabelValues("miss")
	m.dials = counter("dfstream_dials_total", "Lock connections dialled, by result.", "result")
	m.poolIdle = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "dfstream_pool_idle_connections",
		Help: "Idle lock connections kept in the Clients' pools.",
	}, m.idleConns)
	m.sigReceived = counter("dfstream_signals_received_total", "Signals read by signal streams, by subscription.", "pattern", "group")
	m.sigDropped = counter("dfstream_signals_dropped_total", "Signals dropped by a signal stream's overflow policy, by the subscription of the signal that overflowed the buffer.", "pattern", "group")
	m.disconnects = counter("dfstream_signal_disconnects_total", "Signal connection outages (a loss, and the failed attempts that follow it, count once), by reason.", "server", "reason")
	m.reconnects = counter("dfstream_signal_reconnects_total", "Signal streams connected and subscribed again after a loss.", "server")
	m.downtime = histogram("dfstream_signal_reconnect_downtime_seconds", "How long signals may have been missed, per reconnection.", "server")
	m.handlerTime = histogram("dfstream_handler_duration_seconds", "Router handler run time, by outcome.", "pattern", "group", "outcome")
	m.handlerDrops = counter("dfstream_handler_dropped_total", "Signals dropped because a Router handler's queue was full.", "pattern", "group")
	if cfg.reg != nil {
		if err := cfg.reg.Register(m); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Option returns the dfstream.Option that makes a Client report to m.
func (m *Metrics) Option() dfstream.Option { return dfstream.WithObserver(m) }

func (m *Metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{
		m.acquireWait, m.grants, m.reacquires, m.queued, m.held, m.holdDuration,
		m.renewRTT, m.renewFails, m.losses, m.releases, m.poolGets, m.dials, m.poolIdle,
		m.sigReceived, m.sigDropped, m.disconnects, m.reconnects, m.downtime,
		m.handlerTime, m.handlerDrops,
	}
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range m.collectors() {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	for _, c := range m.collectors() {
		c.Collect(ch)
	}
}

func (m *Metrics) idleConns() float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for c := range m.clients {
		n += c.IdleConns()
	}
	return float64(n)
}

// of returns the per-stream series of s's kind (and key).
func (m *Metrics) of(s dfstream.StreamRef) *streamSeries {
	k := seriesKey{kind: s.Kind}
	if m.keyLabel {
		k.key = s.Key
	}
	m.seriesMu.RLock()
	ss := m.series[k]
	m.seriesMu.RUnlock()
	if ss != nil {
		return ss
	}
	lv := []string{s.Kind}
	if m.keyLabel {
		lv = append(lv, s.Key)
	}
	ss = &streamSeries{
		lv:         lv,
		grants:     m.grants.WithLabelValues(lv...),
		releases:   m.releases.WithLabelValues(lv...),
		reacquires: m.reacquires.WithLabelValues(lv...),
		renewFails: m.renewFails.WithLabelValues(lv...),
		held:       m.held.WithLabelValues(lv...),
		queued:     m.queued.WithLabelValues(lv...),
		renewRTT:   m.renewRTT.WithLabelValues(lv...),
	}
	ss.holdReleased = m.holdDuration.WithLabelValues(ss.with("released")...)
	ss.holdLost = m.holdDuration.WithLabelValues(ss.with("lost")...)
	ss.waitGranted = m.acquireWait.WithLabelValues(ss.with("granted")...)
	m.seriesMu.Lock()
	if old := m.series[k]; old != nil {
		ss = old
	} else {
		m.series[k] = ss
	}
	m.seriesMu.Unlock()
	return ss
}

// with returns the label values of ss followed by extra.
func (ss *streamSeries) with(extra string) []string {
	return append(ss.lv[:len(ss.lv):len(ss.lv)], extra)
}

// ClientOpened implements dfstream.Observer.
func (m *Metrics) ClientOpened(c *dfstream.Client) {
	m.mu.Lock()
	m.clients[c] = struct{}{}
	m.mu.Unlock()
}

// ClientClosed implements dfstream.Observer.
func (m *Metrics) ClientClosed(c *dfstream.Client) {
	m.mu.Lock()
	delete(m.clients, c)
	m.mu.Unlock()
}

// AcquireStarted implements dfstream.Observer.
func (m *Metrics) AcquireStarted(s dfstream.StreamRef, attempt int) {
	if attempt > 0 {
		m.of(s).reacquires.Inc()
	}
}

// AcquireQueued implements dfstream.Observer.
func (m *Metrics) AcquireQueued(s dfstream.StreamRef) {
	m.of(s).queued.Inc()
}

// AcquireEnded implements dfstream.Observer.
func (m *Metrics) AcquireEnded(s dfstream.StreamRef, wait time.Duration, queued bool, err error) {
	ss := m.of(s)
	if queued {
		ss.queued.Dec()
	}
	if err != nil {
		m.acquireWait.WithLabelValues(ss.with(acquireOutcome(err))...).Observe(wait.Seconds())
		return
	}
	ss.waitGranted.Observe(wait.Seconds())
	ss.grants.Inc()
	ss.held.Inc()
}

// Renewal implements dfstream.Observer.
func (m *Metrics) Renewal(s dfstream.StreamRef, rtt time.Duration, err error) {
	if err != nil {
		m.of(s).renewFails.Inc()
		return
	}
	m.of(s).renewRTT.Observe(rtt.Seconds())
}

// Lost implements dfstream.Observer.
func (m *Metrics) Lost(s dfstream.StreamRef, held time.Duration, reason error) {
	ss := m.of(s)
	ss.held.Dec()
	ss.holdLost.Observe(held.Seconds())
	m.losses.WithLabelValues(ss.with(LossReason(reason))...).Inc()
}

// Released implements dfstream.Observer.
func (m *Metrics) Released(s dfstream.StreamRef, held time.Duration) {
	ss := m.of(s)
	ss.held.Dec()
	ss.holdReleased.Observe(held.Seconds())
	ss.releases.Inc()
}

// PoolGet implements dfstream.Observer.
func (m *Metrics) PoolGet(_ string, hit bool) {
	if hit {
		m.poolHits.Inc()
		return
	}
	m.poolMisses.Inc()
}

// Dialed implements dfstream.Observer.
func (m *Metrics) Dialed(_ string, _ time.Duration, err error) {
	m.dials.WithLabelValues(pick(err == nil, "ok", "error")).Inc()
}

// SignalReceived implements dfstream.Observer.
func (m *Metrics) SignalReceived(pattern, group string, dropped bool) {
	m.sigReceived.WithLabelValues(pattern, group).Inc()
	if dropped {
		m.sigDropped.WithLabelValues(pattern, group).Inc()
	}
}

// Disconnected implements dfstream.Observer.
func (m *Metrics) Disconnected(server string, reason error) {
	r := "other"
	switch {
	case errors.Is(reason, dfstream.ErrSilentConnection):
		r = "silent"
	case errors.Is(reason, dfstream.ErrConnLost):
		r = "conn_lost"
	}
	m.disconnects.WithLabelValues(server, r).Inc()
}

// Reconnected implements dfstream.Observer.
func (m *Metrics) Reconnected(server string, down time.Duration, _ int) {
	m.reconnects.WithLabelValues(server).Inc()
	m.downtime.WithLabelValues(server).Observe(down.Seconds())
}

// HandlerDone implements dfstream.Observer.
func (m *Metrics) HandlerDone(pattern, group string, took time.Duration, err error) {
	outcome := "ok"
	switch {
	case err == nil:
	case errors.Is(err, dfstream.ErrHandlerPanic):
		outcome = "panic"
	case errors.Is(err, dfstream.ErrHandlerTimeout):
		outcome = "timeout"
	default:
		outcome = "error"
	}
	m.handlerTime.WithLabelValues(pattern, group, outcome).Observe(took.Seconds())
}

// HandlerDropped implements dfstream.Observer.
func (m *Metrics) HandlerDropped(pattern, group string) {
	m.handlerDrops.WithLabelValues(pattern, group).Inc()
}

// LossReason is the reason label of dfstream_losses_total for a Lost
// reason: conn_lost, renew_refused, deadline_passed, lease_expired or
// other.
func LossReason(err error) string {
	switch {
	case errors.Is(err, dfstream.ErrRenewRefused):
		return "renew_refused"
	case errors.Is(err, dfstream.ErrLeaseExpired):
		return "lease_expired"
	case errors.Is(err, dfstream.ErrDeadlinePassed):
		return "deadline_passed"
	case errors.Is(err, dfstream.ErrConnLost):
		return "conn_lost"
	}
	return "other"
}

// acquireOutcome is the outcome label of dfstream_acquire_wait_seconds.
func acquireOutcome(err error) string {
	switch {
	case err == nil:
		return "granted"
	case errors.Is(err, dfstream.ErrTimeout):
		return "timeout"
	case errors.Is(err, dfstream.ErrUnreachable):
		return "unreachable"
	case errors.Is(err, dfstream.ErrClosed), errors.Is(err, context.Canceled),
		errors.Is(err, context.DeadlineExceeded):
		return "cancelled"
	}
	return "error"
}

func pick(c bool, a, b string) string {
	if c {
		return a
	}
	return b
}
