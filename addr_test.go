package dfstream_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dfstream/dfstream"
)

func TestWithServersRejectsWhatIsNotHostPort(t *testing.T) {
	t.Parallel()
	for _, addr := range []string{"", "nohostport", "host:", ":6388", "host:port", "host:0", "host:65536", "host:-1", "[::1]", "a:b:1"} {
		c, err := dfstream.New(dfstream.WithServers(addr))
		require.ErrorIs(t, err, dfstream.ErrInvalidInput, "%q", addr)
		assert.Nil(t, c)
	}
}

func TestWithServersAcceptsHostPort(t *testing.T) {
	t.Parallel()
	for _, addr := range []string{"127.0.0.1:6388", "[::1]:6388", "localhost:1", "dflockd.example:65535"} {
		c, err := dfstream.New(dfstream.WithServers(addr))
		require.NoError(t, err, "%q", addr)
		require.NoError(t, c.Close())
	}
}
