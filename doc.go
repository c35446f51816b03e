// Package dfstream is a client for dflockd, the distributed lock server:
// exclusive locks and counting semaphores with FIFO queues and leases, and
// pub/sub signals with NATS-style wildcards and queue groups.
//
// Every primitive is an actor that owns its connection and reports what
// happens to it as typed events on a channel: a LockStream or SemStream
// emits Queued, Acquired, Renewed, Moved (a dflockd cluster's failover, see
// WithCluster), Lost and Released; a SignalStream (Client.Signals) emits Signal and connection
// events; a Router maps signal subjects to handlers. Streams keep a
// consumer that stops reading from stalling them, declare a lock Lost no
// later than its local safe deadline, reject bad input before sending a
// byte, and report errors that match this package's sentinels with
// errors.Is.
//
// # Blocking calls and streams
//
// Client.Lock and Client.AcquireSemaphore block until the key is held, and
// their context bounds that wait only, as etcd's Mutex.Lock and
// redislock's Obtain do: the hold then lasts until Release, Close or
// Client.Close, renewed meanwhile, and its stream still reports a Lost.
// Client.TryLock and Client.TryAcquireSemaphore try once and return an
// error matching ErrNotAcquired when the key is taken. Client.StartLock and
// Client.StartSemaphore return the stream as soon as the server has
// answered the enqueue, for select loops over its events and for the
// two-phase acquire (Enqueued, then Wait); their context is the stream's
// whole life, which is the one way to bind a hold to a context: ending it
// releases the key. The names say which is which: a call named like a
// blocking call blocks, and Start returns a stream to follow.
//
// An Observer (WithObserver) is told what the streams do, for metrics; the
// dfprom package implements it with Prometheus.
//
// The dflockdtest package is an in-process server for tests and examples.
//
// # Options
//
// Everything is configured with functional options of five kinds, each an
// interface only this package implements: Option (New), StreamOption (lock
// and semaphore streams), SignalOption (signal streams, and a Router's
// through WithRouterSignalOptions), RouterOption (NewRouter) and
// HandlerOption (Router.Handle). A stream option is also an Option: given to
// New it sets the default for every stream of its kind, and the option given
// to the stream overrides it. Names say what they configure: WithSignal…
// for signal streams, WithRouter… for a Router, WithHandler… for one
// handler; Client and lock or semaphore stream options, the common case,
// have no prefix. An invalid value is an error matching ErrInvalidInput,
// from the call the option is given to.
package dfstream
