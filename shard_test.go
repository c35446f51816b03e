package dfstream_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dfstream/dfstream"
	"github.com/dfstream/dfstream/dflockdtest"
)

func TestCRC32ShardMatchesTheOtherClients(t *testing.T) {
	t.Parallel()
	cases := []struct {
		key  string
		n    int
		want int
	}{
		{"my-key", 3, 2}, // crc32 3605215937
		{"my-key", 2, 1},
		{"a", 3, 0}, // crc32 3904355907: unsigned arithmetic
		{"lock:1", 3, 1},
		{"anything", 1, 0},
	}
	for _, tc := range cases {
		assert.Equal(t, tc.want, dfstream.CRC32Shard(tc.key, tc.n), "%q over %d", tc.key, tc.n)
	}
}

func TestKeysLandOnTheServerCRC32Names(t *testing.T) {
	t.Parallel()
	var addrs []string
	for range 3 {
		srv := dflockdtest.New(t, dflockdtest.Config{})
		addrs = append(addrs, srv.Addr())
	}
	c := newClient(t, addrs)
	for key, want := range map[string]int{"my-key": 2, "a": 0, "lock:1": 1} {
		s, err := c.Lock(context.Background(), key)
		require.NoError(t, err)
		for i, addr := range addrs {
			_, held := lockHolder(stats(t, addr), key)
			assert.Equal(t, i == want, held, "%q on server %d", key, i)
		}
		got, err := c.ServerFor(key)
		require.NoError(t, err)
		assert.Equal(t, addrs[want], got)
		require.NoError(t, s.Close())
	}
}

func TestCustomShardFunctionIsHonoured(t *testing.T) {
	t.Parallel()
	var addrs []string
	for range 3 {
		addrs = append(addrs, dflockdtest.New(t, dflockdtest.Config{}).Addr())
	}
	c := newClient(t, addrs, dfstream.WithSharding(func(string, int) int { return 1 }))
	for _, key := range []string{"my-key", "a", "lock:1"} {
		s, err := c.Lock(context.Background(), key)
		require.NoError(t, err)
		_, held := lockHolder(stats(t, addrs[1]), key)
		assert.True(t, held, "%q on server 1", key)
		require.NoError(t, s.Close())
	}
}
