// Package live pushes a tenant's build and deployment events to dashboards
// and CLIs as they happen, over WebSocket or Server-Sent Events.
//
// The events come straight from the event store: every connection follows
// its own tenant-filtered subscription from a global position, so a client
// that reconnects with the last position it saw (SSE Last-Event-ID, or the
// after / lastEventId query parameter) gets exactly the events it missed.
// Map turns stored events into the wire events of the reference system
// (build:started, build:step, ...), whose names and payloads are defined in
// package liveevents, shared with the client; Hub serves the connections.
package live

import (
	"fmt"

	"github.com/zipship/zipship/domain"
	"github.com/zipship/zipship/infra/eventstore"
	"github.com/zipship/zipship/liveevents"
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

// Map turns a stored event into the wire event a dashboard sees: its name
// and its JSON payload (one of package liveevents' payload structs). ok is
// false for events that have no wire form (BuildRequested, BuildPublished,
// tenant membership events, unknown types) and for events whose data does
// not decode.
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
		return liveevents.EventBuildStarted, liveevents.BuildStarted{
			BuildID: e.BuildID, TenantID: ev.Tenant, Attempt: e.Attempt,
		}, nil
	case domain.BuildStepStarted:
		return liveevents.EventBuildStep, liveevents.BuildStepStarted{
			BuildID: e.BuildID, Step: string(e.Step), Status: liveevents.StepStarted, Attempt: e.Attempt,
		}, nil
	case domain.BuildStepFinished:
		return liveevents.EventBuildStep, liveevents.BuildStepFinished{
			BuildID: e.BuildID, Step: string(e.Step), Status: liveevents.StepFinished, Attempt: e.Attempt,
			DurationMs: e.DurationMs, Detail: e.Detail,
		}, nil
	case domain.BuildAttemptFailed:
		return liveevents.EventBuildRetrying, liveevents.BuildRetrying{
			BuildID: e.BuildID, Attempt: e.Attempt, Step: string(e.Step), Error: e.Error, RetryInMs: e.RetryInMs,
		}, nil
	case domain.BuildSucceeded:
		live, deployment := urls.resolve(ev.Tenant, e.BuildID)
		return liveevents.EventBuildCompleted, liveevents.BuildCompleted{
			BuildID: e.BuildID, Status: liveevents.StatusSuccess, DeploymentID: e.BuildID, URL: live, DeploymentURL: deployment,
		}, nil
	case domain.BuildFailed:
		return liveevents.EventBuildFailed, liveevents.BuildFailed{
			BuildID: e.BuildID, Step: string(e.Step), Error: e.Error, Retryable: e.Retryable,
		}, nil
	case domain.DeploymentActivated:
		return liveevents.EventDeploymentActivated, activated(ev, urls, e.TenantID, e.BuildID, e.Version, e.Previous, false), nil
	case domain.DeploymentRolledBack:
		return liveevents.EventDeploymentActivated, activated(ev, urls, e.TenantID, e.BuildID, e.Version, e.Previous, true), nil
	}
	return "", nil, nil
}

// activated builds the deployment:activated payload shared by activations
// and rollbacks. The tenant comes from the event, or from the envelope for
// events written without it.
func activated(ev eventstore.Event, urls URLs, tenant, buildID, version, previous string, rollback bool) liveevents.DeploymentActivated {
	if tenant == "" {
		tenant = ev.Tenant
	}
	live, deployment := urls.resolve(tenant, buildID)
	return liveevents.DeploymentActivated{
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
