// Package liveevents is the wire contract of a tenant's live event stream:
// the event names and the JSON payloads that the server (gateway/live)
// sends over WebSocket and Server-Sent Events and that clients (the client
// package, the CLI) read. It imports nothing, so a client can use it without
// pulling in the server.
package liveevents

// Event names, as the reference system's dashboards expect them.
const (
	EventBuildStarted        = "build:started"
	EventBuildStep           = "build:step"
	EventBuildRetrying       = "build:retrying"
	EventBuildCompleted      = "build:completed"
	EventBuildFailed         = "build:failed"
	EventDeploymentActivated = "deployment:activated"
	// EventBuildLog carries one line of a build's output. It has no event
	// position (logs are not events): resuming a stream does not replay
	// log lines; GET /api/builds/{t}/{b}/logs has the whole log.
	EventBuildLog = "build:log"
)

// BuildLog is the payload of build:log.
type BuildLog struct {
	BuildID string `json:"buildId"`
	N       int    `json:"n"`
	Stream  string `json:"stream"`
	Text    string `json:"text"`
	Time    string `json:"time"`
}

// Step statuses carried by build:step, and the build:completed status.
const (
	StepStarted   = "started"
	StepFinished  = "finished"
	StatusSuccess = "success"
)

// BuildStarted is the payload of build:started: an attempt of a build began
// on a runner. Version is omitted when the stored event does not carry it.
type BuildStarted struct {
	BuildID  string `json:"buildId"`
	TenantID string `json:"tenantId"`
	Version  string `json:"version,omitempty"`
	Attempt  int    `json:"attempt"`
}

// BuildStepStarted is the payload of build:step with status StepStarted: a
// pipeline step began.
type BuildStepStarted struct {
	BuildID string `json:"buildId"`
	Step    string `json:"step"`
	Status  string `json:"status"`
	Attempt int    `json:"attempt"`
}

// BuildStepFinished is the payload of build:step with status StepFinished:
// a pipeline step ended successfully, after DurationMs, with an optional
// human-readable Detail (always sent, possibly empty, e.g. "3 files").
//
// It holds every field of BuildStepStarted too, so a reader can decode
// either status into it: a started step leaves DurationMs and Detail zero.
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
// published and live. A build is its own deployment, so DeploymentID is the
// build ID; URL is the tenant's live site and DeploymentURL this
// deployment's own URL.
type BuildCompleted struct {
	BuildID       string `json:"buildId"`
	Status        string `json:"status"`
	DeploymentID  string `json:"deploymentId"`
	URL           string `json:"url"`
	DeploymentURL string `json:"deploymentUrl"`
}

// BuildFailed is the payload of build:failed: the build ended for good.
// Retryable says the cause was infrastructure rather than the project, so
// uploading again may work.
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
