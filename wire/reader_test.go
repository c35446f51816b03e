package wire_test

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dfstream/dfstream/wire"
)

func readAll(lr *wire.LineReader) ([]string, error) {
	var lines []string
	for {
		l, err := lr.ReadLine()
		if err != nil {
			return lines, err
		}
		lines = append(lines, l)
	}
}

func TestLineReader(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", 3000)
	tests := []struct {
		name  string
		in    string
		max   int
		lines []string
		err   error
	}{
		{"empty input", "", 10, nil, io.EOF},
		{"lines", "ok\nqueued\n", 10, []string{"ok", "queued"}, io.EOF},
		{"empty lines", "\n\n", 10, []string{"", ""}, io.EOF},
		{"CRLF", "ok\r\nok\r\r\n", 10, []string{"ok", "ok\r"}, io.EOF},
		{"partial at EOF", "ok\nhalf", 10, []string{"ok"}, io.ErrUnexpectedEOF},
		{"exactly max", "0123456789\n", 10, []string{"0123456789"}, io.EOF},
		{"exactly max with CR", "0123456789\r\n", 10, []string{"0123456789"}, io.EOF},
		{"max+1", "ok\n01234567890\nok\n", 10, []string{"ok"}, wire.ErrLineTooLong},
		{"over max without LF", "0123456789012345", 10, nil, wire.ErrLineTooLong},
		{"long line accumulates", long + "\nok\n", 4000, []string{long, "ok"}, io.EOF},
		{"long line over cap", long + "\n", 2999, nil, wire.ErrLineTooLong},
	}
	readers := map[string]func(io.Reader) io.Reader{
		"whole":    func(r io.Reader) io.Reader { return r },
		"onebyte":  iotest.OneByteReader,
		"dataerr":  iotest.DataErrReader,
		"halfread": iotest.HalfReader,
	}
	for _, tc := range tests {
		for rn, wrap := range readers {
			t.Run(tc.name+"/"+rn, func(t *testing.T) {
				t.Parallel()
				lr := wire.NewLineReader(wrap(strings.NewReader(tc.in)), tc.max)
				lines, err := readAll(lr)
				assert.Equal(t, tc.lines, lines)
				assert.ErrorIs(t, err, tc.err)
				// Errors are sticky.
				_, err2 := lr.ReadLine()
				assert.ErrorIs(t, err2, tc.err)
			})
		}
	}
}

func TestLineReaderDefaultCap(t *testing.T) {
	t.Parallel()
	// A 1 MiB line (a huge stats reply) passes with max <= 0 (the default).
	line := strings.Repeat("s", wire.DefaultMaxReply)
	lr := wire.NewLineReader(strings.NewReader(line+"\n"+line+"x\n"), 0)
	got, err := lr.ReadLine()
	require.NoError(t, err)
	assert.Len(t, got, wire.DefaultMaxReply)
	_, err = lr.ReadLine()
	assert.ErrorIs(t, err, wire.ErrLineTooLong)
}

func TestLineReaderReadError(t *testing.T) {
	t.Parallel()
	boom := errors.New("boom")
	lr := wire.NewLineReader(io.MultiReader(strings.NewReader("a\nb"), iotest.ErrReader(boom)), 10)
	l, err := lr.ReadLine()
	require.NoError(t, err)
	assert.Equal(t, "a", l)
	_, err = lr.ReadLine()
	assert.ErrorIs(t, err, boom)
}

// The buffer shrinks back after a long line, and lines after it are intact.
func TestLineReaderAfterLongLine(t *testing.T) {
	t.Parallel()
	var in bytes.Buffer
	for i := range 50 {
		in.WriteString(strings.Repeat(string(rune('a'+i%26)), 100+i*997))
		in.WriteString("\nok\n")
	}
	lr := wire.NewLineReader(iotest.HalfReader(&in), 1<<20)
	for i := range 50 {
		l, err := lr.ReadLine()
		require.NoError(t, err)
		require.Equal(t, strings.Repeat(string(rune('a'+i%26)), 100+i*997), l)
		l, err = lr.ReadLine()
		require.NoError(t, err)
		require.Equal(t, "ok", l)
	}
	_, err := lr.ReadLine()
	assert.ErrorIs(t, err, io.EOF)
}
