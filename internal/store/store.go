package store

import (
	"context"
	"sync"
	"sync/atomic"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/internal/fold"
	"cellos.dev/cellos-operator/internal/status"
)

// Kind tells which kind of object a key names.
type Kind string

// The kinds the projection writes.
const (
	FormationKind Kind = "Formation"
	CellKind      Kind = "Cell"
)

// Ref names one object of the projection.
type Ref struct {
	Kind Kind
	Key  types.NamespacedName
}

// ObjectOf is an empty object of ref's kind at ref's key, to name it in a
// queue.
func ObjectOf(ref Ref) client.Object {
	var obj client.Object = &cellosv1.Cell{}
	if ref.Kind == FormationKind {
		obj = &cellosv1.Formation{}
	}
	obj.SetNamespace(ref.Key.Namespace)
	obj.SetName(ref.Key.Name)
	return obj
}

// Store is the projection shared between the one goroutine that folds the
// stream into it and the reconcilers that write it into status. It also keeps
// the low watermark: which sequences are reflected in status.
type Store struct {
	mu    sync.RWMutex
	state *fold.State
	// formations and cells map stream ids to object keys and back.
	formations, cells keyIndex
	// dirty holds, for each object whose status lags the projection, the
	// lowest sequence not yet written. The watermark stays below all of them.
	dirty map[Ref]uint64
	// processed is the highest sequence folded, whatever its result.
	processed uint64
	// streamLast is the stream's last sequence, as last seen.
	streamLast atomic.Uint64
	// distrust is set once the objects' sequences are known to count
	// another stream's events.
	distrust atomic.Bool

	// namespace receives objects first seen in the stream.
	namespace string
	// declared finds a declared Formation that already carries a formation id.
	declared func(id string) (types.NamespacedName, bool)
}

type keyIndex struct {
	byID  map[string]types.NamespacedName
	byKey map[types.NamespacedName]string
}

func newKeyIndex() keyIndex {
	return keyIndex{byID: map[string]types.NamespacedName{}, byKey: map[types.NamespacedName]string{}}
}

func (x keyIndex) put(id string, key types.NamespacedName) {
	x.byID[id] = key
	x.byKey[key] = id
}

// NewStore returns an empty Store that places new objects in namespace, or
// where declared finds a declared Formation for the formation's id.
func NewStore(namespace string, declared func(id string) (types.NamespacedName, bool)) *Store {
	return &Store{
		state:      fold.NewState(),
		formations: newKeyIndex(),
		cells:      newKeyIndex(),
		dirty:      map[Ref]uint64{},
		namespace:  namespace,
		declared:   declared,
	}
}

// Seed remembers where each object lives and, with records, loads the
// projection from the objects' status, so that a restarted operator skips
// what they already reflect. A status claiming a sequence the stream has not
// reached belongs to another stream, or was edited by hand: it is not loaded.
func (s *Store) Seed(formations []cellosv1.Formation, cells []cellosv1.Cell, records bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	streamLast := s.streamLast.Load()
	plausible := func(seq uint64) bool { return records && seq <= streamLast }
	for i := range formations {
		f := &formations[i]
		id := f.Labels[cellosv1.FormationIDLabel]
		if id == "" {
			id = f.Status.FormationID
		}
		if id == "" {
			continue
		}
		s.formations.put(id, types.NamespacedName{Namespace: f.Namespace, Name: f.Name})
		if rec, ok := status.FormationRecord(f.Status); ok && rec.ID == id && plausible(rec.LastAppliedSequence) {
			s.state.Formations[id] = rec
		}
	}
	for i := range cells {
		c := &cells[i]
		rec, ok := status.CellRecord(c.Status)
		if !ok {
			continue
		}
		s.cells.put(rec.ID, types.NamespacedName{Namespace: c.Namespace, Name: c.Name})
		if plausible(rec.LastAppliedSequence) {
			s.state.Cells[rec.ID] = rec
		}
	}
}

// SetStreamLast records the stream's last sequence, as last seen.
func (s *Store) SetStreamLast(seq uint64) { s.streamLast.Store(seq) }

// StreamLast is the stream's last sequence, as last seen.
func (s *Store) StreamLast() uint64 { return s.streamLast.Load() }

// Ahead tells whether a status already reflects later events than the
// projection: another writer got there first, and writing would move the
// status backwards. A status ahead of the whole stream is not believed: it
// belongs to another stream, or was edited by hand, and is overwritten; so is
// every status once DistrustStatus was called.
func (s *Store) Ahead(statusSequence int64, projected uint64) bool {
	return !s.distrust.Load() && statusSequence > int64(projected) && uint64(statusSequence) <= s.streamLast.Load()
}

// DistrustStatus makes Ahead false from now on: the stream was recreated, so
// the sequences in status count the old stream's events.
func (s *Store) DistrustStatus() { s.distrust.Store(true) }

// Apply folds one event and returns what it did, and for an applied event
// the object whose status now lags.
func (s *Store) Apply(seq uint64, payload []byte) (fold.Outcome, *Ref) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.state.Apply(seq, payload)
	if seq > s.processed {
		s.processed = seq
	}
	if out.Result != fold.ResultApplied {
		return out, nil
	}
	// The family, not the id, names the object: "" is a cell id like any other.
	var ref Ref
	switch out.Family {
	case fold.FamilyCell:
		ref = Ref{Kind: CellKind, Key: s.cellKey(s.state.Cells[out.CellID])}
	case fold.FamilyFormation:
		ref = Ref{Kind: FormationKind, Key: s.formationKey(out.FormationID)}
	default:
		return out, nil
	}
	if _, ok := s.dirty[ref]; !ok {
		s.dirty[ref] = seq
	}
	return out, &ref
}

// formationKey places a formation: where it already is, else on the
// declared Formation that carries its id, else in the default namespace.
func (s *Store) formationKey(id string) types.NamespacedName {
	if key, ok := s.formations.byID[id]; ok {
		return key
	}
	key, ok := s.declared(id)
	if !ok {
		key = types.NamespacedName{Namespace: s.namespace, Name: ObjectName(id)}
	}
	s.formations.put(id, key)
	return key
}

// cellKey places a cell: where it already is, else beside its formation
// (even one the stream has not named yet), else in the default namespace.
func (s *Store) cellKey(c *fold.Cell) types.NamespacedName {
	if key, ok := s.cells.byID[c.ID]; ok {
		return key
	}
	ns := s.namespace
	if c.FormationID != "" {
		ns = s.formationKey(c.FormationID).Namespace
	}
	key := types.NamespacedName{Namespace: ns, Name: ObjectName(c.ID)}
	s.cells.put(c.ID, key)
	return key
}

// Rebind moves a formation the stream already named to the declared
// Formation at key. The Formation at key must now be written, so the
// watermark waits for it.
func (s *Store) Rebind(id string, key types.NamespacedName) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.formations.byID[id]
	if !ok || old == key {
		return
	}
	delete(s.formations.byKey, old)
	s.formations.put(id, key)
	oldRef, newRef := Ref{Kind: FormationKind, Key: old}, Ref{Kind: FormationKind, Key: key}
	first, dirty := s.dirty[oldRef]
	delete(s.dirty, oldRef)
	if f, projected := s.state.Formations[id]; projected {
		if !dirty {
			first = f.LastAppliedSequence
		}
		s.dirty[newRef] = first
	}
}

// Formation returns a copy of the projection of the Formation at key.
func (s *Store) Formation(key types.NamespacedName) (*fold.Formation, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	id, ok := s.formations.byKey[key]
	if !ok {
		return nil, false
	}
	f, ok := s.state.Formations[id]
	if !ok {
		return nil, false
	}
	c := *f
	return &c, true
}

// Cell returns a copy of the projection of the Cell at key.
func (s *Store) Cell(key types.NamespacedName) (*fold.Cell, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	id, ok := s.cells.byKey[key]
	if !ok {
		return nil, false
	}
	c, ok := s.state.Cells[id]
	if !ok {
		return nil, false
	}
	cp := *c
	return &cp, true
}

// FormationKey returns where the formation with this id lives, if known.
func (s *Store) FormationKey(id string) (types.NamespacedName, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	key, ok := s.formations.byID[id]
	return key, ok
}

// Flushed records that the object's status now reflects every event up to
// seq. Events folded into it after that keep it dirty.
func (s *Store) Flushed(ref Ref, seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	first, ok := s.dirty[ref]
	if !ok || first > seq {
		return
	}
	if s.lastApplied(ref) <= seq {
		delete(s.dirty, ref)
		return
	}
	s.dirty[ref] = seq + 1
}

func (s *Store) lastApplied(ref Ref) uint64 {
	switch ref.Kind {
	case FormationKind:
		if f, ok := s.state.Formations[s.formations.byKey[ref.Key]]; ok {
			return f.LastAppliedSequence
		}
	case CellKind:
		if id, ok := s.cells.byKey[ref.Key]; ok {
			return s.state.Cells[id].LastAppliedSequence
		}
	}
	return 0
}

// Watermark is the highest sequence at or below which every event is
// reflected in status, or was ignored or rejected.
func (s *Store) Watermark() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	w := s.processed
	for _, first := range s.dirty {
		if first-1 < w {
			w = first - 1
		}
	}
	return w
}

// SetProcessed records that the stream is consumed up to seq without
// folding, for a start from a cursor.
func (s *Store) SetProcessed(seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if seq > s.processed {
		s.processed = seq
	}
}

// DeclaredFormations finds, through r, a Formation that already carries a
// formation id: a declared Formation that the stream's events belong to.
func DeclaredFormations(ctx context.Context, r client.Reader) func(id string) (types.NamespacedName, bool) {
	return func(id string) (types.NamespacedName, bool) {
		var list cellosv1.FormationList
		if err := r.List(ctx, &list, client.MatchingLabels{cellosv1.FormationIDLabel: id}); err != nil || len(list.Items) == 0 {
			return types.NamespacedName{}, false
		}
		return client.ObjectKeyFromObject(&list.Items[0]), true
	}
}
