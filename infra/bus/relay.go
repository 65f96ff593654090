// Package bus carries stored events to their consumers (runners, analytics,
// audit replay) through a Watermill Publisher: the in-process GoChannel in
// embedded mode, Kafka in distributed mode. The Relay is the outbox: it
// reads the event store in global order and publishes each event, keyed by
// tenant, only after it is stored, moving its checkpoint only after the
// publisher accepted it. A crash between the two re-publishes (at least
// once); nothing is ever published that is not stored.
package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/zipship/zipship/infra/eventstore"
)

// EventsTopic is the topic every stored event is published to.
const EventsTopic = "zipship.events"

// Metadata keys set on every published message.
const (
	MetaType     = "type"
	MetaTenant   = "tenant"
	MetaPosition = "position"
	// MetaPartitionKey orders messages: one tenant's events stay in order.
	MetaPartitionKey = "partition_key"
)

// Checkpoint stores how far the relay got.
type Checkpoint interface {
	Load(ctx context.Context) (int64, error)
	Save(ctx context.Context, position int64) error
}

// Relay publishes stored events.
type Relay struct {
	events eventstore.Store
	pub    message.Publisher
	cp     Checkpoint
	topic  string
	log    *slog.Logger
}

// NewRelay returns a relay from events to pub.
func NewRelay(events eventstore.Store, pub message.Publisher, cp Checkpoint, log *slog.Logger) *Relay {
	if log == nil {
		log = slog.Default()
	}
	return &Relay{events: events, pub: pub, cp: cp, topic: EventsTopic, log: log.With("component", "relay")}
}

// Message turns a stored event into a bus message: the whole envelope as
// JSON, the event id as the message id (consumers deduplicate on it).
func Message(ev eventstore.Event) (*message.Message, error) {
	payload, err := json.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("encode event %d: %w", ev.Position, err)
	}
	msg := message.NewMessage(ev.ID.String(), payload)
	msg.Metadata.Set(MetaType, ev.Type)
	msg.Metadata.Set(MetaTenant, ev.Tenant)
	msg.Metadata.Set(MetaPosition, strconv.FormatInt(ev.Position, 10))
	msg.Metadata.Set(MetaPartitionKey, ev.Tenant)
	return msg, nil
}

// Run relays until ctx ends.
func (r *Relay) Run(ctx context.Context) error {
	after, err := r.cp.Load(ctx)
	if err != nil {
		return fmt.Errorf("relay: load checkpoint: %w", err)
	}
	r.log.Info("relay starting", "after", after)
	sub := r.events.Subscribe(ctx, after, eventstore.ReadOptions{})
	for ev := range sub.C {
		msg, err := Message(ev)
		if err != nil {
			return err
		}
		for backoff := 100 * time.Millisecond; ; backoff = min(backoff*2, 5*time.Second) {
			err := r.pub.Publish(r.topic, msg)
			if err == nil {
				break
			}
			r.log.Warn("publish failed; retrying", "position", ev.Position, "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
		}
		if ctx.Err() != nil {
			// Stopping: an in-process bus may have discarded the message
			// while closing (GoChannel's Publish cannot tell), so the
			// checkpoint stays before it and it is published again on
			// the next start.
			return nil
		}
		if err := r.cp.Save(ctx, ev.Position); err != nil {
			return fmt.Errorf("relay: save checkpoint %d: %w", ev.Position, err)
		}
	}
	if err := sub.Err(); err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, eventstore.ErrClosed) {
		return fmt.Errorf("relay: %w", err)
	}
	return nil
}

// FileCheckpoint keeps a checkpoint in a small file, replaced atomically.
type FileCheckpoint string

// Load returns the stored position (0 when the file does not exist).
func (f FileCheckpoint) Load(context.Context) (int64, error) {
	b, err := os.ReadFile(string(f))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("checkpoint %s: %w", f, err)
	}
	return n, nil
}

// Save writes position durably (temp file, fsync, rename).
func (f FileCheckpoint) Save(_ context.Context, position int64) error {
	tmp, err := os.CreateTemp(filepath.Dir(string(f)), ".checkpoint-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(strconv.FormatInt(position, 10) + "\n"); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), string(f))
}
