package dfstream

import (
	"bufio"
	"context"
	"fmt"
	"math/rand"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/dfstream/dfstream/wire"
)

// WildcardCase is one row of the wildcard table: a pattern and the channels
// of WildcardChannels it matches, by the server's rules (protocol.md §4).
type WildcardCase struct {
	Pattern string
	Matches []string
}

// WildcardChannels are the channels every row of WildcardTable is checked
// against.
var WildcardChannels = []string{"a", "b", "a.b", "a.c", "b.b", "a.b.c", "a.c.c", "a.b.c.d", "a..b", "a.", "x.y.z"}

// WildcardTable is written out by hand (not computed with subject.Match), so
// that the router's trie and the server are both checked against the
// specification rather than against each other.
var WildcardTable = []WildcardCase{
	// exact
	{"a", []string{"a"}},
	{"a.b", []string{"a.b"}},
	{"a.b.c", []string{"a.b.c"}},
	{"a..b", []string{"a..b"}},
	// "*": exactly one token, possibly empty
	{"*", []string{"a", "b"}},
	{"a.*", []string{"a.b", "a.c", "a."}},
	{"*.b", []string{"a.b", "b.b"}},
	{"*.*", []string{"a.b", "a.c", "b.b", "a."}},
	{"a.*.c", []string{"a.b.c", "a.c.c"}},
	{"*.*.*", []string{"a.b.c", "a.c.c", "a..b", "x.y.z"}},
	// ">": one or more trailing tokens
	{">", WildcardChannels},
	{"a.>", []string{"a.b", "a.c", "a.b.c", "a.c.c", "a.b.c.d", "a..b", "a."}},
	{"a.b.>", []string{"a.b.c", "a.b.c.d"}},
	// mixed
	{"*.b.>", []string{"a.b.c", "a.b.c.d"}},
	{"a.*.>", []string{"a.b.c", "a.c.c", "a.b.c.d", "a..b"}},
	{"*.>", []string{"a.b", "a.c", "b.b", "a.b.c", "a.c.c", "a.b.c.d", "a..b", "a.", "x.y.z"}},
	// non-matches only (among these channels)
	{"b.a", nil},
	{"a.b.c.d.e", nil},
	{"z.>", nil},
	{"*.*.*.*.*", nil},
}

// RouterMatch returns the patterns of r's plain handlers that match channel,
// sorted, through the router's own match path.
func RouterMatch(r *Router, channel string) []string {
	var out []string
	r.match(channel, func(p string, _ *route) { out = append(out, p) })
	slices.Sort(out)
	return out
}

func TestRouterTrieFollowsTheWildcardTable(t *testing.T) {
	t.Parallel()
	c, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r, err := NewRouter(c)
	if err != nil {
		t.Fatal(err)
	}
	nop := HandlerFunc(func(context.Context, Signal) error { return nil })
	for _, tc := range WildcardTable {
		if err := r.Handle(tc.Pattern, nop); err != nil {
			t.Fatalf("Handle(%q): %v", tc.Pattern, err)
		}
	}
	for _, ch := range WildcardChannels {
		var want []string
		for _, tc := range WildcardTable {
			if slices.Contains(tc.Matches, ch) {
				want = append(want, tc.Pattern)
			}
		}
		slices.Sort(want)
		got := RouterMatch(r, ch)
		if !slices.Equal(got, want) {
			t.Errorf("channel %q: router matched %q, table says %q", ch, got, want)
		}
	}
}

// benchRouterPatterns returns n distinct patterns of mixed shapes over a
// realistic vocabulary: about half literal, 30% with "*", 20% with a ">"
// tail (the same mix as subject's benchmark).
func benchRouterPatterns(rng *rand.Rand, n int) []string {
	levels := [][]string{
		{"orders", "users", "payments", "inventory", "metrics", "logs", "jobs", "cache", "audit", "billing"},
		{"eu", "us", "ap", "sa", "af", "me", "cn", "au"},
		{"cart", "invoice", "session", "sku", "host", "queue", "token", "refund", "shipment", "profile", "disk", "cpu"},
		{"created", "updated", "deleted", "failed", "retried", "expired"},
		{"v1", "v2", "v3", "shard0", "shard1"},
	}
	tokens := func(k int) []string {
		out := make([]string, k)
		for i := range out {
			out[i] = levels[i][rng.Intn(len(levels[i]))]
		}
		return out
	}
	seen := map[string]bool{}
	var out []string
	for len(out) < n {
		var toks []string
		switch r := rng.Intn(10); {
		case r < 5:
			toks = tokens(2 + rng.Intn(4))
		case r < 8:
			toks = tokens(2 + rng.Intn(4))
			for range 1 + rng.Intn(2) {
				toks[rng.Intn(len(toks))] = "*"
			}
		default:
			toks = append(tokens(1+rng.Intn(3)), ">")
		}
		p := strings.Join(toks, ".")
		if strings.Trim(p, "*.>") == "" || seen[p] {
			continue
		}
		seen[p] = true
		out = append(out, p)
	}
	subjects := make([]string, 64)
	for i := range subjects {
		subjects[i] = strings.Join(tokens(2+rng.Intn(4)), ".")
		if i%8 == 7 {
			subjects[i] = "unknown." + subjects[i]
		}
	}
	return append(out, subjects...)
}

// BenchmarkRouterMatch measures the Router's own match path (the trie
// lookup its dispatcher runs for every signal on the plain connection) with
// 1,000 registered handlers of mixed pattern shapes, one lookup per
// iteration over 64 rotating channels. matches/s is lookups per second on
// one goroutine.
//
//	go test -run '^$' -bench 'RouterMatch' -benchmem -cpu 1 .
func BenchmarkRouterMatch(b *testing.B) {
	rng := rand.New(rand.NewSource(42))
	all := benchRouterPatterns(rng, 1000)
	patterns, subjects := all[:1000], all[1000:]
	c, err := New()
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	r, err := NewRouter(c)
	if err != nil {
		b.Fatal(err)
	}
	nop := HandlerFunc(func(context.Context, Signal) error { return nil })
	for _, p := range patterns {
		if err := r.Handle(p, nop); err != nil {
			b.Fatal(err)
		}
	}
	var none, multi int
	for _, s := range subjects {
		switch n := len(RouterMatch(r, s)); {
		case n == 0:
			none++
		case n > 1:
			multi++
		}
	}
	if none == 0 || multi == 0 {
		b.Fatalf("unrealistic workload: %d channels match nothing, %d several", none, multi)
	}
	hits := 0
	visit := func(string, *route) { hits++ }
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r.match(subjects[i&63], visit)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "matches/s")
	b.ReportMetric(float64(hits)/float64(b.N), "hits/op")
}

// TestRouterMatchDoesNotAllocate guards the zero-allocation match path,
// including the closure the dispatcher passes.
func TestRouterMatchDoesNotAllocate(t *testing.T) {
	c, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r, err := NewRouter(c)
	if err != nil {
		t.Fatal(err)
	}
	nop := HandlerFunc(func(context.Context, Signal) error { return nil })
	for _, p := range []string{"a.b", "a.*", "a.>", ">", "*.b.c"} {
		if err := r.Handle(p, nop); err != nil {
			t.Fatal(err)
		}
	}
	hits := 0
	sig := Signal{Channel: "a.b"}
	allocs := testing.AllocsPerRun(1000, func() {
		r.match(sig.Channel, func(p string, rt *route) {
			s := sig
			s.Pattern = p
			if rt != nil && s.Pattern != "" {
				hits++
			}
		})
	})
	if allocs != 0 {
		t.Fatalf("match allocates %v times per call", allocs)
	}
	if hits == 0 {
		t.Fatal("no match")
	}
}

// TestRouterDropOldestCountsOnlyEvictedSignals offers signals to a queue of
// one that a worker drains at the same time: a drop is counted only when a
// signal was really evicted, so every signal is handled or dropped, once.
func TestRouterDropOldestCountsOnlyEvictedSignals(t *testing.T) {
	const n = 100000
	r := &Router{}
	rt := &route{pattern: "a", cfg: handlerConfig{workers: 1, queue: 1, policy: DropOldest}, q: make(chan Signal, 1)}
	handled := make(chan int)
	go func() {
		k := 0
		for range rt.q {
			k++
		}
		handled <- k
	}()
	var touched []*route
	for range n {
		touched = r.offer(rt, Signal{Channel: "a"}, touched)
	}
	close(rt.q)
	h := <-handled
	t.Logf("handled %d, dropped %d", h, rt.dropped.Load())
	if got := uint64(h) + rt.dropped.Load(); got != n || r.dropped.Load() != rt.dropped.Load() {
		t.Fatalf("handled %d + dropped %d = %d, want %d (router dropped %d)", h, rt.dropped.Load(), got, n, r.dropped.Load())
	}
}

// TestSignalActorAnswersEveryCallWhenAReplyToALostConnectionEndsIt drives a
// signal actor by hand through the order of events the scheduler rarely
// picks: on a new connection, the server rejects a resubscription (which
// ends the stream) and drops the connection right after, with a user's
// Listen in flight, and the actor sees the connection gone before the
// reply. The Listen must still be answered.
func TestSignalActorAnswersEveryCallWhenAReplyToALostConnectionEndsIt(t *testing.T) {
	c, err := New(WithServers("127.0.0.1:1"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cli, srv := net.Pipe()
	s := &SignalStream{c: c, cfg: defaultSignalConfig(), log: zerolog.Nop(), done: make(chan struct{})}
	s.cfg.heartbeat = 0
	s.box = newSigInbox(s.cfg.eventBuffer, s.cfg.buffer, s.cfg.policy)
	s.subs.Store(&subSnapshot{})
	_, s.cancel = context.WithCancelCause(context.Background())
	a := &sigActor{
		s: s, conn: wire.NewConn(cli),
		hb: time.NewTimer(time.Hour), retry: time.NewTimer(time.Hour),
		dialRes:  make(chan dialResult, 1),
		waiters:  make(map[subKey][]*sigCmd),
		subIndex: make(map[subKey]int),
	}
	defer a.hb.Stop()

	// The server reads both listens, rejects the first, and hangs up.
	go func() {
		rd := bufio.NewReader(srv)
		for range 6 {
			if _, err := rd.ReadString('\n'); err != nil {
				return
			}
		}
		_, _ = srv.Write([]byte("error\n"))
		_ = srv.Close()
	}()
	key := subKey{pattern: "a"}
	a.addSub(key)
	req, _ := wire.Listen("a", "")
	a.send(inflight{kind: callResub, key: key}, req)
	listen := &sigCmd{op: opListen, key: subKey{pattern: "b"}, reply: make(chan cmdResult, 1)}
	listen.req, _ = wire.Listen("b", "")
	a.command(listen)

	<-a.conn.Done()
	a.lost(fmt.Errorf("%w: test", ErrConnLost)) // as run does on connDone
	if !a.ended {
		t.Fatal("the rejected resubscription did not end the stream")
	}
	a.finish()
	select {
	case r := <-listen.reply:
		if r.err == nil {
			t.Fatal("the Listen that never took effect succeeded")
		}
	default:
		t.Fatal("the Listen in flight was never answered")
	}
}
