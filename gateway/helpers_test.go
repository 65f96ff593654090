package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zipship/zipship/archive/ziptest"

	"github.com/zipship/zipship/app"
	"github.com/zipship/zipship/auth"
	"github.com/zipship/zipship/buildlog"
	"github.com/zipship/zipship/domain"
	"github.com/zipship/zipship/gateway"
	"github.com/zipship/zipship/gateway/live"
	blobfs "github.com/zipship/zipship/infra/blob/fs"
	"github.com/zipship/zipship/infra/eventstore/sqlite"
	"github.com/zipship/zipship/projections"
	"github.com/zipship/zipship/runners"
)

// testSecret signs every token of the tests (auth wants at least 32 bytes).
var testSecret = []byte("gateway-test-secret-0123456789abcdef")

// testURLs is the URL builder the gateway and the hub get.
func testURLs(tenant, buildID string) (string, string) {
	live := "http://" + tenant + ".localhost:8081/"
	if buildID == "" {
		return live, ""
	}
	return live, "http://" + buildID + "--" + tenant + ".localhost:8081/"
}

// env is one gateway wired to real SQLite files, a real filesystem blob
// store, a running projector and a real HTTP server.
type env struct {
	t         *testing.T
	dir       string
	spool     string
	logs      *buildlog.Broker
	events    *sqlite.Store
	blobs     *blobfs.Store
	rm        *projections.DB
	projector *projections.Projector
	app       *app.App
	srv       *httptest.Server
	client    *http.Client
	log       *slog.Logger
}

// newEnv builds an env; tune may change the gateway's configuration
// (MaxUploadSize, ZipLimits, ...) before the gateway is created.
func newEnv(t *testing.T, tune ...func(*gateway.Config)) *env {
	t.Helper()
	dir := t.TempDir()
	log := slog.New(slog.DiscardHandler)
	if os.Getenv("GATEWAY_TEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	e := &env{t: t, dir: dir, spool: filepath.Join(dir, "blobs", ".tmp"), log: log}
	if err := os.MkdirAll(e.spool, 0o755); err != nil {
		t.Fatal(err)
	}

	var err error
	if e.events, err = sqlite.Open(filepath.Join(dir, "events.db")); err != nil {
		t.Fatalf("open event store: %v", err)
	}
	t.Cleanup(func() { e.events.Close() })
	if e.blobs, err = blobfs.New(filepath.Join(dir, "blobs")); err != nil {
		t.Fatalf("open blob store: %v", err)
	}
	t.Cleanup(func() { e.blobs.Close() })
	if e.rm, err = projections.Open(filepath.Join(dir, "rm.db")); err != nil {
		t.Fatalf("open read models: %v", err)
	}
	t.Cleanup(func() { e.rm.Close() })

	e.projector = projections.NewProjector(e.events, e.rm, log)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.projector.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("projector: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("projector did not stop")
		}
	})

	e.app = app.New(e.events, e.blobs, log)
	hub := live.NewHub(e.events, testURLs, log)
	e.logs = buildlog.NewBroker(e.blobs, log)
	cfg := gateway.Config{
		Secret:        testSecret,
		MaxUploadSize: 1 << 20,
		URLs:          testURLs,
		Logs:          e.logs,
		Log:           log,
	}
	for _, f := range tune {
		f(&cfg)
	}
	gw := gateway.New(e.app, e.rm, e.projector, hub, cfg)
	e.srv = httptest.NewServer(gw.Handler())
	t.Cleanup(e.srv.Close)
	e.client = e.srv.Client()
	e.client.Timeout = 10 * time.Second
	return e
}

// token mints a valid bearer token for user.
func (e *env) token(user string) string {
	e.t.Helper()
	tok, err := auth.Sign(testSecret, user, time.Hour, time.Now())
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

// response is an HTTP answer, read whole.
type response struct {
	status int
	header http.Header
	body   []byte
}

// decode unmarshals the body into v, failing the test if it is not JSON.
func (r response) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("status %d: body is not the expected JSON (%v): %s", r.status, err, r.body)
	}
}

// apiError is the JSON error body.
type apiError struct {
	Error   string `json:"error"`
	Message string `json:"message"`
}

// wantError checks an error answer: its status, its error code and that
// its message contains every string of contains.
func (r response) wantError(t *testing.T, status int, code string, contains ...string) apiError {
	t.Helper()
	if r.status != status {
		t.Fatalf("status = %d, want %d; body %s", r.status, status, r.body)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("Content-Type = %q, want JSON; body %s", ct, r.body)
	}
	var body apiError
	dec := json.NewDecoder(bytes.NewReader(r.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		t.Fatalf("error body %s: %v", r.body, err)
	}
	if body.Error != code {
		t.Fatalf("error = %q, want %q (message %q)", body.Error, code, body.Message)
	}
	if body.Message == "" {
		t.Fatalf("error %q has no message", code)
	}
	for _, s := range contains {
		if !strings.Contains(body.Message, s) {
			t.Fatalf("message %q does not contain %q", body.Message, s)
		}
	}
	return body
}

// wantStatus fails unless the answer has status.
func (r response) wantStatus(t *testing.T, status int) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status = %d, want %d; body %s", r.status, status, r.body)
	}
}

// request sends one request; user "" sends no Authorization header. hdr
// pairs are extra headers ("Name", "value", ...).
func (e *env) request(method, path, user string, body io.Reader, contentType string, hdr ...string) response {
	e.t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	if user != "" {
		req.Header.Set("Authorization", "Bearer "+e.token(user))
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return e.send(req)
}

// send sends req and reads the whole answer.
func (e *env) send(req *http.Request) response {
	e.t.Helper()
	res, err := e.client.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatalf("%s %s: read body: %v", req.Method, req.URL.Path, err)
	}
	return response{status: res.StatusCode, header: res.Header, body: b}
}

// stream GETs a live event stream (Accept: text/event-stream) with hdr
// pairs as extra headers. An error answer is read whole; a stream that
// opens is read for at most a second, so a test expecting an error fails
// quickly instead of hanging.
func (e *env) stream(path string, hdr ...string) response {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.srv.URL+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := e.client.Do(req)
	if err != nil {
		e.t.Fatalf("GET %s: %v", path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body) // a stream ends with the context
	return response{status: res.StatusCode, header: res.Header, body: b}
}

// json sends body (nil for none) as JSON.
func (e *env) json(method, path, user string, body any) response {
	e.t.Helper()
	var r io.Reader
	ct := ""
	switch b := body.(type) {
	case nil:
	case string:
		r, ct = strings.NewReader(b), "application/json"
	default:
		data, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		r, ct = bytes.NewReader(data), "application/json"
	}
	return e.request(method, path, user, r, ct)
}

// get is a GET by user.
func (e *env) get(path, user string) response {
	e.t.Helper()
	return e.request(http.MethodGet, path, user, nil, "")
}

// createTenant creates tenant with owner as its owner.
func (e *env) createTenant(owner, tenant string) {
	e.t.Helper()
	e.json(http.MethodPost, "/api/tenants", owner, map[string]string{"tenantId": tenant, "name": "Tenant " + tenant}).
		wantStatus(e.t, http.StatusCreated)
}

// addMember makes actor grant user role in tenant.
func (e *env) addMember(actor, tenant, user, role string) response {
	e.t.Helper()
	return e.json(http.MethodPost, "/api/tenants/"+tenant+"/members", actor, map[string]string{"userId": user, "role": role})
}

// head is the event store's newest position.
func (e *env) head() int64 {
	e.t.Helper()
	h, err := e.events.Head(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return h
}

// sync waits until the read models applied every stored event.
func (e *env) sync() {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.projector.WaitFor(ctx, e.head()); err != nil {
		e.t.Fatalf("read models: %v", err)
	}
}

// runBuild runs the static-site pipeline on build id inline, then waits for
// the read models.
func (e *env) runBuild(id string) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r := runners.New(e.app, runners.Config{Name: "test-runner", WorkDir: filepath.Join(e.dir, "work"), Log: e.log})
	if err := r.Handle(ctx, app.Meta{}, id); err != nil {
		e.t.Fatalf("run build %s: %v", id, err)
	}
	e.sync()
}

// blobKeys lists the stored keys under prefix.
func (e *env) blobKeys(prefix string) []string {
	e.t.Helper()
	infos, err := e.blobs.List(context.Background(), prefix)
	if err != nil {
		e.t.Fatal(err)
	}
	keys := make([]string, 0, len(infos))
	for _, i := range infos {
		keys = append(keys, i.Key)
	}
	return keys
}

// spoolFiles lists the spool directory.
func (e *env) spoolFiles() []string {
	e.t.Helper()
	ents, err := os.ReadDir(e.spool)
	if err != nil {
		e.t.Fatal(err)
	}
	var names []string
	for _, d := range ents {
		names = append(names, d.Name())
	}
	return names
}

// eventsTable returns the text of every stored event (data and metadata),
// read straight from the SQLite file.
func (e *env) eventsTable() string {
	e.t.Helper()
	db, err := sql.Open("sqlite", filepath.Join(e.dir, "events.db"))
	if err != nil {
		e.t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT stream, type, tenant, correlation_id, causation_id, traceparent, CAST(data AS TEXT) FROM events ORDER BY position`)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rows.Close()
	var b strings.Builder
	n := 0
	for rows.Next() {
		var cols [7]sql.NullString
		if err := rows.Scan(&cols[0], &cols[1], &cols[2], &cols[3], &cols[4], &cols[5], &cols[6]); err != nil {
			e.t.Fatal(err)
		}
		for _, c := range cols {
			b.WriteString(c.String)
			b.WriteByte('\t')
		}
		b.WriteByte('\n')
		n++
	}
	if err := rows.Err(); err != nil {
		e.t.Fatal(err)
	}
	if n == 0 {
		e.t.Fatal("events table is empty")
	}
	return b.String()
}

// eventually polls cond every 10 ms for up to d.
func eventually(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// nothingStored checks that a rejected upload left no trace: no build in
// the tenant's list, no event after head, no blob under tenants/, an empty
// spool directory.
func (e *env) nothingStored(t *testing.T, tenant, user string, head int64) {
	t.Helper()
	var spool []string
	if !eventually(2*time.Second, func() bool { spool = e.spoolFiles(); return len(spool) == 0 }) {
		t.Errorf("spool dir not empty: %v", spool)
	}
	if h := e.head(); h != head {
		t.Errorf("event store head moved from %d to %d", head, h)
	}
	if keys := e.blobKeys("tenants/"); len(keys) != 0 {
		t.Errorf("blobs left behind: %v", keys)
	}
	var list buildList
	r := e.get("/api/builds/"+tenant, user)
	r.wantStatus(t, http.StatusOK)
	r.decode(t, &list)
	if list.Data.Pagination.Total != 0 || len(list.Data.Builds) != 0 {
		t.Errorf("builds listed after a rejected upload: %s", r.body)
	}
}

// --- API shapes -------------------------------------------------------

type acceptedBody struct {
	Success bool   `json:"success"`
	Message string `json:"message"`
	Data    struct {
		Build struct {
			ID       string `json:"id"`
			TenantID string `json:"tenantId"`
			Version  string `json:"version"`
			Status   string `json:"status"`
		} `json:"build"`
	} `json:"data"`
	Links struct {
		Self   string `json:"self"`
		Events string `json:"events"`
	} `json:"links"`
}

type stepView struct {
	Name       string     `json:"name"`
	Attempt    int        `json:"attempt"`
	Status     string     `json:"status"`
	StartedAt  time.Time  `json:"startedAt"`
	FinishedAt *time.Time `json:"finishedAt"`
	DurationMs *int64     `json:"durationMs"`
	Detail     string     `json:"detail"`
}

type buildView struct {
	ID            string     `json:"id"`
	TenantID      string     `json:"tenantId"`
	Version       string     `json:"version"`
	Status        string     `json:"status"`
	RequestedBy   string     `json:"requestedBy"`
	SourceSize    int64      `json:"sourceSize"`
	SourceSHA256  string     `json:"sourceSha256"`
	EnvNames      []string   `json:"envNames"`
	Steps         []stepView `json:"steps"`
	URL           string     `json:"url"`
	DeploymentURL string     `json:"deploymentUrl"`
	Live          bool       `json:"live"`
	Error         *struct {
		Step      string `json:"step"`
		Message   string `json:"message"`
		Retryable bool   `json:"retryable"`
	} `json:"error"`
}

type buildBody struct {
	Success bool `json:"success"`
	Data    struct {
		Build buildView `json:"build"`
	} `json:"data"`
}

type pagination struct {
	Page     int `json:"page"`
	PageSize int `json:"pageSize"`
	Total    int `json:"total"`
}

type buildList struct {
	Success bool `json:"success"`
	Data    struct {
		Builds     []buildView `json:"builds"`
		Pagination pagination  `json:"pagination"`
	} `json:"data"`
}

type deploymentView struct {
	TenantID      string `json:"tenantId"`
	BuildID       string `json:"buildId"`
	Version       string `json:"version"`
	Kind          string `json:"kind"`
	Actor         string `json:"actor"`
	Previous      string `json:"previous"`
	DeploymentURL string `json:"deploymentUrl"`
}

type deploymentList struct {
	Success bool `json:"success"`
	Data    struct {
		Deployments []deploymentView `json:"deployments"`
		Pagination  pagination       `json:"pagination"`
		Current     *struct {
			BuildID string `json:"buildId"`
			Version string `json:"version"`
		} `json:"current"`
		URL string `json:"url"`
	} `json:"data"`
}

type auditEvent struct {
	Position int64           `json:"position"`
	ID       string          `json:"id"`
	Stream   string          `json:"stream"`
	Version  int64           `json:"version"`
	Type     string          `json:"type"`
	Time     string          `json:"time"`
	Data     json.RawMessage `json:"data"`
}

type auditBody struct {
	Success bool `json:"success"`
	Data    struct {
		Events []auditEvent `json:"events"`
		After  int64        `json:"after"`
		Next   *string      `json:"next"`
	} `json:"data"`
}

type tenantBody struct {
	Success bool `json:"success"`
	Data    struct {
		Tenant struct {
			ID      string `json:"id"`
			Name    string `json:"name"`
			Role    string `json:"role"`
			URL     string `json:"url"`
			Members []struct {
				UserID string `json:"userId"`
				Role   string `json:"role"`
			} `json:"members"`
		} `json:"tenant"`
	} `json:"data"`
}

// --- uploads ------------------------------------------------------------

// part is one multipart field.
type part struct {
	name, filename string
	data           []byte
}

// multipartBody encodes parts.
func multipartBody(t *testing.T, parts ...part) ([]byte, string) {
	t.Helper()
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	for _, p := range parts {
		h := textproto.MIMEHeader{}
		if p.filename != "" {
			h.Set("Content-Disposition", fmt.Sprintf(`form-data; name=%q; filename=%q`, p.name, p.filename))
			h.Set("Content-Type", "application/zip")
		} else {
			h.Set("Content-Disposition", fmt.Sprintf(`form-data; name=%q`, p.name))
		}
		w, err := mw.CreatePart(h)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(p.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes(), mw.FormDataContentType()
}

// filepart is the ZIP field.
func filePart(zip []byte) part { return part{name: "file", filename: "site.zip", data: zip} }

// configPart is the buildConfig field.
func configPart(cfg string) part { return part{name: "buildConfig", data: []byte(cfg)} }

// upload posts parts to tenant's builds as user; hdr as for request.
func (e *env) upload(tenant, user string, parts []part, hdr ...string) response {
	e.t.Helper()
	body, ct := multipartBody(e.t, parts...)
	return e.request(http.MethodPost, "/api/builds/"+tenant, user, bytes.NewReader(body), ct, hdr...)
}

// uploadZip uploads a ZIP without a build config and returns the 202 body.
func (e *env) uploadZip(tenant, user string, zip []byte) acceptedBody {
	e.t.Helper()
	r := e.upload(tenant, user, []part{filePart(zip)})
	r.wantStatus(e.t, http.StatusAccepted)
	var a acceptedBody
	r.decode(e.t, &a)
	return a
}

// getBuild reads one build through the API.
func (e *env) getBuild(tenant, user, id string) buildView {
	e.t.Helper()
	r := e.get("/api/builds/"+tenant+"/"+id, user)
	r.wantStatus(e.t, http.StatusOK)
	var b buildBody
	r.decode(e.t, &b)
	return b.Data.Build
}

// rawConn opens a plain TCP connection to the server.
func (e *env) rawConn() net.Conn {
	e.t.Helper()
	c, err := net.Dial("tcp", e.srv.Listener.Addr().String())
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	return c
}

// readRaw reads one HTTP answer from c within d.
func readRaw(t *testing.T, c net.Conn, d time.Duration) (*http.Response, []byte) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer within %v: %v", d, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("read answer body: %v", err)
	}
	return res, b
}

// --- ZIPs: the archive package's own builders (archive/ziptest) ---------

var (
	zfile      = ziptest.File
	zdir       = ziptest.Dir
	withMode   = ziptest.WithMode
	stored     = ziptest.Stored
	buildZip   = ziptest.Build
	overlapZip = ziptest.FifieldOverlap
)

// staticSite is a small static site ZIP; marker distinguishes versions.
func staticSite(t testing.TB, marker string) []byte {
	return buildZip(t,
		zfile("index.html", "<!doctype html><title>"+marker+"</title><h1>"+marker+"</h1>"),
		zfile("about/index.html", "<!doctype html><p>about "+marker+"</p>"),
		zfile("css/site.css", "body { margin: 0 }\n"),
	)
}

// stallProjector holds the read models' write lock for d, so the projector
// cannot apply anything meanwhile (its busy timeout is longer than d). It
// returns once the lock is held.
func (e *env) stallProjector(d time.Duration) {
	e.t.Helper()
	db, err := sql.Open("sqlite", filepath.Join(e.dir, "rm.db"))
	if err != nil {
		e.t.Fatal(err)
	}
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		db.Close()
		e.t.Fatal(err)
	}
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		conn.Close()
		db.Close()
		e.t.Fatal(err)
	}
	released := make(chan struct{})
	go func() {
		defer close(released)
		time.Sleep(d)
		conn.ExecContext(ctx, "ROLLBACK")
		conn.Close()
		db.Close()
	}()
	e.t.Cleanup(func() { <-released })
}

// sourceKey returns where the build's BuildRequested event says its source
// is stored.
func (e *env) sourceKey(t *testing.T, buildID string) string {
	t.Helper()
	b, err := e.app.Build(context.Background(), buildID)
	if err != nil {
		t.Fatal(err)
	}
	evs, err := e.events.ReadStream(context.Background(), domain.BuildStream(b.ID()), 1)
	if err != nil || len(evs) == 0 {
		t.Fatalf("read build stream: %v", err)
	}
	d, err := domain.Decode(evs[0].Type, evs[0].Data)
	if err != nil {
		t.Fatal(err)
	}
	return d.(domain.BuildRequested).Source.Key
}
