package live

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/coder/websocket"

	"github.com/zipship/zipship/buildlog"
	"github.com/zipship/zipship/infra/eventstore"
	"github.com/zipship/zipship/liveevents"
)

const (
	// sseKeepAlive is how often an idle SSE stream gets a comment, so that
	// proxies and load balancers do not close it as idle.
	sseKeepAlive = 15 * time.Second
	// sseRetryMs is the reconnection delay EventSource clients are told to
	// use; they come back with Last-Event-ID and miss nothing.
	sseRetryMs = 2000
	// wsPingInterval is how often a WebSocket is pinged, which keeps it open
	// through proxies and detects dead peers.
	wsPingInterval = 20 * time.Second
	// writeTimeout bounds one write (or ping round trip) to a client. A
	// client that cannot take an event within it is too slow: its connection
	// is closed and it resumes from its last position.
	writeTimeout = 10 * time.Second
)

// Hub serves live event streams. It holds no per-tenant state and no shared
// fan-out: every connection has its own tenant-filtered subscription on the
// event store, so a slow or stuck client only ever delays itself, and a
// tenant can only ever receive its own events.
type Hub struct {
	events eventstore.Store
	urls   URLs
	log    *slog.Logger
	// projected, when set, delays each event until the read models have
	// applied it, so a client that reacts to build:completed by querying
	// the build sees it completed.
	projected Waiter
	// logs, when set, adds the tenant's build output as build:log.
	logs LogSource

	// Timings, constants in production; tests shorten them.
	keepAlive    time.Duration
	pingInterval time.Duration
	writeTimeout time.Duration
}

// NewHub returns a Hub that streams events from events, building the URLs
// in build:completed and deployment:activated with urls. A nil log uses
// slog.Default().
func NewHub(events eventstore.Store, urls URLs, log *slog.Logger) *Hub {
	if log == nil {
		log = slog.Default()
	}
	return &Hub{
		events:       events,
		urls:         urls,
		log:          log,
		keepAlive:    sseKeepAlive,
		pingInterval: wsPingInterval,
		writeTimeout: writeTimeout,
	}
}

// Waiter blocks until the read models have applied an event position.
type Waiter interface {
	WaitFor(ctx context.Context, position int64) error
}

// WaitForReadModels makes the hub send each event only once w says the read
// models applied it. Call it before serving.
func (h *Hub) WaitForReadModels(w Waiter) { h.projected = w }

// LogSource delivers the new lines of a tenant's builds (buildlog.Broker).
type LogSource interface {
	SubscribeTenant(ctx context.Context, tenant string) <-chan buildlog.Line
}

// WithLogs makes the hub stream build output as build:log. Call it before
// serving.
func (h *Hub) WithLogs(src LogSource) { h.logs = src }

// logLines subscribes to the tenant's build output, or returns nil (a
// channel that never delivers) when the hub has no log source.
func (h *Hub) logLines(ctx context.Context, tenant string) <-chan buildlog.Line {
	if h.logs == nil {
		return nil
	}
	return h.logs.SubscribeTenant(ctx, tenant)
}

// encodeLog turns a build output line into build:log JSON.
func encodeLog(ln buildlog.Line) []byte {
	data, _ := json.Marshal(liveevents.BuildLog{BuildID: ln.BuildID, N: ln.N, Stream: string(ln.Stream),
		Text: ln.Text, Time: ln.Time.Format(time.RFC3339Nano)})
	return data
}

// Serve streams tenant's events to the client until it disconnects, the
// request's context ends, or the event store closes. The caller must have
// authenticated the user and checked that they belong to tenant.
//
// The transport follows the request: a WebSocket upgrade gets a WebSocket
// (one JSON text frame per event, see Message); a request accepting
// text/event-stream gets Server-Sent Events; anything else gets 406. The
// stream starts after the position in the Last-Event-ID header, or the
// after or lastEventId query parameter, in that order of precedence (an
// EventSource reconnects to the same URL with Last-Event-ID, which must
// win); without any of them it starts at the store's head, so only new
// events are sent.
func (h *Hub) Serve(w http.ResponseWriter, r *http.Request, tenant string) {
	if tenant == "" {
		// Without a tenant the subscription would carry every tenant's
		// events: refuse rather than leak.
		h.log.ErrorContext(r.Context(), "live: Serve called without a tenant")
		writeError(w, http.StatusInternalServerError, "internal", "no tenant for the live stream")
		return
	}
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "the live stream only supports GET")
		return
	}
	ws := isWebSocket(r)
	if !ws && !acceptsEventStream(r.Header.Values("Accept")) {
		writeError(w, http.StatusNotAcceptable, "not_acceptable",
			"the live stream is served as a WebSocket upgrade or with Accept: text/event-stream")
		return
	}
	after, given, err := startPosition(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	if !given {
		after, err = h.events.Head(r.Context())
		if err != nil {
			h.log.ErrorContext(r.Context(), "live: read event store head", "tenant", tenant, "err", err)
			writeError(w, http.StatusServiceUnavailable, "unavailable", "the event store is unavailable, retry later")
			return
		}
	}
	if ws {
		h.serveWebSocket(w, r, tenant, after)
		return
	}
	h.serveSSE(w, r, tenant, after)
}

// serveSSE streams events as Server-Sent Events.
func (h *Hub) serveSSE(w http.ResponseWriter, r *http.Request, tenant string, after int64) {
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	log := h.log.With("tenant", tenant, "transport", "sse")

	// Subscribed before the first frame, so a client that saw it misses no line.
	lines := h.logLines(ctx, tenant)
	hdr := w.Header()
	hdr.Set("Content-Type", "text/event-stream")
	hdr.Set("Cache-Control", "no-cache")
	hdr.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)

	s := &sseStream{w: w, rc: http.NewResponseController(w), timeout: h.writeTimeout}
	// Leave no write deadline behind for whatever the server does with the
	// connection next.
	defer func() { _ = s.rc.SetWriteDeadline(time.Time{}) }()
	if err := s.send([]byte(fmt.Sprintf("retry: %d\n\n", sseRetryMs))); err != nil {
		log.WarnContext(ctx, "live: start event stream", "err", err)
		return
	}

	sub := h.events.Subscribe(ctx, after, eventstore.ReadOptions{Tenant: tenant})
	defer drain(cancel, sub)
	log.DebugContext(ctx, "live: stream opened", "after", after)

	keepAlive := time.NewTicker(h.keepAlive)
	defer keepAlive.Stop()
	for {
		select {
		case <-ctx.Done():
			log.DebugContext(ctx, "live: stream closed by client", "after", after)
			return
		case ln := <-lines:
			frame := fmt.Appendf(nil, "event: %s\ndata: %s\n\n", liveevents.EventBuildLog, encodeLog(ln))
			if err := s.send(frame); err != nil {
				log.InfoContext(ctx, "live: closing stream", "after", after, "err", err)
				return
			}
		case <-keepAlive.C:
			if err := s.send([]byte(": keepalive\n\n")); err != nil {
				log.InfoContext(ctx, "live: closing stream", "after", after, "err", err)
				return
			}
		case ev, ok := <-sub.C:
			if !ok {
				h.subscriptionEnded(ctx, log, sub, after)
				return
			}
			name, data, ok := h.encode(ctx, log, ev, tenant)
			if !ok {
				continue
			}
			frame := fmt.Appendf(nil, "id: %d\nevent: %s\ndata: %s\n\n", ev.Position, name, data)
			if err := s.send(frame); err != nil {
				log.InfoContext(ctx, "live: closing stream", "after", after, "err", err)
				return
			}
			after = ev.Position
		}
	}
}

// sseStream writes SSE frames, each flushed at once and bounded by a write
// deadline so that a client that stopped reading cannot hold the handler.
type sseStream struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
}

// send writes and flushes one frame.
func (s *sseStream) send(frame []byte) error {
	err := s.rc.SetWriteDeadline(time.Now().Add(s.timeout))
	if err != nil && !errors.Is(err, http.ErrNotSupported) {
		return fmt.Errorf("set write deadline: %w", err)
	}
	if _, err := s.w.Write(frame); err != nil {
		return fmt.Errorf("write event stream: %w", err)
	}
	if err := s.rc.Flush(); err != nil {
		return fmt.Errorf("flush event stream: %w", err)
	}
	return nil
}

// serveWebSocket streams events as WebSocket text frames.
func (h *Hub) serveWebSocket(w http.ResponseWriter, r *http.Request, tenant string, after int64) {
	log := h.log.With("tenant", tenant, "transport", "websocket")
	// Default options: same-origin (or Origin-less) clients only. The user is
	// authenticated by bearer token or access_token, not by cookie, so there
	// is no cross-site request to forge.
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		// Accept has already answered the request.
		log.InfoContext(r.Context(), "live: websocket handshake", "err", err)
		return
	}
	defer func() { _ = c.CloseNow() }()

	// CloseRead reads (and answers) control frames; its context ends when the
	// client goes away. Clients have nothing to say: a data frame closes the
	// connection.
	ctx, cancel := context.WithCancel(c.CloseRead(r.Context()))
	defer cancel()
	sub := h.events.Subscribe(ctx, after, eventstore.ReadOptions{Tenant: tenant})
	defer drain(cancel, sub)
	log.DebugContext(ctx, "live: stream opened", "after", after)

	lines := h.logLines(ctx, tenant)
	ping := time.NewTicker(h.pingInterval)
	defer ping.Stop()
	for {
		select {
		case <-ctx.Done():
			log.DebugContext(ctx, "live: stream closed", "after", after)
			_ = c.Close(websocket.StatusGoingAway, "")
			return
		case ln := <-lines:
			msg, _ := json.Marshal(Message{Event: liveevents.EventBuildLog, Data: json.RawMessage(encodeLog(ln))})
			if err := h.wsDo(ctx, func(ctx context.Context) error { return c.Write(ctx, websocket.MessageText, msg) }); err != nil {
				log.InfoContext(ctx, "live: closing stream", "after", after, "err", fmt.Errorf("write: %w", err))
				return
			}
		case <-ping.C:
			if err := h.wsDo(ctx, func(ctx context.Context) error { return c.Ping(ctx) }); err != nil {
				log.InfoContext(ctx, "live: closing stream", "after", after, "err", fmt.Errorf("ping: %w", err))
				return
			}
		case ev, ok := <-sub.C:
			if !ok {
				h.subscriptionEnded(ctx, log, sub, after)
				_ = c.Close(websocket.StatusTryAgainLater, "event stream ended, reconnect with lastEventId")
				return
			}
			name, data, ok := h.encode(ctx, log, ev, tenant)
			if !ok {
				continue
			}
			msg, err := json.Marshal(Message{ID: ev.Position, Event: name, Data: json.RawMessage(data)})
			if err != nil {
				log.ErrorContext(ctx, "live: encode message", "position", ev.Position, "err", err)
				continue
			}
			err = h.wsDo(ctx, func(ctx context.Context) error { return c.Write(ctx, websocket.MessageText, msg) })
			if err != nil {
				log.InfoContext(ctx, "live: closing stream", "after", after, "err", fmt.Errorf("write: %w", err))
				return
			}
			after = ev.Position
		}
	}
}

// wsDo runs one WebSocket operation within the write timeout. On timeout
// coder/websocket closes the connection.
func (h *Hub) wsDo(ctx context.Context, op func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, h.writeTimeout)
	defer cancel()
	return op(ctx)
}

// encode maps ev to its wire name and JSON payload; ok is false for events
// that are not sent.
func (h *Hub) encode(ctx context.Context, log *slog.Logger, ev eventstore.Event, tenant string) (string, []byte, bool) {
	if ev.Tenant != tenant {
		// The subscription filters by tenant; this is a second lock on the
		// door, never expected to trigger.
		log.ErrorContext(ctx, "live: event of another tenant on the subscription", "position", ev.Position, "eventTenant", ev.Tenant)
		return "", nil, false
	}
	name, payload, err := mapEvent(ev, h.urls)
	if err == nil && name != "" && h.projected != nil {
		// Bounded: a stalled projector delays the stream, it does not stop it.
		wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		if werr := h.projected.WaitFor(wctx, ev.Position); werr != nil && ctx.Err() == nil {
			log.WarnContext(ctx, "live: read models lag behind", "position", ev.Position, "err", werr)
		}
		cancel()
	}
	if err != nil {
		log.WarnContext(ctx, "live: skip undecodable event", "position", ev.Position, "type", ev.Type, "err", err)
		return "", nil, false
	}
	if name == "" {
		return "", nil, false
	}
	data, err := json.Marshal(payload)
	if err != nil {
		log.ErrorContext(ctx, "live: encode payload", "position", ev.Position, "event", name, "err", err)
		return "", nil, false
	}
	return name, data, true
}

// subscriptionEnded logs why a subscription closed while the client was
// still connected (usually the store shutting down); the client reconnects
// from its last position.
func (h *Hub) subscriptionEnded(ctx context.Context, log *slog.Logger, sub *eventstore.Subscription, after int64) {
	err := sub.Err()
	if ctx.Err() != nil || errors.Is(err, context.Canceled) {
		return
	}
	log.WarnContext(ctx, "live: subscription ended", "after", after, "err", err)
}

// drain cancels a subscription and waits until its channel is closed, so
// that Serve does not return while the store still works for it.
func drain(cancel context.CancelFunc, sub *eventstore.Subscription) {
	cancel()
	for range sub.C {
	}
}

// startPosition returns the position to stream after, and whether the
// client gave one.
func startPosition(r *http.Request) (int64, bool, error) {
	q := r.URL.Query()
	for _, src := range []struct{ name, value string }{
		{"Last-Event-ID header", r.Header.Get("Last-Event-ID")},
		{"after parameter", q.Get("after")},
		{"lastEventId parameter", q.Get("lastEventId")},
	} {
		v := strings.TrimSpace(src.value)
		if v == "" {
			continue
		}
		pos, err := strconv.ParseInt(v, 10, 64)
		if err != nil || pos < 0 {
			return 0, false, fmt.Errorf("%s %q is not an event position (a non-negative integer)", src.name, src.value)
		}
		return pos, true, nil
	}
	return 0, false, nil
}

// isWebSocket reports whether r asks for a WebSocket upgrade.
func isWebSocket(r *http.Request) bool {
	for _, v := range r.Header.Values("Upgrade") {
		for tok := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(tok), "websocket") {
				return true
			}
		}
	}
	return false
}

// acceptsEventStream reports whether the Accept header values explicitly
// list text/event-stream (with a non-zero quality). A wildcard does not
// count: a plain GET must not turn into an endless response.
func acceptsEventStream(accept []string) bool {
	for _, v := range accept {
		for part := range strings.SplitSeq(v, ",") {
			mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
			if err != nil || mt != "text/event-stream" {
				continue
			}
			if q, ok := params["q"]; ok {
				if f, err := strconv.ParseFloat(q, 64); err == nil && f == 0 {
					continue
				}
			}
			return true
		}
	}
	return false
}

// errorBody is the JSON error answer, in the gateway's shape.
type errorBody struct {
	Error   string `json:"error"`
	Message string `json:"message"`
}

// writeError answers with a JSON error.
func writeError(w http.ResponseWriter, status int, code, message string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(errorBody{Error: code, Message: message})
}
