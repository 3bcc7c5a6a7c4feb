package e2e

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/internal/fold"
	"cellos.dev/cellos-operator/internal/store"
	"cellos.dev/cellos-operator/test/harness"
	"cellos.dev/cellos-operator/test/localenv"
)

// The TTLs of the expiry tests: short enough to pass while they run.
var shortTTLs = fold.TTLs{Cell: 3 * time.Second, Formation: 5 * time.Second}

func ttlFlags(ttls fold.TTLs) []string {
	return []string{"--cell-ttl=" + ttls.Cell.String(), "--formation-ttl=" + ttls.Formation.String(),
		"--flush-window=50ms", "--cursor-commit-interval=200ms"}
}

func formationMessage(id, phase string) sampleMessage {
	return sampleMessage{Subject: "cellos.events.formation." + id,
		Data: `{"specversion":"1.0","id":"` + id + phase + `","type":"` + fold.FormationTypePrefix + phase + `","data":{"formationId":"` + id + `"}}`}
}

func cellMessage(typ, cellID, formationID string) sampleMessage {
	return sampleMessage{Subject: "cellos.events.cell." + cellID,
		Data: `{"specversion":"1.0","id":"` + cellID + typ + `","type":"` + typ + `","time":"2027-01-01T00:00:00Z","data":{"cellId":"` + cellID + `","formationId":"` + formationID + `"}}`}
}

// deleted is nil once the object under key is not found.
func deleted(key types.NamespacedName, obj client.Object) error {
	err := controlPlane.Client.Get(context.Background(), key, obj)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	return fmt.Errorf("%T %s is still there", obj, key)
}

// expectedNow is the fold of the stream under ttls, less what has expired
// by now: what the namespace must hold.
func expectedNow(t *testing.T, r sampleRun, ttls fold.TTLs) harness.Expectation {
	t.Helper()
	snap, err := harness.ReadStream(context.Background(), r.jsc, "CELLOS_EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	return harness.ExpectTTLs(snap, ttls, time.Now())
}

// Finished objects are deleted their TTL after their final event, and no
// restart brings them back: not a SIGKILL before the stream's clock has
// passed their expiry, when the new process's fold still holds them, nor one
// after, when it has released them.
func TestExpiredObjectsStayGoneAfterSIGKILL(t *testing.T) {
	const done, live = "3f6c2d1e-8a4b-4c5d-9e6f-7a8b9c0d1e2f", "4a7d3e2f-9b5c-4d6e-8f7a-8b9c0d1e2f3a"
	r := sampleRun{ns: newNamespace(t), js: localenv.StartJetStream(t)}
	_, r.jsc = r.js.Connect(t)
	r.m = startManager(t, r.js.URL(), r.ns, ttlFlags(shortTTLs)...)
	publish(t, r.jsc, []sampleMessage{
		formationMessage(done, "created"),
		cellMessage(fold.TypeCellStarted, "done-0", done),
		cellMessage(fold.TypeCellDestroyed, "done-0", done),
		formationMessage(done, "completed"),
		formationMessage(live, "created"),
		cellMessage(fold.TypeCellStarted, "live-0", live),
	})
	doneFormation := types.NamespacedName{Namespace: r.ns, Name: store.ObjectName(done)}
	doneCell := types.NamespacedName{Namespace: r.ns, Name: store.ObjectName("done-0")}
	// Every event in status first: an object not yet created is no
	// object deleted.
	waitForCursor(t, r.ns, 6)
	harness.Eventually(t, time.Minute, "the finished Formation and Cell are deleted after their TTLs", func() error {
		return errors.Join(deleted(doneFormation, &cellosv1.Formation{}), deleted(doneCell, &cellosv1.Cell{}))
	})
	harness.Eventually(t, time.Minute, "the namespace holds the live objects", func() error { return matchesFold(r.ns, expectedNow(t, r, shortTTLs)) })

	// The stream's clock has not passed the expiry: the new process folds
	// the finished objects again and must not write them.
	r.m.Kill()
	r.m = startManager(t, r.js.URL(), r.ns, ttlFlags(shortTTLs)...)
	waitForCursor(t, r.ns, 6)
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		if err := errors.Join(deleted(doneFormation, &cellosv1.Formation{}), deleted(doneCell, &cellosv1.Cell{})); err != nil {
			t.Fatalf("after a SIGKILL restart: %v", err)
		}
	}

	// A later event moves the stream's clock past the expiry: the fold
	// releases them, and another restart folds them away.
	publish(t, r.jsc, []sampleMessage{cellMessage(fold.TypeCellDestroyed, "live-0", live)})
	waitForCursor(t, r.ns, 7)
	r.m.Kill()
	r.m = startManager(t, r.js.URL(), r.ns, ttlFlags(shortTTLs)...)
	waitForCursor(t, r.ns, 7)
	harness.Eventually(t, time.Minute, "every object is the fold of the stream less what expired", func() error {
		return matchesFold(r.ns, expectedNow(t, r, shortTTLs))
	})
	if err := errors.Join(deleted(doneFormation, &cellosv1.Formation{}), deleted(doneCell, &cellosv1.Cell{})); err != nil {
		t.Fatal(err)
	}
}

// A declared Formation is its user's: the operator never deletes it, its
// Cells expire, and its counts keep counting them, across a restart.
func TestDeclaredFormationKeptWithItsCounts(t *testing.T) {
	const id = "5c1f9e8d-7b6a-4c3d-8e2f-1a0b9c8d7e6f"
	operatorNS, teamNS := newNamespace(t), newNamespace(t)
	ctx, c := context.Background(), controlPlane.Client
	declared := &cellosv1.Formation{
		ObjectMeta: metav1.ObjectMeta{Namespace: teamNS, Name: "kept", Labels: map[string]string{cellosv1.FormationIDLabel: id}},
		Spec:       &cellosv1.FormationSpec{Coordinator: "lead", Members: []cellosv1.FormationMember{{Name: "lead"}}},
	}
	if err := c.Create(ctx, declared); err != nil {
		t.Fatal(err)
	}
	js := localenv.StartJetStream(t)
	_, jsc := js.Connect(t)
	m := startManager(t, js.URL(), operatorNS, ttlFlags(shortTTLs)...)
	publish(t, jsc, []sampleMessage{
		{Subject: "cellos.events.formation." + id, Data: `{"specversion":"1.0","id":"a","source":"cellos-operator","type":"` + fold.FormationTypePrefix + `created","data":{"formationId":"` + id + `","namespace":"` + teamNS + `"}}`},
		cellMessage(fold.TypeCellStarted, "kept-0", id),
		cellMessage(fold.TypeCellDestroyed, "kept-0", id),
		formationMessage(id, "completed"),
	})
	key := client.ObjectKeyFromObject(declared)
	keptWithCounts := func() error {
		var f cellosv1.Formation
		if err := c.Get(ctx, key, &f); err != nil {
			return err
		}
		if want := (cellosv1.CellCounts{Total: 1, Destroyed: 1}); f.Status.Phase != cellosv1.FormationSucceeded || f.Status.CellCounts != want || f.Status.FinishedAt == nil {
			return fmt.Errorf("phase %q, counts %+v, finished at %v; want Succeeded, %+v, a finish time", f.Status.Phase, f.Status.CellCounts, f.Status.FinishedAt, want)
		}
		return nil
	}
	cell := types.NamespacedName{Namespace: teamNS, Name: "kept-0"}
	harness.Eventually(t, time.Minute, "the declared Formation's Cell expires", func() error { return deleted(cell, &cellosv1.Cell{}) })
	harness.Eventually(t, time.Minute, "the declared Formation counts it", keptWithCounts)
	// Past the formation TTL, across a SIGKILL restart and an event that
	// moves the stream's clock past it, the declared Formation stays.
	time.Sleep(shortTTLs.Formation)
	m.Kill()
	startManager(t, js.URL(), operatorNS, ttlFlags(shortTTLs)...)
	publish(t, jsc, []sampleMessage{cellMessage(fold.TypeCellStarted, "elsewhere", "")})
	waitForCursor(t, operatorNS, 5)
	if err := keptWithCounts(); err != nil {
		t.Fatalf("after its TTL and a restart: %v", err)
	}
	if err := deleted(cell, &cellosv1.Cell{}); err != nil {
		t.Fatal(err)
	}
}
