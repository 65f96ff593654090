package gateway

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/zipship/zipship/archive"
	"github.com/zipship/zipship/domain"
	"github.com/zipship/zipship/infra/blob"
	"github.com/zipship/zipship/projections"
)

// multipartSlack is what the upload body may hold beyond the ZIP itself:
// part headers, boundaries and the buildConfig field.
const multipartSlack = 1 << 20

// maxConfigSize caps the buildConfig field.
const maxConfigSize = 256 << 10

// idempotencyNamespace derives a build id from an Idempotency-Key, so two
// racing requests with the same key collide on the same build stream and
// only one of them can create it.
var idempotencyNamespace = uuid.MustParse("6c1f0f5e-2b1a-4e0c-9a55-0e1f3a7c2d11")

// buildConfigBody is the buildConfig field as the reference system sends it.
type buildConfigBody struct {
	Framework            string            `json:"framework"`
	BuildCommand         string            `json:"buildCommand"`
	OutputDir            string            `json:"outputDir"`
	NodeVersion          string            `json:"nodeVersion"`
	EgressAllow          []string          `json:"egressAllow"`
	EnvironmentVariables map[string]string `json:"environmentVariables"`
}

// upload handles POST /api/builds/{tenant}: the ZIP is streamed into blob
// storage while hashed and counted, its central directory is validated, then
// it is stored and BuildRequested appended. Only then is the upload
// acknowledged with 202; any failure before leaves no build, no event and no
// blob behind.
func (s *Server) upload(w http.ResponseWriter, r *http.Request, user string, t *domain.Tenant) {
	tenant := t.ID()
	ctx := r.Context()
	idemKey := r.Header.Get("Idempotency-Key")
	if len(idemKey) > 200 || strings.ContainsFunc(idemKey, func(c rune) bool { return c < ' ' || c == 0x7f }) {
		writeError(w, http.StatusBadRequest, "invalid_idempotency_key", "Idempotency-Key must be at most 200 printable characters")
		return
	}
	buildID, err := uuid.NewV7()
	if err != nil {
		s.fail(w, r, tenant, err)
		return
	}
	if idemKey != "" {
		buildID = uuid.NewSHA1(idempotencyNamespace, []byte(tenant+"\x00"+user+"\x00"+idemKey))
		if b, err := s.app.Build(ctx, buildID.String()); err == nil {
			s.replay(w, r, tenant, b)
			return
		}
	}
	mediaType, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mediaType != "multipart/form-data" {
		writeError(w, http.StatusUnsupportedMediaType, "unsupported_media_type", "send multipart/form-data with a 'file' field holding the ZIP")
		return
	}
	maxBody := s.cfg.MaxUploadSize + multipartSlack
	if r.ContentLength > maxBody {
		// Answer before reading anything; the connection is closed so the
		// rest of the body is never read.
		w.Header().Set("Connection", "close")
		s.tooLarge(w)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)

	// With an Idempotency-Key, racing requests share the build id: each
	// stores its files under keys of its own, so the losers can remove theirs
	// without touching the winner's.
	sourceKey, envKey := blob.SourceKey(tenant, buildID.String()), blob.EnvKey(tenant, buildID.String())
	if idemKey != "" {
		nonce := uuid.NewString()
		sourceKey = strings.TrimSuffix(sourceKey, ".zip") + "-" + nonce + ".zip"
		envKey = strings.TrimSuffix(envKey, ".json") + "-" + nonce + ".json"
	}
	up := &received{blobs: s.app.Blobs(), log: s.log, sourceKey: sourceKey, envKey: envKey}
	if err := s.receive(r, up); err != nil {
		up.undo()
		s.uploadFailed(w, r, tenant, err)
		return
	}
	s.accept(w, r, tenant, user, buildID.String(), idemKey, up)
}

// received is an upload being stored: the blobs it wrote are removed by
// undo unless BuildRequested made them part of a build.
type received struct {
	blobs     blob.Store
	log       *slog.Logger
	sourceKey string
	envKey    string
	stored    []string
	size      int64
	sha256    string
	summary   *archive.Summary
	config    buildConfigBody
}

// undo removes what the upload stored: never leave a blob without its
// event. It uses a fresh context, as the request's may be why we undo.
func (u *received) undo() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, k := range u.stored {
		if err := u.blobs.Delete(ctx, k); err != nil {
			u.log.Error("remove orphan blob", "key", k, "err", err)
		}
	}
	u.stored = nil
}

// errTooLarge marks an upload over the size cap.
var errTooLarge = errors.New("upload too large")

// badRequest is an upload error with its own code.
type badRequest struct {
	status int
	code   string
	msg    string
}

func (e *badRequest) Error() string { return e.msg }

// receive reads the multipart body: the buildConfig field into memory, the
// file field straight into blob storage (hashed and counted on the way), then
// validates both; the ZIP's central directory is read back from the store.
func (s *Server) receive(r *http.Request, up *received) error {
	mr, err := r.MultipartReader()
	if err != nil {
		return &badRequest{http.StatusBadRequest, "invalid_multipart", "multipart body: " + err.Error()}
	}
	var haveFile, haveConfig bool
	var configRaw []byte
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return readErr(err)
		}
		switch part.FormName() {
		case "file":
			if haveFile {
				return &badRequest{http.StatusBadRequest, "invalid_multipart", "more than one 'file' field"}
			}
			haveFile = true
			if err := s.store(r.Context(), up, part); err != nil {
				return err
			}
		case "buildConfig":
			if haveConfig {
				return &badRequest{http.StatusBadRequest, "invalid_multipart", "more than one 'buildConfig' field"}
			}
			haveConfig = true
			configRaw, err = io.ReadAll(io.LimitReader(part, maxConfigSize+1))
			if err != nil {
				return readErr(err)
			}
			if len(configRaw) > maxConfigSize {
				return &badRequest{http.StatusRequestEntityTooLarge, "payload_too_large", fmt.Sprintf("buildConfig exceeds %d bytes", maxConfigSize)}
			}
		default:
			return &badRequest{http.StatusBadRequest, "invalid_multipart", fmt.Sprintf("unknown field %q: send 'file' and optionally 'buildConfig'", part.FormName())}
		}
		part.Close()
	}
	if !haveFile {
		return &badRequest{http.StatusBadRequest, "missing_file", "the 'file' field with the ZIP is required"}
	}
	if err := parseConfig(configRaw, &up.config); err != nil {
		return err
	}
	obj, err := up.blobs.Open(r.Context(), up.sourceKey)
	if err != nil {
		return fmt.Errorf("reopen source: %w", err)
	}
	defer obj.Close()
	sum, err := archive.Validate(obj, up.size, s.cfg.ZipLimits)
	if err != nil {
		return err
	}
	up.summary = sum
	return nil
}

// store streams the file part into blob storage under the source key,
// hashing and counting; over the size cap it fails with errTooLarge.
func (s *Server) store(ctx context.Context, up *received, part io.Reader) error {
	h := sha256.New()
	var rerr error
	body := &readWatch{r: io.LimitReader(part, s.cfg.MaxUploadSize+1), err: &rerr}
	up.stored = append(up.stored, up.sourceKey)
	n, err := up.blobs.Put(ctx, up.sourceKey, io.TeeReader(body, h))
	if rerr != nil {
		return readErr(rerr)
	}
	if err != nil {
		return fmt.Errorf("store source: %w", err)
	}
	if n > s.cfg.MaxUploadSize {
		return errTooLarge
	}
	up.size, up.sha256 = n, hex.EncodeToString(h.Sum(nil))
	return nil
}

// readWatch remembers the error reading the request body, to tell a client
// failure (400, 413) from a storage failure (500) when Put fails.
type readWatch struct {
	r   io.Reader
	err *error
}

func (w *readWatch) Read(p []byte) (int, error) {
	n, err := w.r.Read(p)
	if err != nil && err != io.EOF {
		*w.err = err
	}
	return n, err
}

// readErr classifies an error reading the request body.
func readErr(err error) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return errTooLarge
	}
	if _, ok := err.(*badRequest); ok {
		return err
	}
	return &badRequest{http.StatusBadRequest, "invalid_multipart", "reading the upload: " + err.Error()}
}

func parseConfig(raw []byte, c *buildConfigBody) error {
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(c); err != nil {
		return &badRequest{http.StatusBadRequest, "invalid_build_config", "buildConfig: " + err.Error()}
	}
	if _, err := dec.Token(); err != io.EOF {
		return &badRequest{http.StatusBadRequest, "invalid_build_config", "buildConfig: unexpected data after the JSON object"}
	}
	return domain.ValidateBuildConfig(c.domain(), c.EnvironmentVariables)
}

func (c buildConfigBody) domain() domain.BuildConfig {
	return domain.BuildConfig{Framework: c.Framework, BuildCommand: c.BuildCommand, OutputDir: c.OutputDir,
		NodeVersion: c.NodeVersion, EgressAllow: c.EgressAllow}
}

func (s *Server) tooLarge(w http.ResponseWriter) {
	writeError(w, http.StatusRequestEntityTooLarge, "payload_too_large",
		fmt.Sprintf("upload exceeds the %s limit (ZIPSHIP_MAX_UPLOAD_SIZE)", FormatSize(s.cfg.MaxUploadSize)))
}

func (s *Server) uploadFailed(w http.ResponseWriter, r *http.Request, tenant string, err error) {
	var br *badRequest
	switch {
	case errors.Is(err, errTooLarge):
		w.Header().Set("Connection", "close")
		s.tooLarge(w)
	case errors.As(err, &br):
		writeError(w, br.status, br.code, br.msg)
	default:
		s.fail(w, r, tenant, err)
	}
}

// accept stores the validated upload and appends BuildRequested.
func (s *Server) accept(w http.ResponseWriter, r *http.Request, tenant, user, buildID, idemKey string, up *received) {
	ctx := r.Context()
	now := time.Now().UTC()
	req := domain.BuildRequested{
		BuildID: buildID, TenantID: tenant, Version: "v" + strconv.FormatInt(now.UnixMilli(), 10), RequestedBy: user,
		Source: domain.Source{Key: up.sourceKey, SHA256: up.sha256, Size: up.size,
			Files: up.summary.Files, Uncompressed: up.summary.TotalUncompressed},
		Config: up.config.domain(), IdempotencyKey: idemKey, At: now,
	}
	if env := up.config.EnvironmentVariables; len(env) > 0 {
		req.EnvKey = up.envKey
		for name := range env {
			req.EnvNames = append(req.EnvNames, name)
		}
		sort.Strings(req.EnvNames)
		data, _ := json.Marshal(env)
		up.stored = append(up.stored, req.EnvKey)
		if _, err := s.app.Blobs().Put(ctx, req.EnvKey, bytes.NewReader(data)); err != nil {
			up.undo()
			s.fail(w, r, tenant, fmt.Errorf("store environment: %w", err))
			return
		}
	}
	res, err := s.app.RequestBuild(ctx, meta(r), req)
	if err != nil {
		up.undo()
		if errors.Is(err, domain.ErrBuildExists) && idemKey != "" {
			// A concurrent request with the same key won: answer with its build.
			if b, berr := s.app.Build(ctx, buildID); berr == nil {
				s.replay(w, r, tenant, b)
				return
			}
		}
		s.fail(w, r, tenant, err)
		return
	}
	s.wait(ctx, res.Position)
	s.log.Info("build requested", "tenant", tenant, "build", buildID, "user", user, "bytes", up.size, "files", up.summary.Files)
	s.writeBuildAccepted(w, http.StatusAccepted, "build queued", tenant, buildID, req.Version, string(domain.StatusPending), res.Position)
}

// replay answers an Idempotency-Key repeat with the build it created.
func (s *Server) replay(w http.ResponseWriter, r *http.Request, tenant string, b *domain.Build) {
	if b.Tenant() != tenant {
		notFoundTenant(w, tenant)
		return
	}
	status := string(b.Status())
	if pb, err := s.rm.GetBuild(r.Context(), tenant, b.ID()); err == nil {
		status = string(pb.Status)
	} else if !errors.Is(err, projections.ErrNotFound) {
		s.fail(w, r, tenant, err)
		return
	}
	// Events after the request: the client may follow from the start.
	s.writeBuildAccepted(w, http.StatusOK, "build already requested with this Idempotency-Key", tenant, b.ID(), b.Version(), status, 0)
}

func (s *Server) writeBuildAccepted(w http.ResponseWriter, code int, msg, tenant, id, version, status string, position int64) {
	after := position - 1
	if after < 0 {
		after = 0
	}
	self := "/api/builds/" + tenant + "/" + id
	w.Header().Set("Location", self)
	writeJSON(w, code, map[string]any{
		"success": true,
		"message": msg,
		"data": map[string]any{"build": map[string]any{
			"id": id, "tenantId": tenant, "version": version, "status": status,
		}},
		"links": map[string]string{
			"self":   self,
			"events": "/api/tenants/" + tenant + "/events?after=" + strconv.FormatInt(after, 10),
		},
	})
}
