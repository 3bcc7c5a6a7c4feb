package controllers

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/internal/fold"
	"cellos.dev/cellos-operator/internal/store"
)

// A Cell names formation X before any event of X, then a user declares a
// Formation labelled X. The Formation holds no projection yet and must wait
// for the stream, not fail (this once dereferenced a missing projection);
// once X's events come, it mirrors them, and no observed Formation appears.
func TestDeclaredFormationOfACellSeenFirst(t *testing.T) {
	ns, teamNS := newNamespace(t), newNamespace(t)
	r := startReconcilers(t, ns)
	const id = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
	ctx := context.Background()
	c := controlPlane.Client

	r.apply(t, `{"type":"dev.cellos.events.cell.lifecycle.v1.started","data":{"cellId":"early","formationId":"`+id+`"}}`)
	eventually(t, "the Cell is created in the default namespace", func() error {
		return c.Get(ctx, types.NamespacedName{Namespace: ns, Name: "early"}, &cellosv1.Cell{})
	})

	declared := &cellosv1.Formation{
		ObjectMeta: metav1.ObjectMeta{Namespace: teamNS, Name: "research", Labels: map[string]string{cellosv1.FormationIDLabel: id}},
		Spec:       &cellosv1.FormationSpec{Coordinator: "lead", Members: []cellosv1.FormationMember{{Name: "lead"}}},
	}
	if err := c.Create(ctx, declared); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(declared)
	eventually(t, "the declared Formation awaits the stream", func() error {
		var f cellosv1.Formation
		if err := c.Get(ctx, key, &f); err != nil {
			return err
		}
		cond := meta.FindStatusCondition(f.Status.Conditions, cellosv1.ReconcilingCondition)
		if cond == nil || cond.Reason != cellosv1.AwaitingStreamReason {
			return fmt.Errorf("status %+v", f.Status)
		}
		return nil
	})

	// The operator's own created event, as another cluster's operator sharing
	// the stream would publish it, names the declaring namespace.
	r.applyOn(t, fold.OperatorSubject(fold.DefaultOperatorPrefix, id),
		`{"type":"dev.cellos.events.cell.formation.v1.created","source":"cellos-operator","data":{"formationId":"`+id+`","namespace":"`+teamNS+`"}}`)
	seq := r.apply(t, `{"type":"dev.cellos.events.cell.formation.v1.running","data":{"formationId":"`+id+`"}}`)
	eventually(t, "the declared Formation mirrors the stream", func() error {
		var f cellosv1.Formation
		if err := c.Get(ctx, key, &f); err != nil {
			return err
		}
		if f.Status.Phase != cellosv1.FormationRunning || f.Status.LastAppliedSequence != int64(seq) || f.Status.Cells != "1/1" {
			return fmt.Errorf("phase %q at %d, cells %q", f.Status.Phase, f.Status.LastAppliedSequence, f.Status.Cells)
		}
		return nil
	})
	var observed cellosv1.FormationList
	if err := c.List(ctx, &observed, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	if len(observed.Items) != 0 {
		t.Errorf("an observed Formation %s appeared beside the declared one", observed.Items[0].Name)
	}

	// A Cell never moves: the cells of X placed before X moved to the
	// declaring namespace stay where they are, the labelled one and one
	// written before the stream named its formation, and the latter gets
	// the label. Placement finds each in another namespace than X's.
	unlabelledKey := types.NamespacedName{Namespace: ns, Name: "unlabelled"}
	r.apply(t, `{"type":"dev.cellos.events.cell.lifecycle.v1.started","data":{"cellId":"unlabelled"}}`)
	eventually(t, "the Cell of a cell without a formation is created in the default namespace", func() error {
		return c.Get(ctx, unlabelledKey, &cellosv1.Cell{})
	})
	for _, cellID := range []string{"early", "unlabelled", "early", "unlabelled"} {
		seq := r.apply(t, `{"type":"dev.cellos.events.cell.command.v1.completed","data":{"cellId":"`+cellID+`","formationId":"`+id+`","exitCode":0}}`)
		eventually(t, "the Cell "+cellID+" reflects its event where it was created", func() error {
			var cell cellosv1.Cell
			if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: cellID}, &cell); err != nil {
				return err
			}
			if cell.Status.LastAppliedSequence != int64(seq) || cell.Labels[cellosv1.FormationIDLabel] != id {
				return fmt.Errorf("at %d, labels %v", cell.Status.LastAppliedSequence, cell.Labels)
			}
			return nil
		})
		if err := absent(ctx, types.NamespacedName{Namespace: teamNS, Name: cellID}, &cellosv1.Cell{}); err != nil {
			t.Errorf("the Cell %s moved: %v", cellID, err)
		}
	}
}

// A Formation that follows formation X is relabelled while X's event waits
// out the flush window, queued for that Formation. The reconcile then finds
// the Formation following another id, and X, which now lives nowhere (it
// was declared in that namespace, and no Formation there carries its label
// any more), had no one to settle it: the watermark stayed below X's event
// for good, and the cursor with it. The Formation's old label must be placed
// again when it changes.
func TestRelabelledFormationDoesNotPinTheWatermark(t *testing.T) {
	const id = "5b1d2c3e-4f5a-4b6c-9d7e-8f9a0b1c2d3e"
	for name, label := range map[string]string{
		"another formation": "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
		"not canonical":     strings.ReplaceAll(id, "-", ""),
	} {
		t.Run(name, func(t *testing.T) {
			ns, teamNS := newNamespace(t), newNamespace(t)
			// A window long enough for the relabel to land inside it.
			r := startReconcilers(t, ns, func(c *Config) { c.FlushWindow = 3 * time.Second })
			ctx := context.Background()
			c := controlPlane.Client

			f := &cellosv1.Formation{
				ObjectMeta: metav1.ObjectMeta{Namespace: teamNS, Name: "follower", Labels: map[string]string{cellosv1.FormationIDLabel: id}},
				Spec:       &cellosv1.FormationSpec{Coordinator: "lead", Members: []cellosv1.FormationMember{{Name: "lead"}}},
			}
			if err := c.Create(ctx, f); err != nil {
				t.Fatal(err)
			}
			// Once it awaits the stream, the cache holds it: X's event is
			// placed on it.
			eventually(t, "the Formation awaits the stream", func() error {
				if err := c.Get(ctx, client.ObjectKeyFromObject(f), f); err != nil {
					return err
				}
				if cond := meta.FindStatusCondition(f.Status.Conditions, cellosv1.ReconcilingCondition); cond == nil || cond.Reason != cellosv1.AwaitingStreamReason {
					return fmt.Errorf("status %+v", f.Status)
				}
				return nil
			})
			seq := r.applyOn(t, fold.OperatorSubject(fold.DefaultOperatorPrefix, id),
				`{"type":"dev.cellos.events.cell.formation.v1.created","source":"cellos-operator","data":{"formationId":"`+id+`","namespace":"`+teamNS+`"}}`)
			before := f.DeepCopy()
			f.Labels[cellosv1.FormationIDLabel] = label
			if err := c.Patch(ctx, f, client.MergeFrom(before)); err != nil {
				t.Fatal(err)
			}
			eventually(t, "the watermark passes the event of the formation that lives nowhere", func() error {
				if w := r.store.Watermark(); w < seq {
					return fmt.Errorf("watermark %d, want %d", w, seq)
				}
				return nil
			})
		})
	}
}

// A Formation of formation Y named with formation X's id stands where X's
// observed Formation belongs (a formation id is its own object name), so
// X's events wait. Once that Formation is deleted, X gets its Formation and
// the watermark passes X's event, without another event of X.
func TestFormationNamedWithAnotherIDFreesItsPlace(t *testing.T) {
	const x, y = "1b4e28ba-2fa1-41d2-883f-0016d3cca427", "6fa459ea-ee8a-4ca4-894e-db77e160355e"
	ns := newNamespace(t)
	r := startReconcilers(t, ns)
	ctx := context.Background()
	c := controlPlane.Client

	squatter := &cellosv1.Formation{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: x, Labels: map[string]string{cellosv1.FormationIDLabel: y}}}
	if err := c.Create(ctx, squatter); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the Formation awaits the stream", func() error {
		var f cellosv1.Formation
		if err := c.Get(ctx, client.ObjectKeyFromObject(squatter), &f); err != nil {
			return err
		}
		if cond := meta.FindStatusCondition(f.Status.Conditions, cellosv1.ReconcilingCondition); cond == nil || cond.Reason != cellosv1.AwaitingStreamReason {
			return fmt.Errorf("status %+v", f.Status)
		}
		return nil
	})
	seq := r.apply(t, `{"type":"dev.cellos.events.cell.formation.v1.created","data":{"formationId":"`+x+`"}}`)
	// X's event is handed over and reconciled while the Formation of Y
	// stands in its place.
	time.Sleep(time.Second)
	if err := c.Delete(ctx, squatter); err != nil {
		t.Fatal(err)
	}
	eventually(t, "X's Formation mirrors its event and the watermark passes it", func() error {
		var f cellosv1.Formation
		if err := c.Get(ctx, client.ObjectKeyFromObject(squatter), &f); err != nil {
			return err
		}
		if f.Labels[cellosv1.FormationIDLabel] != x || f.Status.LastAppliedSequence != int64(seq) {
			return fmt.Errorf("label %q, at %d", f.Labels[cellosv1.FormationIDLabel], f.Status.LastAppliedSequence)
		}
		if w := r.store.Watermark(); w < seq {
			return fmt.Errorf("watermark %d, want %d", w, seq)
		}
		return nil
	})
}

// Placement reads the cached Cells only once the cache has listed them, as a
// read from the cache does: a cell whose Cell the cache had not listed yet
// would be placed anew, beside its formation, in a second Cell.
func TestPlacementWaitsForTheCache(t *testing.T) {
	ns := newNamespace(t)
	writeCell(t, ns, "listed-late", "formation-late")
	p, start := unstartedPlacer(t, ns)

	early, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if found, err := p.cellsOfID(early, "listed-late", "formation-late"); err == nil {
		t.Fatalf("read %d Cells, and no error, from a cache that had not synced", len(found))
	}
	start()
	found, err := p.cellsOfID(context.Background(), "listed-late", "formation-late")
	if err != nil || len(found) != 1 || found[0].Name != "listed-late" {
		t.Fatalf("found %d Cells (%v), want the Cell listed-late", len(found), err)
	}
}

// With --watch-namespaces the cache keeps an informer for each namespace:
// placement finds a cell's Cell in any of them.
func TestPlacementAcrossWatchedNamespaces(t *testing.T) {
	nsA, nsB := newNamespace(t), newNamespace(t)
	writeCell(t, nsA, "watched-a", "formation-ab")
	writeCell(t, nsB, "watched-b", "formation-ab")
	writeCell(t, nsB, "unlabelled-b", "")
	p, start := unstartedPlacer(t, nsA, nsA, nsB)
	start()
	for _, want := range []client.ObjectKey{{Namespace: nsA, Name: "watched-a"}, {Namespace: nsB, Name: "watched-b"}, {Namespace: nsB, Name: "unlabelled-b"}} {
		formationID := "formation-ab"
		if want.Name == "unlabelled-b" {
			formationID = ""
		}
		found, err := p.cellsOfID(context.Background(), want.Name, formationID)
		if err != nil || len(found) != 1 || client.ObjectKeyFromObject(&found[0]) != want {
			t.Errorf("cell %s: found %d Cells (%v), want the one at %v", want.Name, len(found), err, want)
		}
	}
}

// writeCell creates the Cell of cell id, of the formation with formationID
// (labelled with it, unless it is empty), with a status that names it, as
// the operator writes it.
func writeCell(tb testing.TB, namespace, id, formationID string) {
	tb.Helper()
	ctx := context.Background()
	cell := &cellosv1.Cell{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: store.ObjectName(id)}}
	if formationID != "" {
		cell.Labels = map[string]string{cellosv1.FormationIDLabel: formationID}
	}
	if err := controlPlane.Client.Create(ctx, cell); err != nil {
		tb.Fatal(err)
	}
	cell.Status = cellosv1.CellStatus{CellID: id, FormationID: formationID, State: cellosv1.CellRunning, LastAppliedSequence: 1}
	if err := controlPlane.Client.Status().Update(ctx, cell); err != nil {
		tb.Fatal(err)
	}
}

// cachedPlacer is placement reading a running manager's cache, with the
// operator's indexes, for the operator's namespace.
func cachedPlacer(tb testing.TB, namespace string) placer {
	tb.Helper()
	p, start := unstartedPlacer(tb, namespace)
	start()
	return p
}

// unstartedPlacer is cachedPlacer before its manager starts, and what
// starts it. With watched namespaces, the cache holds those only, one
// informer each, as with --watch-namespaces.
func unstartedPlacer(tb testing.TB, namespace string, watched ...string) (placer, func()) {
	tb.Helper()
	cells := &CachedCells{}
	opts := cache.Options{NewInformer: cells.NewInformer}
	if len(watched) > 0 {
		opts.DefaultNamespaces = map[string]cache.Config{}
		for _, ns := range watched {
			opts.DefaultNamespaces[ns] = cache.Config{}
		}
	}
	mgr := newManager(tb, opts)
	ctx, cancel := context.WithCancel(context.Background())
	if err := addIndexes(ctx, mgr.GetCache()); err != nil {
		tb.Fatal(err)
	}
	start := func() { runUntilCleanup(tb, ctx, cancel, mgr) }
	return Config{Namespace: namespace, Cells: cells}.placer(mgr.GetClient()), start
}
