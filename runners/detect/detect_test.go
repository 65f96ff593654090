package detect

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/zipship/zipship/domain"
)

// project writes files (path → content) into a new temporary directory.
func project(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if strings.HasSuffix(name, "/") {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

const (
	pkgNext   = `{"name":"x","scripts":{"build":"next build"},"dependencies":{"next":"^16.0.1","react":"19.2.0"}}`
	pkgVite   = `{"name":"x","scripts":{"build":"vite build"},"devDependencies":{"vite":"^7.1.0"}}`
	pkgOther  = `{"name":"x","scripts":{"build":"eleventy"}}`
	pkgNoBld  = `{"name":"x","scripts":{"dev":"vite"},"devDependencies":{"vite":"^7.1.0"}}`
	berryLock = "__metadata:\n  version: 8\n  cacheKey: 10c0\n"
)

var npmCI = []string{"npm", "ci", "--no-audit", "--no-fund", "--loglevel=error", "--include=dev"}
var npmInstall = []string{"npm", "install", "--no-audit", "--no-fund", "--loglevel=error", "--include=dev"}

func TestDetect(t *testing.T) {
	tests := []struct {
		name     string
		files    map[string]string
		cfg      domain.BuildConfig
		corepack bool
		check    func(t *testing.T, p *Plan)
		wantErr  string // the whole message
	}{
		{
			name:  "next with package-lock",
			files: map[string]string{"package.json": pkgNext, "package-lock.json": "{}", "app/page.js": ""},
			check: func(t *testing.T, p *Plan) {
				want := &Plan{Framework: NextJS, FrameworkVersion: "^16.0.1", Router: "app", PackageManager: NPM,
					Lockfile: "package-lock.json", InstallArgs: npmCI, InstallArgsLegacyPeers: append(append([]string(nil), npmCI...), "--legacy-peer-deps"),
					BuildArgs: []string{"npm", "run", "build"}, OutputDir: "out", OutputCandidates: []string{"out"}}
				if !reflect.DeepEqual(p, want) {
					t.Errorf("plan =\n%+v\nwant\n%+v", p, want)
				}
				if got := p.Describe(); got != "Next.js ^16.0.1 (app router), npm ci, build: npm run build, output: out/" {
					t.Errorf("Describe = %q", got)
				}
			},
		},
		{
			name:  "next in devDependencies, pages router, no lockfile",
			files: map[string]string{"package.json": `{"scripts":{"build":"next build"},"devDependencies":{"next":"15.5.0"}}`, "src/pages/index.js": ""},
			check: func(t *testing.T, p *Plan) {
				if p.Framework != NextJS || p.Router != "pages" || p.Lockfile != "" || !reflect.DeepEqual(p.InstallArgs, npmInstall) {
					t.Errorf("plan = %+v", p)
				}
				if got := p.Describe(); got != "Next.js 15.5.0 (pages router), npm install (no lockfile), build: npm run build, output: out/" {
					t.Errorf("Describe = %q", got)
				}
			},
		},
		{
			name:  "next with both routers",
			files: map[string]string{"package.json": pkgNext, "app/": "", "pages/": ""},
			check: func(t *testing.T, p *Plan) {
				if p.Router != "app+pages" {
					t.Errorf("Router = %q", p.Router)
				}
			},
		},
		{
			name:  "vite",
			files: map[string]string{"package.json": pkgVite},
			check: func(t *testing.T, p *Plan) {
				if p.Framework != Vite || p.FrameworkVersion != "^7.1.0" || p.OutputDir != "dist" || !reflect.DeepEqual(p.OutputCandidates, []string{"dist"}) {
					t.Errorf("plan = %+v", p)
				}
				if got := p.Describe(); got != "Vite ^7.1.0, npm install (no lockfile), build: npm run build, output: dist/" {
					t.Errorf("Describe = %q", got)
				}
			},
		},
		{
			name:  "next wins over vite",
			files: map[string]string{"package.json": `{"scripts":{"build":"x"},"dependencies":{"next":"16.0.0","vite":"7.0.0"}}`},
			check: func(t *testing.T, p *Plan) {
				if p.Framework != NextJS {
					t.Errorf("Framework = %q", p.Framework)
				}
			},
		},
		{
			name:  "other: output decided after the build",
			files: map[string]string{"package.json": pkgOther},
			check: func(t *testing.T, p *Plan) {
				if p.Framework != Other || p.OutputDir != "" || !reflect.DeepEqual(p.OutputCandidates, []string{"out", "dist", "build", "public"}) {
					t.Errorf("plan = %+v", p)
				}
				if got := p.Describe(); got != "no known framework, npm install (no lockfile), build: npm run build, output: first of out/, dist/, build/, public/" {
					t.Errorf("Describe = %q", got)
				}
			},
		},
		{
			name:  "other with outputDir",
			files: map[string]string{"package.json": pkgOther},
			cfg:   domain.BuildConfig{OutputDir: "_site/"},
			check: func(t *testing.T, p *Plan) {
				if p.OutputDir != "_site" || !p.ConfiguredOutput || !reflect.DeepEqual(p.OutputCandidates, []string{"_site"}) {
					t.Errorf("plan = %+v", p)
				}
			},
		},
		{
			name:  "vite with outputDir",
			files: map[string]string{"package.json": pkgVite},
			cfg:   domain.BuildConfig{OutputDir: "build/web"},
			check: func(t *testing.T, p *Plan) {
				if p.OutputDir != "build/web" || !p.ConfiguredOutput {
					t.Errorf("plan = %+v", p)
				}
			},
		},
		{
			name:  "build command overrides and needs no build script",
			files: map[string]string{"package.json": pkgNoBld},
			cfg:   domain.BuildConfig{BuildCommand: "npx vite build --base=./ && echo done"},
			check: func(t *testing.T, p *Plan) {
				if !reflect.DeepEqual(p.BuildArgs, []string{"sh", "-c", "npx vite build --base=./ && echo done"}) || !p.CustomBuild {
					t.Errorf("BuildArgs = %q", p.BuildArgs)
				}
				if got := p.Describe(); got != `Vite ^7.1.0, npm install (no lockfile), build: sh -c "npx vite build --base=./ && echo done", output: dist/` {
					t.Errorf("Describe = %q", got)
				}
			},
		},
		{
			name:  "framework override is recorded",
			files: map[string]string{"package.json": pkgNext},
			cfg:   domain.BuildConfig{Framework: "other", OutputDir: "out"},
			check: func(t *testing.T, p *Plan) {
				if p.Framework != Other || p.Detected != NextJS {
					t.Errorf("plan = %+v", p)
				}
				if got := p.Describe(); !strings.HasPrefix(got, "no known framework (buildConfig.framework; package.json suggests nextjs), ") {
					t.Errorf("Describe = %q", got)
				}
			},
		},
		{
			name:  "framework nextjs without the dependency",
			files: map[string]string{"package.json": pkgOther},
			cfg:   domain.BuildConfig{Framework: "nextjs"},
			check: func(t *testing.T, p *Plan) {
				if p.Framework != NextJS || p.Detected != "" || p.OutputDir != "out" || p.FrameworkVersion != "" {
					t.Errorf("plan = %+v", p)
				}
				if got := p.Describe(); !strings.HasPrefix(got, "Next.js, npm install") {
					t.Errorf("Describe = %q", got)
				}
			},
		},
		{
			name:  "framework vite override",
			files: map[string]string{"package.json": pkgOther},
			cfg:   domain.BuildConfig{Framework: "vite"},
			check: func(t *testing.T, p *Plan) {
				if p.Framework != Vite || p.OutputDir != "dist" {
					t.Errorf("plan = %+v", p)
				}
			},
		},
		{
			name:  "static: nothing installed or built",
			files: map[string]string{"package.json": pkgVite, "index.html": "<h1>hi</h1>"},
			cfg:   domain.BuildConfig{Framework: "static"},
			check: func(t *testing.T, p *Plan) {
				if p.InstallArgs != nil || p.BuildArgs != nil || p.OutputDir != "." || !reflect.DeepEqual(p.OutputCandidates, []string{"."}) {
					t.Errorf("plan = %+v", p)
				}
				if got := p.Describe(); got != "static files (no install, no build) (buildConfig.framework; package.json suggests vite), output: the project directory" {
					t.Errorf("Describe = %q", got)
				}
			},
		},
		{
			name:  "static with outputDir",
			files: map[string]string{"package.json": pkgNoBld},
			cfg:   domain.BuildConfig{Framework: "static", OutputDir: "site"},
			check: func(t *testing.T, p *Plan) {
				if p.OutputDir != "site" || !p.ConfiguredOutput {
					t.Errorf("plan = %+v", p)
				}
			},
		},
		{
			name:    "static with a build command",
			files:   map[string]string{"package.json": pkgVite},
			cfg:     domain.BuildConfig{Framework: "static", BuildCommand: "make"},
			wantErr: `buildConfig.buildCommand is set but buildConfig.framework is "static" (publish the files as they are, no install, no build): remove one of them`,
		},
		{
			name:    "unknown framework",
			files:   map[string]string{"package.json": pkgVite},
			cfg:     domain.BuildConfig{Framework: "gatsby"},
			wantErr: `buildConfig.framework "gatsby" is unknown: use nextjs, vite, static or other`,
		},
		{
			name:    "no build script",
			files:   map[string]string{"package.json": pkgNoBld},
			wantErr: `package.json at package.json has no "build" script: add one (e.g. "build": "vite build") or set buildConfig.buildCommand`,
		},
		{
			name:    "no build script, empty string",
			files:   map[string]string{"package.json": `{"scripts":{"build":""}}`},
			wantErr: `package.json at package.json has no "build" script: add one (e.g. "build": "vite build") or set buildConfig.buildCommand`,
		},
		{
			name:    "no build script but an index.html",
			files:   map[string]string{"package.json": `{"devDependencies":{"live-server":"1"}}`, "index.html": "x"},
			wantErr: `package.json at package.json has no "build" script: add one (e.g. "build": "vite build") or set buildConfig.buildCommand, or set buildConfig.framework to "static" to publish the files as they are`,
		},
		{
			name:    "invalid JSON: trailing comma",
			files:   map[string]string{"package.json": "{\n  \"scripts\": {\"build\": \"x\"},\n}\n"},
			wantErr: `package.json at package.json is not valid JSON: invalid character '}' looking for beginning of object key string at line 3, column 1`,
		},
		{
			name:    "invalid JSON: comment",
			files:   map[string]string{"package.json": "{\n  // build\n  \"scripts\": {}\n}"},
			wantErr: `package.json at package.json is not valid JSON: invalid character '/' looking for beginning of object key string at line 2, column 3`,
		},
		{
			name:    "invalid JSON: trailing data",
			files:   map[string]string{"package.json": `{"scripts":{"build":"x"}} {}`},
			wantErr: `package.json at package.json is not valid JSON: invalid character '{' after top-level value at line 1, column 27`,
		},
		{
			name:    "invalid JSON: truncated",
			files:   map[string]string{"package.json": `{"scripts":`},
			wantErr: `package.json at package.json is not valid JSON: unexpected end of JSON input at line 1, column 11`,
		},
		{
			name:    "not an object",
			files:   map[string]string{"package.json": `["next"]`},
			wantErr: `package.json at package.json is not valid JSON: it must be an object ({ … })`,
		},
		{
			name:    "empty file",
			files:   map[string]string{"package.json": ""},
			wantErr: `package.json at package.json is not valid JSON: it must be an object ({ … })`,
		},
		{
			name:    "dependencies of the wrong type",
			files:   map[string]string{"package.json": `{"scripts":{"build":"x"},"dependencies":["next"]}`},
			wantErr: `package.json at package.json is not valid: "dependencies" must be an object of strings`,
		},
		{
			name:    "script of the wrong type",
			files:   map[string]string{"package.json": `{"scripts":{"build":1}}`},
			wantErr: `package.json at package.json is not valid: "scripts" must be an object of strings`,
		},
		{
			name:  "BOM and unknown fields are fine",
			files: map[string]string{"package.json": "\xef\xbb\xbf" + `{"scripts":{"build":"x"},"engines":{"node":">=20"},"type":"module","whatever":[1,{"a":null}]}`},
			cfg:   domain.BuildConfig{NodeVersion: "18"},
			check: func(t *testing.T, p *Plan) {
				if p.EnginesNode != ">=20" || p.PackageType != "module" || p.NodeVersionWanted != "18" {
					t.Errorf("plan = %+v", p)
				}
				if got := p.Describe(); !strings.HasSuffix(got, ", node 18 wanted") {
					t.Errorf("Describe = %q", got)
				}
				p.NodeVersion = "20.20.2"
				if got := p.Describe(); !strings.HasSuffix(got, ", node 20.20.2 (18 wanted)") {
					t.Errorf("Describe = %q", got)
				}
				p.NodeVersionWanted = "20.20"
				if got := p.Describe(); !strings.HasSuffix(got, ", node 20.20.2") {
					t.Errorf("Describe = %q", got)
				}
			},
		},
		{
			name:  "engines of an odd shape is ignored",
			files: map[string]string{"package.json": `{"scripts":{"build":"x"},"engines":["node >= 0.8"],"packageManager":7}`},
			check: func(t *testing.T, p *Plan) {
				if p.EnginesNode != "" || p.PackageManager != NPM {
					t.Errorf("plan = %+v", p)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := project(t, tt.files)
			p, err := Detect(dir, tt.cfg, tt.corepack)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("Detect = %+v, want error %q", p, tt.wantErr)
				}
				if err.Error() != tt.wantErr {
					t.Fatalf("error =\n%s\nwant\n%s", err, tt.wantErr)
				}
				if !IsUserError(err) {
					t.Fatalf("error %q is not a user error", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Detect: %v", err)
			}
			tt.check(t, p)
		})
	}
}

func TestDetectNoPackageJSONIsInfra(t *testing.T) {
	_, err := Detect(t.TempDir(), domain.BuildConfig{}, true)
	if err == nil || IsUserError(err) || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("err = %v, want a not-exist infrastructure error", err)
	}
}

func TestUserErrorUnder(t *testing.T) {
	dir := project(t, map[string]string{"package.json": pkgNoBld})
	_, err := Detect(dir, domain.BuildConfig{}, true)
	if got := Under(err, "site/web").Error(); !strings.HasPrefix(got, `package.json at site/web/package.json has no "build" script`) {
		t.Errorf("Under = %q", got)
	}
	if got := Under(err, "/").Error(); !strings.HasPrefix(got, `package.json at package.json has`) {
		t.Errorf("Under root = %q", got)
	}
	noFile := userErr("", "", "buildConfig: x")
	if got := noFile.Under("site").Error(); got != "buildConfig: x" {
		t.Errorf("Under without file = %q", got)
	}
	many := UserErrors{userErr("", "a.js", ": x"), userErr("", "b.js", ": y")}
	if got := Under(many, "s").Error(); got != "s/a.js: x\ns/b.js: y" {
		t.Errorf("Under many = %q", got)
	}
	other := errors.New("disk full")
	if Under(other, "s") != other {
		t.Error("Under changed a non-user error")
	}
}

func TestLockfiles(t *testing.T) {
	tests := []struct {
		name      string
		files     map[string]string
		corepack  bool
		manager   string
		lockfile  string
		ignored   []string
		install   []string
		build     []string
		toolEnv   []string
		describe  string // the install part of Describe
		wantErr   string
		berry     bool
		noLegacy  bool
		extraPkgs string // merged into package.json
	}{
		{name: "none", manager: NPM, install: npmInstall, build: []string{"npm", "run", "build"}, describe: "npm install (no lockfile)"},
		{name: "package-lock", files: map[string]string{"package-lock.json": "{}"}, manager: NPM, lockfile: "package-lock.json", install: npmCI, describe: "npm ci"},
		{name: "npm-shrinkwrap", files: map[string]string{"npm-shrinkwrap.json": "{}"}, manager: NPM, lockfile: "npm-shrinkwrap.json", install: npmCI, describe: "npm ci"},
		{name: "pnpm", files: map[string]string{"pnpm-lock.yaml": "lockfileVersion: '9.0'\n"}, corepack: true, manager: PNPM, lockfile: "pnpm-lock.yaml",
			install: []string{"corepack", "pnpm", "install", "--frozen-lockfile"}, build: []string{"corepack", "pnpm", "run", "build"},
			toolEnv: []string{"COREPACK_ENABLE_DOWNLOAD_PROMPT=0"}, describe: "corepack pnpm install", noLegacy: true},
		{name: "pnpm without corepack", files: map[string]string{"pnpm-lock.yaml": ""},
			wantErr: "pnpm-lock.yaml: this build server cannot run pnpm (it has no corepack): commit a package-lock.json instead (npm install --package-lock-only creates one) and remove pnpm-lock.yaml"},
		{name: "yarn classic", files: map[string]string{"yarn.lock": "# yarn lockfile v1\n\nreact@^19:\n  version \"19.0.0\"\n"}, corepack: true, manager: Yarn, lockfile: "yarn.lock",
			install: []string{"corepack", "yarn", "install", "--frozen-lockfile"}, build: []string{"corepack", "yarn", "run", "build"},
			toolEnv: []string{"COREPACK_ENABLE_DOWNLOAD_PROMPT=0"}, describe: "corepack yarn install", noLegacy: true},
		{name: "yarn classic without corepack", files: map[string]string{"yarn.lock": ""},
			wantErr: "yarn.lock: this build server cannot run yarn (it has no corepack): commit a package-lock.json instead (npm install --package-lock-only creates one) and remove yarn.lock"},
		{name: "yarn berry pinned", files: map[string]string{"yarn.lock": berryLock}, extraPkgs: `"packageManager":"yarn@4.5.0",`, corepack: true,
			manager: Yarn, lockfile: "yarn.lock", berry: true, install: []string{"corepack", "yarn", "install", "--immutable"}, build: []string{"corepack", "yarn", "run", "build"},
			toolEnv: []string{"COREPACK_ENABLE_DOWNLOAD_PROMPT=0", "YARN_ENABLE_GLOBAL_CACHE=false"}, describe: "corepack yarn install", noLegacy: true},
		{name: "yarn berry with yarnPath", files: map[string]string{"yarn.lock": berryLock, ".yarnrc.yml": "nodeLinker: node-modules\nyarnPath: .yarn/releases/yarn-4.5.0.cjs\n"}, corepack: true,
			manager: Yarn, lockfile: "yarn.lock", berry: true, install: []string{"corepack", "yarn", "install", "--immutable"}, build: []string{"corepack", "yarn", "run", "build"},
			toolEnv: []string{"COREPACK_ENABLE_DOWNLOAD_PROMPT=0", "YARN_ENABLE_GLOBAL_CACHE=false"}, describe: "corepack yarn install", noLegacy: true},
		{name: "yarn berry unpinned", files: map[string]string{"yarn.lock": berryLock}, corepack: true,
			wantErr: `yarn.lock: a Yarn 2+ lockfile but package.json has no "packageManager": "yarn@<version>" (nor .yarnrc.yml a yarnPath): add it (run corepack use yarn@4 in the project) or commit a package-lock.json instead`},
		{name: "yarn berry pinned to yarn 1", files: map[string]string{"yarn.lock": berryLock}, extraPkgs: `"packageManager":"yarn@1.22.22",`, corepack: true,
			wantErr: `yarn.lock: a Yarn 2+ lockfile but package.json has no "packageManager": "yarn@<version>" (nor .yarnrc.yml a yarnPath): add it (run corepack use yarn@4 in the project) or commit a package-lock.json instead`},
		{name: "npm wins over pnpm and yarn", files: map[string]string{"yarn.lock": "", "pnpm-lock.yaml": "", "package-lock.json": "{}"},
			manager: NPM, lockfile: "package-lock.json", ignored: []string{"pnpm-lock.yaml", "yarn.lock"}, install: npmCI,
			describe: "npm ci (package-lock.json; ignored pnpm-lock.yaml, yarn.lock)"},
		{name: "npm wins without corepack", files: map[string]string{"pnpm-lock.yaml": "", "package-lock.json": "{}"},
			manager: NPM, lockfile: "package-lock.json", ignored: []string{"pnpm-lock.yaml"}, install: npmCI,
			describe: "npm ci (package-lock.json; ignored pnpm-lock.yaml)"},
		{name: "packageManager chooses among lockfiles", files: map[string]string{"pnpm-lock.yaml": "", "package-lock.json": "{}"}, extraPkgs: `"packageManager":"pnpm@9.15.0+sha512.abc",`,
			corepack: true, manager: PNPM, lockfile: "pnpm-lock.yaml", ignored: []string{"package-lock.json"},
			install: []string{"corepack", "pnpm", "install", "--frozen-lockfile"}, build: []string{"corepack", "pnpm", "run", "build"},
			toolEnv: []string{"COREPACK_ENABLE_DOWNLOAD_PROMPT=0"}, describe: "corepack pnpm install (pnpm-lock.yaml; ignored package-lock.json)", noLegacy: true},
		{name: "packageManager without its lockfile", files: map[string]string{"package-lock.json": "{}"}, extraPkgs: `"packageManager":"pnpm@9.15.0",`,
			manager: NPM, lockfile: "package-lock.json", install: npmCI, describe: "npm ci"},
		{name: "a lockfile directory is no lockfile", files: map[string]string{"package-lock.json/x": ""}, manager: NPM, install: npmInstall, describe: "npm install (no lockfile)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files := map[string]string{"package.json": `{` + tt.extraPkgs + `"scripts":{"build":"vite build"},"devDependencies":{"vite":"7"}}`}
			for k, v := range tt.files {
				files[k] = v
			}
			p, err := Detect(project(t, files), domain.BuildConfig{}, tt.corepack)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr || !IsUserError(err) {
					t.Fatalf("err =\n%v\nwant user error\n%s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			build := tt.build
			if build == nil {
				build = []string{"npm", "run", "build"}
			}
			if p.PackageManager != tt.manager || p.Lockfile != tt.lockfile || !reflect.DeepEqual(p.IgnoredLockfiles, tt.ignored) ||
				!reflect.DeepEqual(p.InstallArgs, tt.install) || !reflect.DeepEqual(p.BuildArgs, build) ||
				!reflect.DeepEqual(p.ToolEnv, tt.toolEnv) || p.YarnBerry != tt.berry || p.UsesCorepack != (tt.manager != NPM) {
				t.Errorf("plan = %+v", p)
			}
			if tt.noLegacy != (p.InstallArgsLegacyPeers == nil) {
				t.Errorf("InstallArgsLegacyPeers = %q", p.InstallArgsLegacyPeers)
			}
			if !tt.noLegacy && !reflect.DeepEqual(p.InstallArgsLegacyPeers, append(append([]string(nil), p.InstallArgs...), "--legacy-peer-deps")) {
				t.Errorf("InstallArgsLegacyPeers = %q", p.InstallArgsLegacyPeers)
			}
			if want := "Vite 7, " + tt.describe + ", build: "; !strings.HasPrefix(p.Describe(), want) {
				t.Errorf("Describe = %q, want prefix %q", p.Describe(), want)
			}
		})
	}
}

func TestFindOutput(t *testing.T) {
	plan := func(files map[string]string, cfg domain.BuildConfig) (*Plan, string) {
		t.Helper()
		dir := project(t, files)
		p, err := Detect(dir, cfg, false)
		if err != nil {
			t.Fatal(err)
		}
		return p, dir
	}

	t.Run("other: first existing in order", func(t *testing.T) {
		p, dir := plan(map[string]string{"package.json": pkgOther, "public/favicon.ico": "", "build/index.html": "", "dist": "a file, not a dir"}, domain.BuildConfig{})
		got, err := p.FindOutput(dir)
		if err != nil || got != filepath.Join(dir, "build") {
			t.Fatalf("FindOutput = %q, %v", got, err)
		}
	})
	t.Run("other: public as a last resort", func(t *testing.T) {
		p, dir := plan(map[string]string{"package.json": pkgOther, "public/index.html": ""}, domain.BuildConfig{})
		got, err := p.FindOutput(dir)
		if err != nil || got != filepath.Join(dir, "public") {
			t.Fatalf("FindOutput = %q, %v", got, err)
		}
	})
	t.Run("other: nothing", func(t *testing.T) {
		p, dir := plan(map[string]string{"package.json": pkgOther}, domain.BuildConfig{})
		_, err := p.FindOutput(dir)
		if err == nil || err.Error() != "build finished but produced none of out/, dist/, build/, public/: set buildConfig.outputDir" || !IsUserError(err) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("next: out", func(t *testing.T) {
		p, dir := plan(map[string]string{"package.json": pkgNext, "out/index.html": ""}, domain.BuildConfig{})
		if got, err := p.FindOutput(dir); err != nil || got != filepath.Join(dir, "out") {
			t.Fatalf("FindOutput = %q, %v", got, err)
		}
	})
	t.Run("next: no out", func(t *testing.T) {
		p, dir := plan(map[string]string{"package.json": pkgNext, ".next/x": ""}, domain.BuildConfig{})
		_, err := p.FindOutput(dir)
		if err == nil || err.Error() != "build finished but produced no out/: check that next build ran (a custom buildCommand must run next build) or set buildConfig.outputDir" {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("next: configured dir missing but out exists", func(t *testing.T) {
		p, dir := plan(map[string]string{"package.json": pkgNext, "out/index.html": ""}, domain.BuildConfig{OutputDir: "build"})
		_, err := p.FindOutput(dir)
		want := "build/: buildConfig.outputDir names a directory the build did not produce: fix buildConfig.outputDir (Next.js static exports land in out/: remove buildConfig.outputDir)"
		if err == nil || err.Error() != want {
			t.Fatalf("err =\n%v\nwant\n%s", err, want)
		}
	})
	t.Run("vite: no dist", func(t *testing.T) {
		p, dir := plan(map[string]string{"package.json": pkgVite}, domain.BuildConfig{})
		_, err := p.FindOutput(dir)
		if err == nil || err.Error() != "build finished but produced no dist/: set buildConfig.outputDir to where the build writes the site" {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("configured dir missing", func(t *testing.T) {
		p, dir := plan(map[string]string{"package.json": pkgVite, "dist/index.html": ""}, domain.BuildConfig{OutputDir: "site/www"})
		_, err := p.FindOutput(dir)
		if err == nil || err.Error() != "site/www/: buildConfig.outputDir names a directory the build did not produce: fix buildConfig.outputDir" {
			t.Fatalf("err = %v", err)
		}
		if got := Under(err, "proj").Error(); !strings.HasPrefix(got, "proj/site/www/: ") {
			t.Fatalf("Under = %q", got)
		}
	})
	t.Run("static: the project itself", func(t *testing.T) {
		p, dir := plan(map[string]string{"package.json": pkgNoBld, "index.html": ""}, domain.BuildConfig{Framework: "static"})
		if got, err := p.FindOutput(dir); err != nil || got != filepath.Join(dir, ".") {
			t.Fatalf("FindOutput = %q, %v", got, err)
		}
	})
	t.Run("static: configured dir missing", func(t *testing.T) {
		p, dir := plan(map[string]string{"package.json": pkgNoBld}, domain.BuildConfig{Framework: "static", OutputDir: "www"})
		_, err := p.FindOutput(dir)
		if err == nil || err.Error() != "www/: buildConfig.outputDir names a directory the project does not have: fix buildConfig.outputDir" {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("a link out of the project is refused", func(t *testing.T) {
		p, dir := plan(map[string]string{"package.json": pkgVite}, domain.BuildConfig{})
		if err := os.Symlink(t.TempDir(), filepath.Join(dir, "dist")); err != nil {
			t.Fatal(err)
		}
		_, err := p.FindOutput(dir)
		if err == nil || err.Error() != "dist/: the output directory is a link to outside the project" || !IsUserError(err) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("a link inside the project is fine", func(t *testing.T) {
		p, dir := plan(map[string]string{"package.json": pkgVite, "real/index.html": ""}, domain.BuildConfig{})
		if err := os.Symlink("real", filepath.Join(dir, "dist")); err != nil {
			t.Fatal(err)
		}
		if got, err := p.FindOutput(dir); err != nil || got != filepath.Join(dir, "dist") {
			t.Fatalf("FindOutput = %q, %v", got, err)
		}
	})
}

func TestNoteInstalledVersion(t *testing.T) {
	dir := project(t, map[string]string{"package.json": pkgNext, "app/": "", "node_modules/next/package.json": `{"name":"next","version":"16.0.1"}`})
	p, err := Detect(dir, domain.BuildConfig{}, false)
	if err != nil {
		t.Fatal(err)
	}
	if p.FrameworkVersion != "^16.0.1" {
		t.Fatalf("FrameworkVersion = %q", p.FrameworkVersion)
	}
	p.NoteInstalledVersion(dir)
	if got := p.Describe(); got != "Next.js 16.0.1 (app router), npm install (no lockfile), build: npm run build, output: out/" {
		t.Errorf("Describe = %q", got)
	}
	p = &Plan{Framework: Vite, FrameworkVersion: "^7"}
	p.NoteInstalledVersion(dir) // no vite installed: unchanged
	if p.FrameworkVersion != "^7" {
		t.Errorf("FrameworkVersion = %q", p.FrameworkVersion)
	}
}
