package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"time"

	"github.com/zipship/zipship/app"
	"github.com/zipship/zipship/domain"
)

// maxJSONBody caps small JSON request bodies.
const maxJSONBody = 64 << 10

// decodeJSON reads a small JSON body strictly: unknown fields and trailing
// data are errors.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxJSONBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, "payload_too_large", fmt.Sprintf("request body exceeds %d bytes", maxJSONBody))
			return false
		}
		writeError(w, http.StatusBadRequest, "invalid_json", "request body: "+err.Error())
		return false
	}
	if _, err := dec.Token(); err != io.EOF {
		writeError(w, http.StatusBadRequest, "invalid_json", "request body: unexpected data after the JSON object")
		return false
	}
	return true
}

// meta carries the request's trace context onto the events it appends.
func meta(r *http.Request) app.Meta {
	return app.Meta{
		CorrelationID: r.Header.Get("X-Request-Id"),
		TraceParent:   r.Header.Get("Traceparent"),
	}
}

type member struct {
	UserID string      `json:"userId"`
	Role   domain.Role `json:"role"`
}

type tenantView struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"createdAt"`
	Role      string    `json:"role"`
	Members   []member  `json:"members"`
	URL       string    `json:"url"`
}

func (s *Server) viewTenant(t *domain.Tenant, user string) tenantView {
	role, _ := t.RoleOf(user)
	v := tenantView{ID: t.ID(), Name: t.Name(), CreatedAt: t.CreatedAt(), Role: string(role), Members: []member{}}
	v.URL, _ = s.cfg.URLs(t.ID(), "")
	for u, r := range t.Members() {
		v.Members = append(v.Members, member{UserID: u, Role: r})
	}
	sort.Slice(v.Members, func(i, j int) bool { return v.Members[i].UserID < v.Members[j].UserID })
	return v
}

func (s *Server) createTenant(w http.ResponseWriter, r *http.Request, user string) {
	var body struct {
		TenantID string `json:"tenantId"`
		Name     string `json:"name"`
	}
	if !decodeJSON(w, r, &body) {
		return
	}
	if _, err := s.app.CreateTenant(r.Context(), meta(r), user, body.TenantID, body.Name); err != nil {
		s.fail(w, r, body.TenantID, err)
		return
	}
	t, err := s.app.Tenant(r.Context(), body.TenantID)
	if err != nil {
		s.fail(w, r, body.TenantID, err)
		return
	}
	w.Header().Set("Location", "/api/tenants/"+t.ID())
	writeJSON(w, http.StatusCreated, map[string]any{"success": true, "message": "tenant created",
		"data": map[string]any{"tenant": s.viewTenant(t, user)}})
}

func (s *Server) getTenant(w http.ResponseWriter, r *http.Request, user string, t *domain.Tenant) {
	writeJSON(w, http.StatusOK, map[string]any{"success": true, "data": map[string]any{"tenant": s.viewTenant(t, user)}})
}

func (s *Server) addMember(w http.ResponseWriter, r *http.Request, user string, t *domain.Tenant) {
	tenant := t.ID()
	var body member
	if !decodeJSON(w, r, &body) {
		return
	}
	if _, err := s.app.AddMember(r.Context(), meta(r), user, tenant, body.UserID, body.Role); err != nil {
		s.fail(w, r, tenant, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"success": true, "message": "member saved",
		"data": map[string]any{"member": body}})
}

func (s *Server) removeMember(w http.ResponseWriter, r *http.Request, user string) {
	tenant, target := r.PathValue("tenant"), r.PathValue("user")
	if _, err := s.app.RemoveMember(r.Context(), meta(r), user, tenant, target); err != nil {
		if errors.Is(err, domain.ErrNotMember) {
			// Distinguish "you are not a member" (404 tenant) from "they are not".
			if _, aerr := s.app.Authorize(r.Context(), tenant, user, domain.RoleOwner, domain.RoleAdmin); aerr == nil {
				writeError(w, http.StatusNotFound, "not_found", "user "+target+" is not a member")
				return
			}
		}
		s.fail(w, r, tenant, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"success": true, "message": "member removed"})
}
