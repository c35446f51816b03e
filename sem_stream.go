package dfstream

import (
	"context"

	"github.com/dfstream/dfstream/wire"
)

// SemStream is the life of one slot of a counting semaphore: the same
// machine as LockStream, with the semaphore commands and a limit. Up to
// limit streams hold a key's slots at once; the rest queue in FIFO order.
// Start one with Client.Semaphore.
type SemStream struct {
	*holdStream
}

var _ Stream = (*SemStream)(nil)

// Limit returns the semaphore's limit.
func (s *SemStream) Limit() int { return s.limit }

// Semaphore starts a stream that acquires one slot of the semaphore key,
// which allows limit holders at once, and holds it until released, closed,
// lost, or ctx ends. The limit must be positive and the same for every
// client of the key (ErrLimitMismatch otherwise). Like Lock, it returns
// once the server has answered the enqueue.
func (c *Client) Semaphore(ctx context.Context, key string, limit int, opts ...StreamOption) (*SemStream, error) {
	h, err := c.startHold(ctx, wire.KindSemaphore, key, limit, opts)
	if err != nil {
		return nil, err
	}
	return &SemStream{h}, nil
}

// AcquireSemaphore starts a semaphore stream and waits until it holds a
// slot. On failure the stream is closed and the error says why. As with
// Semaphore, ctx is the stream's life: ending it releases the slot.
func (c *Client) AcquireSemaphore(ctx context.Context, key string, limit int, opts ...StreamOption) (*SemStream, error) {
	s, err := c.Semaphore(ctx, key, limit, opts...)
	if err != nil {
		return nil, err
	}
	return waitAcquired(ctx, s)
}
