package runners

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/zipship/zipship/app"
	"github.com/zipship/zipship/archive"
	"github.com/zipship/zipship/buildlog"
	"github.com/zipship/zipship/domain"
	"github.com/zipship/zipship/infra/blob"
	"github.com/zipship/zipship/runners/detect"
)

// ErrNeedsRunner is the detect failure for projects with a package.json on
// a runner without a sandbox (Config.Sandbox nil): never publish sources
// silently.
var ErrNeedsRunner = errors.New("builds need a runner")

// pipeline is one attempt's state as it moves through the steps.
type pipeline struct {
	r    *Runner
	run  *app.Run
	ws   string          // workspace root
	actx context.Context // the attempt's: ended by a cancel request
	log  *buildlog.Log
	// current is the step running, for a panic's report.
	current domain.Step

	req      domain.BuildRequested
	env      map[string]string // the user's variables (values: secrets)
	zipPath  string
	srcDir   string
	project  *Project
	plan     *detect.Plan // nil for a static site without package.json
	buildEnv map[string]string
	siteDir  string
	manifest *blob.Manifest
}

// stepFunc is one step's work; it gets the attempt's context.
type stepFunc func(context.Context) (string, error)

func (p *pipeline) execute(ctx context.Context) error {
	type step struct {
		step domain.Step
		fn   stepFunc
	}
	run := func(steps ...step) error {
		for _, s := range steps {
			if err := p.step(ctx, s.step, s.fn); err != nil {
				return err
			}
			if s.step == domain.StepUpload {
				m := p.manifest
				if err := p.run.Publish(ctx, blob.ManifestKey(m.Tenant, m.BuildID), len(m.Files), m.TotalSize); err != nil {
					return &app.StepError{Step: domain.StepUpload, Err: err, Retryable: true}
				}
			}
		}
		return nil
	}
	if err := run(
		step{domain.StepValidate, p.validate},
		step{domain.StepWorkspace, p.workspace},
		step{domain.StepDownload, p.download},
		step{domain.StepExtract, p.extract},
		step{domain.StepDiscover, p.discover},
		step{domain.StepDetect, p.detect},
	); err != nil {
		return err
	}
	if p.plan != nil {
		// A project with a package.json: install and build in the sandbox
		// (a buildConfig.framework "static" project has neither), then find
		// the output.
		var steps []step
		if p.plan.InstallArgs != nil {
			steps = append(steps, step{domain.StepInstall, p.install})
		}
		if p.plan.BuildArgs != nil {
			steps = append(steps, step{domain.StepConfigure, p.configure}, step{domain.StepBuild, p.build})
		}
		steps = append(steps, step{domain.StepExport, p.export})
		if err := run(steps...); err != nil {
			return err
		}
	}
	if err := run(
		step{domain.StepUpload, p.upload},
		step{domain.StepActivate, p.activate},
		step{domain.StepInvalidate, p.invalidate},
	); err != nil {
		return err
	}
	// The stored log exists before anyone hears of the success.
	p.log.Printf("build succeeded")
	p.closeLog()
	m := p.manifest
	if err := p.run.Succeed(ctx, blob.ManifestKey(m.Tenant, m.BuildID), len(m.Files), m.TotalSize); err != nil {
		return &app.StepError{Step: domain.StepInvalidate, Err: err, Retryable: true}
	}
	return nil
}

// step runs fn as the named step. Its events are appended with ctx (the
// runner's); fn gets the attempt's context, which a cancel request ends.
// The detail is redacted (it must never carry a variable's value).
func (p *pipeline) step(ctx context.Context, step domain.Step, fn stepFunc) error {
	return p.run.Step(ctx, step, func(context.Context) (string, error) {
		p.current = step
		if err := p.actx.Err(); err != nil {
			return "", app.InfraError(context.Cause(p.actx))
		}
		p.log.Printf("==> %s", step)
		detail, err := fn(p.actx)
		if err == nil && p.actx.Err() != nil {
			// Cancelled while the step did its last bit of work: do not
			// let the build go on.
			err = app.InfraError(context.Cause(p.actx))
		}
		if err != nil {
			return "", err
		}
		detail = p.log.Redact(detail)
		if detail != "" {
			p.log.Printf("%s: %s", step, detail)
		}
		return detail, nil
	})
}

// redactErr replaces the secrets in an attempt's error, keeping its step
// and classification.
func (p *pipeline) redactErr(err error) error {
	if err == nil {
		return nil
	}
	var se *app.StepError
	if !errors.As(err, &se) {
		step := p.current
		if step == "" {
			step = domain.StepValidate
		}
		se = &app.StepError{Step: step, Err: err, Retryable: true}
	}
	msg := se.Err.Error()
	if red := p.log.Redact(msg); red != msg {
		return &app.StepError{Step: se.Step, Err: errors.New(red), Retryable: se.Retryable}
	}
	return se
}

// closeLog stores the build log; a storage failure is only logged, as the
// build's outcome does not depend on it.
func (p *pipeline) closeLog() {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(p.actx), 30*time.Second)
	defer cancel()
	if err := p.log.Close(ctx); err != nil {
		p.r.log.Error("store build log", "build", p.run.Build().ID(), "err", err)
	}
}

// validate loads the request and checks its source is stored as announced.
func (p *pipeline) validate(ctx context.Context) (string, error) {
	evs, err := p.r.app.Events().ReadStream(ctx, domain.BuildStream(p.run.Build().ID()), 1)
	if err != nil {
		return "", app.InfraError(fmt.Errorf("read build: %w", err))
	}
	if len(evs) == 0 {
		return "", app.InfraError(domain.ErrBuildNotFound)
	}
	d, err := domain.Decode(evs[0].Type, evs[0].Data)
	if err != nil {
		return "", app.InfraError(err)
	}
	req, ok := d.(domain.BuildRequested)
	if !ok {
		return "", app.InfraError(fmt.Errorf("build stream starts with %s", evs[0].Type))
	}
	p.req = req
	info, err := p.r.app.Blobs().Stat(ctx, req.Source.Key)
	if err != nil {
		return "", app.InfraError(fmt.Errorf("source %s: %w", req.Source.Key, err))
	}
	if info.Size != req.Source.Size {
		return "", app.InfraError(fmt.Errorf("source is %d bytes, %d were uploaded", info.Size, req.Source.Size))
	}
	if err := p.loadEnv(ctx); err != nil {
		return "", err
	}
	detail := fmt.Sprintf("source %d bytes, %d files", req.Source.Size, req.Source.Files)
	if len(p.env) > 0 {
		detail += fmt.Sprintf(", %d environment variables", len(p.env))
	}
	return detail, nil
}

func (p *pipeline) workspace(ctx context.Context) (string, error) {
	if err := os.RemoveAll(p.ws); err != nil {
		return "", app.InfraError(fmt.Errorf("clear workspace: %w", err))
	}
	if err := os.MkdirAll(filepath.Join(p.ws, "src"), 0o755); err != nil {
		return "", app.InfraError(fmt.Errorf("create workspace: %w", err))
	}
	p.srcDir = filepath.Join(p.ws, "src")
	return "", nil
}

// download copies the source from blob storage, verifying its digest.
func (p *pipeline) download(ctx context.Context) (string, error) {
	obj, err := p.r.app.Blobs().Open(ctx, p.req.Source.Key)
	if err != nil {
		return "", app.InfraError(fmt.Errorf("open source: %w", err))
	}
	defer obj.Close()
	p.zipPath = filepath.Join(p.ws, "source.zip")
	f, err := os.Create(p.zipPath)
	if err != nil {
		return "", app.InfraError(fmt.Errorf("create %s: %w", p.zipPath, err))
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), obj)
	if err != nil {
		return "", app.InfraError(fmt.Errorf("download source: %w", err))
	}
	if sum := hex.EncodeToString(h.Sum(nil)); sum != p.req.Source.SHA256 {
		return "", app.InfraError(fmt.Errorf("source digest %s, expected %s", sum, p.req.Source.SHA256))
	}
	if err := f.Close(); err != nil {
		return "", app.InfraError(fmt.Errorf("write %s: %w", p.zipPath, err))
	}
	return fmt.Sprintf("%d bytes, sha256 verified", n), nil
}

// extract unpacks the ZIP into the workspace, enforcing the upload rules
// again and counting the bytes actually written.
func (p *pipeline) extract(ctx context.Context) (string, error) {
	f, err := os.Open(p.zipPath)
	if err != nil {
		return "", app.InfraError(err)
	}
	defer f.Close()
	sum, err := archive.Extract(ctx, f, p.req.Source.Size, p.srcDir, p.r.cfg.ZipLimits)
	if err != nil {
		var re *archive.RuleError
		if errors.As(err, &re) {
			return "", app.UserError(err)
		}
		return "", app.InfraError(fmt.Errorf("extract: %w", err))
	}
	// The workspace is what the sandbox sees: keep only the project.
	if err := os.Remove(p.zipPath); err != nil {
		return "", app.InfraError(err)
	}
	return fmt.Sprintf("%d files, %d bytes", sum.Files, sum.TotalUncompressed), nil
}

// discover finds the project (a package.json) or the static site root.
func (p *pipeline) discover(ctx context.Context) (string, error) {
	proj, err := Discover(p.srcDir)
	if err != nil {
		return "", app.UserError(err)
	}
	p.project = proj
	return proj.Describe(), nil
}

// detect decides how the project becomes static files: a static site is
// published as it is; a project with a package.json gets a build plan
// (framework, package manager, commands, output), which needs the sandbox
// unless buildConfig.framework is "static".
func (p *pipeline) detect(ctx context.Context) (string, error) {
	if p.project.PackageJSON == "" {
		p.siteDir = p.project.Dir
		n, err := pruneSite(p.siteDir)
		if err != nil {
			return "", app.InfraError(err)
		}
		if n > 0 {
			return fmt.Sprintf("static site: no build needed; %d files never published (.git, .env, .DS_Store, __MACOSX)", n), nil
		}
		return "static site: no build needed", nil
	}
	if p.r.cfg.Sandbox == nil && p.req.Config.Framework != detect.Static {
		return "", app.UserError(fmt.Errorf("%w: %s found; building npm projects (Next.js, Vite, npm run build) is not available on this server yet — upload the built static output (with index.html) instead", ErrNeedsRunner, p.project.Rel(p.project.PackageJSON)))
	}
	rel := p.projectRel()
	plan, err := detect.Detect(p.project.Dir, p.req.Config, p.r.cfg.Corepack)
	if err != nil {
		return "", p.classify(err)
	}
	if plan.Framework == detect.NextJS {
		if err := detect.CheckNextStaticExport(p.project.Dir); err != nil {
			return "", p.classify(err)
		}
	}
	p.plan = plan
	detail := plan.Describe()
	if rel != "." {
		detail = "in " + rel + "/: " + detail
	}
	return detail, nil
}

// projectRel is the project directory relative to the ZIP's root ("." for
// the root itself), with forward slashes.
func (p *pipeline) projectRel() string {
	rel, err := filepath.Rel(p.srcDir, p.project.Dir)
	if err != nil {
		return "."
	}
	return filepath.ToSlash(rel)
}

// classify marks the detect package's errors: the project's problems
// (naming files as they are in the ZIP) are the user's, the rest the
// server's.
func (p *pipeline) classify(err error) error {
	if detect.IsUserError(err) {
		return app.UserError(detect.Under(err, p.projectRel()))
	}
	return app.InfraError(err)
}

// upload publishes the site's files, content-addressed.
func (p *pipeline) upload(ctx context.Context) (string, error) {
	b := p.run.Build()
	m, st, err := blob.Publish(ctx, p.r.app.Blobs(), b.Tenant(), b.ID(), p.siteDir)
	if err != nil {
		return "", app.InfraError(fmt.Errorf("publish: %w", err))
	}
	p.manifest = m
	return fmt.Sprintf("%d files, %d bytes; %d new blobs (%d bytes), %d reused", st.Files, st.Bytes, st.Uploaded, st.UploadedBytes, st.Reused), nil
}

// activate moves the tenant's pointer to this build, unless a newer build
// is already live (then this build stays reachable at its own URL).
func (p *pipeline) activate(ctx context.Context) (string, error) {
	b := p.run.Build()
	_, err := p.r.app.Activate(ctx, app.Meta{CausationID: b.ID()}, b, b.RequestedBy())
	switch {
	case errors.Is(err, domain.ErrSuperseded):
		return "not activated: " + err.Error(), nil
	case errors.Is(err, domain.ErrAlreadyLive):
		// A previous attempt activated it before dying.
	case err != nil:
		return "", app.InfraError(fmt.Errorf("activate: %w", err))
	}
	ptr, err := p.r.app.SyncPointer(ctx, b.Tenant(), nil)
	if err != nil {
		return "", app.InfraError(err)
	}
	if ptr == nil {
		return "", app.InfraError(errors.New("activated, but the site has no live deployment"))
	}
	return "live: " + ptr.Version, nil
}

// invalidate tells the CDN the pointer moved.
func (p *pipeline) invalidate(ctx context.Context) (string, error) {
	if p.r.cfg.Refresher == nil {
		return "no CDN configured", nil
	}
	if err := p.r.cfg.Refresher.Refresh(ctx, p.run.Build().Tenant()); err != nil {
		return "", app.InfraError(fmt.Errorf("refresh CDN: %w", err))
	}
	return "CDN refreshed", nil
}
