package domain

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// Shared fixtures and helpers of the domain tests.

// Times are UTC and built with time.Date, so they carry no monotonic
// reading and survive a JSON round trip unchanged.
var (
	t0 = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	t1 = t0.Add(90 * time.Second)
)

// applier is what every aggregate implements to evolve its state.
type applier interface{ Apply(Event) }

// given applies events, in order, to a fresh aggregate and returns it.
func given[A applier](fresh A, events ...Event) A {
	for _, e := range events {
		fresh.Apply(e)
	}
	return fresh
}

// checkDecision asserts the result of a decide method: either exactly the
// wanted events (type and every field), or the wanted sentinel error and no
// events.
func checkDecision(t *testing.T, got []Event, err error, want []Event, wantErr error) {
	t.Helper()
	if wantErr != nil {
		if !errors.Is(err, wantErr) {
			t.Fatalf("error = %v, want errors.Is(%v)", err, wantErr)
		}
		if got != nil {
			t.Fatalf("events = %#v, want none alongside the error", got)
		}
		return
	}
	if err != nil {
		t.Fatalf("unexpected error: %v", err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("events:\n got %#v\nwant %#v", got, want)
	}
}

// allEvents holds one fully populated value of every event type, keyed by
// the stable type name that must be stored.
func allEvents() map[string]Event {
	return map[string]Event{
		"TenantCreated": TenantCreated{TenantID: "acme", Name: "Acme Inc", Owner: "alice", At: t0},
		"MemberAdded":   MemberAdded{TenantID: "acme", UserID: "bob", Role: RoleAdmin, AddedBy: "alice", At: t0},
		"MemberRoleChanged": MemberRoleChanged{TenantID: "acme", UserID: "bob", Role: RoleMember, From: RoleAdmin,
			ChangedBy: "alice", At: t1},
		"MemberRemoved": MemberRemoved{TenantID: "acme", UserID: "bob", RemovedBy: "alice", At: t1},
		"BuildRequested": BuildRequested{BuildID: "b1", TenantID: "acme", Version: "v1735787045000",
			RequestedBy: "alice",
			Source: Source{Key: "sources/acme/b1.zip", SHA256: strings.Repeat("ab", 32), Size: 1234,
				Files: 12, Uncompressed: 56789},
			Config:   BuildConfig{Framework: "vite", BuildCommand: "npm run build", OutputDir: "dist", NodeVersion: "20.11"},
			EnvNames: []string{"API_URL", "TOKEN"}, EnvKey: "env/acme/b1.json", IdempotencyKey: "idem-1", At: t0},
		"BuildStarted":     BuildStarted{BuildID: "b1", Attempt: 2, Runner: "runner-7", At: t0},
		"BuildStepStarted": BuildStepStarted{BuildID: "b1", Attempt: 2, Step: StepInstall, At: t0},
		"BuildStepFinished": BuildStepFinished{BuildID: "b1", Attempt: 2, Step: StepInstall, DurationMs: 1500,
			Detail: "312 packages", At: t1},
		"BuildAttemptFailed": BuildAttemptFailed{BuildID: "b1", Attempt: 1, Step: StepDownload,
			Error: "blob timeout", RetryInMs: 2000, At: t1},
		"BuildCancelRequested": BuildCancelRequested{BuildID: "b1", By: "alice", At: t1},
		"BuildPublished": BuildPublished{BuildID: "b1", Attempt: 2, ManifestKey: "sites/acme/v1/manifest.json",
			Files: 40, Bytes: 1 << 20, At: t1},
		"BuildSucceeded": BuildSucceeded{BuildID: "b1", Attempt: 2, ManifestKey: "sites/acme/v1/manifest.json",
			Files: 40, Bytes: 1 << 20, DurationMs: 90000, At: t1},
		"BuildFailed": BuildFailed{BuildID: "b1", Attempt: 3, Step: StepBuild, Error: "exit status 1",
			Retryable: true, At: t1},
		"DeploymentActivated": DeploymentActivated{TenantID: "acme", BuildID: "b2", Version: "v1735787046000",
			ManifestKey: "m2", ActivatedBy: "alice", Previous: "b1", At: t1},
		"DeploymentRolledBack": DeploymentRolledBack{TenantID: "acme", BuildID: "b1", Version: "v1735787045000",
			ManifestKey: "m1", RolledBackBy: "bob", Previous: "b2", At: t1},
	}
}

func TestEventTypesAreStable(t *testing.T) {
	events := allEvents()
	// A new event type must be added to allEvents (and to Decode).
	if len(events) != 15 {
		t.Fatalf("fixture has %d event types, want 15", len(events))
	}
	for name, e := range events {
		if got := e.EventType(); got != name {
			t.Errorf("%T.EventType() = %q, want %q", e, got, name)
		}
	}
}

func TestDecodeRoundTrip(t *testing.T) {
	for name, e := range allEvents() {
		t.Run(name, func(t *testing.T) {
			data, err := json.Marshal(e)
			if err != nil {
				t.Fatalf("marshal: %v", err)
			}
			got, err := Decode(e.EventType(), data)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if reflect.TypeOf(got) != reflect.TypeOf(e) {
				t.Fatalf("Decode type = %T, want %T", got, e)
			}
			if !reflect.DeepEqual(got, e) {
				t.Fatalf("round trip:\n got %#v\nwant %#v", got, e)
			}
		})
	}
}

// Zero-valued optional fields (omitempty) must also survive a round trip.
func TestDecodeRoundTripZeroOptionals(t *testing.T) {
	for _, e := range []Event{
		BuildRequested{BuildID: "b1", TenantID: "acme", Version: "v1", Source: Source{Key: "k"}, At: t0},
		BuildStepFinished{BuildID: "b1", Attempt: 1, Step: StepBuild, At: t0},
		DeploymentActivated{TenantID: "acme", BuildID: "b1", Version: "v1", ManifestKey: "m", At: t0},
	} {
		data, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Decode(e.EventType(), data)
		if err != nil {
			t.Fatalf("Decode %s: %v", e.EventType(), err)
		}
		if !reflect.DeepEqual(got, e) {
			t.Errorf("round trip:\n got %#v\nwant %#v", got, e)
		}
	}
}

// The JSON field names are the stored schema: renaming a tag breaks every
// existing stream.
func TestEventJSONFieldNames(t *testing.T) {
	tests := []struct {
		event Event
		want  string
	}{
		{TenantCreated{TenantID: "acme", Name: "Acme", Owner: "alice", At: t0},
			`{"tenantId":"acme","name":"Acme","owner":"alice","at":"2025-01-02T03:04:05Z"}`},
		{MemberRoleChanged{TenantID: "acme", UserID: "bob", Role: RoleAdmin, From: RoleMember, ChangedBy: "alice", At: t0},
			`{"tenantId":"acme","userId":"bob","role":"admin","from":"member","changedBy":"alice","at":"2025-01-02T03:04:05Z"}`},
		{BuildAttemptFailed{BuildID: "b1", Attempt: 1, Step: StepUpload, Error: "x", RetryInMs: 2000, At: t0},
			`{"buildId":"b1","attempt":1,"step":"upload","error":"x","retryInMs":2000,"at":"2025-01-02T03:04:05Z"}`},
		{DeploymentActivated{TenantID: "acme", BuildID: "b1", Version: "v1", ManifestKey: "m", ActivatedBy: "alice", At: t0},
			`{"tenantId":"acme","buildId":"b1","version":"v1","manifestKey":"m","activatedBy":"alice","at":"2025-01-02T03:04:05Z"}`},
	}
	for _, tt := range tests {
		data, err := json.Marshal(tt.event)
		if err != nil {
			t.Fatal(err)
		}
		if string(data) != tt.want {
			t.Errorf("%s JSON:\n got %s\nwant %s", tt.event.EventType(), data, tt.want)
		}
	}
}

func TestDecodeUnknownType(t *testing.T) {
	for _, typ := range []string{"", "TenantDeleted", "tenantcreated", "decodeError"} {
		e, err := Decode(typ, []byte(`{}`))
		if err == nil {
			t.Errorf("Decode(%q) = %#v, want an error", typ, e)
			continue
		}
		if e != nil {
			t.Errorf("Decode(%q) returned event %#v alongside error", typ, e)
		}
		if !strings.Contains(err.Error(), "unknown type") || !strings.Contains(err.Error(), `"`+typ+`"`) {
			t.Errorf("Decode(%q) error = %q, want it to name the unknown type", typ, err)
		}
	}
}

func TestDecodeBadJSON(t *testing.T) {
	for name := range allEvents() {
		for _, data := range []string{``, `{`, `not json`, `[]`, `{"at":"yesterday"}`} {
			e, err := Decode(name, []byte(data))
			if err == nil {
				t.Errorf("Decode(%s, %q) = %#v, want an error", name, data, e)
				continue
			}
			if e != nil {
				t.Errorf("Decode(%s, %q) returned event %#v alongside error", name, data, e)
			}
			if !strings.Contains(err.Error(), name) {
				t.Errorf("Decode(%s, %q) error = %q, want it to name the type", name, data, err)
			}
		}
	}
	// A field of the wrong JSON type is an error too, and wraps the
	// encoding/json error.
	_, err := Decode("BuildStarted", []byte(`{"buildId":"b1","attempt":"two"}`))
	var typeErr *json.UnmarshalTypeError
	if !errors.As(err, &typeErr) {
		t.Errorf("Decode wrong field type: error = %v, want a wrapped *json.UnmarshalTypeError", err)
	}
}

func TestStreamNames(t *testing.T) {
	tests := []struct{ got, want string }{
		{TenantStream("acme"), "tenant-acme"},
		{BuildStream("01HXYZ"), "build-01HXYZ"},
		{SiteStream("acme"), "site-acme"},
		{TenantStream("my-site-1"), "tenant-my-site-1"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("stream = %q, want %q", tt.got, tt.want)
		}
	}
	// The three streams of one name never collide.
	if TenantStream("x") == SiteStream("x") || TenantStream("x") == BuildStream("x") || SiteStream("x") == BuildStream("x") {
		t.Error("stream names of different aggregates collide")
	}
}
