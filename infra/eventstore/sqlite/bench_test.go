package sqlite

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/zipship/zipship/infra/eventstore"
)

// benchData is a typical event payload (about 200 bytes of JSON).
var benchData = json.RawMessage(`{"buildId":"0194f3a2-7c1e-7b3d-9a55-3f0c2d1e4b6a","tenantId":"acme","version":"v1738000000000","framework":"next","buildCommand":"npm run build","outputDir":"out","nodeVersion":18}`)

func benchEvent(i int) eventstore.Event {
	return eventstore.Event{
		Type:          "build.step.completed",
		Tenant:        fmt.Sprintf("tenant-%d", i%10),
		CorrelationID: "corr",
		Data:          benchData,
	}
}

// reportEventsPerSec reports events/s over the benchmark's elapsed time.
func reportEventsPerSec(b *testing.B, events int) {
	if s := b.Elapsed().Seconds(); s > 0 {
		b.ReportMetric(float64(events)/s, "events/s")
	}
}

// BenchmarkAppendSingle appends one event per Append (one transaction each),
// round-robin over 100 streams with an exact expected version.
func BenchmarkAppendSingle(b *testing.B) {
	s := openT(b, filepath.Join(b.TempDir(), "events.db"))
	ctx := context.Background()
	versions := make([]int64, 100)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		k := i % len(versions)
		res, err := s.Append(ctx, fmt.Sprintf("build-%d", k), eventstore.Exact(versions[k]), benchEvent(i))
		if err != nil {
			b.Fatal(err)
		}
		versions[k] = res.Version
	}
	b.StopTimer()
	reportEventsPerSec(b, b.N)
}

// BenchmarkAppendBatch appends 100 events per Append.
func BenchmarkAppendBatch(b *testing.B) {
	const batch = 100
	s := openT(b, filepath.Join(b.TempDir(), "events.db"))
	ctx := context.Background()
	evs := make([]eventstore.Event, batch)
	for i := range evs {
		evs[i] = benchEvent(i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if _, err := s.Append(ctx, fmt.Sprintf("build-%d", i), eventstore.NoStream, evs...); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	reportEventsPerSec(b, b.N*batch)
}

// BenchmarkReplay reads a store of 10,000 events from position 0 with
// ReadAll in pages of 1000, as a projector rebuilding from zero does. One
// iteration is one full replay.
func BenchmarkReplay(b *testing.B) {
	const total, page = 10000, 1000
	s := openT(b, filepath.Join(b.TempDir(), "events.db"))
	ctx := context.Background()
	evs := make([]eventstore.Event, 100)
	for i := 0; i < total/len(evs); i++ {
		for j := range evs {
			evs[j] = benchEvent(i*len(evs) + j)
		}
		if _, err := s.Append(ctx, fmt.Sprintf("build-%d", i), eventstore.NoStream, evs...); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		n := 0
		var after int64
		for {
			got, err := s.ReadAll(ctx, after, eventstore.ReadOptions{Limit: page})
			if err != nil {
				b.Fatal(err)
			}
			if len(got) == 0 {
				break
			}
			n += len(got)
			after = got[len(got)-1].Position
		}
		if n != total {
			b.Fatalf("replayed %d events, want %d", n, total)
		}
	}
	b.StopTimer()
	reportEventsPerSec(b, b.N*total)
}
