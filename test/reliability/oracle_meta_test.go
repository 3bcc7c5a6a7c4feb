package reliability

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/internal/cursor"
	"cellos.dev/cellos-operator/internal/store"
	"cellos.dev/cellos-operator/test/harness"
)

// The oracle (harness.Mismatches) and the watch must catch what the
// scenarios look for, against a real API server: a status moved backwards,
// a status that differs from the fold, an extra object, a cursor moved
// backwards, and a cursor ahead of status. Each is made by hand here, with
// the operator stopped. The harness's own tests check every other way a
// status can differ from the fold.
func TestOracleCatchesWhatItMust(t *testing.T) {
	ns, js, jsc, rec := newScenario(t)
	publish(t, jsc, generate(5, 200, mix{}), 0)
	m := startManager(t, managerConfig{natsURL: js.URL(), namespace: ns})
	want, snap := expect(t, jsc)
	converge(t, ns, want, 2*time.Minute)
	harness.Stop(t, m)
	if v := rec.check(); len(v.regressions)+len(v.other) != 0 {
		t.Fatalf("a clean run has violations: %+v", v)
	}
	if bad := rec.cursorSound(want, snap); len(bad) != 0 {
		t.Fatalf("a clean run breaks the cursor's promise: %v", bad)
	}

	ctx := context.Background()
	var cells cellosv1.CellList
	if err := cp.Client.List(ctx, &cells); err != nil {
		t.Fatal(err)
	}
	var cell *cellosv1.Cell
	for i := range cells.Items {
		if c := &cells.Items[i]; c.Namespace == ns && c.Status.LastAppliedSequence > 1 {
			cell = c
			break
		}
	}
	if cell == nil {
		t.Fatal("no Cell to edit")
	}
	// A status moved back to an earlier sequence, under a valid stamp, as a
	// stale replica would write it.
	ref := store.Ref{Kind: store.CellKind, ID: cell.Status.CellID}
	back := cell.Status.LastAppliedSequence - 1
	cell.Status.LastAppliedSequence = back
	cell.Status.StreamStamp = store.Stamp(want.Stream, ref, uint64(back))
	if err := cp.Client.Status().Update(ctx, cell); err != nil {
		t.Fatal(err)
	}
	// An extra Cell of an id the stream never named.
	extra := &cellosv1.Cell{}
	extra.Namespace, extra.Name = ns, "not-in-the-stream"
	if err := cp.Client.Create(ctx, extra); err != nil {
		t.Fatal(err)
	}
	extra.Status = cellosv1.CellStatus{CellID: "not-in-the-stream", LastAppliedSequence: 1, StreamStamp: store.Stamp(want.Stream, store.Ref{Kind: store.CellKind, ID: "not-in-the-stream"}, 1)}
	if err := cp.Client.Status().Update(ctx, extra); err != nil {
		t.Fatal(err)
	}
	// The cursor moved back, then ahead of the status just moved back.
	var cm corev1.ConfigMap
	key := types.NamespacedName{Namespace: ns, Name: harness.CursorName}
	for _, seq := range []uint64{want.Last - 1, want.Last} {
		if err := cp.Client.Get(ctx, key, &cm); err != nil {
			t.Fatal(err)
		}
		cm.Data[cursor.SequenceKey] = strconv.FormatUint(seq, 10)
		if err := cp.Client.Update(ctx, &cm); err != nil {
			t.Fatal(err)
		}
	}

	bad, err := harness.Mismatches(ctx, cp.Client, ns, want)
	if err != nil {
		t.Fatal(err)
	}
	if len(bad) != 2 || !strings.Contains(strings.Join(bad, "\n"), "extra Cell") {
		t.Errorf("the oracle found %d differences, want the edited Cell and the extra one: %v", len(bad), bad)
	}
	harness.Eventually(t, 30*time.Second, "the watch sees the regressions", func() error {
		v := rec.check()
		if len(v.regressions) != 2 {
			return fmt.Errorf("regressions %v, want the Cell's and the cursor's", v.regressions)
		}
		return nil
	})
	if unsound := rec.cursorSound(want, snap); len(unsound) == 0 {
		t.Error("a cursor committed ahead of a status went unnoticed")
	}
}
