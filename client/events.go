package client

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/zipship/zipship/liveevents"
)

// Event names on a tenant's event stream.
const (
	EventBuildStarted        = liveevents.EventBuildStarted
	EventBuildStep           = liveevents.EventBuildStep
	EventBuildRetrying       = liveevents.EventBuildRetrying
	EventBuildCompleted      = liveevents.EventBuildCompleted
	EventBuildFailed         = liveevents.EventBuildFailed
	EventDeploymentActivated = liveevents.EventDeploymentActivated
)

// Step statuses of a build:step event.
const (
	StepStarted  = liveevents.StepStarted
	StepFinished = liveevents.StepFinished
)

// The payloads of the events, as Event.Decode returns them. They are the
// server's own wire types (package liveevents), under the client's names;
// each type's documentation says what its event means.
type (
	BuildStarted = liveevents.BuildStarted
	// BuildStep is the payload of build:step, whichever its Status
	// (StepStarted or StepFinished); DurationMs and Detail are only set
	// when the step finished.
	BuildStep           = liveevents.BuildStepFinished
	BuildRetrying       = liveevents.BuildRetrying
	BuildCompleted      = liveevents.BuildCompleted
	BuildFailed         = liveevents.BuildFailed
	DeploymentActivated = liveevents.DeploymentActivated
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
