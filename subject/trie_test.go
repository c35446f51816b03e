package subject

import (
	"fmt"
	"math/rand"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// hit is one visit made by Lookup.
type hit struct {
	pattern string
	v       int
}

func lookupAll(tr *Trie[int], subject string) []hit {
	var got []hit
	tr.Lookup(subject, func(p string, v int) { got = append(got, hit{p, v}) })
	return sortHits(got)
}

func sortHits(h []hit) []hit {
	slices.SortFunc(h, func(a, b hit) int {
		if c := strings.Compare(a.pattern, b.pattern); c != 0 {
			return c
		}
		return a.v - b.v
	})
	return h
}

// TestTrieCases runs every Match case through a trie holding only that
// pattern.
func TestTrieCases(t *testing.T) {
	t.Parallel()
	for _, tc := range matchCases {
		t.Run(tc.pattern+"|"+tc.subject, func(t *testing.T) {
			t.Parallel()
			var tr Trie[int]
			tr.Insert(tc.pattern, 7)
			var want []hit
			if tc.want {
				want = []hit{{tc.pattern, 7}}
			}
			assert.Equal(t, want, lookupAll(&tr, tc.subject))
		})
	}
}

// TestTrieAllCasesTogether puts every pattern of the table into one trie and
// checks that each subject gets exactly the patterns that match it.
func TestTrieAllCasesTogether(t *testing.T) {
	t.Parallel()
	var tr Trie[int]
	patterns := map[string]int{}
	for _, tc := range matchCases {
		if _, ok := patterns[tc.pattern]; !ok {
			patterns[tc.pattern] = len(patterns)
			tr.Insert(tc.pattern, patterns[tc.pattern])
		}
	}
	require.Equal(t, len(patterns), tr.Len())
	for _, tc := range matchCases {
		var want []hit
		for p, v := range patterns {
			if Match(p, tc.subject) {
				want = append(want, hit{p, v})
			}
		}
		got := lookupAll(&tr, tc.subject)
		assert.Equal(t, sortHits(want), got, "subject %q", tc.subject)
		assert.Equal(t, tc.want, slices.Contains(got, hit{tc.pattern, patterns[tc.pattern]}),
			"pattern %q subject %q", tc.pattern, tc.subject)
	}
}

func TestTrieZeroValue(t *testing.T) {
	t.Parallel()
	var tr Trie[string]
	assert.Zero(t, tr.Len())
	tr.Lookup("a.b", func(string, string) { t.Fatal("visit on empty trie") })
	assert.Zero(t, tr.Remove("a.b", nil))
	assert.Zero(t, tr.Len())
}

func TestTrieDuplicates(t *testing.T) {
	t.Parallel()
	var tr Trie[int]
	tr.Insert("a.*", 1)
	tr.Insert("a.*", 1)
	tr.Insert("a.*", 2)
	tr.Insert("a.b", 3)
	tr.Insert("a.>", 4)
	assert.Equal(t, 5, tr.Len())
	assert.Equal(t, []hit{{"a.*", 1}, {"a.*", 1}, {"a.*", 2}, {"a.>", 4}, {"a.b", 3}}, lookupAll(&tr, "a.b"))
	assert.Equal(t, []hit{{"a.>", 4}}, lookupAll(&tr, "a.b.c"))
	assert.Empty(t, lookupAll(&tr, "a"))
}

// TestTrieChecklist81 mirrors protocol.md checklist 81 from the router's side:
// one subscriber's three patterns all match a.b, each visited once.
func TestTrieChecklist81(t *testing.T) {
	t.Parallel()
	var tr Trie[string]
	for _, p := range []string{"a.b", "a.*", "a.>"} {
		tr.Insert(p, "conn1")
	}
	var got []string
	tr.Lookup("a.b", func(p, v string) { got = append(got, p+"="+v) })
	assert.ElementsMatch(t, []string{"a.b=conn1", "a.*=conn1", "a.>=conn1"}, got)
}

func TestTrieRemove(t *testing.T) {
	t.Parallel()
	var tr Trie[int]
	for i, p := range []string{"a", "a.b", "a.b", "a.*", "a.>", "*.b", ">", "a..b", "a.b.c"} {
		tr.Insert(p, i)
	}
	require.Equal(t, 9, tr.Len())

	// Exactly the pattern, not patterns matching it as a subject.
	assert.Zero(t, tr.Remove("a.c", nil), "no such pattern")
	assert.Zero(t, tr.Remove("a.b.c.d", nil), "deeper than any pattern")
	assert.Zero(t, tr.Remove("a.b", func(int) bool { return false }))
	assert.Equal(t, 9, tr.Len())

	// Only values the predicate selects.
	assert.Equal(t, 1, tr.Remove("a.b", func(v int) bool { return v == 2 }))
	assert.Equal(t, 8, tr.Len())
	assert.Equal(t, []hit{{"*.b", 5}, {">", 6}, {"a.*", 3}, {"a.>", 4}, {"a.b", 1}}, lookupAll(&tr, "a.b"))

	// Removing "a.*" leaves the literal "a.b" and "a.>" alone.
	assert.Equal(t, 1, tr.Remove("a.*", nil))
	assert.Equal(t, []hit{{"*.b", 5}, {">", 6}, {"a.>", 4}, {"a.b", 1}}, lookupAll(&tr, "a.b"))
	assert.Nil(t, tr.root.children["a"].star, "star branch pruned")

	// Removing a prefix pattern keeps its descendants.
	assert.Equal(t, 1, tr.Remove("a", nil))
	assert.Equal(t, []hit{{">", 6}}, lookupAll(&tr, "a"))
	assert.Equal(t, []hit{{">", 6}, {"a.>", 4}, {"a.b.c", 8}}, lookupAll(&tr, "a.b.c"))
	assert.NotNil(t, tr.root.children["a"], "interior node with descendants kept")

	// Remove everything; the trie must shrink back to its zero value.
	for _, p := range []string{"a.b", "a.>", "*.b", ">", "a..b", "a.b.c"} {
		assert.Equal(t, 1, tr.Remove(p, nil), p)
	}
	assert.Zero(t, tr.Len())
	assert.Equal(t, node[int]{}, tr.root, "every node pruned")
	tr.Lookup("a.b", func(string, int) { t.Fatal("visit after removing everything") })
}

func TestTrieRemovePrunesDeepChain(t *testing.T) {
	t.Parallel()
	var tr Trie[int]
	tr.Insert("a.*.c.>", 1)
	tr.Insert("a.*.c", 2)
	assert.Equal(t, 1, tr.Remove("a.*.c.>", nil))
	c := tr.root.children["a"].star.children["c"]
	require.NotNil(t, c)
	assert.Nil(t, c.gt, "> leaf pruned")
	assert.Equal(t, []int{2}, c.values)
	assert.Equal(t, 1, tr.Remove("a.*.c", nil))
	assert.Equal(t, node[int]{}, tr.root)
}

// TestTrieRemoveReleasesValues checks that removed values are not kept alive
// by the backing array of a node's value slice.
func TestTrieRemoveReleasesValues(t *testing.T) {
	t.Parallel()
	var tr Trie[*int]
	vals := []*int{new(int), new(int), new(int)}
	for _, v := range vals {
		tr.Insert("a", v)
	}
	n := tr.root.children["a"]
	backing := n.values[:cap(n.values)]
	assert.Equal(t, 2, tr.Remove("a", func(v *int) bool { return v != vals[1] }))
	assert.Equal(t, []*int{vals[1]}, n.values)
	for _, v := range backing[1:] {
		assert.Nil(t, v)
	}
}

// model is the trivially correct reference for a Trie: a list of inserted
// (pattern, value) pairs scanned with Match.
type model []hit

func (m model) lookup(subject string) []hit {
	var out []hit
	for _, h := range m {
		if Match(h.pattern, subject) {
			out = append(out, h)
		}
	}
	return sortHits(out)
}

// allSubjects enumerates every subject of 1–4 tokens over subjectTokens.
func allSubjects() []string {
	var out []string
	var gen func(prefix string, depth int)
	gen = func(prefix string, depth int) {
		for _, tok := range subjectTokens {
			s := prefix + tok
			out = append(out, s)
			if depth < 4 {
				gen(s+".", depth+1)
			}
		}
	}
	gen("", 1)
	return out
}

// TestTrieProperty checks, for random sequences of Insert and Remove over a
// small alphabet, that Lookup returns exactly the inserted (pattern, value)
// pairs whose pattern Match accepts, for every subject of up to four tokens.
// The invalid variant mixes in patterns wire.ValidatePattern would reject,
// on which Match and Trie must still agree.
func TestTrieProperty(t *testing.T) {
	t.Parallel()
	subjects := allSubjects()
	require.Len(t, subjects, 4+16+64+256)
	for _, invalid := range []bool{false, true} {
		for seed := int64(1); seed <= 20; seed++ {
			t.Run(fmt.Sprintf("invalid=%v/seed=%d", invalid, seed), func(t *testing.T) {
				t.Parallel()
				rng := rand.New(rand.NewSource(seed))
				var tr Trie[int]
				var m model
				for round := range 6 {
					for i := range 40 {
						h := hit{randPattern(rng, invalid), round*1000 + i}
						tr.Insert(h.pattern, h.v)
						m = append(m, h)
					}
					// Remove about a third of the values of a few patterns.
					for range 10 {
						p := m[rng.Intn(len(m))].pattern
						if rng.Intn(5) == 0 {
							p = randPattern(rng, invalid) // maybe absent
						}
						odd := rng.Intn(2) == 0
						sel := func(v int) bool { return (v%2 == 1) == odd }
						want := 0
						m = slices.DeleteFunc(m, func(h hit) bool {
							if h.pattern == p && sel(h.v) {
								want++
								return true
							}
							return false
						})
						require.Equal(t, want, tr.Remove(p, sel), "Remove(%q)", p)
					}
					require.Equal(t, len(m), tr.Len())
					for _, s := range subjects {
						require.Equal(t, m.lookup(s), lookupAll(&tr, s), "subject %q", s)
					}
				}
				// Drain: the trie must end up as its zero value.
				for len(m) > 0 {
					p := m[0].pattern
					want := len(m)
					m = slices.DeleteFunc(m, func(h hit) bool { return h.pattern == p })
					require.Equal(t, want-len(m), tr.Remove(p, nil))
				}
				require.Zero(t, tr.Len())
				require.Equal(t, node[int]{}, tr.root)
			})
		}
	}
}

// TestTrieConcurrentLookup exercises the documented guarantee that a built
// trie serves concurrent Lookups (meaningful under -race).
func TestTrieConcurrentLookup(t *testing.T) {
	t.Parallel()
	var tr Trie[int]
	for i, p := range []string{"a.b", "a.*", "a.>", ">", "*.b", "x.y.z"} {
		tr.Insert(p, i)
	}
	var wg sync.WaitGroup
	counts := make([]int, 8)
	for g := range counts {
		wg.Go(func() {
			for range 1000 {
				tr.Lookup("a.b", func(string, int) { counts[g]++ })
			}
		})
	}
	wg.Wait()
	for _, c := range counts {
		assert.Equal(t, 5*1000, c)
	}
}

func TestTrieLookupDoesNotAllocate(t *testing.T) {
	// Not parallel: AllocsPerRun counts every allocation in the process, and
	// sequential top-level tests run while no parallel test is running.
	var tr Trie[int]
	for i, p := range []string{
		"orders.eu.created", "orders.*.created", "orders.>", "*.eu.*", ">",
		"orders.eu.created.v1", "orders..created", "a.*.*.*.*", "orders.*.*.>",
	} {
		tr.Insert(p, i)
	}
	subjects := []string{"orders.eu.created", "orders.eu.created.v1", "orders..created", "nothing", "a.b.c.d.e", ""}
	n := 0
	visit := func(string, int) { n++ }
	for _, s := range subjects {
		allocs := testing.AllocsPerRun(1000, func() { tr.Lookup(s, visit) })
		assert.Zero(t, allocs, "subject %q", s)
	}
	assert.Positive(t, n)
}
