// Package gateway is zipship's HTTP API: JSON over HTTP with bearer JWTs,
// tenants and members, streamed ZIP uploads that become builds, build and
// deployment queries, rollback, the audit log, and live events. It is
// stateless: commands go to the event store through app.App, queries to the
// projections' read models.
package gateway

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/zipship/zipship/app"
	"github.com/zipship/zipship/archive"
	"github.com/zipship/zipship/auth"
	"github.com/zipship/zipship/buildlog"
	"github.com/zipship/zipship/domain"
	"github.com/zipship/zipship/gateway/live"
	"github.com/zipship/zipship/infra/cdn"
	"github.com/zipship/zipship/projections"
)

// Waiter blocks until the read models have applied an event position, so a
// client's next query sees its own write.
type Waiter interface {
	WaitFor(ctx context.Context, position int64) error
}

// Config holds the gateway's settings.
type Config struct {
	// Secret verifies bearer tokens (HS256).
	Secret []byte
	// MaxUploadSize caps the ZIP's size in bytes.
	MaxUploadSize int64
	// ZipLimits are the rules every upload's central directory must pass.
	ZipLimits archive.Limits
	// URLs builds a tenant's live URL and a build's permanent URL.
	URLs live.URLs
	// Refresher is told when a rollback moved a pointer.
	Refresher cdn.Refresher
	// Logs follows running builds' output (nil: stored logs only).
	Logs *buildlog.Broker
	// ReadYourWrites bounds how long a command waits for the read models.
	ReadYourWrites time.Duration
	Log            *slog.Logger
}

// Server serves the API.
type Server struct {
	app    *app.App
	rm     *projections.DB
	waiter Waiter
	hub    *live.Hub
	cfg    Config
	log    *slog.Logger
}

// DefaultMaxUploadSize is the reference system's upload cap: 100 MB.
const DefaultMaxUploadSize = 100 << 20

// New returns a gateway over the application, its read models and the live
// event hub.
func New(a *app.App, rm *projections.DB, waiter Waiter, hub *live.Hub, cfg Config) *Server {
	if cfg.MaxUploadSize <= 0 {
		cfg.MaxUploadSize = DefaultMaxUploadSize
	}
	if cfg.ZipLimits == (archive.Limits{}) {
		cfg.ZipLimits = archive.DefaultLimits()
	}
	if cfg.ReadYourWrites == 0 {
		cfg.ReadYourWrites = 2 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.URLs == nil {
		cfg.URLs = func(string, string) (string, string) { return "", "" }
	}
	return &Server{app: a, rm: rm, waiter: waiter, hub: hub, cfg: cfg, log: cfg.Log}
}

// Handler returns the API's routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"ok": true})
	})
	mux.HandleFunc("POST /api/tenants", s.authed(s.createTenant))
	mux.HandleFunc("GET /api/tenants/{tenant}", s.authed(s.inTenant(s.getTenant, anyRole...)))
	// Any member may ask; the domain decides what their role allows. A
	// non-member learns nothing, not even from a bad body.
	mux.HandleFunc("POST /api/tenants/{tenant}/members", s.authed(s.inTenant(s.addMember, anyRole...)))
	mux.HandleFunc("DELETE /api/tenants/{tenant}/members/{user}", s.authed(s.removeMember))
	mux.HandleFunc("GET /api/tenants/{tenant}/deployments", s.authed(s.inTenant(s.listDeployments, anyRole...)))
	mux.HandleFunc("POST /api/tenants/{tenant}/rollback", s.authed(s.inTenant(s.rollback, domain.RoleOwner, domain.RoleAdmin)))
	mux.HandleFunc("GET /api/tenants/{tenant}/audit", s.authed(s.inTenant(s.audit, anyRole...)))
	mux.HandleFunc("GET /api/tenants/{tenant}/events", s.authedQuery(s.inTenant(s.events, anyRole...)))
	mux.HandleFunc("POST /api/builds/{tenant}", s.authed(s.inTenant(s.upload, anyRole...)))
	mux.HandleFunc("GET /api/builds/{tenant}", s.authed(s.inTenant(s.listBuilds, anyRole...)))
	mux.HandleFunc("GET /api/builds/{tenant}/{build}", s.authed(s.inTenant(s.getBuild, anyRole...)))
	mux.HandleFunc("POST /api/builds/{tenant}/{build}/cancel", s.authed(s.inTenant(s.cancelBuild, anyRole...)))
	mux.HandleFunc("GET /api/builds/{tenant}/{build}/logs", s.authed(s.inTenant(s.buildLogs, anyRole...)))
	return s.recoverer(jsonFallback(mux))
}

// jsonFallback answers requests no route matches with the API's JSON error
// shape: 405 (with Allow) when the path exists for other methods, else 404.
func jsonFallback(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, pattern := mux.Handler(r)
		if pattern != "" {
			mux.ServeHTTP(w, r)
			return
		}
		probe := &statusRecorder{header: http.Header{}}
		h.ServeHTTP(probe, r)
		if probe.status == http.StatusMethodNotAllowed {
			w.Header().Set("Allow", probe.header.Get("Allow"))
			writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", r.Method+" is not allowed on "+r.URL.Path)
			return
		}
		writeError(w, http.StatusNotFound, "not_found", "no such endpoint: "+r.Method+" "+r.URL.Path)
	})
}

// statusRecorder keeps what the mux's own fallback handlers answer.
type statusRecorder struct {
	header http.Header
	status int
}

func (s *statusRecorder) Header() http.Header         { return s.header }
func (s *statusRecorder) Write(b []byte) (int, error) { return len(b), nil }
func (s *statusRecorder) WriteHeader(code int)        { s.status = code }

// handler is an authenticated handler; user is the token's subject.
type handler func(w http.ResponseWriter, r *http.Request, user string)

// tenantHandler is a handler inside the {tenant} of the path, which the
// user belongs to.
type tenantHandler func(w http.ResponseWriter, r *http.Request, user string, t *domain.Tenant)

// inTenant runs h only for members of the path's tenant holding one of
// roles: non-members get 404, exactly as for a tenant that does not exist,
// and members with too small a role 403.
func (s *Server) inTenant(h tenantHandler, roles ...domain.Role) handler {
	return func(w http.ResponseWriter, r *http.Request, user string) {
		tenant := r.PathValue("tenant")
		t, err := s.app.Authorize(r.Context(), tenant, user, roles...)
		if err != nil {
			s.fail(w, r, tenant, err)
			return
		}
		h(w, r, user, t)
	}
}

// authed requires a valid bearer token in the Authorization header.
func (s *Server) authed(h handler) http.HandlerFunc {
	return s.authenticate(h, false)
}

// authedQuery also accepts the token as the access_token query parameter,
// for browsers' EventSource and WebSocket, which cannot set headers.
func (s *Server) authedQuery(h handler) http.HandlerFunc {
	return s.authenticate(h, true)
}

func (s *Server) authenticate(h handler, query bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		token := ""
		if hdr := r.Header.Get("Authorization"); hdr != "" {
			scheme, rest, ok := strings.Cut(hdr, " ")
			if !ok || !strings.EqualFold(scheme, "Bearer") {
				unauthorized(w, "the Authorization header must be 'Bearer <token>'")
				return
			}
			token = strings.TrimSpace(rest)
		} else if query {
			token = r.URL.Query().Get("access_token")
		}
		if token == "" {
			unauthorized(w, "a bearer token is required")
			return
		}
		user, err := auth.Verify(s.cfg.Secret, token)
		if err != nil {
			unauthorized(w, "the bearer token is invalid or expired")
			return
		}
		h(w, r, user)
	}
}

func unauthorized(w http.ResponseWriter, msg string) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="zipship"`)
	writeError(w, http.StatusUnauthorized, "unauthorized", msg)
}

// recoverer turns a handler panic into a 500 instead of a dropped
// connection, and logs it.
func (s *Server) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.log.Error("handler panic", "method", r.Method, "path", r.URL.Path, "panic", v)
				writeError(w, http.StatusInternalServerError, "internal", "internal error")
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// wait gives the read models a moment to apply position (read your writes).
func (s *Server) wait(ctx context.Context, position int64) {
	if s.waiter == nil || position == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ReadYourWrites)
	defer cancel()
	if err := s.waiter.WaitFor(ctx, position); err != nil {
		s.log.Warn("read models lag behind", "position", position, "err", err)
	}
}
