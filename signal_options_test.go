package dfstream_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dfstream/dfstream"
	"github.com/dfstream/dfstream/dflockdtest"
)

func TestSignalOptionGivenToNewIsTheDefaultOfEverySignalStream(t *testing.T) {
	t.Parallel()
	addr, _ := testServer(t, dflockdtest.Config{})
	c := newClient(t, []string{addr}, dfstream.WithSignalEventBuffer(3))
	s := signals(t, c)
	assert.Equal(t, 3, cap(s.Events()))
}

func TestSignalOptionGivenToTheStreamOverridesTheClientDefault(t *testing.T) {
	t.Parallel()
	addr, _ := testServer(t, dflockdtest.Config{})
	c := newClient(t, []string{addr}, dfstream.WithSignalEventBuffer(3))
	s := signals(t, c, dfstream.WithSignalEventBuffer(5))
	assert.Equal(t, 5, cap(s.Events()))
}

func TestInvalidSignalOptionGivenToNewIsATypedError(t *testing.T) {
	t.Parallel()
	_, err := dfstream.New(dfstream.WithSignalOverflow(dfstream.OverflowPolicy(9)))
	assert.ErrorIs(t, err, dfstream.ErrInvalidInput)
}

func TestNilOptionsAreIgnored(t *testing.T) {
	t.Parallel()
	addr, _ := testServer(t, dflockdtest.Config{})
	c := newClient(t, []string{addr})
	s := signals(t, c, nil)
	assert.Equal(t, dfstream.DefaultSignalEventBuffer, cap(s.Events()))
	r, err := dfstream.NewRouter(c, nil)
	require.NoError(t, err)
	require.NoError(t, r.HandleFunc("x", func(context.Context, dfstream.Signal) error { return nil }, nil))
}
