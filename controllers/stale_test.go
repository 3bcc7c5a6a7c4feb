package controllers

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/internal/store"
)

// Replicas that are behind, and statuses of another stream: the streamStamp
// decides whether a status ahead of a replica's projection is newer (held) or
// wrong (overwritten).

// startReplica runs the reconcilers with a store folding stream: replicas
// given the same stream share its identity, as two operators reading the same
// JetStream stream do.
func startReplica(t *testing.T, namespace string, stream store.Stream) *reconcilers {
	t.Helper()
	r := startReconcilers(t, namespace)
	// Nothing is folded yet, so nothing was written under the identity
	// startReconcilers chose; the stream was empty at start.
	r.store.Reset(stream)
	r.store.MarkReplayed(stream)
	return r
}

// foldTo folds events (events[i] at sequence i+1) up to sequence n.
func (r *reconcilers) foldTo(t *testing.T, events []string, n int) {
	t.Helper()
	for int(r.nextSequence) < n {
		r.apply(t, events[r.nextSequence])
	}
}

// lifecycle is the events of one formation with one cell, in stream order:
// the formation ends at the last event, and the cell at the one before.
func lifecycle(formationID, cellID string, exitCode int) []string {
	at := func(minute int) string {
		return time.Date(2026, 11, 28, 12, minute, 0, 0, time.UTC).Format(time.RFC3339)
	}
	return []string{
		`{"type":"dev.cellos.events.cell.formation.v1.created","data":{"formationId":"` + formationID + `","formationName":"f-` + cellID + `"}}`,
		`{"type":"dev.cellos.events.cell.lifecycle.v1.started","time":"` + at(1) + `","data":{"cellId":"` + cellID + `","specId":"spec-1","runId":"run-` + cellID + `","formationId":"` + formationID + `"}}`,
		fmt.Sprintf(`{"type":"dev.cellos.events.cell.command.v1.completed","data":{"cellId":"%s","exitCode":%d}}`, cellID, exitCode),
		`{"type":"dev.cellos.events.cell.formation.v1.running","data":{"formationId":"` + formationID + `"}}`,
		`{"type":"dev.cellos.events.cell.lifecycle.v1.destroyed","time":"` + at(2) + `","data":{"cellId":"` + cellID + `","outcome":"succeeded"}}`,
		`{"type":"dev.cellos.events.cell.formation.v1.completed","data":{"formationId":"` + formationID + `"}}`,
	}
}

// sequenceLog watches every Formation and Cell of a namespace and records
// each lastAppliedSequence it sees: a status that moves backwards, even for
// a moment before another replica puts it forward again, is recorded.
type sequenceLog struct {
	mu        sync.Mutex
	last      map[string]int64
	backwards []string
}

func watchSequences(t *testing.T, namespace string) *sequenceLog {
	t.Helper()
	c, err := client.NewWithWatch(controlPlane.Config, client.Options{Scheme: controlPlane.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &sequenceLog{last: map[string]int64{}}
	var wg sync.WaitGroup
	for _, list := range []client.ObjectList{&cellosv1.FormationList{}, &cellosv1.CellList{}} {
		w, err := c.Watch(ctx, list, client.InNamespace(namespace))
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		wg.Go(func() {
			defer w.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case ev, ok := <-w.ResultChan():
					if !ok {
						if ctx.Err() == nil {
							l.record("watch", -1, "the watch ended early")
						}
						return
					}
					if ev.Type != watch.Added && ev.Type != watch.Modified {
						continue
					}
					switch obj := ev.Object.(type) {
					case *cellosv1.Formation:
						l.record("Formation "+obj.Name, obj.Status.LastAppliedSequence, obj.ResourceVersion)
					case *cellosv1.Cell:
						l.record("Cell "+obj.Name, obj.Status.LastAppliedSequence, obj.ResourceVersion)
					}
				}
			}
		})
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
	return l
}

func (l *sequenceLog) record(key string, seq int64, rv string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if last, ok := l.last[key]; seq < 0 || (ok && seq < last) {
		l.backwards = append(l.backwards, fmt.Sprintf("%s: lastAppliedSequence %d after %d (resourceVersion %s)", key, seq, l.last[key], rv))
	}
	l.last[key] = max(l.last[key], seq)
}

// check fails t for every backward move seen, and when the watch saw fewer
// than objects objects.
func (l *sequenceLog) check(t *testing.T, objects int) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, b := range l.backwards {
		t.Errorf("status moved backwards: %s", b)
	}
	if len(l.last) < objects {
		t.Errorf("the watch saw %d objects, want %d", len(l.last), objects)
	}
}

// objectsOf reads the Formation and the Cell of one round.
func objectsOf(ns, formationID, cellID string) (*cellosv1.Formation, *cellosv1.Cell, error) {
	ctx := context.Background()
	var f cellosv1.Formation
	if err := controlPlane.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: formationID}, &f); err != nil {
		return nil, nil, err
	}
	var c cellosv1.Cell
	if err := controlPlane.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: cellID}, &c); err != nil {
		return nil, nil, err
	}
	return &f, &c, nil
}

// settled waits until a replica's watermark reaches seq: it has reconciled
// every object it folded, each held or written.
func (r *reconcilers) settled(t *testing.T, what string, seq int) {
	t.Helper()
	eventually(t, what, func() error {
		if w := r.store.Watermark(); w < uint64(seq) {
			return fmt.Errorf("watermark %d, want %d", w, seq)
		}
		return nil
	})
}

// A replica behind the status never writes it: replica A folds a formation
// and its cell to the end and writes them; replica B, of the same stream, has
// folded only part of their events and must hold. B starts behind, after A's
// first writes, then is told of new events while it runs; every other round
// both fold at once, so that B may reconcile before A's write reaches its
// cache. A watch sees every write: no status may ever go back, even for the
// moment before A would put it forward again.
func TestStaleReplicaNeverMovesStatusBack(t *testing.T) {
	ns := newNamespace(t)
	stream := store.Stream{Name: "CELLOS_EVENTS", Created: time.Now().Add(-time.Hour)}
	seqs := watchSequences(t, ns)
	a := startReplica(t, ns, stream)
	var b *reconcilers
	var events []string

	const rounds = 8
	for round := range rounds {
		// Ids are cluster-wide: each run has its own.
		formationID := uuid.NewString()
		cellID := fmt.Sprintf("%s-%d", ns, round)
		base := len(events)
		events = append(events, lifecycle(formationID, cellID, round)...)
		n := len(events)
		// B stops after the cell's exit code: behind on both objects, the
		// formation by five events and the cell by two.
		k := base + 3
		// A is done with the round once both statuses are at the end, the
		// Formation counts its destroyed Cell, and the Cell is owned: nothing
		// is left for A to write.
		aDone := func() error {
			f, c, err := objectsOf(ns, formationID, cellID)
			if err != nil {
				return err
			}
			if f.Status.LastAppliedSequence != int64(n) || c.Status.LastAppliedSequence != int64(n-1) {
				return fmt.Errorf("formation at %d, cell at %d; want %d and %d", f.Status.LastAppliedSequence, c.Status.LastAppliedSequence, n, n-1)
			}
			if f.Status.CellCounts.Destroyed != 1 || len(c.OwnerReferences) != 1 {
				return fmt.Errorf("formation counts %+v, cell owners %v", f.Status.CellCounts, c.OwnerReferences)
			}
			return nil
		}

		if round%2 == 1 {
			// Both at once, event by event.
			for s := base; s < n; s++ {
				a.foldTo(t, events, s+1)
				if s < k {
					b.foldTo(t, events, s+1)
				}
			}
			eventually(t, "A's statuses at the end", aDone)
			b.settled(t, "B settles", k)
			if err := aDone(); err != nil {
				t.Fatalf("round %d, both folding, B at %d: %v", round, k, err)
			}
			b.foldTo(t, events, n)
			continue
		}

		a.foldTo(t, events, n)
		eventually(t, "A's statuses at the end", aDone)
		f, c, err := objectsOf(ns, formationID, cellID)
		if err != nil {
			t.Fatal(err)
		}
		if b == nil {
			b = startReplica(t, ns, stream)
		}
		b.foldTo(t, events, k)
		b.settled(t, "B settles", k)
		// A has nothing left to write, so any change is B's: for a while
		// after B settled, nothing changes.
		deadline := time.Now().Add(time.Second)
		for {
			f2, c2, err := objectsOf(ns, formationID, cellID)
			if err != nil {
				t.Fatal(err)
			}
			if f2.ResourceVersion != f.ResourceVersion || c2.ResourceVersion != c.ResourceVersion {
				t.Fatalf("round %d: replica B, at sequence %d, wrote: formation at %d (resourceVersion %s, was %s), cell at %d (resourceVersion %s, was %s); A had written %d and %d",
					round, k, f2.Status.LastAppliedSequence, f2.ResourceVersion, f.ResourceVersion,
					c2.Status.LastAppliedSequence, c2.ResourceVersion, c.ResourceVersion, n, n-1)
			}
			if time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		b.foldTo(t, events, n)
	}
	b.settled(t, "B catches up", len(events))
	a.settled(t, "A is done", len(events))
	seqs.check(t, 2*rounds)
}

// A status ahead of the projection is trusted only under a stamp valid for
// this stream, this object and that sequence. The status of an earlier
// stream of the same name, further along than the new stream, is overwritten;
// so is a sequence raised by hand; one stamped for this stream is held.
func TestStaleStreamStatusIsOverwritten(t *testing.T) {
	ns := newNamespace(t)
	// Ids are cluster-wide: each run has its own.
	formationID, cellID := uuid.NewString(), ns+"-recreated"
	old := store.Stream{Name: "CELLOS_EVENTS", Created: time.Now().Add(-time.Hour)}
	fresh := store.Stream{Name: "CELLOS_EVENTS", Created: old.Created.Add(time.Minute)}

	// The old stream: ten events of another cell, then the whole lifecycle,
	// so that its statuses stand at 16 and 15.
	var oldEvents []string
	for i := range 10 {
		oldEvents = append(oldEvents, fmt.Sprintf(`{"type":"dev.cellos.events.cell.command.v1.completed","data":{"cellId":"`+ns+`-padding","exitCode":%d}}`, i))
	}
	oldEvents = append(oldEvents, lifecycle(formationID, cellID, 7)...)
	t.Run("the old stream's replica writes", func(t *testing.T) {
		a := startReplica(t, ns, old)
		a.foldTo(t, oldEvents, len(oldEvents))
		eventually(t, "the old stream's statuses", func() error {
			f, c, err := objectsOf(ns, formationID, cellID)
			if err != nil {
				return err
			}
			if f.Status.LastAppliedSequence != 16 || c.Status.LastAppliedSequence != 15 {
				return fmt.Errorf("formation at %d, cell at %d", f.Status.LastAppliedSequence, c.Status.LastAppliedSequence)
			}
			return nil
		})
	}) // and stops

	b := startReplica(t, ns, fresh)
	// The new stream has the formation created and the cell started only.
	b.foldTo(t, lifecycle(formationID, cellID, 0), 2)
	formationRef := store.Ref{Kind: store.FormationKind, ID: formationID}
	cellRef := store.Ref{Kind: store.CellKind, ID: cellID}
	eventually(t, "the new stream's statuses replace the old stream's", func() error {
		f, c, err := objectsOf(ns, formationID, cellID)
		if err != nil {
			return err
		}
		fs, cs := f.Status, c.Status
		if fs.Phase != cellosv1.FormationPending || fs.LastAppliedSequence != 1 || fs.StreamStamp != store.Stamp(fresh, formationRef, 1) {
			return fmt.Errorf("formation %s at %d, stamp %s", fs.Phase, fs.LastAppliedSequence, fs.StreamStamp)
		}
		if cs.State != cellosv1.CellRunning || cs.LastAppliedSequence != 2 || cs.ExitCode != nil || cs.DestroyedAt != nil ||
			cs.Outcome != "" || cs.StreamStamp != store.Stamp(fresh, cellRef, 2) {
			return fmt.Errorf("cell %s at %d, exit code %v, destroyed at %v, outcome %q, stamp %s",
				cs.State, cs.LastAppliedSequence, cs.ExitCode, cs.DestroyedAt, cs.Outcome, cs.StreamStamp)
		}
		return nil
	})

	// A sequence raised by hand, the stamp left as it was: overwritten.
	ctx := context.Background()
	key := types.NamespacedName{Namespace: ns, Name: cellID}
	var c cellosv1.Cell
	if err := controlPlane.Client.Get(ctx, key, &c); err != nil {
		t.Fatal(err)
	}
	c.Status.LastAppliedSequence = 1000
	c.Status.State = cellosv1.CellDestroyed
	if err := controlPlane.Client.Status().Update(ctx, &c); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a sequence raised by hand is put back", func() error {
		var c cellosv1.Cell
		if err := controlPlane.Client.Get(ctx, key, &c); err != nil {
			return err
		}
		if c.Status.LastAppliedSequence != 2 || c.Status.State != cellosv1.CellRunning {
			return fmt.Errorf("cell %s at %d", c.Status.State, c.Status.LastAppliedSequence)
		}
		return nil
	})

	// The same, stamped as this stream stamps sequence 1000: a replica
	// further along wrote it, and it is held.
	if err := controlPlane.Client.Get(ctx, key, &c); err != nil {
		t.Fatal(err)
	}
	c.Status.LastAppliedSequence = 1000
	c.Status.StreamStamp = store.Stamp(fresh, cellRef, 1000)
	if err := controlPlane.Client.Status().Update(ctx, &c); err != nil {
		t.Fatal(err)
	}
	held := c.ResourceVersion
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		var c cellosv1.Cell
		if err := controlPlane.Client.Get(ctx, key, &c); err != nil {
			t.Fatal(err)
		}
		if c.ResourceVersion != held {
			t.Fatalf("a status stamped for this stream at 1000 was rewritten: now at %d", c.Status.LastAppliedSequence)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
