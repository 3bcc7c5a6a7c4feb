// Package publish writes the operator's own events to the stream: the created
// event of a declared Formation, and its cancelled event when it is deleted.
//
// Each event lands in the stream once, however often it is tried: JetStream
// drops a second message with the same Nats-Msg-Id inside the stream's
// duplicate window, and beyond it the created event expects to be the first
// on its subject. The cancelled event has no such check of its own beyond
// the window: the caller keeps it single by recording the formation's
// tombstone once it is acked, and publishing no cancel for a tombstoned
// formation. Event ids and data are derived from the formation, so a retry
// publishes the same event.
package publish

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/internal/cloudevent"
	"cellos.dev/cellos-operator/internal/fold"
)

var publishedTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "cellos_operator_publish_total",
	Help: "Events the operator published for declared Formations, by event (created, cancelled) and result (ok, duplicate, error).",
}, []string{"event", "result"})

func init() {
	metrics.Registry.MustRegister(publishedTotal)
}

// Publisher publishes declared Formations' events and waits for their acks.
type Publisher struct {
	JetStream natsjs.JetStream
	// SubjectPrefix is followed by ".formation.<formationId>"
	// (fold.OperatorSubject).
	SubjectPrefix string
	// Clock stamps the events' time.
	Clock clock.PassiveClock
}

// member is a formation member as the created event's data carries it.
type member struct {
	Name         string `json:"name"`
	AuthorizedBy string `json:"authorizedBy,omitempty"`
}

// createdData is the created event's data, as the contract names it.
type createdData struct {
	FormationID   string   `json:"formationId"`
	FormationName string   `json:"formationName"`
	Namespace     string   `json:"namespace"`
	Coordinator   string   `json:"coordinator"`
	Members       []member `json:"members"`
}

// Created publishes the created event of the admitted Formation f, whose
// formation id is id. A created event already in the stream counts as
// published.
func (p *Publisher) Created(ctx context.Context, id string, f *cellosv1.Formation) error {
	data := createdData{FormationID: id, FormationName: f.Name, Namespace: f.Namespace, Coordinator: f.Spec.Coordinator}
	for _, m := range f.Spec.Members {
		data.Members = append(data.Members, member{Name: m.Name, AuthorizedBy: m.AuthorizedBy})
	}
	// Expecting no earlier message on the formation's subject keeps the event
	// single beyond the duplicate window too: the formation's id is new.
	return p.publish(ctx, id, fold.PhaseCreated, data, natsjs.WithExpectLastSequencePerSubject(0))
}

// Cancelled publishes the cancelled event of the formation with this id.
func (p *Publisher) Cancelled(ctx context.Context, id string) error {
	return p.publish(ctx, id, fold.PhaseCancelled, struct {
		FormationID string `json:"formationId"`
	}{id}, nil)
}

func (p *Publisher) publish(ctx context.Context, id, phase string, data any, expect natsjs.PublishOpt) error {
	// The subject and the message id are built from id: in any other
	// spelling than the canonical one they would name a new subject and
	// escape the duplicate check.
	if !fold.IsCanonical(id) {
		return fmt.Errorf("publishing the %s event: formation id %q is not a lower-case hyphenated UUID", phase, id)
	}
	formation := uuid.MustParse(id)
	subject := fold.OperatorSubject(p.SubjectPrefix, id)
	// The same formation and phase always give the same id, so a retry
	// publishes the same event.
	eventID := uuid.NewSHA1(formation, []byte(phase)).String()
	payload, err := cloudevent.NewEnvelope(eventID, fold.OperatorSource, fold.FormationTypePrefix+phase,
		subject, p.Clock.Now(), data).Encode()
	if err != nil {
		return fmt.Errorf("encoding the %s event: %w", phase, err)
	}
	opts := []natsjs.PublishOpt{natsjs.WithMsgID(id + ":" + phase)}
	if expect != nil {
		opts = append(opts, expect)
	}
	ack, err := p.JetStream.PublishMsg(ctx, &nats.Msg{Subject: subject, Data: payload}, opts...)
	switch {
	case alreadyOnSubject(err):
		publishedTotal.WithLabelValues(phase, "duplicate").Inc()
		return nil
	case err != nil:
		publishedTotal.WithLabelValues(phase, "error").Inc()
		return fmt.Errorf("publishing the %s event of formation %s on %s: %w", phase, id, subject, err)
	case ack.Duplicate:
		publishedTotal.WithLabelValues(phase, "duplicate").Inc()
	default:
		publishedTotal.WithLabelValues(phase, "ok").Inc()
	}
	return nil
}

// alreadyOnSubject tells whether a publish was refused because its subject
// already holds a message: the created event, published beyond the
// duplicate window.
func alreadyOnSubject(err error) bool {
	var apiErr *natsjs.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == natsjs.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == natsjs.JSErrCodeStreamWrongLastSequenceConstant)
}
