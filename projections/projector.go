package projections

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/zipship/zipship/infra/eventstore"
)

const (
	// maxBatch caps the events applied in one transaction by Run: large
	// enough to make catch-up cheap, small enough to keep a transaction (and
	// the writer lock) short.
	maxBatch = 500

	// rebuildPage is the ReadAll page size of Rebuild, one transaction each.
	rebuildPage = 1000
)

// Projector keeps a DB up to date with an event store: it applies every
// event after the DB's checkpoint, in global order, then follows new ones.
// Run one Projector per read-model database.
type Projector struct {
	events eventstore.Store
	db     *DB
	log    *slog.Logger

	// mu guards failed and err: when Run ends with an error, failed is
	// closed so that WaitFor stops waiting for a position that will not
	// come.
	mu     sync.Mutex
	failed chan struct{}
	err    error
}

// NewProjector returns a Projector from events into db. A nil log discards
// the projector's logs.
func NewProjector(events eventstore.Store, db *DB, log *slog.Logger) *Projector {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Projector{events: events, db: db, log: log.With("component", "projector"), failed: make(chan struct{})}
}

// Run applies events until ctx ends, then returns nil. It first catches up
// with pages read from the store (up to maxBatch events per transaction),
// then subscribes after the checkpoint and applies each event as it comes,
// batching whatever is already waiting in the subscription. An event that
// cannot be decoded or applied stops Run with an error naming its position:
// a fact is never skipped, and a restarted Run tries it again. Call Run
// once at a time.
func (p *Projector) Run(ctx context.Context) error {
	p.mu.Lock()
	if p.err != nil { // a previous Run failed: this one starts afresh
		p.failed, p.err = make(chan struct{}), nil
	}
	p.mu.Unlock()

	err := p.run(ctx)
	if ctx.Err() != nil {
		p.log.InfoContext(ctx, "projector stopped")
		return nil
	}
	p.mu.Lock()
	p.err = err
	close(p.failed)
	p.mu.Unlock()
	return err
}

func (p *Projector) run(ctx context.Context) error {
	// End the subscription's goroutine when run fails too, not only when
	// the caller's ctx ends.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	cp, err := p.catchUp(ctx)
	if err != nil {
		return err
	}
	p.log.InfoContext(ctx, "projector caught up, following", "position", cp)

	sub := p.events.Subscribe(ctx, cp, eventstore.ReadOptions{})
	batch := make([]eventstore.Event, 0, maxBatch)
	for {
		var (
			ev eventstore.Event
			ok bool
		)
		select {
		case ev, ok = <-sub.C:
		case <-ctx.Done():
			return ctx.Err()
		}
		if !ok {
			return fmt.Errorf("projector: subscription after %d ended: %w", cp, subErr(sub))
		}
		batch = append(batch[:0], ev)
		closed := false
	drain:
		for len(batch) < maxBatch {
			select {
			case ev, ok := <-sub.C:
				if !ok {
					closed = true
					break drain
				}
				batch = append(batch, ev)
			default:
				break drain
			}
		}
		n, err := p.apply(ctx, batch)
		if err != nil {
			return err
		}
		cp = max(cp, batch[len(batch)-1].Position)
		p.log.DebugContext(ctx, "applied events", "events", n, "position", cp)
		if closed {
			return fmt.Errorf("projector: subscription after %d ended: %w", cp, subErr(sub))
		}
	}
}

// subErr is the subscription's terminal error, never nil.
func subErr(sub *eventstore.Subscription) error {
	if err := sub.Err(); err != nil {
		return err
	}
	return errors.New("subscription closed")
}

// catchUp applies the stored events after the checkpoint in pages of
// maxBatch, one transaction each, and returns the position reached.
func (p *Projector) catchUp(ctx context.Context) (int64, error) {
	cp, err := p.db.Checkpoint(ctx)
	if err != nil {
		return 0, fmt.Errorf("projector: %w", err)
	}
	start := cp
	for {
		evs, err := p.events.ReadAll(ctx, cp, eventstore.ReadOptions{Limit: maxBatch})
		if err != nil {
			return 0, fmt.Errorf("projector: catch up after %d: %w", cp, err)
		}
		if len(evs) == 0 {
			break
		}
		if _, err := p.apply(ctx, evs); err != nil {
			return 0, err
		}
		cp = evs[len(evs)-1].Position
		if len(evs) < maxBatch {
			break
		}
	}
	if cp > start {
		p.log.InfoContext(ctx, "projector caught up", "from", start, "to", cp)
	}
	return cp, nil
}

// apply applies a batch in one transaction. If that fails, it applies the
// events one by one, so that the read model keeps every event before the
// one that fails and the error names that one.
func (p *Projector) apply(ctx context.Context, evs []eventstore.Event) (int, error) {
	n, err := p.db.applyBatch(ctx, evs)
	if err == nil {
		return n, nil
	}
	if len(evs) == 1 || ctx.Err() != nil {
		return 0, fmt.Errorf("projector: %w", err)
	}
	n = 0
	for _, ev := range evs {
		k, err := p.db.applyBatch(ctx, []eventstore.Event{ev})
		if err != nil {
			return n, fmt.Errorf("projector: %w", err)
		}
		n += k
	}
	// The batch failed but each event applied alone: a transient error.
	p.log.WarnContext(ctx, "batch failed, applied event by event", "events", len(evs), "err", err)
	return n, nil
}

// WaitFor blocks until the DB's checkpoint reaches position, so that a read
// after an append (which returned position) sees that append. It returns
// early with an error when ctx ends, when the DB is closed, or when Run has
// failed (the position would never come).
func (p *Projector) WaitFor(ctx context.Context, position int64) error {
	for {
		cp, changed := p.db.watch()
		if cp >= position {
			return nil
		}
		p.mu.Lock()
		failed := p.failed
		p.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("wait for position %d (read models at %d): %w", position, cp, ctx.Err())
		case <-p.db.done:
			return fmt.Errorf("wait for position %d: %w", position, ErrClosed)
		case <-failed:
			p.mu.Lock()
			err := p.err
			p.mu.Unlock()
			if err == nil { // a new Run started in between
				continue
			}
			return fmt.Errorf("wait for position %d (read models at %d): %w", position, cp, err)
		}
	}
}

// Rebuild throws the read models of db away and applies every event of the
// store again from position 0, one transaction per page of events. It
// returns the number of events applied. Stop any Projector feeding db first:
// it would go on from its own position and the two would interleave.
func Rebuild(ctx context.Context, events eventstore.Store, db *DB) (int64, error) {
	if err := db.Reset(ctx); err != nil {
		return 0, fmt.Errorf("rebuild: %w", err)
	}
	var applied, pos int64
	for {
		evs, err := events.ReadAll(ctx, pos, eventstore.ReadOptions{Limit: rebuildPage})
		if err != nil {
			return applied, fmt.Errorf("rebuild: read after %d: %w", pos, err)
		}
		if len(evs) == 0 {
			return applied, nil
		}
		n, err := db.applyBatch(ctx, evs)
		applied += int64(n)
		if err != nil {
			return applied, fmt.Errorf("rebuild: %w", err)
		}
		pos = evs[len(evs)-1].Position
	}
}
