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
	"fmt"
	"strings"
	"time"

	"cellos.dev/cellos-operator/internal/cloudevent"
	"cellos.dev/cellos-operator/internal/fold"
)

// NATS subject prefixes cellos publishes on; both lie under the stream's
// subjects.
const (
	formationSubjectPrefix = fold.SubjectPrefix + ".formation."
	cellSubjectPrefix      = fold.SubjectPrefix + ".cell."
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

// FormationPhase returns the phase of a formation event (fold.PhaseCreated, ...)
// and "" for a cell event, so callers can report a formation's start and end.
func (e Event) FormationPhase() string {
	if phase, ok := strings.CutPrefix(e.Type, fold.FormationTypePrefix); ok {
		return phase
	}
	return ""
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
	b, err := cloudevent.NewEnvelope(id, source, typ, subject, t, data).Encode()
	if err != nil {
		panic(fmt.Sprintf("simulator: encode %s event: %v", typ, err))
	}
	return b
}
