//go:build race

package dfstream_test

const raceEnabled = true
