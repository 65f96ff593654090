package gateway

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/zipship/zipship/archive"
	"github.com/zipship/zipship/domain"
	"github.com/zipship/zipship/projections"
)

// apiError is the JSON body of every error answer: a stable machine code
// and a sentence for people.
type apiError struct {
	Error   string `json:"error"`
	Message string `json:"message"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, apiError{Error: code, Message: msg})
}

// notFoundTenant is the answer for a tenant the caller may not see, whether
// or not it exists: existence does not leak to non-members.
func notFoundTenant(w http.ResponseWriter, tenant string) {
	writeError(w, http.StatusNotFound, "not_found", "tenant "+tenant+" not found")
}

// fail maps an error from the application or domain to an HTTP answer.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, tenant string, err error) {
	var rule *archive.RuleError
	switch {
	case errors.Is(err, domain.ErrNotMember), errors.Is(err, domain.ErrTenantNotFound):
		notFoundTenant(w, tenant)
	case errors.Is(err, domain.ErrBuildNotFound), errors.Is(err, projections.ErrNotFound):
		writeError(w, http.StatusNotFound, "not_found", "build not found")
	case errors.Is(err, domain.ErrForbidden), errors.Is(err, domain.ErrSelfRoleChange):
		writeError(w, http.StatusForbidden, "forbidden", err.Error())
	case errors.Is(err, domain.ErrInvalidTenantID), errors.Is(err, domain.ErrInvalidName),
		errors.Is(err, domain.ErrInvalidUserID), errors.Is(err, domain.ErrInvalidRole):
		writeError(w, http.StatusBadRequest, "invalid_request", err.Error())
	case errors.Is(err, domain.ErrInvalidConfig):
		writeError(w, http.StatusBadRequest, "invalid_build_config", err.Error())
	case errors.Is(err, domain.ErrTenantExists):
		writeError(w, http.StatusConflict, "tenant_exists", err.Error())
	case errors.Is(err, domain.ErrLastOwner), errors.Is(err, domain.ErrAlreadyMember),
		errors.Is(err, domain.ErrAlreadyLive), errors.Is(err, domain.ErrNeverDeployed),
		errors.Is(err, domain.ErrBuildNotSucceeded), errors.Is(err, domain.ErrSuperseded),
		errors.Is(err, domain.ErrBuildFinished), errors.Is(err, domain.ErrCancelRequested):
		writeError(w, http.StatusConflict, "conflict", err.Error())
	case errors.As(err, &rule):
		writeError(w, rule.Rule.Status(), string(rule.Rule), rule.Error())
	case errors.Is(err, r.Context().Err()) && r.Context().Err() != nil:
		// The client went away; nobody reads the answer.
		writeError(w, http.StatusBadRequest, "cancelled", "request cancelled")
	default:
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		writeError(w, http.StatusInternalServerError, "internal", "internal error")
	}
}
