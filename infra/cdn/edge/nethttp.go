package edge

import (
	"bytes"
	"io"
	"net/http"
	"time"

	"github.com/zipship/zipship/infra/blob"
)

// ServeHTTP is the net/http front end: it serves the site the request's
// Host names.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	head := r.Method == http.MethodHead
	t := s.resolve(r.Context(), s.now(), head || r.Method == http.MethodGet, r.Host, r.URL.Path)
	if t.site != nil {
		w.Header()["X-Zipship-Build"] = t.site.hBuild.s
	}
	if t.file == nil {
		s.plainHTTP(w, head, t.status, t.cache)
		return
	}
	s.fileHTTP(w, r, head, t.file, t.status)
}

// fileHTTP writes f with status (200, or 404 for a site's 404 page).
func (s *Server) fileHTTP(w http.ResponseWriter, r *http.Request, head bool, f *file, status int) {
	h := w.Header()
	var c conds
	if len(r.Header) > 0 {
		for _, v := range r.Header["If-None-Match"] {
			if etagMatches(v, f.hETag.s[0]) {
				c.inmMatch = true
				break
			}
		}
		c.preempt = r.Header["If-Match"] != nil || r.Header["If-Unmodified-Since"] != nil
		c.other = c.preempt || r.Header["Range"] != nil
	}
	rep := chooseReply(status, c)
	if rep == replyNotModified {
		h["Cache-Control"] = f.hCache.s
		h["Etag"] = f.hETag.s
		w.WriteHeader(http.StatusNotModified)
		return
	}
	var (
		data []byte
		obj  blob.Object
	)
	if !head || rep == replyServeContent {
		var err error
		data, obj, err = s.fileContent(r.Context(), f)
		if err != nil {
			s.plainHTTP(w, head, http.StatusBadGateway, &s.hdr.noStore)
			return
		}
		if obj != nil {
			defer obj.Close()
		}
	}
	h["Content-Type"] = f.hType.s
	h["X-Content-Type-Options"] = s.hdr.nosniff.s
	if status == http.StatusOK {
		h["Cache-Control"] = f.hCache.s
		h["Etag"] = f.hETag.s
	} else {
		h["Cache-Control"] = s.hdr.revalidate.s
	}
	if rep == replyServeContent {
		var rs io.ReadSeeker = obj
		if obj == nil {
			rs = bytes.NewReader(data)
		}
		http.ServeContent(w, r, "", time.Time{}, rs)
		return
	}
	if status == http.StatusOK {
		h["Accept-Ranges"] = s.hdr.bytes.s
	}
	h["Content-Length"] = f.hLength.s
	w.WriteHeader(status)
	if head {
		return
	}
	var err error
	if obj == nil {
		_, err = w.Write(data)
	} else {
		// io.Copy reaches net/http's ReadFrom, which sendfiles an
		// *os.File-backed object straight to the socket.
		_, err = io.Copy(w, obj)
	}
	if err != nil && r.Context().Err() == nil {
		s.log.Debug("write response", "path", f.path, "err", err)
	}
}

// plainHTTP writes the edge's own small HTML answer for status.
func (s *Server) plainHTTP(w http.ResponseWriter, head bool, status int, cacheControl *hval) {
	h := w.Header()
	if status == http.StatusMethodNotAllowed {
		h["Allow"] = s.hdr.allow.s
	}
	p := s.hdr.page(status)
	h["Content-Type"] = s.hdr.html.s
	h["X-Content-Type-Options"] = s.hdr.nosniff.s
	h["Cache-Control"] = cacheControl.s
	h["Content-Length"] = p.length.s
	w.WriteHeader(status)
	if !head {
		_, _ = io.WriteString(w, p.body)
	}
}
