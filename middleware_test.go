package dfstream_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dfstream/dfstream"
)

// logLine decodes the one JSON line in buf.
func logLine(t *testing.T, buf *syncBuffer) map[string]any {
	t.Helper()
	var line map[string]any
	require.NoError(t, json.Unmarshal(buf.Bytes(), &line), buf.String())
	return line
}

func TestLoggingSaysHowLongTheCallTookWithItsUnit(t *testing.T) {
	t.Parallel()
	var buf syncBuffer
	h := dfstream.Logging(zerolog.New(&buf).Level(zerolog.DebugLevel))(
		dfstream.HandlerFunc(func(context.Context, dfstream.Signal) error {
			time.Sleep(2 * time.Millisecond)
			return nil
		}))

	require.NoError(t, h.HandleSignal(context.Background(), dfstream.Signal{Channel: "a"}))

	took, ok := logLine(t, &buf)["took"].(string)
	require.True(t, ok, "took is a duration string: %s", buf.String())
	d, err := time.ParseDuration(took)
	require.NoError(t, err)
	assert.GreaterOrEqual(t, d, 2*time.Millisecond)
}

func TestLoggingLogsAPanicPassingThroughIt(t *testing.T) {
	t.Parallel()
	var buf syncBuffer
	// Recover outside Logging: the panic passes through Logging.
	h := dfstream.Recover()(dfstream.Logging(zerolog.New(&buf))(
		dfstream.HandlerFunc(func(context.Context, dfstream.Signal) error { panic("boom") })))

	err := h.HandleSignal(context.Background(), dfstream.Signal{Channel: "a"})

	require.ErrorIs(t, err, dfstream.ErrHandlerPanic)
	line := logLine(t, &buf)
	assert.Equal(t, "error", line["level"])
	assert.Equal(t, "signal handler panicked", line["message"])
}

func TestLoggingOutsideRecoverLogsThePanicAsAnErrorWithItsValue(t *testing.T) {
	t.Parallel()
	var buf syncBuffer
	h := dfstream.Logging(zerolog.New(&buf))(dfstream.Recover()(
		dfstream.HandlerFunc(func(context.Context, dfstream.Signal) error { panic(errors.New("boom")) })))

	require.ErrorIs(t, h.HandleSignal(context.Background(), dfstream.Signal{Channel: "a"}), dfstream.ErrHandlerPanic)

	line := logLine(t, &buf)
	assert.Equal(t, "error", line["level"])
	assert.Contains(t, line["error"], "boom")
}
