package dfstream

import (
	"context"
	"fmt"
	"time"

	"github.com/sourcegraph/conc/panics"
)

// The running Router: each stream's dispatcher hands its signals to the
// handlers' queues, and each handler's workers call it.

// dispatch routes the events of one stream: for the plain stream (group ==
// nil) through the trie, for a group stream to its one handler. A stream
// that ends while runCtx is still live was closed under the router (by
// Client.Close): that stops the router, with an error matching ErrClosed.
func (r *Router) dispatch(runCtx context.Context, s *SignalStream, group *route) {
	events := s.Events()
	var touched []*route // routes with unreported drops
	var reported time.Time
	for ev := range events {
		switch e := ev.(type) {
		case Signal:
			r.received.Add(1)
			e.subs = nil // the router's own: handlers have their pattern and group
			if group != nil {
				e.Pattern, e.Group = group.pattern, group.group
				touched = r.offer(group, e, touched)
				break
			}
			r.match(e.Channel, func(pattern string, rt *route) {
				sig := e
				sig.Pattern, sig.Group = pattern, ""
				touched = r.offer(rt, sig, touched)
			})
		case Failed:
			r.stop(e.Err)
		case Closed:
		case Overflow:
			if group != nil {
				e.Pattern, e.Group = group.pattern, group.group
			}
			r.event(e)
		default:
			r.event(ev)
		}
		// Report drops once the burst is over, or every 100ms during one.
		if len(touched) > 0 && (len(events) == 0 || time.Since(reported) > 100*time.Millisecond) {
			touched = r.reportDrops(touched)
			reported = time.Now()
		}
	}
	r.reportDrops(touched)
	if runCtx.Err() == nil {
		r.stop(fmt.Errorf("dfstream: router: signal stream to %s closed: %w", s.Server(), ErrClosed))
	}
}

// offer hands sig to rt's queue without blocking, applying rt's overflow
// policy when the queue is full.
func (r *Router) offer(rt *route, sig Signal, touched []*route) []*route {
	select {
	case rt.q <- sig:
		return touched
	default:
	}
	switch rt.cfg.policy {
	case DropOldest:
		// Evict the oldest signal to make room, and count a drop only if
		// one was evicted: a worker may have emptied the queue meanwhile.
		// This goroutine is the queue's only sender, so once there is room
		// the send cannot block.
		select {
		case <-rt.q:
			rt.q <- sig
		default:
			rt.q <- sig // the queue is empty now: nothing lost
			return touched
		}
	case FailStream:
		r.stop(fmt.Errorf("%w: handler %s queue full (%d signals)", ErrOverflow, subKey{rt.pattern, rt.group}, rt.cfg.queue))
	}
	rt.dropped.Add(1)
	r.dropped.Add(1)
	r.observeDrop(rt)
	if rt.unrep == 0 {
		touched = append(touched, rt)
	}
	rt.unrep++
	return touched
}

// reportDrops emits one Overflow event per route with drops not yet
// reported.
func (r *Router) reportDrops(touched []*route) []*route {
	now := time.Now()
	for _, rt := range touched {
		r.event(Overflow{
			Pattern: rt.pattern, Group: rt.group,
			Dropped: rt.unrep, Total: rt.dropped.Load(),
			Policy: rt.cfg.policy, At: now,
		})
		rt.unrep = 0
	}
	return touched[:0]
}

func (r *Router) event(ev Event) {
	log := r.c.cfg.logger
	switch e := ev.(type) {
	case Disconnected:
		log.Warn().Err(e.Reason).Msg("router connection lost")
	case Reconnected:
		log.Info().Dur("down", e.Down).Msg("router reconnected")
	case Overflow:
		log.Warn().Str("pattern", e.Pattern).Str("group", e.Group).Uint64("dropped", e.Dropped).Uint64("total", e.Total).Msg("signals dropped")
	}
	if r.cfg.onEvent != nil {
		r.try(func() { r.cfg.onEvent(ev) })
	}
}

// try runs f, a handler or a hook the user gave, and stops the router with
// its panic, if any: Run re-panics with the first one once drained.
func (r *Router) try(f func()) bool {
	var c panics.Catcher
	c.Try(f)
	rec := c.Recovered()
	if rec == nil {
		return true
	}
	r.panicked.CompareAndSwap(nil, rec)
	r.stop(&HandlerPanic{Value: rec.Value, Stack: rec.Stack})
	return false
}

// stop ends Run with err (the first one wins).
func (r *Router) stop(err error) {
	r.stopOnce.Do(func() {
		r.mu.Lock()
		r.runErr = err
		r.mu.Unlock()
	})
	r.stopRun(err)
}

// work is one worker of rt: it handles rt's queue until Run closes it.
func (r *Router) work(ctx context.Context, rt *route) {
	for sig := range rt.q {
		var err error
		start := r.handlerStart()
		ok := r.try(func() { err = rt.final.HandleSignal(ctx, sig) })
		r.observeHandler(rt, start, ok, err)
		if !ok {
			r.failed.Add(1)
			continue
		}
		if err != nil {
			r.failed.Add(1)
			r.try(func() { r.handleErr(ctx, sig, err) })
			continue
		}
		r.handled.Add(1)
	}
}

func (r *Router) handleErr(ctx context.Context, sig Signal, err error) {
	if r.cfg.onError != nil {
		r.cfg.onError(ctx, sig, err)
		return
	}
	r.c.cfg.logger.Error().Err(err).Str("channel", sig.Channel).Str("pattern", sig.Pattern).Str("group", sig.Group).Msg("signal handler failed")
}
