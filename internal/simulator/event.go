// Package simulator generates cellos event streams shaped exactly like the
// ones the cellos supervisor and server publish, and publishes them to
// JetStream.
//
// It exists so the operator can be demonstrated, load-tested and debugged
// without a cellos installation: the events are realistic (several formations
// in flight, cells interleaved, failures and degradations) yet reproducible,
// because everything random, ids included, comes from one seeded source.
package simulator

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// The CloudEvent types cellos emits and the projection acts on. They are
// exported so that callers can classify an Event without decoding it.
const (
	TypeCellStarted          = "dev.cellos.events.cell.lifecycle.v1.started"
	TypeCellCommandCompleted = "dev.cellos.events.cell.command.v1.completed"
	TypeCellDestroyed        = "dev.cellos.events.cell.lifecycle.v1.destroyed"
	// FormationTypePrefix is followed by the phase in a formation event type.
	FormationTypePrefix = "dev.cellos.events.cell.formation.v1."
)

// The formation phases the simulator emits, as they appear at the end of a
// formation event type. A formation goes created → launching → running
// (→ degraded → running) → completed or failed.
const (
	PhaseCreated   = "created"
	PhaseLaunching = "launching"
	PhaseRunning   = "running"
	PhaseDegraded  = "degraded"
	PhaseCompleted = "completed"
	PhaseFailed    = "failed"
)

// The outcomes a destroyed cell reports; a cell succeeded exactly when its
// command exited 0.
const (
	OutcomeSucceeded = "succeeded"
	OutcomeFailed    = "failed"
)

// NATS subject prefixes cellos publishes on; both lie under the stream's
// cellos.events.> filter.
const (
	formationSubjectPrefix = "cellos.events.formation."
	cellSubjectPrefix      = "cellos.events.cell."
)

// Event is one JetStream message ready to publish. Besides the subject and
// the CloudEvent payload it carries the event's type and formation, so that a
// caller can log progress or count events without decoding the payload.
type Event struct {
	Subject string
	Payload []byte
	// Type is the CloudEvent type of Payload.
	Type string
	// FormationID and FormationName identify the formation the event belongs
	// to, cell events included.
	FormationID   string
	FormationName string
}

// FormationPhase returns the phase of a formation event (PhaseCreated, ...)
// and "" for a cell event, so callers can report a formation's start and end.
func (e Event) FormationPhase() string {
	if phase, ok := strings.CutPrefix(e.Type, FormationTypePrefix); ok {
		return phase
	}
	return ""
}

// envelope is the CloudEvents 1.0 JSON envelope, members in the order cellos
// writes them.
type envelope struct {
	SpecVersion     string `json:"specversion"`
	ID              string `json:"id"`
	Source          string `json:"source"`
	Type            string `json:"type"`
	Time            string `json:"time"`
	DataContentType string `json:"datacontenttype"`
	Data            any    `json:"data"`
	Subject         string `json:"subject"`
}

type formationData struct {
	FormationID   string `json:"formationId"`
	FormationName string `json:"formationName"`
}

type cellStartedData struct {
	CellID      string `json:"cellId"`
	SpecID      string `json:"specId"`
	RunID       string `json:"runId"`
	FormationID string `json:"formationId"`
}

type cellCompletedData struct {
	CellID      string `json:"cellId"`
	ExitCode    int    `json:"exitCode"`
	FormationID string `json:"formationId"`
}

type cellDestroyedData struct {
	CellID      string `json:"cellId"`
	SpecID      string `json:"specId"`
	RunID       string `json:"runId"`
	Outcome     string `json:"outcome"`
	FormationID string `json:"formationId"`
}

// encode marshals a CloudEvent. Every value is a string, int or struct of
// those, so marshalling cannot fail; a failure would be a programming error.
func encode(id, source, typ string, t time.Time, subject string, data any) []byte {
	b, err := json.Marshal(envelope{
		SpecVersion:     "1.0",
		ID:              "urn:cellos:event:" + id,
		Source:          source,
		Type:            typ,
		Time:            t.Format(time.RFC3339),
		DataContentType: "application/json",
		Data:            data,
		Subject:         subject,
	})
	if err != nil {
		panic(fmt.Sprintf("simulator: encode %s event: %v", typ, err))
	}
	return b
}
