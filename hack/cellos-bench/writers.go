package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/internal/fold"
	"cellos.dev/cellos-operator/internal/jetstream"
	"cellos.dev/cellos-operator/internal/status"
	"cellos.dev/cellos-operator/internal/store"
)

// The two writers the operator is measured against. Both create objects as
// the operator does (same names, labels and owner references) and write
// the status the operator's builders (internal/status) make, so that the
// API server stores the same objects whoever wrote them; the ceiling can
// also write minimal objects instead (minimal.go), for what the objects
// themselves cost.

// newFormation is a Formation first seen in the stream, as the operator
// creates it.
func newFormation(ns, id string) *cellosv1.Formation {
	return &cellosv1.Formation{ObjectMeta: metav1.ObjectMeta{
		Namespace: ns, Name: store.ObjectName(id),
		Labels: map[string]string{cellosv1.FormationIDLabel: id},
	}}
}

// newCell is a Cell first seen in the stream, labelled with its formation
// and owned by its Formation when its uid is known.
func newCell(ns, id, formationID string, owner types.UID) *cellosv1.Cell {
	c := &cellosv1.Cell{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: store.ObjectName(id)}}
	if formationID != "" {
		c.Labels = map[string]string{cellosv1.FormationIDLabel: formationID}
		if owner != "" {
			c.OwnerReferences = []metav1.OwnerReference{{
				APIVersion: cellosv1.GroupVersion.String(), Kind: "Formation",
				Name: store.ObjectName(formationID), UID: owner,
			}}
		}
	}
	return c
}

// retry runs a write until it succeeds, at most a few times: the writers
// are alone on their objects, so a failure is the API server being busy.
func retry(ctx context.Context, what string, write func() error) error {
	var err error
	for attempt := range 5 {
		if err = write(); err == nil || ctx.Err() != nil {
			return err
		}
		time.Sleep(time.Duration(attempt+1) * 50 * time.Millisecond)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// naive is the projector anyone would write first: it reads the stream in
// order and, for each event, Gets the object the event changed, creates it
// if it is missing, then writes its status with Status().Update. One event
// at a time, nothing cached, nothing coalesced.
type naive struct {
	c      client.Client
	ns     string
	stream store.Stream
	state  *fold.State
	uids   map[string]types.UID // formation id → its Formation's uid
	failed atomic.Int64
	last   atomic.Uint64
}

func newNaive(c client.Client, ns string, stream store.Stream) *naive {
	return &naive{c: c, ns: ns, stream: stream, state: fold.NewState(), uids: map[string]types.UID{}}
}

// run consumes the stream from its first event until ctx ends.
func (n *naive) run(ctx context.Context, env *natsEnv) error {
	consumer := jetstream.NewConsumer(env.js, env.stream.Name)
	consumer.StreamCreated = env.stream.Created
	return consumer.Run(ctx, 1, func(ctx context.Context, msg jetstream.Message) error {
		out := n.state.Apply(msg.Sequence, msg.Time, msg.Subject, msg.Header, msg.Payload)
		if out.Result == fold.ResultApplied {
			var err error
			switch out.Family {
			case fold.FamilyFormation:
				err = retry(ctx, "formation", func() error { return n.formation(ctx, out.FormationID) })
			case fold.FamilyCell:
				err = retry(ctx, "cell", func() error { return n.cell(ctx, out.CellID) })
			}
			if err != nil && ctx.Err() == nil {
				n.failed.Add(1)
			}
		}
		n.last.Store(msg.Sequence)
		return nil
	})
}

func (n *naive) formation(ctx context.Context, id string) error {
	want := n.state.Formations[id]
	f := &cellosv1.Formation{}
	err := n.c.Get(ctx, client.ObjectKey{Namespace: n.ns, Name: store.ObjectName(id)}, f)
	if apierrors.IsNotFound(err) {
		f = newFormation(n.ns, id)
		err = n.c.Create(ctx, f)
	}
	if err != nil {
		return err
	}
	n.uids[id] = f.UID
	ref := store.Ref{Kind: store.FormationKind, ID: id}
	f.Status = status.FormationStatus(want, store.Stamp(n.stream, ref, want.LastAppliedSequence), n.state.Counts(id), f.Generation, f.Status.Conditions, time.Now())
	return n.c.Status().Update(ctx, f)
}

func (n *naive) cell(ctx context.Context, id string) error {
	want := n.state.Cells[id]
	c := &cellosv1.Cell{}
	err := n.c.Get(ctx, client.ObjectKey{Namespace: n.ns, Name: store.ObjectName(id)}, c)
	if apierrors.IsNotFound(err) {
		c = newCell(n.ns, id, want.FormationID, n.uids[want.FormationID])
		err = n.c.Create(ctx, c)
	}
	if err != nil {
		return err
	}
	ref := store.Ref{Kind: store.CellKind, ID: id}
	c.Status = status.CellStatus(want, store.Stamp(n.stream, ref, want.LastAppliedSequence), c.Generation, c.Status.Conditions, time.Now())
	return n.c.Status().Update(ctx, c)
}

// ceiling is the writer no projector can beat: it knows every object's
// final status from the fold of the whole stream, and writes each object
// with the minimum, one create and one status write, with 16 writes in
// flight. It writes nothing before the stream holds the event that
// justifies it: a Formation is created once its first event is
// acknowledged, and every status is written once the object's last event
// is. Its objects are the operator's, or minimal ones (shape).
type ceiling struct {
	c       client.Client
	ns      string
	o       *projection
	shape   objectShape
	tasks   chan func() error
	created map[string]*createdFormation
	failed  atomic.Int64
	wg      sync.WaitGroup
	// pending counts the tasks not yet done; lastAt is when the last one
	// ended.
	pending atomic.Int64
	lastAt  atomic.Int64
}

type createdFormation struct {
	done chan struct{}
	f    client.Object // set before done closes; nil if creation failed
}

// ceilingWorkers is how many writes the ceiling has in flight.
const ceilingWorkers = 16

func newCeiling(ctx context.Context, c client.Client, ns string, o *projection, shape objectShape) *ceiling {
	w := &ceiling{c: c, ns: ns, o: o, shape: shape, tasks: make(chan func() error, 2*o.objects()+1), created: map[string]*createdFormation{}}
	for id := range o.final.Formations {
		w.created[id] = &createdFormation{done: make(chan struct{})}
	}
	// A Formation's create and status, and a Cell's task.
	w.pending.Store(int64(2*len(o.final.Formations) + len(o.final.Cells)))
	for range ceilingWorkers {
		w.wg.Go(func() {
			for task := range w.tasks {
				if err := task(); err != nil && ctx.Err() == nil {
					w.failed.Add(1)
				}
				if w.pending.Add(-1) == 0 {
					w.lastAt.Store(time.Now().UnixNano())
				}
			}
		})
	}
	return w
}

// ack is told each sequence the stream acknowledged, in order.
func (w *ceiling) ack(ctx context.Context, seq uint64) {
	ref := w.o.refs[seq-1]
	if ref.Kind == "" {
		return
	}
	seqs := w.o.seqsOf[ref]
	first, last := seqs[0] == seq, seqs[len(seqs)-1] == seq
	switch ref.Kind {
	case store.FormationKind:
		if first {
			w.tasks <- func() error { return w.createFormation(ctx, ref.ID) }
		}
		if last {
			w.tasks <- func() error { return w.formationStatus(ctx, ref.ID) }
		}
	case store.CellKind:
		if last {
			w.tasks <- func() error { return w.cell(ctx, ref.ID) }
		}
	}
}

// doneAt is when the last write ended; zero before.
func (w *ceiling) doneAt() time.Time {
	if ns := w.lastAt.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// close waits for the writes queued so far.
func (w *ceiling) close() {
	close(w.tasks)
	w.wg.Wait()
}

func (w *ceiling) createFormation(ctx context.Context, id string) error {
	cf := w.created[id]
	defer close(cf.done)
	f := w.shape.newFormation(w.ns, id)
	if err := retry(ctx, "creating Formation", func() error { return w.c.Create(ctx, f) }); err != nil {
		return err
	}
	cf.f = f
	return nil
}

func (w *ceiling) formationStatus(ctx context.Context, id string) error {
	cf := w.created[id]
	<-cf.done
	if cf.f == nil {
		return errors.New("formation not created")
	}
	f := cf.f
	w.shape.setFormationStatus(f, w.o, id)
	return retry(ctx, "writing Formation status", func() error { return w.c.Status().Update(ctx, f) })
}

func (w *ceiling) cell(ctx context.Context, id string) error {
	want := w.o.final.Cells[id]
	var owner types.UID
	if cf, ok := w.created[want.FormationID]; ok {
		<-cf.done
		if cf.f != nil {
			owner = cf.f.GetUID()
		}
	}
	c := w.shape.newCell(w.ns, id, want.FormationID, owner)
	if err := retry(ctx, "creating Cell", func() error { return w.c.Create(ctx, c) }); err != nil {
		return err
	}
	w.shape.setCellStatus(c, w.o, id)
	return retry(ctx, "writing Cell status", func() error { return w.c.Status().Update(ctx, c) })
}
