package e2e

// The life of a declared Formation, end to end, as docs/gitops.md tells it:
// the manager binary against a real API server and a real JetStream server,
// and the stream read back message by message. Each test proves one point
// of the contract ("Declared Formations" in the design).

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	natsjs "github.com/nats-io/nats.go/jetstream"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/internal/cursor"
	"cellos.dev/cellos-operator/internal/jetstream"
	"cellos.dev/cellos-operator/internal/store"
	"cellos.dev/cellos-operator/test/harness"
	"cellos.dev/cellos-operator/test/localenv"
)

const (
	createdType   = "dev.cellos.events.cell.formation.v1.created"
	cancelledType = "dev.cellos.events.cell.formation.v1.cancelled"
)

// lifecycleFormation is a valid declared Formation without the label: lead
// coordinates, worker is authorized by lead.
func lifecycleFormation(ns, name string) *cellosv1.Formation {
	return &cellosv1.Formation{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: &cellosv1.FormationSpec{Coordinator: "lead", Members: []cellosv1.FormationMember{
			member("lead", ""), member("worker", "lead"),
		}},
	}
}

func formationSubject(id string) string { return "cellos.events.formation." + id }

// streamEvent is one message of the stream: its place, its JetStream header
// Nats-Msg-Id, and its CloudEvent envelope.
type streamEvent struct {
	Seq             uint64          `json:"-"`
	Subject         string          `json:"-"`
	MsgID           string          `json:"-"`
	SpecVersion     string          `json:"specversion"`
	ID              string          `json:"id"`
	Source          string          `json:"source"`
	Type            string          `json:"type"`
	Time            string          `json:"time"`
	DataContentType string          `json:"datacontenttype"`
	Data            json.RawMessage `json:"data"`
}

// ensureEventStream creates the stream as the operator would, so that the
// test can read it before the manager has started.
func ensureEventStream(tb testing.TB, jsc natsjs.JetStream) natsjs.Stream {
	tb.Helper()
	s, err := jetstream.EnsureStream(context.Background(), jsc, "CELLOS_EVENTS")
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// streamEventsOn reads the CloudEvents of the stream on subject, in stream
// order.
func streamEventsOn(jsc natsjs.JetStream, subject string) ([]streamEvent, error) {
	all, err := allStreamEvents(jsc)
	if err != nil {
		return nil, err
	}
	var out []streamEvent
	for _, ev := range all {
		if ev.Subject == subject {
			out = append(out, ev)
		}
	}
	return out, nil
}

// ofType keeps the events of one CloudEvent type.
func ofType(evs []streamEvent, typ string) []streamEvent {
	var out []streamEvent
	for _, ev := range evs {
		if ev.Type == typ {
			out = append(out, ev)
		}
	}
	return out
}

// exactlyOne is the one event of typ on the formation's subject, or an error
// that lists what is there.
func exactlyOne(jsc natsjs.JetStream, id, typ string) (streamEvent, error) {
	evs, err := streamEventsOn(jsc, formationSubject(id))
	if err != nil {
		return streamEvent{}, err
	}
	if got := ofType(evs, typ); len(got) != 1 {
		return streamEvent{}, fmt.Errorf("%d %s events on %s, want exactly 1; the subject holds %s", len(got), typ, formationSubject(id), describeEvents(evs))
	}
	return ofType(evs, typ)[0], nil
}

func describeEvents(evs []streamEvent) string {
	parts := make([]string, 0, len(evs))
	for _, ev := range evs {
		parts = append(parts, fmt.Sprintf("#%d %s (msg id %q, source %q)", ev.Seq, ev.Type, ev.MsgID, ev.Source))
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// checkOperatorEnvelope checks what every event the operator publishes for
// formation id carries.
func checkOperatorEnvelope(t *testing.T, ev streamEvent, id, phase string) {
	t.Helper()
	if ev.Subject != formationSubject(id) {
		t.Errorf("%s event on subject %q, want %q", phase, ev.Subject, formationSubject(id))
	}
	if ev.SpecVersion != "1.0" {
		t.Errorf("%s event specversion %q, want 1.0", phase, ev.SpecVersion)
	}
	if rest, ok := strings.CutPrefix(ev.ID, "urn:cellos:event:"); !ok {
		t.Errorf("%s event id %q lacks the prefix urn:cellos:event:", phase, ev.ID)
	} else if u, err := uuid.Parse(rest); err != nil || u.String() != rest {
		t.Errorf("%s event id %q does not end in a UUID (%v)", phase, ev.ID, err)
	}
	if ev.Source != "cellos-operator" {
		t.Errorf("%s event source %q, want cellos-operator", phase, ev.Source)
	}
	if ev.Type != "dev.cellos.events.cell.formation.v1."+phase {
		t.Errorf("event type %q, want dev.cellos.events.cell.formation.v1.%s", ev.Type, phase)
	}
	if _, err := time.Parse(time.RFC3339, ev.Time); err != nil {
		t.Errorf("%s event time %q is not RFC 3339: %v", phase, ev.Time, err)
	}
	if ev.DataContentType != "application/json" {
		t.Errorf("%s event datacontenttype %q, want application/json", phase, ev.DataContentType)
	}
	if want := id + ":" + phase; ev.MsgID != want {
		t.Errorf("%s event header Nats-Msg-Id %q, want %q", phase, ev.MsgID, want)
	}
}

// sameJSON tells whether two JSON documents are equal as values.
func sameJSON(t *testing.T, got json.RawMessage, want any) (bool, string) {
	t.Helper()
	b, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		return false, fmt.Sprintf("not JSON: %s", got)
	}
	if err := json.Unmarshal(b, &w); err != nil {
		t.Fatal(err)
	}
	return reflect.DeepEqual(g, w), fmt.Sprintf("got %s, want %s", got, b)
}

// admittedPending waits until the declared Formation at key is admitted
// (label and status.formationId are its uid, the cancel finalizer is on),
// its created event is published (Published=True), and the stream has
// brought it to Pending; it returns the Formation.
func admittedPending(t *testing.T, key types.NamespacedName) *cellosv1.Formation {
	t.Helper()
	f := &cellosv1.Formation{}
	harness.Eventually(t, 2*time.Minute, fmt.Sprintf("Formation %s admitted, published and Pending", key), func() error {
		if err := controlPlane.Client.Get(context.Background(), key, f); err != nil {
			return err
		}
		return admittedAndPending(f)
	})
	return f
}

func admittedAndPending(f *cellosv1.Formation) error {
	uid := string(f.UID)
	switch {
	case f.Labels[cellosv1.FormationIDLabel] != uid:
		return fmt.Errorf("label %s=%q, want the uid %s", cellosv1.FormationIDLabel, f.Labels[cellosv1.FormationIDLabel], uid)
	case f.Status.FormationID != uid:
		return fmt.Errorf("status.formationId %q, want the uid %s", f.Status.FormationID, uid)
	case !controllerutil.ContainsFinalizer(f, cellosv1.CancelFinalizer):
		return fmt.Errorf("finalizers %v lack %s", f.Finalizers, cellosv1.CancelFinalizer)
	case !meta.IsStatusConditionTrue(f.Status.Conditions, cellosv1.PublishedCondition):
		return fmt.Errorf("Published not True (phase %q at sequence %d, conditions %s)", f.Status.Phase, f.Status.LastAppliedSequence, conditionsString(f.Status.Conditions))
	case f.Status.Phase != cellosv1.FormationPending:
		return fmt.Errorf("phase %q, want Pending", f.Status.Phase)
	}
	return nil
}

func conditionsString(conds []metav1.Condition) string {
	parts := make([]string, 0, len(conds))
	for _, c := range conds {
		parts = append(parts, fmt.Sprintf("%s=%s/%s", c.Type, c.Status, c.Reason))
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// within polls cond until it holds or timeout passes, and returns its last
// error: for a check that must not end the test.
func within(timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// cursorPasses is nil once the committed cursor in ns reaches seq.
func cursorPasses(ns string, seq uint64) error {
	return within(2*time.Minute, func() error {
		return harness.CursorReached(context.Background(), controlPlane.Client, ns, cursor.Position{Sequence: seq})
	})
}

// passSentinel publishes the created event of a formation no one declared,
// and waits until its observed Formation in the operator's namespace
// reflects it: the fold, and the reconciles it queued, have passed every
// earlier event of the stream.
func passSentinel(t *testing.T, jsc natsjs.JetStream, operatorNS string) uint64 {
	t.Helper()
	id := uuid.NewString()
	data, _ := json.Marshal(map[string]any{
		"specversion": "1.0", "id": uuid.NewString(), "source": "cellos-supervisor",
		"type": createdType, "data": map[string]string{"formationId": id},
	})
	ack, err := jsc.Publish(context.Background(), formationSubject(id), data)
	if err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 2*time.Minute, "the sentinel formation is projected", func() error {
		var f cellosv1.Formation
		if err := controlPlane.Client.Get(context.Background(), types.NamespacedName{Namespace: operatorNS, Name: store.ObjectName(id)}, &f); err != nil {
			return err
		}
		if f.Status.LastAppliedSequence != int64(ack.Sequence) {
			return fmt.Errorf("at sequence %d, want %d", f.Status.LastAppliedSequence, ack.Sequence)
		}
		return nil
	})
	return ack.Sequence
}

// phaseIs waits until the Formation at key is in phase.
func phaseIs(t *testing.T, key types.NamespacedName, phase cellosv1.FormationPhase) *cellosv1.Formation {
	t.Helper()
	f := &cellosv1.Formation{}
	harness.Eventually(t, 2*time.Minute, fmt.Sprintf("Formation %s is %s", key, phase), func() error {
		if err := controlPlane.Client.Get(context.Background(), key, f); err != nil {
			return err
		}
		if f.Status.Phase != phase {
			return fmt.Errorf("phase %q", f.Status.Phase)
		}
		return nil
	})
	return f
}

// supervisorEvent is a formation event as a cellos supervisor publishes it,
// on the formation's subject, naming it in data.formationId.
func supervisorEvent(id, phase string) sampleMessage {
	data, _ := json.Marshal(map[string]any{
		"specversion": "1.0", "id": uuid.NewString(), "source": "cellos-supervisor",
		"type": "dev.cellos.events.cell.formation.v1." + phase, "subject": formationSubject(id),
		"time": time.Now().UTC().Format(time.RFC3339), "datacontenttype": "application/json",
		"data": map[string]string{"formationId": id},
	})
	return sampleMessage{Subject: formationSubject(id), Data: string(data)}
}

// lastSequence is the stream's last sequence.
func lastSequence(t *testing.T, jsc natsjs.JetStream) uint64 {
	t.Helper()
	s, err := jsc.Stream(context.Background(), "CELLOS_EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.LastSeq
}

// gone is nil once the Formation at key no longer exists.
func gone(key types.NamespacedName) error {
	var f cellosv1.Formation
	err := controlPlane.Client.Get(context.Background(), key, &f)
	switch {
	case apierrors.IsNotFound(err):
		return nil
	case err != nil:
		return err
	}
	return fmt.Errorf("still there: deletion %v, finalizers %v, phase %q", f.DeletionTimestamp, f.Finalizers, f.Status.Phase)
}

// 1. A declared Formation without the label is admitted under its uid, and
// exactly one created event, as the contract spells it, is in the stream;
// the Formation then mirrors it: Pending, Published=True.
func TestDeclaredFormationAdmittedAndCreatedPublishedOnce(t *testing.T) {
	operatorNS, teamNS := newNamespace(t), newNamespace(t)
	js := localenv.StartJetStream(t)
	_, jsc := js.Connect(t)
	startManager(t, js.URL(), operatorNS, "--flush-window=50ms")
	ctx := context.Background()

	f := lifecycleFormation(teamNS, "research")
	if err := controlPlane.Client.Create(ctx, f); err != nil {
		t.Fatal(err)
	}
	got := admittedPending(t, client.ObjectKeyFromObject(f))
	id := string(f.UID)

	ev, err := exactlyOne(jsc, id, createdType)
	if err != nil {
		t.Fatal(err)
	}
	checkOperatorEnvelope(t, ev, id, "created")
	wantData := map[string]any{
		"formationId": id, "formationName": "research", "namespace": teamNS, "coordinator": "lead",
		"members": []map[string]string{{"name": "lead"}, {"name": "worker", "authorizedBy": "lead"}},
	}
	if ok, diff := sameJSON(t, ev.Data, wantData); !ok {
		t.Errorf("created event data: %s", diff)
	}
	if got.Status.LastAppliedSequence != int64(ev.Seq) {
		t.Errorf("status.lastAppliedSequence %d, want the created event's sequence %d", got.Status.LastAppliedSequence, ev.Seq)
	}
	if got.Status.FormationName != "research" {
		t.Errorf("status.formationName %q, want research", got.Status.FormationName)
	}
	// Nothing else reached the formation's subject.
	if evs, err := streamEventsOn(jsc, formationSubject(id)); err != nil || len(evs) != 1 {
		t.Errorf("the formation's subject holds %d events (%v), want the created one only", len(evs), err)
	}
}

// 2. A manager killed between the publish of the created event and the
// status write that records it, then started again, still leaves exactly
// one created event. The kill follows the event's arrival in the stream as
// closely as the test can; it is repeated so that a race would show.
func TestCreatedPublishedOnceAcrossKillAfterPublish(t *testing.T) {
	operatorNS, teamNS := newNamespace(t), newNamespace(t)
	js := localenv.StartJetStream(t)
	_, jsc := js.Connect(t)
	stream := ensureEventStream(t, jsc)
	ctx := context.Background()

	const rounds = 5
	beforeWrite := 0
	for i := range rounds {
		m := startManager(t, js.URL(), operatorNS, "--flush-window=50ms")
		f := lifecycleFormation(teamNS, fmt.Sprintf("killed-%d", i))
		if err := controlPlane.Client.Create(ctx, f); err != nil {
			t.Fatal(err)
		}
		id := string(f.UID)
		nextOnSubject(t, stream, formationSubject(id), 1, 2*time.Minute)
		m.Kill()

		var atKill cellosv1.Formation
		if err := controlPlane.Client.Get(ctx, client.ObjectKeyFromObject(f), &atKill); err != nil {
			t.Fatal(err)
		}
		if !meta.IsStatusConditionTrue(atKill.Status.Conditions, cellosv1.PublishedCondition) {
			beforeWrite++
		}

		again := startManager(t, js.URL(), operatorNS, "--flush-window=50ms")
		key := client.ObjectKeyFromObject(f)
		pending := phaseIs(t, key, cellosv1.FormationPending)
		waitForCursor(t, operatorNS, uint64(pending.Status.LastAppliedSequence))
		ev, err := exactlyOne(jsc, id, createdType)
		if err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		checkOperatorEnvelope(t, ev, id, "created")
		// docs/gitops.md: once the event is in the stream, Published=True.
		if err := within(45*time.Second, func() error {
			var now cellosv1.Formation
			if err := controlPlane.Client.Get(ctx, key, &now); err != nil {
				return err
			}
			return admittedAndPending(&now)
		}); err != nil {
			t.Errorf("round %d, killed with Published=%v: the created event is in the stream once, but the restarted manager never records it: %v",
				i, meta.IsStatusConditionTrue(atKill.Status.Conditions, cellosv1.PublishedCondition), err)
		}
		harness.Stop(t, again.Manager)
	}
	// Which side of the status write each kill landed on is up to the
	// scheduler; the log says how often the window was hit.
	t.Logf("%d of %d kills landed after the publish and before Published=True was written", beforeWrite, rounds)

	// Every formation of this test, read once more at the end.
	var list cellosv1.FormationList
	if err := controlPlane.Client.List(ctx, &list, client.InNamespace(teamNS)); err != nil {
		t.Fatal(err)
	}
	for _, f := range list.Items {
		if _, err := exactlyOne(jsc, string(f.UID), createdType); err != nil {
			t.Errorf("%s: %v", f.Name, err)
		}
	}
}

// 3. Two managers, neither elected, race to admit and publish the same
// Formations: each still has exactly one created event.
func TestTwoManagersPublishCreatedOnce(t *testing.T) {
	operatorNS, teamNS := newNamespace(t), newNamespace(t)
	js := localenv.StartJetStream(t)
	_, jsc := js.Connect(t)
	ensureEventStream(t, jsc)
	ctx := context.Background()
	m1 := startManager(t, js.URL(), operatorNS, "--flush-window=50ms", "--leader-elect=false")
	m2 := startManager(t, js.URL(), operatorNS, "--flush-window=50ms", "--leader-elect=false")
	harness.Eventually(t, time.Minute, "first manager ready", m1.Ready)
	harness.Eventually(t, time.Minute, "second manager ready", m2.Ready)

	const n = 8
	formations := make([]*cellosv1.Formation, n)
	for i := range formations {
		formations[i] = lifecycleFormation(teamNS, fmt.Sprintf("raced-%d", i))
		if err := controlPlane.Client.Create(ctx, formations[i]); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range formations {
		admittedPending(t, client.ObjectKeyFromObject(f))
	}
	for _, f := range formations {
		ev, err := exactlyOne(jsc, string(f.UID), createdType)
		if err != nil {
			t.Errorf("%s: %v", f.Name, err)
			continue
		}
		checkOperatorEnvelope(t, ev, string(f.UID), "created")
	}
	series := func(result string) string {
		return `cellos_operator_publish_total{event="created",result="` + result + `"}`
	}
	ok := m1.Metric(t, series("ok")) + m2.Metric(t, series("ok"))
	dup := m1.Metric(t, series("duplicate")) + m2.Metric(t, series("duplicate"))
	t.Logf("created events: %v published, %v found already in the stream, across both managers", ok, dup)
	if ok != n {
		t.Errorf("the managers report %v created events accepted as new, want %d", ok, n)
	}
}

// waitCommand runs kubectl wait in the background; its outcome arrives on
// the channel.
type waitCommand struct {
	done chan error
	out  strings.Builder
}

func startKubectlWait(t *testing.T, args ...string) *waitCommand {
	t.Helper()
	w := &waitCommand{done: make(chan error, 1)}
	cmd := exec.Command(localenv.Binary("kubectl"), append([]string{"--kubeconfig", controlPlane.KubeconfigPath, "wait"}, args...)...)
	cmd.Stdout, cmd.Stderr = &w.out, &w.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { w.done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
		}
	})
	return w
}

// 4. A supervisor's running and completed events take a declared Formation
// from Pending to Running to Succeeded, and kubectl wait for Ready, started
// while it is Pending, returns once it runs.
func TestDeclaredFormationFollowsSupervisorToSucceeded(t *testing.T) {
	operatorNS, teamNS := newNamespace(t), newNamespace(t)
	js := localenv.StartJetStream(t)
	_, jsc := js.Connect(t)
	startManager(t, js.URL(), operatorNS, "--flush-window=50ms")
	ctx := context.Background()

	f := lifecycleFormation(teamNS, "supervised")
	if err := controlPlane.Client.Create(ctx, f); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(f)
	admittedPending(t, key)
	id := string(f.UID)

	wait := startKubectlWait(t, "-n", teamNS, "--for=condition=Ready", "formation/"+f.Name, "--timeout=60s")
	select {
	case err := <-wait.done:
		t.Fatalf("kubectl wait for Ready returned while the Formation was Pending (%v):\n%s", err, wait.out.String())
	default:
	}
	publish(t, jsc, []sampleMessage{supervisorEvent(id, "running")})
	running := phaseIs(t, key, cellosv1.FormationRunning)
	if !meta.IsStatusConditionTrue(running.Status.Conditions, cellosv1.ReadyCondition) {
		t.Errorf("a running Formation is not Ready: %+v", running.Status.Conditions)
	}
	select {
	case err := <-wait.done:
		if err != nil {
			t.Fatalf("kubectl wait --for=condition=Ready: %v\n%s", err, wait.out.String())
		}
		if !strings.Contains(wait.out.String(), "condition met") {
			t.Errorf("kubectl wait says:\n%s", wait.out.String())
		}
	case <-time.After(90 * time.Second):
		t.Fatalf("kubectl wait --for=condition=Ready did not return for a running Formation")
	}
	// It returned while the formation runs: nothing has completed it.
	var now cellosv1.Formation
	if err := controlPlane.Client.Get(ctx, key, &now); err != nil {
		t.Fatal(err)
	}
	if now.Status.Phase != cellosv1.FormationRunning {
		t.Errorf("phase %q after kubectl wait returned, want Running", now.Status.Phase)
	}

	publish(t, jsc, []sampleMessage{supervisorEvent(id, "completed")})
	done := phaseIs(t, key, cellosv1.FormationSucceeded)
	for _, c := range []string{cellosv1.ReadyCondition, cellosv1.CompleteCondition} {
		if !meta.IsStatusConditionTrue(done.Status.Conditions, c) {
			t.Errorf("a succeeded Formation has %s not True: %+v", c, done.Status.Conditions)
		}
	}
	if _, err := exactlyOne(jsc, id, createdType); err != nil {
		t.Error(err)
	}
}

// nothingOf is nil when no Formation is labelled with id anywhere, and no
// Cell belongs to it or is the cell cellID.
func nothingOf(id, cellID string) error {
	ctx := context.Background()
	c := controlPlane.Client
	var formations cellosv1.FormationList
	if err := c.List(ctx, &formations, client.MatchingLabels{cellosv1.FormationIDLabel: id}); err != nil {
		return err
	}
	if len(formations.Items) > 0 {
		f := formations.Items[0]
		return fmt.Errorf("Formation %s/%s of formation %s is back (phase %q)", f.Namespace, f.Name, id, f.Status.Phase)
	}
	var cells cellosv1.CellList
	if err := c.List(ctx, &cells); err != nil {
		return err
	}
	for _, cell := range cells.Items {
		if cell.Labels[cellosv1.FormationIDLabel] == id || cell.Status.FormationID == id ||
			(cellID != "" && (cell.Status.CellID == cellID || cell.Name == store.ObjectName(cellID))) {
			return fmt.Errorf("Cell %s/%s of the deleted formation was created", cell.Namespace, cell.Name)
		}
	}
	return nil
}

// 5. Deleting a running declared Formation publishes exactly one cancelled
// event, then lets the Formation go; later events of that formation, of the
// formation or of a cell naming it, bring back nothing, also after a
// restart that folds the stream again.
func TestDeletingRunningFormationCancelsOnce(t *testing.T) {
	operatorNS, teamNS := newNamespace(t), newNamespace(t)
	js := localenv.StartJetStream(t)
	_, jsc := js.Connect(t)
	m := startManager(t, js.URL(), operatorNS, "--flush-window=50ms")
	ctx := context.Background()

	f := lifecycleFormation(teamNS, "to-cancel")
	if err := controlPlane.Client.Create(ctx, f); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(f)
	admittedPending(t, key)
	id := string(f.UID)
	publish(t, jsc, []sampleMessage{supervisorEvent(id, "running")})
	phaseIs(t, key, cellosv1.FormationRunning)

	if err := controlPlane.Client.Delete(ctx, f); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 2*time.Minute, "the deleted Formation goes", func() error { return gone(key) })
	ev, err := exactlyOne(jsc, id, cancelledType)
	if err != nil {
		t.Fatal(err)
	}
	checkOperatorEnvelope(t, ev, id, "cancelled")
	if ok, diff := sameJSON(t, ev.Data, map[string]string{"formationId": id}); !ok {
		t.Errorf("cancelled event data: %s", diff)
	}

	cellID := "to-cancel-late-" + id[:8]
	cellEvent, _ := json.Marshal(map[string]any{
		"specversion": "1.0", "id": uuid.NewString(), "source": "cellos-supervisor",
		"type": "dev.cellos.events.cell.lifecycle.v1.started", "time": time.Now().UTC().Format(time.RFC3339),
		"data": map[string]string{"cellId": cellID, "formationId": id},
	})
	publish(t, jsc, []sampleMessage{
		supervisorEvent(id, "running"),
		{Subject: "cellos.events.cell." + cellID, Data: string(cellEvent)},
	})
	late := lastSequence(t, jsc)
	// The cursor passing the late events is the signal the contract gives;
	// a sentinel formation after them is a second one, so that what they
	// did is checked even when the cursor does not move.
	if err := cursorPasses(operatorNS, late); err != nil {
		t.Errorf("after the cancel and later events of the formation: %v", err)
	}
	passSentinel(t, jsc, operatorNS)
	if err := nothingOf(id, cellID); err != nil {
		t.Fatalf("after later events of the cancelled formation: %v", err)
	}

	// A manager started again folds the whole stream; the cancel is in it.
	harness.Stop(t, m.Manager)
	startManager(t, js.URL(), operatorNS, "--flush-window=50ms")
	seq := passSentinel(t, jsc, operatorNS)
	if err := cursorPasses(operatorNS, seq); err != nil {
		t.Errorf("after a restart: %v", err)
	}
	if err := nothingOf(id, cellID); err != nil {
		t.Fatalf("after a restart: %v", err)
	}
	if _, err := exactlyOne(jsc, id, cancelledType); err != nil {
		t.Error(err)
	}
}

// 6. Deleting a declared Formation whose formation succeeded publishes
// nothing, and the Formation goes.
func TestDeletingSucceededFormationPublishesNothing(t *testing.T) {
	operatorNS, teamNS := newNamespace(t), newNamespace(t)
	js := localenv.StartJetStream(t)
	_, jsc := js.Connect(t)
	startManager(t, js.URL(), operatorNS, "--flush-window=50ms")
	ctx := context.Background()

	f := lifecycleFormation(teamNS, "finished")
	if err := controlPlane.Client.Create(ctx, f); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(f)
	admittedPending(t, key)
	id := string(f.UID)
	publish(t, jsc, []sampleMessage{supervisorEvent(id, "running"), supervisorEvent(id, "completed")})
	phaseIs(t, key, cellosv1.FormationSucceeded)

	if err := controlPlane.Client.Delete(ctx, f); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 2*time.Minute, "the deleted Formation goes", func() error { return gone(key) })
	evs, err := streamEventsOn(jsc, formationSubject(id))
	if err != nil {
		t.Fatal(err)
	}
	var phases []string
	for _, ev := range evs {
		phases = append(phases, strings.TrimPrefix(ev.Type, "dev.cellos.events.cell.formation.v1."))
	}
	if strings.Join(phases, ",") != "created,running,completed" {
		t.Errorf("the formation's subject holds %s, want created, running, completed and no cancelled", describeEvents(evs))
	}
}

// 7. The API server refuses an invalid declared Formation with the rule it
// breaks, and any edit of the spec of an admitted one.
func TestDeclaredSpecRefusedWhenInvalidAndImmutable(t *testing.T) {
	operatorNS, teamNS := newNamespace(t), newNamespace(t)
	js := localenv.StartJetStream(t)
	startManager(t, js.URL(), operatorNS, "--flush-window=50ms")
	ctx := context.Background()
	c := controlPlane.Client

	invalid := lifecycleFormation(teamNS, "invalid")
	invalid.Spec.Coordinator = "boss"
	err := c.Create(ctx, invalid)
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "coordinator must name one of the members") {
		t.Errorf("a Formation whose coordinator is not a member: got %v, want Invalid with the CEL message", err)
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(invalid), &cellosv1.Formation{}); !apierrors.IsNotFound(err) {
		t.Errorf("the refused Formation exists (%v)", err)
	}

	f := lifecycleFormation(teamNS, "fixed")
	if err := c.Create(ctx, f); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(f)
	admitted := admittedPending(t, key)

	const immutable = "spec is immutable once declared"
	edited := admitted.DeepCopy()
	edited.Spec.Members = append(edited.Spec.Members, member("helper", "lead"))
	err = c.Update(ctx, edited)
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), immutable) {
		t.Errorf("editing the members of an admitted Formation: got %v, want Invalid with %q", err, immutable)
	}
	err = c.Patch(ctx, admitted.DeepCopy(), client.RawPatch(types.MergePatchType, []byte(`{"spec":{"coordinator":"worker"}}`)))
	if err == nil || !strings.Contains(err.Error(), immutable) {
		t.Errorf("patching the coordinator of an admitted Formation: got %v, want a refusal with %q", err, immutable)
	}
	err = c.Patch(ctx, admitted.DeepCopy(), client.RawPatch(types.MergePatchType, []byte(`{"spec":null}`)))
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), immutable) {
		t.Errorf("removing the spec of an admitted Formation: got %v, want Invalid with %q", err, immutable)
	}
	var after cellosv1.Formation
	if err := c.Get(ctx, key, &after); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(after.Spec, admitted.Spec) || after.Generation != admitted.Generation {
		t.Errorf("the spec changed: %+v (generation %d), was %+v (generation %d)", after.Spec, after.Generation, admitted.Spec, admitted.Generation)
	}
}

// A deleted declared Formation lives nowhere: no later event brings it back.
// Its formation's events must still count as handled, or the cursor (the
// low watermark of handled events) stops below them for good; a restart,
// which folds the whole stream again, must pass them too.
func TestCursorPassesADeletedFormationAfterRestart(t *testing.T) {
	operatorNS, teamNS := newNamespace(t), newNamespace(t)
	js := localenv.StartJetStream(t)
	_, jsc := js.Connect(t)
	m := startManager(t, js.URL(), operatorNS, "--flush-window=50ms")
	ctx := context.Background()

	f := lifecycleFormation(teamNS, "done-and-gone")
	if err := controlPlane.Client.Create(ctx, f); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(f)
	admittedPending(t, key)
	id := string(f.UID)
	publish(t, jsc, []sampleMessage{supervisorEvent(id, "running"), supervisorEvent(id, "completed")})
	phaseIs(t, key, cellosv1.FormationSucceeded)
	if err := controlPlane.Client.Delete(ctx, f); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 2*time.Minute, "the deleted Formation goes", func() error { return gone(key) })
	if err := cursorPasses(operatorNS, passSentinel(t, jsc, operatorNS)); err != nil {
		t.Errorf("while the manager that saw the deletion runs: %v", err)
	}

	harness.Stop(t, m.Manager)
	startManager(t, js.URL(), operatorNS, "--flush-window=50ms")
	seq := passSentinel(t, jsc, operatorNS)
	if err := cursorPasses(operatorNS, seq); err != nil {
		t.Errorf("after a restart: %v", err)
	}
	if err := nothingOf(id, ""); err != nil {
		t.Errorf("after a restart: %v", err)
	}
}
