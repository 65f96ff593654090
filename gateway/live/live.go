// Package live pushes a tenant's build and deployment events to dashboards
// and CLIs as they happen, over WebSocket or Server-Sent Events.
//
// The events come straight from the event store: every connection follows
// its own tenant-filtered subscription from a global position, so a client
// that reconnects with the last position it saw (SSE Last-Event-ID, or the
// after / lastEventId query parameter) gets exactly the events it missed.
// Map turns stored events into the wire events of the reference system
// (build:started, build:step, ...); Hub serves the connections.
package live

import (
	"fmt"

	"github.com/zipship/zipship/domain"
	"github.com/zipship/zipship/infra/eventstore"
)

// Wire event names, as the reference system's dashboards expect them.
const (
	EventBuildStarted        = "build:started"
	EventBuildStep           = "build:step"
	EventBuildRetrying       = "build:retrying"
	EventBuildCompleted      = "build:completed"
	EventBuildFailed         = "build:failed"
	EventDeploymentActivated = "deployment:activated"
)

// Step statuses carried by build:step, and the build:completed status.
const (
	StepStatusStarted  = "started"
	StepStatusFinished = "finished"
	StatusSuccess      = "success"
)

// URLs returns the public URLs of a tenant's build: the tenant's live site
// and the immutable URL of that one deployment. The gateway passes the edge
// server's URL builders, so this package does not know the URL scheme.
type URLs func(tenant, buildID string) (live, deployment string)

// resolve calls u, or returns empty URLs when no builder was given.
func (u URLs) resolve(tenant, buildID string) (live, deployment string) {
	if u == nil {
		return "", ""
	}
	return u(tenant, buildID)
}

// BuildStarted is the payload of build:started: an attempt of a build began
// on a runner. Version is omitted when the stored event does not carry it.
type BuildStarted struct {
	BuildID  string `json:"buildId"`
	TenantID string `json:"tenantId"`
	Version  string `json:"version,omitempty"`
	Attempt  int    `json:"attempt"`
}

// BuildStepStarted is the payload of build:step with status "started": a
// pipeline step began.
type BuildStepStarted struct {
	BuildID string `json:"buildId"`
	Step    string `json:"step"`
	Status  string `json:"status"`
	Attempt int    `json:"attempt"`
}

// BuildStepFinished is the payload of build:step with status "finished": a
// pipeline step ended successfully, after DurationMs, with an optional
// human-readable Detail (always sent, possibly empty).
type BuildStepFinished struct {
	BuildID    string `json:"buildId"`
	Step       string `json:"step"`
	Status     string `json:"status"`
	Attempt    int    `json:"attempt"`
	DurationMs int64  `json:"durationMs"`
	Detail     string `json:"detail"`
}

// BuildRetrying is the payload of build:retrying: an attempt failed on an
// infrastructure error and the build will be retried in RetryInMs.
type BuildRetrying struct {
	BuildID   string `json:"buildId"`
	Attempt   int    `json:"attempt"`
	Step      string `json:"step"`
	Error     string `json:"error"`
	RetryInMs int64  `json:"retryInMs"`
}

// BuildCompleted is the payload of build:completed: the build's output is
// published. A build is its own deployment, so DeploymentID is the build ID;
// URL is the tenant's live site and DeploymentURL this deployment's own URL.
type BuildCompleted struct {
	BuildID       string `json:"buildId"`
	Status        string `json:"status"`
	DeploymentID  string `json:"deploymentId"`
	URL           string `json:"url"`
	DeploymentURL string `json:"deploymentUrl"`
}

// BuildFailed is the payload of build:failed: the build ended for good.
// Retryable says the cause was infrastructure, so uploading again may work.
type BuildFailed struct {
	BuildID   string `json:"buildId"`
	Step      string `json:"step"`
	Error     string `json:"error"`
	Retryable bool   `json:"retryable"`
}

// DeploymentActivated is the payload of deployment:activated: the tenant's
// live pointer moved to BuildID. Previous is the build that was live before
// (empty for a first deployment). Rollback is set when the move was a
// rollback to an earlier build: for a dashboard both are a pointer move.
type DeploymentActivated struct {
	TenantID      string `json:"tenantId"`
	BuildID       string `json:"buildId"`
	DeploymentID  string `json:"deploymentId"`
	Version       string `json:"version"`
	URL           string `json:"url"`
	DeploymentURL string `json:"deploymentUrl"`
	Previous      string `json:"previous"`
	Rollback      bool   `json:"rollback,omitempty"`
}

// Map turns a stored event into the wire event a dashboard sees: its name
// and its JSON payload (one of this package's payload structs). ok is false
// for events that have no wire form (BuildRequested, BuildPublished, tenant
// membership events, unknown types) and for events whose data does not
// decode.
func Map(ev eventstore.Event, urls URLs) (name string, payload any, ok bool) {
	name, payload, err := mapEvent(ev, urls)
	if err != nil || name == "" {
		return "", nil, false
	}
	return name, payload, true
}

// mapEvent is Map with the decode error kept, so the Hub can log it. An
// empty name with a nil error means the event has no wire form.
func mapEvent(ev eventstore.Event, urls URLs) (string, any, error) {
	switch ev.Type {
	case domain.BuildStarted{}.EventType(),
		domain.BuildStepStarted{}.EventType(),
		domain.BuildStepFinished{}.EventType(),
		domain.BuildAttemptFailed{}.EventType(),
		domain.BuildSucceeded{}.EventType(),
		domain.BuildFailed{}.EventType(),
		domain.DeploymentActivated{}.EventType(),
		domain.DeploymentRolledBack{}.EventType():
	default:
		return "", nil, nil
	}
	de, err := domain.Decode(ev.Type, ev.Data)
	if err != nil {
		return "", nil, fmt.Errorf("map event at position %d: %w", ev.Position, err)
	}
	switch e := de.(type) {
	case domain.BuildStarted:
		return EventBuildStarted, BuildStarted{
			BuildID: e.BuildID, TenantID: ev.Tenant, Attempt: e.Attempt,
		}, nil
	case domain.BuildStepStarted:
		return EventBuildStep, BuildStepStarted{
			BuildID: e.BuildID, Step: string(e.Step), Status: StepStatusStarted, Attempt: e.Attempt,
		}, nil
	case domain.BuildStepFinished:
		return EventBuildStep, BuildStepFinished{
			BuildID: e.BuildID, Step: string(e.Step), Status: StepStatusFinished, Attempt: e.Attempt,
			DurationMs: e.DurationMs, Detail: e.Detail,
		}, nil
	case domain.BuildAttemptFailed:
		return EventBuildRetrying, BuildRetrying{
			BuildID: e.BuildID, Attempt: e.Attempt, Step: string(e.Step), Error: e.Error, RetryInMs: e.RetryInMs,
		}, nil
	case domain.BuildSucceeded:
		live, deployment := urls.resolve(ev.Tenant, e.BuildID)
		return EventBuildCompleted, BuildCompleted{
			BuildID: e.BuildID, Status: StatusSuccess, DeploymentID: e.BuildID, URL: live, DeploymentURL: deployment,
		}, nil
	case domain.BuildFailed:
		return EventBuildFailed, BuildFailed{
			BuildID: e.BuildID, Step: string(e.Step), Error: e.Error, Retryable: e.Retryable,
		}, nil
	case domain.DeploymentActivated:
		return EventDeploymentActivated, activated(ev, urls, e.TenantID, e.BuildID, e.Version, e.Previous, false), nil
	case domain.DeploymentRolledBack:
		return EventDeploymentActivated, activated(ev, urls, e.TenantID, e.BuildID, e.Version, e.Previous, true), nil
	}
	return "", nil, nil
}

// activated builds the deployment:activated payload shared by activations
// and rollbacks. The tenant comes from the event, or from the envelope for
// events written without it.
func activated(ev eventstore.Event, urls URLs, tenant, buildID, version, previous string, rollback bool) DeploymentActivated {
	if tenant == "" {
		tenant = ev.Tenant
	}
	live, deployment := urls.resolve(tenant, buildID)
	return DeploymentActivated{
		TenantID: tenant, BuildID: buildID, DeploymentID: buildID, Version: version,
		URL: live, DeploymentURL: deployment, Previous: previous, Rollback: rollback,
	}
}

// Message is one WebSocket text frame: the event's global position (the
// value to resume from with the lastEventId query parameter), its wire name
// and its payload.
type Message struct {
	ID    int64  `json:"id"`
	Event string `json:"event"`
	Data  any    `json:"data"`
}
