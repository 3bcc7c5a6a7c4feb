package controllers

import (
	"context"
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/internal/fold"
	"cellos.dev/cellos-operator/internal/status"
	"cellos.dev/cellos-operator/internal/store"
)

// After a purge, the fold of what remains of the stream can differ from a
// status stamped at the same sequence: a Cell whose started event is gone
// has no start time in the fold, while its status, written from the whole
// stream, has one. Such a Cell is compared and rewritten, never taken as
// already reflected.
func TestCellOfAPurgedStreamIsCompared(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	const id = "purged-start"
	started := []byte(`{"type":"` + fold.TypeCellStarted + `","time":"2027-05-01T08:00:00Z","data":{"cellId":"` + id + `"}}`)
	destroyed := []byte(`{"type":"` + fold.TypeCellDestroyed + `","time":"2027-05-01T08:01:00Z","data":{"cellId":"` + id + `","exitCode":0}}`)

	// The Cell as the fold of the whole stream, sequences 1 and 2, wrote it.
	stream := store.Stream{Name: "CELLOS_EVENTS", Created: time.Now().Truncate(time.Second)}
	whole := fold.NewState()
	whole.Apply(1, "", nil, started)
	whole.Apply(2, "", nil, destroyed)
	cell := &cellosv1.Cell{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: id}}
	if err := controlPlane.Client.Create(ctx, cell); err != nil {
		t.Fatal(err)
	}
	cell.Status = status.CellStatus(whole.Cells[id], store.Stamp(stream, store.Ref{Kind: store.CellKind, ID: id}, 2), cell.Generation, nil, time.Now())
	if cell.Status.StartedAt == nil {
		t.Fatal("the whole stream's fold has no start time")
	}
	if err := controlPlane.Client.Status().Update(ctx, cell); err != nil {
		t.Fatal(err)
	}

	// The reconcilers start over it, and reconcile it once from their
	// cache's first list, before the stream has named it.
	before := cellReconciles(t)
	r := startReconcilers(t, ns)
	r.store.Reset(stream)
	eventually(t, "the Cell's first reconcile", func() error {
		if n := cellReconciles(t); n <= before {
			return fmt.Errorf("%v cell reconciles, want more than %v", n, before)
		}
		return nil
	})

	// The stream now begins at sequence 2: the started event was purged.
	r.store.Apply(ctx, 2, "", nil, destroyed)
	eventually(t, "the Cell equals the fold of what remains", func() error {
		var got cellosv1.Cell
		if err := controlPlane.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: id}, &got); err != nil {
			return err
		}
		if got.Status.StartedAt != nil || got.Status.LastAppliedSequence != 2 {
			return fmt.Errorf("startedAt %v at sequence %d, want none at 2", got.Status.StartedAt, got.Status.LastAppliedSequence)
		}
		return nil
	})
}

// cellReconciles is how many reconciles of Cells ended well, across the
// managers of this test binary.
func cellReconciles(t *testing.T) float64 {
	t.Helper()
	families, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n float64
	for _, f := range families {
		if f.GetName() != "controller_runtime_reconcile_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["controller"] == "cell" && labels["result"] == "success" {
				n += m.GetCounter().GetValue()
			}
		}
	}
	return n
}
