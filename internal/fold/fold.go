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
// into it, and an event at or below that is skipped, so a replay from a cursor
// that lags behind never applies an event twice.
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

// DefaultOperatorPrefix is the subject prefix the operator publishes below
// by default: beside the producers' formation events, in the stream's
// subjects.
const DefaultOperatorPrefix = "cellos.events"

// OperatorSubject is the subject the operator publishes formation id's
// events on, below prefix. Only an event on it can carry an ownership fact.
func OperatorSubject(prefix, id string) string {
	return prefix + ".formation." + id
}

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
	// submitted document.
	Document json.RawMessage
	// LastAppliedSequence is the highest stream sequence folded into this
	// formation; events at or below it are skipped.
	LastAppliedSequence uint64
}

// Cell is the projection of one cell's lifecycle events.
type Cell struct {
	// ID is data.cellId exactly as the stream carries it; it is the key, so
	// it is never normalised.
	ID string
	// SpecID, RunID and FormationID fill in from the first event that carries
	// them and never change after, because later events only repeat them.
	SpecID string
	RunID  string
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
	// carried an integer; nil until then.
	ExitCode *int32
	// LastAppliedSequence is the highest stream sequence folded into this
	// cell; events at or below it are skipped.
	LastAppliedSequence uint64
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
}

// NewState returns an empty projection, the state before the first event.
func NewState() *State {
	return &State{Formations: map[string]*Formation{}, Cells: map[string]*Cell{}}
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
	// (a replay from a lagging cursor), so nothing changed.
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
}

// Apply folds the message with stream sequence seq into the state: the
// subject it was published on, its NATS header (nil for a message without
// one, as cellos publishes them) and its raw payload, so that an event in binary content mode folds as the same
// event in the JSON event format would. It never fails and never panics:
// whatever the message, the outcome says what happened and the caller moves
// on to the next sequence.
//
// Neither header nor payload is retained; the state keeps copies of what it
// needs.
func (s *State) Apply(seq uint64, subject string, header map[string][]string, payload []byte) Outcome {
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
	// Cell types are matched first, as in the reference, so that a change to
	// the formation prefixes can never swallow a cell event.
	switch ev.Type {
	case TypeCellStarted, TypeCellCommandCompleted, TypeCellDestroyed:
		return s.applyCell(seq, ev)
	}
	if phase, ok := strings.CutPrefix(ev.Type, FormationTypePrefix); ok {
		return s.applyFormation(seq, subject, ev, phase)
	}
	if phase, ok := strings.CutPrefix(ev.Type, legacyFormationPrefix); ok {
		return s.applyFormation(seq, subject, ev, phase)
	}
	reason := fmt.Sprintf("event type %s is not projected", cloudevent.Quote(ev.Type))
	if ev.Type == "" {
		reason = "event has no string type"
	}
	return Outcome{Seq: seq, Result: ResultIgnored, Family: FamilyOther, Reason: reason, EventID: ev.ID}
}

// applyCell folds one of the three cell event types.
func (s *State) applyCell(seq uint64, ev cloudevent.Event) Outcome {
	out := Outcome{Seq: seq, Family: FamilyCell, EventID: ev.ID}
	// An empty string is still a string: the reference keys a cell on it.
	cellID, ok := ev.DataString("cellId")
	if !ok {
		out.Result = ResultIgnored
		out.Reason = "cell event has no string data.cellId"
		return out
	}
	c := s.Cells[cellID]
	if c != nil && c.LastAppliedSequence >= seq {
		out.Result = ResultSkipped
		out.Reason = fmt.Sprintf("cell %s already at sequence %d", cloudevent.Quote(cellID), c.LastAppliedSequence)
		return out
	}
	if c == nil {
		c = &Cell{ID: cellID, State: cellosv1.CellPending}
		s.Cells[cellID] = c
	}

	// Identity fields arrive on whichever event first carries them (a
	// command.completed may come before started) and later events only
	// repeat them, so the first non-empty value stands.
	if c.SpecID == "" {
		c.SpecID, _ = ev.DataString("specId")
	}
	if c.RunID == "" {
		c.RunID, _ = ev.DataString("runId")
	}
	if c.FormationID == "" {
		if v, ok := ev.DataString("formationId"); ok {
			// An id the reference would not parse stays unknown rather
			// than tying the cell to a formation that cannot exist.
			c.FormationID, _ = CanonicalID(v)
		}
	}

	switch ev.Type {
	case TypeCellStarted:
		c.State = cellosv1.CellRunning
		c.StartedAt = ev.Time
	case TypeCellCommandCompleted:
		// The command ending is not the cell ending: only destroyed moves
		// the state on.
		if code, ok := ev.DataInt32("exitCode"); ok {
			c.ExitCode = &code
		}
	case TypeCellDestroyed:
		c.State = cellosv1.CellDestroyed
		c.DestroyedAt = ev.Time
		if o, ok := ev.DataString("outcome"); ok {
			c.Outcome = o
		}
	}
	c.LastAppliedSequence = seq
	out.Result = ResultApplied
	out.CellID = cellID
	return out
}

// applyFormation folds a formation lifecycle event, published on subject,
// whose type ended in phase.
// The checks run in the reference's order (id, then UUID, then phase), which
// decides whether an event with both a bad id and an unknown phase is
// rejected (it is) or ignored.
func (s *State) applyFormation(seq uint64, subject string, ev cloudevent.Event, phase string) Outcome {
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

	f := s.Formations[id]
	if f != nil && f.LastAppliedSequence >= seq {
		out.Result = ResultSkipped
		out.Reason = fmt.Sprintf("formation %s already at sequence %d", id, f.LastAppliedSequence)
		return out
	}
	if f == nil {
		doc := ev.Data // Decode copied it out of the payload
		if doc == nil {
			doc = json.RawMessage("null")
		}
		f = &Formation{ID: id, Document: doc}
		s.Formations[id] = f
	}
	if name != "" {
		f.Name = name
	}
	f.Phase = newPhase
	f.Degraded = phase == PhaseDegraded
	if s.fromOperator(subject, ev, rawID, id) {
		if ns, ok := ev.DataString("namespace"); ok && phase == PhaseCreated && f.Namespace == "" {
			f.Namespace = ns
		}
		if phase == PhaseCancelled {
			f.Deleted = true
		}
	}
	f.LastAppliedSequence = seq
	out.Result = ResultApplied
	out.FormationID = id
	return out
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
