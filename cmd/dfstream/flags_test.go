package main

import (
	"errors"
	"io"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/dfstream/dfstream"
)

// A group of client flags in a file of its own (clientFlagGroups) is
// registered on every client command and its options are built with the
// others; its usage error is the command's. Not parallel: it changes the
// package's list of groups.
func TestClientFlagGroupsJoinTheCommonFlags(t *testing.T) {
	saved := clientFlagGroups
	t.Cleanup(func() { clientFlagGroups = saved })
	var built []string
	clientFlagGroups = append(append([]func(*command) optionsFunc(nil), saved...), func(c *command) optionsFunc {
		v := c.fs.String("extra", "", "a test `value`")
		c.bindEnv("extra", "DFSTREAM_TEST_EXTRA")
		return func() ([]dfstream.Option, error) {
			if *v == "bad" {
				return nil, usagef("--extra is bad")
			}
			built = append(built, *v)
			return []dfstream.Option{dfstream.WithConnectTimeout(dfstream.DefaultConnectTimeout)}, nil
		}
	})
	for _, name := range []string{"x", "bad"} {
		c := newCommand("stats", "", "", "", exitCodesStats, io.Discard)
		f := c.addCommonFlags(io.Discard)
		_, _, _, err := c.parse([]string{"--extra", name})
		require.NoError(t, err)
		opts, err := f.options()
		if name == "bad" {
			var ee *exitError
			require.True(t, errors.As(err, &ee), "%v", err)
			require.Equal(t, exitUsage, ee.code)
			continue
		}
		require.NoError(t, err)
		require.Len(t, opts, 4) // servers, connect timeout, logger, and the group's
	}
	require.Equal(t, []string{"x"}, built)
}
