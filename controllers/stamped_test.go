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

// A Cell's stamp covers the sequence of its status, not its content. Each
// case is a Cell whose status carries a valid stamp at the sequence the
// projection reaches, but whose content differs from the fold of what the
// stream holds: it must be compared and rewritten, never taken as already
// reflected when the store hands its id over.
func TestStampedCellIsComparedWithTheFold(t *testing.T) {
	// Cells are found by name in any namespace: each case has its own id.
	started := func(id string) []byte {
		return []byte(`{"type":"` + fold.TypeCellStarted + `","time":"2027-05-01T08:00:00Z","data":{"cellId":"` + id + `"}}`)
	}
	destroyed := func(id string) []byte {
		return []byte(`{"type":"` + fold.TypeCellDestroyed + `","time":"2027-05-01T08:01:00Z","data":{"cellId":"` + id + `","exitCode":0}}`)
	}
	for name, c := range map[string]struct {
		id string
		// written is the status the Cell holds, stamped at sequence 2.
		written func(whole *fold.Cell) *fold.Cell
		// remains is what the stream holds when the operator starts.
		remains map[uint64][]byte
	}{
		// After a purge, the fold of what remains can differ from a status
		// written from the whole stream: this one has a start time that
		// the fold of what remains no longer has.
		"the stream's first event was purged": {
			id:      "purged",
			written: func(whole *fold.Cell) *fold.Cell { return whole },
			remains: map[uint64][]byte{2: destroyed("purged")},
		},
		// A status edited by hand while the operator was down, such as a
		// state rewound, keeps its stamp.
		"the status was edited by hand": {
			id: "edited",
			written: func(whole *fold.Cell) *fold.Cell {
				edited := *whole
				edited.State, edited.DestroyedAt, edited.Outcome = cellosv1.CellRunning, nil, ""
				return &edited
			},
			remains: map[uint64][]byte{1: started("edited"), 2: destroyed("edited")},
		},
	} {
		t.Run(name, func(t *testing.T) {
			ctx, id := context.Background(), c.id
			ns := newNamespace(t)
			stream := store.Stream{Name: "CELLOS_EVENTS", Created: time.Now().Truncate(time.Second)}
			whole := fold.NewState()
			whole.Apply(1, time.Time{}, "", nil, started(id))
			whole.Apply(2, time.Time{}, "", nil, destroyed(id))
			stamp := store.Stamp(stream, store.Ref{Kind: store.CellKind, ID: id}, 2)
			cell := &cellosv1.Cell{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: id}}
			if err := controlPlane.Client.Create(ctx, cell); err != nil {
				t.Fatal(err)
			}
			cell.Status = status.CellStatus(c.written(whole.Cells[id]), stamp, cell.Generation, nil, time.Now())
			if err := controlPlane.Client.Status().Update(ctx, cell); err != nil {
				t.Fatal(err)
			}

			// The reconcilers start over it, and reconcile it once from
			// their cache's first list, before the stream has named it.
			before := cellReconciles(t)
			r := startReconcilers(t, ns)
			r.store.Reset(stream)
			eventually(t, "the Cell's first reconcile", func() error {
				if n := cellReconciles(t); n <= before {
					return fmt.Errorf("%v cell reconciles, want more than %v", n, before)
				}
				return nil
			})

			remains := fold.NewState()
			for seq := uint64(1); seq <= 2; seq++ {
				if payload, ok := c.remains[seq]; ok {
					remains.Apply(seq, time.Time{}, "", nil, payload)
					r.store.Apply(ctx, seq, time.Time{}, "", nil, payload)
				}
			}
			eventually(t, "the Cell equals the fold of what remains", func() error {
				var got cellosv1.Cell
				if err := controlPlane.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: id}, &got); err != nil {
					return err
				}
				w := remains.Cells[id]
				if got.Status.State != w.State || got.Status.Outcome != w.Outcome || (got.Status.StartedAt == nil) != (w.StartedAt == nil) || got.Status.LastAppliedSequence != 2 {
					return fmt.Errorf("state %s, outcome %q, startedAt %v at sequence %d; want %s, %q, %v at 2",
						got.Status.State, got.Status.Outcome, got.Status.StartedAt, got.Status.LastAppliedSequence, w.State, w.Outcome, w.StartedAt)
				}
				return nil
			})
		})
	}
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
