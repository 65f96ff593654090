package app_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/zipship/zipship/app"
	"github.com/zipship/zipship/domain"
	"github.com/zipship/zipship/infra/blob"
)

func TestSyncPointerNothingLive(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	ref := &countingRefresher{}
	// A build that was requested but never activated does not count.
	e.published("acme", time.Now())
	p, err := e.app.SyncPointer(ctx, "acme", ref)
	if err != nil || p != nil {
		t.Fatalf("SyncPointer = %+v, %v; want nil, nil", p, err)
	}
	if _, err := blob.ReadPointer(ctx, e.blobs, "acme"); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("pointer written for a tenant with nothing live: %v", err)
	}
	if ref.count() != 0 {
		t.Errorf("CDN refreshed %d times for a tenant with nothing live", ref.count())
	}
}

func TestSyncPointerWritesFromSiteStreamIdempotently(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	b := e.published("acme", time.Now())
	act, err := e.app.Activate(ctx, app.Meta{}, b, "alice")
	if err != nil {
		t.Fatal(err)
	}
	// Activation alone does not write the pointer: SyncPointer does.
	if _, err := blob.ReadPointer(ctx, e.blobs, "acme"); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("pointer before SyncPointer: %v", err)
	}
	ref := &countingRefresher{}
	p, err := e.app.SyncPointer(ctx, "acme", ref)
	if err != nil {
		t.Fatal(err)
	}
	want := blob.Pointer{Tenant: "acme", BuildID: b.ID(), Version: b.Version(), ManifestKey: blob.ManifestKey("acme", b.ID())}
	if p == nil || p.Tenant != want.Tenant || p.BuildID != want.BuildID || p.Version != want.Version ||
		p.ManifestKey != want.ManifestKey || p.ManifestKey != act.ManifestKey {
		t.Fatalf("SyncPointer = %+v, want %+v", p, want)
	}
	stored, err := blob.ReadPointer(ctx, e.blobs, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if stored.BuildID != b.ID() || !stored.ActivatedAt.Equal(p.ActivatedAt) {
		t.Fatalf("stored pointer %+v, returned %+v", stored, p)
	}
	if ref.count() != 1 {
		t.Errorf("%d refreshes, want 1", ref.count())
	}
	info1, err := e.blobs.Stat(ctx, blob.PointerKey("acme"))
	if err != nil {
		t.Fatal(err)
	}

	// Again: same answer, pointer not rewritten, CDN told again (harmless).
	time.Sleep(5 * time.Millisecond)
	p2, err := e.app.SyncPointer(ctx, "acme", ref)
	if err != nil {
		t.Fatal(err)
	}
	if p2.BuildID != b.ID() || !p2.ActivatedAt.Equal(p.ActivatedAt) {
		t.Errorf("second SyncPointer = %+v, first %+v", p2, p)
	}
	info2, err := e.blobs.Stat(ctx, blob.PointerKey("acme"))
	if err != nil {
		t.Fatal(err)
	}
	if info1 != info2 {
		t.Errorf("pointer rewritten: %+v then %+v", info1, info2)
	}
	if ref.count() != 2 {
		t.Errorf("%d refreshes, want 2", ref.count())
	}
	// Without a refresher it still syncs.
	if p3, err := e.app.SyncPointer(ctx, "acme", nil); err != nil || p3.BuildID != b.ID() {
		t.Errorf("SyncPointer(nil refresher) = %+v, %v", p3, err)
	}
}

// A crash between the site event and the pointer write leaves the pointer
// on the previous build; SyncPointer repairs it.
func TestSyncPointerRepairsStalePointer(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	t0 := time.Now().Add(-time.Minute)
	b1 := e.published("acme", t0)
	b2 := e.published("acme", t0.Add(time.Second))
	if _, err := e.app.Activate(ctx, app.Meta{}, b1, "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.app.SyncPointer(ctx, "acme", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.app.Activate(ctx, app.Meta{}, b2, "alice"); err != nil {
		t.Fatal(err)
	}
	// "crash": the pointer still names b1.
	if p, _ := blob.ReadPointer(ctx, e.blobs, "acme"); p.BuildID != b1.ID() {
		t.Fatalf("pointer %s before repair", p.BuildID)
	}
	p, err := e.app.SyncPointer(ctx, "acme", nil)
	if err != nil {
		t.Fatal(err)
	}
	stored, err := blob.ReadPointer(ctx, e.blobs, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if p.BuildID != b2.ID() || stored.BuildID != b2.ID() || stored.Version != b2.Version() {
		t.Errorf("after repair: returned %+v, stored %+v; want %s", p, stored, b2.ID())
	}
}

func TestRollbackThenSyncPointer(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	ref := &countingRefresher{}
	t0 := time.Now().Add(-time.Minute)
	b1 := e.published("acme", t0)
	b2 := e.published("acme", t0.Add(time.Second))
	for _, b := range []*domain.Build{b1, b2} {
		if _, err := e.app.Activate(ctx, app.Meta{}, b, "alice"); err != nil {
			t.Fatal(err)
		}
		if _, err := e.app.SyncPointer(ctx, "acme", ref); err != nil {
			t.Fatal(err)
		}
	}
	if p, _ := blob.ReadPointer(ctx, e.blobs, "acme"); p.BuildID != b2.ID() {
		t.Fatalf("pointer %s, want build 2", p.BuildID)
	}
	rb, _, err := e.app.Rollback(ctx, app.Meta{}, "alice", "acme", b1.ID())
	if err != nil {
		t.Fatal(err)
	}
	if rb.BuildID != b1.ID() || rb.Previous != b2.ID() || rb.Version != b1.Version() {
		t.Errorf("rollback event %+v", rb)
	}
	p, err := e.app.SyncPointer(ctx, "acme", ref)
	if err != nil {
		t.Fatal(err)
	}
	stored, err := blob.ReadPointer(ctx, e.blobs, "acme")
	if err != nil {
		t.Fatal(err)
	}
	want := blob.ManifestKey("acme", b1.ID())
	if p.BuildID != b1.ID() || stored.BuildID != b1.ID() || stored.ManifestKey != want || stored.Version != b1.Version() {
		t.Errorf("after rollback: returned %+v, stored %+v; want build 1", p, stored)
	}
	if ref.count() != 3 {
		t.Errorf("%d refreshes, want 3", ref.count())
	}
	// Rolling back to what is live, or to a build never deployed, is refused.
	if _, _, err := e.app.Rollback(ctx, app.Meta{}, "alice", "acme", b1.ID()); !errors.Is(err, domain.ErrAlreadyLive) {
		t.Errorf("rollback to the live build: %v", err)
	}
	b3 := e.published("acme", t0.Add(2*time.Second))
	if _, _, err := e.app.Rollback(ctx, app.Meta{}, "alice", "acme", b3.ID()); !errors.Is(err, domain.ErrNeverDeployed) {
		t.Errorf("rollback to a build never deployed: %v", err)
	}
}

func TestSyncPointerReportsRefreshFailure(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	b := e.published("acme", time.Now())
	if _, err := e.app.Activate(ctx, app.Meta{}, b, "alice"); err != nil {
		t.Fatal(err)
	}
	cdnDown := errors.New("cdn down")
	p, err := e.app.SyncPointer(ctx, "acme", &countingRefresher{err: cdnDown})
	if !errors.Is(err, cdnDown) {
		t.Fatalf("SyncPointer error %v, want the refresher's", err)
	}
	// The pointer is written anyway: the next sync only refreshes.
	if p == nil || p.BuildID != b.ID() {
		t.Errorf("returned pointer %+v", p)
	}
	if stored, err := blob.ReadPointer(ctx, e.blobs, "acme"); err != nil || stored.BuildID != b.ID() {
		t.Errorf("stored pointer %+v, %v", stored, err)
	}
}
