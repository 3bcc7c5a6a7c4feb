package main

import (
	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/internal/fold"
	"cellos.dev/cellos-operator/internal/simulator"
	"cellos.dev/cellos-operator/internal/status"
	"cellos.dev/cellos-operator/internal/store"
)

// oracle knows what the stream of a workload folds into, event by event and
// at its end: which object each sequence changes, and every object's final
// projection. It is the pure fold (internal/fold) run over the events the
// harness publishes, in order, to a stream that starts empty, so that event
// i has sequence i+1.
type oracle struct {
	events []simulator.Event
	final  *fold.State
	// refs is the object each sequence changed (refs[seq-1]); Kind is empty
	// for an event that changed none.
	refs []store.Ref
	// seqsOf lists, for each object, the sequences that changed it.
	seqsOf map[store.Ref][]uint64
	// counts are each formation's final cell counts.
	counts map[string]cellosv1.CellCounts
	// cellsOf lists each formation's cells.
	cellsOf map[string][]string
	// stream is the stream the events went to, for the stamps.
	stream store.Stream
	stamps map[store.Ref]string
}

func newOracle(events []simulator.Event) *oracle {
	o := &oracle{
		events:  events,
		final:   fold.NewState(),
		refs:    make([]store.Ref, len(events)),
		seqsOf:  map[store.Ref][]uint64{},
		counts:  map[string]cellosv1.CellCounts{},
		cellsOf: map[string][]string{},
	}
	for i, ev := range events {
		seq := uint64(i + 1)
		out := o.final.Apply(seq, ev.Subject, nil, ev.Payload)
		ref, ok := store.RefOf(out)
		if !ok {
			continue
		}
		o.refs[i] = ref
		o.seqsOf[ref] = append(o.seqsOf[ref], seq)
	}
	cells := map[string][]cellosv1.Cell{}
	for id, c := range o.final.Cells {
		if c.FormationID == "" {
			continue
		}
		o.cellsOf[c.FormationID] = append(o.cellsOf[c.FormationID], id)
		cells[c.FormationID] = append(cells[c.FormationID], cellosv1.Cell{Status: cellosv1.CellStatus{State: c.State}})
	}
	for id, cs := range cells {
		o.counts[id] = status.CountCells(cs)
	}
	return o
}

// objects is how many objects the stream projects into.
func (o *oracle) objects() int { return len(o.final.Formations) + len(o.final.Cells) }

// setStream records the stream the events went to, and each object's final
// stamp under it.
func (o *oracle) setStream(s store.Stream) {
	o.stream = s
	o.stamps = make(map[store.Ref]string, len(o.seqsOf))
	for ref, seqs := range o.seqsOf {
		o.stamps[ref] = store.Stamp(s, ref, seqs[len(seqs)-1])
	}
}

// formationMatches tells whether a Formation's status is its formation's
// final projection: phase, sequence, stamp and cell counts.
func (o *oracle) formationMatches(id string, st *cellosv1.FormationStatus) bool {
	f, ok := o.final.Formations[id]
	return ok && st.FormationID == id && st.LastAppliedSequence == int64(f.LastAppliedSequence) &&
		st.Phase == f.Phase && st.CellCounts == o.counts[id] &&
		st.StreamStamp == o.stamps[store.Ref{Kind: store.FormationKind, ID: id}]
}

// cellMatches tells whether a Cell's status is its cell's final projection.
func (o *oracle) cellMatches(id string, st *cellosv1.CellStatus) bool {
	c, ok := o.final.Cells[id]
	if !ok || st.CellID != id || st.LastAppliedSequence != int64(c.LastAppliedSequence) ||
		st.State != c.State || st.Outcome != c.Outcome || st.FormationID != c.FormationID ||
		st.StreamStamp != o.stamps[store.Ref{Kind: store.CellKind, ID: id}] {
		return false
	}
	if (st.ExitCode == nil) != (c.ExitCode == nil) {
		return false
	}
	return st.ExitCode == nil || *st.ExitCode == *c.ExitCode
}
