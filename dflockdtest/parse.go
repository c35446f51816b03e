package dflockdtest

import (
	"bytes"
	"unicode"
	"unicode/utf8"
)

// maxLine is the server's per-line content limit (LF not counted, RF: CRs
// are dropped and not counted either).
const maxLine = 256

// maxSeconds is the largest seconds value the RF server accepts; anything
// above answers "error".
const maxSeconds = 9223372036

// isSpaceByte reports whether the single-byte rune b is white space the way
// unicode.IsSpace sees it (only for b < utf8.RuneSelf).
func isSpaceASCII(b byte) bool {
	switch b {
	case '\t', '\n', '\v', '\f', '\r', ' ':
		return true
	}
	return false
}

// splitFields splits b on runs of Unicode white space, exactly like
// bytes.Fields, storing up to len(out) fields in out. It returns the total
// number of fields found (which may exceed len(out)). It does not allocate.
func splitFields(b []byte, out [][]byte) int {
	n := 0
	start := -1
	for i := 0; i < len(b); {
		c := b[i]
		size := 1
		space := false
		if c < utf8.RuneSelf {
			space = isSpaceASCII(c)
		} else {
			var r rune
			r, size = utf8.DecodeRune(b[i:])
			space = unicode.IsSpace(r)
		}
		if space {
			if start >= 0 {
				if n < len(out) {
					out[n] = b[start:i]
				}
				n++
				start = -1
			}
		} else if start < 0 {
			start = i
		}
		i += size
	}
	if start >= 0 {
		if n < len(out) {
			out[n] = b[start:]
		}
		n++
	}
	return n
}

// trimSpace trims leading and trailing Unicode white space (bytes.TrimSpace).
func trimSpace(b []byte) []byte { return bytes.TrimSpace(b) }

// parseInt parses a base-10 integer the way strconv.ParseInt(s, 10, 64) does:
// an optional leading '+' or '-', then one or more ASCII digits, no
// underscores, within int64 range.
func parseInt(b []byte) (int64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	neg := false
	switch b[0] {
	case '+':
		b = b[1:]
	case '-':
		neg = true
		b = b[1:]
	}
	if len(b) == 0 {
		return 0, false
	}
	var u uint64
	const cutoff uint64 = 1 << 63
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		if u > cutoff/10 {
			return 0, false
		}
		u = u*10 + uint64(c-'0')
		if u > cutoff {
			return 0, false
		}
	}
	if neg {
		return int64(-u), true // u <= 1<<63; -(1<<63) wraps to MinInt64
	}
	if u > cutoff-1 {
		return 0, false
	}
	return int64(u), true
}

// parseSeconds parses a seconds value: an integer in [0, maxSeconds].
func parseSeconds(b []byte) (int64, bool) {
	v, ok := parseInt(b)
	if !ok || v < 0 || v > maxSeconds {
		return 0, false
	}
	return v, true
}

// parseTimeout parses a timeout argument (>= 0).
func parseTimeout(b []byte) (int64, bool) { return parseSeconds(b) }

// parseLease parses a lease argument (> 0).
func parseLease(b []byte) (int64, bool) {
	v, ok := parseSeconds(b)
	if !ok || v <= 0 {
		return 0, false
	}
	return v, true
}

// parseLimit parses a semaphore limit (> 0, fits an int).
func parseLimit(b []byte) (int, bool) {
	v, ok := parseInt(b)
	if !ok || v <= 0 || int64(int(v)) != v {
		return 0, false
	}
	return int(v), true
}

// validKey applies the key rule: non-empty, no space, tab, CR or LF. Any
// other byte is accepted.
func validKey(k []byte) bool {
	if len(k) == 0 {
		return false
	}
	for _, c := range k {
		switch c {
		case ' ', '\t', '\r', '\n':
			return false
		}
	}
	return true
}

// validChannel: key rules and no '*' or '>' anywhere.
func validChannel(ch []byte) bool {
	return validKey(ch) && bytes.IndexByte(ch, '*') < 0 && bytes.IndexByte(ch, '>') < 0
}

// validPattern: key rules; split on '.'; a token containing '*' must be
// exactly "*"; a token containing '>' must be exactly ">" and the last one.
// Empty tokens are allowed.
func validPattern(p []byte) bool {
	if !validKey(p) {
		return false
	}
	rest := p
	for {
		i := bytes.IndexByte(rest, '.')
		tok := rest
		last := i < 0
		if !last {
			tok = rest[:i]
		}
		if bytes.IndexByte(tok, '*') >= 0 && len(tok) != 1 {
			return false
		}
		if bytes.IndexByte(tok, '>') >= 0 && (len(tok) != 1 || !last) {
			return false
		}
		if last {
			return true
		}
		rest = rest[i+1:]
	}
}

// matchPattern reports whether channel matches pattern (both assumed valid).
// It is the reference implementation the subscription trie is tested against.
func matchPattern(pattern, channel string) bool {
	for {
		pi := indexDot(pattern)
		ci := indexDot(channel)
		ptok := pattern
		if pi >= 0 {
			ptok = pattern[:pi]
		}
		ctok := channel
		if ci >= 0 {
			ctok = channel[:ci]
		}
		if ptok == ">" {
			return true // one or more remaining channel tokens: ctok exists
		}
		if ptok != "*" && ptok != ctok {
			return false
		}
		if pi < 0 || ci < 0 {
			return pi < 0 && ci < 0
		}
		pattern = pattern[pi+1:]
		channel = channel[ci+1:]
	}
}

func indexDot(s string) int {
	for i := 0; i < len(s); i++ {
		if s[i] == '.' {
			return i
		}
	}
	return -1
}

// token is a lock token: 16 random bytes, 32 lowercase hex characters on the
// wire.
type token [16]byte

const hexDigits = "0123456789abcdef"

func (t *token) appendHex(dst []byte) []byte {
	for _, b := range t {
		dst = append(dst, hexDigits[b>>4], hexDigits[b&0xf])
	}
	return dst
}

func (t token) String() string { return string(t.appendHex(make([]byte, 0, 32))) }

// parseToken decodes a 32-character lowercase hex token. Anything else cannot
// name a held token.
func parseToken(b []byte) (token, bool) {
	var t token
	if len(b) != 32 {
		return t, false
	}
	for i := 0; i < 16; i++ {
		hi, ok1 := unhex(b[2*i])
		lo, ok2 := unhex(b[2*i+1])
		if !ok1 || !ok2 {
			return t, false
		}
		t[i] = hi<<4 | lo
	}
	return t, true
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}
