package buildlog_test

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zipship/zipship/buildlog"
	"github.com/zipship/zipship/infra/blob"
	"github.com/zipship/zipship/infra/blob/fs"
)

func newBroker(t *testing.T) (*buildlog.Broker, *fs.Store) {
	t.Helper()
	store, err := fs.New(filepath.Join(t.TempDir(), "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	return buildlog.NewBroker(store, nil), store
}

func readStored(t *testing.T, store *fs.Store, tenant, build string) string {
	t.Helper()
	obj, err := store.Open(context.Background(), blob.LogKey(tenant, build))
	if err != nil {
		t.Fatal(err)
	}
	defer obj.Close()
	b, _ := io.ReadAll(obj)
	return string(b)
}

func TestLinesRedactionAndStorage(t *testing.T) {
	b, store := newBroker(t)
	l := b.Open("acme", "b1", []string{"s3cr3t-value", "ab"})
	out, errw := l.Writer(buildlog.Stdout), l.Writer(buildlog.Stderr)
	l.Printf("$ npm run build")
	io.WriteString(out, "building with s3cr3t-value\npartial ")
	io.WriteString(out, "line\r\n")
	io.WriteString(errw, "warn: ab is short, not redacted")
	errw.Close()
	if got := strings.Join(l.Tail(10), "|"); got != "building with [redacted]|partial line|warn: ab is short, not redacted" {
		t.Fatalf("tail = %q", got)
	}
	if got := l.Redact("error: s3cr3t-value leaked"); got != "error: [redacted] leaked" {
		t.Fatalf("Redact = %q", got)
	}
	if err := l.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	stored := readStored(t, store, "acme", "b1")
	if strings.Contains(stored, "s3cr3t-value") || !strings.Contains(stored, "stdout building with [redacted]") ||
		!strings.Contains(stored, "system $ npm run build") || !strings.Contains(stored, "stderr warn: ab is short") {
		t.Fatalf("stored log:\n%s", stored)
	}
	// Writes after Close are dropped, not stored.
	l.Printf("late")
	if _, ok := b.Follow(context.Background(), "b1", 0); ok {
		t.Fatal("Follow of a closed log succeeded")
	}
}

func TestFollowReplaysThenStreams(t *testing.T) {
	b, _ := newBroker(t)
	l := b.Open("acme", "b1", nil)
	w := l.Writer(buildlog.Stdout)
	for i := 1; i <= 3; i++ {
		fmt.Fprintf(w, "line %d\n", i)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, ok := b.Follow(ctx, "b1", 1)
	if !ok {
		t.Fatal("Follow of an open log failed")
	}
	go func() {
		fmt.Fprintf(w, "line 4\n")
		l.Close(context.Background())
	}()
	var got []string
	for ln := range c {
		got = append(got, fmt.Sprintf("%d:%s", ln.N, ln.Text))
	}
	if strings.Join(got, ",") != "2:line 2,3:line 3,4:line 4" {
		t.Fatalf("followed %v", got)
	}
}

func TestSubscribeTenantIsolation(t *testing.T) {
	b, _ := newBroker(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sub := b.SubscribeTenant(ctx, "acme")
	b.Open("evil", "e1", nil).Printf("not for acme")
	b.Open("acme", "a1", nil).Printf("for acme")
	select {
	case ln := <-sub:
		if ln.Tenant != "acme" || ln.BuildID != "a1" || ln.Text != "for acme" || ln.Stream != buildlog.System {
			t.Fatalf("line %+v", ln)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no line")
	}
	select {
	case ln := <-sub:
		t.Fatalf("unexpected line %+v", ln)
	default:
	}
}

func TestLongLinesAreSplit(t *testing.T) {
	b, _ := newBroker(t)
	l := b.Open("acme", "b1", nil)
	w := l.Writer(buildlog.Stdout)
	io.WriteString(w, strings.Repeat("x", 20<<10))
	w.Close()
	tail := l.Tail(10)
	if len(tail) != 3 || len(tail[0]) != 8<<10 || len(tail[2]) != 4<<10 {
		t.Fatalf("split into %d lines", len(tail))
	}
}
