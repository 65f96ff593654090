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

	"github.com/zipship/zipship/app"
	"github.com/zipship/zipship/archive"
	"github.com/zipship/zipship/domain"
	"github.com/zipship/zipship/infra/blob"
)

// ErrNeedsRunner is the detect failure for projects with a package.json
// until the sandboxed build runner exists: never publish sources silently.
var ErrNeedsRunner = errors.New("builds need a runner")

// pipeline is one attempt's state as it moves through the steps.
type pipeline struct {
	r   *Runner
	run *app.Run
	ws  string // workspace root

	req      domain.BuildRequested
	zipPath  string
	srcDir   string
	project  *Project
	siteDir  string
	manifest *blob.Manifest
}

func (p *pipeline) execute(ctx context.Context) error {
	steps := []struct {
		step domain.Step
		fn   func(context.Context) (string, error)
	}{
		{domain.StepValidate, p.validate},
		{domain.StepWorkspace, p.workspace},
		{domain.StepDownload, p.download},
		{domain.StepExtract, p.extract},
		{domain.StepDiscover, p.discover},
		{domain.StepDetect, p.detect},
		{domain.StepUpload, p.upload},
		{domain.StepActivate, p.activate},
		{domain.StepInvalidate, p.invalidate},
	}
	for _, s := range steps {
		if err := p.run.Step(ctx, s.step, s.fn); err != nil {
			return err
		}
		if s.step == domain.StepUpload {
			m := p.manifest
			if err := p.run.Publish(ctx, blob.ManifestKey(m.Tenant, m.BuildID), len(m.Files), m.TotalSize); err != nil {
				return &app.StepError{Step: domain.StepUpload, Err: err, Retryable: true}
			}
		}
	}
	m := p.manifest
	if err := p.run.Succeed(ctx, blob.ManifestKey(m.Tenant, m.BuildID), len(m.Files), m.TotalSize); err != nil {
		return &app.StepError{Step: domain.StepInvalidate, Err: err, Retryable: true}
	}
	return nil
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
	return fmt.Sprintf("source %d bytes, %d files", req.Source.Size, req.Source.Files), nil
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

// detect decides how the project becomes static files.
func (p *pipeline) detect(ctx context.Context) (string, error) {
	if p.project.PackageJSON != "" {
		return "", app.UserError(fmt.Errorf("%w: %s found; building npm projects (Next.js, Vite, npm run build) is not available on this server yet — upload the built static output (with index.html) instead", ErrNeedsRunner, p.project.Rel(p.project.PackageJSON)))
	}
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
