// Package store holds the projection between the one goroutine that folds the
// stream into it and the controllers that write it into status: the folded
// state, which objects' status lags it, and the low watermark that the cursor
// commits.
//
// The store knows objects by their stream ids; the controllers carry the id
// in each request, from the store's hand-off to the reconcile. Which object,
// in which namespace, holds an id is the controllers' decision, made from
// their cache; the store does no I/O beyond handing the controllers the ids
// that changed. The one name it keeps is each cell's object name
// (CellsNamed), to settle which of two cell ids that meet one name keeps it.
package store

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"time"

	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/source"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/internal/fold"
)

// Kind tells which kind of object a stream id names.
type Kind = fold.Kind

// The kinds the projection writes.
const (
	FormationKind = fold.FormationKind
	CellKind      = fold.CellKind
)

// FormationCounts is not a kind of object but what the Formation controller
// is told besides its lagging formations: the formations whose cells the
// fold changed, as their counts follow the fold (Counts) rather than the
// Cells' writes. So a burst of cell events folded at once costs a
// Formation one count write per count window, not one per Cell written
// over the burst. They hold no watermark back, as a Formation's stamp does
// not cover its counts: they are never dirty, and a Source of them hands
// over nothing when it starts, when the Formation controller reconciles
// every Formation its informer lists anyway.
const FormationCounts Kind = "FormationCounts"

// Ref names one projected object by its kind and stream id.
type Ref struct {
	Kind Kind
	ID   string
}

// Stream identifies one incarnation of a stream: a stream deleted and
// recreated under the same name numbers other events with the same
// sequences, and only its creation time tells the two apart.
type Stream struct {
	Name    string
	Created time.Time
}

// laggingBuffer is how many changed ids wait for a controller before the
// fold blocks, so that a slow API server slows the consumer down instead of
// growing memory.
const laggingBuffer = 1024

// Store is the projection of one stream. Create it with New.
type Store struct {
	mu     sync.RWMutex
	stream Stream
	state  *fold.State
	// cellsNamed holds the sanitized cell ids by their object name, in the
	// order the stream first named them (see CellsNamed and nameCell).
	cellsNamed map[string][]string
	// dirty holds, for each object whose status lags the projection, the
	// lowest sequence not yet written. The watermark stays below all of them.
	dirty map[Ref]uint64
	// processed is the highest sequence folded, whatever its result.
	processed uint64

	// lagging carries the ids whose status lags, one channel per kind.
	lagging map[Kind]chan event.TypedGenericEvent[string]
	// announcing tells, per kind, whether its controller takes ids: from
	// when the controller starts its Source, which it does on the leader
	// only. Until then no id is sent, as none would be taken: a standby
	// folds the stream with its every object dirty, and the Source hands
	// them all over when it starts.
	announcing map[Kind]bool
	// announced holds the objects whose id is on its way to the controller.
	// An id is sent once until the controller takes it, however many events
	// change the object meanwhile: the controller reads the projection as it
	// is when it takes the id, so one id stands for them all.
	announced map[Ref]bool

	// maxUnflushed bounds the dirty objects; 0 leaves them unbounded.
	maxUnflushed int
	// room is signalled whenever an object is flushed, to wake AwaitRoom.
	room chan struct{}
	// replayed is closed once the fold has reached the end the stream had
	// when its fold began.
	replayed chan struct{}
	// operatorPrefix is where the operator publishes, the one subject prefix
	// whose events may state ownership facts.
	operatorPrefix string
	// maxEventBytes is the largest message the fold accepts.
	maxEventBytes int
	// ttls say how long the fold holds final objects.
	ttls fold.TTLs
}

// New returns an empty Store that lets at most maxUnflushed objects lag
// their status before AwaitRoom holds the fold back (0: no bound), and
// takes ownership facts only from the operator's events below
// operatorPrefix (fold.DefaultOperatorPrefix when empty), and refuses
// messages larger than maxEventBytes (fold.DefaultMaxEventBytes when 0),
// and releases final objects after ttls.
func New(maxUnflushed int, operatorPrefix string, maxEventBytes int, ttls fold.TTLs) *Store {
	s := &Store{
		lagging: map[Kind]chan event.TypedGenericEvent[string]{
			FormationKind:   make(chan event.TypedGenericEvent[string], laggingBuffer),
			CellKind:        make(chan event.TypedGenericEvent[string], laggingBuffer),
			FormationCounts: make(chan event.TypedGenericEvent[string], laggingBuffer),
		},
		announcing:     map[Kind]bool{},
		maxUnflushed:   maxUnflushed,
		room:           make(chan struct{}, 1),
		operatorPrefix: operatorPrefix,
		maxEventBytes:  maxEventBytes,
		ttls:           ttls,
	}
	s.Reset(Stream{})
	return s
}

// Reset empties the projection, to fold stream from its first event: at start,
// and again when the stream was recreated under the same name.
func (s *Store) Reset(stream Stream) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stream = stream
	s.state = fold.NewState()
	s.state.OperatorPrefix = s.operatorPrefix
	s.state.MaxEventBytes = s.maxEventBytes
	s.state.TTLs = s.ttls
	s.cellsNamed = map[string][]string{}
	s.dirty = map[Ref]uint64{}
	s.announced = map[Ref]bool{}
	s.processed = 0
	s.replayed = make(chan struct{})
	s.signalRoom()
}

// MarkReplayed records that the fold of stream has reached the end the
// stream had when its fold began: every object the stream names is known.
func (s *Store) MarkReplayed(stream Stream) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if stream != s.stream {
		return
	}
	select {
	case <-s.replayed:
	default:
		close(s.replayed)
	}
}

// Replayed is closed once the fold of the stream returned with it has
// reached the end that stream had when its fold began.
func (s *Store) Replayed() (<-chan struct{}, Stream) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.replayed, s.stream
}

// Unflushed is how many objects' status lags the projection.
func (s *Store) Unflushed() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.dirty)
}

// AwaitRoom blocks while the bound of unflushed objects is reached, so that
// the fold stops pulling the stream while the API server cannot take the
// writes (it is down, or slower than the stream), and memory stays bounded.
// paused is called once if it has to wait. It returns when there is room or
// ctx ends.
func (s *Store) AwaitRoom(ctx context.Context, paused func(unflushed int)) {
	for notified := false; ; notified = true {
		n := s.Unflushed()
		if s.maxUnflushed == 0 || n < s.maxUnflushed {
			return
		}
		if !notified {
			paused(n)
		}
		select {
		case <-s.room:
		case <-ctx.Done():
			return
		}
	}
}

func (s *Store) signalRoom() {
	select {
	case s.room <- struct{}{}:
	default:
	}
}

// Stream is the stream the projection is of.
func (s *Store) Stream() Stream {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.stream
}

// Source is the channel of kind's lagging ids in s, for that kind's
// controller, whose requests are of type R. h turns an id into requests; it
// reads the projection after the store counts the id as taken, so that an
// event folded meanwhile sends it again.
//
// When it starts, the Source first hands over every object of its kind
// whose status lags: a controller starts with an empty queue, on a replica
// that may have folded the stream long before, as a standby does. It hands
// over nothing until ready is closed: h places objects from facts that load
// apart from the fold (the tombstones of deleted formations), and an id
// placed before they load could bring back what they forbid.
func Source[R comparable](s *Store, kind Kind, ready <-chan struct{}, h handler.TypedEventHandler[string, R]) source.TypedSource[R] {
	return &lagSource[R]{
		TypedSource: source.TypedChannel(s.lagging[kind], handler.TypedFuncs[string, R]{
			GenericFunc: func(ctx context.Context, e event.TypedGenericEvent[string], q workqueue.TypedRateLimitingInterface[R]) {
				s.take(Ref{Kind: kind, ID: e.Object})
				h.Generic(ctx, e, q)
			},
		}),
		store: s,
		kind:  kind,
		ready: ready,
	}
}

// lagSource is the channel of one kind's lagging ids, which it fills, when
// it starts, with the ids of every object of that kind that lags.
type lagSource[R comparable] struct {
	source.TypedSource[R]
	store *Store
	kind  Kind
	ready <-chan struct{}
}

// Start reads the channel and, once ready, announces the kind's changes to
// it, starting with the ids that lagged before, sent in the background:
// there may be more than it holds. Until then the fold keeps marking objects
// dirty without announcing them, so none is lost.
func (l *lagSource[R]) Start(ctx context.Context, q workqueue.TypedRateLimitingInterface[R]) error {
	if err := l.TypedSource.Start(ctx, q); err != nil {
		return err
	}
	go func() {
		select {
		case <-l.ready:
		case <-ctx.Done():
			return
		}
		for _, id := range l.store.startAnnouncing(l.kind) {
			select {
			case l.store.lagging[l.kind] <- event.TypedGenericEvent[string]{Object: id}:
			case <-ctx.Done():
				return
			}
		}
	}()
	return nil
}

// startAnnouncing records that kind's controller takes its ids from now on,
// and returns those of the objects that lag already, counted as announced.
func (s *Store) startAnnouncing(kind Kind) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.announcing[kind] = true
	var ids []string
	for ref := range s.dirty {
		if ref.Kind == kind && !s.announced[ref] {
			s.announced[ref] = true
			ids = append(ids, ref.ID)
		}
	}
	return ids
}

// take records that the controller has taken ref's id off its channel.
func (s *Store) take(ref Ref) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.announced, ref)
}

// Apply folds one message, published on subject and stored at time at, and
// tells the controllers what it changed: the object, and for a cell its
// formation's counts (FormationCounts), each unless it already waits for
// its controller or that controller has not started. It blocks while a
// controller is laggingBuffer ids behind, until ctx ends.
func (s *Store) Apply(ctx context.Context, seq uint64, at time.Time, subject string, header map[string][]string, payload []byte) fold.Outcome {
	out, announce, n := s.apply(seq, at, subject, header, payload)
	for _, ref := range announce[:n] {
		select {
		case s.lagging[ref.Kind] <- event.TypedGenericEvent[string]{Object: ref.ID}:
		case <-ctx.Done():
		}
	}
	return out
}

// apply folds one message and returns, in announce[:n], what to tell the
// controllers: an array rather than a slice, as this runs for every event.
func (s *Store) apply(seq uint64, at time.Time, subject string, header map[string][]string, payload []byte) (out fold.Outcome, announce [2]Ref, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out = s.state.Apply(seq, at, subject, header, payload)
	s.processed = max(s.processed, seq)
	s.forget(out.Expired)
	ref, ok := RefOf(out)
	if !ok {
		return out, announce, 0
	}
	if _, ok := s.dirty[ref]; !ok {
		s.dirty[ref] = seq
		if ref.Kind == CellKind {
			s.nameCell(ref.ID)
		}
	}
	if s.claim(ref) {
		announce[n], n = ref, n+1
	}
	if ref.Kind == CellKind {
		if formation := s.state.Cells[ref.ID].FormationID; formation != "" && s.claim(Ref{Kind: FormationCounts, ID: formation}) {
			announce[n], n = Ref{Kind: FormationCounts, ID: formation}, n+1
		}
	}
	return out, announce, n
}

// forget drops what the store keeps of released objects: a status no longer
// lags a projection that is gone, and a released cell id no longer claims
// its object name.
func (s *Store) forget(released []fold.Expiry) {
	for _, e := range released {
		ref := Ref(e)
		delete(s.dirty, ref)
		if ref.Kind == CellKind {
			name := ObjectName(ref.ID)
			s.cellsNamed[name] = slices.DeleteFunc(s.cellsNamed[name], func(id string) bool { return id == ref.ID })
			if len(s.cellsNamed[name]) == 0 {
				delete(s.cellsNamed, name)
			}
		}
	}
	if len(released) > 0 {
		s.signalRoom()
	}
}

// Live counts the objects of each kind the fold holds.
func (s *Store) Live() (formations, cells int) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.state.Formations), len(s.state.Cells)
}

// Counts returns the counts of formation id's cells, expired ones
// included.
func (s *Store) Counts(id string) cellosv1.CellCounts {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.state.Counts(id)
}

// nameCell records id under its object name, once, after the ids the
// stream named before it. An id that is its own name shares it with no other
// (ObjectName), so only sanitized ids are recorded: a list for every cell
// cost each live cell about 90 bytes.
func (s *Store) nameCell(id string) {
	name := ObjectName(id)
	if name == id {
		return
	}
	if !slices.Contains(s.cellsNamed[name], id) {
		s.cellsNamed[name] = append(s.cellsNamed[name], id)
	}
}

// RefOf names the object an applied event changed, if any. The family, not the id,
// tells the kind: "" is a cell id like any other.
func RefOf(out fold.Outcome) (Ref, bool) {
	if out.Result != fold.ResultApplied {
		return Ref{}, false
	}
	switch out.Family {
	case fold.FamilyCell:
		return Ref{Kind: CellKind, ID: out.CellID}, true
	case fold.FamilyFormation:
		return Ref{Kind: FormationKind, ID: out.FormationID}, true
	}
	return Ref{}, false
}

// Formation returns a copy of the projection of the formation with this id,
// and the stream it is of: read together, so that a status is never stamped
// with a stream its content did not come from.
func (s *Store) Formation(id string) (fold.Formation, Stream, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	f, ok := s.state.Formations[id]
	if !ok {
		return fold.Formation{}, s.stream, false
	}
	return *f, s.stream, true
}

// Cell returns a copy of the projection of the cell with this id, and the
// stream it is of.
func (s *Store) Cell(id string) (fold.Cell, Stream, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	c, ok := s.state.Cells[id]
	if !ok {
		return fold.Cell{}, s.stream, false
	}
	return *c, s.stream, true
}

// CellsNamed returns the cell ids whose object name is name, in the order
// the stream first named them. Distinct ids share a name only by a
// collision of 128 bits of SHA-256 (see ObjectName), so there is almost
// always one. A request carries its own id only, so when two such ids race
// for a Cell that no status claims yet, this order alone tells that the
// first keeps it; the Cell controller refuses the others in the open.
// Formations need no such list: their ids are canonical UUIDs, which are
// their own object names.
func (s *Store) CellsNamed(name string) []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if ids, ok := s.cellsNamed[name]; ok {
		return slices.Clone(ids)
	}
	if _, ok := s.state.Cells[name]; ok {
		return []string{name}
	}
	return nil
}

// Lags tells whether ref's status lags the projection: some event folded
// into it is not yet reflected.
func (s *Store) Lags(ref Ref) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	_, ok := s.dirty[ref]
	return ok
}

// Flushed records that ref's status now reflects every event up to seq of
// stream. Events folded into it after that keep it dirty, and so does a
// write from the projection of a stream since replaced.
func (s *Store) Flushed(stream Stream, ref Ref, seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if stream != s.stream {
		return
	}
	first, ok := s.dirty[ref]
	if !ok || first > seq {
		return
	}
	if s.lastApplied(ref) <= seq {
		delete(s.dirty, ref)
		s.signalRoom()
		return
	}
	s.dirty[ref] = seq + 1
}

func (s *Store) lastApplied(ref Ref) uint64 {
	switch ref.Kind {
	case FormationKind:
		if f, ok := s.state.Formations[ref.ID]; ok {
			return f.LastAppliedSequence
		}
	case CellKind:
		if c, ok := s.state.Cells[ref.ID]; ok {
			return c.LastAppliedSequence
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
		w = min(w, first-1)
	}
	return w
}

// Settings are what the store's fold is configured with that changes its
// result: a fold under other settings is not the same fold.
type Settings struct {
	OperatorPrefix string
	MaxEventBytes  int
	TTLs           fold.TTLs
}

// Settings returns the store's settings, defaults filled in.
func (s *Store) Settings() Settings {
	st := Settings{OperatorPrefix: s.operatorPrefix, MaxEventBytes: s.maxEventBytes, TTLs: s.ttls}
	if st.OperatorPrefix == "" {
		st.OperatorPrefix = fold.DefaultOperatorPrefix
	}
	if st.MaxEventBytes <= 0 {
		st.MaxEventBytes = fold.DefaultMaxEventBytes
	}
	return st
}

// Snapshot is the store's projection of Stream up to Sequence, whole, for
// a checkpoint: the fold and the cell ids by object name.
type Snapshot struct {
	Stream   Stream
	Sequence uint64
	Settings Settings
	State    *fold.State
	// CellsNamed is what CellsNamed answers from.
	CellsNamed map[string][]string
}

// Snapshot calls use with the projection as it is. It runs under the read
// lock, so that no event is folded meanwhile and the state is exactly the
// fold up to the sequence it says; use must neither change nor keep it.
func (s *Store) Snapshot(use func(Snapshot)) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	use(Snapshot{Stream: s.stream, Sequence: s.processed, Settings: s.Settings(), State: s.state, CellsNamed: s.cellsNamed})
}

// Restore takes snap, a checkpoint of the stream the store was Reset to, as
// the fold up to snap.Sequence, and hands every object it holds to the
// controllers, as folding those events would have: they compare each
// status with it. A controller that has started gets them in the order of
// their last events, and Restore blocks like Apply; one that has not gets
// them when it starts. The store keeps snap.State and snap.CellsNamed as
// its own.
func (s *Store) Restore(ctx context.Context, snap Snapshot) {
	refs := s.restore(snap)
	for _, ref := range refs {
		select {
		case s.lagging[ref.Kind] <- event.TypedGenericEvent[string]{Object: ref.ID}:
		case <-ctx.Done():
			return
		}
	}
}

func (s *Store) restore(snap Snapshot) []Ref {
	s.mu.Lock()
	defer s.mu.Unlock()
	if snap.Stream != s.stream {
		return nil
	}
	s.state, s.cellsNamed, s.processed = snap.State, snap.CellsNamed, snap.Sequence
	s.state.OperatorPrefix, s.state.MaxEventBytes, s.state.TTLs = s.operatorPrefix, s.maxEventBytes, s.ttls
	s.state.Reindex()
	if s.cellsNamed == nil {
		s.cellsNamed = map[string][]string{}
	}
	refs := make([]Ref, 0, len(s.state.Formations)+len(s.state.Cells))
	for id := range s.state.Formations {
		refs = append(refs, Ref{Kind: FormationKind, ID: id})
	}
	for id := range s.state.Cells {
		refs = append(refs, Ref{Kind: CellKind, ID: id})
	}
	slices.SortFunc(refs, func(a, b Ref) int { return cmp.Compare(s.lastApplied(a), s.lastApplied(b)) })
	for _, ref := range refs {
		// Which event of the object was first is not kept: its status is
		// behind from the start, as far as the watermark can tell.
		s.dirty[ref] = 1
	}
	return s.toAnnounce(refs)
}

// toAnnounce keeps of refs, in place, those to send to their controllers
// now (claim).
func (s *Store) toAnnounce(refs []Ref) []Ref {
	announce := refs[:0]
	for _, ref := range refs {
		if s.claim(ref) {
			announce = append(announce, ref)
		}
	}
	return announce
}

// claim tells whether ref is to be sent to its controller now, and counts
// it as announced: a controller not yet started is handed every lagging
// object when it starts (lagSource.Start), and an id already on its way
// stands for every change since.
func (s *Store) claim(ref Ref) bool {
	if !s.announcing[ref.Kind] || s.announced[ref] {
		return false
	}
	s.announced[ref] = true
	return true
}
