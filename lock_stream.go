package dfstream

import (
	"context"

	"github.com/dfstream/dfstream/wire"
)

// LockStream is the life of one exclusive lock: an actor that owns one
// connection, queues for the key, holds it while renewing its lease, and
// reports each step as an Event. Start one with Client.Lock.
//
// While it holds the lock the stream renews at lease × renew ratio (and at
// least every half of the server's read timeout), notices within tens of
// milliseconds when the server hangs up on its connection, and emits Lost
// no later than the local safe deadline if a renewal is not confirmed in
// time. A held stream runs no goroutine of its own (on Linux; elsewhere
// one, with a read pending): its renewals run when the Client's schedule
// says so, and its release on the caller.
type LockStream struct {
	*holdStream
}

var _ Stream = (*LockStream)(nil)

// Lock starts a stream that acquires the exclusive lock key and holds it
// until released, closed, lost, or ctx ends (ending ctx releases the lock).
//
// Lock returns once the server has answered the enqueue: the stream then
// holds the key, or is queued for it and waits on a goroutine of its own,
// or has ended with Failed (unreachable server, refused auth, limits…; see
// Err). That is usually one round trip on a pooled connection. At worst
// it is two connects and two enqueues, each bounded by the connect timeout
// (an enqueue also by the lease asked for): an enqueue that a pooled
// connection the server had closed never answered, or that a draining 2.x
// server refused, goes once more on a fresh connection; and a Client's
// first connection to a server also asks for the server's generation,
// within the same connect timeout as the connect.
//
// A grant whose reply came too late to be held safely (after the lease it
// asked for, less the safety margin), or that turned out gone when
// confirmed, is never reported: the stream gives it back and queues again
// on its own goroutine while the acquire timeout allows. Once that time is
// over the stream fails with an error matching ErrTimeout, and also
// ErrDeadlinePassed for a late reply, or ErrLeaseExpired or ErrServer for
// a grant gone. Follow it with Events, or block with Wait. Invalid input
// is returned here as an error, before anything is sent.
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
