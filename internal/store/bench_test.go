package store_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"cellos.dev/cellos-operator/internal/fold"
	"cellos.dev/cellos-operator/internal/store"
	"cellos.dev/cellos-operator/test/harness"
)

// BenchmarkLiveObjectBytes reports the live heap the store, with its fold,
// holds per live object once every status is written: 4,000 formations of
// 5 cells, each cell started and destroyed. With the cache's share
// (BenchmarkCachedCellBytes in cmd/manager) it is what the operator's heap
// grows by per live object.
func BenchmarkLiveObjectBytes(b *testing.B) {
	const formations, cellsEach = 4000, 5
	ctx := context.Background()
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	for range b.N {
		before := harness.LiveHeap()
		s := store.New(0, "", 0, fold.TTLs{})
		var refs []store.Ref
		var seq uint64
		apply := func(payload []byte) {
			seq++
			s.Apply(ctx, seq, at, "", nil, payload)
		}
		for f := range formations {
			formationID := fmt.Sprintf("f0e1d2c3-0000-4000-8000-%012d", f)
			refs = append(refs, store.Ref{Kind: store.FormationKind, ID: formationID})
			apply(fmt.Appendf(nil, `{"type":"dev.cellos.events.cell.formation.v1.created","time":"2026-12-01T10:00:00Z","data":{"formationId":%q}}`, formationID))
			for c := range cellsEach {
				cellID := fmt.Sprintf("c0e1d2c3-0000-4000-8000-%012d", f*cellsEach+c)
				refs = append(refs, store.Ref{Kind: store.CellKind, ID: cellID})
				apply(fmt.Appendf(nil, `{"type":"dev.cellos.events.cell.lifecycle.v1.started","time":"2026-12-01T10:00:00Z","data":{"cellId":%q,"formationId":%q}}`, cellID, formationID))
				apply(fmt.Appendf(nil, `{"type":"dev.cellos.events.cell.lifecycle.v1.destroyed","time":"2026-12-01T10:01:00Z","data":{"cellId":%q,"specId":"spec-1","runId":"run-1","outcome":"succeeded"}}`, cellID))
			}
		}
		stream := s.Stream()
		for _, ref := range refs {
			s.Flushed(stream, ref, seq)
		}
		if n := s.Unflushed(); n != 0 {
			b.Fatalf("%d objects still await their status write", n)
		}
		refs = nil
		after := harness.LiveHeap()
		b.ReportMetric(float64(after-before)/(formations*(1+cellsEach)), "bytes/object")
		runtime.KeepAlive(s)
	}
}
