package detect

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zipship/zipship/domain"
)

// run runs argv in dir with env (nil: the test's PATH and HOME) and fails
// the test with its output when it fails.
func run(t *testing.T, dir string, env []string, timeout time.Duration, argv ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s in %s: %v\n%s", strings.Join(argv, " "), dir, err, out)
	}
	return string(out)
}

// The end-to-end fixture: an App Router app whose page renders variables
// from every channel, hex-encoded so that HTML escaping cannot hide a
// difference.
var e2eFiles = map[string]string{
	"package.json": `{
  "name": "zipship-e2e",
  "private": true,
  "scripts": { "build": "next build" },
  "dependencies": { "next": "latest", "react": "latest", "react-dom": "latest" },
  "devDependencies": { "typescript": "latest", "@types/react": "latest" }
}
`,
	// The user's configuration: a (maybe async) function, as Next.js allows,
	// with settings whose effect is visible in out/.
	"next.config.mjs": `export default async function config(phase, { defaultConfig }) {
  return {
    trailingSlash: true,
    distDir: 'build-here',
    env: { FROM_USER_CONFIG: 'yes:' + phase + ':' + typeof defaultConfig.images },
  }
}
`,
	// The user's own env file defines the greeting: SplitEnv must route it
	// through .env.production.local, where ours wins.
	".env.production": "NEXT_PUBLIC_GREETING=\"from the user's file\"\nNEXT_PUBLIC_FROM_DOTENV=kept\n",
	"app/layout.js": `export default function RootLayout({ children }) {
  return <html lang="en"><body>{children}</body></html>
}
`,
	"app/page.js": `const hex = (v) => Buffer.from(String(v)).toString('hex')
export default function Home() {
  return (
    <main>
      <p id="greeting">greeting=[{hex(process.env.NEXT_PUBLIC_GREETING)}]</p>
      <p id="plain">plain=[{hex(process.env.NEXT_PUBLIC_PLAIN)}]</p>
      <p>build=[{process.env.NEXT_PUBLIC_BUILD_ID}] tenant=[{process.env.NEXT_PUBLIC_TENANT_ID}]</p>
      <p>dotenv=[{process.env.NEXT_PUBLIC_FROM_DOTENV}] config=[{process.env.FROM_USER_CONFIG}]</p>
      <a href="/posts/1/">first post</a>
    </main>
  )
}
`,
	"app/posts/[id]/page.js": `export function generateStaticParams() {
  return [{ id: '1' }, { id: '2' }]
}
export default async function Post({ params }) {
  const { id } = await params
  return <h1>post {id}</h1>
}
`,
}

// TestNextExportEndToEnd builds a real Next.js app on the host (our own
// fixture, not user code): npm install, CheckNextStaticExport,
// PrepareNextExport around a user configuration, SplitEnv + BuildEnv +
// WriteEnvProduction, next build; then checks out/. In the same install it
// loads each configuration flavour through Next.js's own loader, type-checks
// the TypeScript wrapper, and reads tricky values back through @next/env.
func TestNextExportEndToEnd(t *testing.T) {
	dir := project(t, e2eFiles)
	t.Logf("npm install in %s", dir)
	start := time.Now()
	run(t, dir, nil, 5*time.Minute, "npm", "install", "--no-audit", "--no-fund", "--loglevel=error")
	t.Logf("npm install took %s", time.Since(start).Round(time.Millisecond))

	// Independent checks that share the install.
	t.Run("config flavours through Next.js's loader", func(t *testing.T) { testConfigFlavours(t, dir) })
	t.Run("TypeScript wrapper type-checks", func(t *testing.T) { testWrapperTypes(t, dir) })
	t.Run("dotenv round trip through @next/env", func(t *testing.T) { testNextEnvRoundTrip(t, dir) })

	// The build.

	plan, err := Detect(dir, domain.BuildConfig{}, false)
	if err != nil {
		t.Fatal(err)
	}
	if plan.Framework != NextJS || plan.Router != "app" || plan.OutputDir != "out" {
		t.Fatalf("plan = %+v", plan)
	}
	plan.NoteInstalledVersion(dir)
	t.Logf("plan: %s", plan.Describe())
	if !strings.HasPrefix(plan.Describe(), "Next.js 1") {
		t.Errorf("Describe = %q", plan.Describe())
	}
	if err := CheckNextStaticExport(dir); err != nil {
		t.Fatalf("CheckNextStaticExport: %v", err)
	}
	detail, err := PrepareNextExport(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("prepare: %s", detail)

	greeting := `hello $USER "quoted" #1`
	plain := `a $HOME b \$x 'single' #2`
	process, file, err := SplitEnv(dir, map[string]string{"NEXT_PUBLIC_GREETING": greeting, "NEXT_PUBLIC_PLAIN": plain})
	if err != nil {
		t.Fatal(err)
	}
	if len(file) != 1 || file["NEXT_PUBLIC_GREETING"] != greeting || len(process) != 1 || process["NEXT_PUBLIC_PLAIN"] != plain {
		t.Fatalf("SplitEnv = %v, %v", process, file)
	}
	if err := WriteEnvProduction(dir, file); err != nil {
		t.Fatal(err)
	}
	env := append([]string{"USER=zipship-e2e"}, BuildEnv("b-123", "acme", process)...)

	start = time.Now()
	out := run(t, dir, env, 5*time.Minute, "node_modules/.bin/next", "build")
	t.Logf("next build took %s", time.Since(start).Round(time.Millisecond))

	outDir, err := plan.FindOutput(dir)
	if err != nil {
		t.Fatalf("FindOutput: %v\n%s", err, out)
	}
	index := readFile(t, filepath.Join(outDir, "index.html"))
	for _, want := range []string{
		"greeting=[<!-- -->" + hex.EncodeToString([]byte(greeting)) + "<!-- -->]",
		"plain=[<!-- -->" + hex.EncodeToString([]byte(plain)) + "<!-- -->]",
		"build=[<!-- -->b-123<!-- -->] tenant=[<!-- -->acme<!-- -->]",
		"dotenv=[<!-- -->kept<!-- -->]",
		"config=[<!-- -->yes:phase-production-build:object<!-- -->]",
	} {
		if !strings.Contains(index, want) {
			t.Errorf("out/index.html lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("out/index.html:\n%s", index)
	}
	for _, name := range []string{"posts/1/index.html", "posts/2/index.html"} { // trailingSlash survived
		if data, err := os.ReadFile(filepath.Join(outDir, name)); err != nil || !strings.Contains(string(data), "post <!-- -->"+name[6:7]) {
			t.Errorf("out/%s: %v", name, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "build-here")); err == nil {
		t.Error("the user's distDir was used; the export must land in out/")
	}

}

// loadNextConfig loads dir's configuration with Next.js's loadConfig (the
// one next build uses) and returns the fields the tests look at.
func loadNextConfig(t *testing.T, appDir, dir string) map[string]any {
	t.Helper()
	script := `const loadConfig = require(process.argv[1]).default
loadConfig('phase-production-build', process.argv[2]).then((c) => {
  process.stdout.write('\n@@' + JSON.stringify({ output: c.output, images: c.images, trailingSlash: c.trailingSlash,
    basePath: c.basePath, env: c.env, distDir: c.distDir }))
}, (e) => { console.error(e); process.exit(1) })`
	out := run(t, dir, []string{"NEXT_TELEMETRY_DISABLED=1"}, 2*time.Minute, "node", "-e", script,
		filepath.Join(appDir, "node_modules/next/dist/server/config.js"), dir)
	_, js, ok := strings.Cut(out, "\n@@")
	if !ok {
		t.Fatalf("no config printed:\n%s", out)
	}
	var c map[string]any
	if err := json.Unmarshal([]byte(js), &c); err != nil {
		t.Fatalf("%v: %s", err, js)
	}
	return c
}

func testConfigFlavours(t *testing.T, appDir string) {
	const cjsPkg = `{"name":"f","private":true}`
	const esmPkg = `{"name":"f","private":true,"type":"module"}`
	tests := []struct {
		name  string
		files map[string]string
		check func(t *testing.T, c map[string]any)
	}{
		{"CommonJS next.config.js object", map[string]string{"package.json": cjsPkg,
			"next.config.js": `module.exports = { basePath: '/docs', images: { remotePatterns: [{ hostname: 'example.com' }] } }`},
			func(t *testing.T, c map[string]any) {
				imgs := c["images"].(map[string]any)
				if c["basePath"] != "/docs" || imgs["unoptimized"] != true || len(imgs["remotePatterns"].([]any)) != 1 {
					t.Errorf("config = %v", c)
				}
			}},
		{"CommonJS next.config.js function", map[string]string{"package.json": cjsPkg,
			"next.config.js": `module.exports = (phase, { defaultConfig }) => ({ env: { P: phase, D: String(defaultConfig.trailingSlash) }, trailingSlash: false })`},
			func(t *testing.T, c map[string]any) {
				env := c["env"].(map[string]any)
				if env["P"] != "phase-production-build" || env["D"] != "false" || c["trailingSlash"] != false {
					t.Errorf("config = %v", c)
				}
			}},
		{"ES module next.config.js (type: module), async function", map[string]string{"package.json": esmPkg,
			"next.config.js": `export default async () => ({ basePath: '/m', output: 'standalone' })`},
			func(t *testing.T, c map[string]any) {
				if c["basePath"] != "/m" {
					t.Errorf("config = %v", c)
				}
			}},
		{"next.config.mjs returning a promise", map[string]string{"package.json": cjsPkg,
			"next.config.mjs": `export default Promise.resolve({ trailingSlash: true })`},
			func(t *testing.T, c map[string]any) {
				if c["trailingSlash"] != true {
					t.Errorf("config = %v", c)
				}
			}},
		{"next.config.mjs with a custom image loader", map[string]string{"package.json": cjsPkg,
			"loader.js":       `export default function loader({ src, width }) { return src + '?w=' + width }`,
			"next.config.mjs": `export default { images: { loader: 'custom', loaderFile: './loader.js' } }`},
			func(t *testing.T, c map[string]any) {
				if imgs := c["images"].(map[string]any); imgs["loader"] != "custom" || imgs["unoptimized"] == true {
					t.Errorf("custom loader not kept: %v", imgs)
				}
			}},
		{"next.config.ts object with distDir", map[string]string{"package.json": cjsPkg,
			"next.config.ts": "import type { NextConfig } from 'next'\nconst config: NextConfig = { basePath: '/t', distDir: 'custom' }\nexport default config\n"},
			func(t *testing.T, c map[string]any) {
				if c["basePath"] != "/t" || c["distDir"] != ".next" {
					t.Errorf("config = %v", c)
				}
			}},
		{"next.config.ts async function", map[string]string{"package.json": cjsPkg,
			"next.config.ts": "import type { NextConfig } from 'next'\nexport default async (phase: string): Promise<NextConfig> => ({ env: { P: phase } })\n"},
			func(t *testing.T, c map[string]any) {
				if c["env"].(map[string]any)["P"] != "phase-production-build" {
					t.Errorf("config = %v", c)
				}
			}},
		{"no configuration", map[string]string{"package.json": cjsPkg}, func(t *testing.T, c map[string]any) {}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := project(t, tt.files)
			if err := os.Symlink(filepath.Join(appDir, "node_modules"), filepath.Join(dir, "node_modules")); err != nil {
				t.Fatal(err)
			}
			if _, err := PrepareNextExport(dir); err != nil {
				t.Fatal(err)
			}
			c := loadNextConfig(t, appDir, dir)
			if imgs, _ := c["images"].(map[string]any); c["output"] != "export" || imgs == nil {
				t.Fatalf("config = %v", c)
			}
			if c["distDir"] != ".next" {
				t.Errorf("distDir = %v", c["distDir"])
			}
			tt.check(t, c)
		})
	}
}

// testWrapperTypes type-checks the TypeScript wrapper (next build does, with
// the project's tsconfig) under strict settings like create-next-app's.
func testWrapperTypes(t *testing.T, appDir string) {
	for name, userTS := range map[string]string{
		"object":   "import type { NextConfig } from 'next'\nconst config: NextConfig = { reactStrictMode: true }\nexport default config\n",
		"function": "import type { NextConfig } from 'next'\nexport default async function config(phase: string, { defaultConfig }: { defaultConfig: NextConfig }): Promise<NextConfig> {\n  return { ...defaultConfig, env: { P: phase } }\n}\n",
	} {
		t.Run(name, func(t *testing.T) {
			dir := project(t, map[string]string{"package.json": `{"private":true}`, "next.config.ts": userTS,
				"tsconfig.json": `{"compilerOptions":{"target":"ES2017","lib":["dom","esnext"],"strict":true,"noEmit":true,"esModuleInterop":true,
"module":"esnext","moduleResolution":"bundler","isolatedModules":true,"skipLibCheck":true,"noUnusedLocals":true,"noUnusedParameters":true},"include":["next.config.ts"]}`})
			if err := os.Symlink(filepath.Join(appDir, "node_modules"), filepath.Join(dir, "node_modules")); err != nil {
				t.Fatal(err)
			}
			if _, err := PrepareNextExport(dir); err != nil {
				t.Fatal(err)
			}
			run(t, dir, nil, 2*time.Minute, filepath.Join(appDir, "node_modules/.bin/tsc"), "-p", ".")
		})
	}
}

// testNextEnvRoundTrip writes tricky values with WriteEnvProduction and
// reads them back with @next/env, the loader next build uses (dotenv 16 +
// dotenv-expand), with a user .env.local defining one of them too.
func testNextEnvRoundTrip(t *testing.T, appDir string) {
	values := trickyValues()
	dir := project(t, map[string]string{".env.local": "V00=from-user\n", ".env.production.local": "V01=user-first"})
	if err := WriteEnvProduction(dir, values); err != nil {
		t.Fatal(err)
	}
	script := `const { loadEnvConfig } = require(process.argv[1])
const { combinedEnv } = loadEnvConfig(process.argv[2], false, { info() {}, error: console.error })
const out = {}
for (const k of Object.keys(combinedEnv)) if (/^V\d+$/.test(k)) out[k] = combinedEnv[k]
process.stdout.write('\n@@' + JSON.stringify(out))`
	out := run(t, dir, []string{"USER=zipship-e2e"}, time.Minute, "node", "-e", script, filepath.Join(appDir, "node_modules/@next/env"), dir)
	_, js, _ := strings.Cut(out, "\n@@")
	var got map[string]string
	if err := json.Unmarshal([]byte(js), &got); err != nil {
		t.Fatalf("%v: %q", err, out)
	}
	for k, want := range values {
		if got[k] != want {
			t.Errorf("%s = %q, want %q", k, got[k], want)
		}
	}
}
