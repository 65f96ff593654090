package runners_test

import (
	"context"
	"encoding/json"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/zipship/zipship/domain"
	"github.com/zipship/zipship/infra/blob"
	"github.com/zipship/zipship/infra/eventstore"
)

// End-to-end builds of the two frameworks zipship knows, through
// Runner.Handle with the real sandbox and the real npm registry behind the
// egress proxy: the published files, what the edge serves, and that the
// buildConfig variables' values never reach an event or the stored log.

// The versions are pinned, so that the tests build the same thing every
// time (these were the latest when the tests were written).
const (
	nextVersion        = "16.5.0"
	reactVersion       = "19.3.1"
	viteVersion        = "8.4.1"
	pluginReactVersion = "6.3.1"
)

// cacheImmutable is the edge's Cache-Control of a hashed asset.
const cacheImmutable = "public, max-age=31536000, immutable"

// manifest returns the sorted paths of the build's published manifest.
func (e *npmEnv) manifest(tenant, id string) []string {
	e.t.Helper()
	m, err := blob.LoadManifest(context.Background(), e.blobs, blob.ManifestKey(tenant, id))
	if err != nil {
		e.t.Fatal(err)
	}
	paths := make([]string, 0, len(m.Files))
	for p := range m.Files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	return paths
}

// succeeded fails the test at once unless the build stream is the
// successful npm build's.
func succeeded(t *testing.T, evs []domain.Event) {
	t.Helper()
	if got := signature(evs); !slices.Equal(got, npmSteps()) {
		f, _ := evs[len(evs)-1].(domain.BuildFailed)
		t.Fatalf("build stream:\n got %q\nwant %q\nerror: %s", got, npmSteps(), f.Error)
	}
}

// valuesNeverLeak fails the test if one of values is in an event (of any
// stream) or in the build's stored log.
func (e *npmEnv) valuesNeverLeak(tenant, id string, values ...string) {
	e.t.Helper()
	raw, err := e.events.ReadAll(context.Background(), 0, eventstore.ReadOptions{Limit: 10000})
	if err != nil {
		e.t.Fatal(err)
	}
	for _, r := range raw {
		for _, v := range values {
			if strings.Contains(string(r.Data), v) {
				e.t.Errorf("event %s holds a variable's value: %s", r.Type, r.Data)
			}
		}
	}
	log := e.storedLog(tenant, id)
	for _, v := range values {
		if strings.Contains(log, v) {
			e.t.Errorf("the stored log holds a variable's value:\n%s", log)
		}
	}
}

// A Next.js App Router app: a page rendering a buildConfig variable, a
// dynamic route with generateStaticParams, and the user's next.config.mjs
// (trailingSlash, env) surviving the static-export wrapper.
func TestNextJSAppRouterEndToEnd(t *testing.T) {
	t.Parallel()
	e := newNPMEnv(t)
	const greeting = "hello-from-buildconfig-5e1f"
	files := map[string]string{
		// The build prints the greeting: the log must show it redacted.
		"package.json": pkgJSON("echo the greeting is $NEXT_PUBLIC_GREETING && next build", map[string]string{
			"next": nextVersion, "react": reactVersion, "react-dom": reactVersion,
		}),
		"next.config.mjs": `/** @type {import('next').NextConfig} */
const nextConfig = {
  trailingSlash: true,
  env: { FROM_USER_CONFIG: 'kept' },
}
export default nextConfig
`,
		"app/layout.js": `export const metadata = { title: 'zipship next test' }

export default function RootLayout({ children }) {
  return (
    <html lang="en">
      <body>{children}</body>
    </html>
  )
}
`,
		"app/page.js": `import Link from 'next/link'

export default function Home() {
  return (
    <main>
      <h1 id="greeting">{process.env.NEXT_PUBLIC_GREETING}</h1>
      <p id="user-config">user config {process.env.FROM_USER_CONFIG}</p>
      <Link href="/posts/1/">first post</Link>
    </main>
  )
}
`,
		"app/posts/[id]/page.js": `export const dynamicParams = false

export function generateStaticParams() {
  return [{ id: '1' }, { id: '2' }]
}

export default async function Post({ params }) {
  const { id } = await params
  return (
    <article>
      <h1>Post number {id}</h1>
      <p>the body of post {id}</p>
    </article>
  )
}
`,
	}
	id := e.requestNPM("acme", files, domain.BuildConfig{}, map[string]string{"NEXT_PUBLIC_GREETING": greeting})
	evs := e.handle(id)
	succeeded(t, evs)

	for step, want := range map[domain.Step]string{
		domain.StepDetect:    "Next.js " + nextVersion + " (app router)",
		domain.StepInstall:   "next " + nextVersion + " installed",
		domain.StepConfigure: "next.config.mjs wrapped (yours is now next.config.user.mjs)",
		domain.StepExport:    "out/: ",
	} {
		if d, _ := stepDetail(evs, step); !strings.Contains(d, want) {
			t.Errorf("%s detail = %q, want it to contain %q", step, d, want)
		}
	}
	if d, _ := stepDetail(evs, domain.StepConfigure); !strings.Contains(d, "variables: NEXT_PUBLIC_GREETING") {
		t.Errorf("configure detail = %q, want it to name the variable", d)
	}

	paths := e.manifest("acme", id)
	var static []string
	for _, p := range paths {
		if strings.HasPrefix(p, "_next/static/") {
			static = append(static, p)
		}
	}
	for _, want := range []string{"index.html", "posts/1/index.html", "posts/2/index.html"} {
		if !slices.Contains(paths, want) {
			t.Errorf("manifest lacks %s (trailingSlash lost?): %q", want, paths)
		}
	}
	if len(static) == 0 {
		t.Errorf("manifest has no _next/static/ files: %q", paths)
	}
	for _, p := range paths {
		if p == "posts/1.html" || strings.HasPrefix(p, "next.config") || strings.HasPrefix(p, "app/") {
			t.Errorf("manifest has %s: %q", p, paths)
		}
	}

	code, _, body := e.getResp(liveHost("acme"), "/")
	if code != http.StatusOK || !strings.Contains(body, greeting) || !strings.Contains(body, "user config <!-- -->kept") &&
		!strings.Contains(body, "user config kept") {
		t.Errorf("/: %d, want the greeting %q and 'kept':\n%s", code, greeting, body)
	}
	for _, n := range []string{"1", "2"} {
		code, _, body := e.getResp(liveHost("acme"), "/posts/"+n+"/")
		if code != http.StatusOK || !regexp.MustCompile(`Post number (<!-- -->)?`+n).MatchString(body) ||
			!regexp.MustCompile(`the body of post (<!-- -->)?`+n).MatchString(body) {
			t.Errorf("/posts/%s/: %d\n%s", n, code, body)
		}
	}
	if code, _, _ := e.getResp(liveHost("acme"), "/posts/3/"); code != http.StatusNotFound {
		t.Errorf("/posts/3/ (not generated): %d, want 404", code)
	}
	// The page loads its scripts from _next/static/, cached for a year.
	refs := regexp.MustCompile(`/_next/static/[^"' ]+\.js`).FindAllString(body, -1)
	if len(refs) == 0 {
		t.Errorf("/ references no _next/static script:\n%s", body)
	}
	for _, ref := range refs[:min(len(refs), 3)] {
		code, h, _ := e.getResp(liveHost("acme"), ref)
		if code != http.StatusOK || h.Get("Cache-Control") != cacheImmutable {
			t.Errorf("%s: %d, Cache-Control %q, want %q", ref, code, h.Get("Cache-Control"), cacheImmutable)
		}
	}
	if _, h, _ := e.getResp(liveHost("acme"), "/"); h.Get("Cache-Control") == cacheImmutable {
		t.Errorf("/ is cached as immutable")
	}

	e.valuesNeverLeak("acme", id, greeting)
	if log := e.storedLog("acme", id); !strings.Contains(log, "stdout the greeting is [redacted]\n") || !strings.Contains(log, "build succeeded") {
		t.Errorf("stored log:\n%s", log)
	}
	e.leftovers(id)
}

// A Vite React app (with @vitejs/plugin-react and a VITE_ variable from
// buildConfig) publishes dist/: index.html and the hashed assets it loads,
// served as immutable.
func TestViteReactEndToEnd(t *testing.T) {
	t.Parallel()
	e := newNPMEnv(t)
	const greeting = "vite-greeting-value-9c3a"
	pkg, _ := json.MarshalIndent(map[string]any{
		"name": "zipship-vite-test", "version": "1.0.0", "private": true, "type": "module",
		"scripts":         map[string]string{"build": "vite build"},
		"dependencies":    map[string]string{"react": reactVersion, "react-dom": reactVersion},
		"devDependencies": map[string]string{"vite": viteVersion, "@vitejs/plugin-react": pluginReactVersion},
	}, "", "  ")
	files := map[string]string{
		"package.json": string(pkg),
		"vite.config.js": `import { defineConfig } from 'vite'
import react from '@vitejs/plugin-react'

export default defineConfig({ plugins: [react()] })
`,
		"index.html": `<!doctype html>
<html lang="en">
  <head><meta charset="UTF-8" /><title>zipship vite test</title></head>
  <body>
    <div id="root"></div>
    <script type="module" src="/src/main.jsx"></script>
  </body>
</html>
`,
		"src/main.jsx": `import { StrictMode } from 'react'
import { createRoot } from 'react-dom/client'
import App from './App.jsx'
import './index.css'

createRoot(document.getElementById('root')).render(<StrictMode><App /></StrictMode>)
`,
		"src/App.jsx": `export default function App() {
  return <h1 className="title">Rendered by the zipship Vite app: {import.meta.env.VITE_GREETING}</h1>
}
`,
		"src/index.css": ".title { color: rebeccapurple; }\n",
	}
	id := e.requestNPM("acme", files, domain.BuildConfig{}, map[string]string{"VITE_GREETING": greeting})
	evs := e.handle(id)
	succeeded(t, evs)
	for step, want := range map[domain.Step]string{
		domain.StepDetect:  "Vite " + viteVersion,
		domain.StepInstall: "vite " + viteVersion + " installed",
		domain.StepBuild:   "npm run build: exit 0",
		domain.StepExport:  "dist/: ",
	} {
		if d, _ := stepDetail(evs, step); !strings.Contains(d, want) {
			t.Errorf("%s detail = %q, want it to contain %q", step, d, want)
		}
	}

	paths := e.manifest("acme", id)
	hashed := regexp.MustCompile(`^assets/index-[A-Za-z0-9_-]{8,}\.(js|css)$`)
	var js, css []string
	for _, p := range paths {
		if m := hashed.FindStringSubmatch(p); m != nil && m[1] == "js" {
			js = append(js, p)
		} else if m != nil {
			css = append(css, p)
		}
	}
	if !slices.Contains(paths, "index.html") || len(js) != 1 || len(css) != 1 {
		t.Fatalf("manifest = %q, want index.html, one hashed JS and one hashed CSS asset", paths)
	}
	for _, p := range paths {
		if strings.HasPrefix(p, "src/") || p == "package.json" || strings.HasPrefix(p, "node_modules/") {
			t.Errorf("manifest has %s", p)
		}
	}

	code, _, page := e.getResp(liveHost("acme"), "/")
	if code != http.StatusOK || !strings.Contains(page, `src="/`+js[0]+`"`) || !strings.Contains(page, `href="/`+css[0]+`"`) {
		t.Errorf("/: %d, want it to load /%s and /%s:\n%s", code, js[0], css[0], page)
	}
	code, h, script := e.getResp(liveHost("acme"), "/"+js[0])
	if code != http.StatusOK || h.Get("Cache-Control") != cacheImmutable ||
		!strings.Contains(script, "Rendered by the zipship Vite app: ") || !strings.Contains(script, greeting) {
		t.Errorf("/%s: %d, Cache-Control %q; the bundle has the app's text and the greeting: %v %v",
			js[0], code, h.Get("Cache-Control"), strings.Contains(script, "Rendered by the zipship Vite app"), strings.Contains(script, greeting))
	}
	// The JSX went through plugin-react: no JSX left, React's runtime in.
	if strings.Contains(script, "<h1") || !strings.Contains(script, "react.transitional.element") && !strings.Contains(script, "react.element") {
		t.Errorf("/%s does not look like a React bundle", js[0])
	}
	code, h, style := e.getResp(liveHost("acme"), "/"+css[0])
	if code != http.StatusOK || h.Get("Cache-Control") != cacheImmutable || !strings.Contains(style, "color:#639") && !strings.Contains(style, "rebeccapurple") {
		t.Errorf("/%s: %d, Cache-Control %q: %q", css[0], code, h.Get("Cache-Control"), style)
	}

	e.valuesNeverLeak("acme", id, greeting)
	e.leftovers(id)
}
