package dflockdtest

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type testSub struct {
	*subscriber
	cancelled int
}

func newTestSub(id uint64) *testSub {
	ts := &testSub{subscriber: &subscriber{id: id, pq: newPushQueue()}}
	ts.cancel = func() { ts.cancelled++ }
	return ts
}

func (ts *testSub) take() []string {
	raw := string(ts.pq.drain(nil, false))
	if raw == "" {
		return nil
	}
	out := strings.SplitAfter(raw, "\n")
	return out[:len(out)-1] // the last element is the empty rest after the final LF
}

func TestHubTrieMatchesReference(t *testing.T) {
	t.Parallel()
	patterns := []string{
		">", "*", "*.*", "a", "a.b", "a.*", "a.>", "*.b", "*.>", "a.*.c", "a.b.c", "a..b", ".", "a.*.>",
		"*.*.*", "b.>", "a.b.>", "x",
	}
	channels := []string{
		"a", "b", "x", "a.b", "a.c", "b.b", "a.b.c", "a.x.c", "a.b.d", "a..b", ".", "..", "a.", ".a",
		"a.b.c.d", "b.c.d", "q.b",
	}
	h := newHub()
	subs := make([]*testSub, len(patterns))
	for i, p := range patterns {
		subs[i] = newTestSub(uint64(i + 1))
		require.True(t, h.listen(subs[i].subscriber, []byte(p), nil, 0))
	}
	for _, ch := range channels {
		n := h.signal([]byte(ch), []byte("p"))
		want := 0
		for i, p := range patterns {
			got := subs[i].take()
			if matchPattern(p, ch) {
				want++
				assert.Equal(t, []string{"sig " + ch + " p\n"}, got, "%q should receive %q", p, ch)
			} else {
				assert.Empty(t, got, "%q should not receive %q", p, ch)
			}
		}
		assert.Equal(t, want, n, "receivers of %q", ch)
	}
	// Unlisten everything: the trie is pruned back to an empty root.
	for i, p := range patterns {
		h.unlisten(subs[i].subscriber, []byte(p), nil)
	}
	assert.True(t, h.root.empty())
	assert.Empty(t, h.entries)
	assert.Nil(t, h.stats())
}

func TestHubPlainDeliveryOncePerConnection(t *testing.T) {
	t.Parallel()
	h := newHub()
	l := newTestSub(1)
	for _, p := range []string{"a.b", "a.*", "a.>"} {
		require.True(t, h.listen(l.subscriber, []byte(p), nil, 0))
	}
	assert.Equal(t, 1, h.signal([]byte("a.b"), []byte("x")))
	assert.Len(t, l.take(), 1)

	require.True(t, h.listen(l.subscriber, []byte("a.b"), []byte("g"), 0))
	require.True(t, h.listen(l.subscriber, []byte("a.*"), []byte("g"), 0))
	assert.Equal(t, 3, h.signal([]byte("a.b"), []byte("x")), "plain + two distinct groups")
	assert.Len(t, l.take(), 3)

	require.True(t, h.listen(l.subscriber, []byte("a.b"), nil, 0), "duplicate listen is ok")
	assert.Equal(t, 3, h.signal([]byte("a.b"), []byte("x")))
	l.take()

	h.unlisten(l.subscriber, []byte("a.b"), []byte("g"))
	assert.Equal(t, 2, h.signal([]byte("a.b"), []byte("x")), "unlisten with group keeps the plain one")
	h.unlisten(l.subscriber, []byte("nope"), nil)
	h.removeAll(l.subscriber)
	assert.Equal(t, 0, h.signal([]byte("a.b"), []byte("x")))
	assert.True(t, h.root.empty())
}

func TestHubGroupRoundRobin(t *testing.T) {
	t.Parallel()
	h := newHub()
	l, m, n := newTestSub(1), newTestSub(2), newTestSub(3)
	for _, s := range []*testSub{l, m, n} {
		require.True(t, h.listen(s.subscriber, []byte("a.b"), []byte("g"), 0))
	}
	var order []uint64
	for i := 0; i < 6; i++ {
		require.Equal(t, 1, h.signal([]byte("a.b"), []byte(fmt.Sprint(i))))
		for _, s := range []*testSub{l, m, n} {
			if len(s.take()) > 0 {
				order = append(order, s.id)
			}
		}
	}
	assert.Equal(t, []uint64{1, 2, 3, 1, 2, 3}, order, "round robin in join order")

	// Removal shifts positions; the counter persists (it is at 6).
	h.unlisten(m.subscriber, []byte("a.b"), []byte("g"))
	order = order[:0]
	for i := 0; i < 4; i++ {
		h.signal([]byte("a.b"), []byte("x"))
		for _, s := range []*testSub{l, n} {
			if len(s.take()) > 0 {
				order = append(order, s.id)
			}
		}
	}
	assert.Equal(t, []uint64{1, 3, 1, 3}, order)

	st := h.stats()
	assert.Equal(t, []signalChannelInfo{{Pattern: "a.b", Group: "g", Listeners: 2}}, st)
}

func TestHubSlowListenerPolicy(t *testing.T) {
	t.Parallel()
	h := newHub()
	slow, other := newTestSub(1), newTestSub(2)
	require.True(t, h.listen(slow.subscriber, []byte("c"), nil, 0))
	for i := 0; i < pushQueueLen; i++ {
		require.Equal(t, 1, h.signal([]byte("c"), []byte("x")))
	}
	assert.Zero(t, slow.cancelled)
	assert.Equal(t, 0, h.signal([]byte("c"), []byte("x")), "full queue: dropped, not counted")
	assert.Equal(t, 1, slow.cancelled, "and the connection's context is cancelled")
	assert.Equal(t, pushQueueLen, slow.pq.len())

	// Groups: a full chosen member passes to the next; all full: nothing,
	// the chosen one is cancelled.
	require.True(t, h.listen(slow.subscriber, []byte("g.x"), []byte("grp"), 0))
	require.True(t, h.listen(other.subscriber, []byte("g.x"), []byte("grp"), 0))
	assert.Equal(t, 1, h.signal([]byte("g.x"), []byte("x")))
	assert.Len(t, other.take(), 1, "the full member was skipped")
	for i := 0; i < pushQueueLen; i++ {
		other.pq.push([]byte("filler\n"))
	}
	slow.cancelled = 0
	assert.Equal(t, 0, h.signal([]byte("g.x"), []byte("x")))
	assert.Equal(t, 1, slow.cancelled+other.cancelled)
	assert.Equal(t, 0, other.cancelled+slow.cancelled-1)

	// Muted or dead listeners swallow pushes but are counted.
	m := newTestSub(3)
	require.True(t, h.listen(m.subscriber, []byte("mute"), nil, 0))
	m.muted.Store(true)
	assert.Equal(t, 1, h.signal([]byte("mute"), []byte("x")))
	assert.Zero(t, m.pq.len())
	m.muted.Store(false)
	m.dead.Store(true)
	assert.Equal(t, 1, h.signal([]byte("mute"), []byte("x")))
	assert.Zero(t, m.pq.len())
}

func TestHubMaxSubscriptions(t *testing.T) {
	t.Parallel()
	h := newHub()
	s := newTestSub(1)
	require.True(t, h.listen(s.subscriber, []byte("a"), nil, 2))
	require.True(t, h.listen(s.subscriber, []byte("b"), nil, 2))
	assert.False(t, h.listen(s.subscriber, []byte("c"), nil, 2))
	assert.False(t, h.listen(s.subscriber, []byte("a"), nil, 2), "checked before the duplicate test")
	assert.Equal(t, []string{"a", "b"}, h.subscriptions(s.subscriber))
}

func TestHubStatsShape(t *testing.T) {
	t.Parallel()
	h := newHub()
	a, c := newTestSub(1), newTestSub(2)
	h.listen(a.subscriber, []byte("z.>"), nil, 0)
	h.listen(c.subscriber, []byte("z.>"), nil, 0)
	h.listen(a.subscriber, []byte("z.>"), []byte("w k"), 0)
	h.listen(a.subscriber, []byte("a"), []byte("g"), 0)
	assert.Equal(t, []signalChannelInfo{
		{Pattern: "a", Group: "g", Listeners: 1},
		{Pattern: "z.>", Listeners: 2},
		{Pattern: "z.>", Group: "w k", Listeners: 1},
	}, h.stats())
	assert.Equal(t, []string{"z.>", "z.> w k", "a g"}, h.subscriptions(a.subscriber))
}
