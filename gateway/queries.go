package gateway

import (
	"net/http"
	"strconv"

	"github.com/zipship/zipship/domain"
	"github.com/zipship/zipship/infra/eventstore"
	"github.com/zipship/zipship/projections"
)

// anyRole is every role: what reading a tenant's data needs.
var anyRole = []domain.Role{domain.RoleOwner, domain.RoleAdmin, domain.RoleMember}

// pagination reads page (1-based) and pageSize (1-100, default 20).
func pagination(w http.ResponseWriter, r *http.Request) (page, size int, ok bool) {
	page, size = 1, 20
	q := r.URL.Query()
	if v := q.Get("page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1_000_000 {
			writeError(w, http.StatusBadRequest, "invalid_request", "page must be a positive integer")
			return 0, 0, false
		}
		page = n
	}
	if v := q.Get("pageSize"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			writeError(w, http.StatusBadRequest, "invalid_request", "pageSize must be between 1 and 100")
			return 0, 0, false
		}
		size = n
	}
	return page, size, true
}

func paginationView(page, size, total int) map[string]int {
	return map[string]int{"page": page, "pageSize": size, "total": total}
}

// buildView adds the URLs to a projected build.
type buildView struct {
	*projections.Build
	URL           string `json:"url,omitempty"`
	DeploymentURL string `json:"deploymentUrl,omitempty"`
	Live          bool   `json:"live"`
}

func (s *Server) viewBuild(b *projections.Build, liveBuild string) buildView {
	v := buildView{Build: b, Live: b.ID == liveBuild}
	if b.Status == domain.StatusSuccess || b.ManifestKey != "" {
		v.URL, v.DeploymentURL = s.cfg.URLs(b.TenantID, b.ID)
	}
	return v
}

func (s *Server) liveBuild(r *http.Request, tenant string) string {
	if p, err := s.rm.Pointer(r.Context(), tenant); err == nil {
		return p.BuildID
	}
	return ""
}

func (s *Server) listBuilds(w http.ResponseWriter, r *http.Request, user string, t *domain.Tenant) {
	tenant := t.ID()
	page, size, ok := pagination(w, r)
	if !ok {
		return
	}
	builds, total, err := s.rm.ListBuilds(r.Context(), tenant, page, size)
	if err != nil {
		s.fail(w, r, tenant, err)
		return
	}
	live := s.liveBuild(r, tenant)
	views := make([]buildView, 0, len(builds))
	for i := range builds {
		views = append(views, s.viewBuild(&builds[i], live))
	}
	writeJSON(w, http.StatusOK, map[string]any{"success": true,
		"data": map[string]any{"builds": views, "pagination": paginationView(page, size, total)}})
}

func (s *Server) getBuild(w http.ResponseWriter, r *http.Request, user string, t *domain.Tenant) {
	tenant := t.ID()
	b, err := s.rm.GetBuild(r.Context(), tenant, r.PathValue("build"))
	if err != nil {
		s.fail(w, r, tenant, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"success": true,
		"data": map[string]any{"build": s.viewBuild(b, s.liveBuild(r, tenant))}})
}

// cancelBuild handles POST /api/builds/{t}/{b}/cancel: owners and admins
// cancel any build of the tenant, members their own.
func (s *Server) cancelBuild(w http.ResponseWriter, r *http.Request, user string, t *domain.Tenant) {
	tenant := t.ID()
	b, err := s.rm.GetBuild(r.Context(), tenant, r.PathValue("build"))
	if err != nil {
		s.fail(w, r, tenant, err)
		return
	}
	if role, _ := t.RoleOf(user); role == domain.RoleMember && b.RequestedBy != user {
		writeError(w, http.StatusForbidden, "forbidden", "members cancel only their own builds")
		return
	}
	res, err := s.app.CancelBuild(r.Context(), meta(r), user, b.ID)
	if err != nil {
		s.fail(w, r, tenant, err)
		return
	}
	s.wait(r.Context(), res.Position)
	writeJSON(w, http.StatusAccepted, map[string]any{"success": true, "message": "cancel requested",
		"data": map[string]any{"build": map[string]any{"id": b.ID, "tenantId": tenant}}})
}

func (s *Server) listDeployments(w http.ResponseWriter, r *http.Request, user string, t *domain.Tenant) {
	tenant := t.ID()
	page, size, ok := pagination(w, r)
	if !ok {
		return
	}
	deps, total, err := s.rm.Deployments(r.Context(), tenant, page, size)
	if err != nil {
		s.fail(w, r, tenant, err)
		return
	}
	type depView struct {
		projections.Deployment
		DeploymentURL string `json:"deploymentUrl"`
	}
	views := make([]depView, 0, len(deps))
	for _, d := range deps {
		_, perm := s.cfg.URLs(tenant, d.BuildID)
		views = append(views, depView{Deployment: d, DeploymentURL: perm})
	}
	data := map[string]any{"deployments": views, "pagination": paginationView(page, size, total), "current": nil}
	if p, err := s.rm.Pointer(r.Context(), tenant); err == nil {
		data["current"] = p
	}
	liveURL, _ := s.cfg.URLs(tenant, "")
	data["url"] = liveURL
	writeJSON(w, http.StatusOK, map[string]any{"success": true, "data": data})
}

func (s *Server) rollback(w http.ResponseWriter, r *http.Request, user string, t *domain.Tenant) {
	tenant := t.ID()
	var body struct {
		BuildID string `json:"buildId"`
	}
	if !decodeJSON(w, r, &body) {
		return
	}
	if body.BuildID == "" {
		writeError(w, http.StatusBadRequest, "invalid_request", "buildId is required")
		return
	}
	if _, err := s.rm.GetBuild(r.Context(), tenant, body.BuildID); err != nil {
		s.fail(w, r, tenant, err)
		return
	}
	e, res, err := s.app.Rollback(r.Context(), meta(r), user, tenant, body.BuildID)
	if err != nil {
		s.fail(w, r, tenant, err)
		return
	}
	// The event is the truth; the pointer object and the CDN follow it. A
	// failure here is repaired by the next sync (start-up or next move).
	if _, err := s.app.SyncPointer(r.Context(), tenant, s.cfg.Refresher); err != nil {
		s.log.Error("sync pointer after rollback", "tenant", tenant, "err", err)
	}
	s.wait(r.Context(), res.Position)
	live, perm := s.cfg.URLs(tenant, e.BuildID)
	writeJSON(w, http.StatusOK, map[string]any{"success": true, "message": "rolled back",
		"data": map[string]any{"deployment": map[string]any{
			"tenantId": tenant, "buildId": e.BuildID, "version": e.Version, "previous": e.Previous,
			"url": live, "deploymentUrl": perm, "at": e.At,
		}}})
}

// auditEvent is one event as the audit log shows it.
type auditEvent struct {
	Position      int64  `json:"position"`
	ID            string `json:"id"`
	Stream        string `json:"stream"`
	Version       int64  `json:"version"`
	Type          string `json:"type"`
	Time          string `json:"time"`
	CorrelationID string `json:"correlationId,omitempty"`
	Data          any    `json:"data"`
}

func (s *Server) audit(w http.ResponseWriter, r *http.Request, user string, t *domain.Tenant) {
	tenant := t.ID()
	q := r.URL.Query()
	after, limit := int64(0), 100
	if v := q.Get("after"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, "invalid_request", "after must be a non-negative event position")
			return
		}
		after = n
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			writeError(w, http.StatusBadRequest, "invalid_request", "limit must be between 1 and 1000")
			return
		}
		limit = n
	}
	evs, err := s.app.Events().ReadAll(r.Context(), after, eventstore.ReadOptions{Tenant: tenant, Limit: limit})
	if err != nil {
		s.fail(w, r, tenant, err)
		return
	}
	out := make([]auditEvent, 0, len(evs))
	next := after
	for _, e := range evs {
		d, err := domain.Decode(e.Type, e.Data)
		if err != nil {
			s.fail(w, r, tenant, err)
			return
		}
		out = append(out, auditEvent{Position: e.Position, ID: e.ID.String(), Stream: e.Stream, Version: e.Version,
			Type: e.Type, Time: e.Time.UTC().Format("2006-01-02T15:04:05.000Z07:00"), CorrelationID: e.CorrelationID, Data: d})
		next = e.Position
	}
	data := map[string]any{"events": out, "after": after, "next": nil}
	if len(evs) == limit {
		data["next"] = "/api/tenants/" + tenant + "/audit?after=" + strconv.FormatInt(next, 10) + "&limit=" + strconv.Itoa(limit)
	}
	writeJSON(w, http.StatusOK, map[string]any{"success": true, "data": data})
}

func (s *Server) events(w http.ResponseWriter, r *http.Request, user string, t *domain.Tenant) {
	tenant := t.ID()
	s.hub.Serve(w, r, tenant)
}
