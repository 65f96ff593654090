package main

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
)

// binary is the zipship executable the end-to-end tests run as separate
// processes, built once by TestMain.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "zipship-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "zipship")
	out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build zipship: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// server is a `zipship serve` child process.
type server struct {
	t        *testing.T
	dataDir  string
	api      string // http://127.0.0.1:port
	edgeAddr string // 127.0.0.1:port
	edgePort string
	cmd      *exec.Cmd
	logs     *bytes.Buffer
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func newServer(t *testing.T, dataDir string) *server {
	apiAddr, edgeAddr := freeAddr(t), freeAddr(t)
	_, port, _ := net.SplitHostPort(edgeAddr)
	s := &server{t: t, dataDir: dataDir, api: "http://" + apiAddr, edgeAddr: edgeAddr, edgePort: port}
	s.start(apiAddr)
	return s
}

func (s *server) start(apiAddr string) {
	t := s.t
	t.Helper()
	s.logs = &bytes.Buffer{}
	s.cmd = exec.Command(binary, "serve", "--data-dir", s.dataDir, "--addr", apiAddr, "--edge-addr", s.edgeAddr)
	s.cmd.Env = append(os.Environ(), "ZIPSHIP_JWT_SECRET=")
	s.cmd.Stdout, s.cmd.Stderr = s.logs, s.logs
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if s.cmd.ProcessState == nil {
			s.cmd.Process.Kill()
			s.cmd.Wait()
		}
		if t.Failed() {
			t.Logf("serve logs:\n%s", s.logs.String())
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get(s.api + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve did not become healthy: %v\n%s", err, s.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// restart kills the process with SIGKILL and starts it again on the same
// addresses and data.
func (s *server) kill9AndRestart() {
	s.t.Helper()
	s.cmd.Process.Signal(syscall.SIGKILL)
	s.cmd.Wait()
	s.start(strings.TrimPrefix(s.api, "http://"))
}

// zipship runs the CLI and returns stdout, stderr and the exit code.
func zipship(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Env = append(os.Environ(), "ZIPSHIP_JWT_SECRET=", "ZIPSHIP_TOKEN=", "ZIPSHIP_SERVER=")
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run zipship %v: %v", args, err)
	}
	return stdout.String(), stderr.String(), code
}

func mintToken(t *testing.T, dataDir, user string) string {
	t.Helper()
	out, errOut, code := zipship(t, "token", "--user", user, "--data-dir", dataDir)
	if code != 0 {
		t.Fatalf("token: exit %d: %s", code, errOut)
	}
	tok := strings.TrimSpace(out)
	if strings.Count(tok, ".") != 2 || strings.Contains(tok, "\n") {
		t.Fatalf("token output %q is not a JWT alone", out)
	}
	return tok
}

// call does a JSON API request and decodes the answer into out (if not nil).
func (s *server) call(method, path, token string, body any, out any) int {
	s.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, s.api+path, rd)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			s.t.Fatalf("%s %s: %d %s: %v", method, path, resp.StatusCode, data, err)
		}
	}
	return resp.StatusCode
}

// page fetches a path of tenant's site through the edge.
func (s *server) page(host, path string) (int, string, http.Header) {
	s.t.Helper()
	req, _ := http.NewRequest("GET", "http://"+s.edgeAddr+path, nil)
	req.Host = host
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatalf("GET %s%s: %v", host, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func writeSite(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	os.RemoveAll(dir)
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func siteFiles(version string) map[string]string {
	return map[string]string{
		"index.html":               "<h1>home " + version + "</h1>",
		"about.html":               "<h1>about " + version + "</h1>",
		"404.html":                 "<h1>not found " + version + "</h1>",
		"assets/app-3f9a1c2b.js":   "console.log('" + version + "')",
		"node_modules/x/index.js":  "must not be uploaded",
		"docs/guide/index.html":    "<p>guide " + version + "</p>",
		".env.production.example":  "A=1",
		"dist/ignored-output.html": "skipped by deploy",
	}
}

type auditAnswer struct {
	Data struct {
		Events []struct {
			Position int64  `json:"position"`
			Type     string `json:"type"`
			Stream   string `json:"stream"`
		} `json:"events"`
	} `json:"data"`
}

func auditTypes(t *testing.T, s *server, tenant, token string) []string {
	t.Helper()
	var a auditAnswer
	if code := s.call("GET", "/api/tenants/"+tenant+"/audit?limit=1000", token, nil, &a); code != 200 {
		t.Fatalf("audit: %d", code)
	}
	var types []string
	last := int64(0)
	for _, e := range a.Data.Events {
		if e.Position <= last {
			t.Fatalf("audit positions not increasing: %d after %d", e.Position, last)
		}
		last = e.Position
		types = append(types, e.Type)
	}
	return types
}

func count(list []string, s string) int {
	n := 0
	for _, v := range list {
		if v == s {
			n++
		}
	}
	return n
}

func deploy(t *testing.T, s *server, token, tenant, path string) (string, string, int) {
	t.Helper()
	return zipship(t, "deploy", path, "--tenant", tenant, "--server", s.api, "--token", token)
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}

// TestEndToEnd drives the platform as a user would: separate processes,
// the real CLI, pages fetched through the edge after every step.
func TestEndToEnd(t *testing.T) {
	dataDir := t.TempDir()
	token := mintToken(t, dataDir, "alice") // before serve: the secret is created on demand
	s := newServer(t, dataDir)
	host := "acme.localhost:" + s.edgePort

	if code := s.call("POST", "/api/tenants", token, map[string]string{"tenantId": "acme", "name": "Acme"}, nil); code != 201 {
		t.Fatalf("create tenant: %d", code)
	}
	if code, _, _ := s.page(host, "/"); code != 404 {
		t.Fatalf("site before any deploy: %d, want 404", code)
	}

	site := filepath.Join(t.TempDir(), "site")
	writeSite(t, site, siteFiles("v1"))
	out, errOut, code := deploy(t, s, token, "acme", site)
	if code != 0 {
		t.Fatalf("deploy v1: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	wantURL := "http://acme.localhost:" + s.edgePort + "/"
	if got := lastLine(out); got != wantURL {
		t.Fatalf("deploy printed %q last, want the live URL %q", got, wantURL)
	}
	if strings.Contains(out+errOut, token) {
		t.Fatal("deploy printed the token")
	}
	checkPage := func(path string, wantCode int, want string) {
		t.Helper()
		code, body, _ := s.page(host, path)
		if code != wantCode || !strings.Contains(body, want) {
			t.Fatalf("GET %s%s = %d %q; want %d containing %q", host, path, code, body, wantCode, want)
		}
	}
	checkPage("/", 200, "home v1")
	checkPage("/about", 200, "about v1")
	checkPage("/docs/guide/", 200, "guide v1")
	checkPage("/nope", 404, "not found v1")
	checkPage("/assets/app-3f9a1c2b.js", 200, "v1")
	if code, _, _ := s.page(host, "/node_modules/x/index.js"); code != 404 {
		t.Fatalf("node_modules was uploaded: %d", code)
	}
	if code, _, _ := s.page(host, "/dist/ignored-output.html"); code != 404 {
		t.Fatalf("dist was uploaded: %d", code)
	}

	var builds struct {
		Data struct {
			Builds []struct {
				ID, Status, DeploymentURL string
			} `json:"builds"`
		} `json:"data"`
	}
	s.call("GET", "/api/builds/acme", token, nil, &builds)
	if len(builds.Data.Builds) != 1 || builds.Data.Builds[0].Status != "success" {
		t.Fatalf("builds after v1: %+v", builds.Data.Builds)
	}
	first := builds.Data.Builds[0]

	checkWebSocket(t, s, "acme", token, mintToken(t, dataDir, "mallory"))

	writeSite(t, site, siteFiles("v2"))
	out, errOut, code = deploy(t, s, token, "acme", site)
	if code != 0 || lastLine(out) != wantURL {
		t.Fatalf("deploy v2: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	checkPage("/", 200, "home v2")
	checkPage("/about", 200, "about v2")

	// The first version keeps its own permanent URL.
	permHost := strings.TrimSuffix(strings.TrimPrefix(first.DeploymentURL, "http://"), "/")
	if code, body, _ := s.page(permHost, "/"); code != 200 || !strings.Contains(body, "home v1") {
		t.Fatalf("permanent URL %s: %d %q", permHost, code, body)
	}

	var deps struct {
		Data struct {
			Deployments []struct{ BuildID, Kind, Previous string } `json:"deployments"`
		} `json:"data"`
	}
	s.call("GET", "/api/tenants/acme/deployments", token, nil, &deps)
	if len(deps.Data.Deployments) != 2 || deps.Data.Deployments[0].Previous != first.ID {
		t.Fatalf("deployments after v2: %+v", deps.Data.Deployments)
	}

	pointerFile := filepath.Join(dataDir, "blobs", "pointers", "acme", "current.json")
	pointerV2, err := os.ReadFile(pointerFile)
	if err != nil {
		t.Fatalf("pointer object: %v", err)
	}
	if code := s.call("POST", "/api/tenants/acme/rollback", token, map[string]string{"buildId": first.ID}, nil); code != 200 {
		t.Fatalf("rollback: %d", code)
	}
	checkPage("/", 200, "home v1")
	checkPage("/about", 200, "about v1")

	types := auditTypes(t, s, "acme", token)
	for typ, want := range map[string]int{"TenantCreated": 1, "BuildRequested": 2, "BuildSucceeded": 2,
		"DeploymentActivated": 2, "DeploymentRolledBack": 1} {
		if got := count(types, typ); got != want {
			t.Errorf("audit has %d %s, want %d (%v)", got, typ, want, types)
		}
	}
	if types[0] != "TenantCreated" || types[len(types)-1] != "DeploymentRolledBack" {
		t.Errorf("audit order: %v", types)
	}

	// A project whose build fails (vite is not a dependency) fails at the
	// build step in the sandbox, naming the step and the cause.
	proj := filepath.Join(t.TempDir(), "app")
	writeSite(t, proj, map[string]string{"package.json": `{"scripts":{"build":"vite build"}}`, "index.html": "x"})
	out, errOut, code = deploy(t, s, token, "acme", proj)
	if code != 1 || !strings.Contains(errOut, "deploy failed at step build") || !strings.Contains(errOut, "vite: not found") {
		t.Fatalf("deploy of a broken npm project: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	checkPage("/", 200, "home v1") // the failure did not touch the live site

	// The CLI returns on the live event; the read models follow a moment later.
	live := readModels(t, s, "acme", token)
	for deadline := time.Now().Add(5 * time.Second); strings.Contains(live, `"status":"building"`) || strings.Contains(live, `"status":"pending"`); {
		if time.Now().After(deadline) {
			t.Fatalf("builds still running: %s", live)
		}
		time.Sleep(20 * time.Millisecond)
		live = readModels(t, s, "acme", token)
	}

	// SIGTERM: a clean stop.
	s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- s.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve after SIGTERM: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not stop after SIGTERM")
	}

	// The read models rebuilt from the events equal the live ones.
	out, errOut, code = zipship(t, "projections", "rebuild", "--data-dir", dataDir)
	if code != 0 || !strings.Contains(out, "rebuilt read models from") {
		t.Fatalf("projections rebuild: exit %d\n%s%s", code, out, errOut)
	}
	// As if serve had died between the rollback's event and its pointer
	// write: the restart repairs the pointer from the site stream.
	if err := os.WriteFile(pointerFile, pointerV2, 0o644); err != nil {
		t.Fatal(err)
	}
	s.start(strings.TrimPrefix(s.api, "http://"))
	if rebuilt := readModels(t, s, "acme", token); rebuilt != live {
		t.Fatalf("read models differ after rebuild:\nlive:    %s\nrebuilt: %s", live, rebuilt)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, body, _ := s.page(host, "/"); strings.Contains(body, "home v1") {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("stale pointer not repaired at start: %q", body)
		}
	}
}

// readModels returns the API's view of tenant's builds and deployments.
func readModels(t *testing.T, s *server, tenant, token string) string {
	t.Helper()
	var builds, deps json.RawMessage
	if code := s.call("GET", "/api/builds/"+tenant+"?pageSize=100", token, nil, &builds); code != 200 {
		t.Fatalf("list builds: %d", code)
	}
	if code := s.call("GET", "/api/tenants/"+tenant+"/deployments?pageSize=100", token, nil, &deps); code != 200 {
		t.Fatalf("list deployments: %d", code)
	}
	return string(builds) + "\n" + string(deps)
}

// checkWebSocket follows the tenant's live events over a WebSocket
// authenticated by the access_token query parameter (as browsers must) and
// expects the first build's events; a non-member is refused with 404.
func checkWebSocket(t *testing.T, s *server, tenant, token, stranger string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws := "ws" + strings.TrimPrefix(s.api, "http") + "/api/tenants/" + tenant + "/events?after=0&access_token="
	_, resp, err := websocket.Dial(ctx, ws+stranger, nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("WebSocket for a non-member: %v, %v; want 404", resp, err)
	}
	conn, _, err := websocket.Dial(ctx, ws+token, nil)
	if err != nil {
		t.Fatalf("WebSocket: %v", err)
	}
	defer conn.CloseNow()
	var seen []string
	for {
		var msg struct {
			ID    int64           `json:"id"`
			Event string          `json:"event"`
			Data  json.RawMessage `json:"data"`
		}
		if err := wsjson.Read(ctx, conn, &msg); err != nil {
			t.Fatalf("WebSocket read after %v: %v", seen, err)
		}
		seen = append(seen, msg.Event)
		if msg.Event == "build:completed" {
			break
		}
	}
	if seen[0] != "build:started" || count(seen, "build:step") < 10 {
		t.Fatalf("WebSocket events: %v", seen)
	}
}

// TestKill9AfterAccept: a build acknowledged with 202 survives a SIGKILL of
// the server and finishes after the restart.
func TestKill9AfterAccept(t *testing.T) {
	dataDir := t.TempDir()
	token := mintToken(t, dataDir, "bob")
	s := newServer(t, dataDir)
	if code := s.call("POST", "/api/tenants", token, map[string]string{"tenantId": "crashy"}, nil); code != 201 {
		t.Fatalf("create tenant: %d", code)
	}
	var zbuf bytes.Buffer
	zw := zip.NewWriter(&zbuf)
	for i := 0; i < 200; i++ {
		w, _ := zw.Create(fmt.Sprintf("page%03d.html", i))
		fmt.Fprintf(w, "<p>page %d</p>", i)
	}
	w, _ := zw.Create("index.html")
	io.WriteString(w, "<h1>survived</h1>")
	zw.Close()

	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	fw, _ := mw.CreateFormFile("file", "site.zip")
	fw.Write(zbuf.Bytes())
	mw.Close()
	req, _ := http.NewRequest("POST", s.api+"/api/builds/crashy", &body)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var accepted struct {
		Data struct{ Build struct{ ID string } } `json:"data"`
	}
	json.NewDecoder(resp.Body).Decode(&accepted)
	resp.Body.Close()
	if resp.StatusCode != 202 || accepted.Data.Build.ID == "" {
		t.Fatalf("upload: %d %+v", resp.StatusCode, accepted)
	}
	s.kill9AndRestart()

	var got struct {
		Data struct {
			Build struct {
				Status string
				Error  *struct{ Step, Message string }
				Steps  []struct{ Name, Status string }
			} `json:"build"`
		} `json:"data"`
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		code := s.call("GET", "/api/builds/crashy/"+accepted.Data.Build.ID, token, nil, &got)
		if code != 200 {
			t.Fatalf("build lost after kill -9: GET answered %d", code)
		}
		if st := got.Data.Build.Status; st == "success" || st == "failed" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("build still %s 30 s after restart", got.Data.Build.Status)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got.Data.Build.Status != "success" {
		t.Fatalf("build after restart: %s, error %+v", got.Data.Build.Status, got.Data.Build.Error)
	}
	host := "crashy.localhost:" + s.edgePort
	if code, b, _ := s.page(host, "/"); code != 200 || !strings.Contains(b, "survived") {
		t.Fatalf("site after restart: %d %q", code, b)
	}
}

// TestSIGTERMDuringUpload: an upload in flight when serve gets SIGTERM is
// finished and acknowledged, and its build completes after the restart.
func TestSIGTERMDuringUpload(t *testing.T) {
	dataDir := t.TempDir()
	token := mintToken(t, dataDir, "carol")
	s := newServer(t, dataDir)
	if code := s.call("POST", "/api/tenants", token, map[string]string{"tenantId": "drain"}, nil); code != 201 {
		t.Fatalf("create tenant: %d", code)
	}
	var zbuf bytes.Buffer
	zw := zip.NewWriter(&zbuf)
	w, _ := zw.CreateHeader(&zip.FileHeader{Name: "big.bin", Method: zip.Store})
	w.Write(bytes.Repeat([]byte("0123456789abcdef"), 1<<16)) // 1 MiB
	w, _ = zw.Create("index.html")
	io.WriteString(w, "<h1>drained</h1>")
	zw.Close()
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	fw, _ := mw.CreateFormFile("file", "site.zip")
	fw.Write(zbuf.Bytes())
	mw.Close()
	all := body.Bytes()

	// Send the first half, SIGTERM, then the rest.
	pr, pw := io.Pipe()
	req, _ := http.NewRequest("POST", s.api+"/api/builds/drain", pr)
	req.ContentLength = int64(len(all))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	type result struct {
		code int
		id   string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- result{err: err}
			return
		}
		defer resp.Body.Close()
		var a struct {
			Data struct{ Build struct{ ID string } } `json:"data"`
		}
		json.NewDecoder(resp.Body).Decode(&a)
		done <- result{code: resp.StatusCode, id: a.Data.Build.ID}
	}()
	half := len(all) / 2
	if _, err := pw.Write(all[:half]); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	s.cmd.Process.Signal(syscall.SIGTERM)
	time.Sleep(300 * time.Millisecond)
	if _, err := pw.Write(all[half:]); err != nil {
		t.Fatalf("the server dropped the upload in flight: %v", err)
	}
	pw.Close()
	res := <-done
	if res.err != nil || res.code != http.StatusAccepted || res.id == "" {
		t.Fatalf("upload across SIGTERM: %+v", res)
	}
	if err := s.cmd.Wait(); err != nil {
		t.Fatalf("serve after SIGTERM: %v", err)
	}

	s.start(strings.TrimPrefix(s.api, "http://"))
	deadline := time.Now().Add(20 * time.Second)
	for {
		var got struct {
			Data struct{ Build struct{ Status string } } `json:"data"`
		}
		if code := s.call("GET", "/api/builds/drain/"+res.id, token, nil, &got); code != 200 {
			t.Fatalf("acknowledged build lost: GET answered %d", code)
		}
		if got.Data.Build.Status == "success" {
			break
		}
		if got.Data.Build.Status == "failed" || time.Now().After(deadline) {
			t.Fatalf("acknowledged build ended %q", got.Data.Build.Status)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code, b, _ := s.page("drain.localhost:"+s.edgePort, "/"); code != 200 || !strings.Contains(b, "drained") {
		t.Fatalf("site: %d %q", code, b)
	}
}
