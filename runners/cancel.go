package runners

import (
	"context"
	"errors"
	"time"

	"github.com/zipship/zipship/domain"
	"github.com/zipship/zipship/infra/eventstore"
)

// errCancelled is the cause of an attempt's context ended by a cancel
// request of its build.
var errCancelled = errors.New(domain.CancelledError)

// cancelPoll is how often the watcher reads the build's stream when the
// store's subscription is not available.
const cancelPoll = 500 * time.Millisecond

// watchCancel calls cancel once BuildCancelRequested is appended to b's
// stream after the version the attempt started at. It follows the event
// store from its head (one subscription per running build, filtered by
// tenant) and falls back to reading the stream every 500 ms if the
// subscription ends. stop ends the watch and waits for it.
func (r *Runner) watchCancel(ctx context.Context, b *domain.Build, cancel func()) (stop func()) {
	wctx, wcancel := context.WithCancel(ctx)
	done := make(chan struct{})
	stream := domain.BuildStream(b.ID())
	from := b.StreamVersion() + 1
	cancelType := (domain.BuildCancelRequested{}).EventType()
	events := r.app.Events()

	// requested reads the stream from `from` on and tells whether a cancel
	// request is among the events.
	requested := func() bool {
		evs, err := events.ReadStream(wctx, stream, from)
		if err != nil {
			if wctx.Err() == nil {
				r.log.Warn("cancel watch: read build stream", "build", b.ID(), "err", err)
			}
			return false
		}
		for _, e := range evs {
			from = e.Version + 1
			if e.Type == cancelType {
				return true
			}
		}
		return false
	}

	go func() {
		defer close(done)
		var sub *eventstore.Subscription
		if head, err := events.Head(wctx); err == nil {
			sub = events.Subscribe(wctx, head, eventstore.ReadOptions{Tenant: b.Tenant()})
		}
		// What was appended between the start of the attempt and the head
		// the subscription starts from.
		if requested() {
			cancel()
			return
		}
		if sub != nil {
			for e := range sub.C {
				if e.Stream == stream && e.Type == cancelType {
					cancel()
					return
				}
			}
			if wctx.Err() != nil {
				return
			}
			r.log.Warn("cancel watch: subscription ended; polling the build stream", "build", b.ID(), "err", sub.Err())
		}
		t := time.NewTicker(cancelPoll)
		defer t.Stop()
		for {
			select {
			case <-wctx.Done():
				return
			case <-t.C:
				if requested() {
					cancel()
					return
				}
			}
		}
	}()
	return func() {
		wcancel()
		<-done
	}
}
