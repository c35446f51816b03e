// Package subject matches dflockd signal channels against listen patterns.
//
// A subject (a concrete signal channel) and a pattern are both split on '.'
// into tokens. Empty tokens are allowed: "a..b" has the tokens "a", "", "b";
// "a." has "a", ""; "." has "", ""; and "" is the single empty token. Pattern
// tokens match as follows, exactly as the dflockd server does:
//
//   - a literal token matches only the identical subject token (byte-wise);
//   - "*" matches exactly one subject token, which may be empty, so "a.*"
//     matches "a.b" and "a." but not "a" or "a.b.c";
//   - ">" is only valid as the last token and matches one or more remaining
//     subject tokens, so "a.>" matches "a.b" and "a.b.c" but not "a", and ">"
//     alone matches every subject.
//
// [Match] tests one pattern against one subject. [Trie] holds many patterns,
// each with any number of values, and finds every value whose pattern matches
// a subject without a linear scan and without allocating.
//
// Neither validates patterns: that is the wire package's job
// (wire.ValidatePattern). For patterns it would reject, behaviour is defined
// but not useful: a token that merely contains '*' or '>' (such as "a*") is
// compared literally, and a ">" that is not the last token never matches.
// Match and Trie agree on every input, valid or not.
package subject
