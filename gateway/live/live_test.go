package live

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/zipship/zipship/buildlog"
	"github.com/zipship/zipship/domain"
	blobfs "github.com/zipship/zipship/infra/blob/fs"
	"github.com/zipship/zipship/infra/eventstore"
	"github.com/zipship/zipship/infra/eventstore/sqlite"
	"github.com/zipship/zipship/liveevents"
)

// wait bounds every single expectation, so a broken stream fails the test
// quickly instead of hanging it.
const wait = 5 * time.Second

var at = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

func testURLs(tenant, buildID string) (string, string) {
	return "https://" + tenant + ".sites.test", "https://" + buildID + "--" + tenant + ".sites.test"
}

// ---------------------------------------------------------------- Map

func TestMap(t *testing.T) {
	cases := []struct {
		name   string
		tenant string
		event  domain.Event
		wire   string
		json   string
	}{
		{"BuildStarted", "acme", domain.BuildStarted{BuildID: "b1", Attempt: 2, Runner: "r1", At: at},
			"build:started", `{"buildId":"b1","tenantId":"acme","attempt":2}`},
		{"BuildStepStarted", "acme", domain.BuildStepStarted{BuildID: "b1", Attempt: 1, Step: domain.StepInstall, At: at},
			"build:step", `{"buildId":"b1","step":"install","status":"started","attempt":1}`},
		{"BuildStepFinished", "acme", domain.BuildStepFinished{BuildID: "b1", Attempt: 1, Step: domain.StepBuild, DurationMs: 1234, Detail: "vite", At: at},
			"build:step", `{"buildId":"b1","step":"build","status":"finished","attempt":1,"durationMs":1234,"detail":"vite"}`},
		{"BuildStepFinishedNoDetail", "acme", domain.BuildStepFinished{BuildID: "b1", Attempt: 1, Step: domain.StepExtract, DurationMs: 5, At: at},
			"build:step", `{"buildId":"b1","step":"extract","status":"finished","attempt":1,"durationMs":5,"detail":""}`},
		{"BuildAttemptFailed", "acme", domain.BuildAttemptFailed{BuildID: "b1", Attempt: 1, Step: domain.StepUpload, Error: "timeout", RetryInMs: 2000, At: at},
			"build:retrying", `{"buildId":"b1","attempt":1,"step":"upload","error":"timeout","retryInMs":2000}`},
		{"BuildSucceeded", "acme", domain.BuildSucceeded{BuildID: "b1", Attempt: 1, ManifestKey: "m", Files: 3, Bytes: 10, DurationMs: 99, At: at},
			"build:completed", `{"buildId":"b1","status":"success","deploymentId":"b1","url":"https://acme.sites.test","deploymentUrl":"https://b1--acme.sites.test"}`},
		{"BuildFailed", "acme", domain.BuildFailed{BuildID: "b1", Attempt: 3, Step: domain.StepInstall, Error: "npm ERR!", Retryable: false, At: at},
			"build:failed", `{"buildId":"b1","step":"install","error":"npm ERR!","retryable":false}`},
		{"BuildFailedRetryable", "acme", domain.BuildFailed{BuildID: "b1", Attempt: 3, Step: domain.StepUpload, Error: "s3 down", Retryable: true, At: at},
			"build:failed", `{"buildId":"b1","step":"upload","error":"s3 down","retryable":true}`},
		{"DeploymentActivated", "acme", domain.DeploymentActivated{TenantID: "acme", BuildID: "b2", Version: "v2", ManifestKey: "m", ActivatedBy: "u", Previous: "b1", At: at},
			"deployment:activated", `{"tenantId":"acme","buildId":"b2","deploymentId":"b2","version":"v2","url":"https://acme.sites.test","deploymentUrl":"https://b2--acme.sites.test","previous":"b1"}`},
		{"DeploymentActivatedFirst", "acme", domain.DeploymentActivated{TenantID: "acme", BuildID: "b1", Version: "v1", At: at},
			"deployment:activated", `{"tenantId":"acme","buildId":"b1","deploymentId":"b1","version":"v1","url":"https://acme.sites.test","deploymentUrl":"https://b1--acme.sites.test","previous":""}`},
		{"DeploymentActivatedTenantFromEnvelope", "acme", domain.DeploymentActivated{BuildID: "b1", Version: "v1", At: at},
			"deployment:activated", `{"tenantId":"acme","buildId":"b1","deploymentId":"b1","version":"v1","url":"https://acme.sites.test","deploymentUrl":"https://b1--acme.sites.test","previous":""}`},
		{"DeploymentRolledBack", "acme", domain.DeploymentRolledBack{TenantID: "acme", BuildID: "b1", Version: "v1", RolledBackBy: "u", Previous: "b2", At: at},
			"deployment:activated", `{"tenantId":"acme","buildId":"b1","deploymentId":"b1","version":"v1","url":"https://acme.sites.test","deploymentUrl":"https://b1--acme.sites.test","previous":"b2","rollback":true}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			name, payload, ok := Map(envelope(t, tc.tenant, tc.event, 7), testURLs)
			if !ok {
				t.Fatalf("Map(%s) not ok", tc.event.EventType())
			}
			if name != tc.wire {
				t.Errorf("name = %q, want %q", name, tc.wire)
			}
			got, err := json.Marshal(payload)
			if err != nil {
				t.Fatalf("marshal payload: %v", err)
			}
			if string(got) != tc.json {
				t.Errorf("payload\n got %s\nwant %s", got, tc.json)
			}
		})
	}
}

func TestMapSkips(t *testing.T) {
	skipped := []domain.Event{
		domain.BuildRequested{BuildID: "b1", TenantID: "acme", Version: "v1", At: at},
		domain.BuildPublished{BuildID: "b1", Attempt: 1, ManifestKey: "m", At: at},
		domain.TenantCreated{TenantID: "acme", Name: "Acme", Owner: "u", At: at},
		domain.MemberAdded{TenantID: "acme", UserID: "u2", Role: "member", AddedBy: "u", At: at},
		domain.MemberRoleChanged{TenantID: "acme", UserID: "u2", At: at},
		domain.MemberRemoved{TenantID: "acme", UserID: "u2", At: at},
	}
	for _, e := range skipped {
		if name, payload, ok := Map(envelope(t, "acme", e, 1), testURLs); ok || name != "" || payload != nil {
			t.Errorf("Map(%s) = %q, %v, %v; want skipped", e.EventType(), name, payload, ok)
		}
	}
	unknown := eventstore.Event{Type: "SomethingNew", Data: []byte(`{}`), Tenant: "acme"}
	if _, _, ok := Map(unknown, testURLs); ok {
		t.Error("Map(unknown type) ok, want skipped")
	}
	broken := eventstore.Event{Type: "BuildStarted", Data: []byte(`{"attempt":"one"}`), Tenant: "acme"}
	if _, _, ok := Map(broken, testURLs); ok {
		t.Error("Map(undecodable BuildStarted) ok, want skipped")
	}
	if _, _, err := mapEvent(broken, testURLs); err == nil {
		t.Error("mapEvent(undecodable) returned no error")
	}
}

func TestMapWithoutURLs(t *testing.T) {
	_, payload, ok := Map(envelope(t, "acme", domain.BuildSucceeded{BuildID: "b1"}, 1), nil)
	if !ok {
		t.Fatal("Map not ok")
	}
	if p := payload.(liveevents.BuildCompleted); p.URL != "" || p.DeploymentURL != "" || p.DeploymentID != "b1" {
		t.Errorf("payload = %+v, want empty URLs", p)
	}
}

// ---------------------------------------------------------------- fixture

// fixture is a real sqlite store, a Hub over it, and an HTTP server whose
// handler serves /tenants/{tenant}/live. Every Serve call that returns
// reports the X-Conn header of its request on returned.
type fixture struct {
	store    *sqlite.Store
	hub      *Hub
	srv      *httptest.Server
	returned chan string
}

func newFixture(t *testing.T, tune func(*Hub)) *fixture {
	t.Helper()
	store, err := sqlite.Open(filepath.Join(t.TempDir(), "events.db"))
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() {
		if err := store.Close(); err != nil && !errors.Is(err, eventstore.ErrClosed) {
			t.Errorf("close store: %v", err)
		}
	})
	f := &fixture{
		store:    store,
		hub:      NewHub(store, testURLs, slog.New(slog.DiscardHandler)),
		returned: make(chan string, 64),
	}
	if tune != nil {
		tune(f.hub)
	}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rest, ok := strings.CutPrefix(r.URL.Path, "/tenants/")
		tenant, ok2 := strings.CutSuffix(rest, "/live")
		if !ok || !ok2 || tenant == "" || strings.Contains(tenant, "/") {
			http.NotFound(w, r)
			return
		}
		f.hub.Serve(w, r, tenant)
		select {
		case f.returned <- r.Header.Get("X-Conn"):
		default:
		}
	}))
	t.Cleanup(func() {
		// Close waits for running handlers: bound it, so a stuck handler
		// fails the test instead of hanging it.
		closed := make(chan struct{})
		go func() {
			f.srv.CloseClientConnections()
			f.srv.Close()
			close(closed)
		}()
		select {
		case <-closed:
		case <-time.After(wait):
			t.Errorf("handlers still running %s after the test", wait)
		}
	})
	return f
}

// url returns the live URL of tenant with an optional query.
func (f *fixture) url(tenant, query string) string {
	u := f.srv.URL + "/tenants/" + tenant + "/live"
	if query != "" {
		u += "?" + query
	}
	return u
}

// envelope builds the stored form of e, as Map sees it after an append.
func envelope(t *testing.T, tenant string, e domain.Event, pos int64) eventstore.Event {
	t.Helper()
	data, err := json.Marshal(e)
	if err != nil {
		t.Fatalf("marshal %s: %v", e.EventType(), err)
	}
	return eventstore.Event{Type: e.EventType(), Data: data, Tenant: tenant, Position: pos, SchemaVersion: domain.SchemaVersion}
}

// append stores e in stream for tenant and returns its envelope with the
// position the store assigned.
func (f *fixture) append(t *testing.T, tenant, stream string, e domain.Event) eventstore.Event {
	t.Helper()
	ev := envelope(t, tenant, e, 0)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	res, err := f.store.Append(ctx, stream, eventstore.Any, ev)
	if err != nil {
		t.Fatalf("append %s: %v", e.EventType(), err)
	}
	ev.Position = res.Position
	return ev
}

// buildLifecycle appends a whole build of tenant (with an event that is
// not sent, BuildRequested, first) and returns the envelopes of the events
// that are sent, in order.
func (f *fixture) buildLifecycle(t *testing.T, tenant, buildID string) []eventstore.Event {
	t.Helper()
	bs := domain.BuildStream(buildID)
	f.append(t, tenant, bs, domain.BuildRequested{BuildID: buildID, TenantID: tenant, Version: "v-" + buildID, At: at})
	return []eventstore.Event{
		f.append(t, tenant, bs, domain.BuildStarted{BuildID: buildID, Attempt: 1, Runner: "r1", At: at}),
		f.append(t, tenant, bs, domain.BuildStepStarted{BuildID: buildID, Attempt: 1, Step: domain.StepInstall, At: at}),
		f.append(t, tenant, bs, domain.BuildStepFinished{BuildID: buildID, Attempt: 1, Step: domain.StepInstall, DurationMs: 42, Detail: "npm ci", At: at}),
		f.append(t, tenant, bs, domain.BuildAttemptFailed{BuildID: buildID, Attempt: 1, Step: domain.StepUpload, Error: "timeout", RetryInMs: 1000, At: at}),
		f.append(t, tenant, bs, domain.BuildSucceeded{BuildID: buildID, Attempt: 2, DurationMs: 900, At: at}),
		f.append(t, tenant, domain.SiteStream(tenant), domain.DeploymentActivated{TenantID: tenant, BuildID: buildID, Version: "v-" + buildID, At: at}),
	}
}

// wireEvent is one event as a client received it.
type wireEvent struct {
	ID    int64
	Event string
	Data  string
}

// want returns what a client must receive for the stored event ev.
func want(t *testing.T, ev eventstore.Event) wireEvent {
	t.Helper()
	name, payload, ok := Map(ev, testURLs)
	if !ok {
		t.Fatalf("event %s at %d is not sent", ev.Type, ev.Position)
	}
	data, err := json.Marshal(payload)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	return wireEvent{ID: ev.Position, Event: name, Data: string(data)}
}

// expectSequence checks that next yields exactly the wire form of evs, in
// order.
func expectSequence(t *testing.T, next func(*testing.T) wireEvent, evs []eventstore.Event) {
	t.Helper()
	for i, ev := range evs {
		w := want(t, ev)
		if got := next(t); got != w {
			t.Fatalf("event %d:\n got %+v\nwant %+v", i, got, w)
		}
	}
}

// expectReturned waits for the handler of connection name to return.
func (f *fixture) expectReturned(t *testing.T, name string) {
	t.Helper()
	timeout := time.After(wait)
	for {
		select {
		case got := <-f.returned:
			if got == name {
				return
			}
		case <-timeout:
			t.Fatalf("handler of %q still running %s after the client left", name, wait)
		}
	}
}

// ---------------------------------------------------------------- SSE client

// frame is one SSE frame: the fields of one blank-line-terminated block.
type frame struct {
	ID, Event, Data, Retry string
	Comments               []string
}

type sseClient struct {
	resp   *http.Response
	frames chan frame
	cancel context.CancelFunc
}

// dialSSE opens an event stream and fails the test unless it is answered
// with 200 and the SSE headers.
func (f *fixture) dialSSE(t *testing.T, name, url string, header http.Header) *sseClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		cancel()
		t.Fatalf("new request: %v", err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("X-Conn", name)
	// Headers are flushed at once: Do must not wait for the first event.
	timer := time.AfterFunc(wait, cancel)
	resp, err := f.srv.Client().Do(req)
	timer.Stop()
	if err != nil {
		cancel()
		t.Fatalf("GET %s: %v", url, err)
	}
	c := &sseClient{resp: resp, frames: make(chan frame), cancel: cancel}
	t.Cleanup(c.close)
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: status %d: %s", url, resp.StatusCode, body)
	}
	for k, v := range map[string]string{"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"} {
		if got := resp.Header.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	go c.read(ctx)
	return c
}

func (c *sseClient) close() {
	c.cancel()
	_ = c.resp.Body.Close()
}

// read parses frames until the stream ends; then frames is closed.
func (c *sseClient) read(ctx context.Context) {
	defer close(c.frames)
	br := bufio.NewReader(c.resp.Body)
	var fr frame
	empty := true
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimSuffix(line, "\n")
		if line == "" {
			if !empty {
				select {
				case c.frames <- fr:
				case <-ctx.Done():
					return
				}
			}
			fr, empty = frame{}, true
			continue
		}
		empty = false
		if comment, ok := strings.CutPrefix(line, ":"); ok {
			fr.Comments = append(fr.Comments, strings.TrimSpace(comment))
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "id":
			fr.ID = value
		case "event":
			fr.Event = value
		case "data":
			fr.Data += value
		case "retry":
			fr.Retry = value
		}
	}
}

// nextFrame returns the next frame of any kind.
func (c *sseClient) nextFrame(t *testing.T) frame {
	t.Helper()
	select {
	case fr, ok := <-c.frames:
		if !ok {
			t.Fatal("event stream ended")
		}
		return fr
	case <-time.After(wait):
		t.Fatalf("no frame within %s", wait)
	}
	panic("unreachable")
}

// next returns the next event, skipping retry and comment frames.
func (c *sseClient) next(t *testing.T) wireEvent {
	t.Helper()
	for {
		fr := c.nextFrame(t)
		if fr.Event == "" && fr.Data == "" && fr.ID == "" {
			continue
		}
		id, err := strconv.ParseInt(fr.ID, 10, 64)
		if err != nil {
			t.Fatalf("frame id %q: %v", fr.ID, err)
		}
		return wireEvent{ID: id, Event: fr.Event, Data: fr.Data}
	}
}

// expectQuiet fails if an event arrives within d.
func (c *sseClient) expectQuiet(t *testing.T, d time.Duration) {
	t.Helper()
	timeout := time.After(d)
	for {
		select {
		case fr, ok := <-c.frames:
			if !ok {
				return
			}
			if fr.ID != "" || fr.Event != "" || fr.Data != "" {
				t.Fatalf("unexpected event %+v", fr)
			}
		case <-timeout:
			return
		}
	}
}

// ---------------------------------------------------------------- WebSocket client

type wsClient struct {
	conn *websocket.Conn
}

func (f *fixture) dialWS(t *testing.T, name, url string) *wsClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	url = "ws" + strings.TrimPrefix(url, "http")
	conn, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{
		HTTPClient: f.srv.Client(),
		HTTPHeader: http.Header{"X-Conn": {name}},
	})
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s: status %d: %v", url, status, err)
	}
	t.Cleanup(func() { _ = conn.CloseNow() })
	return &wsClient{conn: conn}
}

func (c *wsClient) next(t *testing.T) wireEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	typ, b, err := c.conn.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if typ != websocket.MessageText {
		t.Fatalf("message type %v, want text", typ)
	}
	var m struct {
		ID    int64           `json:"id"`
		Event string          `json:"event"`
		Data  json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("decode message %s: %v", b, err)
	}
	return wireEvent{ID: m.ID, Event: m.Event, Data: string(m.Data)}
}

// ---------------------------------------------------------------- SSE tests

func TestSSEStreamsNewEventsInOrder(t *testing.T) {
	f := newFixture(t, nil)
	// Stored before connecting: not sent, the stream starts at the head.
	f.buildLifecycle(t, "acme", "old")

	c := f.dialSSE(t, "a", f.url("acme", ""), nil)
	if fr := c.nextFrame(t); fr.Retry != "2000" {
		t.Fatalf("first frame = %+v, want retry: 2000", fr)
	}
	evs := f.buildLifecycle(t, "acme", "b1")
	expectSequence(t, c.next, evs)
	c.expectQuiet(t, 300*time.Millisecond)
}

func TestSSEResumeWithLastEventID(t *testing.T) {
	f := newFixture(t, nil)
	c := f.dialSSE(t, "first", f.url("acme", ""), nil)
	first := f.buildLifecycle(t, "acme", "b1")
	expectSequence(t, c.next, first[:3])
	lastSeen := first[2].Position
	c.close()
	f.expectReturned(t, "first")

	// Appended while disconnected.
	second := f.buildLifecycle(t, "acme", "b2")

	// An EventSource reconnects to the same URL (here with ?after=0 from
	// the upload answer) and adds Last-Event-ID, which must win.
	c = f.dialSSE(t, "second", f.url("acme", "after=0"), http.Header{"Last-Event-ID": {strconv.FormatInt(lastSeen, 10)}})
	expectSequence(t, c.next, append(first[3:], second...))
	live := f.append(t, "acme", domain.BuildStream("b3"), domain.BuildStarted{BuildID: "b3", Attempt: 1, At: at})
	expectSequence(t, c.next, []eventstore.Event{live})
	c.expectQuiet(t, 300*time.Millisecond)
}

func TestSSEStartFromQuery(t *testing.T) {
	f := newFixture(t, nil)
	evs := f.buildLifecycle(t, "acme", "b1")
	for _, param := range []string{"after", "lastEventId"} {
		t.Run(param, func(t *testing.T) {
			c := f.dialSSE(t, param, f.url("acme", param+"="+strconv.FormatInt(evs[1].Position, 10)), nil)
			expectSequence(t, c.next, evs[2:])
			c.expectQuiet(t, 200*time.Millisecond)
		})
	}
	t.Run("after=0 replays everything", func(t *testing.T) {
		c := f.dialSSE(t, "zero", f.url("acme", "after=0"), nil)
		expectSequence(t, c.next, evs)
	})
}

func TestTenantIsolation(t *testing.T) {
	f := newFixture(t, nil)
	a := f.dialSSE(t, "a", f.url("acme", ""), nil)
	b := f.dialSSE(t, "b", f.url("globex", ""), nil)
	aws := f.dialWS(t, "aws", f.url("acme", ""))

	var wantA, wantB []eventstore.Event
	for i := range 3 {
		id := strconv.Itoa(i)
		wantA = append(wantA, f.append(t, "acme", domain.BuildStream("a"+id), domain.BuildStarted{BuildID: "a" + id, Attempt: 1, At: at}))
		wantB = append(wantB, f.append(t, "globex", domain.BuildStream("g"+id), domain.BuildStarted{BuildID: "g" + id, Attempt: 1, At: at}))
	}
	// Last one is acme's: every globex event precedes it, so a leaked one
	// would show up in the sequence before it.
	wantA = append(wantA, f.append(t, "acme", domain.SiteStream("acme"), domain.DeploymentActivated{TenantID: "acme", BuildID: "a2", Version: "v", At: at}))

	expectSequence(t, a.next, wantA)
	expectSequence(t, aws.next, wantA)
	expectSequence(t, b.next, wantB)
	a.expectQuiet(t, 200*time.Millisecond)
	b.expectQuiet(t, 0)

	// A replay from the beginning is filtered too.
	all := f.dialSSE(t, "replay", f.url("globex", "after=0"), nil)
	expectSequence(t, all.next, wantB)
	all.expectQuiet(t, 200*time.Millisecond)
}

func TestSSEKeepAlive(t *testing.T) {
	f := newFixture(t, func(h *Hub) { h.keepAlive = 20 * time.Millisecond })
	c := f.dialSSE(t, "a", f.url("acme", ""), nil)
	for {
		fr := c.nextFrame(t)
		if len(fr.Comments) > 0 {
			if fr.Comments[0] != "keepalive" {
				t.Fatalf("comment %q, want keepalive", fr.Comments[0])
			}
			break
		}
	}
	// The stream still carries events after keepalives.
	ev := f.append(t, "acme", domain.BuildStream("b1"), domain.BuildStarted{BuildID: "b1", Attempt: 1, At: at})
	expectSequence(t, c.next, []eventstore.Event{ev})
}

// ---------------------------------------------------------------- WebSocket tests

func TestWebSocketStreamsSameSequence(t *testing.T) {
	f := newFixture(t, nil)
	f.buildLifecycle(t, "acme", "old")
	ws := f.dialWS(t, "ws", f.url("acme", ""))
	sse := f.dialSSE(t, "sse", f.url("acme", ""), nil)
	evs := f.buildLifecycle(t, "acme", "b1")
	expectSequence(t, ws.next, evs)
	expectSequence(t, sse.next, evs)

	// Resume with the lastEventId query parameter (browsers cannot set
	// headers on a WebSocket).
	resumed := f.dialWS(t, "resumed", f.url("acme", "lastEventId="+strconv.FormatInt(evs[3].Position, 10)))
	expectSequence(t, resumed.next, evs[4:])
}

func TestWebSocketPing(t *testing.T) {
	f := newFixture(t, func(h *Hub) { h.pingInterval = 20 * time.Millisecond })
	pings := make(chan struct{}, 100)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(f.url("acme", ""), "http"), &websocket.DialOptions{
		HTTPHeader: http.Header{"X-Conn": {"ws"}},
		OnPingReceived: func(context.Context, []byte) bool {
			select {
			case pings <- struct{}{}:
			default:
			}
			return true
		},
	})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { _ = conn.CloseNow() })
	ws := &wsClient{conn: conn}
	// The client answers pings while it reads; a read that waits for the
	// event below spans several pings.
	type result struct {
		b   []byte
		err error
	}
	got := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		_, b, err := ws.conn.Read(ctx)
		got <- result{b, err}
	}()
	for range 3 {
		select {
		case <-pings:
		case <-time.After(wait):
			t.Fatal("no ping")
		}
	}
	ev := f.append(t, "acme", domain.BuildStream("b1"), domain.BuildStarted{BuildID: "b1", Attempt: 1, At: at})
	select {
	case r := <-got:
		if r.err != nil {
			t.Fatalf("read: %v", r.err)
		}
		var m Message
		if err := json.Unmarshal(r.b, &m); err != nil || m.ID != ev.Position || m.Event != liveevents.EventBuildStarted {
			t.Fatalf("message %s (%v), want build:started at %d", r.b, err, ev.Position)
		}
	case <-time.After(wait):
		t.Fatal("no event after pings")
	}
	select {
	case name := <-f.returned:
		t.Fatalf("handler %q returned while the client answered pings", name)
	default:
	}
}

// ---------------------------------------------------------------- errors

func TestNotAcceptable(t *testing.T) {
	f := newFixture(t, nil)
	for _, accept := range []string{"", "*/*", "application/json", "text/event-stream;q=0"} {
		t.Run("accept="+accept, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, f.url("acme", ""), nil)
			if accept != "" {
				req.Header.Set("Accept", accept)
			}
			expectJSONError(t, f, req, http.StatusNotAcceptable, "not_acceptable")
		})
	}
}

func TestBadPosition(t *testing.T) {
	f := newFixture(t, nil)
	cases := []struct {
		name, query, lastEventID string
	}{
		{"header text", "", "abc"},
		{"header negative", "", "-1"},
		{"header float", "", "1.5"},
		{"after text", "after=x", ""},
		{"lastEventId negative", "lastEventId=-3", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, f.url("acme", tc.query), nil)
			req.Header.Set("Accept", "text/event-stream")
			if tc.lastEventID != "" {
				req.Header.Set("Last-Event-ID", tc.lastEventID)
			}
			expectJSONError(t, f, req, http.StatusBadRequest, "invalid_request")
		})
	}
	t.Run("websocket", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		_, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(f.url("acme", "lastEventId=nope"), "http"), nil)
		if err == nil {
			t.Fatal("dial with a bad lastEventId succeeded")
		}
		if resp == nil || resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("response %v, want 400", resp)
		}
	})
}

func expectJSONError(t *testing.T, f *fixture, req *http.Request, status int, code string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	resp, err := f.srv.Client().Do(req.WithContext(ctx))
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d", resp.StatusCode, status)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type %q, want JSON", ct)
	}
	var body errorBody
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("decode error body: %v", err)
	}
	if body.Error != code || body.Message == "" {
		t.Errorf("body %+v, want error %q with a message", body, code)
	}
}

// ---------------------------------------------------------------- lifecycle

func TestHandlerReturnsWhenClientLeaves(t *testing.T) {
	f := newFixture(t, nil)
	sse := f.dialSSE(t, "sse", f.url("acme", ""), nil)
	ws := f.dialWS(t, "ws", f.url("acme", ""))
	ev := f.append(t, "acme", domain.BuildStream("b1"), domain.BuildStarted{BuildID: "b1", Attempt: 1, At: at})
	expectSequence(t, sse.next, []eventstore.Event{ev})
	expectSequence(t, ws.next, []eventstore.Event{ev})

	sse.close()
	f.expectReturned(t, "sse")
	_ = ws.conn.CloseNow()
	f.expectReturned(t, "ws")
}

func TestHandlerReturnsWhenStoreCloses(t *testing.T) {
	f := newFixture(t, nil)
	sse := f.dialSSE(t, "sse", f.url("acme", ""), nil)
	ws := f.dialWS(t, "ws", f.url("acme", ""))
	// A WebSocket client reads, and so answers the server's close frame.
	wsErr := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		_, _, err := ws.conn.Read(ctx)
		wsErr <- err
	}()
	if err := f.store.Close(); err != nil {
		t.Fatalf("close store: %v", err)
	}
	select {
	case err := <-wsErr:
		if websocket.CloseStatus(err) != websocket.StatusTryAgainLater {
			t.Errorf("websocket read: %v, want close status %v", err, websocket.StatusTryAgainLater)
		}
	case <-time.After(wait):
		t.Fatal("websocket not closed after the store closed")
	}
	got := map[string]bool{}
	for range 2 {
		select {
		case name := <-f.returned:
			got[name] = true
		case <-time.After(wait):
			t.Fatalf("handlers still running after the store closed (returned: %v)", got)
		}
	}
	// The SSE client sees the end of the stream and reconnects on its own.
	for {
		select {
		case _, ok := <-sse.frames:
			if !ok {
				return
			}
		case <-time.After(wait):
			t.Fatal("SSE response not ended after the store closed")
		}
	}
}

// TestSlowClientIsDropped checks that a client that stops reading loses its
// connection after the write timeout, while another client of the same
// tenant keeps receiving every event meanwhile.
func TestSlowClientIsDropped(t *testing.T) {
	f := newFixture(t, func(h *Hub) { h.writeTimeout = 200 * time.Millisecond })
	fast := f.dialSSE(t, "fast", f.url("acme", ""), nil)
	f.dialStalled(t, "stalled", f.url("acme", ""))

	// Big events fill the stalled client's socket buffers quickly.
	detail := strings.Repeat("x", 64<<10)
	deadline := time.Now().Add(20 * time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		ev := f.append(t, "acme", domain.BuildStream("big"), domain.BuildStepFinished{BuildID: "big", Attempt: 1, Step: domain.StepBuild, Detail: detail, At: at})
		if got := fast.next(t); got.ID != ev.Position {
			t.Fatalf("fast client got id %d, want %d", got.ID, ev.Position)
		}
		select {
		case name := <-f.returned:
			if name != "stalled" {
				t.Fatalf("handler %q returned, want stalled", name)
			}
			t.Logf("stalled client dropped after %d events", i+1)
			return
		default:
		}
	}
	t.Fatal("stalled client still connected")
}

// dialStalled opens an event stream over a raw connection with a small
// receive buffer, reads the response head, and then never reads again.
func (f *fixture) dialStalled(t *testing.T, name, rawURL string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", f.srv.Listener.Addr().String(), wait)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	if err := conn.(*net.TCPConn).SetReadBuffer(4 << 10); err != nil {
		t.Fatalf("set read buffer: %v", err)
	}
	req, err := http.NewRequest(http.MethodGet, rawURL, nil)
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("X-Conn", name)
	_ = conn.SetDeadline(time.Now().Add(wait))
	if err := req.Write(conn); err != nil {
		t.Fatalf("write request: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReaderSize(conn, 16), req)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	_ = conn.SetDeadline(time.Time{})
}

// gate is a Waiter whose positions are released by the test, standing in
// for a projector that has not applied them yet.
type gate struct {
	mu      sync.Mutex
	applied int64
	changed chan struct{}
}

func newGate() *gate { return &gate{changed: make(chan struct{})} }

func (g *gate) WaitFor(ctx context.Context, pos int64) error {
	for {
		g.mu.Lock()
		ok, ch := g.applied >= pos, g.changed
		g.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}

func (g *gate) release(pos int64) {
	g.mu.Lock()
	g.applied = pos
	close(g.changed)
	g.changed = make(chan struct{})
	g.mu.Unlock()
}

// TestEventsWaitForReadModels: with WaitForReadModels, an event reaches the
// client only after the read models applied it.
func TestEventsWaitForReadModels(t *testing.T) {
	g := newGate()
	f := newFixture(t, func(h *Hub) { h.WaitForReadModels(g) })
	c := f.dialSSE(t, "a", f.url("acme", ""), nil)
	if fr := c.nextFrame(t); fr.Retry != "2000" {
		t.Fatalf("first frame = %+v, want retry: 2000", fr)
	}
	evs := f.buildLifecycle(t, "acme", "b1")
	c.expectQuiet(t, 300*time.Millisecond)
	g.release(evs[len(evs)-1].Position)
	expectSequence(t, c.next, evs)
}

// TestBuildLogLines: with a log source, the tenant's build output arrives as
// build:log frames without an id (logs are not events), and never another
// tenant's.
func TestBuildLogLines(t *testing.T) {
	blobs, err := blobfs.New(filepath.Join(t.TempDir(), "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	logs := buildlog.NewBroker(blobs, nil)
	f := newFixture(t, func(h *Hub) { h.WithLogs(logs) })
	c := f.dialSSE(t, "a", f.url("acme", ""), nil)
	if fr := c.nextFrame(t); fr.Retry != "2000" {
		t.Fatalf("first frame = %+v, want retry: 2000", fr)
	}
	logs.Open("evil", "e1", nil).Printf("not for acme")
	logs.Open("acme", "b1", []string{"hunter22"}).Printf("npm run build with hunter22")
	fr := c.nextFrame(t)
	if fr.Event != "build:log" || fr.ID != "" {
		t.Fatalf("frame = %+v, want an id-less build:log", fr)
	}
	var ln liveevents.BuildLog
	if err := json.Unmarshal([]byte(fr.Data), &ln); err != nil {
		t.Fatal(err)
	}
	if ln.BuildID != "b1" || ln.N != 1 || ln.Stream != "system" || ln.Text != "npm run build with [redacted]" {
		t.Fatalf("line = %+v", ln)
	}
	c.expectQuiet(t, 200*time.Millisecond)
}
