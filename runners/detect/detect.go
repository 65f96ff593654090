// Package detect decides what kind of Node.js project an upload is and how
// to turn it into static files: framework, package manager and install
// command, build command and output directory (Detect); it prepares a
// Next.js project for a static export (PrepareNextExport), refuses what a
// static export cannot serve (CheckNextStaticExport), and builds the build's
// environment (BuildEnv, SplitEnv, WriteEnvProduction).
//
// Problems only the project's author can fix are *UserError (or
// UserErrors): they name the file at fault relative to the project
// directory. Every other error is the build server's.
//
// # Environment
//
// Every dotenv loader a static build uses (Next.js's @next/env, Vite,
// Create React App, dotenv itself) lets a variable already in the process
// environment win over every .env file. Between files, the more specific
// wins: Next.js reads .env.production.local, .env.local, .env.production,
// .env and keeps the first value it finds; Vite reads them in the reverse
// order and keeps the last. Inside one file the last line wins (both).
// So the process environment (BuildEnv) is the channel that always wins,
// and .env.production.local is the file that wins over the user's others.
//
// One trap decides the rest: Next.js (and Create React App's
// dotenv-expand 5) expands $VAR and unescapes \$ in the process
// environment's value of every variable that some .env file also defines.
// A value "hello $USER" passed in the process environment arrives intact
// unless the user's .env.production also has that name; then it is
// rewritten. Hence SplitEnv: a variable that one of the user's .env files
// defines goes into .env.production.local (escaped, so it arrives intact
// and wins over the user's files); every other variable goes into the
// process environment, where every tool, including scripts that run before
// the framework, sees it. No variable is in both places.
//
// The package reads and writes the workspace through os.Root: a symbolic
// link planted by the project (an install script can create one) never
// makes the host read or write outside the project directory.
package detect

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/zipship/zipship/domain"
)

// Frameworks, as in domain.BuildConfig.Framework.
const (
	NextJS = "nextjs"
	Vite   = "vite"
	Static = "static"
	Other  = "other"
)

// Package managers.
const (
	NPM  = "npm"
	PNPM = "pnpm"
	Yarn = "yarn"
)

// npmFlags are added to every npm install: no audit or funding requests
// (network round trips and noise the user cannot act on here), only errors
// in the log, and devDependencies even if NODE_ENV=production leaked into
// the install's environment (builds need vite, typescript, …).
var npmFlags = []string{"--no-audit", "--no-fund", "--loglevel=error", "--include=dev"}

// OtherOutputCandidates are the directories looked for, in order, after the
// build of a project with no known framework and no buildConfig.outputDir.
var OtherOutputCandidates = []string{"out", "dist", "build", "public"}

// Plan is how to build one project.
type Plan struct {
	// Framework is NextJS, Vite, Static or Other.
	Framework string
	// FrameworkVersion is the version range package.json asks for
	// ("^16.0.1"), or the installed version once NoteInstalledVersion has
	// read it; "" for Static and Other.
	FrameworkVersion string
	// Router is, for Next.js, "app", "pages" or "app+pages" (from app/,
	// pages/, src/app/, src/pages/); "" otherwise or when neither exists.
	Router string
	// Detected is the framework package.json implies, when the build
	// configuration overrode it with another one.
	Detected string

	// PackageManager is NPM, PNPM or Yarn.
	PackageManager string
	// Lockfile is the lockfile that chose the package manager, "" when the
	// project has none.
	Lockfile string
	// IgnoredLockfiles are other lockfiles present and not used.
	IgnoredLockfiles []string
	// YarnBerry is true for a Yarn 2+ lockfile (it has __metadata).
	YarnBerry bool
	// UsesCorepack is true when InstallArgs and BuildArgs run pnpm or yarn
	// through corepack. Corepack downloads the package manager from the
	// npm registry during the install and caches it in COREPACK_HOME: the
	// build step, which has no network, needs the same COREPACK_HOME.
	UsesCorepack bool
	// ToolEnv are environment variables the install and build commands
	// need (COREPACK_ENABLE_DOWNLOAD_PROMPT=0, and for Yarn Berry
	// YARN_ENABLE_GLOBAL_CACHE=false so that Plug'n'Play's packages stay
	// in the project's .yarn/cache, which the build step sees).
	ToolEnv []string

	// InstallArgs is the install command as argv; nil when nothing is
	// installed (Static). Its environment must not set NODE_ENV=production:
	// pnpm and Yarn 1 would then skip devDependencies (npm gets
	// --include=dev).
	InstallArgs []string
	// InstallArgsLegacyPeers is, for npm, InstallArgs with
	// --legacy-peer-deps: what the reference system always ran. Use it only
	// to retry an install that failed with npm's ERESOLVE (conflicting peer
	// dependencies); nil for pnpm and yarn.
	InstallArgsLegacyPeers []string
	// BuildArgs is the build command as argv (buildConfig.buildCommand runs
	// as sh -c); nil when nothing is built (Static).
	BuildArgs []string
	// CustomBuild is true when BuildArgs comes from buildConfig.buildCommand.
	CustomBuild bool

	// OutputDir is the directory the static site is in after the build,
	// relative to the project ("." for the project itself); "" when it is
	// the first of OutputCandidates that exists after the build.
	OutputDir string
	// OutputCandidates are the directories FindOutput tries, in order.
	OutputCandidates []string
	// ConfiguredOutput is true when OutputDir is buildConfig.outputDir.
	ConfiguredOutput bool

	// NodeVersionWanted is buildConfig.nodeVersion ("" when not set).
	NodeVersionWanted string
	// EnginesNode is package.json's engines.node ("" when not set).
	EnginesNode string
	// NodeVersion is the Node.js version the build runs on; the runner
	// sets it (Detect does not know the sandbox).
	NodeVersion string

	// PackageType is package.json's "type" ("module" or "").
	PackageType string
}

// packageJSON is the part of package.json that Detect reads. Fields that
// only inform (engines, packageManager) are decoded leniently.
type packageJSON struct {
	Type            json.RawMessage   `json:"type"`
	Scripts         map[string]string `json:"scripts"`
	Dependencies    map[string]string `json:"dependencies"`
	DevDependencies map[string]string `json:"devDependencies"`
	PackageManager  json.RawMessage   `json:"packageManager"`
	Engines         json.RawMessage   `json:"engines"`
}

// Detect reads projectDir/package.json and decides how to build the project
// under cfg. sandboxHasCorepack says whether the build sandbox can run
// corepack (pnpm and yarn projects need it). Problems of the project are
// *UserError naming "package.json" or the lockfile.
func Detect(projectDir string, cfg domain.BuildConfig, sandboxHasCorepack bool) (*Plan, error) {
	root, err := os.OpenRoot(projectDir)
	if err != nil {
		return nil, fmt.Errorf("detect: %w", err)
	}
	defer root.Close()

	pkg, err := readPackageJSON(root)
	if err != nil {
		return nil, err
	}
	p := &Plan{NodeVersionWanted: cfg.NodeVersion, EnginesNode: enginesNode(pkg.Engines)}
	_ = json.Unmarshal(pkg.Type, &p.PackageType)

	// Framework.
	detected := Other
	if _, ok := dependency(pkg, "next"); ok {
		detected = NextJS
	} else if _, ok := dependency(pkg, "vite"); ok {
		detected = Vite
	}
	switch cfg.Framework {
	case "":
		p.Framework = detected
	case NextJS, Vite, Static, Other:
		p.Framework = cfg.Framework
		if cfg.Framework != detected && detected != Other {
			p.Detected = detected
		}
	default:
		return nil, userErr("", "", fmt.Sprintf("buildConfig.framework %q is unknown: use nextjs, vite, static or other", cfg.Framework))
	}
	if p.Framework == NextJS || p.Framework == Vite {
		name := map[string]string{NextJS: "next", Vite: "vite"}[p.Framework]
		p.FrameworkVersion, _ = dependency(pkg, name)
	}
	if p.Framework == NextJS {
		p.Router = nextRouter(root)
	}

	if p.Framework == Static {
		if cfg.BuildCommand != "" {
			return nil, userErr("", "", `buildConfig.buildCommand is set but buildConfig.framework is "static" (publish the files as they are, no install, no build): remove one of them`)
		}
		p.OutputDir, p.ConfiguredOutput = ".", false
		if cfg.OutputDir != "" {
			p.OutputDir, p.ConfiguredOutput = cleanRel(cfg.OutputDir), true
		}
		p.OutputCandidates = []string{p.OutputDir}
		return p, nil
	}

	// Package manager.
	if err := p.choosePackageManager(root, pkg, sandboxHasCorepack); err != nil {
		return nil, err
	}

	// Build command.
	switch {
	case cfg.BuildCommand != "":
		p.BuildArgs, p.CustomBuild = []string{"sh", "-c", cfg.BuildCommand}, true
	case pkg.Scripts["build"] != "":
		switch p.PackageManager {
		case PNPM:
			p.BuildArgs = []string{"corepack", "pnpm", "run", "build"}
		case Yarn:
			p.BuildArgs = []string{"corepack", "yarn", "run", "build"}
		default:
			p.BuildArgs = []string{"npm", "run", "build"}
		}
	default:
		hint := ""
		if _, err := root.Stat("index.html"); err == nil {
			hint = `, or set buildConfig.framework to "static" to publish the files as they are`
		}
		return nil, userErr("package.json at ", "package.json", ` has no "build" script: add one (e.g. "build": "vite build") or set buildConfig.buildCommand`+hint)
	}

	// Output directory.
	switch {
	case cfg.OutputDir != "":
		p.OutputDir, p.ConfiguredOutput = cleanRel(cfg.OutputDir), true
		p.OutputCandidates = []string{p.OutputDir}
	case p.Framework == NextJS:
		p.OutputDir, p.OutputCandidates = "out", []string{"out"}
	case p.Framework == Vite:
		p.OutputDir, p.OutputCandidates = "dist", []string{"dist"}
	default:
		p.OutputCandidates = append([]string(nil), OtherOutputCandidates...)
	}
	return p, nil
}

// readPackageJSON reads and strictly decodes package.json.
func readPackageJSON(root *os.Root) (*packageJSON, error) {
	data, err := root.ReadFile("package.json")
	if err != nil {
		return nil, fmt.Errorf("detect: read package.json: %w", err)
	}
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf")) // npm tolerates a UTF-8 BOM
	if t := bytes.TrimLeft(data, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return nil, userErr("package.json at ", "package.json", " is not valid JSON: it must be an object ({ … })")
	}
	var pkg packageJSON
	if err := json.Unmarshal(data, &pkg); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &se):
			line, col := lineCol(data, se.Offset)
			return nil, userErr("package.json at ", "package.json", fmt.Sprintf(" is not valid JSON: %s at line %d, column %d", se.Error(), line, col))
		case errors.As(err, &te):
			return nil, userErr("package.json at ", "package.json", fmt.Sprintf(" is not valid: %q must be an object of strings", te.Field))
		default:
			return nil, userErr("package.json at ", "package.json", " is not valid JSON: "+err.Error())
		}
	}
	return &pkg, nil
}

// lineCol turns a byte offset (just past the offending byte, as
// json.SyntaxError reports it) into a 1-based line and column.
func lineCol(data []byte, off int64) (line, col int) {
	if off > int64(len(data)) {
		off = int64(len(data))
	}
	if off > 0 {
		off-- // the offending byte itself
	}
	before := data[:off]
	line = bytes.Count(before, []byte("\n")) + 1
	col = int(off) - (bytes.LastIndexByte(before, '\n') + 1) + 1
	return line, col
}

func dependency(pkg *packageJSON, name string) (string, bool) {
	if v, ok := pkg.Dependencies[name]; ok {
		return v, true
	}
	v, ok := pkg.DevDependencies[name]
	return v, ok
}

func enginesNode(raw json.RawMessage) string {
	var e struct {
		Node string `json:"node"`
	}
	if json.Unmarshal(raw, &e) != nil {
		return ""
	}
	return e.Node
}

func nextRouter(root *os.Root) string {
	isDir := func(name string) bool {
		fi, err := root.Stat(name)
		return err == nil && fi.IsDir()
	}
	app := isDir("app") || isDir("src/app")
	pages := isDir("pages") || isDir("src/pages")
	switch {
	case app && pages:
		return "app+pages"
	case app:
		return "app"
	case pages:
		return "pages"
	}
	return ""
}

// lockfiles in the order they win when several are present (npm first: it
// needs no corepack), unless package.json's packageManager names another.
var lockfiles = []struct{ name, manager string }{
	{"package-lock.json", NPM},
	{"npm-shrinkwrap.json", NPM},
	{"pnpm-lock.yaml", PNPM},
	{"yarn.lock", Yarn},
}

func (p *Plan) choosePackageManager(root *os.Root, pkg *packageJSON, sandboxHasCorepack bool) error {
	var pm string
	_ = json.Unmarshal(pkg.PackageManager, &pm)
	pmName, pmVersion, _ := strings.Cut(pm, "@")

	var present []string
	for _, l := range lockfiles {
		if fi, err := root.Stat(l.name); err == nil && fi.Mode().IsRegular() {
			present = append(present, l.name)
		}
	}
	managerOf := func(name string) string {
		for _, l := range lockfiles {
			if l.name == name {
				return l.manager
			}
		}
		return ""
	}
	chosen := ""
	for _, name := range present { // packageManager's own lockfile first
		if managerOf(name) == pmName {
			chosen = name
			break
		}
	}
	if chosen == "" && len(present) > 0 {
		chosen = present[0]
	}
	for _, name := range present {
		if name != chosen {
			p.IgnoredLockfiles = append(p.IgnoredLockfiles, name)
		}
	}
	p.Lockfile = chosen

	switch managerOf(chosen) {
	case "":
		p.PackageManager = NPM
		p.InstallArgs = append([]string{"npm", "install"}, npmFlags...)
	case NPM:
		p.PackageManager = NPM
		p.InstallArgs = append([]string{"npm", "ci"}, npmFlags...)
	case PNPM:
		if !sandboxHasCorepack {
			return noCorepack(chosen, "pnpm")
		}
		p.PackageManager, p.UsesCorepack = PNPM, true
		p.InstallArgs = []string{"corepack", "pnpm", "install", "--frozen-lockfile"}
		p.ToolEnv = []string{"COREPACK_ENABLE_DOWNLOAD_PROMPT=0"}
	case Yarn:
		if !sandboxHasCorepack {
			return noCorepack(chosen, "yarn")
		}
		p.PackageManager, p.UsesCorepack = Yarn, true
		p.ToolEnv = []string{"COREPACK_ENABLE_DOWNLOAD_PROMPT=0"}
		lock, err := root.ReadFile(chosen)
		if err != nil {
			return fmt.Errorf("detect: read %s: %w", chosen, err)
		}
		p.YarnBerry = bytes.Contains(lock, []byte("__metadata:"))
		if !p.YarnBerry {
			p.InstallArgs = []string{"corepack", "yarn", "install", "--frozen-lockfile"}
			break
		}
		// Without packageManager, corepack runs Yarn 1, which cannot read a
		// Berry lockfile, unless .yarnrc.yml points at a committed release.
		berryPinned := pmName == Yarn && pmVersion != "" && !strings.HasPrefix(pmVersion, "1.")
		if !berryPinned && !yarnPathSet(root) {
			return userErr("", chosen, `: a Yarn 2+ lockfile but package.json has no "packageManager": "yarn@<version>" (nor .yarnrc.yml a yarnPath): add it (run corepack use yarn@4 in the project) or commit a package-lock.json instead`)
		}
		p.InstallArgs = []string{"corepack", "yarn", "install", "--immutable"}
		p.ToolEnv = append(p.ToolEnv, "YARN_ENABLE_GLOBAL_CACHE=false")
	}
	if p.PackageManager == NPM {
		p.InstallArgsLegacyPeers = append(append([]string(nil), p.InstallArgs...), "--legacy-peer-deps")
	}
	return nil
}

func noCorepack(lockfile, manager string) error {
	return userErr("", lockfile, fmt.Sprintf(": this build server cannot run %s (it has no corepack): commit a package-lock.json instead (npm install --package-lock-only creates one) and remove %s", manager, lockfile))
}

func yarnPathSet(root *os.Root) bool {
	data, err := root.ReadFile(".yarnrc.yml")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "yarnPath:") {
			return true
		}
	}
	return false
}

// cleanRel normalises a relative directory from the build configuration
// (domain.ValidateBuildConfig has refused absolute paths and "..").
func cleanRel(dir string) string {
	c := filepath.ToSlash(filepath.Clean(filepath.FromSlash(dir)))
	if c == "" {
		return "."
	}
	return c
}

// FindOutput returns the absolute path of the built static site in
// projectDir: OutputDir, or the first of OutputCandidates that exists. The
// directory must be inside projectDir even through symbolic links. A missing
// output is a *UserError saying what was looked for.
func (p *Plan) FindOutput(projectDir string) (string, error) {
	base, err := filepath.EvalSymlinks(projectDir)
	if err != nil {
		return "", fmt.Errorf("find output: %w", err)
	}
	for _, c := range p.OutputCandidates {
		dir := filepath.Join(projectDir, filepath.FromSlash(c))
		fi, err := os.Stat(dir)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
				continue
			}
			return "", fmt.Errorf("find output: %w", err)
		}
		if !fi.IsDir() {
			continue
		}
		resolved, err := filepath.EvalSymlinks(dir)
		if err != nil {
			return "", fmt.Errorf("find output: %w", err)
		}
		if rel, err := filepath.Rel(base, resolved); err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
			return "", userErr("", c+"/", ": the output directory is a link to outside the project")
		}
		return dir, nil
	}
	return "", p.missingOutput(projectDir)
}

func (p *Plan) missingOutput(projectDir string) error {
	dirs := make([]string, len(p.OutputCandidates))
	for i, c := range p.OutputCandidates {
		dirs[i] = strings.TrimSuffix(c, "/") + "/"
	}
	switch {
	case p.ConfiguredOutput:
		msg := ": buildConfig.outputDir names a directory the build did not produce: fix buildConfig.outputDir"
		if p.Framework == NextJS {
			if fi, err := os.Stat(filepath.Join(projectDir, "out")); err == nil && fi.IsDir() {
				msg += " (Next.js static exports land in out/: remove buildConfig.outputDir)"
			}
		}
		if p.Framework == Static {
			msg = ": buildConfig.outputDir names a directory the project does not have: fix buildConfig.outputDir"
		}
		return userErr("", dirs[0], msg)
	case p.Framework == NextJS:
		return userErr("build finished but produced no ", dirs[0], ": check that next build ran (a custom buildCommand must run next build) or set buildConfig.outputDir")
	case len(dirs) == 1:
		return userErr("build finished but produced no ", dirs[0], ": set buildConfig.outputDir to where the build writes the site")
	default:
		return userErr("build finished but produced none of ", strings.Join(dirs, ", "), ": set buildConfig.outputDir")
	}
}

// NoteInstalledVersion replaces FrameworkVersion (the range package.json
// asks for) with the version installed in projectDir/node_modules, when it
// can be read; call it after the install so that Describe names the exact
// version.
func (p *Plan) NoteInstalledVersion(projectDir string) {
	name := map[string]string{NextJS: "next", Vite: "vite"}[p.Framework]
	if name == "" {
		return
	}
	root, err := os.OpenRoot(projectDir)
	if err != nil {
		return
	}
	defer root.Close()
	data, err := root.ReadFile("node_modules/" + name + "/package.json")
	if err != nil {
		return
	}
	var pkg struct {
		Version string `json:"version"`
	}
	if json.Unmarshal(data, &pkg) == nil && pkg.Version != "" {
		p.FrameworkVersion = pkg.Version
	}
}

// Describe sums the plan up for the detect step's detail, e.g. "Next.js
// ^16.0.1 (app router), npm ci, build: npm run build, output: out/".
func (p *Plan) Describe() string {
	var parts []string
	switch p.Framework {
	case NextJS:
		s := "Next.js " + p.FrameworkVersion
		if p.Router != "" {
			s += " (" + p.Router + " router)"
		}
		parts = append(parts, strings.TrimSpace(s))
	case Vite:
		parts = append(parts, strings.TrimSpace("Vite "+p.FrameworkVersion))
	case Static:
		parts = append(parts, "static files (no install, no build)")
	default:
		parts = append(parts, "no known framework")
	}
	if p.Detected != "" {
		parts[0] += fmt.Sprintf(" (buildConfig.framework; package.json suggests %s)", p.Detected)
	}
	if p.InstallArgs != nil {
		s := strings.Join(p.InstallArgs[:2+boolInt(p.UsesCorepack)], " ")
		switch {
		case p.Lockfile == "":
			s += " (no lockfile)"
		case len(p.IgnoredLockfiles) > 0:
			s += fmt.Sprintf(" (%s; ignored %s)", p.Lockfile, strings.Join(p.IgnoredLockfiles, ", "))
		}
		parts = append(parts, s)
	}
	if p.BuildArgs != nil {
		if p.CustomBuild {
			parts = append(parts, "build: sh -c "+quoteShort(p.BuildArgs[2]))
		} else {
			parts = append(parts, "build: "+strings.Join(p.BuildArgs, " "))
		}
	}
	switch {
	case p.OutputDir == ".":
		parts = append(parts, "output: the project directory")
	case p.OutputDir != "":
		parts = append(parts, "output: "+p.OutputDir+"/")
	default:
		dirs := make([]string, len(p.OutputCandidates))
		for i, c := range p.OutputCandidates {
			dirs[i] = c + "/"
		}
		parts = append(parts, "output: first of "+strings.Join(dirs, ", "))
	}
	if p.NodeVersionWanted != "" || p.NodeVersion != "" {
		switch {
		case p.NodeVersion == "":
			parts = append(parts, "node "+p.NodeVersionWanted+" wanted")
		case p.NodeVersionWanted == "" || strings.HasPrefix(p.NodeVersion+".", p.NodeVersionWanted+"."):
			parts = append(parts, "node "+p.NodeVersion)
		default:
			parts = append(parts, fmt.Sprintf("node %s (%s wanted)", p.NodeVersion, p.NodeVersionWanted))
		}
	}
	return strings.Join(parts, ", ")
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// quoteShort quotes a command for a one-line detail, cut at 80 bytes.
func quoteShort(s string) string {
	if len(s) > 80 {
		s = s[:77] + "..."
	}
	return fmt.Sprintf("%q", s)
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
