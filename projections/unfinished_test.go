package projections_test

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/zipship/zipship/domain"
	"github.com/zipship/zipship/projections"
)

// UnfinishedBuilds lists the pending and building builds of every tenant
// in request order, whatever order their later events came in.
func TestUnfinishedBuilds(t *testing.T) {
	store, db := openStore(t), newDB(t)
	p, _ := startProjector(t, store, db)
	c := &clock{now: t0}
	ctx := context.Background()

	if got, err := db.UnfinishedBuilds(ctx); err != nil || got == nil || len(got) != 0 {
		t.Fatalf("empty read models: %#v, %v", got, err)
	}

	done, _ := successfulBuild(c, "alpha", "a-done", "u")
	appendEvents(t, store, "alpha", done...)
	// Requested in this order: b-pending, a-started, a-retrying, b-failed,
	// a-pending, b-late.
	appendEvents(t, store, "beta", requested(c, "beta", "b-pending", "u"))
	appendEvents(t, store, "alpha", requested(c, "alpha", "a-started", "u"))
	appendEvents(t, store, "alpha", requested(c, "alpha", "a-retrying", "u"))
	appendEvents(t, store, "beta", requested(c, "beta", "b-failed", "u"))
	appendEvents(t, store, "alpha", requested(c, "alpha", "a-pending", "u"))
	appendEvents(t, store, "beta", requested(c, "beta", "b-late", "u"))
	// Later events, in another order.
	appendEvents(t, store, "beta",
		domain.BuildStarted{BuildID: "b-failed", Attempt: 1, Runner: "r", At: c.after(time.Second)},
		domain.BuildFailed{BuildID: "b-failed", Attempt: 1, Step: domain.StepDetect, Error: "no index.html", At: c.after(time.Second)})
	appendEvents(t, store, "alpha",
		domain.BuildStarted{BuildID: "a-retrying", Attempt: 1, Runner: "r", At: c.after(time.Second)},
		domain.BuildAttemptFailed{BuildID: "a-retrying", Attempt: 1, Step: domain.StepDownload, Error: "blob store down",
			RetryInMs: 2000, At: c.after(time.Second)},
		domain.BuildStarted{BuildID: "a-started", Attempt: 1, Runner: "r", At: c.after(time.Second)})
	waitFor(t, p, appendEvents(t, store, "beta",
		domain.BuildStarted{BuildID: "b-late", Attempt: 1, Runner: "r", At: c.after(time.Second)}))

	got, err := db.UnfinishedBuilds(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []projections.BuildRef{
		{ID: "b-pending", TenantID: "beta"},
		{ID: "a-started", TenantID: "alpha"},
		{ID: "a-retrying", TenantID: "alpha"},
		{ID: "a-pending", TenantID: "alpha"},
		{ID: "b-late", TenantID: "beta"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("UnfinishedBuilds:\n got %+v\nwant %+v", got, want)
	}

	// Finishing builds takes them off the list.
	waitFor(t, p, appendEvents(t, store, "alpha",
		domain.BuildSucceeded{BuildID: "a-started", Attempt: 1, ManifestKey: "m", At: c.after(time.Second)},
		domain.BuildFailed{BuildID: "a-pending", Error: domain.CancelledError, At: c.after(time.Second)}))
	got, err = db.UnfinishedBuilds(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want = []projections.BuildRef{want[0], want[2], want[4]}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("after two ended:\n got %+v\nwant %+v", got, want)
	}

	db.Close()
	if _, err := db.UnfinishedBuilds(ctx); !errors.Is(err, projections.ErrClosed) {
		t.Errorf("closed DB: %v, want ErrClosed", err)
	}
}
