package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	natsjs "github.com/nats-io/nats.go/jetstream"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/internal/jetstream"
	"cellos.dev/cellos-operator/internal/simulator"
	"cellos.dev/cellos-operator/internal/store"
	"cellos.dev/cellos-operator/test/harness"
	"cellos.dev/cellos-operator/test/localenv"
)

// After any restart, whatever happened while the operator was down, every
// object of the namespace equals the fold of the stream as it is now. The
// oracle is the harness's: it reads the stream back, folds it with
// internal/fold, and compares every Formation and Cell of the namespace,
// objects left from an earlier stream included.

// foldStream reads every message of the stream back and folds it.
func foldStream(t *testing.T, jsc natsjs.JetStream) harness.Expectation {
	t.Helper()
	snap, err := harness.ReadStream(context.Background(), jsc, "CELLOS_EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	return harness.Expect(snap)
}

// matchesFold is nil when every Formation and Cell of ns is what want
// says (harness.Mismatches), else an error listing the first ten objects
// that differ.
func matchesFold(ns string, want harness.Expectation) error {
	bad, err := harness.Mismatches(context.Background(), controlPlane.Client, ns, want)
	if err != nil || len(bad) == 0 {
		return err
	}
	return fmt.Errorf("%d objects differ from the fold of the stream:\n%s", len(bad), strings.Join(harness.Head(bad, 10), "\n"))
}

// restart starts the manager again on the stream as it is now, and waits
// until every object equals its fold (no object left from an earlier
// stream either) and the cursor reaches the stream's end.
func restart(t *testing.T, r sampleRun) {
	t.Helper()
	want := foldStream(t, r.jsc)
	startManager(t, r.js.URL(), r.ns, "--flush-window=50ms", "--cursor-commit-interval=200ms")
	harness.Eventually(t, 2*time.Minute, "every object equals the fold of the stream", func() error { return matchesFold(r.ns, want) })
	waitForCursorOf(t, r.ns, want)
}

// waitForCursorOf waits until the cursor names want's stream and reaches its
// last sequence.
func waitForCursorOf(t *testing.T, ns string, want harness.Expectation) {
	t.Helper()
	harness.WaitForCursor(t, controlPlane.Client, ns, want.Cursor(), 2*time.Minute)
}

// The sample's ids, which the recreated streams below reuse.
const (
	formation02 = "02daa0b3-49a7-a4bf-8050-cbb812881d4e" // Succeeded at 16 in the sample
	formation99 = "9974d75b-3338-24fe-6179-0134676b1b69" // Succeeded at 19
	formationD4 = "d49db22d-a1b6-c6c0-c492-90279eab75cd" // Running at 29
)

// recreatedEvents is another stream of the same name: 12 events where the
// sample has 33, reusing the sample's ids at lower sequences. Formation
// 02daa0b3 (Succeeded at 16) ends Pending at 1; cell-02daa0b3-1 (Destroyed
// at 20) ends Running at 4; cell-02daa0b3-0 (Destroyed, succeeded, at 12)
// ends Destroyed, failed, at 12 too; formation 9974d75b (Succeeded at 19)
// ends Failed at 9. Every old status claims a sequence at or beyond the new
// stream's; some beyond its end.
func recreatedEvents() []sampleMessage {
	ev := func(typ, at, data string) sampleMessage {
		return sampleMessage{Subject: "cellos.events.x", Data: `{"specversion":"1.0","id":"` + typ + at + `","type":"` + typ + `","time":"` + at + `","data":` + data + `}`}
	}
	const (
		created   = "dev.cellos.events.cell.formation.v1.created"
		failed    = "dev.cellos.events.cell.formation.v1.failed"
		started   = "dev.cellos.events.cell.lifecycle.v1.started"
		completed = "dev.cellos.events.cell.command.v1.completed"
		destroyed = "dev.cellos.events.cell.lifecycle.v1.destroyed"
	)
	return []sampleMessage{
		ev(created, "2027-01-02T10:00:00Z", `{"formationId":"`+formation02+`","formationName":"second-life"}`),                                      // 1
		ev(started, "2027-01-02T10:00:01Z", `{"cellId":"cell-02daa0b3-0","specId":"spec-new","runId":"run-new-0","formationId":"`+formation02+`"}`), // 2
		ev(started, "2027-01-02T10:00:02Z", `{"cellId":"cell-02daa0b3-1","specId":"spec-new","runId":"run-new-1","formationId":"`+formation02+`"}`), // 3
		ev(completed, "2027-01-02T10:00:03Z", `{"cellId":"cell-02daa0b3-1","exitCode":9}`),                                                          // 4
		{Subject: "cellos.events.x", Data: "not json at all"},                                                                                       // 5
		ev(created, "2027-01-02T10:00:05Z", `{"formationId":"`+formation99+`","formationName":"again"}`),                                            // 6
		ev(started, "2027-01-02T10:00:06Z", `{"cellId":"fresh","specId":"spec-x"}`),                                                                 // 7
		ev(completed, "2027-01-02T10:00:07Z", `{"cellId":"cell-02daa0b3-0","exitCode":2}`),                                                          // 8
		ev(failed, "2027-01-02T10:00:08Z", `{"formationId":"`+formation99+`"}`),                                                                     // 9
		ev(completed, "2027-01-02T10:00:09Z", `{"cellId":"only-completed","exitCode":0}`),                                                           // 10
		ev(destroyed, "2027-01-02T10:00:10Z", `{"cellId":"fresh","outcome":"succeeded"}`),                                                           // 11
		ev(destroyed, "2027-01-02T10:00:11Z", `{"cellId":"cell-02daa0b3-0","outcome":"failed"}`),                                                    // 12
	}
}

// recreateStream deletes the stream and creates it again under its name with
// msgs, and checks the case it makes: objects whose status claims a
// sequence beyond the new stream's end.
func recreateStream(t *testing.T, r sampleRun, msgs []sampleMessage) {
	t.Helper()
	ctx := context.Background()
	before, err := r.jsc.Stream(ctx, "CELLOS_EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	if err := r.jsc.DeleteStream(ctx, "CELLOS_EVENTS"); err != nil {
		t.Fatal(err)
	}
	publish(t, r.jsc, msgs)
	after := foldStream(t, r.jsc)
	if after.Stream.Created.Equal(before.CachedInfo().Created) {
		t.Fatal("the recreated stream has the old one's creation time")
	}
	var f cellosv1.Formation
	if err := controlPlane.Client.Get(ctx, types.NamespacedName{Namespace: r.ns, Name: formation02}, &f); err != nil {
		t.Fatal(err)
	}
	if f.Status.LastAppliedSequence <= int64(after.Last) {
		t.Fatalf("formation %s at %d, not beyond the new stream's end %d", formation02, f.Status.LastAppliedSequence, after.Last)
	}
}

// (a) The stream deleted and created again with other, fewer events while
// the operator was down: the old statuses claim sequences the new stream
// does not reach, under the old stream's stamp, and are overwritten; the
// objects only the old stream named are pruned (the oracle counts any left
// as extra).
func TestRestartAfterStreamRecreated(t *testing.T) {
	r := projectSample(t)
	harness.Stop(t, r.m.Manager)
	recreateStream(t, r, recreatedEvents())
	restart(t, r)
}

// (b) Statuses edited by hand while the operator was down: a Destroyed cell
// set back to Running at its own sequence; a cell and a formation whose
// lastAppliedSequence is raised far beyond the stream's end, their stamps
// left as they were or replaced; a formation put back to an earlier sequence.
// Trusting status in any of these would leave it as edited.
func TestRestartAfterStatusEditedByHand(t *testing.T) {
	r := projectSample(t)
	harness.Stop(t, r.m.Manager)
	ctx := context.Background()
	c := controlPlane.Client
	cell := func(name string, edit func(*cellosv1.CellStatus)) {
		var obj cellosv1.Cell
		if err := c.Get(ctx, types.NamespacedName{Namespace: r.ns, Name: name}, &obj); err != nil {
			t.Fatal(err)
		}
		edit(&obj.Status)
		if err := c.Status().Update(ctx, &obj); err != nil {
			t.Fatal(err)
		}
	}
	formation := func(name string, edit func(*cellosv1.FormationStatus)) {
		var obj cellosv1.Formation
		if err := c.Get(ctx, types.NamespacedName{Namespace: r.ns, Name: name}, &obj); err != nil {
			t.Fatal(err)
		}
		edit(&obj.Status)
		if err := c.Status().Update(ctx, &obj); err != nil {
			t.Fatal(err)
		}
	}
	cell("cell-02daa0b3-0", func(s *cellosv1.CellStatus) {
		s.State, s.DestroyedAt, s.Outcome = cellosv1.CellRunning, nil, ""
	})
	cell("cell-02daa0b3-1", func(s *cellosv1.CellStatus) {
		s.LastAppliedSequence = 1_000_000
		s.State, s.Outcome = cellosv1.CellRunning, ""
	})
	formation(formation99, func(s *cellosv1.FormationStatus) {
		s.LastAppliedSequence = 5_000
		s.Phase = cellosv1.FormationCancelled
		s.StreamStamp = "edited"
	})
	formation(formationD4, func(s *cellosv1.FormationStatus) {
		s.LastAppliedSequence = 3
		s.Phase = cellosv1.FormationPending
	})
	if err := matchesFold(r.ns, foldStream(t, r.jsc)); err == nil {
		t.Fatal("the edits left every status equal to the fold")
	}
	restart(t, r)
}

// (c) Objects deleted while the operator was down come back: a Formation
// that owns Cells, one that owns none, and Cells, one of them with an id
// too long to be its name.
func TestRestartAfterObjectDeleted(t *testing.T) {
	r := projectSample(t)
	harness.Stop(t, r.m.Manager)
	ctx := context.Background()
	for _, obj := range []client.Object{
		&cellosv1.Formation{ObjectMeta: metav1.ObjectMeta{Namespace: r.ns, Name: formation02}},
		&cellosv1.Formation{ObjectMeta: metav1.ObjectMeta{Namespace: r.ns, Name: formationD4}},
		&cellosv1.Cell{ObjectMeta: metav1.ObjectMeta{Namespace: r.ns, Name: "cell-02daa0b3-1"}},
		&cellosv1.Cell{ObjectMeta: metav1.ObjectMeta{Namespace: r.ns, Name: store.ObjectName(longCellID(t))}},
	} {
		if err := controlPlane.Client.Delete(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	restart(t, r)
}

// (d) The cursor ConfigMap deleted while the operator was down comes back
// and reaches the stream's last sequence.
func TestRestartAfterCursorDeleted(t *testing.T) {
	r := projectSample(t)
	harness.Stop(t, r.m.Manager)
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: r.ns, Name: "cellos-projection-cursor"}}
	if err := controlPlane.Client.Delete(context.Background(), cm); err != nil {
		t.Fatal(err)
	}
	if got := cursorAt(t, r.ns); got != 0 {
		t.Fatalf("cursor still at %d", got)
	}
	restart(t, r)
}

// (e) The operator killed with SIGKILL while it writes a larger simulated
// stream: some objects written, some created without a status, some not
// created, the cursor behind. The next start finishes the job.
func TestRestartAfterKillMidFold(t *testing.T) {
	const formations, cellsPerFormation = 200, 3
	r := sampleRun{ns: newNamespace(t), js: localenv.StartJetStream(t)}
	_, r.jsc = r.js.Connect(t)
	ctx := context.Background()
	if _, err := jetstream.EnsureStream(ctx, r.jsc, "CELLOS_EVENTS"); err != nil {
		t.Fatal(err)
	}
	gen := simulator.NewGenerator(simulator.Config{
		Seed: 7, Formations: formations, CellsPerFormation: cellsPerFormation, FailureRate: 0.2, DegradedRate: 0.2,
		Start: time.Date(2027, 3, 1, 8, 0, 0, 0, time.UTC),
	})
	if _, err := simulator.Publish(ctx, r.jsc, gen.All(), 0); err != nil {
		t.Fatal(err)
	}
	want := foldStream(t, r.jsc)

	first := startManager(t, r.js.URL(), r.ns, "--flush-window=50ms", "--cursor-commit-interval=200ms")
	// Kill once a fifth of the Cells exist: well inside the writing.
	harness.Eventually(t, 2*time.Minute, "the first manager writes some objects", func() error {
		var cells cellosv1.CellList
		if err := controlPlane.Client.List(ctx, &cells, client.InNamespace(r.ns)); err != nil {
			return err
		}
		if n := len(cells.Items); n < formations*cellsPerFormation/5 {
			return fmt.Errorf("%d Cells", n)
		}
		return nil
	})
	first.Kill()
	if matchesFold(r.ns, want) == nil {
		t.Fatal("the manager had written everything before it was killed: nothing is left to test")
	}
	var cells cellosv1.CellList
	if err := controlPlane.Client.List(ctx, &cells, client.InNamespace(r.ns)); err != nil {
		t.Fatal(err)
	}
	var unwritten int
	for _, c := range cells.Items {
		if c.Status.LastAppliedSequence == 0 {
			unwritten++
		}
	}
	t.Logf("killed with %d of %d Cells created, %d of them without a status, and the cursor at %d of %d",
		len(cells.Items), len(want.State.Cells), unwritten, cursorAt(t, r.ns), want.Last)
	restart(t, r)
}

// (f) The stream deleted and created again while the operator runs: it
// notices, folds the new stream from its first event, and projects it onto
// the existing objects, over statuses that claim later sequences; the
// objects only the old stream named are pruned.
func TestRestartNotNeededForStreamRecreatedWhileRunning(t *testing.T) {
	r := projectSample(t)
	recreateStream(t, r, recreatedEvents())
	want := foldStream(t, r.jsc)
	harness.Eventually(t, 2*time.Minute, "every object equals the fold of the new stream", func() error { return matchesFold(r.ns, want) })
	waitForCursorOf(t, r.ns, want)
}

// (b') A status whose cellId was edited by hand while the operator was down:
// to an id the stream never names, or to another cell's. Placement trusts a
// Cell's status only under the name the operator gives that id, so both are
// healed.
func TestRestartAfterCellIDEditedByHand(t *testing.T) {
	for _, tc := range []struct{ name, cellID string }{
		{"to an id the stream never names", "ghost"},
		{"to another cell's id", "cell-9974d75b-1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := projectSample(t)
			harness.Stop(t, r.m.Manager)
			ctx := context.Background()
			var obj cellosv1.Cell
			if err := controlPlane.Client.Get(ctx, types.NamespacedName{Namespace: r.ns, Name: "cell-02daa0b3-0"}, &obj); err != nil {
				t.Fatal(err)
			}
			obj.Status.CellID = tc.cellID
			if err := controlPlane.Client.Status().Update(ctx, &obj); err != nil {
				t.Fatal(err)
			}
			restart(t, r)
		})
	}
}
