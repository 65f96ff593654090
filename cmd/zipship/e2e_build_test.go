package main

import (
	"archive/zip"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The other end-to-end tests run serve without the build sandbox: static
// sites need none, and TestEndToEnd checks how a server without one refuses
// an npm project. TestEndToEndNPMBuilds turns it on for its own server.
// viteApp is a Vite app with a vanilla JS entry: vite is its only
// dependency, to keep the install short.
var viteApp = map[string]string{
	"package.json": `{
  "name": "zipship-e2e-vite",
  "private": true,
  "type": "module",
  "scripts": { "build": "vite build" },
  "devDependencies": { "vite": "^8.0.0" }
}
`,
	"index.html": `<!doctype html>
<html lang="en">
  <head><meta charset="UTF-8"><title>zipship vite e2e</title></head>
  <body>
    <div id="app"></div>
    <script type="module" src="/src/main.js"></script>
  </body>
</html>
`,
	"src/main.js": `import './style.css'
document.querySelector('#app').textContent = 'hello from vite: ' + import.meta.env.VITE_GREETING
`,
	"src/style.css":     "#app { font-family: sans-serif; color: rebeccapurple; }\n",
	"public/robots.txt": "User-agent: *\n",
}

// TestEndToEndNPMBuilds deploys projects that need a build through
// `zipship serve` (its own containerd, the sandbox, the egress proxy to the
// real npm registry) and the real CLI: a Vite app, then a plain npm project
// whose package.json sits in a folder of the ZIP.
func TestEndToEndNPMBuilds(t *testing.T) {
	t.Setenv("ZIPSHIP_SANDBOX", "on")
	dataDir := t.TempDir()
	token := mintToken(t, dataDir, "alice")
	s := newServer(t, dataDir)
	host := "acme.localhost:" + s.edgePort
	if code := s.call("POST", "/api/tenants", token, map[string]string{"tenantId": "acme", "name": "Acme"}, nil); code != 201 {
		t.Fatalf("create tenant: %d", code)
	}

	// The Vite app, with a variable from buildConfig rendered into its
	// entry script.
	app := filepath.Join(t.TempDir(), "vite-app")
	writeSite(t, app, viteApp)
	began := time.Now()
	out, errOut, code := zipship(t, "deploy", app, "--tenant", "acme", "--server", s.api, "--token", token,
		"--config", `{"environmentVariables":{"VITE_GREETING":"greetings-e2e-2"}}`)
	t.Logf("vite deploy took %s:\n%s", time.Since(began).Round(time.Millisecond), errOut)
	if code != 0 {
		t.Fatalf("deploy vite app: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	for _, want := range []string{"detect", "Vite ^8.0.0", "install", "vite 8.", "build", "npm run build: exit 0", "export", "dist/: "} {
		if !strings.Contains(errOut, want) {
			t.Errorf("deploy progress lacks %q", want)
		}
	}
	code, index, hdr := s.page(host, "/")
	if code != 200 || !strings.Contains(index, "<title>zipship vite e2e</title>") {
		t.Fatalf("live index: %d %q", code, index)
	}
	if strings.Contains(hdr.Get("Cache-Control"), "immutable") {
		t.Errorf("index.html is cached as immutable: %q", hdr.Get("Cache-Control"))
	}
	script := regexp.MustCompile(`<script type="module" crossorigin src="(/assets/index-[A-Za-z0-9_-]+\.js)"></script>`).FindStringSubmatch(index)
	if script == nil {
		t.Fatalf("the built index.html has no hashed entry script:\n%s", index)
	}
	code, js, hdr := s.page(host, script[1])
	if code != 200 || !strings.Contains(js, "hello from vite: ") || !strings.Contains(js, "greetings-e2e-2") {
		t.Fatalf("GET %s: %d %q", script[1], code, js)
	}
	if cc := hdr.Get("Cache-Control"); !strings.Contains(cc, "immutable") || !strings.Contains(cc, "max-age=31536000") {
		t.Errorf("GET %s: Cache-Control %q, want immutable", script[1], cc)
	}
	if !strings.Contains(hdr.Get("Content-Type"), "javascript") {
		t.Errorf("GET %s: Content-Type %q", script[1], hdr.Get("Content-Type"))
	}
	css := regexp.MustCompile(`href="(/assets/index-[A-Za-z0-9_-]+\.css)"`).FindStringSubmatch(index)
	if css == nil {
		t.Errorf("the built index.html links no hashed stylesheet:\n%s", index)
	} else if code, body, hdr := s.page(host, css[1]); code != 200 || !strings.Contains(body, "font-family:sans-serif") ||
		!strings.Contains(hdr.Get("Cache-Control"), "immutable") {
		t.Errorf("GET %s: %d %q, Cache-Control %q", css[1], code, body, hdr.Get("Cache-Control"))
	}
	if code, body, _ := s.page(host, "/robots.txt"); code != 200 || !strings.Contains(body, "User-agent") {
		t.Errorf("public/robots.txt: %d %q", code, body)
	}
	for _, p := range []string{"/src/main.js", "/package.json", "/node_modules/vite/package.json"} {
		if code, _, _ := s.page(host, p); code != 404 {
			t.Errorf("%s is published: %d", p, code)
		}
	}

	// The build's output is in its log; the variable's value is not.
	var listed struct {
		Data struct {
			Builds []struct{ ID string } `json:"builds"`
		} `json:"data"`
	}
	s.call("GET", "/api/builds/acme", token, nil, &listed)
	if len(listed.Data.Builds) == 0 {
		t.Fatal("no builds listed")
	}
	req, _ := http.NewRequest("GET", s.api+"/api/builds/acme/"+listed.Data.Builds[0].ID+"/logs", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	logText, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(logText), "system $ npm run build") ||
		!strings.Contains(string(logText), "built in") || strings.Contains(string(logText), "greetings-e2e-2") {
		t.Errorf("build log: %d\n%s", resp.StatusCode, logText)
	}

	// A project in a folder of the ZIP (a .zip sent as it is).
	zipPath := filepath.Join(t.TempDir(), "nested.zip")
	writeZip(t, zipPath, map[string]string{
		"README.md":          "the app is in myapp/",
		"myapp/package.json": `{"name":"nested","private":true,"scripts":{"build":"node build.js"}}`,
		"myapp/build.js": `const fs = require('fs')
fs.mkdirSync('out/docs', { recursive: true })
fs.writeFileSync('out/index.html', '<h1>nested build for ' + process.env.NEXT_PUBLIC_TENANT_ID + '</h1>')
fs.writeFileSync('out/docs/index.html', '<p>docs</p>')
`,
	})
	began = time.Now()
	out, errOut, code = deploy(t, s, token, "acme", zipPath)
	t.Logf("nested deploy took %s:\n%s", time.Since(began).Round(time.Millisecond), errOut)
	if code != 0 {
		t.Fatalf("deploy nested project: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	for _, want := range []string{"package.json at myapp/package.json", "in myapp/: no known framework", "out/: 2 files"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("deploy progress lacks %q", want)
		}
	}
	if code, body, _ := s.page(host, "/"); code != 200 || !strings.Contains(body, "nested build for acme") {
		t.Errorf("live site after the nested deploy: %d %q", code, body)
	}
	if code, body, _ := s.page(host, "/docs/"); code != 200 || !strings.Contains(body, "docs") {
		t.Errorf("/docs/: %d %q", code, body)
	}

	// The stored build log of the last build.
	var builds struct {
		Data struct {
			Builds []struct{ ID, Status string } `json:"builds"`
		} `json:"data"`
	}
	s.call("GET", "/api/builds/acme", token, nil, &builds)
	if len(builds.Data.Builds) != 2 || builds.Data.Builds[0].Status != "success" || builds.Data.Builds[1].Status != "success" {
		t.Fatalf("builds: %+v", builds.Data.Builds)
	}
	log := filepath.Join(dataDir, "blobs", "tenants", "acme", "builds", builds.Data.Builds[1].ID, "build.log")
	if b, err := os.ReadFile(log); err != nil || !strings.Contains(string(b), "$ npm run build") ||
		!strings.Contains(string(b), "vite") || strings.Contains(string(b), "greetings-e2e") {
		t.Errorf("stored log of the vite build (%v):\n%s", err, b)
	}

	// SIGTERM: serve stops its containerd too, and leaves no job network
	// pinned.
	s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- s.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve after SIGTERM: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop after SIGTERM")
	}
	if !strings.Contains(s.logs.String(), "private containerd stopped") {
		t.Errorf("serve did not stop its containerd")
	}
	if ents, err := os.ReadDir(filepath.Join(dataDir, "netns")); err != nil || len(ents) != 0 {
		t.Errorf("netns dir: %v, %v", ents, err)
	}
}

// writeZip writes a ZIP of files to path.
func writeZip(t *testing.T, path string, files map[string]string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	zw := zip.NewWriter(f)
	for name, content := range files {
		w, err := zw.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(w, content); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}
