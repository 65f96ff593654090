package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// sseServer serves GET /api/tenants/acme/events with a script per
// connection and GET /api/builds/acme/b-1 with build (JSON) or buildStatus.
type sseServer struct {
	t *testing.T
	// conns[i] writes connection i's body; past the end, the last one is
	// used again. A script returns to end the response cleanly, or panics
	// with http.ErrAbortHandler to cut the connection.
	conns []func(w http.ResponseWriter, flush func(), done <-chan struct{})
	// eventsStatus, when not 0, is the answer to every events request.
	eventsStatus int
	build        string // body of GET build; "" answers 404
	buildStatus  int    // when not 0, the status of GET build

	mu         sync.Mutex
	lastIDs    []string // Last-Event-ID of each events request
	queries    []string
	accepts    []string
	auths      []string
	buildPolls int
}

func (s *sseServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/api/tenants/acme/events":
		s.mu.Lock()
		n := len(s.lastIDs)
		s.lastIDs = append(s.lastIDs, r.Header.Get("Last-Event-ID"))
		s.queries = append(s.queries, r.URL.RawQuery)
		s.accepts = append(s.accepts, r.Header.Get("Accept"))
		s.auths = append(s.auths, r.Header.Get("Authorization"))
		s.mu.Unlock()
		if s.eventsStatus != 0 {
			w.WriteHeader(s.eventsStatus)
			fmt.Fprint(w, `{"error":"nope","message":"no stream"}`)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		flush := func() { w.(http.Flusher).Flush() }
		flush()
		s.conns[min(n, len(s.conns)-1)](w, flush, r.Context().Done())
	case "/api/builds/acme/b-1":
		s.mu.Lock()
		s.buildPolls++
		s.mu.Unlock()
		switch {
		case s.buildStatus != 0:
			w.WriteHeader(s.buildStatus)
			fmt.Fprint(w, `{"error":"unauthorized","message":"token expired"}`)
		case s.build == "":
			http.NotFound(w, r)
		default:
			fmt.Fprintf(w, `{"success":true,"data":{"build":%s}}`, s.build)
		}
	default:
		http.NotFound(w, r)
	}
}

func (s *sseServer) seen() (lastIDs, queries []string, polls int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.lastIDs), slices.Clone(s.queries), s.buildPolls
}

// ev formats one SSE event with the given line ending.
func ev(id, name, data, eol string) string {
	return "id: " + id + eol + "event: " + name + eol + "data: " + data + eol + eol
}

func newTestClient(url string) *Client {
	return &Client{Server: url, Token: "jwt", reconnectBase: time.Millisecond, idleTimeout: 5 * time.Second, pollInterval: time.Millisecond}
}

func TestFollowFiltersReconnectsAndDedupes(t *testing.T) {
	srv := &sseServer{t: t, conns: []func(http.ResponseWriter, func(), <-chan struct{}){
		// 1: a few events, then the connection is cut in the middle of one.
		func(w http.ResponseWriter, flush func(), done <-chan struct{}) {
			fmt.Fprint(w, ": keepalive\n\n")
			fmt.Fprint(w, ev("1", "build:started", `{"buildId":"b-2","tenantId":"acme","version":"v1","attempt":1}`, "\n"))
			fmt.Fprint(w, ev("2", "build:started", `{"buildId":"b-1","tenantId":"acme","version":"v2","attempt":1}`, "\n"))
			fmt.Fprint(w, ev("3", "build:step", `{"buildId":"b-1","step":"extract","status":"started","attempt":1}`, "\n"))
			fmt.Fprint(w, ev("4", "build:step", `{"buildId":"b-2","step":"extract","status":"started","attempt":1}`, "\n"))
			fmt.Fprint(w, ev("5", "build:step", `{"buildId":"b-1","step":"extract","status":"finished","attempt":1,"durationMs":12,"detail":"3 files"}`, "\n"))
			fmt.Fprint(w, "id: 6\nevent: build:step\ndata: {\"buildId\":\"b-1\",")
			flush()
			panic(http.ErrAbortHandler)
		},
		// 2: resumes, but sends the last seen event again (CRLF line
		// ends, a multi-line data), then ends the response cleanly.
		func(w http.ResponseWriter, flush func(), done <-chan struct{}) {
			fmt.Fprint(w, ev("5", "build:step", `{"buildId":"b-1","step":"extract","status":"finished","attempt":1,"durationMs":12,"detail":"3 files"}`, "\r\n"))
			fmt.Fprint(w, "id: 6\r\nevent: build:step\r\ndata: {\"buildId\":\"b-1\",\r\ndata: \"step\":\"install\",\"status\":\"finished\",\"durationMs\":2300}\r\n\r\n")
			flush()
		},
		// 3: the rest.
		func(w http.ResponseWriter, flush func(), done <-chan struct{}) {
			fmt.Fprint(w, ev("7", "build:retrying", `{"buildId":"b-1","attempt":1,"step":"build","error":"runner lost","retryInMs":1000}`, "\n"))
			fmt.Fprint(w, ev("8", "build:completed", `{"buildId":"b-2","status":"success","url":"https://wrong.example"}`, "\n"))
			fmt.Fprint(w, ": keepalive\n\n")
			fmt.Fprint(w, ev("9", "build:completed", `{"buildId":"b-1","status":"success","deploymentId":"d-9","url":"https://acme.zipship.dev","deploymentUrl":"https://b-1.acme.zipship.dev"}`, "\n"))
			fmt.Fprint(w, ev("10", "deployment:activated", `{"tenantId":"acme","buildId":"b-1","deploymentId":"d-9","version":"v2","url":"https://acme.zipship.dev","previous":"b-0"}`, "\n"))
			flush()
			<-done // hold the stream open: Follow must return on its own
		},
	}}
	ts := httptest.NewServer(srv)
	defer ts.Close()

	var got []Event
	c := newTestClient(ts.URL)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := c.Follow(ctx, "acme", "b-1", "/api/tenants/acme/events?after=0", func(e Event) { got = append(got, e) })
	if err != nil {
		t.Fatalf("Follow: %v", err)
	}

	want := Outcome{Status: StatusSuccess, URL: "https://acme.zipship.dev", DeploymentURL: "https://b-1.acme.zipship.dev", DeploymentID: "d-9"}
	if *out != want {
		t.Errorf("outcome = %+v, want %+v", *out, want)
	}
	var ids []string
	for _, e := range got {
		ids = append(ids, e.ID+" "+e.Name)
	}
	wantIDs := []string{"2 build:started", "3 build:step", "5 build:step", "6 build:step", "7 build:retrying", "9 build:completed"}
	if !slices.Equal(ids, wantIDs) {
		t.Errorf("handled events =\n  %q\nwant\n  %q", ids, wantIDs)
	}
	if len(got) == len(wantIDs) {
		var step BuildStep
		if err := json.Unmarshal(got[3].Data, &step); err != nil || step.Step != "install" || step.DurationMs != 2300 {
			t.Errorf("multi-line data event: %s (%v)", got[3].Data, err)
		}
	}

	lastIDs, queries, _ := srv.seen()
	if !slices.Equal(lastIDs, []string{"", "5", "6"}) {
		t.Errorf("Last-Event-ID per connection = %q, want [\"\" 5 6]", lastIDs)
	}
	for i, q := range queries {
		if q != "after=0" {
			t.Errorf("connection %d: query %q, want after=0", i, q)
		}
	}
	srv.mu.Lock()
	for i := range srv.accepts {
		if srv.accepts[i] != "text/event-stream" || srv.auths[i] != "Bearer jwt" {
			t.Errorf("connection %d: Accept %q, Authorization %q", i, srv.accepts[i], srv.auths[i])
		}
	}
	srv.mu.Unlock()
}

func TestFollowFailure(t *testing.T) {
	srv := &sseServer{t: t, conns: []func(http.ResponseWriter, func(), <-chan struct{}){
		func(w http.ResponseWriter, flush func(), done <-chan struct{}) {
			fmt.Fprint(w, ev("1", "build:started", `{"buildId":"b-1","attempt":1}`, "\n"))
			fmt.Fprint(w, ev("2", "build:failed", `{"buildId":"b-2","step":"extract","error":"other build"}`, "\n"))
			fmt.Fprint(w, ev("3", "build:failed", `{"buildId":"b-1","step":"build","error":"npm ERR! missing script: build","retryable":false}`, "\n"))
			flush()
			<-done
		},
	}}
	ts := httptest.NewServer(srv)
	defer ts.Close()

	var names []string
	out, err := newTestClient(ts.URL).Follow(context.Background(), "acme", "b-1", "", func(e Event) { names = append(names, e.Name) })
	if err != nil {
		t.Fatalf("Follow: %v", err)
	}
	want := Outcome{Status: StatusFailed, Step: "build", Error: "npm ERR! missing script: build"}
	if *out != want {
		t.Errorf("outcome = %+v, want %+v", *out, want)
	}
	if !slices.Equal(names, []string{"build:started", "build:failed"}) {
		t.Errorf("events = %q", names)
	}
}

func TestFollowPollsWhenStreamIsSilent(t *testing.T) {
	srv := &sseServer{t: t,
		conns: []func(http.ResponseWriter, func(), <-chan struct{}){
			func(w http.ResponseWriter, flush func(), done <-chan struct{}) {
				// Only keepalives: the events went missing somewhere.
				for range 100 {
					fmt.Fprint(w, ": keepalive\n\n")
					flush()
					select {
					case <-done:
						return
					case <-time.After(20 * time.Millisecond):
					}
				}
			},
		},
		build: `{"id":"b-1","status":"success","url":"https://acme.zipship.dev"}`,
	}
	ts := httptest.NewServer(srv)
	defer ts.Close()

	c := newTestClient(ts.URL)
	c.idleTimeout = 150 * time.Millisecond
	start := time.Now()
	out, err := c.Follow(context.Background(), "acme", "b-1", "", nil)
	if err != nil {
		t.Fatalf("Follow: %v", err)
	}
	if out.Status != StatusSuccess || out.URL != "https://acme.zipship.dev" {
		t.Errorf("outcome = %+v", *out)
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("returned after %v, before the idle timeout", d)
	}
	if _, _, polls := srv.seen(); polls != 1 {
		t.Errorf("build polled %d times, want 1", polls)
	}
}

func TestFollowFallsBackToPollingAfterReconnects(t *testing.T) {
	srv := &sseServer{t: t,
		eventsStatus: http.StatusServiceUnavailable,
		build:        `{"id":"b-1","status":"failed","error":{"step":"install","message":"npm ci failed","retryable":true}}`,
	}
	ts := httptest.NewServer(srv)
	defer ts.Close()

	out, err := newTestClient(ts.URL).Follow(context.Background(), "acme", "b-1", "", nil)
	if err != nil {
		t.Fatalf("Follow: %v", err)
	}
	want := Outcome{Status: StatusFailed, Step: "install", Error: "npm ci failed", Retryable: true}
	if *out != want {
		t.Errorf("outcome = %+v, want %+v", *out, want)
	}
	if lastIDs, _, _ := srv.seen(); len(lastIDs) != 1+MaxReconnects {
		t.Errorf("events requested %d times, want 1+%d", len(lastIDs), MaxReconnects)
	}
}

func TestFollowUnauthorized(t *testing.T) {
	srv := &sseServer{t: t, eventsStatus: http.StatusUnauthorized, buildStatus: http.StatusUnauthorized}
	ts := httptest.NewServer(srv)
	defer ts.Close()

	_, err := newTestClient(ts.URL).Follow(context.Background(), "acme", "b-1", "", nil)
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusUnauthorized {
		t.Fatalf("err = %v, want a 401 APIError", err)
	}
	if lastIDs, _, polls := srv.seen(); len(lastIDs) != 1 || polls != 1 {
		t.Errorf("events requested %d times, build %d times; want 1 each (no retry on 401)", len(lastIDs), polls)
	}
}

func TestFollowCancelled(t *testing.T) {
	srv := &sseServer{t: t, conns: []func(http.ResponseWriter, func(), <-chan struct{}){
		func(w http.ResponseWriter, flush func(), done <-chan struct{}) { <-done },
	}}
	ts := httptest.NewServer(srv)
	defer ts.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := newTestClient(ts.URL).Follow(ctx, "acme", "b-1", "", nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want context.DeadlineExceeded", err)
	}
}

func TestReadSSE(t *testing.T) {
	in := strings.Join([]string{
		": comment",
		"retry: 1000",
		"id: 1",
		"event: a",
		"data:no-space",
		"",
		"event: no-data", // not dispatched
		"",
		"data",       // field without colon: empty value
		"data:  two", // only one space is dropped
		"",
		"id: 3\revent: cr\rdata: x\r\r",
		"id: 4",
		"data: cut off", // no blank line: not dispatched
	}, "\n")
	var got []Event
	if err := readSSE(strings.NewReader(in), func(e Event) bool { got = append(got, e); return true }); err != nil {
		t.Fatal(err)
	}
	want := []Event{
		{ID: "1", Name: "a", Data: json.RawMessage("no-space")},
		{ID: "", Name: "message", Data: json.RawMessage("\n two")},
		{ID: "3", Name: "cr", Data: json.RawMessage("x")},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d events %q, want %d", len(got), got, len(want))
	}
	for i := range want {
		if got[i].ID != want[i].ID || got[i].Name != want[i].Name || string(got[i].Data) != string(want[i].Data) {
			t.Errorf("event %d = {%q %q %q}, want {%q %q %q}", i, got[i].ID, got[i].Name, got[i].Data, want[i].ID, want[i].Name, want[i].Data)
		}
	}

	long := strings.Repeat("x", 1<<20)
	got = nil
	if err := readSSE(strings.NewReader("data: "+long+"\n\n"), func(e Event) bool { got = append(got, e); return true }); err != nil {
		t.Fatalf("1 MiB line: %v", err)
	}
	if len(got) != 1 || len(got[0].Data) != len(long) {
		t.Errorf("1 MiB line: %d events", len(got))
	}
}

func TestEventDecode(t *testing.T) {
	e := Event{ID: "5", Name: EventBuildStep, Data: json.RawMessage(`{"buildId":"b-1","step":"extract","status":"finished","attempt":2,"durationMs":12,"detail":"3 files"}`)}
	v, err := e.Decode()
	if err != nil {
		t.Fatal(err)
	}
	step, ok := v.(*BuildStep)
	if !ok || *step != (BuildStep{BuildID: "b-1", Step: "extract", Status: StepFinished, Attempt: 2, DurationMs: 12, Detail: "3 files"}) {
		t.Errorf("Decode = %#v", v)
	}
	if e.BuildID() != "b-1" {
		t.Errorf("BuildID = %q", e.BuildID())
	}
	if _, err := (Event{Name: "tenant:renamed", Data: json.RawMessage(`{}`)}).Decode(); err == nil {
		t.Error("unknown name: no error")
	}
	if (Event{Data: json.RawMessage(`not json`)}).BuildID() != "" {
		t.Error("BuildID of bad JSON not empty")
	}
}
