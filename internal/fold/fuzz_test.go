package fold_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"k8s.io/apimachinery/pkg/util/validation"

	"cellos.dev/cellos-operator/internal/fold"
	"cellos.dev/cellos-operator/internal/store"
)

// FuzzFoldStream decodes and folds whole streams, where FuzzApply (in
// fold_test.go) folds one message into an empty state and FuzzDecode (in
// internal/cloudevent) decodes one: the properties below hold between
// events, across objects and over replays, which no single message shows.
//
// The input is one byte string, cut into at most 64 messages at each 0x1e.
// A message that holds a 0x1f is in binary content mode: the part before
// it is its header, one "name: value" a line; the part after, its
// payload. Sequences start at base+1, one a message.
//
// For every stream:
//   - each message has one outcome, of its sequence, with a known result
//     and family, and a reason unless applied;
//   - an applied event changes exactly the object it names, which then
//     records its sequence; any other result changes nothing;
//   - a formation is keyed by its id in lower-case hyphenated form, a cell
//     by its id exactly; each object's name (store.ObjectName) is a valid
//     object name;
//   - folding the stream again gives the same outcomes and state, and
//     replaying it onto the folded state changes nothing.
func FuzzFoldStream(f *testing.F) {
	sample, err := os.ReadFile("testdata/events-sample.jsonl")
	if err != nil {
		f.Fatal(err)
	}
	var stream [][]byte
	for _, line := range bytes.Split(bytes.TrimSpace(sample), []byte("\n")) {
		var m struct {
			Data string `json:"data"`
		}
		if err := json.Unmarshal(line, &m); err != nil {
			f.Fatal(err)
		}
		stream = append(stream, []byte(m.Data))
	}
	f.Add(bytes.Join(stream, []byte{0x1e}), uint64(0))
	// The same stream replayed behind itself, and from a later base.
	f.Add(bytes.Join(append(stream, stream...), []byte{0x1e}), uint64(1000))

	const fid = "02daa0b3-49a7-a4bf-8050-cbb812881d4e"
	formation := func(phase, id string) string {
		return `{"type":"dev.cellos.events.cell.formation.v1.` + phase + `","data":{"formationId":"` + id + `","formationName":"f"}}`
	}
	cell := func(typ, id, extra string) string {
		return `{"type":"dev.cellos.events.cell.` + typ + `","time":"2027-01-01T00:00:00Z","data":{"cellId":"` + id + `","formationId":"` + fid + `"` + extra + `}}`
	}
	seeds := [][]string{
		// One formation, every spelling of its id, and its cells.
		{formation("created", fid), formation("running", strings.ToUpper(fid)), formation("degraded", "{"+fid+"}"),
			formation("completed", "urn:uuid:"+fid), formation("cancelled", strings.ReplaceAll(fid, "-", ""))},
		{cell("lifecycle.v1.started", "c", `,"specId":"s"`), cell("command.v1.completed", "c", `,"exitCode":3`),
			cell("lifecycle.v1.destroyed", "c", `,"outcome":"failed"`), cell("lifecycle.v1.started", "c", "")},
		// Ids that are no object name, and poison between valid events.
		{cell("lifecycle.v1.started", "UPPER/with/../slashes", ""), "not json", cell("lifecycle.v1.started", strings.Repeat("x", 300), ""),
			`{"type":42}`, cell("lifecycle.v1.started", "zelle-ä-日本", ""), `[[[[`, cell("lifecycle.v1.started", "", "")},
		// The operator's own created and cancelled events, and a forgery.
		{`{"type":"dev.cellos.events.cell.formation.v1.created","source":"cellos-operator","data":{"formationId":"` + fid + `","namespace":"team-a"}}`,
			`{"type":"dev.cellos.events.cell.formation.v1.cancelled","source":"cellos-operator","data":{"formationId":"` + strings.ToUpper(fid) + `"}}`,
			`{"type":"dev.cellos.events.cell.formation.v1.cancelled","source":"cellos-operator","data":{"formationId":"` + fid + `"}}`},
		// Binary content mode, good and bad.
		{"ce-specversion: 1.0\nce-type: dev.cellos.events.cell.lifecycle.v1.started\x1f{\"cellId\":\"b\"}",
			"ce-specversion: 1.0\nce-type: %zz\x1f{\"cellId\":\"b\"}",
			"ce-specversion: 1.0\nce-type: dev.cellos.events.cell.formation.v1.created\nce-subject: " + fid + "\x1fnot json"},
	}
	for i, s := range seeds {
		f.Add([]byte(strings.Join(s, "\x1e")), uint64(i))
	}

	f.Fuzz(func(t *testing.T, input []byte, base uint64) {
		msgs := split(input)
		base %= 1 << 62
		first := newFuzzState()
		var outs []fold.Outcome
		for i, m := range msgs {
			seq := base + uint64(i) + 1
			before := snapshot(first)
			out := first.Apply(seq, fuzzTime(i), m.subject, m.header, m.payload)
			outs = append(outs, out)
			checkOutcome(t, seq, out)
			checkChange(t, before, first, out)
		}
		checkKeys(t, first)

		again := newFuzzState()
		for i, m := range msgs {
			if out := again.Apply(base+uint64(i)+1, fuzzTime(i), m.subject, m.header, m.payload); !reflect.DeepEqual(out, outs[i]) {
				t.Fatalf("message %d folds to %+v the second time, %+v the first", i, out, outs[i])
			}
		}
		if !reflect.DeepEqual(first, again) {
			t.Fatal("the same stream folded to two states")
		}
		before := snapshot(first)
		for i, m := range msgs {
			out := first.Apply(base+uint64(i)+1, fuzzTime(i), m.subject, m.header, m.payload)
			if outs[i].Result == fold.ResultApplied && out.Result != fold.ResultSkipped {
				t.Fatalf("replayed message %d: %+v, want skipped", i, out)
			}
		}
		if !reflect.DeepEqual(before, snapshot(first)) {
			t.Fatal("replaying the stream onto its fold changed it")
		}
	})
}

// fuzzTTLs are short beside the second between fuzzed messages, so that
// objects expire, and start afresh, within one input.
var fuzzTTLs = fold.TTLs{Cell: 2 * time.Second, Formation: 3 * time.Second}

func newFuzzState() *fold.State {
	s := fold.NewState()
	s.TTLs = fuzzTTLs
	return s
}

// fuzzTime is the JetStream time of the i-th fuzzed message: one a second.
func fuzzTime(i int) time.Time {
	return time.Date(2027, 1, 1, 0, 0, i, 0, time.UTC)
}

type message struct {
	subject string
	header  map[string][]string
	payload []byte
}

// fuzzSubject is every fuzzed message's subject: the operator's own subject
// of the seeds' formation, so that the events that claim to be the
// operator's carry ownership facts.
const fuzzSubject = "cellos.events.formation.02daa0b3-49a7-a4bf-8050-cbb812881d4e"

// split cuts the fuzzer's input into messages.
func split(input []byte) []message {
	parts := bytes.Split(input, []byte{0x1e})
	if len(parts) > 64 {
		parts = parts[:64]
	}
	msgs := make([]message, 0, len(parts))
	for _, p := range parts {
		head, payload, binary := bytes.Cut(p, []byte{0x1f})
		if !binary {
			msgs = append(msgs, message{subject: fuzzSubject, payload: p})
			continue
		}
		header := map[string][]string{}
		for _, line := range strings.Split(string(head), "\n") {
			if name, value, ok := strings.Cut(line, ":"); ok {
				header[name] = append(header[name], strings.TrimLeft(value, " "))
			}
		}
		msgs = append(msgs, message{subject: fuzzSubject, header: header, payload: payload})
	}
	return msgs
}

// snapshot is a deep copy of the state.
func snapshot(s *fold.State) *fold.State {
	c := fold.NewState()
	for id, f := range s.Formations {
		cp := *f
		cp.Document = append(json.RawMessage(nil), f.Document...)
		c.Formations[id] = &cp
	}
	for id, cell := range s.Cells {
		cp := *cell
		if cell.ExitCode != nil {
			v := *cell.ExitCode
			cp.ExitCode = &v
		}
		if cell.StartedAt != nil {
			v := *cell.StartedAt
			cp.StartedAt = &v
		}
		if cell.DestroyedAt != nil {
			v := *cell.DestroyedAt
			cp.DestroyedAt = &v
		}
		c.Cells[id] = &cp
	}
	return c
}

func checkOutcome(t *testing.T, seq uint64, out fold.Outcome) {
	t.Helper()
	if out.Seq != seq {
		t.Fatalf("outcome of sequence %d says %d", seq, out.Seq)
	}
	switch out.Family {
	case fold.FamilyCell, fold.FamilyFormation, fold.FamilyOther:
	default:
		t.Fatalf("sequence %d: family %q", seq, out.Family)
	}
	switch out.Result {
	case fold.ResultApplied:
		if out.Reason != "" {
			t.Fatalf("sequence %d applied with a reason: %+v", seq, out)
		}
	case fold.ResultIgnored, fold.ResultRejected, fold.ResultSkipped:
		if out.Reason == "" || out.FormationID != "" || out.CellID != "" {
			t.Fatalf("sequence %d %s names an object or gives no reason: %+v", seq, out.Result, out)
		}
	default:
		t.Fatalf("sequence %d: result %q", seq, out.Result)
	}
}

// checkChange checks that out changed exactly what it says it did: released
// the objects it names as expired, then applied its event.
func checkChange(t *testing.T, before, after *fold.State, out fold.Outcome) {
	t.Helper()
	for _, e := range out.Expired {
		held := map[fold.Kind]bool{fold.CellKind: before.Cells[e.ID] != nil, fold.FormationKind: before.Formations[e.ID] != nil}
		if !held[e.Kind] {
			t.Fatalf("sequence %d released %s %q, which the fold did not hold", out.Seq, e.Kind, e.ID)
		}
		if e.Kind == fold.FormationKind {
			delete(before.Formations, e.ID)
		} else {
			delete(before.Cells, e.ID)
		}
	}
	if out.Result != fold.ResultApplied {
		if !reflect.DeepEqual(before, snapshot(after)) {
			t.Fatalf("sequence %d, %s, changed the state", out.Seq, out.Result)
		}
		return
	}
	changed := snapshot(after)
	switch out.Family {
	case fold.FamilyFormation:
		f := changed.Formations[out.FormationID]
		if f == nil || f.LastAppliedSequence != out.Seq || out.CellID != "" {
			t.Fatalf("sequence %d applied to formation %q, which does not record it", out.Seq, out.FormationID)
		}
		if old := before.Formations[out.FormationID]; old != nil && old.LastAppliedSequence >= out.Seq {
			t.Fatalf("sequence %d applied to formation %q already at %d", out.Seq, out.FormationID, old.LastAppliedSequence)
		}
		delete(changed.Formations, out.FormationID)
		delete(before.Formations, out.FormationID)
	case fold.FamilyCell:
		c := changed.Cells[out.CellID]
		if c == nil || c.LastAppliedSequence != out.Seq || out.FormationID != "" {
			t.Fatalf("sequence %d applied to cell %q, which does not record it", out.Seq, out.CellID)
		}
		if old := before.Cells[out.CellID]; old != nil && old.LastAppliedSequence >= out.Seq {
			t.Fatalf("sequence %d applied to cell %q already at %d", out.Seq, out.CellID, old.LastAppliedSequence)
		}
		delete(changed.Cells, out.CellID)
		delete(before.Cells, out.CellID)
	default:
		t.Fatalf("sequence %d applied in family %q", out.Seq, out.Family)
	}
	if !reflect.DeepEqual(before, changed) {
		t.Fatalf("sequence %d changed another object than %q%q", out.Seq, out.FormationID, out.CellID)
	}
}

// checkKeys checks how objects are keyed and named.
func checkKeys(t *testing.T, s *fold.State) {
	t.Helper()
	for key, f := range s.Formations {
		u, err := uuid.Parse(key)
		if err != nil || u.String() != key || f.ID != key {
			t.Fatalf("formation keyed %q (id %q) is not a lower-case hyphenated UUID", key, f.ID)
		}
		checkName(t, store.ObjectName(key))
	}
	for key, c := range s.Cells {
		if c.ID != key {
			t.Fatalf("cell keyed %q has id %q", key, c.ID)
		}
		checkName(t, store.ObjectName(key))
	}
}

func checkName(t *testing.T, name string) {
	t.Helper()
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		t.Fatalf("object name %q: %s", name, fmt.Sprint(errs))
	}
}
