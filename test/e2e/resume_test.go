package e2e

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/test/harness"
	"cellos.dev/cellos-operator/test/localenv"
)

// watchCursor samples the cursor until the test ends and fails it if the
// cursor ever moves backwards.
func watchCursor(t *testing.T, ns string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		var last uint64
		for ctx.Err() == nil {
			if got := cursorAt(t, ns); got < last {
				t.Errorf("cursor moved backwards from %d to %d", last, got)
			} else {
				last = got
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
}

func TestRestartMidStreamLosesNothing(t *testing.T) {
	ns := newNamespace(t)
	js := localenv.StartJetStream(t)
	_, jsc := js.Connect(t)
	want := readExpected(t)
	sample := readSample(t)
	watchCursor(t, ns)

	first := startManager(t, js.URL(), ns, "--flush-window=50ms")
	publish(t, jsc, sample[:17])
	waitForCursor(t, ns, 17)
	harness.Stop(t, first.Manager)
	stoppedAt := cursorAt(t, ns)

	publish(t, jsc, sample[17:])
	startManager(t, js.URL(), ns, "--flush-window=50ms")
	harness.Eventually(t, time.Minute, "objects match the expected projection", func() error { return matchesExpected(ns, want) })
	waitForCursor(t, ns, want.LastSequence)
	if stoppedAt < 17 {
		t.Errorf("cursor after a clean stop is %d, want at least 17", stoppedAt)
	}
}

// A restart without a checkpoint folds the whole stream again, from a
// cursor that lags (as a crash before the last commit leaves it) or not:
// the objects already reflect it, so the replay costs no status write.
func TestReplayOfAnAppliedStreamWritesNothing(t *testing.T) {
	r := projectSample(t)
	ns, want := r.ns, r.want
	harness.Stop(t, r.m.Manager)

	var cm corev1.ConfigMap
	if err := controlPlane.Client.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: "cellos-projection-cursor"}, &cm); err != nil {
		t.Fatal(err)
	}
	cm.Data["sequence"] = "5"
	if err := controlPlane.Client.Update(context.Background(), &cm); err != nil {
		t.Fatal(err)
	}
	second := startManager(t, r.js.URL(), ns, "--flush-window=50ms", "--checkpoint-interval=0")
	waitForCursor(t, ns, want.LastSequence)
	if err := matchesExpected(ns, want); err != nil {
		t.Fatal(err)
	}
	var applied, written float64
	for _, family := range []string{"cell", "formation"} {
		applied += second.Metric(t, `cellos_operator_events_total{family="`+family+`",result="applied"}`)
	}
	for _, kind := range []string{"Cell", "Formation"} {
		written += second.Metric(t, `cellos_operator_status_writes_total{kind="`+kind+`",result="ok"}`)
	}
	if applied == 0 || written != 0 {
		t.Errorf("replay: %v events folded again, %v status writes; want the whole stream folded and no write", applied, written)
	}
}

func TestObjectsHeal(t *testing.T) {
	r := projectSample(t)
	ns, want := r.ns, r.want
	ctx := context.Background()
	c := controlPlane.Client

	// A deleted Cell comes back.
	cell := &cellosv1.Cell{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "cell-02daa0b3-1"}}
	if err := c.Delete(ctx, cell); err != nil {
		t.Fatal(err)
	}
	// A hand-edited status is put back.
	var f cellosv1.Formation
	key := types.NamespacedName{Namespace: ns, Name: "9974d75b-3338-24fe-6179-0134676b1b69"}
	if err := c.Get(ctx, key, &f); err != nil {
		t.Fatal(err)
	}
	f.Status.Phase = cellosv1.FormationFailed
	if err := c.Status().Update(ctx, &f); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, time.Minute, "deleted and edited objects heal", func() error { return matchesExpected(ns, want) })

	// A correlated Cell is labelled and owned by its Formation, whose counts
	// come from its Cells.
	var owned cellosv1.Cell
	if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: "cell-02daa0b3-0"}, &owned); err != nil {
		t.Fatal(err)
	}
	formationID := "02daa0b3-49a7-a4bf-8050-cbb812881d4e"
	if owned.Labels[cellosv1.FormationIDLabel] != formationID || len(owned.OwnerReferences) != 1 ||
		owned.OwnerReferences[0].Kind != "Formation" || owned.OwnerReferences[0].Name != formationID {
		t.Errorf("correlated Cell: labels %v, owners %v", owned.Labels, owned.OwnerReferences)
	}
	harness.Eventually(t, 30*time.Second, "formation counts its Cells", func() error {
		var cells cellosv1.CellList
		if err := c.List(ctx, &cells, client.InNamespace(ns), client.MatchingLabels{cellosv1.FormationIDLabel: formationID}); err != nil {
			return err
		}
		var f cellosv1.Formation
		if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: formationID}, &f); err != nil {
			return err
		}
		if got := f.Status.CellCounts.Total; int(got) != len(cells.Items) || got == 0 {
			return fmt.Errorf("cellCounts.total %d, %d Cells labelled", got, len(cells.Items))
		}
		return nil
	})
}

// A stream deleted and created again under the same name numbers its events
// from 1 again: the operator folds the new one from its first event over the
// old objects, even where their old sequences are beyond the new stream's,
// and the cursor starts again with it.
func TestRecreatedStreamReplacesTheOldProjection(t *testing.T) {
	r := projectSample(t)
	ns, jsc := r.ns, r.jsc
	harness.Stop(t, r.m.Manager)

	ctx := context.Background()
	if err := jsc.DeleteStream(ctx, "CELLOS_EVENTS"); err != nil {
		t.Fatal(err)
	}
	// The new stream: the sample's first three events, then 20 that the
	// projection ignores, so that it ends beyond the old status of formation
	// 02daa0b3 (Succeeded at sequence 16), which it leaves Pending at 2.
	fresh := readSample(t)[:3]
	for i := range 20 {
		fresh = append(fresh, sampleMessage{Subject: "cellos.events.noise", Data: fmt.Sprintf(`{"type":"dev.cellos.events.cell.identity.v1.materialized","id":"n%d"}`, i)})
	}
	publish(t, jsc, fresh)
	startManager(t, r.js.URL(), ns, "--flush-window=50ms")
	waitForCursor(t, ns, uint64(len(fresh)))
	harness.Eventually(t, time.Minute, "the new stream's projection", func() error {
		var f cellosv1.Formation
		if err := controlPlane.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "02daa0b3-49a7-a4bf-8050-cbb812881d4e"}, &f); err != nil {
			return err
		}
		if f.Status.Phase != cellosv1.FormationPending || f.Status.LastAppliedSequence != 2 {
			return fmt.Errorf("phase %s at sequence %d", f.Status.Phase, f.Status.LastAppliedSequence)
		}
		return nil
	})
}
