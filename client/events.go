package client

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// Event names on a tenant's event stream.
const (
	EventBuildStarted        = "build:started"
	EventBuildStep           = "build:step"
	EventBuildRetrying       = "build:retrying"
	EventBuildCompleted      = "build:completed"
	EventBuildFailed         = "build:failed"
	EventDeploymentActivated = "deployment:activated"
)

// Step statuses of a build:step event.
const (
	StepStarted  = "started"
	StepFinished = "finished"
)

// Event is one Server-Sent Event of a tenant's event stream.
type Event struct {
	// ID is the event's position in the stream ("" when the server sent
	// no id); a reconnect resumes after the last one seen.
	ID string
	// Name is the event type, e.g. EventBuildStep.
	Name string
	// Data is the event's JSON payload.
	Data json.RawMessage
}

// BuildID returns the buildId field of the payload, or "" if it has none.
func (e Event) BuildID() string {
	var v struct {
		BuildID string `json:"buildId"`
	}
	if json.Unmarshal(e.Data, &v) != nil {
		return ""
	}
	return v.BuildID
}

// Decode decodes the payload into the type matching Name: *BuildStarted,
// *BuildStep, *BuildRetrying, *BuildCompleted, *BuildFailed or
// *DeploymentActivated. Other names give an error.
func (e Event) Decode() (any, error) {
	var v any
	switch e.Name {
	case EventBuildStarted:
		v = new(BuildStarted)
	case EventBuildStep:
		v = new(BuildStep)
	case EventBuildRetrying:
		v = new(BuildRetrying)
	case EventBuildCompleted:
		v = new(BuildCompleted)
	case EventBuildFailed:
		v = new(BuildFailed)
	case EventDeploymentActivated:
		v = new(DeploymentActivated)
	default:
		return nil, fmt.Errorf("decode event %s: unknown event name %q", e.ID, e.Name)
	}
	if err := json.Unmarshal(e.Data, v); err != nil {
		return nil, fmt.Errorf("decode event %s (%s): %w", e.ID, e.Name, err)
	}
	return v, nil
}

// BuildStarted is the payload of build:started: an attempt of a build
// began on a runner.
type BuildStarted struct {
	BuildID  string `json:"buildId"`
	TenantID string `json:"tenantId"`
	Version  string `json:"version"`
	Attempt  int    `json:"attempt"`
}

// BuildStep is the payload of build:step: a pipeline step started or
// finished.
type BuildStep struct {
	BuildID string `json:"buildId"`
	Step    string `json:"step"`
	// Status is StepStarted or StepFinished.
	Status  string `json:"status"`
	Attempt int    `json:"attempt"`
	// DurationMs is set when Status is StepFinished.
	DurationMs int64 `json:"durationMs,omitempty"`
	// Detail is a short summary of a finished step, e.g. "3 files"; it may
	// be empty.
	Detail string `json:"detail,omitempty"`
}

// BuildRetrying is the payload of build:retrying: an attempt failed for an
// infrastructure reason and will be retried.
type BuildRetrying struct {
	BuildID   string `json:"buildId"`
	Attempt   int    `json:"attempt"`
	Step      string `json:"step"`
	Error     string `json:"error"`
	RetryInMs int64  `json:"retryInMs"`
}

// BuildCompleted is the payload of build:completed: the build succeeded
// and is live.
type BuildCompleted struct {
	BuildID       string `json:"buildId"`
	Status        string `json:"status"`
	DeploymentID  string `json:"deploymentId"`
	URL           string `json:"url"`
	DeploymentURL string `json:"deploymentUrl"`
}

// BuildFailed is the payload of build:failed: the build ended for good.
type BuildFailed struct {
	BuildID string `json:"buildId"`
	Step    string `json:"step"`
	Error   string `json:"error"`
	// Retryable says the cause was infrastructure rather than the
	// project: uploading again may work.
	Retryable bool `json:"retryable"`
}

// DeploymentActivated is the payload of deployment:activated: the tenant's
// live site now serves a new build.
type DeploymentActivated struct {
	TenantID     string `json:"tenantId"`
	BuildID      string `json:"buildId"`
	DeploymentID string `json:"deploymentId"`
	Version      string `json:"version"`
	URL          string `json:"url"`
	// Previous is the build that was live before ("" for the first).
	Previous string `json:"previous"`
}

// Scanner limits for the event stream.
const (
	sseInitialBuffer = 64 << 10
	sseMaxLine       = 16 << 20
)

// readSSE parses a text/event-stream from r and calls emit for each
// complete event, in order, until r ends or emit returns false. It follows
// the WHATWG rules: lines end in LF, CRLF or CR; a blank line dispatches;
// lines starting with ':' are comments (keepalives); "data" lines are
// joined with LF; a field without ':' has an empty value; one space after
// the ':' is dropped. An event without data is not dispatched, nor is an
// incomplete one at the end of the stream. Unlike a browser, ID is only
// the id sent with that very event (not inherited), and "retry" is
// ignored.
func readSSE(r io.Reader, emit func(Event) bool) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, sseInitialBuffer), sseMaxLine)
	sc.Split(scanSSELines)

	var (
		id, name string
		data     bytes.Buffer
		hasData  bool
	)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			if hasData {
				ev := Event{ID: id, Name: name, Data: json.RawMessage(bytes.Clone(data.Bytes()))}
				if ev.Name == "" {
					ev.Name = "message"
				}
				if !emit(ev) {
					return nil
				}
			}
			id, name, hasData = "", "", false
			data.Reset()
			continue
		}
		if strings.HasPrefix(line, ":") {
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "event":
			name = value
		case "data":
			if hasData {
				data.WriteByte('\n')
			}
			data.WriteString(value)
			hasData = true
		case "id":
			if !strings.ContainsRune(value, 0) {
				id = value
			}
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read event stream: %w", err)
	}
	return nil
}

// scanSSELines is a bufio.SplitFunc for lines ending in LF, CRLF or CR.
func scanSSELines(data []byte, atEOF bool) (advance int, token []byte, err error) {
	if atEOF && len(data) == 0 {
		return 0, nil, nil
	}
	if i := bytes.IndexAny(data, "\r\n"); i >= 0 {
		if data[i] == '\n' {
			return i + 1, data[:i], nil
		}
		// CR: a following LF belongs to it; need one more byte to know.
		if i+1 < len(data) {
			if data[i+1] == '\n' {
				return i + 2, data[:i], nil
			}
			return i + 1, data[:i], nil
		}
		if atEOF {
			return i + 1, data[:i], nil
		}
		return 0, nil, nil
	}
	if atEOF {
		// A last line without its end: the stream was cut. Return it so
		// nothing is lost, but no blank line follows, so no event is
		// dispatched from it.
		return len(data), data, nil
	}
	return 0, nil, nil
}
