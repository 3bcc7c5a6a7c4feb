package publish

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	natsjs "github.com/nats-io/nats.go/jetstream"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/internal/fold"
	"cellos.dev/cellos-operator/internal/jetstream"
	"cellos.dev/cellos-operator/test/localenv"
)

const formationID = "5b0e8f4c-7d1a-4c2e-9f3b-2a6d8e1c4b7a"

// start returns a publisher to a fresh stream whose duplicate window is
// window, and the stream.
func start(t *testing.T, window time.Duration) (*Publisher, natsjs.Stream) {
	t.Helper()
	srv := localenv.StartJetStream(t)
	_, js := srv.Connect(t)
	cfg := jetstream.DefaultStreamConfig(jetstream.DefaultStreamName)
	cfg.Duplicates = window
	stream, err := js.CreateStream(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	return &Publisher{JetStream: js, SubjectPrefix: fold.DefaultOperatorPrefix, Clock: clocktesting.NewFakePassiveClock(now)}, stream
}

func declared() *cellosv1.Formation {
	return &cellosv1.Formation{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "research"},
		Spec: &cellosv1.FormationSpec{Coordinator: "lead", Members: []cellosv1.FormationMember{
			{Name: "lead"}, {Name: "worker", AuthorizedBy: "lead"},
		}},
	}
}

// messages returns every message of the stream.
func messages(t *testing.T, stream natsjs.Stream) []*natsjs.RawStreamMsg {
	t.Helper()
	info, err := stream.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var msgs []*natsjs.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		msg, err := stream.GetMsg(t.Context(), seq)
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, msg)
	}
	return msgs
}

func TestCreatedIsPublishedOnceWithTheContractsFields(t *testing.T) {
	p, stream := start(t, time.Minute)
	for range 3 {
		if err := p.Created(t.Context(), formationID, declared()); err != nil {
			t.Fatal(err)
		}
	}
	msgs := messages(t, stream)
	if len(msgs) != 1 {
		t.Fatalf("%d messages in the stream, want 1", len(msgs))
	}
	msg := msgs[0]
	if msg.Subject != "cellos.events.formation."+formationID || msg.Header.Get("Nats-Msg-Id") != formationID+":created" {
		t.Errorf("subject %q, Nats-Msg-Id %q", msg.Subject, msg.Header.Get("Nats-Msg-Id"))
	}
	var ev map[string]any
	if err := json.Unmarshal(msg.Data, &ev); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"specversion": "1.0", "source": "cellos-operator", "type": "dev.cellos.events.cell.formation.v1.created",
		"subject": msg.Subject, "time": "2026-11-29T12:00:00Z", "datacontenttype": "application/json",
	}
	for k, v := range want {
		if ev[k] != v {
			t.Errorf("%s = %v, want %v", k, ev[k], v)
		}
	}
	id, _ := ev["id"].(string)
	if eventUUID, ok := strings.CutPrefix(id, "urn:cellos:event:"); !ok || uuid.Validate(eventUUID) != nil {
		t.Errorf("id %q is not urn:cellos:event:<uuid>", id)
	}
	data, _ := json.Marshal(ev["data"])
	const wantData = `{"coordinator":"lead","formationId":"` + formationID + `","formationName":"research","members":[{"name":"lead"},{"authorizedBy":"lead","name":"worker"}],"namespace":"team-a"}`
	if string(data) != wantData {
		t.Errorf("data %s\nwant %s", data, wantData)
	}
	// The fold reads it as the operator's own created event of a formation
	// declared in team-a.
	s := fold.NewState()
	if out := s.Apply(msg.Sequence, time.Time{}, msg.Subject, msg.Header, msg.Data); out.Result != fold.ResultApplied {
		t.Fatalf("fold: %s %s", out.Result, out.Reason)
	}
	if f := s.Formations[formationID]; f.Phase != cellosv1.FormationPending || f.Namespace != "team-a" || f.Name != "research" {
		t.Errorf("folded %+v", f)
	}
}

// Beyond the duplicate window, the created event still lands once: it
// expects to be the first message on its subject.
func TestCreatedBeyondTheDuplicateWindow(t *testing.T) {
	p, stream := start(t, 100*time.Millisecond)
	if err := p.Created(t.Context(), formationID, declared()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // past the window, which is the point
	if err := p.Created(t.Context(), formationID, declared()); err != nil {
		t.Fatalf("a second publish beyond the window: %v", err)
	}
	if n := len(messages(t, stream)); n != 1 {
		t.Fatalf("%d messages in the stream, want 1", n)
	}
}

func TestCancelledIsPublishedOnce(t *testing.T) {
	p, stream := start(t, time.Minute)
	if err := p.Created(t.Context(), formationID, declared()); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := p.Cancelled(t.Context(), formationID); err != nil {
			t.Fatal(err)
		}
	}
	msgs := messages(t, stream)
	if len(msgs) != 2 {
		t.Fatalf("%d messages in the stream, want created and cancelled", len(msgs))
	}
	s := fold.NewState()
	for _, msg := range msgs {
		s.Apply(msg.Sequence, time.Time{}, msg.Subject, msg.Header, msg.Data)
	}
	if f := s.Formations[formationID]; f.Phase != cellosv1.FormationCancelled || !f.Deleted {
		t.Errorf("folded %+v, want Cancelled and deleted", f)
	}
	if id := msgs[1].Header.Get("Nats-Msg-Id"); id != formationID+":cancelled" {
		t.Errorf("Nats-Msg-Id %q", id)
	}
}

func TestPublishFailsWithoutTheStream(t *testing.T) {
	srv := localenv.StartJetStream(t)
	_, js := srv.Connect(t)
	p := &Publisher{JetStream: js, SubjectPrefix: fold.DefaultOperatorPrefix, Clock: clocktesting.NewFakePassiveClock(time.Now())}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := p.Created(ctx, formationID, declared()); err == nil {
		t.Fatal("published with no stream to take it")
	}
}
