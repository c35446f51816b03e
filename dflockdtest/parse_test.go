package dflockdtest

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSplitFieldsMatchesBytesFields(t *testing.T) {
	t.Parallel()
	cases := []string{
		"", " ", "a", " a ", "1 2", "1\t2", "1\v2\f3", "0\r60",
		"1\u00852", "1\u00a02", "1\u20032", "  x  y\tz ", "a\xffb c", "\xc2", "a \xe2\x80",
		"+1 +2 +3 +4 +5",
	}
	for _, in := range cases {
		var out [8][]byte
		n := splitFields([]byte(in), out[:])
		want := bytes.Fields([]byte(in))
		require.Equal(t, len(want), n, "%q", in)
		for i := range want {
			assert.Equal(t, string(want[i]), string(out[i]), "%q field %d", in, i)
		}
	}
	var two [2][]byte
	assert.Equal(t, 4, splitFields([]byte("a b c d"), two[:]), "counts fields beyond the output")
	assert.Equal(t, "b", string(two[1]))
}

func TestParseInt(t *testing.T) {
	t.Parallel()
	cases := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0", 0, true}, {"+5", 5, true}, {"-0", 0, true}, {"-7", -7, true}, {"007", 7, true},
		{"9223372036854775807", 9223372036854775807, true},
		{"-9223372036854775808", -9223372036854775808, true},
		{"9223372036854775808", 0, false}, {"99999999999999999999", 0, false},
		{"", 0, false}, {"+", 0, false}, {"-", 0, false}, {"1.5", 0, false}, {"1_0", 0, false},
		{"x", 0, false}, {"++1", 0, false}, {"0x10", 0, false}, {"١", 0, false},
	}
	for _, c := range cases {
		v, ok := parseInt([]byte(c.in))
		assert.Equal(t, c.ok, ok, "%q", c.in)
		if c.ok {
			assert.Equal(t, c.want, v, "%q", c.in)
		}
	}
}

func TestParseArguments(t *testing.T) {
	t.Parallel()
	_, ok := parseSeconds([]byte("9223372036"))
	assert.True(t, ok)
	_, ok = parseSeconds([]byte("9223372037"))
	assert.False(t, ok, "seconds above 9223372036 are an error (RF)")
	_, ok = parseTimeout([]byte("-1"))
	assert.False(t, ok)
	v, ok := parseTimeout([]byte("-0"))
	assert.True(t, ok)
	assert.Zero(t, v)
	_, ok = parseLease([]byte("0"))
	assert.False(t, ok, "lease must be > 0")
	v, ok = parseLease([]byte("+60"))
	assert.True(t, ok)
	assert.EqualValues(t, 60, v)
	_, ok = parseLimit([]byte("0"))
	assert.False(t, ok, "limit must be > 0")
	l, ok := parseLimit([]byte("3"))
	assert.True(t, ok)
	assert.Equal(t, 3, l)
}

func TestKeyChannelPatternRules(t *testing.T) {
	t.Parallel()
	keys := map[string]bool{
		"k": true, "a.b": true, "\x00": true, "a\fb": true, "a\vb": true, "é": true, "*": true, ">": true,
		"a\u00a0b": true, "": false, "a b": false, "a\tb": false, "a\rb": false, "a\nb": false,
	}
	for k, want := range keys {
		assert.Equal(t, want, validKey([]byte(k)), "key %q", k)
	}
	channels := map[string]bool{
		"a.b": true, "a": true, ".": true, "a..b": true,
		"a.*": false, "a.>": false, "a*": false, "x>y": false, "": false, "a b": false,
	}
	for ch, want := range channels {
		assert.Equal(t, want, validChannel([]byte(ch)), "channel %q", ch)
	}
	patterns := map[string]bool{
		">": true, "*": true, "*.*": true, "a..b": true, ".": true, "a.>": true, "a.*.c": true,
		"*.>": true, "a.b": true, "..": true,
		"a.>.b": false, "a*": false, ">a": false, "a.>>": false, "a.**": false, "*a.b": false,
		"a.b>": false, ">.>": false, "": false, "a b": false, "a\tb": false,
	}
	for p, want := range patterns {
		assert.Equal(t, want, validPattern([]byte(p)), "pattern %q", p)
	}
}

func TestMatchPattern(t *testing.T) {
	t.Parallel()
	cases := []struct {
		pattern, channel string
		want             bool
	}{
		{"a.b", "a.b", true}, {"a.b", "a.c", false}, {"a.b", "a.b.c", false}, {"a.b", "a", false},
		{"a.>", "a.b", true}, {"a.>", "a.b.c", true}, {"a.>", "a", false}, {"a.>", "a.", true},
		{"a.*", "a.c", true}, {"a.*", "a.b.c", false}, {"a.*", "a.", true}, {"a.*", "a", false},
		{">", "a", true}, {">", "a.b.c", true}, {">", ".", true},
		{"*", "a", true}, {"*", "a.b", false}, {"*", ".", false},
		{"*.*", "a.b", true}, {"*.*", ".", true}, {"*.*", "a", false},
		{"a..b", "a..b", true}, {"a.*.b", "a..b", true}, {"*.>", "a.b", true}, {"*.>", "a", false},
		{".", ".", true}, {".", "a", false},
	}
	for _, c := range cases {
		assert.Equal(t, c.want, matchPattern(c.pattern, c.channel), "%q ~ %q", c.pattern, c.channel)
	}
}

func TestTokenHex(t *testing.T) {
	t.Parallel()
	tbl := newTable(10, 0, 0)
	seen := map[token]bool{}
	for i := 0; i < 1000; i++ {
		tok := tbl.newToken()
		require.False(t, seen[tok], "tokens must differ")
		seen[tok] = true
		s := tok.String()
		require.Len(t, s, 32)
		require.Equal(t, strings.ToLower(s), s)
		back, ok := parseToken([]byte(s))
		require.True(t, ok)
		require.Equal(t, tok, back)
	}
	for _, bad := range []string{"", "abc", strings.Repeat("A", 32), strings.Repeat("g", 32), strings.Repeat("0", 33)} {
		_, ok := parseToken([]byte(bad))
		assert.False(t, ok, "%q", bad)
	}
}
