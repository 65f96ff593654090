// Package eventstoretest is the conformance suite of the eventstore
// contract. Every adapter's tests call Run with a function that opens a
// fresh, empty store; an adapter is correct when the whole suite passes.
//
// The suite asserts only what the contract promises: positions are
// increasing but not necessarily contiguous, event data is compared as JSON
// values (an adapter may re-encode it), and time is compared to the
// microsecond.
package eventstoretest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/zipship/zipship/infra/eventstore"
)

// waitTimeout bounds every wait for a subscription. It is long so that a
// loaded CI machine does not fail the suite; a passing run waits far less.
const waitTimeout = 15 * time.Second

// Run runs the conformance suite. open must return a new, empty store for
// each call and may register its own cleanup with t.Cleanup; a cleanup that
// closes the store must accept eventstore.ErrClosed, because some subtests
// close the store themselves.
func Run(t *testing.T, open func(t *testing.T) eventstore.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s eventstore.Store)
	}{
		{"AppendNoStream", testAppendNoStream},
		{"AppendExactVersion", testAppendExactVersion},
		{"AppendAny", testAppendAny},
		{"Conflict", testConflict},
		{"NoStreamOnExistingStreamConflicts", testNoStreamOnExisting},
		{"AppendRejectsEmptyBatch", testAppendEmpty},
		{"IdempotentRepeat", testIdempotentRepeat},
		{"PartialDuplicateRejected", testPartialDuplicate},
		{"AllOrNothing", testAllOrNothing},
		{"ReadStreamFromVersion", testReadStream},
		{"ReadAll", testReadAll},
		{"ReadAllDefaultLimit", testReadAllDefaultLimit},
		{"Head", testHead},
		{"EnvelopeRoundTrip", testEnvelopeRoundTrip},
		{"Defaults", testDefaults},
		{"ConcurrentAppendersAndSubscribers", testConcurrent},
		{"SubscribeCatchUpThenLive", testSubscribeCatchUpThenLive},
		{"SubscribeTenantFilter", testSubscribeTenant},
		{"SlowSubscriberDoesNotBlockAppends", testSlowSubscriber},
		{"SubscribeCancel", testSubscribeCancel},
		{"CloseEndsSubscriptions", testClose},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, open(t))
		})
	}
}

// ev returns a new event of type typ with a fresh id and JSON data {"n": n}.
func ev(typ string, n int) eventstore.Event {
	return eventstore.Event{
		ID:   uuid.New(),
		Type: typ,
		Data: json.RawMessage(fmt.Sprintf(`{"n":%d}`, n)),
	}
}

// evs returns n events of type typ.
func evs(typ string, n int) []eventstore.Event {
	out := make([]eventstore.Event, n)
	for i := range out {
		out[i] = ev(typ, i)
	}
	return out
}

// ctxT returns a context that ends with the test.
func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitTimeout)
	t.Cleanup(cancel)
	return ctx
}

func mustAppend(t *testing.T, s eventstore.Store, stream string, exp eventstore.ExpectedVersion, e ...eventstore.Event) eventstore.AppendResult {
	t.Helper()
	res, err := s.Append(ctxT(t), stream, exp, e...)
	if err != nil {
		t.Fatalf("Append(%s, %d, %d events): %v", stream, exp, len(e), err)
	}
	return res
}

func mustReadStream(t *testing.T, s eventstore.Store, stream string, from int64) []eventstore.Event {
	t.Helper()
	got, err := s.ReadStream(ctxT(t), stream, from)
	if err != nil {
		t.Fatalf("ReadStream(%s, %d): %v", stream, from, err)
	}
	return got
}

func mustReadAll(t *testing.T, s eventstore.Store, after int64, opts eventstore.ReadOptions) []eventstore.Event {
	t.Helper()
	got, err := s.ReadAll(ctxT(t), after, opts)
	if err != nil {
		t.Fatalf("ReadAll(%d, %+v): %v", after, opts, err)
	}
	return got
}

// readEverything pages through ReadAll from position 0.
func readEverything(t *testing.T, s eventstore.Store, opts eventstore.ReadOptions) []eventstore.Event {
	t.Helper()
	var all []eventstore.Event
	var after int64
	for {
		page := mustReadAll(t, s, after, opts)
		if len(page) == 0 {
			return all
		}
		all = append(all, page...)
		after = page[len(page)-1].Position
	}
}

func mustHead(t *testing.T, s eventstore.Store) int64 {
	t.Helper()
	h, err := s.Head(ctxT(t))
	if err != nil {
		t.Fatalf("Head: %v", err)
	}
	return h
}

// checkStream asserts that stream holds exactly the given ids, with versions
// 1..n and increasing positions.
func checkStream(t *testing.T, got []eventstore.Event, stream string, ids ...uuid.UUID) {
	t.Helper()
	if len(got) != len(ids) {
		t.Fatalf("stream %s: %d events, want %d", stream, len(got), len(ids))
	}
	for i, e := range got {
		if e.ID != ids[i] || e.Stream != stream || e.Version != int64(i+1) {
			t.Fatalf("stream %s event %d: id %s stream %q version %d, want id %s stream %q version %d",
				stream, i, e.ID, e.Stream, e.Version, ids[i], stream, i+1)
		}
		if e.Position <= 0 || (i > 0 && e.Position <= got[i-1].Position) {
			t.Fatalf("stream %s event %d: position %d not increasing (previous %d)", stream, i, e.Position, got[max(i-1, 0)].Position)
		}
	}
}

func ids(es []eventstore.Event) []uuid.UUID {
	out := make([]uuid.UUID, len(es))
	for i, e := range es {
		out[i] = e.ID
	}
	return out
}

func positions(es []eventstore.Event) []int64 {
	out := make([]int64, len(es))
	for i, e := range es {
		out[i] = e.Position
	}
	return out
}

func wantConflict(t *testing.T, err error, stream string, exp eventstore.ExpectedVersion, actual int64) {
	t.Helper()
	var c *eventstore.ConflictError
	if !errors.As(err, &c) {
		t.Fatalf("err = %v, want *eventstore.ConflictError", err)
	}
	if !eventstore.IsConflict(err) {
		t.Fatalf("IsConflict(%v) = false", err)
	}
	if c.Stream != stream || c.Expected != exp || c.Actual != actual {
		t.Fatalf("conflict = {Stream:%q Expected:%d Actual:%d}, want {Stream:%q Expected:%d Actual:%d}",
			c.Stream, c.Expected, c.Actual, stream, exp, actual)
	}
}

func testAppendNoStream(t *testing.T, s eventstore.Store) {
	e := evs("created", 2)
	res := mustAppend(t, s, "order-1", eventstore.NoStream, e...)
	if res.Version != 2 {
		t.Fatalf("Version = %d, want 2", res.Version)
	}
	got := mustReadStream(t, s, "order-1", 1)
	checkStream(t, got, "order-1", ids(e)...)
	if res.Position != got[1].Position {
		t.Fatalf("Position = %d, want position of last event %d", res.Position, got[1].Position)
	}
	if got[0].Position < 1 {
		t.Fatalf("first position %d, want >= 1", got[0].Position)
	}
}

func testAppendExactVersion(t *testing.T, s eventstore.Store) {
	a, b, c := ev("a", 1), ev("b", 2), ev("c", 3)
	mustAppend(t, s, "x", eventstore.Exact(0), a)
	res := mustAppend(t, s, "x", eventstore.Exact(1), b, c)
	if res.Version != 3 {
		t.Fatalf("Version = %d, want 3", res.Version)
	}
	_, err := s.Append(ctxT(t), "x", eventstore.Exact(1), ev("d", 4))
	wantConflict(t, err, "x", eventstore.Exact(1), 3)
	checkStream(t, mustReadStream(t, s, "x", 0), "x", a.ID, b.ID, c.ID)
}

func testAppendAny(t *testing.T, s eventstore.Store) {
	a, b := ev("a", 1), ev("b", 2)
	if res := mustAppend(t, s, "y", eventstore.Any, a); res.Version != 1 {
		t.Fatalf("Any on new stream: Version = %d, want 1", res.Version)
	}
	if res := mustAppend(t, s, "y", eventstore.Any, b); res.Version != 2 {
		t.Fatalf("Any on existing stream: Version = %d, want 2", res.Version)
	}
	checkStream(t, mustReadStream(t, s, "y", 1), "y", a.ID, b.ID)
}

func testConflict(t *testing.T, s eventstore.Store) {
	mustAppend(t, s, "c", eventstore.NoStream, evs("e", 2)...)
	_, err := s.Append(ctxT(t), "c", eventstore.Exact(5), ev("late", 0))
	wantConflict(t, err, "c", eventstore.Exact(5), 2)
	_, err = s.Append(ctxT(t), "c", eventstore.Exact(1), ev("late", 0))
	wantConflict(t, err, "c", eventstore.Exact(1), 2)
	_, err = s.Append(ctxT(t), "new", eventstore.Exact(1), ev("late", 0))
	wantConflict(t, err, "new", eventstore.Exact(1), 0)
	if n := len(mustReadStream(t, s, "c", 0)); n != 2 {
		t.Fatalf("stream c has %d events after conflicts, want 2", n)
	}
	if n := len(mustReadStream(t, s, "new", 0)); n != 0 {
		t.Fatalf("stream new has %d events after conflict, want 0", n)
	}
	if eventstore.IsConflict(errors.New("other")) || eventstore.IsConflict(nil) {
		t.Fatal("IsConflict true for a non-conflict error")
	}
}

func testNoStreamOnExisting(t *testing.T, s eventstore.Store) {
	mustAppend(t, s, "n", eventstore.NoStream, evs("e", 3)...)
	_, err := s.Append(ctxT(t), "n", eventstore.NoStream, ev("again", 0))
	wantConflict(t, err, "n", eventstore.NoStream, 3)
}

func testAppendEmpty(t *testing.T, s eventstore.Store) {
	if _, err := s.Append(ctxT(t), "e", eventstore.Any); err == nil {
		t.Fatal("Append with no events: no error")
	}
	if h := mustHead(t, s); h != 0 {
		t.Fatalf("Head = %d after rejected append, want 0", h)
	}
}

func testIdempotentRepeat(t *testing.T, s eventstore.Store) {
	batch := evs("e", 3)
	first := mustAppend(t, s, "i", eventstore.NoStream, batch...)
	head := mustHead(t, s)

	// The same batch again, with the guard that first succeeded (now stale),
	// with Any, and with the correct current version: always the same result.
	for _, exp := range []eventstore.ExpectedVersion{eventstore.NoStream, eventstore.Any, eventstore.Exact(3), eventstore.Exact(7)} {
		res, err := s.Append(ctxT(t), "i", exp, batch...)
		if err != nil {
			t.Fatalf("repeat with expected %d: %v", exp, err)
		}
		if res != first {
			t.Fatalf("repeat with expected %d: result %+v, want %+v", exp, res, first)
		}
	}
	if h := mustHead(t, s); h != head {
		t.Fatalf("Head moved from %d to %d after repeats", head, h)
	}

	// Still a repeat after the stream moved on.
	next := ev("next", 4)
	mustAppend(t, s, "i", eventstore.Exact(3), next)
	res, err := s.Append(ctxT(t), "i", eventstore.NoStream, batch...)
	if err != nil || res != first {
		t.Fatalf("repeat after the stream moved on: %+v, %v; want %+v, nil", res, err, first)
	}
	checkStream(t, mustReadStream(t, s, "i", 0), "i", append(ids(batch), next.ID)...)
	if n := len(readEverything(t, s, eventstore.ReadOptions{})); n != 4 {
		t.Fatalf("ReadAll: %d events, want 4", n)
	}
}

func testPartialDuplicate(t *testing.T, s eventstore.Store) {
	a, b, c := ev("a", 1), ev("b", 2), ev("c", 3)
	mustAppend(t, s, "p", eventstore.NoStream, a, b)

	// b is stored, c is not: neither a repeat nor a new batch.
	if _, err := s.Append(ctxT(t), "p", eventstore.Any, b, c); err == nil {
		t.Fatal("partially repeated batch: no error")
	} else if eventstore.IsConflict(err) {
		t.Fatalf("partially repeated batch: %v is a version conflict, want another error", err)
	}
	// c first, b second: rejected too, whatever the order.
	if _, err := s.Append(ctxT(t), "p", eventstore.Exact(2), c, b); err == nil {
		t.Fatal("partially repeated batch (stored id second): no error")
	}
	// An id stored in another stream.
	if _, err := s.Append(ctxT(t), "q", eventstore.Any, a); err == nil {
		t.Fatal("id of stream p appended to stream q: no error")
	}
	checkStream(t, mustReadStream(t, s, "p", 0), "p", a.ID, b.ID)
	if got := mustReadStream(t, s, "q", 0); len(got) != 0 {
		t.Fatalf("stream q has %d events, want 0", len(got))
	}
	if n := len(readEverything(t, s, eventstore.ReadOptions{})); n != 2 {
		t.Fatalf("ReadAll: %d events, want 2", n)
	}
}

func testAllOrNothing(t *testing.T, s eventstore.Store) {
	stored := ev("stored", 0)
	mustAppend(t, s, "other", eventstore.NoStream, stored)
	head := mustHead(t, s)

	// The third event fails (its id belongs to another stream): the first
	// two must not be written either.
	good1, good2 := ev("g", 1), ev("g", 2)
	if _, err := s.Append(ctxT(t), "aon", eventstore.NoStream, good1, good2, stored); err == nil {
		t.Fatal("batch with a foreign id: no error")
	}
	// Two events with the same id in one batch.
	dup := ev("d", 3)
	if _, err := s.Append(ctxT(t), "aon", eventstore.NoStream, good1, dup, dup); err == nil {
		t.Fatal("batch with a duplicate id: no error")
	}
	// A conflict writes nothing.
	if _, err := s.Append(ctxT(t), "aon", eventstore.Exact(4), good1, good2); !eventstore.IsConflict(err) {
		t.Fatalf("batch with a wrong version: %v, want a conflict", err)
	}
	if got := mustReadStream(t, s, "aon", 0); len(got) != 0 {
		t.Fatalf("stream aon has %d events after failed batches, want 0", len(got))
	}
	if h := mustHead(t, s); h != head {
		t.Fatalf("Head moved from %d to %d after failed batches", head, h)
	}
	// The rejected events can still be appended, with version 1.
	res := mustAppend(t, s, "aon", eventstore.NoStream, good1, good2)
	if res.Version != 2 {
		t.Fatalf("Version = %d, want 2", res.Version)
	}
}

func testReadStream(t *testing.T, s eventstore.Store) {
	e := evs("e", 5)
	mustAppend(t, s, "r", eventstore.NoStream, e[:2]...)
	mustAppend(t, s, "noise", eventstore.NoStream, evs("noise", 3)...)
	mustAppend(t, s, "r", eventstore.Exact(2), e[2:]...)

	got := mustReadStream(t, s, "r", 3)
	if len(got) != 3 {
		t.Fatalf("ReadStream from 3: %d events, want 3", len(got))
	}
	for i, g := range got {
		if g.Version != int64(i+3) || g.ID != e[i+2].ID {
			t.Fatalf("ReadStream from 3, event %d: version %d id %s, want version %d id %s", i, g.Version, g.ID, i+3, e[i+2].ID)
		}
	}
	checkStream(t, mustReadStream(t, s, "r", 0), "r", ids(e)...)
	checkStream(t, mustReadStream(t, s, "r", 1), "r", ids(e)...)
	if got := mustReadStream(t, s, "r", 6); len(got) != 0 {
		t.Fatalf("ReadStream past the end: %d events, want 0", len(got))
	}
	if got := mustReadStream(t, s, "unknown", 0); len(got) != 0 {
		t.Fatalf("ReadStream of unknown stream: %d events, want 0", len(got))
	}
}

// appendTenants appends n single-event appends, alternating tenants "a" and
// "b" over three streams, and returns them in append order.
func appendTenants(t *testing.T, s eventstore.Store, n int) []eventstore.Event {
	t.Helper()
	var out []eventstore.Event
	for i := range n {
		e := ev("t", i)
		e.Tenant = []string{"a", "b"}[i%2]
		stream := fmt.Sprintf("s-%d", i%3)
		res := mustAppend(t, s, stream, eventstore.Any, e)
		e.Stream, e.Version, e.Position = stream, res.Version, res.Position
		out = append(out, e)
	}
	return out
}

func testReadAll(t *testing.T, s eventstore.Store) {
	want := appendTenants(t, s, 10)

	all := mustReadAll(t, s, 0, eventstore.ReadOptions{})
	if !reflect.DeepEqual(ids(all), ids(want)) || !reflect.DeepEqual(positions(all), positions(want)) {
		t.Fatalf("ReadAll(0) = ids %v positions %v, want ids %v positions %v", ids(all), positions(all), ids(want), positions(want))
	}
	for i := 1; i < len(all); i++ {
		if all[i].Position <= all[i-1].Position {
			t.Fatalf("ReadAll positions not increasing: %v", positions(all))
		}
	}

	page := mustReadAll(t, s, want[3].Position, eventstore.ReadOptions{Limit: 4})
	if !reflect.DeepEqual(ids(page), ids(want[4:8])) {
		t.Fatalf("ReadAll(after %d, limit 4) = %v, want %v", want[3].Position, ids(page), ids(want[4:8]))
	}

	var wantA []eventstore.Event
	for _, e := range want {
		if e.Tenant == "a" {
			wantA = append(wantA, e)
		}
	}
	gotA := mustReadAll(t, s, 0, eventstore.ReadOptions{Tenant: "a"})
	if !reflect.DeepEqual(ids(gotA), ids(wantA)) {
		t.Fatalf("ReadAll(tenant a) = %v, want %v", ids(gotA), ids(wantA))
	}
	gotA = mustReadAll(t, s, wantA[1].Position, eventstore.ReadOptions{Tenant: "a", Limit: 2})
	if !reflect.DeepEqual(ids(gotA), ids(wantA[2:4])) {
		t.Fatalf("ReadAll(tenant a, after %d, limit 2) = %v, want %v", wantA[1].Position, ids(gotA), ids(wantA[2:4]))
	}
	if got := mustReadAll(t, s, 0, eventstore.ReadOptions{Tenant: "nobody"}); len(got) != 0 {
		t.Fatalf("ReadAll(unknown tenant) = %d events, want 0", len(got))
	}
	if got := mustReadAll(t, s, want[9].Position, eventstore.ReadOptions{}); len(got) != 0 {
		t.Fatalf("ReadAll after the head = %d events, want 0", len(got))
	}
}

func testReadAllDefaultLimit(t *testing.T, s eventstore.Store) {
	mustAppend(t, s, "big", eventstore.NoStream, evs("e", 150)...)
	// The default limit is at least 100.
	if got := mustReadAll(t, s, 0, eventstore.ReadOptions{}); len(got) < 100 {
		t.Fatalf("ReadAll with default limit: %d events, want at least 100", len(got))
	}
	if got := readEverything(t, s, eventstore.ReadOptions{Limit: 7}); len(got) != 150 {
		t.Fatalf("paging by 7: %d events, want 150", len(got))
	}
}

func testHead(t *testing.T, s eventstore.Store) {
	if h := mustHead(t, s); h != 0 {
		t.Fatalf("Head of empty store = %d, want 0", h)
	}
	res := mustAppend(t, s, "h1", eventstore.NoStream, evs("e", 2)...)
	if h := mustHead(t, s); h != res.Position {
		t.Fatalf("Head = %d, want %d", h, res.Position)
	}
	res2 := mustAppend(t, s, "h2", eventstore.NoStream, ev("e", 3))
	if res2.Position <= res.Position {
		t.Fatalf("second append position %d not after first %d", res2.Position, res.Position)
	}
	all := readEverything(t, s, eventstore.ReadOptions{})
	if h := mustHead(t, s); h != res2.Position || h != all[len(all)-1].Position {
		t.Fatalf("Head = %d, want %d (last ReadAll position %d)", h, res2.Position, all[len(all)-1].Position)
	}
}

// jsonEqual reports whether a and b hold the same JSON value.
func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var va, vb any
	if err := json.Unmarshal(a, &va); err != nil {
		t.Fatalf("data %q is not JSON: %v", a, err)
	}
	if err := json.Unmarshal(b, &vb); err != nil {
		t.Fatalf("data %q is not JSON: %v", b, err)
	}
	return reflect.DeepEqual(va, vb)
}

func testEnvelopeRoundTrip(t *testing.T, s eventstore.Store) {
	loc := time.FixedZone("UTC+2", 2*60*60)
	want := eventstore.Event{
		ID:            uuid.Must(uuid.NewV7()),
		Type:          "build.requested",
		SchemaVersion: 3,
		Time:          time.Date(2025, 3, 14, 15, 9, 26, 535897932, loc),
		Tenant:        "tenant-42",
		CorrelationID: "corr-1",
		CausationID:   "cause-1",
		TraceParent:   "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		Data:          json.RawMessage(`{"buildId":"b1","config":{"framework":"next","env":{"A":"x\u00e9"}},"n":[1,2.5,null,true]}`),
	}
	res := mustAppend(t, s, "build-b1", eventstore.NoStream, want)

	check := func(how string, got eventstore.Event) {
		t.Helper()
		if got.ID != want.ID || got.Stream != "build-b1" || got.Version != 1 || got.Position != res.Position ||
			got.Type != want.Type || got.SchemaVersion != want.SchemaVersion || got.Tenant != want.Tenant ||
			got.CorrelationID != want.CorrelationID || got.CausationID != want.CausationID || got.TraceParent != want.TraceParent {
			t.Fatalf("%s: got %+v, want %+v (stream build-b1, version 1, position %d)", how, got, want, res.Position)
		}
		if d := got.Time.Sub(want.Time); d < -time.Microsecond || d > time.Microsecond {
			t.Fatalf("%s: time %s, want %s (to the microsecond)", how, got.Time, want.Time)
		}
		if !jsonEqual(t, got.Data, want.Data) {
			t.Fatalf("%s: data %s, want %s", how, got.Data, want.Data)
		}
	}
	got := mustReadStream(t, s, "build-b1", 1)
	if len(got) != 1 {
		t.Fatalf("ReadStream: %d events, want 1", len(got))
	}
	check("ReadStream", got[0])
	all := mustReadAll(t, s, 0, eventstore.ReadOptions{Tenant: "tenant-42"})
	if len(all) != 1 {
		t.Fatalf("ReadAll: %d events, want 1", len(all))
	}
	check("ReadAll", all[0])

	sub := s.Subscribe(ctxT(t), 0, eventstore.ReadOptions{})
	check("Subscribe", recvN(t, sub, 1)[0])
}

func testDefaults(t *testing.T, s eventstore.Store) {
	before := time.Now()
	in := []eventstore.Event{{Type: "defaults", Data: json.RawMessage(`{}`)}, {Type: "defaults"}}
	mustAppend(t, s, "d", eventstore.NoStream, in...)
	after := time.Now()
	if in[0].ID != uuid.Nil || !in[0].Time.IsZero() || in[0].Version != 0 {
		t.Fatalf("Append modified the caller's events: %+v", in[0])
	}
	got := mustReadStream(t, s, "d", 0)
	if len(got) != 2 {
		t.Fatalf("%d events, want 2", len(got))
	}
	for i, e := range got {
		if e.ID == uuid.Nil || e.ID.Version() != 7 {
			t.Fatalf("event %d: id %s, want an assigned UUIDv7", i, e.ID)
		}
		if e.SchemaVersion != 1 {
			t.Fatalf("event %d: schema version %d, want 1", i, e.SchemaVersion)
		}
		if e.Time.Before(before.Add(-time.Second)) || e.Time.After(after.Add(time.Second)) {
			t.Fatalf("event %d: time %s, want about now (%s .. %s)", i, e.Time, before, after)
		}
	}
	if got[0].ID == got[1].ID {
		t.Fatalf("assigned ids not unique: %s", got[0].ID)
	}
}

// recvN receives n events from sub, failing the test if the channel closes
// or waitTimeout passes first.
func recvN(t *testing.T, sub *eventstore.Subscription, n int) []eventstore.Event {
	t.Helper()
	out := make([]eventstore.Event, 0, n)
	timeout := time.NewTimer(waitTimeout)
	defer timeout.Stop()
	for len(out) < n {
		select {
		case e, ok := <-sub.C:
			if !ok {
				t.Fatalf("subscription closed after %d of %d events: %v", len(out), n, sub.Err())
			}
			out = append(out, e)
		case <-timeout.C:
			t.Fatalf("subscription delivered %d of %d events in %s", len(out), n, waitTimeout)
		}
	}
	return out
}

// expectNothing fails if sub delivers an event within d.
func expectNothing(t *testing.T, sub *eventstore.Subscription, d time.Duration) {
	t.Helper()
	select {
	case e, ok := <-sub.C:
		if ok {
			t.Fatalf("unexpected event %+v", e)
		}
		t.Fatalf("subscription closed unexpectedly: %v", sub.Err())
	case <-time.After(d):
	}
}

// waitClosed drains sub until its channel closes and returns Err.
func waitClosed(t *testing.T, sub *eventstore.Subscription) error {
	t.Helper()
	timeout := time.NewTimer(waitTimeout)
	defer timeout.Stop()
	for {
		select {
		case _, ok := <-sub.C:
			if !ok {
				return sub.Err()
			}
		case <-timeout.C:
			t.Fatalf("subscription channel not closed after %s", waitTimeout)
		}
	}
}

// sameEvents fails unless got and want are the same events in the same order.
func sameEvents(t *testing.T, how string, got, want []eventstore.Event) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d events, want %d", how, len(got), len(want))
	}
	for i := range got {
		if got[i].ID != want[i].ID || got[i].Position != want[i].Position ||
			got[i].Stream != want[i].Stream || got[i].Version != want[i].Version {
			t.Fatalf("%s: event %d is %s@%d (%s v%d), want %s@%d (%s v%d)", how, i,
				got[i].ID, got[i].Position, got[i].Stream, got[i].Version,
				want[i].ID, want[i].Position, want[i].Stream, want[i].Version)
		}
	}
}

func testConcurrent(t *testing.T, s eventstore.Store) {
	const (
		writers   = 16
		perWriter = 50
		shared    = 4
		total     = writers * perWriter
	)
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()

	early := s.Subscribe(ctx, 0, eventstore.ReadOptions{})

	// Subscribers started midway, once half the events are in: one from 0
	// (catches up while appends go on) and one from the head at that moment.
	var (
		appended  atomic.Int64
		midway    = make(chan struct{})
		midOnce   sync.Once
		lateFrom0 *eventstore.Subscription
		lateHead  *eventstore.Subscription
		headAtMid int64
		midErr    error
	)
	startMidway := func() {
		midOnce.Do(func() {
			lateFrom0 = s.Subscribe(ctx, 0, eventstore.ReadOptions{Limit: 50})
			headAtMid, midErr = s.Head(ctx)
			lateHead = s.Subscribe(ctx, headAtMid, eventstore.ReadOptions{})
			close(midway)
		})
	}

	// Each writer alternates between its private stream (exact versions) and
	// one of the shared streams (exact versions, retried on conflict).
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	appendedIDs := make([][]uuid.UUID, writers)
	for w := range writers {
		wg.Go(func() {
			private := fmt.Sprintf("private-%d", w)
			var privVersion int64
			known := make(map[string]int64)
			for i := range perWriter {
				e := ev("concurrent", w*perWriter+i)
				if i%2 == 0 {
					if _, err := s.Append(ctx, private, eventstore.Exact(privVersion), e); err != nil {
						errs <- fmt.Errorf("writer %d: %s: %w", w, private, err)
						return
					}
					privVersion++
				} else {
					stream := fmt.Sprintf("shared-%d", (w+i)%shared)
					for {
						res, err := s.Append(ctx, stream, eventstore.Exact(known[stream]), e)
						if err == nil {
							known[stream] = res.Version
							break
						}
						var c *eventstore.ConflictError
						if !errors.As(err, &c) {
							errs <- fmt.Errorf("writer %d: %s: %w", w, stream, err)
							return
						}
						if c.Actual <= known[stream] {
							errs <- fmt.Errorf("writer %d: %s: conflict with actual %d not above known %d", w, stream, c.Actual, known[stream])
							return
						}
						known[stream] = c.Actual
					}
				}
				appendedIDs[w] = append(appendedIDs[w], e.ID)
				if appended.Add(1) == total/2 {
					startMidway()
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	<-midway
	if midErr != nil {
		t.Fatalf("Head midway: %v", midErr)
	}

	// Everything is stored exactly once.
	all := readEverything(t, s, eventstore.ReadOptions{Limit: 97})
	if len(all) != total {
		t.Fatalf("ReadAll: %d events, want %d", len(all), total)
	}
	want := make(map[uuid.UUID]bool, total)
	for _, l := range appendedIDs {
		for _, id := range l {
			want[id] = true
		}
	}
	seen := make(map[uuid.UUID]bool, total)
	for i, e := range all {
		if i > 0 && e.Position <= all[i-1].Position {
			t.Fatalf("ReadAll positions not strictly increasing at %d: %d after %d", i, e.Position, all[i-1].Position)
		}
		if seen[e.ID] {
			t.Fatalf("id %s stored twice", e.ID)
		}
		seen[e.ID] = true
		if !want[e.ID] {
			t.Fatalf("id %s stored but never appended", e.ID)
		}
	}
	if h := mustHead(t, s); h != all[len(all)-1].Position {
		t.Fatalf("Head = %d, want last position %d", h, all[len(all)-1].Position)
	}

	// Every stream has contiguous versions 1..n, in position order.
	count := 0
	for _, stream := range streamNames(writers, shared) {
		got := mustReadStream(t, s, stream, 0)
		for i, e := range got {
			if e.Version != int64(i+1) || e.Stream != stream {
				t.Fatalf("stream %s event %d: version %d stream %q, want version %d", stream, i, e.Version, e.Stream, i+1)
			}
			if i > 0 && e.Position <= got[i-1].Position {
				t.Fatalf("stream %s: positions not increasing at version %d", stream, e.Version)
			}
		}
		count += len(got)
	}
	if count != total {
		t.Fatalf("streams hold %d events, want %d", count, total)
	}
	for w := range writers {
		if n := len(mustReadStream(t, s, fmt.Sprintf("private-%d", w), 0)); n != perWriter/2 {
			t.Fatalf("private-%d: %d events, want %d", w, n, perWriter/2)
		}
	}

	// Subscribers saw exactly what ReadAll sees, in the same order.
	sameEvents(t, "subscriber from 0 started first", recvN(t, early, total), all)
	sameEvents(t, "subscriber from 0 started midway", recvN(t, lateFrom0, total), all)
	var tail []eventstore.Event
	for _, e := range all {
		if e.Position > headAtMid {
			tail = append(tail, e)
		}
	}
	if len(tail) == 0 || len(tail) == total {
		t.Fatalf("midway head %d is not midway (%d of %d events after it)", headAtMid, len(tail), total)
	}
	sameEvents(t, "subscriber from the midway head", recvN(t, lateHead, len(tail)), tail)
	for _, sub := range []*eventstore.Subscription{early, lateFrom0, lateHead} {
		expectNothing(t, sub, 50*time.Millisecond)
	}
}

func streamNames(writers, shared int) []string {
	var out []string
	for w := range writers {
		out = append(out, fmt.Sprintf("private-%d", w))
	}
	for i := range shared {
		out = append(out, fmt.Sprintf("shared-%d", i))
	}
	return out
}

func testSubscribeCatchUpThenLive(t *testing.T, s eventstore.Store) {
	stored := evs("stored", 5)
	mustAppend(t, s, "live", eventstore.NoStream, stored...)
	storedAll := mustReadAll(t, s, 0, eventstore.ReadOptions{})

	ctx := ctxT(t)
	sub := s.Subscribe(ctx, 0, eventstore.ReadOptions{Limit: 2}) // catch up in pages of 2
	if err := sub.Err(); err != nil {
		t.Fatalf("Err of a running subscription = %v, want nil", err)
	}
	sameEvents(t, "catch-up", recvN(t, sub, 5), storedAll)
	expectNothing(t, sub, 50*time.Millisecond)

	// Live: one event at a time, then a batch.
	live1 := ev("live", 6)
	mustAppend(t, s, "live", eventstore.Exact(5), live1)
	got := recvN(t, sub, 1)
	if got[0].ID != live1.ID || got[0].Version != 6 {
		t.Fatalf("live event = %s v%d, want %s v6", got[0].ID, got[0].Version, live1.ID)
	}
	batch := evs("live", 3)
	mustAppend(t, s, "other", eventstore.NoStream, batch...)
	got = recvN(t, sub, 3)
	for i := range batch {
		if got[i].ID != batch[i].ID {
			t.Fatalf("live batch event %d = %s, want %s", i, got[i].ID, batch[i].ID)
		}
	}
	if err := sub.Err(); err != nil {
		t.Fatalf("Err of a running subscription = %v, want nil", err)
	}

	// A subscription from a position gets only what follows it.
	from := s.Subscribe(ctx, storedAll[2].Position, eventstore.ReadOptions{})
	got = recvN(t, from, 6)
	if got[0].ID != stored[3].ID || got[5].ID != batch[2].ID {
		t.Fatalf("subscription after position %d starts with %s and ends with %s, want %s .. %s",
			storedAll[2].Position, got[0].ID, got[5].ID, stored[3].ID, batch[2].ID)
	}
	expectNothing(t, from, 50*time.Millisecond)
}

func testSubscribeTenant(t *testing.T, s eventstore.Store) {
	all := appendTenants(t, s, 6) // a, b, a, b, a, b
	sub := s.Subscribe(ctxT(t), 0, eventstore.ReadOptions{Tenant: "a"})
	got := recvN(t, sub, 3)
	for i, e := range got {
		if e.Tenant != "a" || e.ID != all[2*i].ID {
			t.Fatalf("catch-up event %d: tenant %q id %s, want tenant a id %s", i, e.Tenant, e.ID, all[2*i].ID)
		}
	}
	// Live: b's event comes first; if the filter let it through, it would be
	// the next one delivered.
	b := ev("t", 100)
	b.Tenant = "b"
	a := ev("t", 101)
	a.Tenant = "a"
	mustAppend(t, s, "s-b", eventstore.Any, b)
	mustAppend(t, s, "s-a", eventstore.Any, a)
	if got := recvN(t, sub, 1)[0]; got.ID != a.ID || got.Tenant != "a" {
		t.Fatalf("live event: %s tenant %q, want %s tenant a", got.ID, got.Tenant, a.ID)
	}
	expectNothing(t, sub, 50*time.Millisecond)
}

func testSlowSubscriber(t *testing.T, s eventstore.Store) {
	const n = 200
	// Subscribed, but nobody reads: appends must not wait for it.
	sub := s.Subscribe(ctxT(t), 0, eventstore.ReadOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	for i := range n {
		if _, err := s.Append(ctx, "slow", eventstore.Exact(int64(i)), ev("e", i)); err != nil {
			t.Fatalf("append %d with a stalled subscriber: %v", i, err)
		}
	}
	got := recvN(t, sub, n)
	for i, e := range got {
		if e.Version != int64(i+1) {
			t.Fatalf("event %d: version %d, want %d", i, e.Version, i+1)
		}
	}
}

func testSubscribeCancel(t *testing.T, s eventstore.Store) {
	mustAppend(t, s, "x", eventstore.NoStream, evs("e", 3)...)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sub := s.Subscribe(ctx, 0, eventstore.ReadOptions{})
	recvN(t, sub, 1) // running, and blocked on delivery of the rest
	cancel()
	if err := waitClosed(t, sub); !errors.Is(err, context.Canceled) {
		t.Fatalf("Err after cancel = %v, want context.Canceled", err)
	}

	// A subscription that is idle (caught up) ends too.
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	idle := s.Subscribe(ctx2, 0, eventstore.ReadOptions{})
	recvN(t, idle, 3)
	cancel2()
	if err := waitClosed(t, idle); !errors.Is(err, context.Canceled) {
		t.Fatalf("Err after cancel of an idle subscription = %v, want context.Canceled", err)
	}
	// The store still works.
	mustAppend(t, s, "x", eventstore.Exact(3), ev("e", 4))
}

func testClose(t *testing.T, s eventstore.Store) {
	mustAppend(t, s, "x", eventstore.NoStream, evs("e", 3)...)
	ctx := ctxT(t)
	idle := s.Subscribe(ctx, 0, eventstore.ReadOptions{})
	recvN(t, idle, 3)
	stalled := s.Subscribe(ctx, 0, eventstore.ReadOptions{}) // never read before Close

	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := waitClosed(t, idle); !errors.Is(err, eventstore.ErrClosed) {
		t.Fatalf("idle subscription Err after Close = %v, want ErrClosed", err)
	}
	if err := waitClosed(t, stalled); !errors.Is(err, eventstore.ErrClosed) {
		t.Fatalf("stalled subscription Err after Close = %v, want ErrClosed", err)
	}

	if _, err := s.Append(ctx, "x", eventstore.Any, ev("e", 4)); !errors.Is(err, eventstore.ErrClosed) {
		t.Fatalf("Append after Close = %v, want ErrClosed", err)
	}
	if _, err := s.ReadStream(ctx, "x", 0); !errors.Is(err, eventstore.ErrClosed) {
		t.Fatalf("ReadStream after Close = %v, want ErrClosed", err)
	}
	if _, err := s.ReadAll(ctx, 0, eventstore.ReadOptions{}); !errors.Is(err, eventstore.ErrClosed) {
		t.Fatalf("ReadAll after Close = %v, want ErrClosed", err)
	}
	if _, err := s.Head(ctx); !errors.Is(err, eventstore.ErrClosed) {
		t.Fatalf("Head after Close = %v, want ErrClosed", err)
	}
	if err := waitClosed(t, s.Subscribe(ctx, 0, eventstore.ReadOptions{})); !errors.Is(err, eventstore.ErrClosed) {
		t.Fatalf("Subscribe after Close: Err = %v, want ErrClosed", err)
	}
	if err := s.Close(); !errors.Is(err, eventstore.ErrClosed) {
		t.Fatalf("second Close = %v, want ErrClosed", err)
	}
}
