package dfstream

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// The handoff path runs once per acquire under contention: these pin the
// allocations it was cut down to (issue 11).

func TestOutboxEmitWithRoomAllocatesNothing(t *testing.T) {
	o := newOutbox(1)
	ev := Event(Released{Key: "k"}) // boxed once, outside the count
	allocs := testing.AllocsPerRun(100, func() {
		o.emit(ev)
		<-o.ch
	})
	assert.Zero(t, allocs)
}

func TestOutboxEmitWithoutRoomKeepsTheEventPending(t *testing.T) {
	o := newOutbox(0)
	for range outboxReserve {
		o.emit(Released{Key: "k"})
	}
	o.emit(Released{Key: "last"})
	assert.Len(t, o.pending, 1)
	<-o.ch
	o.deliver()
	assert.Empty(t, o.pending)
}

func TestCRC32ShardOverOneServerAllocatesNothing(t *testing.T) {
	key := "a key long enough to be copied to the heap"
	allocs := testing.AllocsPerRun(100, func() {
		if CRC32Shard(key, 1) != 0 {
			t.Fatal("one server, shard not 0")
		}
	})
	assert.Zero(t, allocs)
}
