package bus_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/zipship/zipship/infra/bus"
	"github.com/zipship/zipship/infra/eventstore"
	"github.com/zipship/zipship/infra/eventstore/sqlite"
)

const wait = 5 * time.Second

func quietLog() *slog.Logger {
	lvl := slog.LevelError + 1
	if os.Getenv("ZIPSHIP_TEST_LOG") != "" {
		lvl = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
}

func openStore(t *testing.T) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(filepath.Join(t.TempDir(), "events.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// appendN appends n events to stream for tenant and returns them as stored.
func appendN(t *testing.T, s eventstore.Store, stream, tenant string, n int) []eventstore.Event {
	t.Helper()
	ctx := context.Background()
	before, err := s.ReadStream(ctx, stream, 1)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		data := fmt.Sprintf(`{"n":%d}`, len(before)+i+1)
		if _, err := s.Append(ctx, stream, eventstore.Any, eventstore.Event{Type: "Tested", Tenant: tenant, Data: json.RawMessage(data)}); err != nil {
			t.Fatal(err)
		}
	}
	all, err := s.ReadStream(ctx, stream, int64(len(before))+1)
	if err != nil {
		t.Fatal(err)
	}
	return all
}

// relayRun is one running relay.
type relayRun struct {
	cancel context.CancelFunc
	done   chan error
}

func startRelay(t *testing.T, s eventstore.Store, pub message.Publisher, cp bus.Checkpoint) *relayRun {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &relayRun{cancel: cancel, done: make(chan error, 1)}
	relay := bus.NewRelay(s, pub, cp, quietLog())
	go func() { r.done <- relay.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(wait):
			t.Error("relay did not stop")
		}
	})
	return r
}

// stop cancels the relay and returns Run's result.
func (r *relayRun) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- err // for the cleanup
		return err
	case <-time.After(wait):
		t.Fatal("relay did not stop")
		return nil
	}
}

func receive(t *testing.T, ch <-chan *message.Message) *message.Message {
	t.Helper()
	select {
	case m, ok := <-ch:
		if !ok {
			t.Fatal("subscription closed")
		}
		return m
	case <-time.After(wait):
		t.Fatal("no message")
		return nil
	}
}

func expectNone(t *testing.T, ch <-chan *message.Message, d time.Duration) {
	t.Helper()
	select {
	case m, ok := <-ch:
		if ok {
			t.Fatalf("unexpected message %s (position %s)", m.UUID, m.Metadata.Get(bus.MetaPosition))
		}
	case <-time.After(d):
	}
}

func checkMessage(t *testing.T, m *message.Message, want eventstore.Event) {
	t.Helper()
	if m.UUID != want.ID.String() {
		t.Fatalf("message %s (position %s), want event %s at position %d", m.UUID, m.Metadata.Get(bus.MetaPosition), want.ID, want.Position)
	}
	md := map[string]string{
		bus.MetaType: want.Type, bus.MetaTenant: want.Tenant,
		bus.MetaPosition: strconv.FormatInt(want.Position, 10), bus.MetaPartitionKey: want.Tenant,
	}
	for k, v := range md {
		if got := m.Metadata.Get(k); got != v {
			t.Errorf("metadata %s = %q, want %q", k, got, v)
		}
	}
	var got eventstore.Event
	if err := json.Unmarshal(m.Payload, &got); err != nil {
		t.Fatalf("payload: %v", err)
	}
	if got.ID != want.ID || got.Stream != want.Stream || got.Version != want.Version || got.Position != want.Position ||
		got.Type != want.Type || got.Tenant != want.Tenant || string(got.Data) != string(want.Data) {
		t.Errorf("payload = %+v, want %+v", got, want)
	}
}

// waitCheckpoint waits until the checkpoint reaches pos.
func waitCheckpoint(t *testing.T, cp bus.Checkpoint, pos int64) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		got, err := cp.Load(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if got == pos {
			return
		}
		if got > pos || time.Now().After(deadline) {
			t.Fatalf("checkpoint %d, want %d", got, pos)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func loadCP(t *testing.T, cp bus.Checkpoint) int64 {
	t.Helper()
	n, err := cp.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestRelayPublishesInOrderAndResumes(t *testing.T) {
	store := openStore(t)
	cp := bus.FileCheckpoint(filepath.Join(t.TempDir(), "relay.checkpoint"))
	pubsub := bus.NewInProcess(quietLog())
	t.Cleanup(func() { pubsub.Close() })
	subCtx, subCancel := context.WithCancel(context.Background())
	defer subCancel()
	msgs, err := pubsub.Subscribe(subCtx, bus.EventsTopic)
	if err != nil {
		t.Fatal(err)
	}

	// Stored before the relay starts, interleaved across streams/tenants.
	var stored []eventstore.Event
	stored = append(stored, appendN(t, store, "build-a", "acme", 2)...)
	stored = append(stored, appendN(t, store, "tenant-globex", "globex", 1)...)
	stored = append(stored, appendN(t, store, "build-a", "acme", 1)...)
	stored = append(stored, appendN(t, store, "site-acme", "acme", 2)...)

	r1 := startRelay(t, store, pubsub, cp)
	for _, want := range stored {
		m := receive(t, msgs)
		checkMessage(t, m, want)
		m.Ack()
	}
	// Appended while the relay runs: delivered live.
	live := appendN(t, store, "build-b", "globex", 3)
	for _, want := range live {
		m := receive(t, msgs)
		checkMessage(t, m, want)
		m.Ack()
	}
	last := live[len(live)-1].Position
	waitCheckpoint(t, cp, last)
	if err := r1.stop(t); err != nil {
		t.Fatalf("relay Run = %v, want nil after cancel", err)
	}
	if got := loadCP(t, cp); got != last {
		t.Fatalf("checkpoint after stop %d, want %d", got, last)
	}

	// A restarted relay starts after the checkpoint: nothing acknowledged
	// is published again.
	startRelay(t, store, pubsub, cp)
	expectNone(t, msgs, 100*time.Millisecond)
	next := appendN(t, store, "build-a", "acme", 1)[0]
	m := receive(t, msgs)
	checkMessage(t, m, next)
	m.Ack()
	waitCheckpoint(t, cp, next.Position)
	expectNone(t, msgs, 50*time.Millisecond)
}

// A message the subscriber nacks is delivered again, and the checkpoint
// does not pass it until it is acked.
func TestRelayRedeliversNackedMessage(t *testing.T) {
	store := openStore(t)
	cp := bus.FileCheckpoint(filepath.Join(t.TempDir(), "cp"))
	pubsub := bus.NewInProcess(quietLog())
	t.Cleanup(func() { pubsub.Close() })
	msgs, err := pubsub.Subscribe(context.Background(), bus.EventsTopic)
	if err != nil {
		t.Fatal(err)
	}
	evs := appendN(t, store, "build-x", "acme", 2)
	startRelay(t, store, pubsub, cp)

	first := receive(t, msgs)
	checkMessage(t, first, evs[0])
	time.Sleep(30 * time.Millisecond)
	if got := loadCP(t, cp); got != 0 {
		t.Fatalf("checkpoint %d before the first message was acked", got)
	}
	first.Nack()
	again := receive(t, msgs)
	checkMessage(t, again, evs[0])
	time.Sleep(30 * time.Millisecond)
	if got := loadCP(t, cp); got != 0 {
		t.Fatalf("checkpoint %d after a nack", got)
	}
	again.Ack()
	second := receive(t, msgs)
	checkMessage(t, second, evs[1])
	second.Ack()
	waitCheckpoint(t, cp, evs[1].Position)
}

// The same through a Watermill router: a handler error nacks, the event
// comes again; the events after it follow in order.
func TestRelayRouterHandlerErrorRedelivers(t *testing.T) {
	store := openStore(t)
	cp := bus.FileCheckpoint(filepath.Join(t.TempDir(), "cp"))
	log := quietLog()
	pubsub := bus.NewInProcess(log)
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: time.Second}, bus.Logger(log))
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu   sync.Mutex
		seen []string
	)
	evs := appendN(t, store, "build-y", "acme", 3)
	failOnce := evs[1].ID.String()
	failed := false
	router.AddConsumerHandler("h", bus.EventsTopic, pubsub, func(m *message.Message) error {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, m.UUID)
		if m.UUID == failOnce && !failed {
			failed = true
			return errors.New("handler failed")
		}
		return nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- router.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		router.Close()
		pubsub.Close()
		<-done
	})
	<-router.Running()
	startRelay(t, store, pubsub, cp)
	waitCheckpoint(t, cp, evs[2].Position)
	mu.Lock()
	defer mu.Unlock()
	want := []string{evs[0].ID.String(), evs[1].ID.String(), evs[1].ID.String(), evs[2].ID.String()}
	if fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Fatalf("handler saw %v, want %v", seen, want)
	}
}

// A relay stopped while its subscriber still holds an unacknowledged
// message (the process stops mid-build) must not move its checkpoint past
// that message: the restarted relay publishes it again.
func TestRelayStoppedBeforeAckRepublishes(t *testing.T) {
	store := openStore(t)
	cp := bus.FileCheckpoint(filepath.Join(t.TempDir(), "cp"))
	evs := appendN(t, store, "build-z", "acme", 3)

	// First process: acks event 1, is stopped while handling event 2.
	pubsub := bus.NewInProcess(quietLog())
	procCtx, stopProc := context.WithCancel(context.Background())
	msgs, err := pubsub.Subscribe(procCtx, bus.EventsTopic)
	if err != nil {
		t.Fatal(err)
	}
	r := startRelay(t, store, pubsub, cp)
	m := receive(t, msgs)
	checkMessage(t, m, evs[0])
	m.Ack()
	m = receive(t, msgs)
	checkMessage(t, m, evs[1])
	waitCheckpoint(t, cp, evs[0].Position)
	// Shutdown as `serve` does it: cancel the relay and the consumer, then
	// close the bus. The message is never acked.
	r.cancel()
	stopProc()
	if err := r.stop(t); err != nil {
		t.Fatalf("relay Run = %v", err)
	}
	pubsub.Close()
	if got := loadCP(t, cp); got != evs[0].Position {
		t.Fatalf("checkpoint %d after stopping mid-delivery, want %d (event %d was never acked)", got, evs[0].Position, evs[1].Position)
	}

	// Second process resumes from the checkpoint.
	pubsub2 := bus.NewInProcess(quietLog())
	t.Cleanup(func() { pubsub2.Close() })
	msgs2, err := pubsub2.Subscribe(context.Background(), bus.EventsTopic)
	if err != nil {
		t.Fatal(err)
	}
	startRelay(t, store, pubsub2, cp)
	for _, want := range evs[1:] {
		m := receive(t, msgs2)
		checkMessage(t, m, want)
		m.Ack()
	}
	waitCheckpoint(t, cp, evs[2].Position)
}

// A publisher that fails is retried; the checkpoint waits for success.
func TestRelayRetriesFailedPublish(t *testing.T) {
	store := openStore(t)
	cp := bus.FileCheckpoint(filepath.Join(t.TempDir(), "cp"))
	evs := appendN(t, store, "s", "acme", 2)
	pub := &flakyPublisher{failures: 2}
	startRelay(t, store, pub, cp)
	waitCheckpoint(t, cp, evs[1].Position)
	pub.mu.Lock()
	defer pub.mu.Unlock()
	if len(pub.published) != 2 || pub.published[0] != evs[0].ID.String() || pub.published[1] != evs[1].ID.String() {
		t.Fatalf("published %v", pub.published)
	}
	if pub.calls != 4 {
		t.Errorf("%d publish calls, want 4 (2 failures)", pub.calls)
	}
}

type flakyPublisher struct {
	mu        sync.Mutex
	failures  int
	calls     int
	published []string
}

func (p *flakyPublisher) Publish(topic string, msgs ...*message.Message) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls++
	if topic != bus.EventsTopic {
		return fmt.Errorf("topic %q", topic)
	}
	if p.failures > 0 {
		p.failures--
		return errors.New("broker unavailable")
	}
	for _, m := range msgs {
		p.published = append(p.published, m.UUID)
	}
	return nil
}

func (p *flakyPublisher) Close() error { return nil }

func TestNewInProcessBlocksUntilAck(t *testing.T) {
	pubsub := bus.NewInProcess(quietLog())
	t.Cleanup(func() { pubsub.Close() })
	msgs, err := pubsub.Subscribe(context.Background(), "t")
	if err != nil {
		t.Fatal(err)
	}
	published := make(chan error, 1)
	go func() { published <- pubsub.Publish("t", message.NewMessage("m1", []byte("x"))) }()
	m := receive(t, msgs)
	select {
	case <-published:
		t.Fatal("Publish returned before the ack")
	case <-time.After(30 * time.Millisecond):
	}
	m.Ack()
	select {
	case err := <-published:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(wait):
		t.Fatal("Publish did not return after the ack")
	}
}
