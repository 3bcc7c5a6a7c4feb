package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/internal/cursor"
	"cellos.dev/cellos-operator/internal/fold"
	"cellos.dev/cellos-operator/internal/status"
	"cellos.dev/cellos-operator/internal/store"
)

// The oracle: what every Formation and Cell must be is the pure fold
// (internal/fold) of the stream, read back from JetStream (ReadStream) or
// known beforehand (Fold). Mismatches compares a namespace's objects with
// it; FormationMismatch and CellMismatch compare one object, as a watch
// sees it.

// Expectation is what the objects of a namespace must be: the fold of a
// stream up to its last sequence.
type Expectation struct {
	Stream store.Stream
	Last   uint64
	State  *fold.State
	// Leftover allows an object of an id the stream no longer names (its
	// events were purged, or belong to a stream since deleted): it must
	// then be exactly as Leftover's state has it, under Leftover's stream,
	// and keeps the cell counts it has.
	Leftover *Expectation
}

// Expect is the expectation of a snapshot for an operator that keeps
// every object: the fold of its messages.
func Expect(snap Snapshot) Expectation {
	return ExpectTTLs(snap, fold.TTLs{}, time.Time{})
}

// ExpectTTLs is the expectation of a snapshot, at now, for an operator with
// ttls: the fold of its messages with those TTLs, less every object that
// has expired by now, which must have been deleted.
func ExpectTTLs(snap Snapshot, ttls fold.TTLs, now time.Time) Expectation {
	state, _ := FoldTTLs(snap.Messages, ttls)
	expired := func(at time.Time, ok bool) bool { return ok && !now.Before(at) }
	for id, f := range state.Formations {
		if expired(f.Expires(ttls)) {
			delete(state.Formations, id)
			for cell := range state.Tallies[id].Live {
				delete(state.Cells, cell)
			}
		}
	}
	for id, c := range state.Cells {
		if expired(c.Expires(ttls)) {
			delete(state.Cells, id)
		}
	}
	return Expectation{Stream: snap.Stream, Last: snap.Last, State: state}
}

// Cursor is the position the cursor must reach: want's last sequence, of
// want's stream.
func (want Expectation) Cursor() cursor.Position {
	return cursor.Position{Stream: want.Stream.Name, StreamCreated: want.Stream.Created, Sequence: want.Last}
}

// Mismatches lists every Formation and Cell of ns and compares them with
// want, as Compare does.
func Mismatches(ctx context.Context, c client.Reader, ns string, want Expectation) ([]string, error) {
	var formations cellosv1.FormationList
	if err := c.List(ctx, &formations, client.InNamespace(ns)); err != nil {
		return nil, err
	}
	var cells cellosv1.CellList
	if err := c.List(ctx, &cells, client.InNamespace(ns)); err != nil {
		return nil, err
	}
	return Compare(formations.Items, cells.Items, want), nil
}

// Compare compares the Formations and Cells of one namespace with want:
// each id the fold names is on exactly one object, named after it, whose
// status is its projection (a Formation's cell counts being the fold's);
// every Cell has a status; and no object holds an id the fold does not
// name, unless want.Leftover allows it. It
// returns one entry per id that differs (per formation or cell id, and per
// extra id), and one per Cell without a status, sorted; an entry that shows
// got and want spans lines.
func Compare(formations []cellosv1.Formation, cells []cellosv1.Cell, want Expectation) []string {
	var bad []string
	byFormation := map[string][]*cellosv1.Formation{}
	for i := range formations {
		f := &formations[i]
		id := f.Labels[cellosv1.FormationIDLabel]
		byFormation[id] = append(byFormation[id], f)
	}
	byCell := map[string][]*cellosv1.Cell{}
	for i := range cells {
		c := &cells[i]
		if c.Status.LastAppliedSequence == 0 {
			bad = append(bad, fmt.Sprintf("Cell %s has no status", c.Name))
			continue
		}
		byCell[c.Status.CellID] = append(byCell[c.Status.CellID], c)
	}

	checkFormation := func(id string, exp Expectation, leftover bool) {
		found := byFormation[id]
		if len(found) != 1 {
			bad = append(bad, fmt.Sprintf("formation %s: on %d Formations, want 1", id, len(found)))
			return
		}
		// A Formation only purged events or a deleted stream named keeps
		// its last status, cell counts included, even as its Cells change.
		counts := exp.State.Counts(id)
		if leftover {
			counts = found[0].Status.CellCounts
		}
		if diff := FormationMismatch(exp.Stream, exp.State.Formations[id], counts, found[0]); diff != "" {
			bad = append(bad, fmt.Sprintf("formation %s:%s", id, diff))
		}
	}
	checkCell := func(id string, exp Expectation) {
		found := byCell[id]
		if len(found) != 1 {
			bad = append(bad, fmt.Sprintf("cell %.80q: on %d Cells, want 1", id, len(found)))
			return
		}
		if diff := CellMismatch(exp.Stream, exp.State.Cells[id], found[0]); diff != "" {
			bad = append(bad, fmt.Sprintf("cell %.80q:%s", id, diff))
		}
	}

	for id := range want.State.Formations {
		checkFormation(id, want, false)
	}
	for id := range want.State.Cells {
		checkCell(id, want)
	}
	for id := range byFormation {
		if _, ok := want.State.Formations[id]; ok {
			continue
		}
		if old := want.Leftover; old != nil && old.State.Formations[id] != nil {
			checkFormation(id, *old, true)
			continue
		}
		bad = append(bad, fmt.Sprintf("extra Formation of formation %q, which the stream does not name", id))
	}
	for id := range byCell {
		if _, ok := want.State.Cells[id]; ok {
			continue
		}
		if old := want.Leftover; old != nil && old.State.Cells[id] != nil {
			checkCell(id, *old)
			continue
		}
		bad = append(bad, fmt.Sprintf("extra Cell of cell %.80q, which the stream does not name", id))
	}
	slices.Sort(bad)
	return bad
}

// FormationMismatch is "" when f is the Formation the fold wants for the
// formation want of stream, with counts as its cell counts: named after its
// id, with its id, name, phase, sequence, stamp and document. Otherwise it
// says what differs, starting with a space or a new line.
func FormationMismatch(stream store.Stream, want *fold.Formation, counts cellosv1.CellCounts, f *cellosv1.Formation) string {
	s := f.Status
	got := fmt.Sprint(f.Name, "|", s.FormationID, "|", s.FormationName, "|", s.Phase, "|", s.LastAppliedSequence, "|", s.StreamStamp, "|", s.CellCounts,
		"|", metaTimeString(s.FinishedAt))
	exp := fmt.Sprint(store.ObjectName(want.ID), "|", want.ID, "|", want.Name, "|", want.Phase, "|", want.LastAppliedSequence, "|",
		store.Stamp(stream, store.Ref{Kind: store.FormationKind, ID: want.ID}, want.LastAppliedSequence), "|", counts, "|", foldTimeString(want.FinishedAt))
	if got != exp {
		return fmt.Sprintf("\n   got %s\n  want %s", got, exp)
	}
	if !sameDocument(want.Document, s.Document) {
		return fmt.Sprintf(" document %.80s, want %.80s", rawString(s.Document), want.Document)
	}
	return ""
}

// CellMismatch is "" when c is the Cell the fold wants for the cell want of
// stream: named after its id, with every field of its projection and its
// stamp. Otherwise it says what differs, starting with a new line.
func CellMismatch(stream store.Stream, want *fold.Cell, c *cellosv1.Cell) string {
	s := c.Status
	got := strings.Join([]string{c.Name, s.CellID, s.SpecID, s.RunID, s.FormationID, string(s.State),
		metaTimeString(s.StartedAt), metaTimeString(s.DestroyedAt), s.Outcome, exitCodeString(s.ExitCode),
		fmt.Sprint(s.LastAppliedSequence), s.StreamStamp, metaTimeString(s.FinishedAt)}, "|")
	exp := strings.Join([]string{store.ObjectName(want.ID), want.ID, want.SpecID, want.RunID, want.FormationID, string(want.State),
		foldTimeString(want.StartedAt), foldTimeString(want.DestroyedAt), want.Outcome, exitCodeString(want.ExitCode),
		fmt.Sprint(want.LastAppliedSequence), store.Stamp(stream, store.Ref{Kind: store.CellKind, ID: want.ID}, want.LastAppliedSequence),
		foldTimeString(want.FinishedAt)}, "|")
	if got != exp {
		return fmt.Sprintf("\n   got %.300s\n  want %.300s", got, exp)
	}
	return ""
}

// Head is the first n lines, and how many more there are.
func Head(lines []string, n int) []string {
	if len(lines) > n {
		return append(lines[:n:n], fmt.Sprintf("... and %d more", len(lines)-n))
	}
	return lines
}

// sameDocument tells whether status holds the document the fold kept: the
// same JSON, or none when the API server could not store it.
func sameDocument(doc json.RawMessage, got *runtime.RawExtension) bool {
	var v any
	if json.Unmarshal(doc, &v) != nil || v == nil {
		return got == nil
	}
	return status.SameDocument(&runtime.RawExtension{Raw: doc}, got)
}

func rawString(r *runtime.RawExtension) string {
	if r == nil {
		return "<none>"
	}
	return string(r.Raw)
}

func metaTimeString(t *metav1.Time) string {
	if t == nil {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// foldTimeString is a time of the fold as the API server keeps it: to the
// second.
func foldTimeString(t *time.Time) string {
	if t == nil {
		return ""
	}
	return t.Truncate(time.Second).UTC().Format(time.RFC3339)
}

func exitCodeString(p *int32) string {
	if p == nil {
		return "nil"
	}
	return fmt.Sprint(*p)
}
