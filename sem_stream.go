package dfstream

import (
	"context"

	"github.com/dfstream/dfstream/wire"
)

// SemStream is the life of one slot of a counting semaphore: the same
// machine as LockStream, with the semaphore commands and a limit. Up to
// limit streams hold a key's slots at once; the rest queue in FIFO order.
// Get one with Client.AcquireSemaphore,
// Client.TryAcquireSemaphore or Client.StartSemaphore.
type SemStream struct {
	*holdStream
}

var _ Stream = (*SemStream)(nil)

// Limit returns the semaphore's limit.
func (s *SemStream) Limit() int { return s.limit }

// AcquireSemaphore blocks until it holds one slot of the semaphore key,
// which allows limit holders at once, and returns the stream that holds
// it. As with Lock, ctx bounds the acquire only: the slot then lives until
// Release, Close or Client.Close. The limit must be positive and the same
// for every client of the key (ErrLimitMismatch otherwise).
func (c *Client) AcquireSemaphore(ctx context.Context, key string, limit int, opts ...StreamOption) (*SemStream, error) {
	h, err := c.acquireHold(ctx, wire.KindSemaphore, key, limit, opts, false)
	if err != nil {
		return nil, err
	}
	return &SemStream{h}, nil
}

// TryAcquireSemaphore takes one slot of the semaphore key if one is free
// now, and returns an error matching ErrNotAcquired if all limit slots are
// held (nothing is then held or left queued).
func (c *Client) TryAcquireSemaphore(ctx context.Context, key string, limit int, opts ...StreamOption) (*SemStream, error) {
	h, err := c.acquireHold(ctx, wire.KindSemaphore, key, limit, opts, true)
	if err != nil {
		return nil, err
	}
	return &SemStream{h}, nil
}

// StartSemaphore starts a stream that acquires one slot of the semaphore
// key and holds it until released, closed, lost, or ctx ends: as with
// StartLock, ctx is the stream's whole life, and it returns once the
// server has answered the enqueue.
func (c *Client) StartSemaphore(ctx context.Context, key string, limit int, opts ...StreamOption) (*SemStream, error) {
	h, err := c.startHold(ctx, wire.KindSemaphore, key, limit, opts)
	if err != nil {
		return nil, err
	}
	return &SemStream{h}, nil
}
