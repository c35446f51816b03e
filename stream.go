package dfstream

// Stream is what every dfstream stream offers: an actor that owns one
// connection and reports what happens on an event channel. A signal
// stream's actor is a goroutine; a lock or semaphore stream's runs on
// whichever goroutine does its next step (see LockStream).
type Stream interface {
	// Events returns the stream's events, in order. The channel is closed
	// after the stream's terminal event. The actor never waits for the
	// consumer: see the stream types for what may be coalesced.
	Events() <-chan Event
	// Done is closed when the stream has ended and its goroutines have
	// exited.
	Done() <-chan struct{}
	// Err reports why the stream ended: nil while it runs and after a plain
	// release or Close.
	Err() error
	// Close ends the stream, releasing what it holds and cancelling what it
	// waits for, and returns once its goroutines have exited. It is
	// idempotent and safe to call from any goroutine.
	Close() error
}
