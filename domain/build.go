package domain

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Sentinel errors of the build rules.
var (
	ErrBuildNotFound     = errors.New("build not found")
	ErrBuildExists       = errors.New("build already exists")
	ErrBuildFinished     = errors.New("build already finished")
	ErrInvalidTransition = errors.New("invalid build transition")
	ErrInvalidConfig     = errors.New("invalid build config")
	ErrStepMismatch      = errors.New("step mismatch")
	ErrCancelRequested   = errors.New("cancel already requested")
)

// CancelledError is the error of a build that was cancelled.
const CancelledError = "cancelled"

// BuildStatus is a build's lifecycle state, with the reference system's
// names: pending → building → success | failed.
type BuildStatus string

// The build statuses.
const (
	StatusPending  BuildStatus = "pending"
	StatusBuilding BuildStatus = "building"
	StatusSuccess  BuildStatus = "success"
	StatusFailed   BuildStatus = "failed"
)

// Finished reports whether s is terminal.
func (s BuildStatus) Finished() bool { return s == StatusSuccess || s == StatusFailed }

// Step names a pipeline step. docs/events.md maps them to the reference
// system's 13 steps.
type Step string

// The pipeline steps, in order.
const (
	StepValidate   Step = "validate"
	StepWorkspace  Step = "workspace"
	StepDownload   Step = "download"
	StepExtract    Step = "extract"
	StepDiscover   Step = "discover"
	StepDetect     Step = "detect"
	StepInstall    Step = "install"
	StepConfigure  Step = "configure"
	StepBuild      Step = "build"
	StepExport     Step = "export"
	StepUpload     Step = "upload"
	StepActivate   Step = "activate"
	StepInvalidate Step = "invalidate"
)

// Steps lists every step in pipeline order.
var Steps = []Step{StepValidate, StepWorkspace, StepDownload, StepExtract, StepDiscover, StepDetect,
	StepInstall, StepConfigure, StepBuild, StepExport, StepUpload, StepActivate, StepInvalidate}

// Valid reports whether s is a known step.
func (s Step) Valid() bool {
	for _, k := range Steps {
		if s == k {
			return true
		}
	}
	return false
}

// MaxAttempts is how many times an infrastructure failure is tried.
const MaxAttempts = 3

// BuildConfig is the user's build configuration (multipart field
// buildConfig), with the reference system's field names. Environment
// variable values are kept out of events: see BuildRequested.
type BuildConfig struct {
	Framework    string `json:"framework,omitempty"`
	BuildCommand string `json:"buildCommand,omitempty"`
	OutputDir    string `json:"outputDir,omitempty"`
	NodeVersion  string `json:"nodeVersion,omitempty"`
	// EgressAllow lists extra hosts ("host" or "host:port", "*.example.com")
	// the build step may reach through the egress proxy, e.g.
	// fonts.googleapis.com for next/font/google. By default it reaches none.
	EgressAllow []string `json:"egressAllow,omitempty"`
}

// Size caps of a build configuration.
const (
	MaxEnvVars       = 100
	MaxEnvNameLen    = 128
	MaxEnvValueLen   = 16 << 10
	MaxEnvTotalBytes = 64 << 10
	MaxEgressAllow   = 20
)

var (
	envNamePattern   = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	frameworks       = map[string]bool{"": true, "nextjs": true, "vite": true, "static": true, "other": true}
	nodeVersionRegex = regexp.MustCompile(`^[0-9]{1,2}(\.[0-9]{1,3}){0,2}$`)
	egressPattern    = regexp.MustCompile(`^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}(:[0-9]{1,5})?$`)
)

// ValidateBuildConfig checks a configuration and its environment variables.
// Error messages name variables, never their values.
func ValidateBuildConfig(c BuildConfig, env map[string]string) error {
	if !frameworks[c.Framework] {
		return fmt.Errorf("%w: framework %q: use nextjs, vite, static or other", ErrInvalidConfig, c.Framework)
	}
	if len(c.BuildCommand) > 1000 || strings.ContainsAny(c.BuildCommand, "\x00\n\r") {
		return fmt.Errorf("%w: buildCommand must be one line of at most 1000 characters", ErrInvalidConfig)
	}
	if c.OutputDir != "" {
		if len(c.OutputDir) > 200 || strings.HasPrefix(c.OutputDir, "/") || strings.Contains(c.OutputDir, "\\") ||
			strings.ContainsAny(c.OutputDir, "\x00\n\r") {
			return fmt.Errorf("%w: outputDir must be a relative path", ErrInvalidConfig)
		}
		for _, seg := range strings.Split(c.OutputDir, "/") {
			if seg == ".." {
				return fmt.Errorf("%w: outputDir must stay inside the project", ErrInvalidConfig)
			}
		}
	}
	if c.NodeVersion != "" && !nodeVersionRegex.MatchString(c.NodeVersion) {
		return fmt.Errorf("%w: nodeVersion %q is not a version number", ErrInvalidConfig, c.NodeVersion)
	}
	if len(c.EgressAllow) > MaxEgressAllow {
		return fmt.Errorf("%w: at most %d egressAllow entries", ErrInvalidConfig, MaxEgressAllow)
	}
	for _, h := range c.EgressAllow {
		if !egressPattern.MatchString(h) {
			return fmt.Errorf("%w: egressAllow entry %q: use a host name with an optional port, e.g. fonts.googleapis.com or *.example.com:443", ErrInvalidConfig, truncate(h, 64))
		}
	}
	if len(env) > MaxEnvVars {
		return fmt.Errorf("%w: at most %d environment variables", ErrInvalidConfig, MaxEnvVars)
	}
	total := 0
	for name, value := range env {
		if len(name) > MaxEnvNameLen || !envNamePattern.MatchString(name) {
			return fmt.Errorf("%w: environment variable name %q must match [A-Za-z_][A-Za-z0-9_]* (at most %d characters)",
				ErrInvalidConfig, truncate(name, 64), MaxEnvNameLen)
		}
		if strings.ContainsAny(value, "\x00\n\r") {
			return fmt.Errorf("%w: environment variable %s: value must not contain NUL or newlines", ErrInvalidConfig, name)
		}
		if len(value) > MaxEnvValueLen {
			return fmt.Errorf("%w: environment variable %s: value longer than %d bytes", ErrInvalidConfig, name, MaxEnvValueLen)
		}
		total += len(name) + len(value)
	}
	if total > MaxEnvTotalBytes {
		return fmt.Errorf("%w: environment variables exceed %d bytes in all", ErrInvalidConfig, MaxEnvTotalBytes)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// StepRecord is a step as the aggregate knows it.
type StepRecord struct {
	Step       Step
	Attempt    int
	StartedAt  time.Time
	FinishedAt time.Time
	DurationMs int64
	Detail     string
	Done       bool
}

// Build is the build aggregate, rebuilt from its stream.
type Build struct {
	id          string
	tenant      string
	version     string
	requestedBy string
	requestedAt time.Time
	status      BuildStatus
	attempt     int
	openStep    Step
	manifestKey string
	cancelled   bool
	streamVer   int64
}

// CancelRequested reports whether somebody asked for the build to stop.
func (b *Build) CancelRequested() bool { return b.cancelled }

// ID returns the build id ("" before BuildRequested).
func (b *Build) ID() string { return b.id }

// Tenant returns the tenant the build belongs to.
func (b *Build) Tenant() string { return b.tenant }

// Version returns the site version name (v<unix-ms>).
func (b *Build) Version() string { return b.version }

// Status returns the lifecycle status.
func (b *Build) Status() BuildStatus { return b.status }

// Attempt returns the current attempt number (0 before the first start).
func (b *Build) Attempt() int { return b.attempt }

// RequestedAt returns when the build was requested.
func (b *Build) RequestedAt() time.Time { return b.requestedAt }

// RequestedBy returns the user who uploaded the source.
func (b *Build) RequestedBy() string { return b.requestedBy }

// ManifestKey returns the manifest of a succeeded build.
func (b *Build) ManifestKey() string { return b.manifestKey }

// StreamVersion returns the stream version the state was rebuilt to, the
// expected version of the next append.
func (b *Build) StreamVersion() int64 { return b.streamVer }

// Apply evolves the state by one event of its stream.
func (b *Build) Apply(e Event) {
	b.streamVer++
	switch e := e.(type) {
	case BuildRequested:
		b.id, b.tenant, b.version, b.requestedBy, b.requestedAt = e.BuildID, e.TenantID, e.Version, e.RequestedBy, e.At
		b.status = StatusPending
	case BuildStarted:
		b.status, b.attempt, b.openStep = StatusBuilding, e.Attempt, ""
	case BuildStepStarted:
		b.openStep = e.Step
	case BuildStepFinished:
		b.openStep = ""
	case BuildAttemptFailed:
		b.status, b.openStep = StatusPending, ""
	case BuildPublished:
		b.manifestKey = e.ManifestKey
	case BuildCancelRequested:
		b.cancelled = true
	case BuildSucceeded:
		b.status, b.openStep, b.manifestKey = StatusSuccess, "", e.ManifestKey
	case BuildFailed:
		b.status, b.openStep = StatusFailed, ""
	}
}

// Request decides a new build.
func (b *Build) Request(r BuildRequested) ([]Event, error) {
	if b.id != "" {
		return nil, fmt.Errorf("request %s: %w", r.BuildID, ErrBuildExists)
	}
	if r.BuildID == "" || r.Version == "" || r.Source.Key == "" {
		return nil, fmt.Errorf("%w: a request needs a build id, a version and a source", ErrInvalidTransition)
	}
	if err := ValidateTenantID(r.TenantID); err != nil {
		return nil, err
	}
	if err := ValidateBuildConfig(r.Config, nil); err != nil {
		return nil, err
	}
	return []Event{r}, nil
}

func (b *Build) requireRunning(what string) error {
	if b.id == "" {
		return ErrBuildNotFound
	}
	if b.status.Finished() {
		return fmt.Errorf("%s build %s: %w (%s)", what, b.id, ErrBuildFinished, b.status)
	}
	if b.status != StatusBuilding {
		return fmt.Errorf("%w: %s a %s build", ErrInvalidTransition, what, b.status)
	}
	return nil
}

// Start decides a new attempt. A pending build starts its next attempt; a
// building one whose runner died (the request was redelivered) starts a new
// attempt too, up to MaxAttempts. A finished build returns ErrBuildFinished:
// the caller acknowledges the redelivery and does nothing.
func (b *Build) Start(runner string, now time.Time) ([]Event, error) {
	if b.id == "" {
		return nil, ErrBuildNotFound
	}
	if b.status.Finished() {
		return nil, fmt.Errorf("start build %s: %w (%s)", b.id, ErrBuildFinished, b.status)
	}
	if b.cancelled {
		return []Event{BuildFailed{BuildID: b.id, Attempt: b.attempt, Step: b.openStep,
			Error: CancelledError, Retryable: false, At: now}}, nil
	}
	if b.attempt >= MaxAttempts {
		return []Event{BuildFailed{BuildID: b.id, Attempt: b.attempt, Step: b.openStep,
			Error: fmt.Sprintf("gave up after %d attempts", b.attempt), Retryable: true, At: now}}, nil
	}
	return []Event{BuildStarted{BuildID: b.id, Attempt: b.attempt + 1, Runner: runner, At: now}}, nil
}

// Cancel decides a request to stop the build.
func (b *Build) Cancel(by string, now time.Time) ([]Event, error) {
	if b.id == "" {
		return nil, ErrBuildNotFound
	}
	if b.status.Finished() {
		return nil, fmt.Errorf("cancel build %s: %w (%s)", b.id, ErrBuildFinished, b.status)
	}
	if b.cancelled {
		return nil, fmt.Errorf("cancel build %s: %w", b.id, ErrCancelRequested)
	}
	return []Event{BuildCancelRequested{BuildID: b.id, By: by, At: now}}, nil
}

// StartStep decides the start of a step.
func (b *Build) StartStep(step Step, now time.Time) ([]Event, error) {
	if err := b.requireRunning("start step of"); err != nil {
		return nil, err
	}
	if !step.Valid() {
		return nil, fmt.Errorf("%w: unknown step %q", ErrInvalidTransition, step)
	}
	if b.openStep != "" {
		return nil, fmt.Errorf("%w: step %s is still running", ErrStepMismatch, b.openStep)
	}
	return []Event{BuildStepStarted{BuildID: b.id, Attempt: b.attempt, Step: step, At: now}}, nil
}

// FinishStep decides the successful end of the running step.
func (b *Build) FinishStep(step Step, took time.Duration, detail string, now time.Time) ([]Event, error) {
	if err := b.requireRunning("finish step of"); err != nil {
		return nil, err
	}
	if b.openStep == "" || b.openStep != step {
		return nil, fmt.Errorf("%w: finishing %q while %q runs", ErrStepMismatch, step, b.openStep)
	}
	return []Event{BuildStepFinished{BuildID: b.id, Attempt: b.attempt, Step: step,
		DurationMs: took.Milliseconds(), Detail: detail, At: now}}, nil
}

// Publish decides recording the build's stored output (between steps).
func (b *Build) Publish(manifestKey string, files int, bytes int64, now time.Time) ([]Event, error) {
	if err := b.requireRunning("publish"); err != nil {
		return nil, err
	}
	if b.openStep != "" {
		return nil, fmt.Errorf("%w: step %s is still running", ErrStepMismatch, b.openStep)
	}
	if manifestKey == "" {
		return nil, fmt.Errorf("%w: publishing needs a manifest", ErrInvalidTransition)
	}
	return []Event{BuildPublished{BuildID: b.id, Attempt: b.attempt, ManifestKey: manifestKey, Files: files, Bytes: bytes, At: now}}, nil
}

// Published reports whether the build's output is stored (BuildPublished
// or BuildSucceeded seen).
func (b *Build) Published() bool { return b.manifestKey != "" && b.status != StatusFailed }

// Succeed decides the end of a build whose output is published.
func (b *Build) Succeed(manifestKey string, files int, bytes int64, now time.Time) ([]Event, error) {
	if err := b.requireRunning("succeed"); err != nil {
		return nil, err
	}
	if b.openStep != "" {
		return nil, fmt.Errorf("%w: step %s is still running", ErrStepMismatch, b.openStep)
	}
	if manifestKey == "" {
		return nil, fmt.Errorf("%w: success needs a manifest", ErrInvalidTransition)
	}
	return []Event{BuildSucceeded{BuildID: b.id, Attempt: b.attempt, ManifestKey: manifestKey, Files: files,
		Bytes: bytes, DurationMs: now.Sub(b.requestedAt).Milliseconds(), At: now}}, nil
}

// Fail decides the failure of the current attempt at step. A user error
// (retryable false) ends the build at once. An infrastructure error
// (retryable true) ends only the attempt while attempts remain, with the
// backoff 2 s, 4 s, 8 s; after MaxAttempts the build fails.
func (b *Build) Fail(step Step, cause string, retryable bool, now time.Time) ([]Event, error) {
	if b.id == "" {
		return nil, ErrBuildNotFound
	}
	if b.status.Finished() {
		return nil, fmt.Errorf("fail build %s: %w (%s)", b.id, ErrBuildFinished, b.status)
	}
	if b.cancelled {
		cause, retryable = CancelledError, false
	}
	if retryable && b.attempt < MaxAttempts && b.status == StatusBuilding {
		return []Event{BuildAttemptFailed{BuildID: b.id, Attempt: b.attempt, Step: step, Error: cause,
			RetryInMs: RetryDelay(b.attempt).Milliseconds(), At: now}}, nil
	}
	return []Event{BuildFailed{BuildID: b.id, Attempt: b.attempt, Step: step, Error: cause, Retryable: retryable, At: now}}, nil
}

// RetryDelay is the backoff before attempt+1: 2 s, 4 s, 8 s, ...
func RetryDelay(attempt int) time.Duration {
	if attempt < 1 {
		attempt = 1
	}
	return time.Duration(1<<attempt) * time.Second
}
