// Package wire speaks the dflockd protocol: it builds and validates requests,
// parses replies, pushes and stats, maps statuses to typed errors, reads
// capped lines, and runs one connection's request/reply pairing.
//
// The protocol is line based: a request is exactly three LF-terminated lines
// (command, key, argument) and the server answers each with one line, in
// order, on a strictly sequential connection. Servers of the newer
// generation also push "sig <channel> <payload>" lines at any moment on
// connections that listen. The dflockd server (https://github.com/mtingers/dflockd)
// defines the protocol; the conformance tests of the dflockdtest package
// spell out the behaviour this package is written against.
//
// Two properties matter most and are enforced here rather than left to
// callers:
//
//   - Nothing a caller passes can inject a second command or an over-long
//     line: every builder validates all inputs before anything is encoded,
//     and [Conn.Do] checks the framing of hand-made requests before writing.
//   - A reply is never paired with the wrong request: when a caller gives up
//     on a reply (its context ends), the connection is closed, because the
//     late reply would otherwise be read as the answer to the next request.
//
// Both reply generations are accepted: grant replies with and without a
// fence, renew replies with and without a fence, and the five- and
// twelve-field stats JSON. Unknown statuses become a generic [ServerError].
//
// This package holds no retry, reconnect or event policy; the root package
// builds those on top of it.
package wire
