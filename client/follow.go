package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// Follow defaults.
const (
	// DefaultIdleTimeout is how long Follow waits without any event before
	// it asks the server for the build's state.
	DefaultIdleTimeout = 30 * time.Second
	// MaxReconnects is how many times in a row Follow reconnects a dropped
	// event stream before it falls back to polling.
	MaxReconnects = 5

	defaultReconnectBase = 500 * time.Millisecond
	maxReconnectDelay    = 8 * time.Second
	defaultPollInterval  = 2 * time.Second
)

// Errors of the event stream that reconnecting cannot fix.
const (
	errNotEventStream = constError("the server did not answer with an event stream")
	errStreamEnded    = constError("event stream ended")
)

// Outcome is how a followed build ended.
type Outcome struct {
	// Status is StatusSuccess or StatusFailed.
	Status string
	// URL is the live URL of the tenant's site (success only).
	URL string
	// DeploymentURL is the URL of this very deployment, when known
	// (success only).
	DeploymentURL string
	// DeploymentID identifies the deployment, when known (success only).
	DeploymentID string
	// Step is the pipeline step that failed (failure only).
	Step string
	// Error says why the build failed (failure only).
	Error string
	// Retryable says the failure was the infrastructure's, not the
	// project's: uploading again may work (failure only).
	Retryable bool
}

// Follow reads the tenant's event stream at eventsURL (the Links.Events of
// an upload; "" means the tenant's whole stream) and returns once build
// buildID has completed or failed. onEvent, when not nil, is called in
// order, once per event, for every event of this build (build:started,
// build:step, ..., build:completed); events of other builds and
// keepalives are skipped.
//
// A dropped stream is reconnected with the Last-Event-ID header, after a
// backoff, up to MaxReconnects times in a row; events the server sends
// again are not passed on twice. When no event arrives for
// DefaultIdleTimeout, Follow asks the server for the build's state
// (GetBuild) and returns if it has ended. When the stream cannot be used
// at all (reconnects exhausted, an answer that is not an event stream, a
// 4xx), Follow polls GetBuild until the build ends.
//
// The error is ctx's when it is cancelled; otherwise it says why neither
// the stream nor polling could tell the outcome.
func (c *Client) Follow(ctx context.Context, tenant, buildID, eventsURL string, onEvent func(Event)) (*Outcome, error) {
	if tenant == "" || buildID == "" {
		return nil, errors.New("follow: tenant and build id are required")
	}
	if eventsURL == "" {
		eventsURL = "/api/tenants/" + url.PathEscape(tenant) + "/events"
	}
	f := &follower{
		c:       c,
		tenant:  tenant,
		buildID: buildID,
		url:     eventsURL,
		onEvent: onEvent,
		seen:    make(map[string]struct{}),
	}
	out, err := f.run(ctx)
	if err != nil {
		return nil, fmt.Errorf("follow build %s: %w", buildID, err)
	}
	return out, nil
}

// follower is the state of one Follow call. Only the goroutine running
// run touches it; stream readers get what they need as arguments.
type follower struct {
	c       *Client
	tenant  string
	buildID string
	url     string
	onEvent func(Event)

	lastID string              // id of the last event read, for Last-Event-ID
	seen   map[string]struct{} // ids already handled
}

func (f *follower) run(ctx context.Context) (*Outcome, error) {
	failures := 0
	for {
		out, progressed, err := f.stream(ctx)
		if out != nil {
			return out, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if progressed {
			failures = 0
		}
		if !retryable(err) || failures >= MaxReconnects {
			return f.pollUntilDone(ctx, err)
		}
		failures++
		if err := sleep(ctx, f.backoff(failures)); err != nil {
			return nil, err
		}
	}
}

// stream reads one connection of the event stream. It returns the
// outcome once the build has ended, or the reason the connection ended;
// progressed says whether any event arrived on it.
func (f *follower) stream(ctx context.Context) (out *Outcome, progressed bool, err error) {
	sctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()

	events := make(chan Event)
	done := make(chan error, 1)
	wg.Go(func() { done <- f.c.readStream(sctx, f.url, f.lastID, events) })

	idle := time.NewTimer(f.c.idle())
	defer idle.Stop()
	for {
		select {
		case ev := <-events:
			progressed = true
			idle.Reset(f.c.idle())
			if out := f.handle(ev); out != nil {
				return out, true, nil
			}
		case err := <-done:
			return nil, progressed, err
		case <-idle.C:
			// Nothing for a while: the stream may be stuck behind a
			// buffering proxy. Ask for the build's state directly.
			if b, err := f.c.GetBuild(ctx, f.tenant, f.buildID); err == nil {
				if out := outcomeOf(b); out != nil {
					return out, progressed, nil
				}
			}
			idle.Reset(f.c.idle())
		case <-ctx.Done():
			return nil, progressed, ctx.Err()
		}
	}
}

// handle passes a new event of this build to onEvent and returns the
// outcome if the event ends the build.
func (f *follower) handle(ev Event) *Outcome {
	if ev.ID != "" {
		if _, dup := f.seen[ev.ID]; dup {
			return nil
		}
		f.seen[ev.ID] = struct{}{}
		f.lastID = ev.ID
	}
	if ev.BuildID() != f.buildID {
		return nil
	}
	if f.onEvent != nil {
		f.onEvent(ev)
	}
	// A field of the wrong type leaves only that field empty (encoding/json
	// fills the others), which is good enough to report the end.
	switch ev.Name {
	case EventBuildCompleted:
		var p BuildCompleted
		_ = json.Unmarshal(ev.Data, &p)
		return &Outcome{Status: StatusSuccess, URL: p.URL, DeploymentURL: p.DeploymentURL, DeploymentID: p.DeploymentID}
	case EventBuildFailed:
		var p BuildFailed
		_ = json.Unmarshal(ev.Data, &p)
		return &Outcome{Status: StatusFailed, Step: p.Step, Error: p.Error, Retryable: p.Retryable}
	}
	return nil
}

// pollUntilDone asks for the build's state every poll interval until it
// has ended. streamErr is why the event stream was given up.
func (f *follower) pollUntilDone(ctx context.Context, streamErr error) (*Outcome, error) {
	failures := 0
	for {
		b, err := f.c.GetBuild(ctx, f.tenant, f.buildID)
		switch {
		case err == nil:
			failures = 0
			if out := outcomeOf(b); out != nil {
				return out, nil
			}
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case !retryable(err) || failures >= MaxReconnects:
			return nil, fmt.Errorf("event stream: %w; polling the build: %w", streamErr, err)
		default:
			failures++
		}
		delay := f.c.poll()
		if failures > 0 {
			delay = f.backoff(failures)
		}
		if err := sleep(ctx, delay); err != nil {
			return nil, err
		}
	}
}

// readStream opens the event stream at ref, resuming after lastID, and
// sends its events to events until the stream or ctx ends. It always
// returns an error saying why it stopped.
func (c *Client) readStream(ctx context.Context, ref, lastID string, events chan<- Event) error {
	req, err := c.newRequest(ctx, http.MethodGet, ref, nil)
	if err != nil {
		return fmt.Errorf("event stream: %w", err)
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Cache-Control", "no-cache")
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := c.httpClient().Do(req)
	if err != nil {
		return fmt.Errorf("connect event stream: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("connect event stream: %w", readAPIError(resp))
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "text/event-stream" || resp.StatusCode == http.StatusNoContent {
		return fmt.Errorf("connect event stream: %w (status %d, content type %q)", errNotEventStream, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	err = readSSE(resp.Body, func(ev Event) bool {
		select {
		case events <- ev:
			return true
		case <-ctx.Done():
			return false
		}
	})
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err != nil {
		return err
	}
	return errStreamEnded
}

// outcomeOf returns the outcome of an ended build, or nil while it runs.
func outcomeOf(b *Build) *Outcome {
	switch b.Status {
	case StatusSuccess:
		return &Outcome{Status: StatusSuccess, URL: b.URL, DeploymentURL: b.DeploymentURL}
	case StatusFailed:
		out := &Outcome{Status: StatusFailed}
		if b.Error != nil {
			out.Step, out.Error, out.Retryable = b.Error.Step, b.Error.Message, b.Error.Retryable
		}
		return out
	}
	return nil
}

// retryable reports whether trying again may help after err: network
// errors, a dropped stream, 408, 429 and 5xx may; other 4xx answers and a
// response that is not an event stream will not.
func retryable(err error) bool {
	var apiErr *APIError
	if errors.As(err, &apiErr) {
		return apiErr.Status == http.StatusRequestTimeout || apiErr.Status == http.StatusTooManyRequests || apiErr.Status >= 500
	}
	return !errors.Is(err, errNotEventStream)
}

// backoff is the delay before the n-th retry in a row (n >= 1).
func (f *follower) backoff(n int) time.Duration {
	d := f.c.reconnectBase
	if d <= 0 {
		d = defaultReconnectBase
	}
	for i := 1; i < n && d < maxReconnectDelay; i++ {
		d *= 2
	}
	return min(d, maxReconnectDelay)
}

func (c *Client) idle() time.Duration {
	if c.idleTimeout > 0 {
		return c.idleTimeout
	}
	return DefaultIdleTimeout
}

func (c *Client) poll() time.Duration {
	if c.pollInterval > 0 {
		return c.pollInterval
	}
	return defaultPollInterval
}

// sleep waits for d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
