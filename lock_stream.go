package dfstream

import (
	"context"

	"github.com/dfstream/dfstream/wire"
)

// LockStream is the life of one exclusive lock: an actor that owns one
// connection, queues for the key, holds it while renewing its lease, and
// reports each step as an Event. Get one with Client.Lock (blocks until
// held), Client.TryLock, or Client.StartLock (returns at once, to follow
// the stream's events).
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

// Lock blocks until the exclusive lock key is held, and returns the
// stream that holds it. ctx bounds the acquire only, as in etcd's
// Mutex.Lock: once Lock has returned, the lock lives until Release, Close
// or Client.Close, and is renewed meanwhile (watch Events or Done for a
// Lost). The acquire timeout (WithAcquireTimeout) bounds the wait too.
// On failure nothing is held and the error says why: ErrTimeout when the
// acquire timeout passed, ctx's error when ctx ended first, and the
// errors listed under StartLock. To tie the lock's whole life to a
// context instead, use StartLock.
func (c *Client) Lock(ctx context.Context, key string, opts ...StreamOption) (*LockStream, error) {
	h, err := c.acquireHold(ctx, wire.KindLock, key, 0, opts, false)
	if err != nil {
		return nil, err
	}
	return &LockStream{h}, nil
}

// TryLock acquires the exclusive lock key if it is free now, and returns
// an error matching ErrNotAcquired if another client holds it (nothing is
// then held or left queued). Otherwise it is Lock with an acquire timeout
// of zero.
func (c *Client) TryLock(ctx context.Context, key string, opts ...StreamOption) (*LockStream, error) {
	h, err := c.acquireHold(ctx, wire.KindLock, key, 0, opts, true)
	if err != nil {
		return nil, err
	}
	return &LockStream{h}, nil
}

// StartLock starts a stream that acquires the exclusive lock key and
// holds it until released, closed, lost, or ctx ends: ctx is the
// stream's whole life, and ending it releases the lock. This is the one
// way to bind a lock to a context (a request's, a job's); it departs from
// Lock, whose ctx bounds the acquire only, because a stream is followed
// rather than called, like a nats.go subscription.
//
// StartLock returns once the server has answered the enqueue: the stream
// then holds the key, or is queued for it and waits on a goroutine of its
// own, or has ended with Failed (unreachable server, refused auth,
// limits…; see Err). That is usually one round trip on a pooled
// connection. At worst it is two connects and two enqueues, each bounded
// by the connect timeout (an enqueue also by the lease asked for): an
// enqueue that a pooled connection the server had closed never answered,
// or that a draining 2.x server refused, goes once more on a fresh
// connection; and a Client's first connection to a server also asks for
// the server's generation, within the same connect timeout as the
// connect.
//
// A grant whose reply came too late to be held safely (after the lease it
// asked for, less the safety margin), or that turned out gone when
// confirmed, is never reported: the stream gives it back and queues again
// on its own goroutine while the acquire timeout allows. Once that time is
// over the stream fails with an error matching ErrTimeout, and also
// ErrDeadlinePassed for a late reply, or ErrLeaseExpired or ErrServer for
// a grant gone. Follow it with Events, or block with Wait. Invalid input
// is returned here as an error, before anything is sent.
func (c *Client) StartLock(ctx context.Context, key string, opts ...StreamOption) (*LockStream, error) {
	h, err := c.startHold(ctx, wire.KindLock, key, 0, opts)
	if err != nil {
		return nil, err
	}
	return &LockStream{h}, nil
}
