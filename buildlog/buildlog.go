// Package buildlog carries a build's output (the sandboxed commands'
// stdout and stderr, and the runner's own notes) to the two places that
// want it: live followers (the tenant's WebSocket/SSE stream as build:log,
// GET .../logs?follow=1) and the build log in blob storage, written when
// the build's log closes. Lines are redacted on the way in: secret values
// never reach a follower, the stored log or the runner's own log.
//
// Logs are not events: they are large, noisy and not facts the domain
// decides on, so they stay out of the event store.
package buildlog

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/zipship/zipship/infra/blob"
)

// Stream names where a line came from.
type Stream string

// The streams of a build log.
const (
	Stdout Stream = "stdout"
	Stderr Stream = "stderr"
	// System lines are the runner's own notes (step boundaries, commands).
	System Stream = "system"
)

// Line is one line of a build's output.
type Line struct {
	Tenant  string    `json:"tenantId"`
	BuildID string    `json:"buildId"`
	N       int       `json:"n"`
	Stream  Stream    `json:"stream"`
	Text    string    `json:"text"`
	Time    time.Time `json:"time"`
}

// Redacted replaces secret values in log lines.
const Redacted = "[redacted]"

// maxLine caps one line; longer output is split.
const maxLine = 8 << 10

// maxKept caps the lines kept in memory per open build for late followers;
// the stored log has everything.
const maxKept = 20000

// Broker keeps the open builds' logs and their followers.
type Broker struct {
	blobs blob.Store
	log   *slog.Logger

	mu     sync.Mutex
	builds map[string]*buildLog // by build id
	subs   map[*tenantSub]struct{}
}

type tenantSub struct {
	tenant string
	c      chan Line
}

// NewBroker returns a broker that stores closed logs in blobs.
func NewBroker(blobs blob.Store, log *slog.Logger) *Broker {
	if log == nil {
		log = slog.Default()
	}
	return &Broker{blobs: blobs, log: log, builds: map[string]*buildLog{}, subs: map[*tenantSub]struct{}{}}
}

// buildLog is one build's log while it is open.
type buildLog struct {
	tenant, id string
	secrets    []string
	buf        bytes.Buffer // the whole log, stored at Close
	lines      []Line       // the last maxKept lines, for late followers
	n          int
	closed     bool
	changed    chan struct{} // closed and replaced on every new line
}

// Open starts (or continues, for a new attempt) the log of a build.
// secrets are values to redact (environment variable values).
func (b *Broker) Open(tenant, buildID string, secrets []string) *Log {
	b.mu.Lock()
	defer b.mu.Unlock()
	bl, ok := b.builds[buildID]
	if !ok || bl.closed {
		bl = &buildLog{tenant: tenant, id: buildID, changed: make(chan struct{})}
		b.builds[buildID] = bl
	}
	for _, s := range secrets {
		if len(s) >= 3 { // shorter values would redact ordinary words
			bl.secrets = append(bl.secrets, s)
		}
	}
	return &Log{b: b, bl: bl}
}

// Log is an open build log. Writer returns io.Writers for the sandbox's
// stdout and stderr.
type Log struct {
	b  *Broker
	bl *buildLog
}

// Writer returns a writer whose output becomes lines of stream.
func (l *Log) Writer(stream Stream) io.WriteCloser {
	return &lineWriter{l: l, stream: stream}
}

// Printf adds a system line.
func (l *Log) Printf(format string, args ...any) {
	l.add(System, fmt.Sprintf(format, args...))
}

// Tail returns the last n lines as text (for a failed step's error).
func (l *Log) Tail(n int) []string {
	l.b.mu.Lock()
	defer l.b.mu.Unlock()
	lines := l.bl.lines
	var out []string
	for i := len(lines) - 1; i >= 0 && len(out) < n; i-- {
		if lines[i].Stream != System {
			out = append(out, lines[i].Text)
		}
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}

// Redact replaces every secret in s.
func (l *Log) Redact(s string) string {
	l.b.mu.Lock()
	secrets := l.bl.secrets
	l.b.mu.Unlock()
	return redact(s, secrets)
}

func redact(s string, secrets []string) string {
	for _, sec := range secrets {
		if strings.Contains(s, sec) {
			s = strings.ReplaceAll(s, sec, Redacted)
		}
	}
	return s
}

func (l *Log) add(stream Stream, text string) {
	b := l.b
	b.mu.Lock()
	bl := l.bl
	if bl.closed {
		b.mu.Unlock()
		return
	}
	text = redact(text, bl.secrets)
	bl.n++
	line := Line{Tenant: bl.tenant, BuildID: bl.id, N: bl.n, Stream: stream, Text: text, Time: time.Now().UTC()}
	bl.lines = append(bl.lines, line)
	if len(bl.lines) > maxKept {
		bl.lines = bl.lines[len(bl.lines)-maxKept:]
	}
	bl.buf.WriteString(line.Format())
	close(bl.changed)
	bl.changed = make(chan struct{})
	var subs []chan Line
	for s := range b.subs {
		if s.tenant == bl.tenant {
			subs = append(subs, s.c)
		}
	}
	b.mu.Unlock()
	for _, c := range subs {
		select {
		case c <- line:
		default: // a follower that cannot keep up loses lines, never blocks the build
		}
	}
}

// Close stores the log at blob.LogKey and ends its followers.
func (l *Log) Close(ctx context.Context) error {
	b := l.b
	b.mu.Lock()
	bl := l.bl
	if bl.closed {
		b.mu.Unlock()
		return nil
	}
	bl.closed = true
	data := append([]byte(nil), bl.buf.Bytes()...)
	close(bl.changed)
	b.mu.Unlock()
	if _, err := b.blobs.Put(ctx, blob.LogKey(bl.tenant, bl.id), bytes.NewReader(data)); err != nil {
		return fmt.Errorf("store build log %s: %w", bl.id, err)
	}
	b.mu.Lock()
	if b.builds[bl.id] == bl {
		delete(b.builds, bl.id)
	}
	b.mu.Unlock()
	return nil
}

// lineWriter splits written bytes into lines.
type lineWriter struct {
	l       *Log
	stream  Stream
	mu      sync.Mutex
	partial []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			w.partial = append(w.partial, p...)
			for len(w.partial) >= maxLine {
				w.l.add(w.stream, string(w.partial[:maxLine]))
				w.partial = append(w.partial[:0], w.partial[maxLine:]...)
			}
			break
		}
		w.partial = append(w.partial, p[:i]...)
		w.l.add(w.stream, strings.TrimSuffix(string(w.partial), "\r"))
		w.partial = w.partial[:0]
		p = p[i+1:]
	}
	return n, nil
}

// Close flushes a last unterminated line.
func (w *lineWriter) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.partial) > 0 {
		w.l.add(w.stream, string(w.partial))
		w.partial = nil
	}
	return nil
}

// Follow returns the build's lines after line number after: those kept in
// memory, then new ones as they come, until the log closes or ctx ends.
// ok is false when the build has no open log (it finished: read the stored
// log instead, or it has not started).
func (b *Broker) Follow(ctx context.Context, buildID string, after int) (<-chan Line, bool) {
	b.mu.Lock()
	bl, ok := b.builds[buildID]
	b.mu.Unlock()
	if !ok {
		return nil, false
	}
	out := make(chan Line, 64)
	go func() {
		defer close(out)
		next := after
		for {
			b.mu.Lock()
			var pending []Line
			for _, ln := range bl.lines {
				if ln.N > next {
					pending = append(pending, ln)
				}
			}
			changed, closed := bl.changed, bl.closed
			b.mu.Unlock()
			for _, ln := range pending {
				select {
				case out <- ln:
					next = ln.N
				case <-ctx.Done():
					return
				}
			}
			if closed {
				return
			}
			select {
			case <-changed:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, true
}

// SubscribeTenant delivers every new line of tenant's builds until ctx
// ends. A subscriber that cannot keep up misses lines.
func (b *Broker) SubscribeTenant(ctx context.Context, tenant string) <-chan Line {
	s := &tenantSub{tenant: tenant, c: make(chan Line, 256)}
	b.mu.Lock()
	b.subs[s] = struct{}{}
	b.mu.Unlock()
	go func() {
		<-ctx.Done()
		b.mu.Lock()
		delete(b.subs, s)
		b.mu.Unlock()
	}()
	return s.c
}

// Lines returns the lines of an open build log kept in memory; ok is false
// when the build has no open log.
func (b *Broker) Lines(buildID string) ([]Line, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	bl, ok := b.builds[buildID]
	if !ok {
		return nil, false
	}
	return append([]Line(nil), bl.lines...), true
}

// Format renders a line as the stored log has it.
func (ln Line) Format() string {
	return fmt.Sprintf("%s %s %s\n", ln.Time.Format("15:04:05.000"), ln.Stream, ln.Text)
}
