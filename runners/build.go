package runners

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/zipship/zipship/app"
	"github.com/zipship/zipship/buildlog"
	"github.com/zipship/zipship/domain"
	"github.com/zipship/zipship/infra/blob"
	"github.com/zipship/zipship/runners/detect"
	"github.com/zipship/zipship/runners/egress"
	"github.com/zipship/zipship/runners/sandbox"
)

// TailLines is how many of a failed command's last output lines its
// error quotes.
const TailLines = 50

// maxTailLine caps one quoted line, so that an error stays readable.
const maxTailLine = 500

// MaxCommandLogBytes caps the output of one sandboxed command (stdout and
// stderr together) that goes to the build log, which the runner keeps in
// memory until the attempt ends and then stores: a build printing without
// end must not exhaust either. The rest is left out of the log; a failed
// command's error still quotes its last lines.
const MaxCommandLogBytes = 16 << 20

// corepackHome is where corepack keeps the package managers it downloads
// during the install, inside the job's workspace but outside the project:
// the build step (no network) needs the same ones, and $HOME is a fresh
// tmpfs in every job.
const corepackHome = sandbox.WorkspaceDir + "/corepack"

// corepackRegistry is where corepack downloads pnpm and Yarn from
// (COREPACK_NPM_REGISTRY): the npm registry the install step may reach.
// Without it corepack fetches Yarn from registry.yarnpkg.com and Yarn 2+
// from repo.yarnpkg.com.
const corepackRegistry = "https://registry.npmjs.org"

// corepackSignatureSigns are corepack's errors when it cannot check the
// npm registry's signature of a package manager it downloads.
var corepackSignatureSigns = []string{"No compatible signature found in package metadata", "was not signed by any trusted keys"}

// reservedEnv are variables the runner sets for every job: a user
// variable of one of these names is ignored, so that a build cannot, say,
// change PATH or point itself at another proxy (or turn off corepack's
// integrity check, COREPACK_INTEGRITY_KEYS).
var reservedEnv = map[string]bool{
	"PATH": true, "HOME": true, "USER": true, "LOGNAME": true, "TMPDIR": true,
	"HTTP_PROXY": true, "HTTPS_PROXY": true, "http_proxy": true, "https_proxy": true,
	"NO_PROXY": true, "no_proxy": true, "ALL_PROXY": true, "all_proxy": true,
	"npm_config_proxy": true, "npm_config_https_proxy": true, "COREPACK_HOME": true,
	"COREPACK_NPM_REGISTRY": true, "COREPACK_DEFAULT_TO_LATEST": true, "COREPACK_INTEGRITY_KEYS": true,
}

// npmEnv keeps npm from asking the registry whether a newer npm exists
// (a refused connection during the build, a wasted one during the
// install).
var npmEnv = []string{"npm_config_update_notifier=false"}

// loadEnv reads the build's environment variable values from blob storage
// (never from an event) and adds them to the log's secrets.
func (p *pipeline) loadEnv(ctx context.Context) error {
	if p.req.EnvKey == "" {
		return nil
	}
	obj, err := p.r.app.Blobs().Open(ctx, p.req.EnvKey)
	if err != nil {
		return app.InfraError(fmt.Errorf("environment variables: %w", err))
	}
	defer obj.Close()
	data, err := io.ReadAll(io.LimitReader(obj, 4*domain.MaxEnvTotalBytes))
	if err != nil {
		return app.InfraError(fmt.Errorf("environment variables: %w", err))
	}
	var env map[string]string
	if err := json.Unmarshal(data, &env); err != nil {
		// Never quote the content: it is the values.
		return app.InfraError(fmt.Errorf("environment variables at %s: not a JSON object of strings", p.req.EnvKey))
	}
	p.env = env
	secrets := make([]string, 0, len(env))
	for _, v := range env {
		secrets = append(secrets, v)
	}
	b := p.run.Build()
	p.log = p.r.cfg.Logs.Open(b.Tenant(), b.ID(), secrets)
	return nil
}

// install runs the plan's install command in the sandbox; its only way out
// is the egress proxy allowing Config.InstallAllow.
func (p *pipeline) install(ctx context.Context) (string, error) {
	env := mergeEnv(p.plan.ToolEnv, p.corepackEnv(), npmEnv)
	allow := p.r.cfg.InstallAllow
	if p.plan.PackageManager == detect.Yarn && slices.Contains(allow, egress.NPMRegistry) {
		// Yarn 1 fetches the tarballs from the URLs in yarn.lock, which
		// name Yarn's mirror of the npm registry (it never rewrites them
		// to the configured registry); Yarn 2+ asks that mirror too unless
		// the project's npmRegistryServer says otherwise. An operator's
		// own list (a mirror) is left alone.
		allow = union(allow, []string{egress.YarnRegistry})
	}
	job := jobSpec{step: domain.StepInstall, args: p.plan.InstallArgs, env: env, allow: allow,
		network: true, allowPrivate: p.r.cfg.InstallAllowPrivate, timeout: p.r.cfg.InstallTimeout}
	out, err := p.runJob(ctx, job)
	if err != nil {
		return "", err
	}
	if out.failed() && p.plan.InstallArgsLegacyPeers != nil && out.mentions("ERESOLVE") {
		// Conflicting peer dependencies: what the reference system always
		// did, but only when needed.
		p.log.Printf("npm could not resolve the peer dependencies (ERESOLVE): trying again with --legacy-peer-deps")
		job.args = p.plan.InstallArgsLegacyPeers
		if out, err = p.runJob(ctx, job); err != nil {
			return "", err
		}
	}
	if out.failed() && p.plan.UsesCorepack && out.mentions(corepackSignatureSigns...) {
		return "", app.UserError(fmt.Errorf("%w\ncorepack could not verify the npm registry's signature of %s: pin it with its hash in package.json's packageManager, e.g. \"%s@<version>+sha512.<hash>\" (corepack use %s@<version> writes it); corepack then checks the download against that hash",
			out.failure(), p.plan.PackageManager, p.plan.PackageManager, p.plan.PackageManager))
	}
	if out.failed() {
		return "", app.UserError(out.failure())
	}
	p.plan.NoteInstalledVersion(p.project.Dir)
	detail := out.summary()
	if v := p.plan.FrameworkVersion; v != "" && (p.plan.Framework == detect.NextJS || p.plan.Framework == detect.Vite) {
		detail += fmt.Sprintf("; %s %s installed", map[string]string{detect.NextJS: "next", detect.Vite: "vite"}[p.plan.Framework], v)
	}
	return detail, nil
}

// configure prepares the build: the user's variables split between the
// process environment and .env.production.local (detect.SplitEnv), and
// for Next.js the static-export wrapper around the user's configuration.
// The detail names variables, never their values.
func (p *pipeline) configure(ctx context.Context) (string, error) {
	user := map[string]string{}
	var ignored []string
	for name, value := range p.env {
		if reservedEnv[name] {
			ignored = append(ignored, name)
			continue
		}
		user[name] = value
	}
	process, file, err := detect.SplitEnv(p.project.Dir, user)
	if err != nil {
		return "", p.classify(err)
	}
	if err := detect.WriteEnvProduction(p.project.Dir, file); err != nil {
		var pe *fs.PathError
		if detect.IsUserError(err) || !errors.As(err, &pe) {
			// A link planted as the file, or a value no dotenv file can
			// hold: the message names the variable, not its value.
			return "", app.UserError(detect.Under(err, p.projectRel()))
		}
		return "", app.InfraError(err)
	}
	p.buildEnv = process

	parts := []string{"NODE_ENV=production, " + detect.EnvBuildID + ", " + detect.EnvTenantID}
	if len(user) > 0 {
		parts = append(parts, "variables: "+strings.Join(sortedNames(user), ", "))
	}
	if len(file) > 0 {
		parts = append(parts, fmt.Sprintf("%s in %s (the project's .env files define them)", strings.Join(sortedNames(file), ", "), detect.EnvFile))
	}
	if len(ignored) > 0 {
		sort.Strings(ignored)
		parts = append(parts, "ignored (set by the runner): "+strings.Join(ignored, ", "))
	}
	if p.plan.Framework == detect.NextJS {
		d, err := detect.PrepareNextExport(p.project.Dir)
		if err != nil {
			return "", p.classify(err)
		}
		parts = append(parts, d)
	}
	return strings.Join(parts, "; "), nil
}

// build runs the plan's build command in the sandbox, with no network
// unless the operator's BuildAllow or the build's buildConfig.egressAllow
// name hosts, which it then reaches through the egress proxy only.
func (p *pipeline) build(ctx context.Context) (string, error) {
	b := p.run.Build()
	env := mergeEnv(detect.BuildEnv(b.ID(), b.Tenant(), p.buildEnv), p.plan.ToolEnv, p.corepackEnv(), npmEnv)
	allow := union(p.r.cfg.BuildAllow, p.req.Config.EgressAllow)
	job := jobSpec{step: domain.StepBuild, args: p.plan.BuildArgs, env: env, allow: allow,
		network: len(allow) > 0, timeout: p.r.cfg.BuildTimeout}
	out, err := p.runJob(ctx, job)
	if err != nil {
		return "", err
	}
	if out.failed() {
		return "", app.UserError(out.failure())
	}
	detail := out.summary()
	if !job.network {
		detail += "; no network"
	}
	return detail, nil
}

// export finds the build's output, removes what is never published and
// checks that the rest can be.
func (p *pipeline) export(ctx context.Context) (string, error) {
	dir, err := p.plan.FindOutput(p.project.Dir)
	if err != nil {
		if !detect.IsUserError(err) {
			return "", app.InfraError(err)
		}
		// The output directories are relative to the project, as
		// buildConfig.outputDir is: say where the project is instead of
		// rewriting them.
		if rel := p.projectRel(); rel != "." {
			err = fmt.Errorf("in %s/: %w", rel, err)
		}
		return "", app.UserError(err)
	}
	resolved, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return "", app.InfraError(err)
	}
	rel, err := filepath.Rel(p.project.Dir, dir)
	if err != nil {
		return "", app.InfraError(err)
	}
	name := filepath.ToSlash(rel) + "/"
	if rel == "." {
		name = "the project directory"
	}
	inZip := func(sub string) string { // a path as the user sees it in the ZIP
		return path.Join(p.projectRel(), filepath.ToSlash(rel), sub)
	}
	pruned, err := pruneSite(resolved)
	if err != nil {
		return "", app.InfraError(err)
	}
	files := 0
	var refused error // the first file that cannot be published
	err = filepath.WalkDir(resolved, func(fp string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		sub, _ := filepath.Rel(resolved, fp)
		sub = filepath.ToSlash(sub)
		switch {
		case d.IsDir():
			return nil
		case d.Type()&fs.ModeSymlink != 0:
			refused = fmt.Errorf("%s is a symbolic link: the output must hold regular files only (copy the file instead)", inZip(sub))
		case !d.Type().IsRegular():
			refused = fmt.Errorf("%s is not a regular file: the output must hold regular files only", inZip(sub))
		case blob.ValidateKey(sub) != nil:
			refused = fmt.Errorf("%s: a name that cannot be published as a URL path", inZip(sub))
		default:
			files++
			return nil
		}
		return filepath.SkipAll
	})
	if err != nil {
		return "", app.InfraError(fmt.Errorf("read the output: %w", err))
	}
	if refused != nil {
		return "", app.UserError(refused)
	}
	if files == 0 {
		return "", app.UserError(fmt.Errorf("the build's output %s is empty: nothing to publish", inZip("")+"/"))
	}
	p.siteDir = resolved
	detail := fmt.Sprintf("%s: %d files", name, files)
	if pruned > 0 {
		detail += fmt.Sprintf("; %d never published (.env, .git, .DS_Store, __MACOSX)", pruned)
	}
	return detail, nil
}

// corepackEnv points corepack at the workspace for projects that use it.
//
// Corepack's integrity check stays on (COREPACK_INTEGRITY_KEYS is never
// set): every package manager it downloads is checked against a hash, or
// against the npm registry's signature when there is no hash. The hash
// comes from package.json's packageManager ("pnpm@9.15.0+sha512.<hex>",
// what corepack use writes), or, for a project that pins no version, from
// the release built into corepack (COREPACK_DEFAULT_TO_LATEST=0: corepack
// does not ask the registry for the latest release, which would need the
// signature check and give builds that change under the user's feet). Only
// a version pinned without a hash ("pnpm@9.15.0") needs the registry's
// signature; where the registry (or what intercepts it) serves metadata
// without signatures such an install fails, and install says to pin the
// hash. (Corepack 0.34 reads no COREPACK_INTEGRITY_CHECK; its switch is
// COREPACK_INTEGRITY_KEYS=0, deliberately not used.)
func (p *pipeline) corepackEnv() []string {
	if !p.plan.UsesCorepack {
		return nil
	}
	env := []string{"COREPACK_HOME=" + corepackHome, "COREPACK_NPM_REGISTRY=" + corepackRegistry, "COREPACK_DEFAULT_TO_LATEST=0"}
	if _, err := os.Stat(systemCABundle); err == nil {
		env = append(env, "NODE_EXTRA_CA_CERTS="+systemCABundle)
	}
	return env
}

// systemCABundle is the system's CA bundle (Debian's layout), which the
// sandbox binds from the host's /etc/ssl. npm is pointed at it by the
// host's npmrc (cafile); corepack downloads with Node's fetch, which only
// trusts Node's own CAs unless NODE_EXTRA_CA_CERTS adds these (it adds,
// never replaces): needed where the registry is reached through a proxy
// with its own CA, harmless elsewhere.
const systemCABundle = "/etc/ssl/certs/ca-certificates.crt"

// jobSpec is one sandboxed command of a step.
type jobSpec struct {
	step domain.Step
	args []string
	env  []string
	// network gives the job an egress proxy allowing allow; without it
	// the job has only a loopback interface.
	network      bool
	allow        []string
	allowPrivate bool
	timeout      time.Duration
}

// jobOutcome is how a sandboxed command ended.
type jobOutcome struct {
	spec    jobSpec
	res     sandbox.Result
	tail    []string // last output lines, redacted
	refused []string // destinations the proxy refused
	stats   egress.Stats
	policy  egress.Policy
	memory  int64
}

// runJob runs spec in the sandbox on the workspace, in the project
// directory, streaming its output to the build log. The error is for the
// infrastructure (the sandbox, the network namespace) or a cancellation;
// how the command ended is in the outcome.
func (p *pipeline) runJob(ctx context.Context, spec jobSpec) (*jobOutcome, error) {
	b := p.run.Build()
	id := fmt.Sprintf("%s-%d-%s", b.ID(), b.Attempt(), spec.step)
	out := &jobOutcome{spec: spec, memory: p.r.cfg.MemoryBytes}
	env := spec.env
	var netns string
	if spec.network {
		pol, err := egress.ParsePolicy(spec.allow)
		if err != nil {
			if spec.step == domain.StepBuild && len(p.req.Config.EgressAllow) > 0 {
				return nil, app.UserError(fmt.Errorf("buildConfig.egressAllow: %w", err))
			}
			return nil, app.InfraError(fmt.Errorf("the runner's allow-list for the %s step: %w", spec.step, err))
		}
		out.policy = pol
		jn, err := egress.NewJobNetwork(id, pol, egress.ProxyOptions{
			NetNSDir: p.r.cfg.NetNSDir, AllowPrivate: spec.allowPrivate,
			Log: p.r.log.With("build", b.ID(), "step", spec.step),
		})
		if err != nil {
			return nil, app.InfraError(fmt.Errorf("job network: %w", err))
		}
		defer func() {
			if err := jn.Close(); err != nil {
				p.r.log.Warn("close job network", "build", b.ID(), "err", err)
			}
		}()
		netns = jn.NetNSPath()
		env = mergeEnv(env, jn.Env())
		defer func() {
			out.refused = jn.Refused()
			out.stats = jn.Stats()
		}()
		p.log.Printf("network: only %s, through the egress proxy", strings.Join(pol.Allow, ", "))
	} else {
		p.log.Printf("network: none")
	}

	// stdout and stderr come through separate pipes with no order between
	// them, so each keeps its own tail; the error quotes stderr's last
	// lines after stdout's, which is where tools put the cause.
	tailOut, tailErr := newTailBuffer(TailLines), newTailBuffer(TailLines/2)
	stdout, stderr := p.log.Writer(buildlog.Stdout), p.log.Writer(buildlog.Stderr)
	tout, terr := tailOut.writer(), tailErr.writer()
	budget := &logBudget{left: MaxCommandLogBytes, over: func() {
		p.log.Printf("output of this command over %s: the rest is left out of the log", formatBytes(MaxCommandLogBytes))
	}}
	p.log.Printf("$ %s", strings.Join(spec.args, " "))
	res, err := p.r.cfg.Sandbox.Run(ctx, sandbox.Job{
		ID:        id,
		Args:      spec.args,
		Env:       env,
		Dir:       path.Join(sandbox.WorkspaceDir, "src", p.projectRel()),
		Workspace: p.ws,
		Timeout:   spec.timeout,
		Stdout:    io.MultiWriter(budget.writer(stdout), tout),
		Stderr:    io.MultiWriter(budget.writer(stderr), terr),
		NetNSPath: netns,
	})
	stdout.Close()
	stderr.Close()
	tout.Close()
	terr.Close()
	if err != nil {
		if ctx.Err() != nil {
			return nil, app.InfraError(context.Cause(ctx))
		}
		return nil, app.InfraError(err)
	}
	out.res = res
	errLines := tailErr.lines()
	outLines := tailOut.lines()
	if keep := TailLines - len(errLines); len(outLines) > keep {
		outLines = outLines[len(outLines)-keep:]
	}
	for _, l := range append(outLines, errLines...) {
		if strings.TrimSpace(l) == "" || strings.Contains(l, "A complete log of this run can be found in") {
			continue // blank, or npm's debug log, in a $HOME that is gone
		}
		out.tail = append(out.tail, p.log.Redact(l))
	}
	switch {
	case res.TimedOut:
		p.log.Printf("killed: the %s step's time limit (%s) is over", spec.step, spec.timeout)
	case res.OOMKilled:
		p.log.Printf("out of memory (limit %s); exit %d", formatBytes(out.memory), res.ExitCode)
	default:
		p.log.Printf("exit %d in %s", res.ExitCode, res.Duration.Round(time.Millisecond))
	}
	return out, nil
}

// failed says whether the command did not succeed.
func (o *jobOutcome) failed() bool {
	return o.res.ExitCode != 0 || o.res.TimedOut || o.res.OOMKilled
}

// noNetworkSigns are what a command that tried to reach the network
// without one prints.
var noNetworkSigns = []string{"EAI_AGAIN", "ENOTFOUND", "getaddrinfo", "ENETUNREACH", "fetch failed", "Failed to fetch"}

// mentions says whether the command's last lines contain one of ss.
func (o *jobOutcome) mentions(ss ...string) bool {
	for _, l := range o.tail {
		for _, s := range ss {
			if strings.Contains(l, s) {
				return true
			}
		}
	}
	return false
}

// summary is the detail of a command that succeeded.
func (o *jobOutcome) summary() string {
	s := fmt.Sprintf("%s: exit 0 in %s", strings.Join(o.spec.args, " "), o.res.Duration.Round(100*time.Millisecond))
	if o.spec.network {
		s += fmt.Sprintf("; %d connections through the egress proxy, %s received", o.stats.Tunnels+o.stats.Requests, formatBytes(o.stats.BytesIn))
		if len(o.refused) > 0 {
			s += "; refused: " + strings.Join(o.refused, ", ")
		}
	}
	return s
}

// failure is the user error of a command that failed: why, what the
// egress proxy refused (and how to allow it), then the last lines of its
// output.
func (o *jobOutcome) failure() error {
	var b strings.Builder
	step := string(o.spec.step)
	switch {
	case o.res.TimedOut:
		fmt.Fprintf(&b, "%s timed out: killed after %s, the %s step's time limit", step, o.spec.timeout, step)
	case o.res.OOMKilled:
		fmt.Fprintf(&b, "%s ran out of memory: killed at the sandbox's memory limit of %s (exit %d)", step, formatBytes(o.memory), o.res.ExitCode)
	default:
		fmt.Fprintf(&b, "%s failed (exit %d)", step, o.res.ExitCode)
	}
	if o.res.PidsLimited && !o.res.OOMKilled {
		fmt.Fprintf(&b, ": the %s hit its process limit (%d processes)", step, o.res.PidsLimit)
	}
	for _, target := range o.refused {
		b.WriteString("\n" + o.refusal(target))
	}
	if !o.spec.network && o.spec.step == domain.StepBuild && o.mentions(noNetworkSigns...) {
		b.WriteString("\nthe build step has no network: if it must download something (next/font/google needs fonts.googleapis.com and fonts.gstatic.com), add those hosts to buildConfig.egressAllow")
	}
	if len(o.tail) > 0 {
		b.WriteString(":\n")
		b.WriteString(strings.Join(o.tail, "\n"))
	}
	return errors.New(b.String())
}

// refusal explains one destination the egress proxy refused.
func (o *jobOutcome) refusal(target string) string {
	host, port := target, egress.DefaultPort
	if i := strings.LastIndexByte(target, ':'); i > 0 {
		host = strings.Trim(target[:i], "[]")
		fmt.Sscan(target[i+1:], &port)
	}
	listed := o.policy.Allowed(host, port)
	switch {
	case o.spec.step == domain.StepInstall && listed:
		return fmt.Sprintf("the egress proxy refused %s: it resolves to a non-public address (an operator can allow that for the install step with the runner's --install-allow-private, e.g. for a registry mirror on the internal network)", target)
	case o.spec.step == domain.StepInstall:
		return fmt.Sprintf("the egress proxy refused %s: the install step may only reach %s (an operator can allow more hosts with the runner's --install-allow)", target, strings.Join(o.policy.Allow, ", "))
	case listed:
		return fmt.Sprintf("the egress proxy refused %s: it resolves to a non-public address, which builds may never reach", target)
	default:
		return fmt.Sprintf("the egress proxy refused %s: the %s step may not reach it: add it to buildConfig.egressAllow", target, o.spec.step)
	}
}

// logBudget passes a command's output to the build log until left bytes
// (of stdout and stderr together) went through, then drops the rest and
// calls over once.
type logBudget struct {
	mu   sync.Mutex
	left int64
	over func()
	said bool
}

// writer returns a writer into w that spends the budget.
func (b *logBudget) writer(w io.Writer) io.Writer {
	return writerFunc(func(p []byte) (int, error) {
		b.mu.Lock()
		keep := min(int64(len(p)), b.left)
		b.left -= keep
		say := keep < int64(len(p)) && !b.said
		b.said = b.said || say
		b.mu.Unlock()
		if keep > 0 {
			if _, err := w.Write(p[:keep]); err != nil {
				return 0, err
			}
		}
		if say {
			b.over()
		}
		return len(p), nil
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// tailBuffer keeps the last n lines written through its writers (one per
// stream, so that partial lines of stdout and stderr never mix).
type tailBuffer struct {
	mu    sync.Mutex
	n     int
	buf   []string
	start int
}

func newTailBuffer(n int) *tailBuffer { return &tailBuffer{n: n} }

func (t *tailBuffer) add(line string) {
	line = strings.TrimRight(line, "\r")
	if len(line) > maxTailLine {
		line = line[:maxTailLine] + "…"
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.buf) < t.n {
		t.buf = append(t.buf, line)
		return
	}
	t.buf[t.start] = line
	t.start = (t.start + 1) % t.n
}

func (t *tailBuffer) lines() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]string, 0, len(t.buf))
	out = append(out, t.buf[t.start:]...)
	return append(out, t.buf[:t.start]...)
}

// writer returns a line-splitting writer into t.
func (t *tailBuffer) writer() io.WriteCloser { return &tailWriter{t: t} }

type tailWriter struct {
	t       *tailBuffer
	partial []byte
}

func (w *tailWriter) Write(p []byte) (int, error) {
	n := len(p)
	for {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			if len(w.partial) < 64<<10 {
				w.partial = append(w.partial, p...)
			}
			return n, nil
		}
		w.partial = append(w.partial, p[:i]...)
		w.t.add(string(w.partial))
		w.partial = w.partial[:0]
		p = p[i+1:]
	}
}

func (w *tailWriter) Close() error {
	if len(w.partial) > 0 {
		w.t.add(string(w.partial))
		w.partial = nil
	}
	return nil
}

// mergeEnv merges KEY=value lists; a later list's value wins, and each key
// appears once, where it first appeared.
func mergeEnv(lists ...[]string) []string {
	idx := map[string]int{}
	var out []string
	for _, l := range lists {
		for _, kv := range l {
			k, _, _ := strings.Cut(kv, "=")
			if i, ok := idx[k]; ok {
				out[i] = kv
				continue
			}
			idx[k] = len(out)
			out = append(out, kv)
		}
	}
	return out
}

// union returns the entries of a and b, each once, in order.
func union(a, b []string) []string {
	var out []string
	for _, s := range slices.Concat(a, b) {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

func sortedNames(m map[string]string) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// formatBytes prints n in binary units: "2 GiB", "1.5 MiB", "512 B".
func formatBytes(n int64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	f, i := float64(n), 0
	for f >= 1024 && i < len(units)-1 {
		f /= 1024
		i++
	}
	if i == 0 || f == float64(int64(f)) {
		return fmt.Sprintf("%d %s", int64(f), units[i])
	}
	return fmt.Sprintf("%.1f %s", f, units[i])
}

// discardBlobs is the blob store of the build logs when the runner has no
// log broker: logs are dropped.
type discardBlobs struct{}

func (discardBlobs) Put(_ context.Context, _ string, r io.Reader) (int64, error) {
	return io.Copy(io.Discard, r)
}
func (discardBlobs) Open(context.Context, string) (blob.Object, error) { return nil, blob.ErrNotFound }
func (discardBlobs) Stat(context.Context, string) (blob.Info, error) {
	return blob.Info{}, blob.ErrNotFound
}
func (discardBlobs) Delete(context.Context, string) error              { return nil }
func (discardBlobs) List(context.Context, string) ([]blob.Info, error) { return nil, nil }

var _ blob.Store = discardBlobs{}
