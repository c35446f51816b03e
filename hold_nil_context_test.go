package dfstream_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dfstream/dfstream"
	"github.com/dfstream/dfstream/dflockdtest"
)

func TestHoldStreamEntryPointsRejectANilContext(t *testing.T) {
	t.Parallel()
	addr, _ := testServer(t, dflockdtest.Config{})
	c := newClient(t, []string{addr})
	held, err := c.Lock(context.Background(), testKey(t, "held"))
	require.NoError(t, err)
	var nilCtx context.Context // a variable, so that vet lets it through

	for name, call := range map[string]func() error{
		"Lock": func() error { _, err := c.StartLock(nilCtx, testKey(t, "k")); return err },
		"Semaphore": func() error {
			_, err := c.StartSemaphore(nilCtx, testKey(t, "s"), 2)
			return err
		},
		"AcquireLock": func() error { _, err := c.Lock(nilCtx, testKey(t, "k")); return err },
		"AcquireSemaphore": func() error {
			_, err := c.AcquireSemaphore(nilCtx, testKey(t, "s"), 2)
			return err
		},
		"Wait":     func() error { _, err := held.Wait(nilCtx); return err },
		"Enqueued": func() error { _, err := held.Enqueued(nilCtx); return err },
		"Release":  func() error { return held.Release(nilCtx) },
	} {
		t.Run(name, func(t *testing.T) {
			var err error
			require.NotPanics(t, func() { err = call() })
			assert.ErrorIs(t, err, dfstream.ErrInvalidInput)
		})
	}
	assert.Equal(t, dfstream.StateHeld, held.State(), "a Release without a context releases nothing")
	require.NoError(t, held.Release(context.Background()))
}
