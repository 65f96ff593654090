package edge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"runtime/debug"
	"strconv"
	"sync"
	"time"
	"unsafe"

	"github.com/valyala/fasthttp"

	"github.com/zipship/zipship/infra/blob"
)

// FastHTTPReadBufferSize is the per-connection read buffer of the servers
// NewFastHTTPServer makes, which bounds the size of a request's header
// (fasthttp's default of 4 KiB is too small for some sites' cookies).
const FastHTTPReadBufferSize = 16 << 10

// Canonical response header names, as fasthttp takes them.
var (
	hkBuild    = []byte("X-Zipship-Build")
	hkCache    = []byte("Cache-Control")
	hkETag     = []byte("Etag")
	hkNosniff  = []byte("X-Content-Type-Options")
	hkRanges   = []byte("Accept-Ranges")
	hkAllow    = []byte("Allow")
	hkINM      = []byte("If-None-Match")
	hkIfMatch  = []byte("If-Match")
	hkIfUnmod  = []byte("If-Unmodified-Since")
	hkRange    = []byte("Range")
	hkIfRange  = []byte("If-Range")
	hkIfModSin = []byte("If-Modified-Since")
)

// NewFastHTTPServer returns a fasthttp server whose handler is
// s.ServeFastHTTP, with the settings that keep its answers those of the
// net/http front end: no Server header, no default Content-Type, request
// bodies (which the edge never reads) not read before the handler answers
// 405. A connection gets readTimeout to send each request and idleTimeout
// between requests (readTimeout when zero). Serve it with Serve(listener);
// stop it with ShutdownWithContext, which closes idle keep-alive
// connections, then close the listener: unlike net/http's, a fasthttp
// server shut down before Serve started would serve anyway.
func (s *Server) NewFastHTTPServer(readTimeout, idleTimeout time.Duration) *fasthttp.Server {
	return &fasthttp.Server{
		Handler:                      s.ServeFastHTTP,
		ReadTimeout:                  readTimeout,
		IdleTimeout:                  idleTimeout,
		ReadBufferSize:               FastHTTPReadBufferSize,
		StreamRequestBody:            true,
		MaxRequestBodySize:           64 << 10,
		NoDefaultServerHeader:        true,
		NoDefaultContentType:         true,
		DisablePreParseMultipartForm: true,
		CloseOnShutdown:              true,
		SecureErrorLogMessage:        true,
		Logger:                       fastLogger{s.log},
	}
}

// fastLogger passes fasthttp's messages (mostly connections that broke) to
// the edge's logger at debug level, as net/http's would be.
type fastLogger struct{ log *slog.Logger }

func (l fastLogger) Printf(format string, args ...any) {
	if l.log.Enabled(context.Background(), slog.LevelDebug) {
		l.log.Debug(fmt.Sprintf(format, args...))
	}
}

// since is the s.now() of t, the time fasthttp read when the request
// arrived: the clock is read once per request.
func (s *Server) since(t time.Time) int64 {
	if t.IsZero() { // a RequestCtx not made by a fasthttp.Server
		return s.now()
	}
	return int64(t.Sub(s.epoch))
}

// b2s views b as a string without copying. The string is only valid while
// b is: resolve clones what it keeps.
func b2s(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// ServeFastHTTP is the fasthttp front end (a fasthttp.RequestHandler): it
// serves the site the request's Host names, with the same resolution and
// the same answers as ServeHTTP.
func (s *Server) ServeFastHTTP(ctx *fasthttp.RequestCtx) {
	// fasthttp does not recover panics, which would stop the process: do
	// as net/http does (log, and close the connection).
	defer func() {
		if p := recover(); p != nil {
			s.recovered(ctx, p)
		}
	}()
	head := ctx.IsHead()
	getOrHead := head || ctx.IsGet()
	path := "/"
	if getOrHead {
		// The request's path percent-decoded exactly as net/http's
		// r.URL.Path is (fasthttp's own Path is also cleaned, which
		// resolve does its own way); no allocation without escapes.
		raw := b2s(ctx.URI().PathOriginal())
		p, err := url.PathUnescape(raw)
		if err != nil { // net/http refuses such a request too
			s.plainFast(ctx, http.StatusBadRequest, &s.hdr.noStore)
			return
		}
		path = p
	}
	// fasthttp's RequestCtx is a context.Context too, but one recycled
	// after the request, while loads shared by requests may keep theirs;
	// and it is only ever canceled by Shutdown. Waits on loads are bounded
	// by loadTimeout anyway.
	t := s.resolve(context.Background(), s.since(ctx.Time()), getOrHead, b2s(ctx.Host()), path)
	if t.site != nil {
		ctx.Response.Header.SetCanonical(hkBuild, t.site.hBuild.b)
	}
	if t.file == nil {
		s.plainFast(ctx, t.status, t.cache)
		return
	}
	s.fileFast(ctx, head, t.file, t.status)
}

// fileFast writes f with status (200, or 404 for a site's 404 page).
func (s *Server) fileFast(ctx *fasthttp.RequestCtx, head bool, f *file, status int) {
	rh := &ctx.Request.Header
	resp := &ctx.Response
	var c conds
	if rh.PeekBytes(hkINM) != nil {
		for _, v := range rh.PeekAll("If-None-Match") {
			if etagMatches(b2s(v), b2s(f.hETag.b)) {
				c.inmMatch = true
				break
			}
		}
	}
	c.preempt = rh.PeekBytes(hkIfMatch) != nil || rh.PeekBytes(hkIfUnmod) != nil
	c.other = c.preempt || rh.PeekBytes(hkRange) != nil
	rep := chooseReply(status, c)
	if rep == replyNotModified {
		resp.Header.SetCanonical(hkCache, f.hCache.b)
		resp.Header.SetCanonical(hkETag, f.hETag.b)
		resp.SetStatusCode(http.StatusNotModified)
		return
	}
	var (
		data []byte
		obj  blob.Object
	)
	if !head || rep == replyServeContent {
		var err error
		data, obj, err = s.fileContent(context.Background(), f)
		if err != nil {
			s.plainFast(ctx, http.StatusBadGateway, &s.hdr.noStore)
			return
		}
	}
	if rep == replyServeContent {
		s.serveContentFast(ctx, head, f, data, obj)
		return
	}
	resp.SetStatusCode(status)
	resp.Header.SetContentTypeBytes(f.hType.b)
	resp.Header.SetCanonical(hkNosniff, s.hdr.nosniff.b)
	if status == http.StatusOK {
		resp.Header.SetCanonical(hkCache, f.hCache.b)
		resp.Header.SetCanonical(hkETag, f.hETag.b)
		resp.Header.SetCanonical(hkRanges, s.hdr.bytes.b)
	} else {
		resp.Header.SetCanonical(hkCache, s.hdr.revalidate.b)
	}
	switch {
	case head:
		resp.Header.SetContentLength(int(f.size))
	case obj == nil:
		// The cached content is immutable: sent without a copy.
		resp.SetBodyRaw(data)
	default:
		// fasthttp closes obj once sent, and sendfiles an
		// *os.File-backed object to the socket.
		resp.SetBodyStream(obj, int(f.size))
	}
}

// recovered answers a request whose handling panicked with p: 500, and
// the connection is closed.
func (s *Server) recovered(ctx *fasthttp.RequestCtx, p any) {
	s.log.Error("panic serving a request", "host", string(ctx.Host()), "path", string(ctx.Path()), "panic", p,
		"stack", string(debug.Stack()))
	ctx.Response.Reset()
	ctx.SetConnectionClose()
	ctx.Response.Header.SetNoDefaultContentType(true)
	ctx.SetStatusCode(http.StatusInternalServerError)
}

// plainFast writes the edge's own small HTML answer for status.
func (s *Server) plainFast(ctx *fasthttp.RequestCtx, status int, cacheControl *hval) {
	resp := &ctx.Response
	if status == http.StatusMethodNotAllowed {
		resp.Header.SetCanonical(hkAllow, s.hdr.allow.b)
	}
	p := s.hdr.page(status)
	resp.SetStatusCode(status)
	resp.Header.SetContentTypeBytes(s.hdr.html.b)
	resp.Header.SetCanonical(hkNosniff, s.hdr.nosniff.b)
	resp.Header.SetCanonical(hkCache, cacheControl.b)
	if ctx.IsHead() {
		resp.Header.SetContentLength(len(p.bbody))
		return
	}
	resp.SetBodyRaw(p.bbody)
}

// serveContentFast answers a request for f with a Range or a precondition
// through http.ServeContent, as the net/http front end does, so that both
// implement them identically: ServeContent writes to a contentWriter, whose
// status, headers and body then make the fasthttp response. Memory-cached
// content (data) is small and is answered from a buffer; a store object
// (obj) is served by ServeContent in its own goroutine, which streams the
// content through a pipe that fasthttp reads and closes.
func (s *Server) serveContentFast(ctx *fasthttp.RequestCtx, head bool, f *file, data []byte, obj blob.Object) {
	h := http.Header{
		"Content-Type":           f.hType.s,
		"X-Content-Type-Options": s.hdr.nosniff.s,
		"Cache-Control":          f.hCache.s,
		"Etag":                   f.hETag.s,
	}
	r := &http.Request{Method: http.MethodGet, Header: make(http.Header, 6)}
	if head {
		r.Method = http.MethodHead
	}
	rh := &ctx.Request.Header
	for _, k := range [][]byte{hkRange, hkIfRange, hkIfMatch, hkIfUnmod, hkINM, hkIfModSin} {
		for _, v := range rh.PeekAll(b2s(k)) {
			r.Header[string(k)] = append(r.Header[string(k)], string(v))
		}
	}
	w := &contentWriter{h: h}
	if obj == nil {
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
		w.respond(ctx, nil)
		return
	}
	pr, pw := io.Pipe()
	w.pw = pw
	w.ready = make(chan bool, 1)
	go func() {
		defer obj.Close()
		defer func() {
			p := recover()
			switch {
			case w.streaming:
				// The header is sent or being sent: cut the body short,
				// which fasthttp answers by closing the connection.
				if p != nil {
					s.log.Error("panic serving content", "path", f.path, "panic", p, "stack", string(debug.Stack()))
					pw.CloseWithError(errPanicked)
				} else {
					pw.Close()
				}
			case p != nil:
				w.panicked = p
				w.ready <- false
			default:
				w.ready <- false
			}
		}()
		http.ServeContent(w, r, "", time.Time{}, obj)
	}()
	if <-w.ready {
		w.respond(ctx, pr)
		return
	}
	pr.Close()
	if w.panicked != nil {
		s.recovered(ctx, w.panicked)
		return
	}
	w.respond(ctx, nil)
}

// contentWriter is the http.ResponseWriter that http.ServeContent writes
// to on the fasthttp front end. It keeps the status and headers, and
// buffers what is written, except that with pw set the content copy
// (ServeContent's io.CopyN, which reaches ReadFrom) goes through pw once
// ready has told the handler that headers are final.
type contentWriter struct {
	h         http.Header
	status    int
	body      []byte
	pw        *io.PipeWriter
	ready     chan bool
	streaming bool
	panicked  any // what ServeContent panicked with before streaming
}

var errPanicked = errors.New("edge: panic while serving content")

func (w *contentWriter) Header() http.Header { return w.h }

func (w *contentWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
}

func (w *contentWriter) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	if w.streaming {
		return w.pw.Write(p)
	}
	w.body = append(w.body, p...)
	return len(p), nil
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (w *contentWriter) ReadFrom(r io.Reader) (int64, error) {
	w.WriteHeader(http.StatusOK)
	if w.pw == nil || len(w.body) > 0 {
		return io.Copy(writerOnly{w}, r)
	}
	if !w.streaming {
		w.streaming = true
		w.ready <- true
	}
	buf := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(buf)
	return io.CopyBuffer(w.pw, r, *buf)
}

// writerOnly hides contentWriter's ReadFrom from io.Copy.
type writerOnly struct{ w io.Writer }

func (w writerOnly) Write(p []byte) (int, error) { return w.w.Write(p) }

// respond turns what ServeContent wrote into ctx's response: the buffered
// body, or stream (the read end of pw) when it is not nil.
func (w *contentWriter) respond(ctx *fasthttp.RequestCtx, stream io.ReadCloser) {
	resp := &ctx.Response
	if w.status == 0 {
		w.status = http.StatusOK
	}
	resp.SetStatusCode(w.status)
	length := -1
	for k, vv := range w.h {
		switch k {
		case "Content-Length":
			if n, err := strconv.Atoi(vv[0]); err == nil && n >= 0 {
				length = n
			}
		case "Content-Type":
			resp.Header.SetContentType(vv[0])
		default:
			resp.Header.Del(k)
			for _, v := range vv {
				resp.Header.Add(k, v)
			}
		}
	}
	switch {
	case stream != nil:
		resp.SetBodyStream(stream, length)
	case len(w.body) > 0:
		resp.SetBody(w.body)
	case length >= 0:
		// HEAD: the length of the body a GET would get.
		resp.Header.SetContentLength(length)
	}
}
