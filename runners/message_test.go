package runners_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/zipship/zipship/app"
	"github.com/zipship/zipship/domain"
	"github.com/zipship/zipship/infra/bus"
	"github.com/zipship/zipship/infra/eventstore"
)

// storedMessage returns the bus message the relay would publish for the
// first event of stream.
func (e *env) storedMessage(stream string) (*message.Message, eventstore.Event) {
	e.t.Helper()
	raw := e.rawStream(stream)
	if len(raw) == 0 {
		e.t.Fatalf("stream %s is empty", stream)
	}
	msg, err := bus.Message(raw[0])
	if err != nil {
		e.t.Fatal(err)
	}
	return msg, raw[0]
}

func TestHandleMessageAcksWhatItDoesNotHandle(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.app.CreateTenant(ctx, app.Meta{}, "alice", "acme", "Acme"); err != nil {
		t.Fatal(err)
	}
	tenantMsg, _ := e.storedMessage(domain.TenantStream("acme"))

	unknownBuild, err := app.Envelope(domain.BuildRequested{BuildID: uuid.NewString(), TenantID: "acme", Version: "v1"}, "acme", app.Meta{})
	if err != nil {
		t.Fatal(err)
	}
	unknownPayload, _ := json.Marshal(unknownBuild)
	badData := unknownBuild
	badData.Data = json.RawMessage(`{"buildId": 42}`)
	badDataPayload, _ := json.Marshal(badData)

	cases := map[string]*message.Message{
		"other event type":           tenantMsg,
		"garbage payload":            message.NewMessage(uuid.NewString(), []byte("\x00not json")),
		"empty payload":              message.NewMessage(uuid.NewString(), nil),
		"BuildRequested, bad data":   message.NewMessage(uuid.NewString(), badDataPayload),
		"BuildRequested, no stream":  message.NewMessage(uuid.NewString(), unknownPayload),
		"JSON of another shape":      message.NewMessage(uuid.NewString(), []byte(`[1,2,3]`)),
		"unknown event type":         message.NewMessage(uuid.NewString(), []byte(`{"type":"Nope","data":{}}`)),
		"BuildRequested, null data":  message.NewMessage(uuid.NewString(), []byte(`{"type":"BuildRequested","data":null}`)),
		"BuildRequested, no data at": message.NewMessage(uuid.NewString(), []byte(`{"type":"BuildRequested"}`)),
	}
	for name, msg := range cases {
		t.Run(name, func(t *testing.T) {
			head, _ := e.events.Head(ctx)
			if err := e.runner.HandleMessage(msg); err != nil {
				t.Fatalf("HandleMessage = %v, want nil (ack)", err)
			}
			if h, _ := e.events.Head(ctx); h != head {
				t.Errorf("appended %d events", h-head)
			}
		})
	}
	e.workspaceEmpty()
}

func TestHandleMessageRunsTheBuild(t *testing.T) {
	e := newEnv(t)
	id := e.request("acme", time.Now(), makeZip(t, staticSite("via message")), nil)
	msg, stored := e.storedMessage(domain.BuildStream(id))
	if err := e.runner.HandleMessage(msg); err != nil {
		t.Fatalf("HandleMessage: %v", err)
	}
	raw := e.rawStream(domain.BuildStream(id))
	if raw[len(raw)-1].Type != "BuildSucceeded" {
		t.Fatalf("last event %s", raw[len(raw)-1].Type)
	}
	// The attempt's events are caused by the request and share its
	// correlation id.
	for _, r := range raw[1:] {
		if r.CausationID != stored.ID.String() || r.CorrelationID != "corr-"+id {
			t.Errorf("%s: causation %q correlation %q", r.Type, r.CausationID, r.CorrelationID)
		}
	}
	// A duplicate delivery is acknowledged without work.
	head, _ := e.events.Head(context.Background())
	if err := e.runner.HandleMessage(msg.Copy()); err != nil {
		t.Fatal(err)
	}
	if h, _ := e.events.Head(context.Background()); h != head {
		t.Errorf("duplicate delivery appended %d events", h-head)
	}
}

// A message whose context ends (the runner is stopping) is not acknowledged:
// the bus must deliver it again.
func TestHandleMessageNacksWhenStopped(t *testing.T) {
	e := newEnv(t)
	id := e.request("acme", time.Now(), makeZip(t, staticSite("x")), nil)
	msg, _ := e.storedMessage(domain.BuildStream(id))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	msg.SetContext(ctx)
	if err := e.runner.HandleMessage(msg); err == nil {
		t.Fatal("HandleMessage = nil for a cancelled context; the request would be lost")
	}
	for _, ev := range e.stream(domain.BuildStream(id)) {
		if _, ok := ev.(domain.BuildFailed); ok {
			t.Fatal("a stopped runner failed the build")
		}
	}
}

// The embedded wiring of `serve`: relay → GoChannel → router → runner.
func TestRelayDeliversBuildToRunner(t *testing.T) {
	e := newEnv(t)
	log := quietLog()
	pubsub := bus.NewInProcess(log)
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: time.Second}, bus.Logger(log))
	if err != nil {
		t.Fatal(err)
	}
	router.AddConsumerHandler("runner", bus.EventsTopic, pubsub, e.runner.HandleMessage)
	ctx, cancel := context.WithCancel(context.Background())
	routerDone := make(chan error, 1)
	go func() { routerDone <- router.Run(ctx) }()
	relayDone := make(chan error, 1)
	t.Cleanup(func() {
		cancel()
		router.Close()
		pubsub.Close()
		<-routerDone
		<-relayDone
	})
	select {
	case <-router.Running():
	case <-time.After(5 * time.Second):
		t.Fatal("router did not start")
	}
	relay := bus.NewRelay(e.events, pubsub, bus.FileCheckpoint(filepath.Join(t.TempDir(), "cp")), log)
	go func() { relayDone <- relay.Run(ctx) }()

	if _, err := e.app.CreateTenant(ctx, app.Meta{}, "alice", "acme", ""); err != nil {
		t.Fatal(err)
	}
	id1 := e.request("acme", time.Now().Add(-time.Second), makeZip(t, staticSite("one")), nil)
	id2 := e.request("acme", time.Now(), makeZip(t, staticSite("two")), nil)
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := e.app.Build(ctx, id2)
		if err != nil {
			t.Fatal(err)
		}
		if b.Status().Finished() {
			if b.Status() != domain.StatusSuccess {
				t.Fatalf("build 2 %s", b.Status())
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("build 2 not finished")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if b, _ := e.app.Build(ctx, id1); b.Status() != domain.StatusSuccess {
		t.Errorf("build 1 %s", b.Status())
	}
	if _, body := e.get(liveHost("acme"), "/"); !strings.Contains(body, "two") {
		t.Errorf("live site serves %q", body)
	}
	select {
	case err := <-relayDone:
		relayDone <- err // for the cleanup
		t.Fatalf("relay stopped early: %v", err)
	default:
	}
}
