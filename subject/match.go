package subject

import "strings"

// Match reports whether subject, a concrete channel, matches pattern by the
// server's rules: tokens are separated by '.', "*" matches exactly one token
// (possibly empty) and a final ">" matches one or more remaining tokens.
// See the package documentation for the treatment of invalid patterns.
//
// Match does not allocate.
func Match(pattern, subject string) bool {
	// p and s index the start of the next token of pattern and subject; a
	// value of len+1 means every token has been consumed (a string of length
	// n always has at least one token, so position n is an empty last token).
	p, s := 0, 0
	for p <= len(pattern) {
		pe := tokenEnd(pattern, p)
		tok := pattern[p:pe]
		if tok == ">" {
			// Valid only as the last token, where it needs at least one
			// remaining subject token. Anywhere else it never matches.
			return pe == len(pattern) && s <= len(subject)
		}
		if s > len(subject) {
			return false // pattern has more tokens than the subject
		}
		se := tokenEnd(subject, s)
		if tok != "*" && tok != subject[s:se] {
			return false
		}
		p, s = pe+1, se+1
	}
	return s > len(subject)
}

// tokenEnd returns the index of the '.' ending the token that starts at i, or
// len(str) if that token is the last one.
func tokenEnd(str string, i int) int {
	if j := strings.IndexByte(str[i:], '.'); j >= 0 {
		return i + j
	}
	return len(str)
}
