package gateway

import (
	"errors"
	"io"
	"net/http"

	"github.com/zipship/zipship/domain"
	"github.com/zipship/zipship/infra/blob"
)

// buildLogs handles GET /api/builds/{t}/{b}/logs: the build's output as
// text. With ?follow=1 and a build still running, the answer streams new
// lines until the build's log closes; otherwise it is the log so far (the
// stored log once the build ended).
func (s *Server) buildLogs(w http.ResponseWriter, r *http.Request, user string, t *domain.Tenant) {
	tenant := t.ID()
	b, err := s.rm.GetBuild(r.Context(), tenant, r.PathValue("build"))
	if err != nil {
		s.fail(w, r, tenant, err)
		return
	}
	follow := r.URL.Query().Get("follow")
	if follow != "" && follow != "0" && follow != "1" && follow != "true" && follow != "false" {
		writeError(w, http.StatusBadRequest, "invalid_request", "follow must be 1 or 0")
		return
	}
	hdr := w.Header()
	hdr.Set("Content-Type", "text/plain; charset=utf-8")
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("X-Content-Type-Options", "nosniff")
	if s.cfg.Logs != nil {
		if follow == "1" || follow == "true" {
			if lines, ok := s.cfg.Logs.Follow(r.Context(), b.ID, 0); ok {
				hdr.Set("X-Accel-Buffering", "no")
				rc := http.NewResponseController(w)
				for ln := range lines {
					if _, err := io.WriteString(w, ln.Format()); err != nil {
						return
					}
					_ = rc.Flush()
				}
				return
			}
		} else if lines, ok := s.cfg.Logs.Lines(b.ID); ok {
			for _, ln := range lines {
				io.WriteString(w, ln.Format())
			}
			return
		}
	}
	obj, err := s.app.Blobs().Open(r.Context(), blob.LogKey(tenant, b.ID))
	if errors.Is(err, blob.ErrNotFound) {
		hdr.Del("Content-Type")
		writeError(w, http.StatusNotFound, "no_log", "build "+b.ID+" has no log yet")
		return
	}
	if err != nil {
		hdr.Del("Content-Type")
		s.fail(w, r, tenant, err)
		return
	}
	defer obj.Close()
	http.ServeContent(w, r, "", obj.Info().ModTime, obj)
}
