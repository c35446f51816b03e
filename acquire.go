package dfstream

import (
	"context"
	"errors"

	"github.com/dfstream/dfstream/wire"
)

// ErrNotAcquired is what TryLock and TryAcquireSemaphore return, wrapped,
// when the key was not free at the first answer: another client holds the
// lock, or every slot of the semaphore. Nothing is held or left queued.
var ErrNotAcquired = errors.New("not acquired")

// notAcquiredError is a try that found the key taken. It matches
// ErrNotAcquired and, through the server's answer, ErrTimeout.
type notAcquiredError struct {
	err error // the stream's *OpError, which says why
}

func (e *notAcquiredError) Error() string {
	return e.err.Error()
}

func (e *notAcquiredError) Is(target error) bool { return target == ErrNotAcquired }

func (e *notAcquiredError) Unwrap() error { return e.err }

// acquireHold starts a stream and blocks until it holds its key; ctx bounds
// only that wait (the blocking forms). A try gives up at the first answer
// that is not a grant, with an error matching ErrNotAcquired.
func (c *Client) acquireHold(ctx context.Context, kind wire.Kind, key string, limit int, opts []StreamOption, try bool) (*holdStream, error) {
	if try {
		opts = append(opts[:len(opts):len(opts)], WithAcquireTimeout(0))
	}
	if ctx != nil && ctx.Err() != nil {
		return nil, startErr(kind, key, ctx.Err()) // nothing sent
	}
	s, err := c.newHold(ctx, kind, key, limit, opts)
	if err != nil {
		return nil, err
	}
	detach := func() bool { return true }
	if ctx.Done() != nil {
		detach = context.AfterFunc(ctx, func() { s.shut(context.Cause(ctx)) })
	}
	s.beginWaiting()
	_, err = s.Wait(ctx)
	if err == nil && !detach() {
		err = ctx.Err() // ctx ended as the grant came: the stream is ending
	}
	if err != nil {
		detach()
		_ = s.Close()
		if try && errors.Is(err, ErrTimeout) {
			err = &notAcquiredError{err: err}
		}
		return nil, err
	}
	return s, nil
}
