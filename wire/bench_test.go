package wire_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dfstream/dfstream/wire"
)

func BenchmarkRequestAppend(b *testing.B) {
	req, err := wire.Renew(wire.KindLock, "orders:42", tok, 30*time.Second)
	require.NoError(b, err)
	buf := make([]byte, 0, 128)
	b.ReportAllocs()
	for b.Loop() {
		buf = req.AppendTo(buf[:0])
	}
}

func BenchmarkParseGrant(b *testing.B) {
	line := "ok " + tok + " 33 12345"
	b.ReportAllocs()
	for b.Loop() {
		if _, err := wire.ParseGrant("l", line); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkConnDo measures one request/reply round trip over loopback TCP.
func BenchmarkConnDo(b *testing.B) {
	c, p := pair(b)
	p.run(b, p.echo)
	req := wire.Request{Cmd: "l", Key: "k", Arg: "0"}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Do(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

// Not parallel: AllocsPerRun measures the whole process.
func TestHotPathsDoNotAllocate(t *testing.T) {
	req, err := wire.Renew(wire.KindLock, "orders:42", tok, 30*time.Second)
	require.NoError(t, err)
	buf := make([]byte, 0, 128)
	assert.Zero(t, testing.AllocsPerRun(100, func() { buf = req.AppendTo(buf[:0]) }))
	line := "ok " + tok + " 33 12345"
	assert.Zero(t, testing.AllocsPerRun(100, func() { _, _ = wire.ParseGrant("l", line) }))
	assert.Zero(t, testing.AllocsPerRun(100, func() { _, _, _ = wire.ParseRenew("n", "ok 33 7") }))
}
