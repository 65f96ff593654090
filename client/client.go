// Package client talks to a zipship server: it zips a project directory,
// uploads it as a new build, follows the build's live events until it
// succeeds or fails, and reads a build's current state.
//
// Every request carries "Authorization: Bearer <token>". Errors the server
// answers with (any 4xx or 5xx) come back as *APIError.
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Build statuses as the server reports them.
const (
	StatusPending  = "pending"
	StatusBuilding = "building"
	StatusSuccess  = "success"
	StatusFailed   = "failed"
)

// maxResponseBytes caps how much of a JSON answer the client reads.
const maxResponseBytes = 4 << 20

// Client is a zipship API client. The zero value is not usable: Server must
// be set.
type Client struct {
	// Server is the base URL of the zipship server, for example
	// "https://zipship.example.com". A trailing slash is ignored.
	Server string
	// Token is the JWT sent as "Authorization: Bearer <Token>".
	Token string
	// HTTP is the HTTP client used for every request; nil means
	// http.DefaultClient. It must not have a Timeout: Follow keeps a
	// response open for the whole build. Use contexts to bound calls.
	HTTP *http.Client

	// Knobs for tests; zero means the documented default.
	idleTimeout   time.Duration // Follow: poll the build after this much silence
	reconnectBase time.Duration // Follow: first reconnect delay, doubled each time
	pollInterval  time.Duration // Follow: delay between polls once streaming is given up
}

// APIError is an error answer of the server: any 4xx or 5xx status with
// the body {"error":"<code>","message":"<human text>"}.
type APIError struct {
	// Status is the HTTP status code.
	Status int
	// Code is the machine-readable error code, e.g. "payload_too_large".
	// It is empty when the body was not the documented JSON (for example
	// an error page of a proxy in front of the server).
	Code string
	// Message is the human-readable explanation; for a body that was not
	// JSON it is the start of the body.
	Message string
}

// Error formats the error as "<status> <code>: <message>", e.g.
// "413 payload_too_large: upload exceeds 100 MB".
func (e *APIError) Error() string {
	var b strings.Builder
	b.WriteString(strconv.Itoa(e.Status))
	switch {
	case e.Code != "":
		b.WriteString(" " + e.Code)
	case e.Message == "":
		if t := http.StatusText(e.Status); t != "" {
			b.WriteString(" " + t)
		}
	}
	if e.Message != "" {
		b.WriteString(": " + e.Message)
	}
	return b.String()
}

// Build is a build as GET /api/builds/{tenant}/{id} describes it.
type Build struct {
	ID       string `json:"id"`
	TenantID string `json:"tenantId"`
	Version  string `json:"version"`
	// Status is one of StatusPending, StatusBuilding, StatusSuccess,
	// StatusFailed.
	Status string `json:"status"`
	// URL is the live URL once the build succeeded.
	URL string `json:"url,omitempty"`
	// DeploymentURL is the URL of this very deployment, when the server
	// reports it.
	DeploymentURL string `json:"deploymentUrl,omitempty"`
	// Error says why a failed build failed.
	Error *BuildError `json:"error,omitempty"`
}

// BuildError describes why a build failed.
type BuildError struct {
	Step      string `json:"step"`
	Message   string `json:"message"`
	Retryable bool   `json:"retryable"`
}

// GetBuild reads the current state of build id of tenant.
func (c *Client) GetBuild(ctx context.Context, tenant, id string) (*Build, error) {
	if tenant == "" || id == "" {
		return nil, errors.New("get build: tenant and build id are required")
	}
	req, err := c.newRequest(ctx, http.MethodGet, "/api/builds/"+url.PathEscape(tenant)+"/"+url.PathEscape(id), nil)
	if err != nil {
		return nil, fmt.Errorf("get build %s: %w", id, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.httpClient().Do(req)
	if err != nil {
		return nil, fmt.Errorf("get build %s: %w", id, err)
	}
	defer closeBody(resp.Body)
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, fmt.Errorf("get build %s: %w", id, readAPIError(resp))
	}
	var body struct {
		Data struct {
			Build Build `json:"build"`
		} `json:"data"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxResponseBytes)).Decode(&body); err != nil {
		return nil, fmt.Errorf("get build %s: decode response: %w", id, err)
	}
	if body.Data.Build.ID == "" {
		return nil, fmt.Errorf("get build %s: response has no build", id)
	}
	return &body.Data.Build, nil
}

func (c *Client) httpClient() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return http.DefaultClient
}

// resolve turns a server path ("/api/...") into a full URL. An absolute
// URL (as a link in a response may be) is used as is.
func (c *Client) resolve(ref string) (string, error) {
	if u, err := url.Parse(ref); err == nil && u.IsAbs() {
		return ref, nil
	}
	if c.Server == "" {
		return "", errors.New("no server URL configured")
	}
	if !strings.HasPrefix(ref, "/") {
		ref = "/" + ref
	}
	return strings.TrimRight(c.Server, "/") + ref, nil
}

// newRequest builds an authenticated request for a server path or an
// absolute URL.
func (c *Client) newRequest(ctx context.Context, method, ref string, body io.Reader) (*http.Request, error) {
	u, err := c.resolve(ref)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	return req, nil
}

// readAPIError turns an error response into an *APIError. A body that is
// not the documented JSON becomes the message (trimmed and shortened).
func readAPIError(resp *http.Response) *APIError {
	e := &APIError{Status: resp.StatusCode}
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var body struct {
		Error   json.RawMessage `json:"error"`
		Message string          `json:"message"`
	}
	if json.Unmarshal(raw, &body) == nil && (len(body.Error) > 0 || body.Message != "") {
		e.Message = body.Message
		var code string
		var obj struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		}
		switch {
		case json.Unmarshal(body.Error, &code) == nil:
			e.Code = code
		case json.Unmarshal(body.Error, &obj) == nil: // tolerate {"error":{"code","message"}}
			e.Code = obj.Code
			if e.Message == "" {
				e.Message = obj.Message
			}
		}
		return e
	}
	msg := strings.Join(strings.Fields(string(raw)), " ")
	if len(msg) > 200 {
		msg = strings.ToValidUTF8(msg[:200], "") + "…"
	}
	e.Message = msg
	return e
}

// closeBody drains a little of the body so the connection can be reused,
// then closes it.
func closeBody(body io.ReadCloser) {
	_, _ = io.CopyN(io.Discard, body, 64<<10)
	_ = body.Close()
}

// IsTemporary reports whether a request that failed with err may succeed
// when sent again: the server answered 408, 429 or a 5xx, or the
// connection failed. Cancellation is not temporary.
func IsTemporary(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var apiErr *APIError
	if errors.As(err, &apiErr) {
		return apiErr.Status == http.StatusRequestTimeout || apiErr.Status == http.StatusTooManyRequests || apiErr.Status >= 500
	}
	var urlErr *url.Error
	return errors.As(err, &urlErr)
}
