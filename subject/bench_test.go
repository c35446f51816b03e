package subject

import (
	"math/rand"
	"strings"
	"testing"
)

// Vocabulary of realistic subjects: domain.region.entity.action.version.
var benchLevels = [][]string{
	{"orders", "users", "payments", "inventory", "metrics", "logs", "jobs", "cache", "audit", "billing"},
	{"eu", "us", "ap", "sa", "af", "me", "cn", "au"},
	{"cart", "invoice", "session", "sku", "host", "queue", "token", "refund", "shipment", "profile", "disk", "cpu"},
	{"created", "updated", "deleted", "failed", "retried", "expired"},
	{"v1", "v2", "v3", "shard0", "shard1"},
}

// benchPatterns returns n distinct patterns of mixed shapes: literals of 2–5
// tokens (about half), "*" in one or two positions (about 30%), and ">"
// tails after 1–3 leading tokens (about 20%).
func benchPatterns(rng *rand.Rand, n int) []string {
	seen := make(map[string]bool, n)
	out := make([]string, 0, n)
	for len(out) < n {
		var toks []string
		switch r := rng.Intn(10); {
		case r < 5: // literal
			toks = benchTokens(rng, 2+rng.Intn(4))
		case r < 8: // one or two "*"
			toks = benchTokens(rng, 2+rng.Intn(4))
			for range 1 + rng.Intn(2) {
				toks[rng.Intn(len(toks))] = "*"
			}
		default: // ">" tail, possibly after a "*"
			toks = benchTokens(rng, 1+rng.Intn(3))
			if len(toks) > 1 && rng.Intn(3) == 0 {
				toks[rng.Intn(len(toks))] = "*"
			}
			toks = append(toks, ">")
		}
		p := strings.Join(toks, ".")
		if !strings.ContainsFunc(p, func(r rune) bool { return r >= 'a' && r <= 'z' }) {
			continue // all wildcards ("*.*", "*.>"): matches too much to be realistic
		}
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}

func benchTokens(rng *rand.Rand, n int) []string {
	toks := make([]string, n)
	for i := range toks {
		toks[i] = benchLevels[i][rng.Intn(len(benchLevels[i]))]
	}
	return toks
}

// benchSubjects returns n subjects of 2–5 tokens from the same vocabulary,
// with about one in eight made of unknown tokens so that only an
// all-wildcard pattern could match it (and none is registered).
func benchSubjects(rng *rand.Rand, n int) []string {
	out := make([]string, n)
	for i := range out {
		toks := benchTokens(rng, 2+rng.Intn(4))
		if i%8 == 7 {
			for j := range toks {
				toks[j] = "unknown" + toks[j]
			}
		}
		out[i] = strings.Join(toks, ".")
	}
	return out
}

// BenchmarkRouterMatch measures Trie.Lookup, the router's hot path: 1,000
// registered patterns, one lookup per iteration over a rotating set of 64
// subjects. It reports lookups per second as matches/s and the mean number of
// handlers reached per lookup as hits/op.
func BenchmarkRouterMatch(b *testing.B) {
	rng := rand.New(rand.NewSource(42))
	var tr Trie[int]
	for i, p := range benchPatterns(rng, 1000) {
		tr.Insert(p, i)
	}
	subjects := benchSubjects(rng, 64)

	// Sanity: the workload has subjects with several matches and with none.
	var multi, none int
	for _, s := range subjects {
		k := 0
		tr.Lookup(s, func(string, int) { k++ })
		switch {
		case k == 0:
			none++
		case k > 1:
			multi++
		}
	}
	if multi == 0 || none == 0 {
		b.Fatalf("unrealistic workload: %d subjects with several matches, %d with none", multi, none)
	}

	hits := 0
	visit := func(string, int) { hits++ }
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		tr.Lookup(subjects[i&63], visit)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "matches/s")
	b.ReportMetric(float64(hits)/float64(b.N), "hits/op")
}
