package dfprom_test

import (
	"testing"
	"time"

	"github.com/dfstream/dfstream"
	"github.com/dfstream/dfstream/dfprom"
)

// BenchmarkObserveLockCycle is the part of a pooled lock cycle that
// Metrics adds: the Observer calls of one cycle, without the network (the
// root package's LockStreamCycle/pooled-prometheus measures the whole).
func BenchmarkObserveLockCycle(b *testing.B) {
	m, err := dfprom.New()
	if err != nil {
		b.Fatal(err)
	}
	s := dfstream.StreamRef{Kind: "lock", Key: "bench/stream", Server: "127.0.0.1:6388"}
	b.ReportAllocs()
	for range b.N {
		m.AcquireStarted(s, 0)
		m.PoolGet(s.Server, true)
		m.AcquireEnded(s, time.Millisecond, false, nil)
		m.Released(s, time.Millisecond)
	}
}
