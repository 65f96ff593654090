package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countingBody counts the bytes the handler reads from the request.
type countingBody struct {
	io.ReadCloser
	n int64
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n += int64(n)
	return n, err
}

// uploadServer checks an upload like the real server would and records
// what it saw.
type uploadServer struct {
	status int // answer; 0 means 202

	mu            sync.Mutex
	contentLength int64
	bodyBytes     int64
	chunked       bool
	parts         map[string][]byte
	fileName      string
	fileType      string
	auth          string
	idemKey       string
	path          string
}

func (s *uploadServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body := &countingBody{ReadCloser: r.Body}
	r.Body = body
	mr, err := r.MultipartReader()
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	parts := make(map[string][]byte)
	var fileName, fileType string
	for {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		data, err := io.ReadAll(p)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		parts[p.FormName()] = data
		if p.FormName() == "file" {
			fileName, fileType = p.FileName(), p.Header.Get("Content-Type")
		}
	}
	// Read what the multipart reader may have left (the final CRLF).
	_, _ = io.Copy(io.Discard, r.Body)

	s.mu.Lock()
	s.contentLength = r.ContentLength
	s.bodyBytes = body.n
	s.chunked = len(r.TransferEncoding) > 0 && r.TransferEncoding[0] == "chunked"
	s.parts = parts
	s.fileName, s.fileType = fileName, fileType
	s.auth = r.Header.Get("Authorization")
	s.idemKey = r.Header.Get("Idempotency-Key")
	s.path = r.URL.Path
	s.mu.Unlock()

	status := s.status
	if status == 0 {
		status = http.StatusAccepted
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprint(w, `{"success":true,"message":"build queued","data":{"build":{"id":"b-1","tenantId":"acme","version":"v1733000000","status":"pending"}},"links":{"self":"/api/builds/acme/b-1","events":"/api/tenants/acme/events?after=41","logs":"/api/builds/acme/b-1/logs"}}`)
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// progressLog records progress calls (they come from another goroutine).
type progressLog struct {
	mu    sync.Mutex
	calls []int64
}

func (p *progressLog) add(n int64) {
	p.mu.Lock()
	p.calls = append(p.calls, n)
	p.mu.Unlock()
}

func (p *progressLog) get() []int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]int64(nil), p.calls...)
}

func TestUpload(t *testing.T) {
	zipData := randomBytes(t, 300<<10)
	cfg := []byte(`{"framework":"vite","buildCommand":"npm run build"}`)

	for _, tc := range []struct {
		name    string
		size    int64 // passed to Upload
		cfg     []byte
		status  int
		chunked bool
	}{
		{name: "known size with config", size: int64(len(zipData)), cfg: cfg, status: http.StatusAccepted},
		{name: "known size without config", size: int64(len(zipData)), status: http.StatusAccepted},
		{name: "unknown size", size: -1, cfg: cfg, status: http.StatusAccepted, chunked: true},
		{name: "idempotent replay", size: int64(len(zipData)), cfg: cfg, status: http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := &uploadServer{status: tc.status}
			ts := httptest.NewServer(srv)
			defer ts.Close()

			c := &Client{Server: ts.URL + "/", Token: "secret-jwt"}
			var progress progressLog
			res, err := c.Upload(context.Background(), "acme", bytes.NewReader(zipData), tc.size, tc.cfg, "key-123", progress.add)
			if err != nil {
				t.Fatalf("Upload: %v", err)
			}
			want := UploadResult{BuildID: "b-1", TenantID: "acme", Version: "v1733000000", Status: "pending",
				EventsURL: "/api/tenants/acme/events?after=41", SelfURL: "/api/builds/acme/b-1", Replayed: tc.status == http.StatusOK}
			if *res != want {
				t.Errorf("result = %+v, want %+v", *res, want)
			}

			srv.mu.Lock()
			defer srv.mu.Unlock()
			if srv.path != "/api/builds/acme" {
				t.Errorf("path = %q", srv.path)
			}
			if srv.auth != "Bearer secret-jwt" {
				t.Errorf("Authorization = %q", srv.auth)
			}
			if srv.idemKey != "key-123" {
				t.Errorf("Idempotency-Key = %q", srv.idemKey)
			}
			if tc.chunked {
				if srv.contentLength != -1 || !srv.chunked {
					t.Errorf("unknown size: Content-Length %d, chunked %v; want -1, true", srv.contentLength, srv.chunked)
				}
			} else if srv.contentLength != srv.bodyBytes {
				t.Errorf("Content-Length = %d, but %d bytes were sent", srv.contentLength, srv.bodyBytes)
			}
			if !bytes.Equal(srv.parts["file"], zipData) {
				t.Errorf("file part: %d bytes, differs from the %d sent", len(srv.parts["file"]), len(zipData))
			}
			if srv.fileName != "site.zip" || srv.fileType != "application/zip" {
				t.Errorf("file part: filename %q, type %q", srv.fileName, srv.fileType)
			}
			got, hasCfg := srv.parts["buildConfig"]
			if tc.cfg == nil && hasCfg {
				t.Errorf("buildConfig part sent without a config: %q", got)
			}
			if tc.cfg != nil && !bytes.Equal(got, tc.cfg) {
				t.Errorf("buildConfig = %q, want %q", got, tc.cfg)
			}
			wantParts := 1
			if tc.cfg != nil {
				wantParts = 2
			}
			if len(srv.parts) != wantParts {
				t.Errorf("parts = %d, want file and (optional) buildConfig only", len(srv.parts))
			}

			calls := progress.get()
			if len(calls) < 2 {
				t.Fatalf("progress called %d times, want several", len(calls))
			}
			for i := 1; i < len(calls); i++ {
				if calls[i] < calls[i-1] {
					t.Fatalf("progress went back: %v", calls)
				}
			}
			if last := calls[len(calls)-1]; last != int64(len(zipData)) {
				t.Errorf("last progress = %d, want %d", last, len(zipData))
			}
		})
	}
}

func TestUploadAPIError(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		status     int
		want       APIError
		wantText   string
	}{
		{
			name: "documented json", status: http.StatusRequestEntityTooLarge,
			body:     `{"error":"payload_too_large","message":"upload exceeds 100 MB"}`,
			want:     APIError{Status: 413, Code: "payload_too_large", Message: "upload exceeds 100 MB"},
			wantText: "413 payload_too_large: upload exceeds 100 MB",
		},
		{
			name: "proxy html", status: http.StatusBadGateway,
			body:     "<html>\n<h1>502 Bad Gateway</h1>\n</html>\n",
			want:     APIError{Status: 502, Message: "<html> <h1>502 Bad Gateway</h1> </html>"},
			wantText: "502: <html> <h1>502 Bad Gateway</h1> </html>",
		},
		{
			name: "empty body", status: http.StatusUnauthorized,
			want:     APIError{Status: 401},
			wantText: "401 Unauthorized",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tc.status)
				fmt.Fprint(w, tc.body)
			}))
			defer ts.Close()
			c := &Client{Server: ts.URL, Token: "t"}
			_, err := c.Upload(context.Background(), "acme", strings.NewReader("PK"), 2, nil, "", nil)
			var apiErr *APIError
			if !errors.As(err, &apiErr) {
				t.Fatalf("err = %v (%T), want *APIError", err, err)
			}
			if *apiErr != tc.want {
				t.Errorf("APIError = %+v, want %+v", *apiErr, tc.want)
			}
			if apiErr.Error() != tc.wantText {
				t.Errorf("Error() = %q, want %q", apiErr.Error(), tc.wantText)
			}
		})
	}
}

// TestUploadEarlyRejection: the server refuses from the headers alone
// (as it does for a too large Content-Length). Upload must return the
// APIError quickly, without sending the body.
func TestUploadEarlyRejection(t *testing.T) {
	const size = 64 << 20
	var gotLength atomic.Int64
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotLength.Store(r.ContentLength)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusRequestEntityTooLarge)
		fmt.Fprint(w, `{"error":"payload_too_large","message":"upload exceeds 100 MB"}`)
	}))
	defer ts.Close()

	var progress progressLog
	var sent recordingTransport
	c := &Client{Server: ts.URL, Token: "t", HTTP: &http.Client{Transport: &sent}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := c.Upload(ctx, "acme", io.LimitReader(zeroReader{}, size), size, nil, "k", progress.add)
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusRequestEntityTooLarge {
		t.Fatalf("err = %v, want a 413 APIError", err)
	}
	if got := gotLength.Load(); got <= size {
		t.Errorf("server saw Content-Length %d, want more than the %d-byte zip", got, size)
	}
	// With "Expect: 100-continue" the transport waits for the server's
	// go-ahead, which never comes: no byte of the ZIP is sent.
	if got := sent.header().Get("Expect"); got != "100-continue" {
		t.Errorf("Expect = %q, want 100-continue", got)
	}
	if calls := progress.get(); len(calls) > 0 && calls[len(calls)-1] >= size/2 {
		t.Errorf("progress reached %d of %d: the body was sent anyway", calls[len(calls)-1], size)
	}
}

// recordingTransport records the headers of the last request it sends.
type recordingTransport struct {
	mu sync.Mutex
	h  http.Header
}

func (r *recordingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	r.mu.Lock()
	r.h = req.Header.Clone()
	r.mu.Unlock()
	return http.DefaultTransport.RoundTrip(req)
}

func (r *recordingTransport) header() http.Header {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.h
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func TestUploadSizeMismatch(t *testing.T) {
	srv := &uploadServer{}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	c := &Client{Server: ts.URL, Token: "t"}

	_, err := c.Upload(context.Background(), "acme", strings.NewReader("short"), 100, nil, "", nil)
	if err == nil || !strings.Contains(err.Error(), "expected 100") {
		t.Errorf("shorter zip: err = %v", err)
	}
	_, err = c.Upload(context.Background(), "acme", strings.NewReader("longer than two"), 2, nil, "", nil)
	if err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Errorf("longer zip: err = %v", err)
	}
}

func TestUploadBadInput(t *testing.T) {
	c := &Client{Server: "http://127.0.0.1:1", Token: "t"}
	if _, err := c.Upload(context.Background(), "", strings.NewReader("x"), 1, nil, "", nil); err == nil {
		t.Error("no tenant: no error")
	}
	if _, err := c.Upload(context.Background(), "acme", strings.NewReader("x"), 1, []byte("{nope"), "", nil); err == nil {
		t.Error("invalid config JSON: no error")
	}
}

func TestAPIErrorObjectForm(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusForbidden)
		_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": "forbidden", "message": "not a member"}})
	}))
	defer ts.Close()
	c := &Client{Server: ts.URL, Token: "t"}
	_, err := c.GetBuild(context.Background(), "acme", "b-1")
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.Error() != "403 forbidden: not a member" {
		t.Fatalf("err = %v", err)
	}
}

// failingReader fails after yielding some bytes, like a file on a failing disk.
type failingReader struct{ n int }

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errors.New("disk on fire")
	}
	n := min(len(p), f.n)
	clear(p[:n])
	f.n -= n
	return n, nil
}

func TestUploadErrorsNameTheCause(t *testing.T) {
	// Nothing listens: the connection error is reported, not the pipe's.
	ts := httptest.NewServer(http.NotFoundHandler())
	addr := ts.URL
	ts.Close()
	c := &Client{Server: addr, Token: "t"}
	_, err := c.Upload(context.Background(), "acme", strings.NewReader("PK"), 2, nil, "", nil)
	if err == nil || strings.Contains(err.Error(), "closed pipe") || !IsTemporary(err) {
		t.Errorf("no server: err = %v (temporary %v), want the connection error", err, IsTemporary(err))
	}

	// The ZIP cannot be read: that is the error, and it is not temporary.
	srv := &uploadServer{}
	ts = httptest.NewServer(srv)
	defer ts.Close()
	c = &Client{Server: ts.URL, Token: "t"}
	_, err = c.Upload(context.Background(), "acme", &failingReader{n: 100 << 10}, 1<<20, nil, "", nil)
	if err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Errorf("failing zip: err = %v", err)
	}
}

func TestIsTemporary(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&APIError{Status: 503}, true},
		{&APIError{Status: 429}, true},
		{&APIError{Status: 408}, true},
		{fmt.Errorf("upload: %w", &APIError{Status: 413}), false},
		{&APIError{Status: 401}, false},
		{context.Canceled, false},
		{errors.New("read zip: boom"), false},
		{nil, false},
	} {
		if got := IsTemporary(tc.err); got != tc.want {
			t.Errorf("IsTemporary(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
