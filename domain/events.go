// Package domain holds zipship's business rules: the tenant, build and site
// aggregates, the events they emit, and the pure decide/evolve functions
// that say which commands are allowed. It does no I/O and imports nothing
// from infra: the application layer loads events, asks the aggregate what
// should happen, and appends the answer.
package domain

import (
	"encoding/json"
	"fmt"
	"time"
)

// Event is one domain fact. EventType is the stable name stored in the
// event store's envelope; docs/events.md documents each one.
type Event interface {
	EventType() string
}

// Stream names. One stream per aggregate instance.

// TenantStream is the stream of a tenant's membership events.
func TenantStream(tenant string) string { return "tenant-" + tenant }

// BuildStream is the stream of one build's lifecycle events.
func BuildStream(buildID string) string { return "build-" + buildID }

// SiteStream is the stream of a tenant's deployment pointer moves.
func SiteStream(tenant string) string { return "site-" + tenant }

// TenantCreated starts a tenant; its creator becomes the first owner.
type TenantCreated struct {
	TenantID string    `json:"tenantId"`
	Name     string    `json:"name"`
	Owner    string    `json:"owner"`
	At       time.Time `json:"at"`
}

// MemberAdded grants a user a role in a tenant.
type MemberAdded struct {
	TenantID string    `json:"tenantId"`
	UserID   string    `json:"userId"`
	Role     Role      `json:"role"`
	AddedBy  string    `json:"addedBy"`
	At       time.Time `json:"at"`
}

// MemberRoleChanged changes an existing member's role.
type MemberRoleChanged struct {
	TenantID  string    `json:"tenantId"`
	UserID    string    `json:"userId"`
	Role      Role      `json:"role"`
	From      Role      `json:"from"`
	ChangedBy string    `json:"changedBy"`
	At        time.Time `json:"at"`
}

// MemberRemoved takes a user's membership away.
type MemberRemoved struct {
	TenantID  string    `json:"tenantId"`
	UserID    string    `json:"userId"`
	RemovedBy string    `json:"removedBy"`
	At        time.Time `json:"at"`
}

// Source describes an uploaded, validated ZIP in blob storage.
type Source struct {
	Key    string `json:"key"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
	Files  int    `json:"files"`
	// Uncompressed is the sum of the entries' declared sizes.
	Uncompressed int64 `json:"uncompressed"`
}

// BuildRequested records an accepted upload. The environment variable
// values are not in the event (events are replayed, exported to Kafka and
// shown in the audit log): only their names, the values live in blob
// storage next to the source.
type BuildRequested struct {
	BuildID        string      `json:"buildId"`
	TenantID       string      `json:"tenantId"`
	Version        string      `json:"version"`
	RequestedBy    string      `json:"requestedBy"`
	Source         Source      `json:"source"`
	Config         BuildConfig `json:"config"`
	EnvNames       []string    `json:"envNames,omitempty"`
	EnvKey         string      `json:"envKey,omitempty"`
	IdempotencyKey string      `json:"idempotencyKey,omitempty"`
	At             time.Time   `json:"at"`
}

// BuildStarted marks one attempt of a build as running on a runner.
type BuildStarted struct {
	BuildID string    `json:"buildId"`
	Attempt int       `json:"attempt"`
	Runner  string    `json:"runner"`
	At      time.Time `json:"at"`
}

// BuildStepStarted marks the start of one named pipeline step.
type BuildStepStarted struct {
	BuildID string    `json:"buildId"`
	Attempt int       `json:"attempt"`
	Step    Step      `json:"step"`
	At      time.Time `json:"at"`
}

// BuildStepFinished marks the successful end of a step.
type BuildStepFinished struct {
	BuildID    string    `json:"buildId"`
	Attempt    int       `json:"attempt"`
	Step       Step      `json:"step"`
	DurationMs int64     `json:"durationMs"`
	Detail     string    `json:"detail,omitempty"`
	At         time.Time `json:"at"`
}

// BuildAttemptFailed ends one attempt with an infrastructure error that will
// be retried; the build stays in progress.
type BuildAttemptFailed struct {
	BuildID   string    `json:"buildId"`
	Attempt   int       `json:"attempt"`
	Step      Step      `json:"step"`
	Error     string    `json:"error"`
	RetryInMs int64     `json:"retryInMs"`
	At        time.Time `json:"at"`
}

// BuildCancelRequested asks for a build to stop. The runner working on it
// kills its task and ends the build with BuildFailed{Error: "cancelled"}; a
// build not started yet fails as cancelled when its turn comes.
type BuildCancelRequested struct {
	BuildID string    `json:"buildId"`
	By      string    `json:"by"`
	At      time.Time `json:"at"`
}

// BuildPublished records that a build's output is stored in blob storage
// and listed by its manifest: the build can now be activated.
type BuildPublished struct {
	BuildID     string    `json:"buildId"`
	Attempt     int       `json:"attempt"`
	ManifestKey string    `json:"manifestKey"`
	Files       int       `json:"files"`
	Bytes       int64     `json:"bytes"`
	At          time.Time `json:"at"`
}

// BuildSucceeded records a published build: its files are in blob storage
// and listed by the manifest.
type BuildSucceeded struct {
	BuildID     string    `json:"buildId"`
	Attempt     int       `json:"attempt"`
	ManifestKey string    `json:"manifestKey"`
	Files       int       `json:"files"`
	Bytes       int64     `json:"bytes"`
	DurationMs  int64     `json:"durationMs"`
	At          time.Time `json:"at"`
}

// BuildFailed ends a build for good. Retryable says whether the cause was
// infrastructure (retries exhausted) rather than the user's project.
type BuildFailed struct {
	BuildID   string    `json:"buildId"`
	Attempt   int       `json:"attempt"`
	Step      Step      `json:"step"`
	Error     string    `json:"error"`
	Retryable bool      `json:"retryable"`
	At        time.Time `json:"at"`
}

// DeploymentActivated moves a tenant's live pointer to a newly built
// version.
type DeploymentActivated struct {
	TenantID    string    `json:"tenantId"`
	BuildID     string    `json:"buildId"`
	Version     string    `json:"version"`
	ManifestKey string    `json:"manifestKey"`
	ActivatedBy string    `json:"activatedBy"`
	Previous    string    `json:"previous,omitempty"`
	At          time.Time `json:"at"`
}

// DeploymentRolledBack moves a tenant's live pointer back to a version that
// was live before.
type DeploymentRolledBack struct {
	TenantID     string    `json:"tenantId"`
	BuildID      string    `json:"buildId"`
	Version      string    `json:"version"`
	ManifestKey  string    `json:"manifestKey"`
	RolledBackBy string    `json:"rolledBackBy"`
	Previous     string    `json:"previous"`
	At           time.Time `json:"at"`
}

// EventType implementations: these names are stored and must not change.

func (TenantCreated) EventType() string        { return "TenantCreated" }
func (MemberAdded) EventType() string          { return "MemberAdded" }
func (MemberRoleChanged) EventType() string    { return "MemberRoleChanged" }
func (MemberRemoved) EventType() string        { return "MemberRemoved" }
func (BuildRequested) EventType() string       { return "BuildRequested" }
func (BuildStarted) EventType() string         { return "BuildStarted" }
func (BuildStepStarted) EventType() string     { return "BuildStepStarted" }
func (BuildStepFinished) EventType() string    { return "BuildStepFinished" }
func (BuildAttemptFailed) EventType() string   { return "BuildAttemptFailed" }
func (BuildPublished) EventType() string       { return "BuildPublished" }
func (BuildCancelRequested) EventType() string { return "BuildCancelRequested" }
func (BuildSucceeded) EventType() string       { return "BuildSucceeded" }
func (BuildFailed) EventType() string          { return "BuildFailed" }
func (DeploymentActivated) EventType() string  { return "DeploymentActivated" }
func (DeploymentRolledBack) EventType() string { return "DeploymentRolledBack" }

// SchemaVersion is the current schema version of every event type's JSON.
const SchemaVersion = 1

// Decode turns a stored event's type name and JSON data back into a domain
// event. Unknown types are an error: a reader must not silently skip facts.
func Decode(eventType string, data []byte) (Event, error) {
	var e Event
	switch eventType {
	case "TenantCreated":
		e = decode[TenantCreated](data)
	case "MemberAdded":
		e = decode[MemberAdded](data)
	case "MemberRoleChanged":
		e = decode[MemberRoleChanged](data)
	case "MemberRemoved":
		e = decode[MemberRemoved](data)
	case "BuildRequested":
		e = decode[BuildRequested](data)
	case "BuildStarted":
		e = decode[BuildStarted](data)
	case "BuildStepStarted":
		e = decode[BuildStepStarted](data)
	case "BuildStepFinished":
		e = decode[BuildStepFinished](data)
	case "BuildAttemptFailed":
		e = decode[BuildAttemptFailed](data)
	case "BuildCancelRequested":
		e = decode[BuildCancelRequested](data)
	case "BuildPublished":
		e = decode[BuildPublished](data)
	case "BuildSucceeded":
		e = decode[BuildSucceeded](data)
	case "BuildFailed":
		e = decode[BuildFailed](data)
	case "DeploymentActivated":
		e = decode[DeploymentActivated](data)
	case "DeploymentRolledBack":
		e = decode[DeploymentRolledBack](data)
	default:
		return nil, fmt.Errorf("decode event: unknown type %q", eventType)
	}
	if d, ok := e.(decodeError); ok {
		return nil, fmt.Errorf("decode %s: %w", eventType, d.err)
	}
	return e, nil
}

type decodeError struct{ err error }

func (decodeError) EventType() string { return "" }

func decode[T Event](data []byte) Event {
	var v T
	if err := json.Unmarshal(data, &v); err != nil {
		return decodeError{err}
	}
	return v
}
