package fold

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
	"unsafe"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
)

const (
	fid      = "02daa0b3-49a7-a4bf-8050-cbb812881d4e"
	fidUpper = "02DAA0B3-49A7-A4BF-8050-CBB812881D4E"
	fid2     = "9974d75b-3338-24fe-6179-0134676b1b69"

	tStarted   = "dev.cellos.events.cell.lifecycle.v1.started"
	tCompleted = "dev.cellos.events.cell.command.v1.completed"
	tDestroyed = "dev.cellos.events.cell.lifecycle.v1.destroyed"
	tFormation = "dev.cellos.events.cell.formation.v1."
	tLegacy    = "io.cellos.formation.v1."

	t1 = "2026-11-13T13:52:23Z"
	t2 = "2026-11-14T10:00:00.5Z"
)

// Payload builders: each returns one raw member, obj joins them, so a case
// shows exactly which members its event has.
func obj(members ...string) string { return "{" + strings.Join(members, ",") + "}" }
func typ(t string) string          { return `"type":` + quote(t) }
func id(s string) string           { return `"id":` + quote(s) }
func tm(s string) string           { return `"time":` + quote(s) }
func subj(s string) string         { return `"subject":` + quote(s) }
func data(raw string) string       { return `"data":` + raw }
func quote(s string) string        { b, _ := json.Marshal(s); return string(b) }

// binary returns the header of a binary-mode event of type t, with further
// attribute headers given as name, value pairs.
func binary(t string, nameValues ...string) map[string][]string {
	h := map[string][]string{"ce-specversion": {"1.0"}, "ce-type": {t}}
	for i := 0; i+1 < len(nameValues); i += 2 {
		h[nameValues[i]] = []string{nameValues[i+1]}
	}
	return h
}

func ts(s string) *time.Time {
	v, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	v = v.UTC()
	return &v
}

func code(c int32) *int32 { return &c }

type step struct {
	seq     uint64
	payload string
}

// Shared fixtures of the Apply tables: a started event for cell c1 of
// formation fid, a created event for that formation, and what each folds to
// at sequence 1.
var (
	startedEvent     = obj(id("e1"), typ(tStarted), tm(t1), data(`{"cellId":"c1","specId":"s1","runId":"r1","formationId":"`+fid+`"}`))
	createdEvent     = obj(id("f1"), typ(tFormation+"created"), tm(t1), data(`{"formationId":"`+fid+`","formationName":"one"}`))
	runningCell      = &Cell{ID: "c1", SpecID: "s1", RunID: "r1", FormationID: fid, State: cellosv1.CellRunning, StartedAt: ts(t1), LastAppliedSequence: 1}
	pendingFormation = &Formation{ID: fid, Name: "one", Phase: cellosv1.FormationPending, Document: json.RawMessage(`{"formationId":"` + fid + `","formationName":"one"}`), LastAppliedSequence: 1}
)

// applyCase is one row of the Apply tables: events folded first (before),
// then one event whose Outcome and resulting State are checked.
type applyCase struct {
	name       string
	before     []step
	seq        uint64
	header     map[string][]string // nil: structured content mode
	payload    string
	want       Outcome // Reason is checked with wantReason instead
	wantReason string  // substring of Outcome.Reason; "" requires it empty
	formations map[string]*Formation
	cells      map[string]*Cell
}

// TestApplyNotCloudEvents checks that a payload that is not a JSON object,
// and so no CloudEvent, is rejected.
func TestApplyNotCloudEvents(t *testing.T) {
	runApply(t, []applyCase{
		{
			name: "not JSON is rejected", seq: 1, payload: "not json at all",
			want: Outcome{Seq: 1, Result: ResultRejected, Family: FamilyOther}, wantReason: "payload is not JSON",
		},
		{
			name: "truncated JSON is rejected", seq: 2, payload: `{"type": "` + tStarted + `", "data": {"cellId": "trunc`,
			want: Outcome{Seq: 2, Result: ResultRejected, Family: FamilyOther}, wantReason: "payload is not JSON",
		},
		{
			name: "JSON array is rejected", seq: 3, payload: `[1,2,3]`,
			want: Outcome{Seq: 3, Result: ResultRejected, Family: FamilyOther}, wantReason: "payload is a JSON array, not an object",
		},
		{
			name: "JSON string is rejected", seq: 3, payload: `"x"`,
			want: Outcome{Seq: 3, Result: ResultRejected, Family: FamilyOther}, wantReason: "not an object",
		},
		{
			name: "JSON null is rejected", seq: 3, payload: `null`,
			want: Outcome{Seq: 3, Result: ResultRejected, Family: FamilyOther}, wantReason: "not an object",
		},
	})
}

// TestApplyUnownedTypes checks that an event whose type the projection does
// not own is ignored, never rejected.
func TestApplyUnownedTypes(t *testing.T) {
	runApply(t, []applyCase{
		{
			name: "unknown type is ignored", seq: 4, payload: obj(id("x1"), typ("dev.cellos.events.cell.identity.v1.materialized"), data(`{"cellId":"ghost"}`)),
			want: Outcome{Seq: 4, Result: ResultIgnored, Family: FamilyOther, EventID: "x1"}, wantReason: "is not projected",
		},
		{
			name: "numeric type is ignored, not rejected", seq: 5, payload: `{"type": 42, "data": "str"}`,
			want: Outcome{Seq: 5, Result: ResultIgnored, Family: FamilyOther}, wantReason: "no string type",
		},
		{
			name: "absent type is ignored", seq: 5, payload: obj(data(`{"cellId":"c1"}`)),
			want: Outcome{Seq: 5, Result: ResultIgnored, Family: FamilyOther}, wantReason: "no string type",
		},
		{
			name: "empty object is ignored", seq: 5, payload: `{}`,
			want: Outcome{Seq: 5, Result: ResultIgnored, Family: FamilyOther}, wantReason: "no string type",
		},
		{
			name: "cell type with a suffix is not a cell type", seq: 5, payload: obj(typ(tStarted+".v2"), data(`{"cellId":"c1"}`)),
			want: Outcome{Seq: 5, Result: ResultIgnored, Family: FamilyOther}, wantReason: "is not projected",
		},
		{
			name: "types are case-sensitive", seq: 5, payload: obj(typ(strings.ToUpper(tStarted)), data(`{"cellId":"c1"}`)),
			want: Outcome{Seq: 5, Result: ResultIgnored, Family: FamilyOther}, wantReason: "is not projected",
		},
		{
			name: "formation prefix without its trailing dot is not a formation type", seq: 5,
			payload: obj(typ("dev.cellos.events.cell.formation.v1"), data(`{"formationId":"`+fid+`"}`)),
			want:    Outcome{Seq: 5, Result: ResultIgnored, Family: FamilyOther}, wantReason: "is not projected",
		},
	})
}

// TestApplyCellEvents checks how cell events build and update Cells: state,
// times, exit codes, outcome, identity facts and per-cell sequences.
func TestApplyCellEvents(t *testing.T) {
	runApply(t, []applyCase{
		{
			name: "started creates a running cell", seq: 1, payload: startedEvent,
			want:  Outcome{Seq: 1, Result: ResultApplied, Family: FamilyCell, EventID: "e1", CellID: "c1"},
			cells: map[string]*Cell{"c1": runningCell},
		},
		{
			name: "started without time clears startedAt", before: []step{{1, startedEvent}}, seq: 2,
			payload: obj(typ(tStarted), data(`{"cellId":"c1"}`)),
			want:    Outcome{Seq: 2, Result: ResultApplied, Family: FamilyCell, CellID: "c1"},
			cells:   map[string]*Cell{"c1": {ID: "c1", SpecID: "s1", RunID: "r1", FormationID: fid, State: cellosv1.CellRunning, LastAppliedSequence: 2}},
		},
		{
			name: "started with an unparsable time has no startedAt", seq: 2,
			payload: obj(typ(tStarted), tm("26 Nov 2026"), data(`{"cellId":"c1"}`)),
			want:    Outcome{Seq: 2, Result: ResultApplied, Family: FamilyCell, CellID: "c1"},
			cells:   map[string]*Cell{"c1": {ID: "c1", State: cellosv1.CellRunning, LastAppliedSequence: 2}},
		},
		{
			name: "started with fractional seconds", seq: 2,
			payload: obj(typ(tStarted), tm(t2), data(`{"cellId":"c1"}`)),
			want:    Outcome{Seq: 2, Result: ResultApplied, Family: FamilyCell, CellID: "c1"},
			cells:   map[string]*Cell{"c1": {ID: "c1", State: cellosv1.CellRunning, StartedAt: ts(t2), LastAppliedSequence: 2}},
		},
		{
			name:    "started after destroyed runs again and keeps destroyedAt",
			before:  []step{{1, startedEvent}, {2, obj(typ(tDestroyed), tm(t2), data(`{"cellId":"c1","outcome":"failed"}`))}},
			seq:     3,
			payload: obj(typ(tStarted), tm(t1), data(`{"cellId":"c1"}`)),
			want:    Outcome{Seq: 3, Result: ResultApplied, Family: FamilyCell, CellID: "c1"},
			cells:   map[string]*Cell{"c1": {ID: "c1", SpecID: "s1", RunID: "r1", FormationID: fid, State: cellosv1.CellRunning, StartedAt: ts(t1), DestroyedAt: ts(t2), Outcome: "failed", LastAppliedSequence: 3}},
		},
		{
			name: "completed first creates a pending cell with its exit code", seq: 7,
			payload: obj(typ(tCompleted), tm(t1), data(`{"cellId":"only-completed","exitCode":3}`)),
			want:    Outcome{Seq: 7, Result: ResultApplied, Family: FamilyCell, CellID: "only-completed"},
			cells:   map[string]*Cell{"only-completed": {ID: "only-completed", State: cellosv1.CellPending, ExitCode: code(3), LastAppliedSequence: 7}},
		},
		{
			name: "completed leaves a running cell running", before: []step{{1, startedEvent}}, seq: 2,
			payload: obj(typ(tCompleted), tm(t2), data(`{"cellId":"c1","exitCode":0}`)),
			want:    Outcome{Seq: 2, Result: ResultApplied, Family: FamilyCell, CellID: "c1"},
			cells:   map[string]*Cell{"c1": {ID: "c1", SpecID: "s1", RunID: "r1", FormationID: fid, State: cellosv1.CellRunning, StartedAt: ts(t1), ExitCode: code(0), LastAppliedSequence: 2}},
		},
		{
			name: "completed with a negative exit code", seq: 2,
			payload: obj(typ(tCompleted), data(`{"cellId":"c1","exitCode":-9}`)),
			want:    Outcome{Seq: 2, Result: ResultApplied, Family: FamilyCell, CellID: "c1"},
			cells:   map[string]*Cell{"c1": {ID: "c1", State: cellosv1.CellPending, ExitCode: code(-9), LastAppliedSequence: 2}},
		},
		{
			name:    "later exit code replaces the earlier one",
			before:  []step{{1, obj(typ(tCompleted), data(`{"cellId":"c1","exitCode":1}`))}},
			seq:     2,
			payload: obj(typ(tCompleted), data(`{"cellId":"c1","exitCode":2}`)),
			want:    Outcome{Seq: 2, Result: ResultApplied, Family: FamilyCell, CellID: "c1"},
			cells:   map[string]*Cell{"c1": {ID: "c1", State: cellosv1.CellPending, ExitCode: code(2), LastAppliedSequence: 2}},
		},
		{
			name: "fractional exit code is not an exit code but the event applies", seq: 2,
			payload: obj(typ(tCompleted), data(`{"cellId":"c1","exitCode":1.5}`)),
			want:    Outcome{Seq: 2, Result: ResultApplied, Family: FamilyCell, CellID: "c1"},
			cells:   map[string]*Cell{"c1": {ID: "c1", State: cellosv1.CellPending, LastAppliedSequence: 2}},
		},
		{
			name:    "3.0 is not an integer and keeps the earlier exit code",
			before:  []step{{1, obj(typ(tCompleted), data(`{"cellId":"c1","exitCode":1}`))}},
			seq:     2,
			payload: obj(typ(tCompleted), data(`{"cellId":"c1","exitCode":3.0}`)),
			want:    Outcome{Seq: 2, Result: ResultApplied, Family: FamilyCell, CellID: "c1"},
			cells:   map[string]*Cell{"c1": {ID: "c1", State: cellosv1.CellPending, ExitCode: code(1), LastAppliedSequence: 2}},
		},
		{
			name: "string exit code is not an exit code", seq: 2,
			payload: obj(typ(tCompleted), data(`{"cellId":"c1","exitCode":"3"}`)),
			want:    Outcome{Seq: 2, Result: ResultApplied, Family: FamilyCell, CellID: "c1"},
			cells:   map[string]*Cell{"c1": {ID: "c1", State: cellosv1.CellPending, LastAppliedSequence: 2}},
		},
		{
			name: "exit code beyond int32 wraps, as the reference's as i32", seq: 2,
			payload: obj(typ(tCompleted), data(`{"cellId":"c1","exitCode":4294967297}`)),
			want:    Outcome{Seq: 2, Result: ResultApplied, Family: FamilyCell, CellID: "c1"},
			cells:   map[string]*Cell{"c1": {ID: "c1", State: cellosv1.CellPending, ExitCode: code(1), LastAppliedSequence: 2}},
		},
		{
			name: "exit code beyond int64 is not an exit code", seq: 2,
			payload: obj(typ(tCompleted), data(`{"cellId":"c1","exitCode":9223372036854775808}`)),
			want:    Outcome{Seq: 2, Result: ResultApplied, Family: FamilyCell, CellID: "c1"},
			cells:   map[string]*Cell{"c1": {ID: "c1", State: cellosv1.CellPending, LastAppliedSequence: 2}},
		},
		{
			name: "destroyed sets state, time and outcome", before: []step{{1, startedEvent}}, seq: 2,
			payload: obj(id("e2"), typ(tDestroyed), tm(t2), data(`{"cellId":"c1","specId":"s1","runId":"r1","outcome":"succeeded","terminalState":"forced"}`)),
			want:    Outcome{Seq: 2, Result: ResultApplied, Family: FamilyCell, EventID: "e2", CellID: "c1"},
			cells:   map[string]*Cell{"c1": {ID: "c1", SpecID: "s1", RunID: "r1", FormationID: fid, State: cellosv1.CellDestroyed, StartedAt: ts(t1), DestroyedAt: ts(t2), Outcome: "succeeded", LastAppliedSequence: 2}},
		},
		{
			name:    "destroyed without outcome keeps the earlier one",
			before:  []step{{1, obj(typ(tDestroyed), tm(t1), data(`{"cellId":"c1","outcome":"failed"}`))}},
			seq:     2,
			payload: obj(typ(tDestroyed), data(`{"cellId":"c1","outcome":7}`)),
			want:    Outcome{Seq: 2, Result: ResultApplied, Family: FamilyCell, CellID: "c1"},
			cells:   map[string]*Cell{"c1": {ID: "c1", State: cellosv1.CellDestroyed, Outcome: "failed", LastAppliedSequence: 2}},
		},
		{
			name:    "destroyed with an empty outcome string sets it empty, as the reference does",
			before:  []step{{1, obj(typ(tDestroyed), tm(t1), data(`{"cellId":"c1","outcome":"failed"}`))}},
			seq:     2,
			payload: obj(typ(tDestroyed), tm(t1), data(`{"cellId":"c1","outcome":""}`)),
			want:    Outcome{Seq: 2, Result: ResultApplied, Family: FamilyCell, CellID: "c1"},
			cells:   map[string]*Cell{"c1": {ID: "c1", State: cellosv1.CellDestroyed, DestroyedAt: ts(t1), LastAppliedSequence: 2}},
		},
		{
			name: "destroyed first creates the cell destroyed", seq: 4,
			payload: obj(typ(tDestroyed), tm(t1), data(`{"cellId":"c1","outcome":"failed"}`)),
			want:    Outcome{Seq: 4, Result: ResultApplied, Family: FamilyCell, CellID: "c1"},
			cells:   map[string]*Cell{"c1": {ID: "c1", State: cellosv1.CellDestroyed, DestroyedAt: ts(t1), Outcome: "failed", LastAppliedSequence: 4}},
		},
		{
			name: "cell event without cellId is ignored", seq: 5,
			payload: obj(id("e5"), typ(tStarted), tm(t1), data(`{"specId":"no-cell-id"}`)),
			want:    Outcome{Seq: 5, Result: ResultIgnored, Family: FamilyCell, EventID: "e5"}, wantReason: "data.cellId",
		},
		{
			name: "cell event with a numeric cellId is ignored", seq: 5,
			payload: obj(typ(tDestroyed), data(`{"cellId":12}`)),
			want:    Outcome{Seq: 5, Result: ResultIgnored, Family: FamilyCell}, wantReason: "data.cellId",
		},
		{
			name: "cell event without data is ignored", seq: 5, payload: obj(typ(tCompleted)),
			want: Outcome{Seq: 5, Result: ResultIgnored, Family: FamilyCell}, wantReason: "data.cellId",
		},
		{
			name: "cell event whose data is not an object is ignored", seq: 5, payload: obj(typ(tCompleted), data(`"cellId"`)),
			want: Outcome{Seq: 5, Result: ResultIgnored, Family: FamilyCell}, wantReason: "data.cellId",
		},
		{
			name: "empty cellId is still a key, as in the reference", seq: 5,
			payload: obj(typ(tStarted), data(`{"cellId":""}`)),
			want:    Outcome{Seq: 5, Result: ResultApplied, Family: FamilyCell, CellID: ""},
			cells:   map[string]*Cell{"": {ID: "", State: cellosv1.CellRunning, LastAppliedSequence: 5}},
		},
		{
			name: "cell ids are exact, not normalised", before: []step{{1, startedEvent}}, seq: 2,
			payload: obj(typ(tStarted), data(`{"cellId":"C1"}`)),
			want:    Outcome{Seq: 2, Result: ResultApplied, Family: FamilyCell, CellID: "C1"},
			cells:   map[string]*Cell{"c1": runningCell, "C1": {ID: "C1", State: cellosv1.CellRunning, LastAppliedSequence: 2}},
		},
		{
			name:    "a lone surrogate in a cell id rejects the payload rather than merging it into the U+FFFD cell",
			before:  []step{{1, obj(typ(tStarted), data(`{"cellId":"\ufffd"}`))}},
			seq:     2,
			payload: obj(typ(tDestroyed), data(`{"cellId":"\ud800"}`)),
			want:    Outcome{Seq: 2, Result: ResultRejected, Family: FamilyOther}, wantReason: "lone UTF-16 surrogate",
			cells: map[string]*Cell{"\ufffd": {ID: "\ufffd", State: cellosv1.CellRunning, LastAppliedSequence: 1}},
		},
		{
			name: "a lone surrogate anywhere in the payload rejects it", seq: 2,
			payload: obj(typ(tStarted), data(`{"cellId":"c1","labels":{"\udc00":"x"}}`)),
			want:    Outcome{Seq: 2, Result: ResultRejected, Family: FamilyOther}, wantReason: "lone UTF-16 surrogate",
		},
		{
			name: "a surrogate pair in a cell id is one character", seq: 2,
			payload: obj(typ(tStarted), data(`{"cellId":"\ud83d\ude00"}`)),
			want:    Outcome{Seq: 2, Result: ResultApplied, Family: FamilyCell, CellID: "😀"},
			cells:   map[string]*Cell{"😀": {ID: "😀", State: cellosv1.CellRunning, LastAppliedSequence: 2}},
		},
		{
			name: "data_base64 carries the data when there is no data member", seq: 2,
			payload: obj(typ(tStarted), `"data_base64":"`+base64.StdEncoding.EncodeToString([]byte(`{"cellId":"c1"}`))+`"`),
			want:    Outcome{Seq: 2, Result: ResultApplied, Family: FamilyCell, CellID: "c1"},
			cells:   map[string]*Cell{"c1": {ID: "c1", State: cellosv1.CellRunning, LastAppliedSequence: 2}},
		},
		{
			name: "data_base64 that is not JSON is no data", seq: 2,
			payload: obj(typ(tStarted), `"data_base64":"`+base64.StdEncoding.EncodeToString([]byte(`cellId=c1`))+`"`),
			want:    Outcome{Seq: 2, Result: ResultIgnored, Family: FamilyCell}, wantReason: "data.cellId",
		},
		{
			name:    "specId, runId and formationId fill in when first known",
			before:  []step{{1, obj(typ(tCompleted), data(`{"cellId":"c1","exitCode":0,"specId":"","formationId":"nope"}`))}},
			seq:     2,
			payload: obj(typ(tDestroyed), data(`{"cellId":"c1","specId":"s1","runId":"r1","formationId":"{`+fidUpper+`}"}`)),
			want:    Outcome{Seq: 2, Result: ResultApplied, Family: FamilyCell, CellID: "c1"},
			cells:   map[string]*Cell{"c1": {ID: "c1", SpecID: "s1", RunID: "r1", FormationID: fid, State: cellosv1.CellDestroyed, ExitCode: code(0), LastAppliedSequence: 2}},
		},
		{
			name: "specId, runId and formationId are never overwritten", before: []step{{1, startedEvent}}, seq: 2,
			payload: obj(typ(tDestroyed), tm(t2), data(`{"cellId":"c1","specId":"s2","runId":"r2","formationId":"`+fid2+`"}`)),
			want:    Outcome{Seq: 2, Result: ResultApplied, Family: FamilyCell, CellID: "c1"},
			cells:   map[string]*Cell{"c1": {ID: "c1", SpecID: "s1", RunID: "r1", FormationID: fid, State: cellosv1.CellDestroyed, StartedAt: ts(t1), DestroyedAt: ts(t2), LastAppliedSequence: 2}},
		},
		{
			name:    "a cell's formationId in a form the reference refuses stays unknown until a valid one",
			before:  []step{{1, obj(typ(tStarted), data(`{"cellId":"c1","formationId":"(`+fid+`)"}`))}},
			seq:     2,
			payload: obj(typ(tDestroyed), data(`{"cellId":"c1","formationId":"urn:uuid:`+fidUpper+`"}`)),
			want:    Outcome{Seq: 2, Result: ResultApplied, Family: FamilyCell, CellID: "c1"},
			cells:   map[string]*Cell{"c1": {ID: "c1", FormationID: fid, State: cellosv1.CellDestroyed, LastAppliedSequence: 2}},
		},
		{
			name: "a cell's formationId in upper-case urn form is no formation", seq: 2,
			payload: obj(typ(tStarted), data(`{"cellId":"c1","formationId":"URN:UUID:`+fid+`"}`)),
			want:    Outcome{Seq: 2, Result: ResultApplied, Family: FamilyCell, CellID: "c1"},
			cells:   map[string]*Cell{"c1": {ID: "c1", State: cellosv1.CellRunning, LastAppliedSequence: 2}},
		},
		{
			name: "non-string specId and runId are unknown", seq: 2,
			payload: obj(typ(tStarted), data(`{"cellId":"c1","specId":1,"runId":null,"formationId":7}`)),
			want:    Outcome{Seq: 2, Result: ResultApplied, Family: FamilyCell, CellID: "c1"},
			cells:   map[string]*Cell{"c1": {ID: "c1", State: cellosv1.CellRunning, LastAppliedSequence: 2}},
		},
		{
			name: "cell event at the applied sequence is skipped", before: []step{{1, startedEvent}}, seq: 1,
			payload: obj(typ(tDestroyed), tm(t2), data(`{"cellId":"c1","outcome":"failed"}`)),
			want:    Outcome{Seq: 1, Result: ResultSkipped, Family: FamilyCell}, wantReason: `cell "c1" already at sequence 1`,
			cells: map[string]*Cell{"c1": runningCell},
		},
		{
			name: "cell event below the applied sequence is skipped", before: []step{{5, startedEvent}}, seq: 3,
			payload: obj(typ(tCompleted), data(`{"cellId":"c1","exitCode":1}`)),
			want:    Outcome{Seq: 3, Result: ResultSkipped, Family: FamilyCell}, wantReason: "already at sequence 5",
			cells: map[string]*Cell{"c1": {ID: "c1", SpecID: "s1", RunID: "r1", FormationID: fid, State: cellosv1.CellRunning, StartedAt: ts(t1), LastAppliedSequence: 5}},
		},
		{
			name:    "the same event re-published under a higher sequence applies again",
			before:  []step{{1, startedEvent}, {2, obj(typ(tDestroyed), tm(t2), data(`{"cellId":"c1"}`))}},
			seq:     3,
			payload: startedEvent,
			want:    Outcome{Seq: 3, Result: ResultApplied, Family: FamilyCell, EventID: "e1", CellID: "c1"},
			cells:   map[string]*Cell{"c1": {ID: "c1", SpecID: "s1", RunID: "r1", FormationID: fid, State: cellosv1.CellRunning, StartedAt: ts(t1), DestroyedAt: ts(t2), LastAppliedSequence: 3}},
		},
		{
			name:   "cell event for another cell is not skipped by this one's sequence",
			before: []step{{4, obj(typ(tStarted), tm(t1), data(`{"cellId":"c2"}`))}, {9, startedEvent}}, seq: 6,
			payload: obj(typ(tStarted), tm(t1), data(`{"cellId":"c2"}`)),
			want:    Outcome{Seq: 6, Result: ResultApplied, Family: FamilyCell, CellID: "c2"},
			cells: map[string]*Cell{
				"c1": {ID: "c1", SpecID: "s1", RunID: "r1", FormationID: fid, State: cellosv1.CellRunning, StartedAt: ts(t1), LastAppliedSequence: 9},
				"c2": {ID: "c2", State: cellosv1.CellRunning, StartedAt: ts(t1), LastAppliedSequence: 6},
			},
		},
		{
			name: "an event below the fold's sequence does not bring back a cell it does not hold", before: []step{{9, startedEvent}}, seq: 4,
			payload: obj(typ(tStarted), tm(t1), data(`{"cellId":"c2"}`)),
			want:    Outcome{Seq: 4, Result: ResultSkipped, Family: FamilyCell}, wantReason: `cell "c2" is not held and the fold is already at sequence 9`,
			cells: map[string]*Cell{"c1": {ID: "c1", SpecID: "s1", RunID: "r1", FormationID: fid, State: cellosv1.CellRunning, StartedAt: ts(t1), LastAppliedSequence: 9}},
		},
		{
			name: "cell type wins over the formation gate even with formation data", seq: 1,
			payload: obj(typ(tStarted), subj(fid), data(`{"cellId":"c1","formationId":"`+fid+`","formationName":"x"}`)),
			want:    Outcome{Seq: 1, Result: ResultApplied, Family: FamilyCell, CellID: "c1"},
			cells:   map[string]*Cell{"c1": {ID: "c1", FormationID: fid, State: cellosv1.CellRunning, LastAppliedSequence: 1}},
		},
	})
}

// TestApplyBinaryMode checks that an event in binary content mode (ce-
// headers, the body as data) folds as its structured twin.
func TestApplyBinaryMode(t *testing.T) {
	runApply(t, []applyCase{
		{
			name: "a binary-mode event folds as its structured twin", seq: 1,
			header:  binary(tStarted, "ce-id", "e1", "ce-time", t1),
			payload: `{"cellId":"c1","specId":"s1","runId":"r1","formationId":"` + fid + `"}`,
			want:    Outcome{Seq: 1, Result: ResultApplied, Family: FamilyCell, EventID: "e1", CellID: "c1"},
			cells:   map[string]*Cell{"c1": runningCell},
		},
		{
			name: "a binary-mode body that is not JSON has no cellId", seq: 1,
			header: binary(tStarted), payload: "cellId=c1",
			want: Outcome{Seq: 1, Result: ResultIgnored, Family: FamilyCell}, wantReason: "data.cellId",
		},
		{
			name: "a binary-mode formation event keeps its body as the document", seq: 2,
			header: binary(tFormation + "created"), payload: `{"formationId":"` + fidUpper + `","formationName":"one"}`,
			want: Outcome{Seq: 2, Result: ResultApplied, Family: FamilyFormation, FormationID: fid},
			formations: map[string]*Formation{fid: {ID: fid, Name: "one", Phase: cellosv1.FormationPending,
				Document: json.RawMessage(`{"formationId":"` + fidUpper + `","formationName":"one"}`), LastAppliedSequence: 2}},
		},
		{
			name: "a binary-mode body that is not JSON: the id falls back to ce-subject and the document is null", seq: 2,
			header: binary(tFormation+"running", "ce-subject", "urn:uuid:"+fid), payload: "\xff not JSON",
			want: Outcome{Seq: 2, Result: ResultApplied, Family: FamilyFormation, FormationID: fid},
			formations: map[string]*Formation{fid: {ID: fid, Phase: cellosv1.FormationRunning,
				Document: json.RawMessage(`null`), LastAppliedSequence: 2}},
		},
		{
			name: "a binary-mode header that does not decode rejects the event", seq: 2,
			header: binary(tStarted, "ce-id", "%zz"), payload: `{"cellId":"c1"}`,
			want: Outcome{Seq: 2, Result: ResultRejected, Family: FamilyOther}, wantReason: `binary-mode header "ce-id"`,
		},
	})
}

// TestApplyFormationEvents checks how formation events build and update
// Formations: phase, id forms and fallbacks, name, document and
// per-formation sequences.
func TestApplyFormationEvents(t *testing.T) {
	runApply(t, []applyCase{
		{
			name: "created makes a pending formation and keeps its document", seq: 1, payload: createdEvent,
			want:       Outcome{Seq: 1, Result: ResultApplied, Family: FamilyFormation, EventID: "f1", FormationID: fid},
			formations: map[string]*Formation{fid: pendingFormation},
		},
		{
			name: "legacy prefix with snake_case keys", seq: 8,
			payload: obj(typ(tLegacy+"created"), data(`{"formation_id":"`+fid2+`","name":"formation-0"}`)),
			want:    Outcome{Seq: 8, Result: ResultApplied, Family: FamilyFormation, FormationID: fid2},
			formations: map[string]*Formation{fid2: {ID: fid2, Name: "formation-0", Phase: cellosv1.FormationPending,
				Document: json.RawMessage(`{"formation_id":"` + fid2 + `","name":"formation-0"}`), LastAppliedSequence: 8}},
		},
		{
			name: "launching is running", before: []step{{1, createdEvent}}, seq: 2, payload: obj(typ(tFormation+"launching"), data(`{"formationId":"`+fid+`"}`)),
			want:       Outcome{Seq: 2, Result: ResultApplied, Family: FamilyFormation, FormationID: fid},
			formations: map[string]*Formation{fid: {ID: fid, Name: "one", Phase: cellosv1.FormationRunning, Document: pendingFormation.Document, LastAppliedSequence: 2}},
		},
		{
			name: "running is running", before: []step{{1, createdEvent}}, seq: 2, payload: obj(typ(tFormation+"running"), data(`{"formationId":"`+fid+`"}`)),
			want:       Outcome{Seq: 2, Result: ResultApplied, Family: FamilyFormation, FormationID: fid},
			formations: map[string]*Formation{fid: {ID: fid, Name: "one", Phase: cellosv1.FormationRunning, Document: pendingFormation.Document, LastAppliedSequence: 2}},
		},
		{
			name: "degraded is running and degraded", before: []step{{1, createdEvent}}, seq: 2, payload: obj(typ(tFormation+"degraded"), data(`{"formationId":"`+fid+`"}`)),
			want:       Outcome{Seq: 2, Result: ResultApplied, Family: FamilyFormation, FormationID: fid},
			formations: map[string]*Formation{fid: {ID: fid, Name: "one", Phase: cellosv1.FormationRunning, Degraded: true, Document: pendingFormation.Document, LastAppliedSequence: 2}},
		},
		{
			name:       "running after degraded clears degraded",
			before:     []step{{1, createdEvent}, {2, obj(typ(tFormation+"degraded"), data(`{"formationId":"`+fid+`"}`))}},
			seq:        3,
			payload:    obj(typ(tFormation+"running"), data(`{"formationId":"`+fid+`"}`)),
			want:       Outcome{Seq: 3, Result: ResultApplied, Family: FamilyFormation, FormationID: fid},
			formations: map[string]*Formation{fid: {ID: fid, Name: "one", Phase: cellosv1.FormationRunning, Document: pendingFormation.Document, LastAppliedSequence: 3}},
		},
		{
			name: "completed is succeeded", before: []step{{1, createdEvent}}, seq: 2, payload: obj(typ(tFormation+"completed"), data(`{"formationId":"`+fid+`"}`)),
			want:       Outcome{Seq: 2, Result: ResultApplied, Family: FamilyFormation, FormationID: fid},
			formations: map[string]*Formation{fid: {ID: fid, Name: "one", Phase: cellosv1.FormationSucceeded, Document: pendingFormation.Document, LastAppliedSequence: 2}},
		},
		{
			name: "failed is failed", before: []step{{1, createdEvent}}, seq: 2, payload: obj(typ(tFormation+"failed"), data(`{"formationId":"`+fid+`"}`)),
			want:       Outcome{Seq: 2, Result: ResultApplied, Family: FamilyFormation, FormationID: fid},
			formations: map[string]*Formation{fid: {ID: fid, Name: "one", Phase: cellosv1.FormationFailed, Document: pendingFormation.Document, LastAppliedSequence: 2}},
		},
		{
			name: "cancelled on the legacy prefix is cancelled", before: []step{{1, createdEvent}}, seq: 2, payload: obj(typ(tLegacy+"cancelled"), data(`{"formation_id":"`+fid+`"}`)),
			want:       Outcome{Seq: 2, Result: ResultApplied, Family: FamilyFormation, FormationID: fid},
			formations: map[string]*Formation{fid: {ID: fid, Name: "one", Phase: cellosv1.FormationCancelled, Document: pendingFormation.Document, LastAppliedSequence: 2}},
		},
		{
			name:       "the last event in stream order sets the phase, even backwards",
			before:     []step{{1, createdEvent}, {2, obj(typ(tFormation+"completed"), data(`{"formationId":"`+fid+`"}`))}},
			seq:        3,
			payload:    obj(typ(tFormation+"created"), data(`{"formationId":"`+fid+`"}`)),
			want:       Outcome{Seq: 3, Result: ResultApplied, Family: FamilyFormation, FormationID: fid},
			formations: map[string]*Formation{fid: {ID: fid, Name: "one", Phase: cellosv1.FormationPending, Document: pendingFormation.Document, LastAppliedSequence: 3}},
		},
		{
			name: "a first event in any phase creates the formation in that phase", seq: 4,
			payload: obj(typ(tFormation+"running"), data(`{"formationId":"`+fid+`"}`)),
			want:    Outcome{Seq: 4, Result: ResultApplied, Family: FamilyFormation, FormationID: fid},
			formations: map[string]*Formation{fid: {ID: fid, Phase: cellosv1.FormationRunning,
				Document: json.RawMessage(`{"formationId":"` + fid + `"}`), LastAppliedSequence: 4}},
		},
		{
			name: "unknown phase with a valid id is ignored", before: []step{{1, createdEvent}}, seq: 2,
			payload: obj(id("f9"), typ(tFormation+"exploded"), data(`{"formationId":"`+fid+`"}`)),
			want:    Outcome{Seq: 2, Result: ResultIgnored, Family: FamilyFormation, EventID: "f9"}, wantReason: `phase "exploded"`,
			formations: map[string]*Formation{fid: pendingFormation},
		},
		{
			name: "unknown phase on a new formation creates nothing", seq: 2,
			payload: obj(typ(tFormation+"exploded"), data(`{"formationId":"`+fid+`"}`)),
			want:    Outcome{Seq: 2, Result: ResultIgnored, Family: FamilyFormation}, wantReason: `phase "exploded"`,
		},
		{
			name: "phase match is exact", seq: 2,
			payload: obj(typ(tFormation+"Created"), data(`{"formationId":"`+fid+`"}`)),
			want:    Outcome{Seq: 2, Result: ResultIgnored, Family: FamilyFormation}, wantReason: `phase "Created"`,
		},
		{
			name: "empty phase is ignored", seq: 2,
			payload: obj(typ(tFormation), data(`{"formationId":"`+fid+`"}`)),
			want:    Outcome{Seq: 2, Result: ResultIgnored, Family: FamilyFormation}, wantReason: `phase ""`,
		},
		{
			name: "unknown phase with a bad id is rejected: the id is checked first", seq: 2,
			payload: obj(typ(tFormation+"exploded"), data(`{"formationId":"not-a-uuid"}`)),
			want:    Outcome{Seq: 2, Result: ResultRejected, Family: FamilyFormation}, wantReason: `"not-a-uuid" is not a UUID`,
		},
		{
			name: "unknown phase without an id is rejected", seq: 2,
			payload: obj(typ(tLegacy+"exploded"), data(`{}`)),
			want:    Outcome{Seq: 2, Result: ResultRejected, Family: FamilyFormation}, wantReason: "has no id",
		},
		{
			name: "id that is not a UUID is rejected", seq: 25,
			payload: obj(id("bad"), typ(tFormation+"created"), data(`{"formationId":"not-a-uuid","formationName":"bad"}`)),
			want:    Outcome{Seq: 25, Result: ResultRejected, Family: FamilyFormation, EventID: "bad"}, wantReason: `formation id "not-a-uuid" is not a UUID`,
		},
		{
			name: "no id anywhere is rejected", seq: 2,
			payload: obj(typ(tFormation+"created"), data(`{"formationName":"x"}`)),
			want:    Outcome{Seq: 2, Result: ResultRejected, Family: FamilyFormation}, wantReason: "has no id",
		},
		{
			name: "no data and no subject is rejected", seq: 2, payload: obj(typ(tFormation + "created")),
			want: Outcome{Seq: 2, Result: ResultRejected, Family: FamilyFormation}, wantReason: "has no id",
		},
		{
			name: "non-string subject is no id", seq: 2, payload: `{"type":"` + tFormation + `created","subject":42}`,
			want: Outcome{Seq: 2, Result: ResultRejected, Family: FamilyFormation}, wantReason: "has no id",
		},
		{
			name: "empty formationId stops the fallback chain and is rejected", seq: 2,
			payload: obj(typ(tFormation+"created"), subj(fid), data(`{"formationId":"","formation_id":"`+fid+`"}`)),
			want:    Outcome{Seq: 2, Result: ResultRejected, Family: FamilyFormation}, wantReason: `formation id "" is not a UUID`,
		},
		{
			name: "formationId wins over formation_id and subject", seq: 2,
			payload: obj(typ(tFormation+"created"), subj(fid2), data(`{"formation_id":"`+fid2+`","formationId":"`+fid+`"}`)),
			want:    Outcome{Seq: 2, Result: ResultApplied, Family: FamilyFormation, FormationID: fid},
			formations: map[string]*Formation{fid: {ID: fid, Phase: cellosv1.FormationPending,
				Document: json.RawMessage(`{"formation_id":"` + fid2 + `","formationId":"` + fid + `"}`), LastAppliedSequence: 2}},
		},
		{
			name: "non-string formationId falls back to formation_id", seq: 2,
			payload: obj(typ(tFormation+"created"), subj(fid2), data(`{"formationId":7,"formation_id":"`+fid+`"}`)),
			want:    Outcome{Seq: 2, Result: ResultApplied, Family: FamilyFormation, FormationID: fid},
			formations: map[string]*Formation{fid: {ID: fid, Phase: cellosv1.FormationPending,
				Document: json.RawMessage(`{"formationId":7,"formation_id":"` + fid + `"}`), LastAppliedSequence: 2}},
		},
		{
			name: "braced upper-case subject is the fallback and is normalised", seq: 28,
			payload: obj(typ(tFormation+"created"), data(`{}`), subj("{"+fidUpper+"}")),
			want:    Outcome{Seq: 28, Result: ResultApplied, Family: FamilyFormation, FormationID: fid},
			formations: map[string]*Formation{fid: {ID: fid, Phase: cellosv1.FormationPending,
				Document: json.RawMessage(`{}`), LastAppliedSequence: 28}},
		},
		{
			name: "a formation's data_base64 is its document when it is JSON", seq: 3,
			payload: obj(typ(tFormation+"created"), `"data_base64":"`+base64.StdEncoding.EncodeToString([]byte(` {"formationId":"`+fid+`"} `))+`"`),
			want:    Outcome{Seq: 3, Result: ResultApplied, Family: FamilyFormation, FormationID: fid},
			formations: map[string]*Formation{fid: {ID: fid, Phase: cellosv1.FormationPending,
				Document: json.RawMessage(`{"formationId":"` + fid + `"}`), LastAppliedSequence: 3}},
		},
		{
			name: "invalid data_base64 is no data: the id falls back to the subject and the document is null", seq: 3,
			payload: obj(typ(tFormation+"created"), subj(fid), `"data_base64":"not base64!"`),
			want:    Outcome{Seq: 3, Result: ResultApplied, Family: FamilyFormation, FormationID: fid},
			formations: map[string]*Formation{fid: {ID: fid, Phase: cellosv1.FormationPending,
				Document: json.RawMessage(`null`), LastAppliedSequence: 3}},
		},
		{
			name: "subject fallback when data is not an object; absent data is a null document", seq: 3,
			payload: obj(typ(tFormation+"created"), subj(fid)),
			want:    Outcome{Seq: 3, Result: ResultApplied, Family: FamilyFormation, FormationID: fid},
			formations: map[string]*Formation{fid: {ID: fid, Phase: cellosv1.FormationPending,
				Document: json.RawMessage(`null`), LastAppliedSequence: 3}},
		},
		{
			name: "urn:uuid: form lands on the same formation", before: []step{{1, createdEvent}}, seq: 2,
			payload:    obj(typ(tFormation+"running"), data(`{"formationId":"urn:uuid:`+fid+`"}`)),
			want:       Outcome{Seq: 2, Result: ResultApplied, Family: FamilyFormation, FormationID: fid},
			formations: map[string]*Formation{fid: {ID: fid, Name: "one", Phase: cellosv1.FormationRunning, Document: pendingFormation.Document, LastAppliedSequence: 2}},
		},
		{
			name: "hyphenless upper-case form lands on the same formation", before: []step{{1, createdEvent}}, seq: 2,
			payload:    obj(typ(tFormation+"running"), data(`{"formationId":"`+strings.ReplaceAll(fidUpper, "-", "")+`"}`)),
			want:       Outcome{Seq: 2, Result: ResultApplied, Family: FamilyFormation, FormationID: fid},
			formations: map[string]*Formation{fid: {ID: fid, Name: "one", Phase: cellosv1.FormationRunning, Document: pendingFormation.Document, LastAppliedSequence: 2}},
		},
		{
			name: "a UUID in parentheses is not a UUID", seq: 2,
			payload: obj(typ(tFormation+"created"), subj("("+fid+")")),
			want:    Outcome{Seq: 2, Result: ResultRejected, Family: FamilyFormation}, wantReason: `formation id "(` + fid + `)" is not a UUID: 38 bytes`,
		},
		{
			name: "a quoted UUID is not a UUID", seq: 2,
			payload: obj(typ(tFormation+"created"), data(`{"formationId":"\"`+fid+`\""}`)),
			want:    Outcome{Seq: 2, Result: ResultRejected, Family: FamilyFormation}, wantReason: "is not a UUID",
		},
		{
			name: "urn:uuid: in upper case is not a UUID", seq: 2,
			payload: obj(typ(tFormation+"created"), data(`{"formationId":"URN:UUID:`+fid+`"}`)),
			want:    Outcome{Seq: 2, Result: ResultRejected, Family: FamilyFormation}, wantReason: "is not a UUID: 45 bytes",
		},
		{
			name: "braces around the hyphenless form are not a UUID", seq: 2,
			payload: obj(typ(tFormation+"created"), data(`{"formationId":"{`+strings.ReplaceAll(fid, "-", "")+`}"}`)),
			want:    Outcome{Seq: 2, Result: ResultRejected, Family: FamilyFormation}, wantReason: "is not a UUID: 34 bytes",
		},
		{
			name: "non-empty name replaces the old one", before: []step{{1, createdEvent}}, seq: 2,
			payload:    obj(typ(tFormation+"running"), data(`{"formationId":"`+fid+`","formationName":"two"}`)),
			want:       Outcome{Seq: 2, Result: ResultApplied, Family: FamilyFormation, FormationID: fid},
			formations: map[string]*Formation{fid: {ID: fid, Name: "two", Phase: cellosv1.FormationRunning, Document: pendingFormation.Document, LastAppliedSequence: 2}},
		},
		{
			name: "legacy name key replaces the old one", before: []step{{1, createdEvent}}, seq: 2,
			payload:    obj(typ(tFormation+"running"), data(`{"formationId":"`+fid+`","formationName":5,"name":"three"}`)),
			want:       Outcome{Seq: 2, Result: ResultApplied, Family: FamilyFormation, FormationID: fid},
			formations: map[string]*Formation{fid: {ID: fid, Name: "three", Phase: cellosv1.FormationRunning, Document: pendingFormation.Document, LastAppliedSequence: 2}},
		},
		{
			name: "empty formationName keeps the old name and hides the legacy key", before: []step{{1, createdEvent}}, seq: 2,
			payload:    obj(typ(tFormation+"running"), data(`{"formationId":"`+fid+`","formationName":"","name":"ignored"}`)),
			want:       Outcome{Seq: 2, Result: ResultApplied, Family: FamilyFormation, FormationID: fid},
			formations: map[string]*Formation{fid: {ID: fid, Name: "one", Phase: cellosv1.FormationRunning, Document: pendingFormation.Document, LastAppliedSequence: 2}},
		},
		{
			name: "the document stays the first event's data", before: []step{{1, createdEvent}}, seq: 2,
			payload:    obj(typ(tFormation+"failed"), data(`{"formationId":"`+fid+`","reason":"boom"}`)),
			want:       Outcome{Seq: 2, Result: ResultApplied, Family: FamilyFormation, FormationID: fid},
			formations: map[string]*Formation{fid: {ID: fid, Name: "one", Phase: cellosv1.FormationFailed, Document: pendingFormation.Document, LastAppliedSequence: 2}},
		},
		{
			name: "formation event at the applied sequence is skipped", before: []step{{1, createdEvent}}, seq: 1,
			payload: obj(typ(tFormation+"failed"), data(`{"formationId":"`+fid+`","formationName":"other"}`)),
			want:    Outcome{Seq: 1, Result: ResultSkipped, Family: FamilyFormation}, wantReason: "formation " + fid + " already at sequence 1",
			formations: map[string]*Formation{fid: pendingFormation},
		},
		{
			name:   "formation event below the applied sequence is skipped, whatever its id spelling",
			before: []step{{10, createdEvent}}, seq: 9,
			payload: obj(typ(tFormation+"completed"), subj("urn:uuid:"+fidUpper)),
			want:    Outcome{Seq: 9, Result: ResultSkipped, Family: FamilyFormation}, wantReason: "already at sequence 10",
			formations: map[string]*Formation{fid: {ID: fid, Name: "one", Phase: cellosv1.FormationPending, Document: pendingFormation.Document, LastAppliedSequence: 10}},
		},
		{
			name: "formation and cell sequences are tracked per object", before: []step{{1, createdEvent}, {5, startedEvent}}, seq: 3,
			payload:    obj(typ(tFormation+"running"), data(`{"formationId":"`+fid+`"}`)),
			want:       Outcome{Seq: 3, Result: ResultApplied, Family: FamilyFormation, FormationID: fid},
			formations: map[string]*Formation{fid: {ID: fid, Name: "one", Phase: cellosv1.FormationRunning, Document: pendingFormation.Document, LastAppliedSequence: 3}},
			cells:      map[string]*Cell{"c1": {ID: "c1", SpecID: "s1", RunID: "r1", FormationID: fid, State: cellosv1.CellRunning, StartedAt: ts(t1), LastAppliedSequence: 5}},
		},
		{
			name: "an event below the fold's sequence does not bring back a formation it does not hold", before: []step{{5, startedEvent}}, seq: 2, payload: createdEvent,
			want: Outcome{Seq: 2, Result: ResultSkipped, Family: FamilyFormation, EventID: "f1"}, wantReason: "formation " + fid + " is not held and the fold is already at sequence 5",
			cells: map[string]*Cell{"c1": {ID: "c1", SpecID: "s1", RunID: "r1", FormationID: fid, State: cellosv1.CellRunning, StartedAt: ts(t1), LastAppliedSequence: 5}},
		},
	})
}

// runApply folds each case's setup events into a fresh State, then its
// event, and compares the Outcome, its reason and the whole State.
func runApply(t *testing.T, tests []applyCase) {
	t.Helper()

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewState()
			for _, st := range tt.before {
				if out := s.Apply(st.seq, time.Time{}, "", nil, []byte(st.payload)); out.Result != ResultApplied {
					t.Fatalf("setup event %d: %+v", st.seq, out)
				}
			}
			got := s.Apply(tt.seq, time.Time{}, "", tt.header, []byte(tt.payload))
			reason := got.Reason
			got.Reason = ""
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Outcome = %+v, want %+v", got, tt.want)
			}
			if tt.wantReason == "" && reason != "" {
				t.Errorf("Reason = %q, want none", reason)
			}
			if !strings.Contains(reason, tt.wantReason) {
				t.Errorf("Reason = %q, want it to contain %q", reason, tt.wantReason)
			}
			assertState(t, s, tt.formations, tt.cells)
		})
	}
}

func readFile(tb testing.TB, name string) []byte {
	tb.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func assertState(t *testing.T, s *State, formations map[string]*Formation, cells map[string]*Cell) {
	t.Helper()
	if len(s.Formations) != len(formations) {
		t.Errorf("%d formations %v, want %d", len(s.Formations), keys(s.Formations), len(formations))
	}
	for k, want := range formations {
		got, ok := s.Formations[k]
		if !ok {
			t.Errorf("formation %q missing", k)
			continue
		}
		for _, d := range diffFormation(got, want) {
			t.Errorf("formation %q: %s", k, d)
		}
	}
	if len(s.Cells) != len(cells) {
		t.Errorf("%d cells %v, want %d", len(s.Cells), keys(s.Cells), len(cells))
	}
	for k, want := range cells {
		got, ok := s.Cells[k]
		if !ok {
			t.Errorf("cell %q missing", k)
			continue
		}
		for _, d := range diffCell(got, want) {
			t.Errorf("cell %q: %s", k, d)
		}
	}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// diffFormation compares every field; JSON documents compare byte for byte
// because the document is kept verbatim.
func diffFormation(got, want *Formation) []string {
	var d []string
	add := func(field string, g, w any) { d = append(d, fmt.Sprintf("%s = %v, want %v", field, g, w)) }
	if got.ID != want.ID {
		add("ID", got.ID, want.ID)
	}
	if got.Name != want.Name {
		add("Name", got.Name, want.Name)
	}
	if got.Phase != want.Phase {
		add("Phase", got.Phase, want.Phase)
	}
	if got.Degraded != want.Degraded {
		add("Degraded", got.Degraded, want.Degraded)
	}
	if !bytes.Equal(got.Document, want.Document) {
		add("Document", string(got.Document), string(want.Document))
	}
	if got.DocumentDropped != want.DocumentDropped {
		add("DocumentDropped", got.DocumentDropped, want.DocumentDropped)
	}
	if got.LastAppliedSequence != want.LastAppliedSequence {
		add("LastAppliedSequence", got.LastAppliedSequence, want.LastAppliedSequence)
	}
	return d
}

func diffCell(got, want *Cell) []string {
	var d []string
	add := func(field string, g, w any) { d = append(d, fmt.Sprintf("%s = %v, want %v", field, g, w)) }
	for _, f := range []struct {
		name string
		g, w string
	}{
		{"ID", got.ID, want.ID}, {"SpecID", got.SpecID, want.SpecID}, {"RunID", got.RunID, want.RunID},
		{"FormationID", got.FormationID, want.FormationID}, {"State", string(got.State), string(want.State)},
		{"Outcome", got.Outcome, want.Outcome},
	} {
		if f.g != f.w {
			add(f.name, fmt.Sprintf("%q", f.g), fmt.Sprintf("%q", f.w))
		}
	}
	if !timeEqual(got.StartedAt, want.StartedAt) {
		add("StartedAt", got.StartedAt, want.StartedAt)
	}
	if !timeEqual(got.DestroyedAt, want.DestroyedAt) {
		add("DestroyedAt", got.DestroyedAt, want.DestroyedAt)
	}
	if (got.ExitCode == nil) != (want.ExitCode == nil) || (got.ExitCode != nil && *got.ExitCode != *want.ExitCode) {
		add("ExitCode", fmtPtr(got.ExitCode), fmtPtr(want.ExitCode))
	}
	if got.LastAppliedSequence != want.LastAppliedSequence {
		add("LastAppliedSequence", got.LastAppliedSequence, want.LastAppliedSequence)
	}
	return d
}

func timeEqual(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(*b)
}

func fmtPtr(p *int32) string {
	if p == nil {
		return "nil"
	}
	return fmt.Sprint(*p)
}

// TestApplyZeroState checks that a State built without NewState still folds,
// so a caller's zero value cannot turn into a nil-map panic on the stream.
// Each bound refuses what is beyond it, before the fold keeps anything, and
// keeps what is at it. A formation's document beyond its bound is dropped,
// not refused: the event's phase still applies.
func TestApplyBounds(t *testing.T) {
	cell := func(fields string) string {
		return obj(typ(tStarted), data(`{"cellId":"c1"`+fields+`}`))
	}
	long := func(n int) string { return strings.Repeat("x", n) }
	created := func(fields string) string {
		return obj(typ(tFormation+"created"), data(`{"formationId":"`+fid+`"`+fields+`}`))
	}
	bigDoc := `,"blob":"` + long(MaxDocumentBytes) + `"`
	tests := []struct {
		name          string
		maxEventBytes int
		header        map[string][]string
		payload       string
		want          Result
		wantReason    string
		check         func(t *testing.T, s *State)
	}{
		{name: "a cell id at the bound", payload: obj(typ(tStarted), data(`{"cellId":"`+long(MaxIDBytes)+`"}`)), want: ResultApplied},
		{name: "a cell id beyond the bound", payload: obj(typ(tStarted), data(`{"cellId":"`+long(MaxIDBytes+1)+`"}`)), want: ResultRejected, wantReason: "longer than 512 bytes"},
		{name: "a specId at the bound", payload: cell(`,"specId":"` + long(MaxFieldBytes) + `"`), want: ResultApplied},
		{name: "a specId beyond the bound", payload: cell(`,"specId":"` + long(MaxFieldBytes+1) + `"`), want: ResultRejected, wantReason: "data.specId"},
		{name: "a runId beyond the bound", payload: cell(`,"runId":"` + long(MaxFieldBytes+1) + `"`), want: ResultRejected, wantReason: "data.runId"},
		{name: "an outcome beyond the bound", payload: cell(`,"outcome":"` + long(MaxFieldBytes+1) + `"`), want: ResultRejected, wantReason: "data.outcome"},
		{name: "a formation name at the bound", payload: created(`,"formationName":"` + long(MaxFieldBytes) + `"`), want: ResultApplied},
		{name: "a formation name beyond the bound", payload: created(`,"name":"` + long(MaxFieldBytes+1) + `"`), want: ResultRejected, wantReason: "longer than 256 bytes"},
		{
			name: "a document beyond the bound is dropped", payload: created(bigDoc), want: ResultApplied,
			check: func(t *testing.T, s *State) {
				t.Helper()
				if f := s.Formations[fid]; f.Document != nil || !f.DocumentDropped || f.Phase != cellosv1.FormationPending {
					t.Errorf("document of %d bytes, dropped %v, phase %s; want none, dropped, Pending", len(f.Document), f.DocumentDropped, f.Phase)
				}
			},
		},
		{name: "a message at the largest size", maxEventBytes: len(cell("")), payload: cell(""), want: ResultApplied},
		{name: "a message beyond the largest size", maxEventBytes: len(cell("")) - 1, payload: cell(""), want: ResultRejected, wantReason: "larger than the largest event accepted"},
		{
			name: "a binary-mode message's header counts", maxEventBytes: 40,
			header: binary(tStarted, "ce-id", long(40)), payload: `{"cellId":"c1"}`, want: ResultRejected, wantReason: "larger than",
		},
		{name: "the default largest size is 1 MiB", payload: cell(`,"blob":"` + long(DefaultMaxEventBytes) + `"`), want: ResultRejected, wantReason: "1048576 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewState()
			s.MaxEventBytes = tt.maxEventBytes
			out := s.Apply(1, time.Time{}, "", tt.header, []byte(tt.payload))
			if out.Result != tt.want || !strings.Contains(out.Reason, tt.wantReason) {
				t.Fatalf("got %s (%.200s), want %s with a reason that says %q", out.Result, out.Reason, tt.want, tt.wantReason)
			}
			if len(out.Reason) > 512 {
				t.Errorf("a reason of %d bytes", len(out.Reason))
			}
			if out.Result == ResultRejected && (len(s.Cells) != 0 || len(s.Formations) != 0) {
				t.Errorf("a refused event left %d cells and %d formations", len(s.Cells), len(s.Formations))
			}
			if tt.check != nil {
				tt.check(t, s)
			}
		})
	}
}

// The first present runId stands, even "": the reference sets run_id, an
// Option, once.
func TestRunIDFirstPresentStands(t *testing.T) {
	for _, tt := range []struct {
		name  string
		first string // data members of the first event
		want  string
	}{
		{"an empty runId is kept", `,"runId":""`, ""},
		{"a runId is kept", `,"runId":"r0"`, "r0"},
		{"no runId leaves room for one", ``, "r1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := NewState()
			s.Apply(1, time.Time{}, "", nil, []byte(obj(typ(tStarted), data(`{"cellId":"c1"`+tt.first+`}`))))
			s.Apply(2, time.Time{}, "", nil, []byte(obj(typ(tDestroyed), data(`{"cellId":"c1","runId":"r1"}`))))
			if got := s.Cells["c1"].RunID; got != tt.want {
				t.Errorf("runId %q, want %q", got, tt.want)
			}
		})
	}
}

func TestApplyZeroState(t *testing.T) {
	var s State
	if out := s.Apply(1, time.Time{}, "", nil, []byte(obj(typ(tStarted), data(`{"cellId":"c"}`)))); out.Result != ResultApplied {
		t.Fatalf("cell on zero State: %+v", out)
	}
	var s2 State
	if out := s2.Apply(1, time.Time{}, "", nil, []byte(obj(typ(tFormation+"created"), subj(fid)))); out.Result != ResultApplied {
		t.Fatalf("formation on zero State: %+v", out)
	}
}

// TestApplyDoesNotRetainPayload checks that the state owns its bytes, since
// the consumer hands the fold message buffers it may reuse.
// The cells of a formation the fold holds share one copy of its id, which
// each would otherwise decode for itself (or load from a checkpoint): the
// fold's memory is per live object.
func TestCellsShareTheirFormationsID(t *testing.T) {
	s := NewState()
	s.Apply(1, time.Time{}, "", nil, []byte(obj(typ(tFormation+"created"), data(`{"formationId":"`+fid+`","formationName":"one"}`))))
	s.Apply(2, time.Time{}, "", nil, []byte(obj(typ(tStarted), tm(t1), data(`{"cellId":"c1","formationId":"`+strings.ToUpper(fid)+`"}`))))
	f, c := s.Formations[fid], s.Cells["c1"]
	if f == nil || c == nil {
		t.Fatalf("objects missing: %v %v", keys(s.Formations), keys(s.Cells))
	}
	if c.FormationID != fid || unsafe.StringData(c.FormationID) != unsafe.StringData(f.ID) {
		t.Errorf("the cell's formation id %q is a copy of its own", c.FormationID)
	}
	c.FormationID = strings.Clone(c.FormationID) // as a checkpoint loads it
	s.Reindex()
	if unsafe.StringData(c.FormationID) != unsafe.StringData(f.ID) {
		t.Errorf("after Reindex, the cell's formation id %q is a copy of its own", c.FormationID)
	}
}

func TestApplyDoesNotRetainPayload(t *testing.T) {
	s := NewState()
	payloads := [][]byte{
		[]byte(obj(typ(tFormation+"created"), data(`{"formationId":"`+fid+`","formationName":"one"}`))),
		[]byte(obj(typ(tDestroyed), tm(t1), data(`{"cellId":"c1","specId":"s","runId":"r","outcome":"ok"}`))),
	}
	for i, p := range payloads {
		s.Apply(uint64(i+1), time.Time{}, "", nil, p)
		for j := range p {
			p[j] = '#'
		}
	}
	f, c := s.Formations[fid], s.Cells["c1"]
	if f == nil || c == nil {
		t.Fatalf("objects missing: %v %v", keys(s.Formations), keys(s.Cells))
	}
	if f.Name != "one" || string(f.Document) != `{"formationId":"`+fid+`","formationName":"one"}` {
		t.Errorf("formation changed with the payload buffer: %+v %s", f, f.Document)
	}
	if c.ID != "c1" || c.SpecID != "s" || c.RunID != "r" || c.Outcome != "ok" {
		t.Errorf("cell changed with the payload buffer: %+v", c)
	}
}

// ── Golden sample ───────────────────────────────────────────────────────

// readSample returns the payloads of testdata/events-sample.jsonl; the
// payload of line N has stream sequence N.
func readSample(tb testing.TB) [][]byte {
	tb.Helper()
	raw := readFile(tb, "testdata/events-sample.jsonl")
	var payloads [][]byte
	for i, line := range bytes.Split(bytes.TrimRight(raw, "\n"), []byte("\n")) {
		var msg struct {
			Subject string `json:"subject"`
			Data    string `json:"data"`
		}
		if err := json.Unmarshal(line, &msg); err != nil {
			tb.Fatalf("sample line %d: %v", i+1, err)
		}
		payloads = append(payloads, []byte(msg.Data))
	}
	return payloads
}

// foldSample folds the sample into a fresh state and returns the state and
// each line's outcome.
func foldSample(tb testing.TB) (*State, []Outcome) {
	tb.Helper()
	s := NewState()
	var outs []Outcome
	for i, p := range readSample(tb) {
		outs = append(outs, s.Apply(uint64(i+1), time.Time{}, "", nil, p))
	}
	return s, outs
}

// goldenView renders the projection in the shape of events-sample.expected.json
// and decodes it generically, so that it can be compared with the expected
// file member by member, with nothing left out on either side.
func goldenView(t *testing.T, s *State, outs []Outcome) map[string]any {
	t.Helper()
	nullIfEmpty := func(v string) any {
		if v == "" {
			return nil
		}
		return v
	}
	timeOrNull := func(v *time.Time) any {
		if v == nil {
			return nil
		}
		return v.UTC().Format(time.RFC3339Nano)
	}
	formations := map[string]any{}
	for k, f := range s.Formations {
		formations[k] = map[string]any{
			"formationId":         f.ID,
			"name":                f.Name,
			"phase":               f.Phase,
			"lastAppliedSequence": f.LastAppliedSequence,
		}
	}
	cells := map[string]any{}
	for k, c := range s.Cells {
		var exitCode any
		if c.ExitCode != nil {
			exitCode = *c.ExitCode
		}
		cells[k] = map[string]any{
			"cellId":              c.ID,
			"specId":              c.SpecID,
			"runId":               nullIfEmpty(c.RunID),
			"state":               c.State,
			"startedAt":           timeOrNull(c.StartedAt),
			"destroyedAt":         timeOrNull(c.DestroyedAt),
			"outcome":             nullIfEmpty(c.Outcome),
			"exitCode":            exitCode,
			"lastAppliedSequence": c.LastAppliedSequence,
		}
	}
	var ignored, rejected int
	var last uint64
	for _, o := range outs {
		switch o.Result {
		case ResultIgnored:
			ignored++
		case ResultRejected:
			rejected++
		}
		last = max(last, o.Seq) // every result advances the cursor
	}
	view := map[string]any{
		"formations": formations, "cells": cells,
		"ignored": ignored, "rejected": rejected, "lastSequence": last,
	}
	b, err := json.Marshal(view)
	if err != nil {
		t.Fatal(err)
	}
	var generic map[string]any
	if err := json.Unmarshal(b, &generic); err != nil {
		t.Fatal(err)
	}
	return generic
}

// diffJSON lists every difference between two generically decoded JSON
// values, by path, including members present on one side only.
func diffJSON(path string, want, got any) []string {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return []string{fmt.Sprintf("%s = %v, want an object", path, got)}
		}
		var d []string
		for k, wv := range w {
			gv, ok := g[k]
			if !ok {
				d = append(d, fmt.Sprintf("%s.%s missing, want %v", path, k, wv))
				continue
			}
			d = append(d, diffJSON(path+"."+k, wv, gv)...)
		}
		for k, gv := range g {
			if _, ok := w[k]; !ok {
				d = append(d, fmt.Sprintf("%s.%s = %v, not expected", path, k, gv))
			}
		}
		return d
	default:
		if !reflect.DeepEqual(want, got) {
			return []string{fmt.Sprintf("%s = %#v, want %#v", path, got, want)}
		}
		return nil
	}
}

func TestGoldenSample(t *testing.T) {
	s, outs := foldSample(t)
	var want map[string]any
	if err := json.Unmarshal(readFile(t, "testdata/events-sample.expected.json"), &want); err != nil {
		t.Fatal(err)
	}
	got := goldenView(t, s, outs)
	for _, d := range diffJSON("$", want, got) {
		t.Error(d)
	}

	// The comparison must notice any single wrong field: perturb each leaf of
	// the actual view in turn and require a difference.
	t.Run("comparison catches every field", func(t *testing.T) {
		leaves := 0
		perturbLeaves(got, func(undo func()) {
			leaves++
			if len(diffJSON("$", want, got)) == 0 {
				t.Errorf("a perturbed field went unnoticed (leaf %d)", leaves)
			}
			undo()
		})
		if leaves < 50 {
			t.Errorf("only %d leaves perturbed; the view is missing fields", leaves)
		}
		if d := diffJSON("$", want, got); len(d) != 0 {
			t.Fatalf("perturbation was not undone: %v", d)
		}
	})

	// What the expected file does not cover, checked directly.
	if c := s.Cells["cell-02daa0b3-0"]; c == nil || c.FormationID != "02daa0b3-49a7-a4bf-8050-cbb812881d4e" {
		t.Errorf("cell-02daa0b3-0 FormationID = %+v", c)
	}
	for id, c := range s.Cells {
		if id != "cell-02daa0b3-0" && c.FormationID != "" {
			t.Errorf("cell %q FormationID = %q, want none", id, c.FormationID)
		}
	}
	for id, f := range s.Formations {
		if f.Degraded {
			t.Errorf("formation %s Degraded after a later completed event", id)
		}
	}
	docs := map[string]string{
		"02daa0b3-49a7-a4bf-8050-cbb812881d4e": `{"formationId": "02daa0b3-49a7-a4bf-8050-cbb812881d4e", "formationName": "formation-1"}`,
		"9974d75b-3338-24fe-6179-0134676b1b69": `{"formation_id": "9974d75b-3338-24fe-6179-0134676b1b69", "name": "formation-0"}`,
		"d49db22d-a1b6-c6c0-c492-90279eab75cd": `{}`,
	}
	for id, doc := range docs {
		if f := s.Formations[id]; f == nil || string(f.Document) != doc {
			t.Errorf("formation %s Document = %s, want %s", id, f.Document, doc)
		}
	}
	wantResults := map[uint64]Result{
		1: ResultRejected, 21: ResultRejected, 25: ResultRejected, 32: ResultRejected,
		23: ResultIgnored, 24: ResultIgnored, 27: ResultIgnored, 30: ResultIgnored,
	}
	for _, o := range outs {
		w, ok := wantResults[o.Seq]
		if !ok {
			w = ResultApplied
		}
		if o.Result != w {
			t.Errorf("sequence %d: %s (%s), want %s", o.Seq, o.Result, o.Reason, w)
		}
	}
}

// perturbLeaves changes each scalar in v, one at a time, calling visit with
// a function that restores it.
func perturbLeaves(v any, visit func(undo func())) {
	switch x := v.(type) {
	case map[string]any:
		for k, child := range x {
			switch child.(type) {
			case map[string]any:
				perturbLeaves(child, visit)
			default:
				orig := child
				x[k] = perturbed(orig)
				visit(func() { x[k] = orig })
			}
		}
	}
}

func perturbed(v any) any {
	switch x := v.(type) {
	case string:
		return x + "x"
	case float64:
		return x + 1
	case bool:
		return !x
	case nil:
		return "x"
	default:
		return nil
	}
}

// TestReplaySkipsEverything replays the sample onto the state it produced,
// as after a restart from a cursor that lagged: nothing may change.
func TestReplaySkipsEverything(t *testing.T) {
	s, first := foldSample(t)
	reference, _ := foldSample(t)
	for i, p := range readSample(t) {
		seq := uint64(i + 1)
		out := s.Apply(seq, time.Time{}, "", nil, p)
		switch first[i].Result {
		case ResultApplied:
			if out.Result != ResultSkipped || out.FormationID != "" || out.CellID != "" {
				t.Errorf("replayed sequence %d: %+v, want skipped", seq, out)
			}
		default:
			// Ignored and rejected events touch no object, so replaying them
			// classifies them the same way again.
			if out.Result != first[i].Result {
				t.Errorf("replayed sequence %d: %s, first time %s", seq, out.Result, first[i].Result)
			}
		}
	}
	if !reflect.DeepEqual(s, reference) {
		t.Error("replay changed the state")
		for id, f := range reference.Formations {
			for _, d := range diffFormation(s.Formations[id], f) {
				t.Errorf("formation %s: %s", id, d)
			}
		}
		for id, c := range reference.Cells {
			for _, d := range diffCell(s.Cells[id], c) {
				t.Errorf("cell %s: %s", id, d)
			}
		}
	}
}

// FuzzApply checks that no payload can panic the fold or break its
// bookkeeping.
func FuzzApply(f *testing.F) {
	for _, p := range readSample(f) {
		f.Add(uint64(1), "", p)
	}
	f.Add(uint64(2), tStarted, []byte(`{"cellId":"c","exitCode":1}`))
	f.Add(uint64(3), tFormation+"created", []byte("not JSON"))
	f.Add(uint64(4), tFormation+"failed", []byte(`{"formation_id":"`+fidUpper+`"}`))
	// A non-empty ceType makes the message binary-mode, of that type and
	// with ce-subject fid, so that formation events can apply.
	f.Fuzz(func(t *testing.T, seq uint64, ceType string, payload []byte) {
		var header map[string][]string
		if ceType != "" {
			header = binary(ceType, "ce-subject", fid)
		}
		s := NewState()
		out := s.Apply(seq, time.Time{}, "", header, payload)
		switch out.Result {
		case ResultApplied:
			if out.Reason != "" {
				t.Fatalf("applied with a reason: %+v", out)
			}
			if f := s.Formations[out.FormationID]; out.FormationID != "" && (f == nil || f.LastAppliedSequence != seq) {
				t.Fatalf("applied formation not recorded: %+v", out)
			}
			if c := s.Cells[out.CellID]; out.Family == FamilyCell && (c == nil || c.LastAppliedSequence != seq) {
				t.Fatalf("applied cell not recorded: %+v", out)
			}
			if len(s.Formations)+len(s.Cells) != 1 {
				t.Fatalf("one event changed %d objects", len(s.Formations)+len(s.Cells))
			}
			again := s.Apply(seq, time.Time{}, "", header, payload)
			if again.Result != ResultSkipped {
				t.Fatalf("same sequence applied twice: %+v", again)
			}
		case ResultIgnored, ResultRejected:
			if out.Reason == "" || len(s.Formations)+len(s.Cells) != 0 {
				t.Fatalf("%+v left %d objects", out, len(s.Formations)+len(s.Cells))
			}
		default:
			t.Fatalf("unexpected result on an empty state: %+v", out)
		}
	})
}

// ── Benchmark ───────────────────────────────────────────────────────────

// syntheticStream builds a realistic stream: each formation is created,
// launches, runs cellsPer cells through started/completed/destroyed, and
// completes.
func syntheticStream(formations, cellsPer int) [][]byte {
	var out [][]byte
	for f := range formations {
		formationID := fmt.Sprintf("%08x-0000-4000-8000-%012x", f, f)
		name := fmt.Sprintf("formation-%d", f)
		fev := func(phase string) []byte {
			return []byte(obj(`"specversion":"1.0"`, id(fmt.Sprintf("urn:cellos:event:%s-%s", formationID, phase)),
				`"source":"/cellos/supervisor/host-1"`, typ(tFormation+phase), tm("2026-11-13T13:52:23Z"),
				`"datacontenttype":"application/json"`,
				data(`{"formationId":"`+formationID+`","formationName":"`+name+`"}`), subj("urn:cellos:formation:"+formationID)))
		}
		out = append(out, fev("created"), fev("launching"), fev("running"))
		for c := range cellsPer {
			cellID := fmt.Sprintf("cell-%s-%d", formationID[:8], c)
			cev := func(t, extra string) []byte {
				return []byte(obj(`"specversion":"1.0"`, id("urn:cellos:event:"+cellID+t), `"source":"/cellos/supervisor/host-2"`,
					typ(t), tm("2026-11-26T15:34:08Z"), `"datacontenttype":"application/json"`,
					data(`{"cellId":"`+cellID+`","specId":"spec-8","runId":"run-41972530e85c","formationId":"`+formationID+`"`+extra+`}`),
					subj("cell:"+cellID)))
			}
			out = append(out, cev(tStarted, ""), cev(tCompleted, `,"exitCode":0`), cev(tDestroyed, `,"outcome":"succeeded","terminalState":"forced"`))
		}
		out = append(out, fev("completed"))
	}
	return out
}

// BenchmarkApply measures one event per op over a stream of 100 formations
// with 10 cells each, cycling with ever-higher sequences so every event
// applies (as a live stream would) against a state of 1,100 objects.
func BenchmarkApply(b *testing.B) {
	stream := syntheticStream(100, 10)
	s := NewState()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if out := s.Apply(uint64(i+1), time.Time{}, "", nil, stream[i%len(stream)]); out.Result != ResultApplied {
			b.Fatalf("event %d: %+v", i, out)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// A formation declared in a namespace keeps that namespace from its created
// event; only the operator's own cancelled event marks it deleted. Both are
// ownership facts: only an event of the operator's source, on its subject
// for the formation, with the id spelled canonically, states them.
func TestDeclaredFormationFacts(t *testing.T) {
	const id = "5b0e8f4c-7d1a-4c2e-9f3b-2a6d8e1c4b7a"
	const own = "cellos.events.formation." + id
	type message struct {
		subject string
		payload []byte
	}
	spelled := func(phase, source, rawID, data string) []byte {
		return []byte(`{"type":"` + FormationTypePrefix + phase + `","source":"` + source + `","data":{"formationId":"` + rawID + `"` + data + `}}`)
	}
	event := func(phase, source, data string) message {
		return message{own, spelled(phase, source, id, data)}
	}
	cases := map[string]struct {
		prefix        string
		events        []message
		wantNamespace string
		wantDeleted   bool
	}{
		"a created event on another subject names nothing": {
			events: []message{{"cellos.events.forged." + id, spelled(PhaseCreated, OperatorSource, id, `,"namespace":"team-b"`)}},
		},
		"a producer's created event names nothing": {
			events: []message{event(PhaseCreated, "cellos-supervisor", `,"namespace":"team-b"`)},
		},
		"a cancel on another subject does not delete": {
			events: []message{event(PhaseCreated, OperatorSource, ""), {"cellos.events.forged." + id, spelled(PhaseCancelled, OperatorSource, id, "")}},
		},
		"a cancel spelling the id otherwise does not delete": {
			events: []message{event(PhaseCreated, OperatorSource, ""), {own, spelled(PhaseCancelled, OperatorSource, strings.ToUpper(id), "")}},
		},
		"the operator's subject follows its prefix": {
			prefix:        "cellos.events.operator",
			events:        []message{event(PhaseCreated, OperatorSource, `,"namespace":"team-b"`), {"cellos.events.operator.formation." + id, spelled(PhaseCancelled, OperatorSource, id, "")}},
			wantDeleted:   true,
			wantNamespace: "",
		},
		"the created event names the namespace": {
			events:        []message{event(PhaseCreated, OperatorSource, `,"namespace":"team-a"`)},
			wantNamespace: "team-a",
		},
		"only the created event names it": {
			events:        []message{event(PhaseCreated, "/cellos/server", ""), event(PhaseRunning, "/s", `,"namespace":"team-b"`)},
			wantNamespace: "",
		},
		"a later created event does not move it": {
			events:        []message{event(PhaseCreated, OperatorSource, `,"namespace":"team-a"`), event(PhaseCreated, OperatorSource, `,"namespace":"team-b"`)},
			wantNamespace: "team-a",
		},
		"the operator's cancel deletes": {
			events:      []message{event(PhaseCreated, OperatorSource, ""), event(PhaseCancelled, OperatorSource, "")},
			wantDeleted: true,
		},
		"a producer's cancel does not": {
			events: []message{event(PhaseCreated, OperatorSource, ""), event(PhaseCancelled, "/cellos/server", "")},
		},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			s := NewState()
			s.OperatorPrefix = c.prefix
			for i, e := range c.events {
				if out := s.Apply(uint64(i+1), time.Time{}, e.subject, nil, e.payload); out.Result != ResultApplied {
					t.Fatalf("event %d: %s %s", i+1, out.Result, out.Reason)
				}
			}
			f := s.Formations[id]
			if f.Namespace != c.wantNamespace || f.Deleted != c.wantDeleted {
				t.Errorf("namespace %q, deleted %v; want %q, %v", f.Namespace, f.Deleted, c.wantNamespace, c.wantDeleted)
			}
		})
	}
}

// TestReasonsQuoteLittleOfEachValue checks that a reason, which goes to a
// log line and a Warning Event, quotes at most cloudevent.MaxQuoted bytes of
// any value an event supplies, however long the value.
func TestReasonsQuoteLittleOfEachValue(t *testing.T) {
	long := strings.Repeat("v", 100000)
	tests := []struct {
		name    string
		before  string
		payload string
	}{
		{"unknown type", "", obj(typ(long))},
		{"formation id that is no UUID", "", obj(typ(tFormation+"created"), data(`{"formationId":"`+long+`"}`))},
		{"formation id from the subject", "", obj(typ(tFormation+"created"), subj(long))},
		{"unknown phase", "", obj(typ(tFormation+long), data(`{"formationId":"`+fid+`"}`))},
		{
			"skipped cell", obj(typ(tStarted), data(`{"cellId":"`+strings.Repeat("c", 253)+`"}`)),
			obj(typ(tStarted), data(`{"cellId":"`+strings.Repeat("c", 253)+`"}`)),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewState()
			if tt.before != "" {
				s.Apply(2, time.Time{}, "", nil, []byte(tt.before))
			}
			out := s.Apply(1, time.Time{}, "", nil, []byte(tt.payload))
			if out.Reason == "" || len(out.Reason) > 400 || !strings.Contains(out.Reason, " bytes)") {
				t.Errorf("reason of %d bytes, want a short one that gives the value's length: %.500s", len(out.Reason), out.Reason)
			}
		})
	}
}
