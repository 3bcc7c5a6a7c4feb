package controllers

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/internal/fold"
	"cellos.dev/cellos-operator/internal/store"
)

// A destroyed Cell is deleted its TTL after status.finishedAt, and a final
// observed Formation its own TTL after, with its counts kept until then; an
// expired object is not created again while the fold still holds it, and a
// later event of its id starts it afresh.
func TestExpiredObjectsAreDeleted(t *testing.T) {
	const fid = "7c1d5e2a-3b4f-4a6c-8d9e-0f1a2b3c4d5e"
	ctx, ns := context.Background(), newNamespace(t)
	ttls := fold.TTLs{Cell: 3 * time.Second, Formation: 4 * time.Second}
	r := startReconcilers(t, ns, func(c *Config) { c.TTLs = ttls })
	expiredBefore := testutil.ToFloat64(expiredTotal.WithLabelValues(string(store.CellKind)))
	formation := func(phase string) string {
		return `{"type":"` + fold.FormationTypePrefix + phase + `","data":{"formationId":"` + fid + `","formationName":"expiring"}}`
	}
	cell := func(typ, id string) string {
		return `{"type":"` + typ + `","data":{"cellId":"` + id + `","formationId":"` + fid + `"}}`
	}
	formationKey := types.NamespacedName{Namespace: ns, Name: store.ObjectName(fid)}
	cellKey := types.NamespacedName{Namespace: ns, Name: store.ObjectName("expiring-cell")}

	r.apply(t, formation("created"))
	r.apply(t, cell(fold.TypeCellStarted, "expiring-cell"))
	r.apply(t, cell(fold.TypeCellDestroyed, "expiring-cell"))
	eventually(t, "the destroyed Cell has a finish time", func() error {
		var c cellosv1.Cell
		if err := controlPlane.Client.Get(ctx, cellKey, &c); err != nil {
			return err
		}
		if c.Status.FinishedAt == nil {
			return errors.New("no status.finishedAt")
		}
		return nil
	})
	eventually(t, "the Cell is deleted after its TTL", func() error { return absent(ctx, cellKey, &cellosv1.Cell{}) })
	if got := testutil.ToFloat64(expiredTotal.WithLabelValues(string(store.CellKind))) - expiredBefore; got != 1 {
		t.Errorf("counted %v expired Cells, want 1", got)
	}
	// The fold still holds the cell, as no event has moved the stream's
	// clock past its expiry: the delete itself wakes the Cell reconciler,
	// which must not create it again.
	if _, _, held := r.store.Cell("expiring-cell"); !held {
		t.Fatal("the fold released the cell before the stream's clock reached its expiry")
	}
	consistently(t, 2*time.Second, "the expired Cell stays deleted", func() error { return absent(ctx, cellKey, &cellosv1.Cell{}) })
	eventually(t, "the Formation counts the expired Cell", func() error {
		var f cellosv1.Formation
		if err := controlPlane.Client.Get(ctx, formationKey, &f); err != nil {
			return err
		}
		if want := (cellosv1.CellCounts{Total: 1, Destroyed: 1}); f.Status.CellCounts != want {
			return fmt.Errorf("counts %+v, want %+v", f.Status.CellCounts, want)
		}
		return nil
	})

	// An event after the expiry releases the cell from the fold; one more
	// of its id starts it afresh.
	r.apply(t, formation("completed"))
	if _, _, held := r.store.Cell("expiring-cell"); held {
		t.Fatal("the fold still holds a cell the stream's clock has expired")
	}
	r.apply(t, cell(fold.TypeCellStarted, "expiring-cell"))
	eventually(t, "the cell's later event creates it afresh", func() error {
		var c cellosv1.Cell
		if err := controlPlane.Client.Get(ctx, cellKey, &c); err != nil {
			return err
		}
		if c.Status.State != cellosv1.CellRunning || c.Status.FinishedAt != nil {
			return fmt.Errorf("state %s, finished at %v; want a running cell", c.Status.State, c.Status.FinishedAt)
		}
		return nil
	})

	// The formation completed: it goes its TTL later, with the cell of it
	// that remains.
	eventually(t, "the final Formation is deleted after its TTL, with its Cells", func() error {
		if err := absent(ctx, formationKey, &cellosv1.Formation{}); err != nil {
			return err
		}
		return absent(ctx, cellKey, &cellosv1.Cell{})
	})
	consistently(t, 2*time.Second, "the expired Formation stays deleted", func() error { return absent(ctx, formationKey, &cellosv1.Formation{}) })
}

// A delete names the uid and resourceVersion the decision was made on: an
// object written or recreated since is left alone.
func TestDeleterRemovesOnlyTheObjectItRead(t *testing.T) {
	ctx, ns := context.Background(), newNamespace(t)
	d := deleter{controlPlane.Client}
	c := &cellosv1.Cell{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "precondition"}}
	if err := controlPlane.Client.Create(ctx, c); err != nil {
		t.Fatal(err)
	}
	read := c.DeepCopy()
	c.Labels = map[string]string{"written": "since"}
	if err := controlPlane.Client.Update(ctx, c); err != nil {
		t.Fatal(err)
	}
	if deleted, err := d.remove(ctx, read, store.CellKind); deleted || err != nil {
		t.Fatalf("a Cell written since it was read: deleted %v, %v; want left alone", deleted, err)
	}
	if err := controlPlane.Client.Get(ctx, client.ObjectKeyFromObject(c), &cellosv1.Cell{}); err != nil {
		t.Fatalf("the Cell written since it was read is gone: %v", err)
	}
	if deleted, err := d.remove(ctx, c, store.CellKind); !deleted || err != nil {
		t.Fatalf("the Cell as last read: deleted %v, %v", deleted, err)
	}
	if deleted, err := d.remove(ctx, c, store.CellKind); deleted || err != nil {
		t.Fatalf("a Cell already deleted: deleted %v, %v; want no error", deleted, err)
	}
}

// absent is nil when the object under key is not found.
func absent(ctx context.Context, key types.NamespacedName, obj client.Object) error {
	err := controlPlane.Client.Get(ctx, key, obj)
	switch {
	case apierrors.IsNotFound(err):
		return nil
	case err != nil:
		return err
	}
	return fmt.Errorf("%s is still there (finished at %v)", key, finishedAt(obj))
}

func finishedAt(obj client.Object) *metav1.Time {
	switch o := obj.(type) {
	case *cellosv1.Cell:
		return o.Status.FinishedAt
	case *cellosv1.Formation:
		return o.Status.FinishedAt
	}
	return nil
}

// consistently checks that cond holds throughout d.
func consistently(t *testing.T, d time.Duration, what string, cond func() error) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if err := cond(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
}
