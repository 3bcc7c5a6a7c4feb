package harness_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/internal/jetstream"
	"cellos.dev/cellos-operator/internal/status"
	"cellos.dev/cellos-operator/internal/store"
	"cellos.dev/cellos-operator/test/harness"
	"cellos.dev/cellos-operator/test/localenv"
)

const (
	formationA = "6f1f8b9e-3c1a-4d8e-9a43-3b0f0f6c2a11"
	formationB = "0b7c4f0e-95a3-4c57-8a7e-0f5f4b6d9e22"
)

// events is a small stream: two formations, three cells, one rejected
// message, one event of a kind the fold ignores.
func events() []harness.Message {
	ev := func(typ, at, data string) string {
		return `{"specversion":"1.0","id":"` + typ + at + `","source":"test","type":"` + typ + `","time":"` + at + `","data":` + data + `}`
	}
	const (
		created   = "dev.cellos.events.cell.formation.v1.created"
		completed = "dev.cellos.events.cell.formation.v1.completed"
		started   = "dev.cellos.events.cell.lifecycle.v1.started"
		exited    = "dev.cellos.events.cell.command.v1.completed"
		destroyed = "dev.cellos.events.cell.lifecycle.v1.destroyed"
	)
	bodies := []string{
		ev(created, "2027-01-02T10:00:00Z", `{"formationId":"`+formationA+`","formationName":"alpha","members":[1,2]}`),
		ev(started, "2027-01-02T10:00:01.5Z", `{"cellId":"cell-a0","specId":"spec","runId":"run-0","formationId":"`+formationA+`"}`),
		ev(started, "2027-01-02T10:00:02Z", `{"cellId":"cell-a1","specId":"spec","runId":"run-1","formationId":"`+formationA+`"}`),
		"not json at all",
		ev(exited, "2027-01-02T10:00:03Z", `{"cellId":"cell-a0","exitCode":3}`),
		ev(destroyed, "2027-01-02T10:00:04Z", `{"cellId":"cell-a0","outcome":"failed"}`),
		ev(created, "2027-01-02T10:00:05Z", `{"formationId":"`+formationB+`","formationName":"beta"}`),
		ev("dev.cellos.events.something.else", "2027-01-02T10:00:06Z", `{}`),
		ev(started, "2027-01-02T10:00:07Z", `{"cellId":"loose"}`),
		ev(completed, "2027-01-02T10:00:08Z", `{"formationId":"`+formationA+`"}`),
	}
	msgs := make([]harness.Message, len(bodies))
	for i, b := range bodies {
		msgs[i] = harness.Message{Seq: uint64(i + 1), Subject: "cellos.events.x", Data: []byte(b)}
	}
	return msgs
}

var testStream = store.Stream{Name: "CELLOS_EVENTS", Created: time.Date(2027, 1, 2, 9, 0, 0, 0, time.UTC)}

// expectation is the fold of events on testStream.
func expectation() harness.Expectation {
	return harness.Expect(harness.Snapshot{Stream: testStream, First: 1, Last: 10, Messages: events()})
}

// objects are the Formations and Cells of want as the operator writes
// them: named after their ids, labelled, with the status the builders make
// and the API server keeps (times to the second).
func objects(t *testing.T, want harness.Expectation) ([]cellosv1.Formation, []cellosv1.Cell) {
	t.Helper()
	now := time.Now()
	var cells []cellosv1.Cell
	byFormation := map[string][]cellosv1.Cell{}
	for id, c := range want.State.Cells {
		obj := cellosv1.Cell{ObjectMeta: metav1.ObjectMeta{Name: store.ObjectName(id)}}
		if c.FormationID != "" {
			obj.Labels = map[string]string{cellosv1.FormationIDLabel: c.FormationID}
		}
		obj.Status = status.CellStatus(c, store.Stamp(want.Stream, store.Ref{Kind: store.CellKind, ID: id}, c.LastAppliedSequence), 1, nil, now)
		cells = append(cells, obj)
		byFormation[c.FormationID] = append(byFormation[c.FormationID], obj)
	}
	var formations []cellosv1.Formation
	for id, f := range want.State.Formations {
		obj := cellosv1.Formation{ObjectMeta: metav1.ObjectMeta{Name: store.ObjectName(id), Labels: map[string]string{cellosv1.FormationIDLabel: id}}}
		obj.Status = status.FormationStatus(f, store.Stamp(want.Stream, store.Ref{Kind: store.FormationKind, ID: id}, f.LastAppliedSequence),
			want.State.Counts(id), 1, nil, now)
		formations = append(formations, obj)
	}
	return formations, cells
}

func find[T any](t *testing.T, items []T, name func(*T) string, want string) *T {
	t.Helper()
	for i := range items {
		if name(&items[i]) == want {
			return &items[i]
		}
	}
	t.Fatalf("no object named %s", want)
	return nil
}

func formationNamed(t *testing.T, fs []cellosv1.Formation, id string) *cellosv1.Formation {
	t.Helper()
	return find(t, fs, func(f *cellosv1.Formation) string { return f.Name }, store.ObjectName(id))
}

func cellNamed(t *testing.T, cs []cellosv1.Cell, id string) *cellosv1.Cell {
	t.Helper()
	return find(t, cs, func(c *cellosv1.Cell) string { return c.Name }, store.ObjectName(id))
}

// The objects the operator would write match; each way a status or an
// object can be wrong is caught, with a line naming the object.
func TestCompareCatchesWhatItMust(t *testing.T) {
	want := expectation()
	formations, cells := objects(t, want)
	if len(formations) != 2 || len(cells) != 3 {
		t.Fatalf("the fold has %d formations and %d cells, want 2 and 3", len(formations), len(cells))
	}
	if bad := harness.Compare(formations, cells, want); len(bad) != 0 {
		t.Fatalf("the statuses the builders make differ from the fold:\n%s", strings.Join(bad, "\n"))
	}
	otherStream := store.Stream{Name: want.Stream.Name, Created: want.Stream.Created.Add(time.Hour)}
	seven := int32(7)
	for _, tc := range []struct {
		name string
		edit func(fs []cellosv1.Formation, cs []cellosv1.Cell) ([]cellosv1.Formation, []cellosv1.Cell)
		// lines are what the report must say, one line per object.
		lines []string
	}{
		{"a formation's phase", func(fs []cellosv1.Formation, cs []cellosv1.Cell) ([]cellosv1.Formation, []cellosv1.Cell) {
			formationNamed(t, fs, formationA).Status.Phase = cellosv1.FormationRunning
			return fs, cs
		}, []string{"formation " + formationA}},
		{"a formation's name", func(fs []cellosv1.Formation, cs []cellosv1.Cell) ([]cellosv1.Formation, []cellosv1.Cell) {
			formationNamed(t, fs, formationB).Status.FormationName = "gamma"
			return fs, cs
		}, []string{"formation " + formationB}},
		{"a formation's sequence moved back under a valid stamp", func(fs []cellosv1.Formation, cs []cellosv1.Cell) ([]cellosv1.Formation, []cellosv1.Cell) {
			s := &formationNamed(t, fs, formationA).Status
			s.LastAppliedSequence--
			s.StreamStamp = store.Stamp(want.Stream, store.Ref{Kind: store.FormationKind, ID: formationA}, uint64(s.LastAppliedSequence))
			return fs, cs
		}, []string{"formation " + formationA}},
		{"a formation stamped by another stream", func(fs []cellosv1.Formation, cs []cellosv1.Cell) ([]cellosv1.Formation, []cellosv1.Cell) {
			s := &formationNamed(t, fs, formationB).Status
			s.StreamStamp = store.Stamp(otherStream, store.Ref{Kind: store.FormationKind, ID: formationB}, uint64(s.LastAppliedSequence))
			return fs, cs
		}, []string{"formation " + formationB}},
		{"a formation's cell counts", func(fs []cellosv1.Formation, cs []cellosv1.Cell) ([]cellosv1.Formation, []cellosv1.Cell) {
			formationNamed(t, fs, formationA).Status.CellCounts.Running++
			return fs, cs
		}, []string{"formation " + formationA}},
		{"a formation's document", func(fs []cellosv1.Formation, cs []cellosv1.Cell) ([]cellosv1.Formation, []cellosv1.Cell) {
			formationNamed(t, fs, formationA).Status.Document.Raw = []byte(`{"formationName":"alpha"}`)
			return fs, cs
		}, []string{"formation " + formationA + ": document"}},
		{"a formation under another object name", func(fs []cellosv1.Formation, cs []cellosv1.Cell) ([]cellosv1.Formation, []cellosv1.Cell) {
			formationNamed(t, fs, formationB).Name = "beta"
			return fs, cs
		}, []string{"formation " + formationB}},
		{"a formation on two Formations", func(fs []cellosv1.Formation, cs []cellosv1.Cell) ([]cellosv1.Formation, []cellosv1.Cell) {
			twin := *formationNamed(t, fs, formationB)
			twin.Name = "twin"
			return append(fs, twin), cs
		}, []string{"formation " + formationB + ": on 2 Formations"}},
		{"a formation on none", func(fs []cellosv1.Formation, cs []cellosv1.Cell) ([]cellosv1.Formation, []cellosv1.Cell) {
			return []cellosv1.Formation{*formationNamed(t, fs, formationA)}, cs
		}, []string{"formation " + formationB + ": on 0 Formations"}},
		{"a cell's state and outcome", func(fs []cellosv1.Formation, cs []cellosv1.Cell) ([]cellosv1.Formation, []cellosv1.Cell) {
			s := &cellNamed(t, cs, "cell-a0").Status
			s.State, s.DestroyedAt, s.Outcome = cellosv1.CellRunning, nil, ""
			return fs, cs
		}, []string{`cell "cell-a0"`}},
		{"a cell's start time", func(fs []cellosv1.Formation, cs []cellosv1.Cell) ([]cellosv1.Formation, []cellosv1.Cell) {
			s := &cellNamed(t, cs, "cell-a1").Status
			s.StartedAt = &metav1.Time{Time: s.StartedAt.Add(time.Second)}
			return fs, cs
		}, []string{`cell "cell-a1"`}},
		{"a cell's exit code", func(fs []cellosv1.Formation, cs []cellosv1.Cell) ([]cellosv1.Formation, []cellosv1.Cell) {
			cellNamed(t, cs, "cell-a0").Status.ExitCode = &seven
			return fs, cs
		}, []string{`cell "cell-a0"`}},
		{"a cell's run and spec", func(fs []cellosv1.Formation, cs []cellosv1.Cell) ([]cellosv1.Formation, []cellosv1.Cell) {
			s := &cellNamed(t, cs, "cell-a1").Status
			s.RunID, s.SpecID = "run-x", "spec-x"
			return fs, cs
		}, []string{`cell "cell-a1"`}},
		{"a cell's formation", func(fs []cellosv1.Formation, cs []cellosv1.Cell) ([]cellosv1.Formation, []cellosv1.Cell) {
			cellNamed(t, cs, "loose").Status.FormationID = formationB
			return fs, cs
		}, []string{`cell "loose"`}},
		{"a cell's sequence moved back under a valid stamp", func(fs []cellosv1.Formation, cs []cellosv1.Cell) ([]cellosv1.Formation, []cellosv1.Cell) {
			s := &cellNamed(t, cs, "cell-a0").Status
			s.LastAppliedSequence--
			s.StreamStamp = store.Stamp(want.Stream, store.Ref{Kind: store.CellKind, ID: "cell-a0"}, uint64(s.LastAppliedSequence))
			return fs, cs
		}, []string{`cell "cell-a0"`}},
		{"a cell stamped by another stream", func(fs []cellosv1.Formation, cs []cellosv1.Cell) ([]cellosv1.Formation, []cellosv1.Cell) {
			s := &cellNamed(t, cs, "loose").Status
			s.StreamStamp = store.Stamp(otherStream, store.Ref{Kind: store.CellKind, ID: "loose"}, uint64(s.LastAppliedSequence))
			return fs, cs
		}, []string{`cell "loose"`}},
		{"a cell without a status", func(fs []cellosv1.Formation, cs []cellosv1.Cell) ([]cellosv1.Formation, []cellosv1.Cell) {
			cellNamed(t, cs, "loose").Status = cellosv1.CellStatus{}
			return fs, cs
		}, []string{"Cell loose has no status", `cell "loose": on 0 Cells`}},
		{"a cell whose status names another cell", func(fs []cellosv1.Formation, cs []cellosv1.Cell) ([]cellosv1.Formation, []cellosv1.Cell) {
			cellNamed(t, cs, "loose").Status.CellID = "cell-a1"
			return fs, cs
		}, []string{`cell "cell-a1": on 2 Cells`, `cell "loose": on 0 Cells`}},
		{"an extra Cell", func(fs []cellosv1.Formation, cs []cellosv1.Cell) ([]cellosv1.Formation, []cellosv1.Cell) {
			extra := cellosv1.Cell{ObjectMeta: metav1.ObjectMeta{Name: "ghost"}}
			extra.Status = cellosv1.CellStatus{CellID: "ghost", LastAppliedSequence: 1, StreamStamp: store.Stamp(want.Stream, store.Ref{Kind: store.CellKind, ID: "ghost"}, 1)}
			return fs, append(cs, extra)
		}, []string{`extra Cell of cell "ghost"`}},
		{"an extra Formation", func(fs []cellosv1.Formation, cs []cellosv1.Cell) ([]cellosv1.Formation, []cellosv1.Cell) {
			extra := cellosv1.Formation{ObjectMeta: metav1.ObjectMeta{Name: "declared", Labels: map[string]string{cellosv1.FormationIDLabel: "e7a1a2b3-0000-4000-8000-000000000000"}}}
			return append(fs, extra), cs
		}, []string{`extra Formation of formation "e7a1a2b3-0000-4000-8000-000000000000"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs, cs := objects(t, want)
			fs, cs = tc.edit(fs, cs)
			bad := harness.Compare(fs, cs, want)
			if len(bad) != len(tc.lines) {
				t.Fatalf("%d differences, want %d (%q):\n%s", len(bad), len(tc.lines), tc.lines, strings.Join(bad, "\n"))
			}
			for i, line := range tc.lines {
				if !strings.HasPrefix(bad[i], line) {
					t.Errorf("difference %d is %q, want one starting %q", i, bad[i], line)
				}
			}
		})
	}
}

// An object of an id only an earlier stream named (Leftover) is allowed
// exactly as that stream's fold has it, with whatever cell counts it has;
// not otherwise.
func TestCompareLeftovers(t *testing.T) {
	old := expectation()
	oldFormations, cells := objects(t, old)
	// The current stream holds the last event alone, formation A's
	// completion: every Cell, and formation B, are left from the old one.
	now := harness.Expect(harness.Snapshot{Stream: testStream, First: 10, Last: 10, Messages: events()[9:]})
	nowFormations, _ := objects(t, now)
	// Formation A counts what the current stream says of its cells: none.
	formations := append(nowFormations, *formationNamed(t, oldFormations, formationB))

	if bad := harness.Compare(formations, cells, now); len(bad) != 4 {
		t.Errorf("without Leftover, %d differences, want the extra Formation and the 3 extra Cells:\n%s", len(bad), strings.Join(bad, "\n"))
	}
	now.Leftover = &old
	if bad := harness.Compare(formations, cells, now); len(bad) != 0 {
		t.Errorf("leftovers as the old stream has them are not allowed:\n%s", strings.Join(bad, "\n"))
	}
	formationNamed(t, formations, formationB).Status.CellCounts.Running = 5
	if bad := harness.Compare(formations, cells, now); len(bad) != 0 {
		t.Errorf("a leftover Formation may not keep its cell counts:\n%s", strings.Join(bad, "\n"))
	}
	formationNamed(t, formations, formationA).Status.CellCounts.Running++
	cellNamed(t, cells, "loose").Status.State = cellosv1.CellDestroyed
	if bad := harness.Compare(formations, cells, now); len(bad) != 2 || !strings.HasPrefix(bad[0], `cell "loose"`) || !strings.HasPrefix(bad[1], "formation "+formationA) {
		t.Errorf("a leftover Cell unlike the old stream's fold, and wrong counts on a current Formation: %q, want a line for each", bad)
	}
}

// ReadStream reads back every message a stream holds, headers included,
// from its first sequence after a purge, with the stream's identity; and
// Expect folds them as Fold does.
func TestReadStream(t *testing.T) {
	js := localenv.StartJetStream(t)
	_, jsc := js.Connect(t)
	ctx := context.Background()
	s, err := jetstream.EnsureStream(ctx, jsc, "CELLOS_EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	msgs := events()
	for _, m := range msgs {
		msg := &nats.Msg{Subject: m.Subject, Data: m.Data}
		if m.Seq == 2 {
			msg.Header = nats.Header{"Ce-Extra": []string{"yes"}}
		}
		if _, err := jsc.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Purge(ctx, natsjs.WithPurgeSequence(2)); err != nil {
		t.Fatal(err)
	}
	snap, err := harness.ReadStream(ctx, jsc, "CELLOS_EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if snap.Stream.Name != "CELLOS_EVENTS" || !snap.Stream.Created.Equal(info.Created) || snap.First != 2 || snap.Last != 10 || len(snap.Messages) != 9 {
		t.Fatalf("read %s created %s, sequences %d to %d, %d messages; want CELLOS_EVENTS created %s, 2 to 10, 9 messages",
			snap.Stream.Name, snap.Stream.Created, snap.First, snap.Last, len(snap.Messages), info.Created)
	}
	for i, m := range snap.Messages {
		if m.Seq != msgs[i+1].Seq || m.Subject != msgs[i+1].Subject || string(m.Data) != string(msgs[i+1].Data) {
			t.Errorf("message %d is %d %s %q, want %d %s %q", i, m.Seq, m.Subject, m.Data, msgs[i+1].Seq, msgs[i+1].Subject, msgs[i+1].Data)
		}
		if got := m.Header["Ce-Extra"]; (m.Seq == 2) != (len(got) == 1) {
			t.Errorf("message %d has header %v", m.Seq, m.Header)
		}
	}
	want, _ := harness.Fold(snap.Messages)
	got := harness.Expect(snap)
	if got.Last != 10 || got.Stream != snap.Stream || len(got.State.Cells) != len(want.Cells) || len(got.State.Formations) != 2 {
		t.Errorf("Expect is %+v, want the fold of the snapshot", got)
	}
	if got.Cursor().Sequence != 10 || got.Cursor().Stream != "CELLOS_EVENTS" || !got.Cursor().StreamCreated.Equal(info.Created) {
		t.Errorf("the cursor to reach is %+v", got.Cursor())
	}
}
