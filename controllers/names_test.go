package controllers

import (
	"context"
	"crypto/sha256"
	"fmt"
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/internal/store"
)

// collide makes ids hash alike for their object names until the test ends,
// as a collision of SHA-256 would: no test can find a real one. Call it
// before startReconcilers, so that the manager has stopped when it is undone.
func collide(t *testing.T, ids ...string) {
	t.Helper()
	sum := store.NameSum
	t.Cleanup(func() { store.NameSum = sum })
	store.NameSum = func(id string) [sha256.Size]byte {
		if slices.Contains(ids, id) {
			return sum(ids[0])
		}
		return sum(id)
	}
}

// Two cell ids that meet one object name: the first the stream names keeps
// the Cell, the other is refused with a Warning Event on it and counted, and
// the cursor moves past both instead of waiting for good.
func TestNameCollisionIsRefused(t *testing.T) {
	const winner, loser = "Collide_A", "COLLIDE/A" // both sanitized to collide-a-<hash>
	collide(t, winner, loser)
	name := store.ObjectName(winner)
	if store.ObjectName(loser) != name {
		t.Fatalf("the ids do not collide: %s and %s", name, store.ObjectName(loser))
	}
	ns := newNamespace(t)
	before := testutil.ToFloat64(nameCollisionsTotal.WithLabelValues("Cell"))
	r := startReconcilers(t, ns)
	r.apply(t, `{"type":"dev.cellos.events.cell.lifecycle.v1.started","data":{"cellId":"`+winner+`"}}`)
	r.apply(t, `{"type":"dev.cellos.events.cell.lifecycle.v1.started","data":{"cellId":"`+loser+`"}}`)
	last := r.apply(t, `{"type":"dev.cellos.events.cell.lifecycle.v1.started","data":{"cellId":"after"}}`)

	eventually(t, "the watermark passes the refused cell", func() error {
		if w := r.store.Watermark(); w < last {
			return fmt.Errorf("watermark %d, want %d", w, last)
		}
		return nil
	})
	var cell cellosv1.Cell
	if err := controlPlane.Client.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, &cell); err != nil {
		t.Fatal(err)
	}
	if cell.Status.CellID != winner {
		t.Errorf("the Cell %s holds cell %q, want %q", name, cell.Status.CellID, winner)
	}
	if got := testutil.ToFloat64(nameCollisionsTotal.WithLabelValues("Cell")) - before; got != 1 {
		t.Errorf("collisions counted: %v, want 1", got)
	}
	eventually(t, "a Warning Event NameCollision on the Cell", func() error {
		var evs eventsv1.EventList
		if err := controlPlane.Client.List(context.Background(), &evs, client.InNamespace(ns)); err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Type == corev1.EventTypeWarning && e.Reason == cellosv1.NameCollisionReason && e.Regarding.Name == name {
				return nil
			}
		}
		return fmt.Errorf("none among %d events", len(evs.Items))
	})
}

// A Cell named before the hash suffix grew keeps being found by the id in its
// status and written: no second Cell is created under the new name.
func TestCellWithLegacyNameIsKept(t *testing.T) {
	const id = "Legacy_Cell"
	old := store.LegacyObjectName(id)
	if old == store.ObjectName(id) {
		t.Fatalf("the old and new names of %q are both %s", id, old)
	}
	ns := newNamespace(t)
	ctx := context.Background()
	// As the previous version left it.
	cell := &cellosv1.Cell{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: old}}
	if err := controlPlane.Client.Create(ctx, cell); err != nil {
		t.Fatal(err)
	}
	cell.Status = cellosv1.CellStatus{CellID: id, State: cellosv1.CellPending, LastAppliedSequence: 1}
	if err := controlPlane.Client.Status().Update(ctx, cell); err != nil {
		t.Fatal(err)
	}

	r := startReconcilers(t, ns)
	seq := r.apply(t, `{"type":"dev.cellos.events.cell.lifecycle.v1.started","data":{"cellId":"`+id+`"}}`)
	eventually(t, "the old Cell is written and the watermark passes it", func() error {
		if err := controlPlane.Client.Get(ctx, client.ObjectKeyFromObject(cell), cell); err != nil {
			return err
		}
		if cell.Status.State != cellosv1.CellRunning {
			return fmt.Errorf("state %s", cell.Status.State)
		}
		if w := r.store.Watermark(); w < seq {
			return fmt.Errorf("watermark %d, want %d", w, seq)
		}
		return nil
	})
	var cells cellosv1.CellList
	if err := controlPlane.Client.List(ctx, &cells, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	if len(cells.Items) != 1 {
		t.Errorf("%d Cells, want only %s", len(cells.Items), old)
	}
}
