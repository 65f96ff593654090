package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"net/url"
)

// UploadResult is the server's answer to an accepted upload.
type UploadResult struct {
	BuildID  string
	TenantID string
	Version  string
	// Status is the build's status, normally StatusPending.
	Status string
	// EventsURL is the path (or URL) of the tenant's event stream,
	// positioned just before this build's first event; pass it to Follow.
	EventsURL string
	// SelfURL is the path (or URL) of the build resource.
	SelfURL string
	// Replayed is true when the server answered 200 instead of 202: the
	// idempotency key was seen before and this is the build it created.
	Replayed bool
}

// Upload sends a ZIP as a new build of tenant: POST /api/builds/{tenant}
// with a multipart/form-data body holding the optional part "buildConfig"
// (cfg, JSON text; left out when empty) and the part "file" (the ZIP).
//
// The body is streamed: zip is read while the request is written and never
// held in memory. size is the number of bytes zip yields; with size >= 0
// the request carries an exact Content-Length and "Expect: 100-continue",
// so the server can refuse a too large upload (413) before it is sent, and
// zip yielding a different number of bytes is an error. With size < 0 the
// body is sent chunked.
//
// idemKey, when not empty, is sent as the Idempotency-Key header: retrying
// an upload with the same key returns the same build instead of a second
// one. progress, when not nil, is called with the number of ZIP bytes
// handed to the connection so far, from another goroutine, and finally
// with the total.
//
// A 4xx or 5xx answer is returned as an error wrapping *APIError.
func (c *Client) Upload(ctx context.Context, tenant string, zip io.Reader, size int64, cfg []byte, idemKey string, progress func(sent int64)) (*UploadResult, error) {
	if tenant == "" {
		return nil, errors.New("upload: tenant is required")
	}
	if len(cfg) > 0 && !json.Valid(cfg) {
		return nil, errors.New("upload: build config is not valid JSON")
	}

	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)

	contentLength := int64(-1)
	if size >= 0 {
		var n countWriter
		cw := multipart.NewWriter(&n)
		if err := cw.SetBoundary(mw.Boundary()); err != nil {
			return nil, fmt.Errorf("upload: %w", err)
		}
		if err := writeMultipart(cw, cfg, func(io.Writer) error { return nil }); err != nil {
			return nil, fmt.Errorf("upload: measure body: %w", err)
		}
		contentLength = int64(n) + size
	}

	req, err := c.newRequest(ctx, http.MethodPost, "/api/builds/"+url.PathEscape(tenant), pr)
	if err != nil {
		return nil, fmt.Errorf("upload: %w", err)
	}
	req.ContentLength = contentLength
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.Header.Set("Accept", "application/json")
	if size >= 0 {
		req.Header.Set("Expect", "100-continue")
	}
	if idemKey != "" {
		req.Header.Set("Idempotency-Key", idemKey)
	}

	writeErr := make(chan error, 1)
	go func() {
		err := writeMultipart(mw, cfg, func(w io.Writer) error {
			if err := copyZip(&progressWriter{w: w, progress: progress}, zip, size); err != nil {
				return &sourceError{err}
			}
			return nil
		})
		pw.CloseWithError(err) // nil: the reader sees io.EOF
		writeErr <- err
	}()

	resp, err := c.httpClient().Do(req)
	// The server may answer before reading the whole body (413, 401):
	// closing the reader ends a writer blocked on the pipe.
	pr.CloseWithError(errAnswered)
	werr := <-writeErr
	// Only a failure to read the ZIP says more than the transport's error;
	// a closed pipe is a consequence of the request ending.
	var srcErr *sourceError
	if !errors.As(werr, &srcErr) {
		srcErr = nil
	}
	if err != nil {
		if srcErr != nil {
			return nil, fmt.Errorf("upload: %w", srcErr)
		}
		return nil, fmt.Errorf("upload: %w", err)
	}
	defer closeBody(resp.Body)

	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, fmt.Errorf("upload: %w", readAPIError(resp))
	}
	if srcErr != nil {
		// The server accepted a body that could not be read to its end.
		return nil, fmt.Errorf("upload: server answered %d but the upload failed: %w", resp.StatusCode, srcErr)
	}
	var body struct {
		Data struct {
			Build Build `json:"build"`
		} `json:"data"`
		Links struct {
			Self   string `json:"self"`
			Events string `json:"events"`
		} `json:"links"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxResponseBytes)).Decode(&body); err != nil {
		return nil, fmt.Errorf("upload: decode response: %w", err)
	}
	b := body.Data.Build
	if b.ID == "" {
		return nil, errors.New("upload: response has no build id")
	}
	if progress != nil && size >= 0 {
		progress(size)
	}
	return &UploadResult{
		BuildID:   b.ID,
		TenantID:  b.TenantID,
		Version:   b.Version,
		Status:    b.Status,
		EventsURL: body.Links.Events,
		SelfURL:   body.Links.Self,
		Replayed:  resp.StatusCode == http.StatusOK,
	}, nil
}

// constError is an error that can be a constant.
type constError string

func (e constError) Error() string { return string(e) }

// sourceError is a failure to read the ZIP being uploaded (as opposed to
// a failure to send it).
type sourceError struct{ err error }

func (e *sourceError) Error() string { return e.err.Error() }
func (e *sourceError) Unwrap() error { return e.err }

// errAnswered ends the body writer once the server has answered.
const errAnswered = constError("server answered before the upload was complete")

// writeMultipart writes the whole multipart body to mw: the buildConfig
// part when cfg is not empty, then the file part whose content file
// writes, then the closing boundary. Upload runs it once with an empty
// file to measure the overhead, so both runs must write the same framing.
func writeMultipart(mw *multipart.Writer, cfg []byte, file func(io.Writer) error) error {
	if len(cfg) > 0 {
		fw, err := mw.CreateFormField("buildConfig")
		if err != nil {
			return err
		}
		if _, err := fw.Write(cfg); err != nil {
			return err
		}
	}
	h := make(textproto.MIMEHeader)
	h.Set("Content-Disposition", `form-data; name="file"; filename="site.zip"`)
	h.Set("Content-Type", "application/zip")
	fw, err := mw.CreatePart(h)
	if err != nil {
		return err
	}
	if err := file(fw); err != nil {
		return err
	}
	return mw.Close()
}

// copyZip copies zip to w in chunks (so progress moves smoothly); with
// size >= 0 exactly size bytes must come.
func copyZip(w io.Writer, zip io.Reader, size int64) error {
	buf := make([]byte, copyChunk)
	src := struct{ io.Reader }{zip} // hide WriterTo: it would send everything in one write
	if size < 0 {
		if _, err := io.CopyBuffer(w, src, buf); err != nil {
			return fmt.Errorf("read zip: %w", err)
		}
		return nil
	}
	n, err := io.CopyBuffer(w, io.LimitReader(src, size), buf)
	if err != nil {
		return fmt.Errorf("read zip: %w", err)
	}
	if n < size {
		return fmt.Errorf("read zip: got %d bytes, expected %d", n, size)
	}
	var one [1]byte
	if m, _ := io.ReadFull(zip, one[:]); m > 0 {
		return fmt.Errorf("read zip: longer than the expected %d bytes", size)
	}
	return nil
}

// copyChunk is the size of the writes of the ZIP into the request body.
const copyChunk = 32 << 10

// countWriter counts the bytes written to it.
type countWriter int64

func (c *countWriter) Write(p []byte) (int, error) {
	*c += countWriter(len(p))
	return len(p), nil
}

// progressWriter reports the running total of bytes written through it.
// Writes go to an io.Pipe, which returns only once the HTTP transport has
// taken the bytes, so the total follows what went out.
type progressWriter struct {
	w        io.Writer
	sent     int64
	progress func(int64)
}

func (p *progressWriter) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.sent += int64(n)
	if p.progress != nil && n > 0 {
		p.progress(p.sent)
	}
	return n, err
}
