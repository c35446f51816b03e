package dfstream

import (
	"context"

	"github.com/dfstream/dfstream/wire"
)

// LockStream is the life of one exclusive lock: an actor goroutine that owns
// one connection, queues for the key, holds it while renewing its lease, and
// reports each step as an Event. Start one with Client.Lock.
//
// While it holds the lock the stream renews at lease × renew ratio (and at
// least every half of the server's read timeout), keeps a read pending so
// that a server that goes away is noticed at once, and emits Lost no later
// than the local safe deadline if a renewal is not confirmed in time.
type LockStream struct {
	*holdStream
}

var _ Stream = (*LockStream)(nil)

// Lock starts a stream that acquires the exclusive lock key and holds it
// until released, closed, lost, or ctx ends (ending ctx releases the lock).
// It returns at once; follow the stream with Events, or block with Wait.
// Invalid input is reported here, before anything is sent.
func (c *Client) Lock(ctx context.Context, key string, opts ...StreamOption) (*LockStream, error) {
	h, err := c.startHold(ctx, wire.KindLock, key, 0, opts)
	if err != nil {
		return nil, err
	}
	return &LockStream{h}, nil
}

// AcquireLock starts a lock stream and waits until it holds the lock. On
// failure the stream is closed and the error says why (ErrTimeout when the
// acquire timeout passed). As with Lock, ctx is the stream's life: the lock
// is released when ctx ends, so pass a context that lives as long as the
// lock should, not one scoped to the acquire.
func (c *Client) AcquireLock(ctx context.Context, key string, opts ...StreamOption) (*LockStream, error) {
	s, err := c.Lock(ctx, key, opts...)
	if err != nil {
		return nil, err
	}
	return waitAcquired(ctx, s)
}

// waitAcquired waits until s holds its key, closing it on failure.
func waitAcquired[S interface {
	Wait(context.Context) (Acquired, error)
	Close() error
}](ctx context.Context, s S) (S, error) {
	if _, err := s.Wait(ctx); err != nil {
		_ = s.Close()
		var zero S
		return zero, err
	}
	return s, nil
}
