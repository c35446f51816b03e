//go:build !race

package dfstream_test

// raceEnabled reports whether the race detector is on; it inflates memory,
// so memory bounds are only checked without it.
const raceEnabled = false
