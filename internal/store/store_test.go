package store

import (
	"context"
	"fmt"
	"testing"
	"time"

	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"cellos.dev/cellos-operator/internal/fold"
)

func started(cellID, formationID string) []byte {
	return fmt.Appendf(nil, `{"type":"dev.cellos.events.cell.lifecycle.v1.started","time":"2026-11-28T12:00:00Z","data":{"cellId":%q,"formationId":%q}}`, cellID, formationID)
}

// createdA is the created event of formationA.
func createdA() []byte {
	return fmt.Appendf(nil, `{"type":"dev.cellos.events.cell.formation.v1.created","data":{"formationId":%q}}`, formationA)
}

const formationA = "02daa0b3-49a7-a4bf-8050-cbb812881d4e"

// controlled is a Store whose controllers have started, as on a leader,
// with at most maxUnflushed objects unflushed (0: no bound).
func controlled(maxUnflushed int) *Store {
	s := New(maxUnflushed, "", 0, fold.TTLs{})
	s.startAnnouncing(FormationKind)
	s.startAnnouncing(CellKind)
	return s
}

// apply folds payload at seq and returns the object it changed, taking its
// id off the store's channel as a controller would.
func apply(t *testing.T, s *Store, seq uint64, payload []byte) Ref {
	t.Helper()
	out := s.Apply(context.Background(), seq, time.Time{}, "", nil, payload)
	ref, ok := RefOf(out)
	if ok {
		<-s.lagging[ref.Kind]
		s.take(ref)
	}
	return ref
}

// An object changed by many events before its controller takes its id is
// announced once; an event after the controller took it announces it again.
func TestAnObjectWaitsForItsControllerOnce(t *testing.T) {
	s := controlled(0)
	ctx := context.Background()
	for seq := range uint64(3) {
		s.Apply(ctx, seq+1, time.Time{}, "", nil, started("cell-0", ""))
	}
	s.Apply(ctx, 4, time.Time{}, "", nil, started("cell-1", ""))
	if n := len(s.lagging[CellKind]); n != 2 {
		t.Fatalf("%d ids wait for the controller after 3 events of cell-0 and 1 of cell-1, want 2", n)
	}
	first := <-s.lagging[CellKind]
	s.take(Ref{Kind: CellKind, ID: first.Object})
	s.Apply(ctx, 5, time.Time{}, "", nil, started("cell-0", ""))
	s.Apply(ctx, 6, time.Time{}, "", nil, started("cell-1", ""))
	if n := len(s.lagging[CellKind]); n != 2 {
		t.Fatalf("%d ids wait after cell-0 was taken and both changed again, want 2 (cell-1 still waiting, cell-0 again)", n)
	}
}

func TestWatermarkWaitsForEveryWrite(t *testing.T) {
	s := controlled(0)
	f := apply(t, s, 1, createdA())
	c0 := apply(t, s, 2, started("cell-0", formationA))
	apply(t, s, 3, []byte(`not json`))
	c1 := apply(t, s, 4, started("cell-1", formationA))
	if w := s.Watermark(); w != 0 {
		t.Fatalf("watermark %d before any write, want 0", w)
	}
	s.Flushed(s.Stream(), c0, 2)
	if w := s.Watermark(); w != 0 {
		t.Fatalf("watermark %d with the formation unwritten, want 0", w)
	}
	s.Flushed(s.Stream(), f, 1)
	if w := s.Watermark(); w != 3 {
		t.Fatalf("watermark %d with only cell-1 unwritten, want 3", w)
	}
	s.Flushed(s.Stream(), c1, 4)
	if w := s.Watermark(); w != 4 {
		t.Fatalf("watermark %d with all written, want 4", w)
	}
}

func TestEventsAfterASnapshotKeepTheObjectDirty(t *testing.T) {
	s := controlled(0)
	c := apply(t, s, 1, started("cell-0", ""))
	apply(t, s, 2, started("cell-0", ""))
	// A write of the projection as of sequence 1 leaves sequence 2 unwritten.
	s.Flushed(s.Stream(), c, 1)
	if w := s.Watermark(); w != 1 {
		t.Fatalf("watermark %d, want 1", w)
	}
	s.Flushed(s.Stream(), c, 2)
	if w := s.Watermark(); w != 2 {
		t.Fatalf("watermark %d, want 2", w)
	}
}

func TestCellsNamed(t *testing.T) {
	s := controlled(0)
	apply(t, s, 1, createdA())
	apply(t, s, 2, started("Cell 0", formationA))
	if got := s.CellsNamed(ObjectName("Cell 0")); len(got) != 1 || got[0] != "Cell 0" {
		t.Errorf("CellsNamed(%s) = %q", ObjectName("Cell 0"), got)
	}
	if got := s.CellsNamed(formationA); len(got) != 0 {
		t.Errorf("a formation's name names cells %q", got)
	}
	// An id that is its own name is answered from the fold, not listed.
	apply(t, s, 3, started("cell-1", formationA))
	if got := s.CellsNamed("cell-1"); len(got) != 1 || got[0] != "cell-1" {
		t.Errorf("CellsNamed(cell-1) = %q", got)
	}
	if len(s.cellsNamed) != 1 {
		t.Errorf("%d names listed, want only the sanitized one: %q", len(s.cellsNamed), s.cellsNamed)
	}
}

func TestResetStartsAnotherStream(t *testing.T) {
	s := controlled(0)
	first := Stream{Name: "CELLOS_EVENTS", Created: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)}
	s.Reset(first)
	apply(t, s, 1, createdA())
	apply(t, s, 2, started("cell-0", formationA))
	second := Stream{Name: "CELLOS_EVENTS", Created: first.Created.Add(time.Hour)}
	s.Reset(second)
	if _, stream, ok := s.Formation(formationA); ok || stream != second {
		t.Fatalf("after Reset: formation kept %v, stream %v", ok, stream)
	}
	if w := s.Watermark(); w != 0 {
		t.Fatalf("watermark %d after Reset, want 0", w)
	}
	if got := s.CellsNamed(ObjectName("cell-0")); len(got) != 0 {
		t.Fatalf("names kept across Reset: %q", got)
	}
	// A write from the first stream's projection, settled late, does not
	// count for the second.
	f := apply(t, s, 1, createdA())
	s.Flushed(first, f, 1)
	if w := s.Watermark(); w != 0 {
		t.Fatalf("watermark %d after a late write of the old stream, want 0", w)
	}
}

func TestStampTellsStreamsAndSequencesApart(t *testing.T) {
	stream := Stream{Name: "CELLOS_EVENTS", Created: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)}
	ref := Ref{Kind: CellKind, ID: "cell-0"}
	base := Stamp(stream, ref, 7)
	if Stamp(stream, ref, 7) != base {
		t.Fatal("Stamp is not deterministic")
	}
	recreated := Stream{Name: stream.Name, Created: stream.Created.Add(time.Nanosecond)}
	for name, other := range map[string]string{
		"another stream":     Stamp(recreated, ref, 7),
		"another sequence":   Stamp(stream, ref, 8),
		"another object":     Stamp(stream, Ref{Kind: CellKind, ID: "cell-1"}, 7),
		"another kind":       Stamp(stream, Ref{Kind: FormationKind, ID: "cell-0"}, 7),
		"a shifted boundary": Stamp(Stream{Name: stream.Name + "C", Created: stream.Created}, Ref{Kind: "ell", ID: "cell-0"}, 7),
	} {
		if other == base {
			t.Errorf("%s has the same stamp", name)
		}
	}
}

func TestSourceHandsTheControllerItsIDsOnceReady(t *testing.T) {
	s := New(0, "", 0, fold.TTLs{})
	got := make(chan string, 2)
	h := handler.TypedFuncs[string, reconcile.Request]{
		GenericFunc: func(_ context.Context, e event.TypedGenericEvent[string], _ workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			got <- e.Object
		},
	}
	ready := make(chan struct{})
	src := Source(s, CellKind, ready, h)
	q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
	defer q.ShutDown()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := src.Start(ctx, q); err != nil {
		t.Fatal(err)
	}
	s.Apply(ctx, 1, time.Time{}, "", nil, started("cell-0", ""))
	select {
	case id := <-got:
		t.Fatalf("the controller got %q before the placement facts were ready", id)
	case <-time.After(200 * time.Millisecond):
	}
	close(ready)
	for _, want := range []string{"cell-0", "cell-1"} {
		if want == "cell-1" {
			s.Apply(ctx, 2, time.Time{}, "", nil, started(want, ""))
		}
		select {
		case id := <-got:
			if id != want {
				t.Fatalf("the controller got %q, want %s", id, want)
			}
		case <-time.After(time.Minute):
			t.Fatalf("the controller did not get %s", want)
		}
	}
}

// closedChannel is a ready that is ready at once.
func closedChannel() <-chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}

func TestAwaitRoomHoldsTheFoldAtTheBound(t *testing.T) {
	s := controlled(2)
	c0 := apply(t, s, 1, started("cell-0", ""))
	apply(t, s, 2, started("cell-1", ""))
	paused := make(chan int, 1)
	returned := make(chan struct{})
	go func() {
		s.AwaitRoom(context.Background(), func(n int) { paused <- n })
		close(returned)
	}()
	select {
	case n := <-paused:
		if n != 2 {
			t.Fatalf("paused at %d unflushed, want 2", n)
		}
	case <-time.After(time.Minute):
		t.Fatal("did not pause at the bound")
	}
	select {
	case <-returned:
		t.Fatal("returned before any object was flushed")
	default:
	}
	s.Flushed(s.Stream(), c0, 1)
	select {
	case <-returned:
	case <-time.After(time.Minute):
		t.Fatal("did not resume once an object was flushed")
	}
	// Below the bound it returns at once, without pausing.
	s.AwaitRoom(context.Background(), func(int) { t.Error("paused below the bound") })
}

// A store restored from another's snapshot holds the same fold and cell
// names, hands every object to its started controller, in the order of
// their last events, as dirty, and folds on from the sequence after the snapshot's.
func TestRestoreHandsEveryObjectOver(t *testing.T) {
	stream := Stream{Name: "S", Created: time.Unix(1, 0)}
	from := controlled(0)
	from.Reset(stream)
	apply(t, from, 1, createdA())
	apply(t, from, 2, started("cell-0", formationA))
	apply(t, from, 3, started("cell-1", formationA))
	apply(t, from, 4, []byte(`not json`))
	var snap Snapshot
	from.Snapshot(func(s Snapshot) { snap = s })
	if snap.Sequence != 4 || snap.Stream != stream || snap.Settings != from.Settings() {
		t.Fatalf("snapshot of sequence %d, stream %+v, settings %+v", snap.Sequence, snap.Stream, snap.Settings)
	}

	to := controlled(0)
	to.Reset(Stream{Name: "S", Created: time.Unix(2, 0)})
	to.Restore(context.Background(), snap)
	if f, c := to.Live(); f+c != 0 {
		t.Fatalf("restored the snapshot of another stream: %d formations, %d cells", f, c)
	}
	to.Reset(stream)
	to.Restore(context.Background(), snap)
	want := []Ref{{FormationKind, formationA}, {CellKind, "cell-0"}, {CellKind, "cell-1"}}
	for _, ref := range want {
		got := <-to.lagging[ref.Kind]
		if got.Object != ref.ID {
			t.Errorf("handed %s over, want %s", got.Object, ref.ID)
		}
		if !to.Lags(ref) {
			t.Errorf("%+v restored clean, want dirty", ref)
		}
	}
	if w := to.Watermark(); w != 0 {
		t.Errorf("watermark %d before any restored object is written, want 0", w)
	}
	if names := to.CellsNamed(ObjectName("cell-1")); len(names) != 1 || names[0] != "cell-1" {
		t.Errorf("cell names %v", names)
	}
	if got := apply(t, to, 5, started("cell-2", formationA)); got.ID != "cell-2" {
		t.Errorf("the event after the snapshot changed %+v", got)
	}
	if c := to.Counts(formationA); c.Total != 3 || c.Running != 3 {
		t.Errorf("counts %+v after the restore and one more cell, want 3 running", c)
	}
	for _, ref := range want {
		to.take(ref)
		to.Flushed(stream, ref, 3)
	}
	to.Flushed(stream, Ref{CellKind, "cell-2"}, 5)
	if w := to.Watermark(); w != 5 {
		t.Errorf("watermark %d once every object is written, want 5", w)
	}
}

// A standby folds without a controller to take its ids: the fold never
// waits for one, however many objects it changes, and the controller,
// when it starts on a new leader, is handed every object that lags, once.
func TestSourceHandsOverWhatWasFoldedBeforeItStarted(t *testing.T) {
	s := New(0, "", 0, fold.TTLs{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const cells = 3 * laggingBuffer
	folded := make(chan struct{})
	go func() {
		defer close(folded)
		for i := range cells {
			s.Apply(ctx, uint64(i+1), time.Time{}, "", nil, started(fmt.Sprintf("cell-%d", i), ""))
		}
		// Changed again: still one id.
		s.Apply(ctx, cells+1, time.Time{}, "", nil, started("cell-0", ""))
	}()
	select {
	case <-folded:
	case <-time.After(time.Minute):
		t.Fatal("the fold waited for a controller that has not started")
	}

	got := make(chan string, cells)
	h := handler.TypedFuncs[string, reconcile.Request]{
		GenericFunc: func(_ context.Context, e event.TypedGenericEvent[string], _ workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			got <- e.Object
		},
	}
	q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
	defer q.ShutDown()
	if err := Source(s, CellKind, closedChannel(), h).Start(ctx, q); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for len(seen) < cells {
		select {
		case id := <-got:
			if seen[id] {
				t.Fatalf("%s handed over twice", id)
			}
			seen[id] = true
		case <-time.After(time.Minute):
			t.Fatalf("the controller got %d of %d lagging cells", len(seen), cells)
		}
	}
	// From now on, each change is handed over as it is folded.
	s.Apply(ctx, cells+2, time.Time{}, "", nil, started("cell-new", ""))
	select {
	case id := <-got:
		if id != "cell-new" {
			t.Fatalf("the controller got %q after the hand-over, want cell-new", id)
		}
	case <-time.After(time.Minute):
		t.Fatal("a change after the controller started was not handed over")
	}
}

// A cell's event tells the Formation controller that its formation's counts
// changed, once while that id waits, and never holds the watermark back.
func TestCellEventsAnnounceTheirFormationsCounts(t *testing.T) {
	s := controlled(0)
	s.startAnnouncing(FormationCounts)
	apply(t, s, 1, createdA())
	ctx := context.Background()
	for seq, cell := range []string{"cell-0", "cell-1"} {
		s.Apply(ctx, uint64(seq+2), time.Time{}, "", nil, started(cell, formationA))
		e := <-s.lagging[CellKind]
		s.take(Ref{Kind: CellKind, ID: e.Object})
	}
	if got := len(s.lagging[FormationCounts]); got != 1 {
		t.Fatalf("%d count announcements waiting for two cells of one formation, want 1", got)
	}
	if e := <-s.lagging[FormationCounts]; e.Object != formationA {
		t.Fatalf("counts announced for %q, want %s", e.Object, formationA)
	}
	s.take(Ref{Kind: FormationCounts, ID: formationA})
	s.Flushed(s.Stream(), Ref{Kind: FormationKind, ID: formationA}, 1)
	s.Flushed(s.Stream(), Ref{Kind: CellKind, ID: "cell-0"}, 2)
	s.Flushed(s.Stream(), Ref{Kind: CellKind, ID: "cell-1"}, 3)
	if w := s.Watermark(); w != 3 {
		t.Fatalf("watermark %d once every object is flushed, want 3: counts hold nothing back", w)
	}
}
