package wire_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dfstream/dfstream/wire"
)

// Checklist 70: 1.10 sends exactly five fields, arrays never null.
const stats110 = `ok {"connections":3,"locks":[{"key":"a b-less","owner_conn_id":2,"lease_expires_in_s":31.5,"waiters":1}],` +
	`"semaphores":[{"key":"s","limit":3,"holders":2,"waiters":0}],` +
	`"idle_locks":[{"key":"old","idle_s":4.25}],"idle_semaphores":[]}`

// Checklist 71: RF sends twelve fields; signal_channels and watch_channels
// are null when empty.
const statsRFEmpty = `ok {"connections":1,"locks":[],"semaphores":[],"rw_locks":[],"idle_locks":[],"idle_semaphores":[],` +
	`"counters":[],"kv_entries":[],"lists":[],"signal_channels":null,"watch_channels":null,"barriers":[]}`

const statsRF = `ok {"connections":2,"locks":[{"key":"k","owner_conn_id":1,"lease_expires_in_s":10,"waiters":0,"fence":9},` +
	`{"key":"q","owner_conn_id":0,"lease_expires_in_s":0,"waiters":2}],"semaphores":[],` +
	`"rw_locks":[{"key":"rw","readers":2,"writer":false,"waiters":0}],"idle_locks":[],"idle_semaphores":[{"key":"s2","idle_s":1}],` +
	`"counters":[{"key":"c","value":-5,"idle_s":0}],"kv_entries":[],"lists":[],` +
	`"signal_channels":[{"pattern":"a.\u003e","listeners":2},{"pattern":"a.\u003e","group":"work ers","listeners":1}],` +
	`"watch_channels":null,"barriers":[]}`

func TestParseStats(t *testing.T) {
	t.Parallel()

	t.Run("1.10", func(t *testing.T) {
		t.Parallel()
		s, err := wire.ParseStats(stats110)
		require.NoError(t, err)
		assert.Equal(t, &wire.Stats{
			Connections:    3,
			Locks:          []wire.LockStat{{Key: "a b-less", OwnerConnID: 2, LeaseExpiresIn: 31.5, Waiters: 1}},
			Semaphores:     []wire.SemStat{{Key: "s", Limit: 3, Holders: 2}},
			IdleLocks:      []wire.IdleStat{{Key: "old", IdleS: 4.25}},
			IdleSemaphores: []wire.IdleStat{},
		}, s)
		assert.Nil(t, s.SignalChannels)
	})

	t.Run("RF empty", func(t *testing.T) {
		t.Parallel()
		s, err := wire.ParseStats(statsRFEmpty)
		require.NoError(t, err)
		assert.Equal(t, 1, s.Connections)
		assert.Nil(t, s.SignalChannels, "null -> nil")
		assert.NotNil(t, s.Locks)
		assert.Empty(t, s.Locks)
	})

	t.Run("RF", func(t *testing.T) {
		t.Parallel()
		s, err := wire.ParseStats(statsRF)
		require.NoError(t, err)
		assert.Equal(t, []wire.LockStat{
			{Key: "k", OwnerConnID: 1, LeaseExpiresIn: 10, Fence: 9},
			{Key: "q", Waiters: 2},
		}, s.Locks)
		assert.Equal(t, []wire.IdleStat{{Key: "s2", IdleS: 1}}, s.IdleSemaphores)
		// Checklist 74: "a.\u003e" is the pattern a.>.
		assert.Equal(t, []wire.SignalStat{
			{Pattern: "a.>", Listeners: 2},
			{Pattern: "a.>", Group: "work ers", Listeners: 1},
		}, s.SignalChannels)
	})

	t.Run("errors", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			line   string
			target error
		}{
			{"error", wire.ErrServer},
			{"error_auth", wire.ErrAuth},
			{"", wire.ErrProtocol},
			{"ok", wire.ErrProtocol},
			{"ok ", wire.ErrProtocol},
			{"ok null", wire.ErrProtocol},
			{"ok []", wire.ErrProtocol},
			{"ok {", wire.ErrProtocol},
			{`ok {"connections":"x"}`, wire.ErrProtocol},
			{`ok {} trailing`, wire.ErrProtocol},
			{`okay {}`, wire.ErrServer},
			{`ok {"connections":-1}`, wire.ErrProtocol},
			{`ok {"locks":[{"key":"k","waiters":-2}]}`, wire.ErrProtocol},
			{`ok {"locks":[{"key":"k","lease_expires_in_s":-0.5}]}`, wire.ErrProtocol},
			{`ok {"locks":[{"key":"k","owner_conn_id":-1}]}`, wire.ErrProtocol},
			{`ok {"locks":[{"key":"k","fence":-1}]}`, wire.ErrProtocol},
			{`ok {"semaphores":[{"key":"s","limit":-3}]}`, wire.ErrProtocol},
			{`ok {"semaphores":[{"key":"s","holders":-1}]}`, wire.ErrProtocol},
			{`ok {"semaphores":[{"key":"s","waiters":-1}]}`, wire.ErrProtocol},
			{`ok {"idle_locks":[{"key":"s","idle_s":-1}]}`, wire.ErrProtocol},
			{`ok {"idle_semaphores":[{"key":"s","idle_s":-1}]}`, wire.ErrProtocol},
			{`ok {"signal_channels":[{"pattern":"a","listeners":-1}]}`, wire.ErrProtocol},
			{`ok {"connections":+1}`, wire.ErrProtocol},
		} {
			s, err := wire.ParseStats(tc.line)
			assert.ErrorIs(t, err, tc.target, "%q", tc.line)
			assert.Nil(t, s)
		}
	})
}
