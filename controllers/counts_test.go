package controllers

import (
	"context"
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

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
