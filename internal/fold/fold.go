// Package fold folds the cellos event stream into the state of formations
// and cells.
//
// The fold is pure: no I/O, clock, logging or goroutines. That keeps it a
// function of (state, sequence, message) alone, so the same stream always
// yields the same state whether it is read live, replayed after a restart, or
// fed from a table test; everything with side effects (the consumer, the status
// writer, the cursor) lives outside and reacts to the returned Outcome.
//
// The semantics are those of the reference projection (cellos_server/state.rs)
// plus one addition: each object records the highest stream sequence folded
// into it, and an event at or below that is skipped, so a message handed over
// twice never applies twice.
package fold

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/internal/cloudevent"
)

// The event types the fold acts on, declared once for the fold and for the
// simulator that stands in for their producers. Cell types are exact;
// formation types are a prefix followed by the phase.
const (
	TypeCellStarted          = "dev.cellos.events.cell.lifecycle.v1.started"
	TypeCellCommandCompleted = "dev.cellos.events.cell.command.v1.completed"
	TypeCellDestroyed        = "dev.cellos.events.cell.lifecycle.v1.destroyed"

	// FormationTypePrefix is followed by the phase in a formation event type.
	FormationTypePrefix = "dev.cellos.events.cell.formation.v1."
	// legacyFormationPrefix is no longer emitted but still found in archived
	// streams, which must replay to the same state.
	legacyFormationPrefix = "io.cellos.formation.v1."
)

// OperatorSource is the source of the events the operator itself publishes
// for declared Formations.
const OperatorSource = "cellos-operator"

// SubjectPrefix is the prefix of every cellos event subject: the stream
// holds the subjects below it.
const SubjectPrefix = "cellos.events"

// DefaultOperatorPrefix is the subject prefix the operator publishes below
// by default: beside the producers' formation events, in the stream's
// subjects.
const DefaultOperatorPrefix = SubjectPrefix

// OperatorSubject is the subject the operator publishes formation id's
// events on, below prefix. Only an event on it can carry an ownership fact.
func OperatorSubject(prefix, id string) string {
	return prefix + ".formation." + id
}

// The bounds on what one event may carry. An event beyond any of them is
// rejected like any other bad event, so that nothing a publisher sends can
// grow the fold, the operator's memory or etcd without limit.
const (
	// DefaultMaxEventBytes is the largest message accepted, headers
	// included, by default: NATS's default max_payload, 1 MiB, which the
	// stream the operator creates also enforces (MaxMsgSize).
	DefaultMaxEventBytes = 1 << 20
	// MaxIDBytes bounds a cell id and a raw formation id. A Kubernetes name
	// holds 253 bytes, but ids longer than a name are valid (they get a
	// hashed name), and the contract's own sample stream projects a cell id
	// of 287 bytes: 512 keeps every such id and still bounds the fold.
	MaxIDBytes = 512
	// MaxFieldBytes bounds specId, runId, outcome and a formation's name:
	// short identifiers and words, stored in status and shown by kubectl.
	MaxFieldBytes = 256
	// MaxDocumentBytes bounds the formation document kept for status. A
	// larger one still applies its phase, but the document is dropped
	// (Formation.DocumentDropped): a few such events must not fill etcd.
	MaxDocumentBytes = 64 << 10
)

// The formation phases, as they end a formation event type.
const (
	PhaseCreated   = "created"
	PhaseLaunching = "launching"
	PhaseRunning   = "running"
	PhaseDegraded  = "degraded"
	PhaseCompleted = "completed"
	PhaseFailed    = "failed"
	PhaseCancelled = "cancelled"
)

// Formation is the projection of one formation's events. It holds only what
// the events say; Kubernetes-side fields (names, generations, conditions) are
// derived elsewhere so the fold stays independent of the API server.
type Formation struct {
	// ID is the formation's UUID in lowercase hyphenated form, so that the
	// spellings the stream may use (simple, braced, urn:uuid:, upper case;
	// see CanonicalID) all land on one object.
	ID string
	// Name is the latest non-empty name seen; an event without a name does
	// not erase it.
	Name  string
	Phase cellosv1.FormationPhase
	// Degraded records that the last phase event applied was `degraded`,
	// which the phase alone cannot tell apart from `running`.
	Degraded bool
	// Namespace is data.namespace of the operator's own created event: the
	// namespace of the Formation that declared the formation, the only one
	// that may follow it. Like Deleted, it is an ownership fact, so it is
	// taken only from the operator's own events (see State.OperatorPrefix).
	Namespace string
	// Deleted records that the operator's own cancelled event is in the
	// stream: the formation's declared Formation was deleted, and no later
	// event brings it back.
	Deleted bool
	// Document is the `data` of the first event seen for the formation (JSON
	// null when that event had none), kept as the reference keeps the
	// submitted document; nil when it was dropped.
	Document json.RawMessage
	// DocumentDropped records that the first event's data was larger than
	// MaxDocumentBytes, and so was not kept.
	DocumentDropped bool
	// LastAppliedSequence is the highest stream sequence folded into this
	// formation; events at or below it are skipped.
	LastAppliedSequence uint64
	// FinishedAt is the JetStream time, to the second, of the event that
	// made the phase final (Succeeded, Failed or Cancelled); nil while it is
	// not, or when the event's time was unknown. The formation expires
	// FormationTTL after it (see Expire).
	FinishedAt *time.Time
}

// Cell is the projection of one cell's lifecycle events.
type Cell struct {
	// ID is data.cellId exactly as the stream carries it; it is the key, so
	// it is never normalised.
	ID string
	// SpecID and FormationID fill in from the first event that carries a
	// non-empty one, and RunID from the first event that carries one at
	// all, even "": the reference keeps run_id as an Option set once. Later
	// events only repeat them.
	SpecID string
	RunID  string
	// RunIDKnown records that an event carried a runId, so that a later one
	// does not replace an empty one.
	RunIDKnown bool
	// FormationID is data.formationId as a lowercase UUID, when the stream
	// carries one that parses; empty otherwise.
	FormationID string
	State       cellosv1.CellState
	// StartedAt and DestroyedAt are the envelope times of the started and
	// destroyed events. Each such event overwrites its field, with nil when
	// it has no usable time, as the reference does.
	StartedAt   *time.Time
	DestroyedAt *time.Time
	// Outcome is data.outcome of the latest destroyed event that had one.
	Outcome string
	// ExitCode is data.exitCode of the latest command.completed event that
	// carried an integer within int64, wrapped to int32 as the reference's
	// `as i32` wraps it; nil until then.
	ExitCode *int32
	// LastAppliedSequence is the highest stream sequence folded into this
	// cell; events at or below it are skipped.
	LastAppliedSequence uint64
	// FinishedAt is the JetStream time, to the second, of the event that
	// destroyed the cell; nil while it is not destroyed, or when the event's
	// time was unknown. The cell expires CellTTL after it.
	FinishedAt *time.Time
}

// State is the whole projection. Formations are keyed by Formation.ID and
// cells by Cell.ID. It is not safe for concurrent use: the store guards it
// with a lock, under which the ingester folds into it and the controllers
// copy from it.
type State struct {
	Formations map[string]*Formation
	Cells      map[string]*Cell
	// OperatorPrefix is the subject prefix the operator publishes below
	// (DefaultOperatorPrefix when empty). An event claims an ownership fact
	// only on the operator's own subject, where NATS permissions can keep
	// every other publisher out.
	OperatorPrefix string
	// MaxEventBytes is the largest message accepted, headers included
	// (DefaultMaxEventBytes when 0).
	MaxEventBytes int
	// TTLs say how long final objects stay. Like OperatorPrefix they
	// configure the fold, which stays a function of the stream and them.
	TTLs TTLs
	// Tallies counts each formation's cells by state, keyed by formation
	// id, including the cells that expired: a formation's counts are what
	// its cells did, not what the fold still holds of them.
	Tallies map[string]*Tally
	// LastSequence is the highest sequence applied. An event at or below it
	// for an id the fold does not hold is a message handed over twice after
	// its object expired, and is skipped rather than starting it afresh.
	LastSequence uint64

	// expiries orders the final objects by when they expire.
	expiries expiryQueue
}

// NewState returns an empty projection, the state before the first event.
func NewState() *State {
	return &State{Formations: map[string]*Formation{}, Cells: map[string]*Cell{}, Tallies: map[string]*Tally{}}
}

// Result classifies what Apply did with an event, for metrics and logs. Every
// result lets the cursor advance: nothing in the stream can block it.
type Result string

const (
	// ResultApplied means the event changed (or created) one object.
	ResultApplied Result = "applied"
	// ResultIgnored means the event was readable but not for this
	// projection: an unknown type or phase, or a cell event without a cell.
	ResultIgnored Result = "ignored"
	// ResultRejected means the event claims to matter but cannot be used: a
	// payload that is not a JSON object, or a formation event without a
	// usable id. It deserves an operator's attention.
	ResultRejected Result = "rejected"
	// ResultSkipped means the target object already reflects this sequence
	// (the same message handed over twice), so nothing changed.
	ResultSkipped Result = "skipped"
)

// Family is the event family, used as a metrics label so that rejections
// can be told apart by producer without a label per event type.
type Family string

const (
	// FamilyFormation is the formation lifecycle family, both prefixes.
	FamilyFormation Family = "formation"
	// FamilyCell is the three cell event types the fold projects.
	FamilyCell Family = "cell"
	// FamilyOther is everything else, including undecodable payloads.
	FamilyOther Family = "other"
)

// Outcome reports what Apply did with one event, so the caller can count it,
// log it with its sequence, and know which object to write without diffing
// the state.
type Outcome struct {
	Seq    uint64
	Result Result
	Family Family
	// Reason says why the event was ignored, rejected or skipped; empty when
	// applied.
	Reason string
	// EventID is the CloudEvent id when the payload had one, to tie a log
	// line back to the producer.
	EventID string
	// FormationID is the formation that changed, set only when Applied.
	FormationID string
	// CellID is the cell that changed, set only when Applied.
	CellID string
	// Expired lists the objects the fold released before it applied the
	// event, because the event's time passed their expiry.
	Expired []Expiry
}

// Apply folds the message with stream sequence seq and JetStream time at
// into the state, after releasing every object that expired by at (the
// zero time when unknown: nothing expires and no FinishedAt is set): the
// subject it was published on, its NATS header (nil for a message without
// one, as cellos publishes them) and its raw payload, so that an event in binary content mode folds as the same
// event in the JSON event format would. It never fails and never panics:
// whatever the message, the outcome says what happened and the caller moves
// on to the next sequence.
//
// Neither header nor payload is retained; the state keeps copies of what it
// needs.
func (s *State) Apply(seq uint64, at time.Time, subject string, header map[string][]string, payload []byte) Outcome {
	expired := s.expire(at)
	out := s.apply(seq, at.UTC().Truncate(time.Second), subject, header, payload)
	out.Expired = expired
	if out.Result == ResultApplied {
		s.LastSequence = max(s.LastSequence, seq)
	}
	return out
}

func (s *State) apply(seq uint64, at time.Time, subject string, header map[string][]string, payload []byte) Outcome {
	if size, limit := messageSize(header, payload), s.maxEventBytes(); size > limit {
		return Outcome{Seq: seq, Result: ResultRejected, Family: FamilyOther,
			Reason: fmt.Sprintf("message of %d bytes is larger than the largest event accepted, %d bytes", size, limit)}
	}
	ev, err := cloudevent.Decode(header, payload)
	if err != nil {
		return Outcome{Seq: seq, Result: ResultRejected, Family: FamilyOther, Reason: err.Error()}
	}
	if s.Formations == nil {
		s.Formations = map[string]*Formation{}
	}
	if s.Cells == nil {
		s.Cells = map[string]*Cell{}
	}
	if s.Tallies == nil {
		s.Tallies = map[string]*Tally{}
	}
	// Cell types are matched first, as in the reference, so that a change to
	// the formation prefixes can never swallow a cell event.
	switch ev.Type {
	case TypeCellStarted, TypeCellCommandCompleted, TypeCellDestroyed:
		return s.applyCell(seq, at, ev)
	}
	if phase, ok := strings.CutPrefix(ev.Type, FormationTypePrefix); ok {
		return s.applyFormation(seq, at, subject, ev, phase)
	}
	if phase, ok := strings.CutPrefix(ev.Type, legacyFormationPrefix); ok {
		return s.applyFormation(seq, at, subject, ev, phase)
	}
	reason := fmt.Sprintf("event type %s is not projected", cloudevent.Quote(ev.Type))
	if ev.Type == "" {
		reason = "event has no string type"
	}
	return Outcome{Seq: seq, Result: ResultIgnored, Family: FamilyOther, Reason: reason, EventID: ev.ID}
}

// maxEventBytes is MaxEventBytes or its default.
func (s *State) maxEventBytes() int {
	if s.MaxEventBytes > 0 {
		return s.MaxEventBytes
	}
	return DefaultMaxEventBytes
}

// messageSize is what a message weighs before decoding: its payload, and
// its header's names and values, which carry the event in binary content
// mode.
func messageSize(header map[string][]string, payload []byte) int {
	n := len(payload)
	for name, values := range header {
		n += len(name)
		for _, v := range values {
			n += len(v)
		}
	}
	return n
}

// oversized names the first of keys whose member of data is a string longer
// than MaxFieldBytes, or returns "".
func oversized(ev cloudevent.Event, keys ...string) string {
	for _, k := range keys {
		if v, ok := ev.DataString(k); ok && len(v) > MaxFieldBytes {
			return k
		}
	}
	return ""
}

// applyCell folds one of the three cell event types, stored at time at.
func (s *State) applyCell(seq uint64, at time.Time, ev cloudevent.Event) Outcome {
	out := Outcome{Seq: seq, Family: FamilyCell, EventID: ev.ID}
	// An empty string is still a string: the reference keys a cell on it.
	cellID, ok := ev.DataString("cellId")
	if !ok {
		out.Result = ResultIgnored
		out.Reason = "cell event has no string data.cellId"
		return out
	}
	// The bounds depend on the event alone, not on what the fold holds.
	if len(cellID) > MaxIDBytes {
		out.Result = ResultRejected
		out.Reason = fmt.Sprintf("cell id %s is longer than %d bytes", cloudevent.Quote(cellID), MaxIDBytes)
		return out
	}
	if key := oversized(ev, "specId", "runId", "outcome"); key != "" {
		v, _ := ev.DataString(key)
		out.Result = ResultRejected
		out.Reason = fmt.Sprintf("data.%s %s of cell %s is longer than %d bytes", key, cloudevent.Quote(v), cloudevent.Quote(cellID), MaxFieldBytes)
		return out
	}
	c := s.Cells[cellID]
	if c != nil && c.LastAppliedSequence >= seq {
		out.Result = ResultSkipped
		out.Reason = fmt.Sprintf("cell %s already at sequence %d", cloudevent.Quote(cellID), c.LastAppliedSequence)
		return out
	}
	if c == nil && seq <= s.LastSequence {
		out.Result = ResultSkipped
		out.Reason = fmt.Sprintf("cell %s is not held and the fold is already at sequence %d", cloudevent.Quote(cellID), s.LastSequence)
		return out
	}
	if c == nil {
		c = &Cell{ID: cellID, State: cellosv1.CellPending}
		s.Cells[cellID] = c
	} else {
		s.tally(c, -1)
	}
	defer s.tally(c, +1)

	// Identity fields arrive on whichever event first carries them (a
	// command.completed may come before started) and later events only
	// repeat them, so the first value stands: for specId the first
	// non-empty one, for runId the first present one, as in the reference.
	if c.SpecID == "" {
		c.SpecID, _ = ev.DataString("specId")
	}
	if !c.RunIDKnown {
		c.RunID, c.RunIDKnown = ev.DataString("runId")
	}
	if c.FormationID == "" {
		if v, ok := ev.DataString("formationId"); ok {
			// An id the reference would not parse stays unknown rather
			// than tying the cell to a formation that cannot exist.
			id, _ := CanonicalID(v)
			if f := s.Formations[id]; f != nil {
				id = f.ID // one copy of a formation's id for all its cells
			}
			c.FormationID = id
		}
	}

	switch ev.Type {
	case TypeCellStarted:
		c.State = cellosv1.CellRunning
		c.StartedAt = ev.Time
	case TypeCellCommandCompleted:
		// The command ending is not the cell ending: only destroyed moves
		// the state on.
		if code, ok := ev.DataInt64("exitCode"); ok {
			wrapped := int32(code) //nolint:gosec // wraps as the reference's `as i32` does
			c.ExitCode = &wrapped
		}
	case TypeCellDestroyed:
		c.State = cellosv1.CellDestroyed
		c.DestroyedAt = ev.Time
		if o, ok := ev.DataString("outcome"); ok {
			c.Outcome = o
		}
	}
	c.FinishedAt = s.finish(c.State == cellosv1.CellDestroyed, c.FinishedAt, at, s.TTLs.Cell, CellKind, cellID)
	c.LastAppliedSequence = seq
	out.Result = ResultApplied
	out.CellID = cellID
	return out
}

// applyFormation folds a formation lifecycle event, published on subject
// and stored at time at, whose type ended in phase.
// The checks run in the reference's order (id, then UUID, then phase), which
// decides whether an event with both a bad id and an unknown phase is
// rejected (it is) or ignored.
func (s *State) applyFormation(seq uint64, at time.Time, subject string, ev cloudevent.Event, phase string) Outcome {
	out := Outcome{Seq: seq, Family: FamilyFormation, EventID: ev.ID}
	// The canonical emitter uses camelCase, archives use snake_case, and the
	// subject is the last resort.
	rawID, ok := ev.DataString("formationId", "formation_id")
	if !ok {
		rawID, ok = ev.Subject, ev.Subject != ""
	}
	if !ok {
		out.Result = ResultRejected
		out.Reason = "formation event has no id in data.formationId, data.formation_id or subject"
		return out
	}
	id, err := CanonicalID(rawID)
	if err != nil {
		out.Result = ResultRejected
		out.Reason = fmt.Sprintf("formation id %s is not a UUID: %v", cloudevent.Quote(rawID), err)
		return out
	}
	name, _ := ev.DataString("formationName", "name")

	var newPhase cellosv1.FormationPhase
	switch phase {
	case PhaseCreated:
		newPhase = cellosv1.FormationPending
	case PhaseLaunching, PhaseRunning, PhaseDegraded:
		newPhase = cellosv1.FormationRunning
	case PhaseCompleted:
		newPhase = cellosv1.FormationSucceeded
	case PhaseFailed:
		newPhase = cellosv1.FormationFailed
	case PhaseCancelled:
		newPhase = cellosv1.FormationCancelled
	default:
		out.Result = ResultIgnored
		out.Reason = fmt.Sprintf("formation phase %s is not projected", cloudevent.Quote(phase))
		return out
	}

	if len(name) > MaxFieldBytes {
		out.Result = ResultRejected
		out.Reason = fmt.Sprintf("name %s of formation %s is longer than %d bytes", cloudevent.Quote(name), id, MaxFieldBytes)
		return out
	}
	f := s.Formations[id]
	if f != nil && f.LastAppliedSequence >= seq {
		out.Result = ResultSkipped
		out.Reason = fmt.Sprintf("formation %s already at sequence %d", id, f.LastAppliedSequence)
		return out
	}
	if f == nil && seq <= s.LastSequence {
		out.Result = ResultSkipped
		out.Reason = fmt.Sprintf("formation %s is not held and the fold is already at sequence %d", id, s.LastSequence)
		return out
	}
	if f == nil {
		doc := ev.Data // Decode copied it out of the payload
		if doc == nil {
			doc = json.RawMessage("null")
		}
		f = &Formation{ID: id, Document: doc}
		if len(doc) > MaxDocumentBytes {
			f.Document, f.DocumentDropped = nil, true
		}
		s.Formations[id] = f
	}
	if name != "" {
		f.Name = name
	}
	f.Phase = newPhase
	f.Degraded = phase == PhaseDegraded
	if s.fromOperator(subject, ev, rawID, id) {
		s.ownershipFacts(f, ev, phase)
	}
	f.FinishedAt = s.finish(final(f.Phase), f.FinishedAt, at, s.TTLs.Formation, FormationKind, id)
	f.LastAppliedSequence = seq
	out.Result = ResultApplied
	out.FormationID = id
	return out
}

// ownershipFacts records what the operator's own event of phase states of
// formation f: the namespace that declared it, and its deletion.
func (s *State) ownershipFacts(f *Formation, ev cloudevent.Event, phase string) {
	if ns, ok := ev.DataString("namespace"); ok && phase == PhaseCreated && f.Namespace == "" {
		f.Namespace = ns
	}
	if phase == PhaseCancelled && !f.Deleted {
		f.Deleted = true
		// A declared formation that was final already was passed over
		// when its expiry came; deleted, it expires as observed ones do.
		if f.FinishedAt != nil {
			s.queue(FormationKind, f.ID, *f.FinishedAt, s.TTLs.Formation)
		}
	}
}

// fromOperator tells whether a formation event is the operator's own, and so
// may carry an ownership fact: its source, its subject (the one the operator
// publishes formation id on) and its id spelled canonically, as the operator
// spells it. Any producer may claim the source; only NATS permissions on the
// operator's subjects keep the rest out.
func (s *State) fromOperator(subject string, ev cloudevent.Event, rawID, id string) bool {
	prefix := s.OperatorPrefix
	if prefix == "" {
		prefix = DefaultOperatorPrefix
	}
	return ev.Source == OperatorSource && rawID == id && subject == OperatorSubject(prefix, id)
}
