package main

import (
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/internal/fold"
	"cellos.dev/cellos-operator/internal/simulator"
	"cellos.dev/cellos-operator/internal/store"
	"cellos.dev/cellos-operator/test/harness"
)

// projection is what the stream of a workload folds into, known before it
// is published: the harness oracle's fold (harness.Fold) of the events the
// bench publishes, in order, to a stream that starts empty, so that event i
// has sequence i+1. Besides every object's final projection, it knows which
// object each sequence changes, for the latency watch and the ceiling
// writer.
type projection struct {
	events []simulator.Event
	final  *fold.State
	// refs is the object each sequence changed (refs[seq-1]); Kind is empty
	// for an event that changed none.
	refs []store.Ref
	// seqsOf lists, for each object, the sequences that changed it.
	seqsOf map[store.Ref][]uint64
	// stream is the stream the events went to, for the stamps.
	stream store.Stream
	stamps map[store.Ref]string
}

func newProjection(events []simulator.Event) *projection {
	msgs := make([]harness.Message, len(events))
	for i, ev := range events {
		msgs[i] = harness.Message{Seq: uint64(i + 1), Subject: ev.Subject, Data: ev.Payload}
	}
	final, outs := harness.Fold(msgs)
	p := &projection{
		events: events,
		final:  final,
		refs:   make([]store.Ref, len(events)),
		seqsOf: map[store.Ref][]uint64{},
	}
	for i, out := range outs {
		ref, ok := store.RefOf(out)
		if !ok {
			continue
		}
		p.refs[i] = ref
		p.seqsOf[ref] = append(p.seqsOf[ref], uint64(i+1))
	}
	return p
}

// objects is how many objects the stream projects into.
func (p *projection) objects() int { return len(p.final.Formations) + len(p.final.Cells) }

// setStream records the stream the events went to, and each object's final
// stamp under it.
func (p *projection) setStream(s store.Stream) {
	p.stream = s
	p.stamps = make(map[store.Ref]string, len(p.seqsOf))
	for ref, seqs := range p.seqsOf {
		p.stamps[ref] = store.Stamp(s, ref, seqs[len(seqs)-1])
	}
}

// formationMatches tells whether a Formation is its formation's final
// projection, as the harness oracle compares it, with the fold's cell
// counts, status.finishedAt aside: the operator stamps it with the
// JetStream time of the final event, which the bench, folding the events
// before it publishes them, cannot know. The reliability and end-to-end
// suites, which fold what the stream stored, check it.
func (p *projection) formationMatches(f *cellosv1.Formation) bool {
	want, ok := p.final.Formations[f.Status.FormationID]
	if !ok {
		return false
	}
	withoutClock := *f
	withoutClock.Status.FinishedAt = nil
	return harness.FormationMismatch(p.stream, want, p.final.Counts(want.ID), &withoutClock) == ""
}

// observed is what the watch reads of an object: the id its status holds
// (ok is false before a status names one), the last sequence it reflects,
// and whether it is its final projection.
func (p *projection) observed(obj any) (ref store.Ref, seq int64, final, ok bool) {
	switch o := obj.(type) {
	case *cellosv1.Formation:
		ref, seq = store.Ref{Kind: store.FormationKind, ID: o.Status.FormationID}, o.Status.LastAppliedSequence
		final = p.formationMatches(o)
	case *cellosv1.Cell:
		ref, seq = store.Ref{Kind: store.CellKind, ID: o.Status.CellID}, o.Status.LastAppliedSequence
		final = p.cellMatches(o)
	case *unstructured.Unstructured:
		return p.minimalObserved(o)
	default:
		return ref, 0, false, false
	}
	return ref, seq, final, ref.ID != ""
}

// cellMatches tells whether a Cell is its cell's final projection, as the
// harness oracle compares it, status.finishedAt aside (see
// formationMatches).
func (p *projection) cellMatches(c *cellosv1.Cell) bool {
	want, ok := p.final.Cells[c.Status.CellID]
	if !ok {
		return false
	}
	withoutClock := *c
	withoutClock.Status.FinishedAt = nil
	return harness.CellMismatch(p.stream, want, &withoutClock) == ""
}
