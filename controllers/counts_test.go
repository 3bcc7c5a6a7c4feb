package controllers

import (
	"context"
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/internal/fold"
	"cellos.dev/cellos-operator/internal/status"
	"cellos.dev/cellos-operator/internal/store"
)

// A start's fold reaches a formation's own events before those of its later
// cells: until the fold has reached the stream's end, the Formation keeps
// the cell counts it has rather than the partial ones, which would move it
// back; then it gets the whole fold's.
func TestStartKeepsFormationCountsUntilReplayed(t *testing.T) {
	const fid = "8d2e6f3a-4c5b-4d7e-9f8a-1b2c3d4e5f6a"
	ctx, ns := context.Background(), newNamespace(t)
	stream := store.Stream{Name: "CELLOS_EVENTS", Created: time.Now().Truncate(time.Second)}
	events := []string{`{"type":"` + fold.FormationTypePrefix + `created","data":{"formationId":"` + fid + `"}}`}
	for i := range 3 {
		events = append(events, fmt.Sprintf(`{"type":"%s","data":{"cellId":"counted-%d","formationId":"%s"}}`, fold.TypeCellStarted, i, fid))
	}

	// The Formation as the last run wrote it, from the whole stream.
	whole := fold.NewState()
	for i, e := range events {
		whole.Apply(uint64(i+1), time.Time{}, "", nil, []byte(e))
	}
	f := &cellosv1.Formation{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fid, Labels: map[string]string{cellosv1.FormationIDLabel: fid}}}
	if err := controlPlane.Client.Create(ctx, f); err != nil {
		t.Fatal(err)
	}
	stamp := store.Stamp(stream, store.Ref{Kind: store.FormationKind, ID: fid}, 1)
	f.Status = status.FormationStatus(whole.Formations[fid], stamp, whole.Counts(fid), f.Generation, nil, time.Now())
	if err := controlPlane.Client.Status().Update(ctx, f); err != nil {
		t.Fatal(err)
	}

	// The new start has folded the formation and one of its cells.
	r := startReconcilers(t, ns)
	r.store.Reset(stream)
	r.foldTo(t, events, 2)
	key := types.NamespacedName{Namespace: ns, Name: fid}
	counts := func(want cellosv1.CellCounts) func() error {
		return func() error {
			var got cellosv1.Formation
			if err := controlPlane.Client.Get(ctx, key, &got); err != nil {
				return err
			}
			if got.Status.CellCounts != want {
				return fmt.Errorf("counts %+v, want %+v", got.Status.CellCounts, want)
			}
			return nil
		}
	}
	consistently(t, 2*time.Second, "the Formation keeps its counts while the fold is partial", counts(whole.Counts(fid)))

	r.foldTo(t, events, len(events))
	r.store.MarkReplayed(stream)
	eventually(t, "the Formation has the whole fold's counts", counts(whole.Counts(fid)))
	r.settled(t, "every event is reflected", len(events))
}

// A Formation's counts follow the fold, not the writes of its Cells: cells
// whose Cells a ResourceQuota keeps out are counted as soon as their events
// are folded. Counts that waited for a Cell to be written came once per
// count window over the whole time the Cells took to write, on a burst
// several times per Formation; here they would never come.
func TestFormationCountsFollowTheFold(t *testing.T) {
	const fid = "3c1d9e2f-7a6b-4c5d-8e9f-0a1b2c3d4e5f"
	ctx, ns := context.Background(), newNamespace(t)
	setCellsQuota(t, ns, 0)
	r := startReconcilers(t, ns)
	r.apply(t, `{"type":"`+fold.FormationTypePrefix+`created","data":{"formationId":"`+fid+`"}}`)
	key := types.NamespacedName{Namespace: ns, Name: fid}
	eventually(t, "the Formation's status is written", func() error {
		var f cellosv1.Formation
		if err := controlPlane.Client.Get(ctx, key, &f); err != nil {
			return err
		}
		if f.Status.LastAppliedSequence == 0 {
			return fmt.Errorf("no status yet")
		}
		return nil
	})
	// The reconciles that the Formation's own writes queue have run: only
	// the cells' events can bring its counts now.
	time.Sleep(time.Second)
	for i := range 3 {
		r.apply(t, fmt.Sprintf(`{"type":"%s","data":{"cellId":"uncreated-%d","formationId":"%s"}}`, fold.TypeCellStarted, i, fid))
	}
	want := cellosv1.CellCounts{Total: 3, Running: 3}
	eventually(t, "the Formation counts its cells, none of them created", func() error {
		var f cellosv1.Formation
		if err := controlPlane.Client.Get(ctx, key, &f); err != nil {
			return err
		}
		if f.Status.CellCounts != want {
			return fmt.Errorf("counts %+v, want %+v", f.Status.CellCounts, want)
		}
		var cells cellosv1.CellList
		if err := controlPlane.Client.List(ctx, &cells, client.InNamespace(ns)); err != nil {
			return err
		}
		if len(cells.Items) != 0 {
			return fmt.Errorf("%d Cells created past a quota of none", len(cells.Items))
		}
		return nil
	})
}
