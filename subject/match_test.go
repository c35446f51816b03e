package subject

import (
	"math/rand"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

// matchCases is shared by the Match and Trie tests: every case must hold for
// both.
var matchCases = []struct {
	pattern, subject string
	want             bool
}{
	// Exact literals.
	{"a", "a", true},
	{"a.b", "a.b", true},
	{"a.b.c.d.e", "a.b.c.d.e", true},
	{"a.b", "a.c", false},
	{"a.b", "a", false},
	{"a", "a.b", false},
	{"a.b", "a.b.c", false},
	{"ab", "a", false},
	{"a", "ab", false},
	{"a.b", "ab", false},
	{"A", "a", false}, // byte-wise, case-sensitive

	// "*": exactly one token, possibly empty (checklist 80).
	{"a.*", "a.c", true},
	{"a.*", "a.b.c", false},
	{"a.*", "a", false},
	{"a.*", "a.", true}, // "a." is "a", ""
	{"*", "a", true},    // every one-token channel
	{"*", "abc", true},
	{"*", "", true},
	{"*", "a.b", false},
	{"*", ".", false},
	{"*.b", "a.b", true},
	{"*.b", ".b", true},
	{"*.b", "a.c", false},
	{"a.*.c", "a.b.c", true},
	{"a.*.c", "a..c", true},
	{"a.*.c", "a.b.d", false},
	{"a.*.c", "a.b.b.c", false},
	{"*.*", "a.b", true},
	{"*.*", ".", true},
	{"*.*", "a", false},
	{"*.*", "a.b.c", false},

	// ">": one or more trailing tokens (checklist 80).
	{"a.>", "a.b", true},
	{"a.>", "a.b.c", true},
	{"a.>", "a", false},
	{"a.>", "a.", true}, // one empty trailing token
	{"a.>", "b.c", false},
	{"a.>", "ab.c", false},
	{">", "a", true}, // ">" alone matches every channel
	{">", "a.b.c.d", true},
	{">", ".", true},
	{">", "", true},
	{"a.b.>", "a.b", false},
	{"a.b.>", "a.b.c.d.e", true},

	// Mixed.
	{"*.>", "a.b", true},
	{"*.>", "a", false},
	{"a.*.>", "a.b.c", true},
	{"a.*.>", "a.b", false},
	{"a.*.>", "a.b.c.d", true},
	{"*.b.>", "x.b.c", true},
	{"*.b.>", "x.c.c", false},
	{"*.*.*", "a.b.c", true},
	{"*.*.*", "a.b", false},

	// Empty tokens.
	{"a..b", "a..b", true},
	{"a..b", "a.b", false},
	{"a..b", "a.x.b", false},
	{".", ".", true},
	{".", "", false},
	{"..", "..", true},
	{"a.", "a.", true},
	{"a.", "a", false},
	{".a", ".a", true},
	{"", "", true},
	{"", "a", false},

	// Invalid patterns (rejected by the wire package) still behave
	// deterministically: partial wildcards are literal, a non-final ">"
	// never matches.
	{"a*", "a*", true},
	{"a*", "ab", false},
	{">a", "xa", false},
	{"a.>.b", "a.x.b", false},
	{"a.>.b", "a.>.b", false},
}

func TestMatch(t *testing.T) {
	t.Parallel()
	for _, tc := range matchCases {
		t.Run(tc.pattern+"|"+tc.subject, func(t *testing.T) {
			t.Parallel()
			assert.Equal(t, tc.want, Match(tc.pattern, tc.subject))
		})
	}
}

// refMatch is a direct transcription of the rules over strings.Split, used as
// an oracle for Match on valid patterns.
func refMatch(pattern, subject string) bool {
	pt, st := strings.Split(pattern, "."), strings.Split(subject, ".")
	for i, tok := range pt {
		if tok == ">" {
			return i == len(pt)-1 && len(st) > i
		}
		if i >= len(st) || (tok != "*" && tok != st[i]) {
			return false
		}
	}
	return len(pt) == len(st)
}

func TestMatchAgainstReference(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewSource(1))
	for range 20000 {
		p, s := randPattern(rng, false), randSubject(rng)
		if !assert.Equal(t, refMatch(p, s), Match(p, s), "Match(%q, %q)", p, s) {
			return
		}
	}
}

func TestMatchDoesNotAllocate(t *testing.T) {
	// Not parallel: AllocsPerRun counts every allocation in the process.
	var sink bool
	allocs := testing.AllocsPerRun(1000, func() {
		sink = Match("orders.*.created.>", "orders.eu.created.v1.x")
	})
	assert.True(t, sink)
	assert.Zero(t, allocs)
}

var (
	patternTokens = []string{"", "a", "b", "ab", "*"}
	subjectTokens = []string{"", "a", "b", "ab"}
	// invalidTokens are rejected by wire.ValidatePattern; they are used only
	// to check that Match and Trie agree on them.
	invalidTokens = []string{"a*", "*b", ">x", ">", "**"}
)

// randPattern returns a pattern of 1–4 tokens over a small alphabet, ending
// in ">" about a quarter of the time. With invalid, some tokens are drawn from
// invalidTokens (including ">" in non-final positions).
func randPattern(rng *rand.Rand, invalid bool) string {
	n := 1 + rng.Intn(4)
	toks := make([]string, n)
	for i := range toks {
		if invalid && rng.Intn(4) == 0 {
			toks[i] = invalidTokens[rng.Intn(len(invalidTokens))]
		} else {
			toks[i] = patternTokens[rng.Intn(len(patternTokens))]
		}
	}
	if rng.Intn(4) == 0 {
		toks[n-1] = ">"
	}
	return strings.Join(toks, ".")
}

// randSubject returns a subject of 1–5 tokens over a small alphabet.
func randSubject(rng *rand.Rand) string {
	n := 1 + rng.Intn(5)
	toks := make([]string, n)
	for i := range toks {
		toks[i] = subjectTokens[rng.Intn(len(subjectTokens))]
	}
	return strings.Join(toks, ".")
}
