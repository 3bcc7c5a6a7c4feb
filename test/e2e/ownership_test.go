package e2e

// Ownership of a declared Formation for the life of the stream, end to end:
// each test reproduces one way the operator let a Formation other than the
// owner decide a formation's fate, or let an owner lose its formation once
// events aged out, and asserts the contract of the design ("Declared
// Formations (GitOps)", "Ownership holds for the life of the stream").

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	natsjs "github.com/nats-io/nats.go/jetstream"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/internal/jetstream"
	"cellos.dev/cellos-operator/internal/store"
	"cellos.dev/cellos-operator/test/harness"
	"cellos.dev/cellos-operator/test/localenv"
)

// labelledFormation is a valid declared Formation that carries the label
// cellos.dev/formation-id = id from its creation: not admitted here, it
// follows (or is refused) the formation id.
func labelledFormation(ns, name, id string) *cellosv1.Formation {
	f := lifecycleFormation(ns, name)
	f.Labels = map[string]string{cellosv1.FormationIDLabel: id}
	return f
}

// createFormation creates f or ends the test.
func createFormation(t *testing.T, f *cellosv1.Formation) types.NamespacedName {
	t.Helper()
	if err := controlPlane.Client.Create(context.Background(), f); err != nil {
		t.Fatalf("creating Formation %s/%s: %v", f.Namespace, f.Name, err)
	}
	return client.ObjectKeyFromObject(f)
}

// declareAdmitted creates a declared Formation without the label and waits
// until it is admitted, its created event published and folded (Pending); it
// returns the Formation and its formation id, its uid.
func declareAdmitted(t *testing.T, ns, name string) (types.NamespacedName, string) {
	t.Helper()
	f := lifecycleFormation(ns, name)
	key := createFormation(t, f)
	admittedPending(t, key)
	return key, string(f.UID)
}

// deleteFormation deletes the Formation at key or ends the test.
func deleteFormation(t *testing.T, key types.NamespacedName) {
	t.Helper()
	f := &cellosv1.Formation{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}
	if err := controlPlane.Client.Delete(context.Background(), f); err != nil {
		t.Fatalf("deleting Formation %s: %v", key, err)
	}
}

// getFormation reads the Formation at key.
func getFormation(key types.NamespacedName) (*cellosv1.Formation, error) {
	f := &cellosv1.Formation{}
	return f, controlPlane.Client.Get(context.Background(), key, f)
}

// conditionIs is nil when the Formation at key has the condition typ True
// with reason.
func conditionIs(key types.NamespacedName, typ, reason string) error {
	f, err := getFormation(key)
	if err != nil {
		return err
	}
	c := meta.FindStatusCondition(f.Status.Conditions, typ)
	if c == nil || c.Status != metav1.ConditionTrue || c.Reason != reason {
		return fmt.Errorf("want %s=True/%s; phase %q, formationId %q, conditions %s", typ, reason, f.Status.Phase, f.Status.FormationID, conditionsString(f.Status.Conditions))
	}
	return nil
}

// stalledWith is nil when the Formation at key is Stalled=True with reason.
func stalledWith(key types.NamespacedName, reason string) error {
	return conditionIs(key, cellosv1.StalledCondition, reason)
}

// handled is nil once the operator wrote the status of the Formation at key
// for its current generation: it has reconciled it at least once, whatever
// it decided.
func handled(key types.NamespacedName) error {
	f, err := getFormation(key)
	if err != nil {
		return err
	}
	if f.Status.ObservedGeneration != f.Generation || len(f.Status.Conditions) == 0 {
		return fmt.Errorf("no status for generation %d yet (observed %d, conditions %s)", f.Generation, f.Status.ObservedGeneration, conditionsString(f.Status.Conditions))
	}
	return nil
}

// phaseNow is nil when the Formation at key is in phase.
func phaseNow(key types.NamespacedName, phase cellosv1.FormationPhase) error {
	f, err := getFormation(key)
	if err != nil {
		return err
	}
	if f.Status.Phase != phase {
		return fmt.Errorf("phase %q, want %s (formationId %q, conditions %s)", f.Status.Phase, phase, f.Status.FormationID, conditionsString(f.Status.Conditions))
	}
	return nil
}

// canonicalID is an id spelling reduced to compare spellings of one UUID:
// lower case, without hyphens, braces or a urn:uuid: prefix.
func canonicalID(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	s = strings.TrimPrefix(s, "urn:uuid:")
	s = strings.Trim(s, "{}")
	return strings.ReplaceAll(s, "-", "")
}

// allStreamEvents reads every message of the stream that is a JSON
// CloudEvent, whatever its subject, in stream order, one direct get per
// sequence.
func allStreamEvents(jsc natsjs.JetStream) ([]streamEvent, error) {
	ctx := context.Background()
	s, err := jsc.Stream(ctx, "CELLOS_EVENTS")
	if err != nil {
		return nil, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, err
	}
	var out []streamEvent
	for seq := info.State.FirstSeq; seq >= 1 && seq <= info.State.LastSeq; seq++ {
		msg, err := s.GetMsg(ctx, seq)
		if err != nil {
			if strings.Contains(err.Error(), "not found") {
				continue // deleted by the test
			}
			return nil, fmt.Errorf("reading stream sequence %d: %w", seq, err)
		}
		ev := streamEvent{Seq: seq, Subject: msg.Subject, MsgID: msg.Header.Get("Nats-Msg-Id")}
		if json.Unmarshal(msg.Data, &ev) != nil {
			continue
		}
		out = append(out, ev)
	}
	return out, nil
}

// cancelledAnywhere lists the cancelled events anywhere in the stream whose
// data.formationId names id in any spelling.
func cancelledAnywhere(jsc natsjs.JetStream, id string) ([]streamEvent, error) {
	evs, err := allStreamEvents(jsc)
	if err != nil {
		return nil, err
	}
	var out []streamEvent
	for _, ev := range ofType(evs, cancelledType) {
		var data struct {
			FormationID  string `json:"formationId"`
			FormationID2 string `json:"formation_id"`
		}
		_ = json.Unmarshal(ev.Data, &data)
		if canonicalID(data.FormationID) == canonicalID(id) || canonicalID(data.FormationID2) == canonicalID(id) ||
			canonicalID(strings.TrimPrefix(ev.Subject, "cellos.events.formation.")) == canonicalID(id) {
			out = append(out, ev)
		}
	}
	return out, nil
}

// describeWithSubjects lists events with their subjects.
func describeWithSubjects(evs []streamEvent) string {
	parts := make([]string, 0, len(evs))
	for _, ev := range evs {
		parts = append(parts, fmt.Sprintf("#%d %s on %s (source %q, data %s)", ev.Seq, ev.Type, ev.Subject, ev.Source, ev.Data))
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// noCancelFor checks that the stream holds no cancelled event of id, in any
// spelling, anywhere.
func noCancelFor(t *testing.T, jsc natsjs.JetStream, id, after string) {
	t.Helper()
	evs, err := cancelledAnywhere(jsc, id)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) > 0 {
		t.Errorf("%s: the stream holds %d cancelled event(s) of formation %s, want none: %s", after, len(evs), id, describeWithSubjects(evs))
	}
}

// settled publishes a sentinel and waits until the cursor passes it: every
// earlier event of the stream is folded and reflected.
func settled(t *testing.T, jsc natsjs.JetStream, operatorNS string) {
	t.Helper()
	if err := cursorPasses(operatorNS, passSentinel(t, jsc, operatorNS)); err != nil {
		t.Errorf("the cursor does not pass the sentinel: %v", err)
	}
}

// publishEvent publishes one CloudEvent with the given envelope and data on
// subject.
func publishEvent(t *testing.T, jsc natsjs.JetStream, subject, source, typ string, data map[string]string) {
	t.Helper()
	payload, err := json.Marshal(map[string]any{
		"specversion": "1.0", "id": uuid.NewString(), "source": source, "type": typ,
		"time": time.Now().UTC().Format(time.RFC3339), "datacontenttype": "application/json", "data": data,
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jetstream.EnsureStream(context.Background(), jsc, "CELLOS_EVENTS"); err != nil {
		t.Fatal(err)
	}
	if _, err := jsc.Publish(context.Background(), subject, payload); err != nil {
		t.Fatalf("publishing on %s: %v", subject, err)
	}
}

// cellStarted is a cell's started event naming its formation.
func cellStarted(cellID, formationID string) sampleMessage {
	data, _ := json.Marshal(map[string]any{
		"specversion": "1.0", "id": uuid.NewString(), "source": "cellos-supervisor",
		"type": "dev.cellos.events.cell.lifecycle.v1.started", "time": time.Now().UTC().Format(time.RFC3339),
		"data": map[string]string{"cellId": cellID, "formationId": formationID},
	})
	return sampleMessage{Subject: "cellos.events.cell." + cellID, Data: string(data)}
}

// cellIn is nil once the Cell of cellID exists in ns.
func cellIn(ns, cellID string) (*cellosv1.Cell, error) {
	cell := &cellosv1.Cell{}
	err := controlPlane.Client.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: store.ObjectName(cellID)}, cell)
	return cell, err
}

// observedIn waits until the observed Formation of id, in the operator's
// namespace, is in phase, and returns it.
func observedIn(t *testing.T, operatorNS, id string, phase cellosv1.FormationPhase) *cellosv1.Formation {
	t.Helper()
	return phaseIs(t, types.NamespacedName{Namespace: operatorNS, Name: store.ObjectName(id)}, phase)
}

// mirrors is nil when the Formation at key mirrors formation id in phase.
func mirrors(key types.NamespacedName, id string, phase cellosv1.FormationPhase) error {
	f, err := getFormation(key)
	if err != nil {
		return err
	}
	if f.Status.FormationID != id || f.Status.Phase != phase || f.Labels[cellosv1.FormationIDLabel] != id {
		return fmt.Errorf("label %q, formationId %q, phase %q; want %s in phase %s", f.Labels[cellosv1.FormationIDLabel], f.Status.FormationID, f.Status.Phase, id, phase)
	}
	return nil
}

// warningEvents counts the Warning Events with reason about the Formation at
// key, a series counting as its number of occurrences, and returns their
// notes.
func warningEvents(t *testing.T, key types.NamespacedName, reason string) (int, []string) {
	t.Helper()
	var evs eventsv1.EventList
	if err := controlPlane.Client.List(context.Background(), &evs, client.InNamespace(key.Namespace)); err != nil {
		t.Fatal(err)
	}
	n := 0
	var notes []string
	for _, e := range evs.Items {
		if e.Type != corev1.EventTypeWarning || e.Regarding.Kind != "Formation" || e.Regarding.Name != key.Name ||
			(reason != "" && e.Reason != reason) {
			continue
		}
		notes = append(notes, e.Note)
		if e.Series != nil && e.Series.Count > 1 {
			n += int(e.Series.Count)
		} else {
			n++
		}
	}
	return n, notes
}

// formationsLabelled lists the Formations labelled with id in ns ("" for
// every namespace).
func formationsLabelled(t *testing.T, ns, id string) []cellosv1.Formation {
	t.Helper()
	var list cellosv1.FormationList
	opts := []client.ListOption{client.MatchingLabels{cellosv1.FormationIDLabel: id}}
	if ns != "" {
		opts = append(opts, client.InNamespace(ns))
	}
	if err := controlPlane.Client.List(context.Background(), &list, opts...); err != nil {
		t.Fatal(err)
	}
	return list.Items
}

// relabel sets the label cellos.dev/formation-id of the Formation at key.
func relabel(t *testing.T, key types.NamespacedName, id string) {
	t.Helper()
	f, err := getFormation(key)
	if err != nil {
		t.Fatal(err)
	}
	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%q}}}`, cellosv1.FormationIDLabel, id)
	if err := controlPlane.Client.Patch(context.Background(), f, client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
		t.Fatalf("relabelling %s with %s: %v", key, id, err)
	}
}

// TestOwnershipRelabelInOtherSpellingCannotCancel reproduces defect 1: a
// Formation relabelled with another team's formation id spelled otherwise
// (upper case, or 32 hex digits without hyphens) was not refused, and its
// delete published a cancel that the fold read as the other team's
// formation's. The contract: an id is only ever compared in its canonical
// form; a Formation whose label is not a canonical UUID is refused
// (Stalled=True, reason InvalidFormationID) and publishes nothing; a
// Formation labelled with another namespace's id in canonical form is refused
// (TakeoverRefused); only the owner's delete cancels.
func TestOwnershipRelabelInOtherSpellingCannotCancel(t *testing.T) {
	operatorNS := newNamespace(t)
	js := localenv.StartJetStream(t)
	_, jsc := js.Connect(t)
	startManager(t, js.URL(), operatorNS, "--flush-window=50ms")

	cases := []struct {
		name     string
		spell    func(id string) string
		refusal  string
		spelling string
	}{
		{"canonical", func(id string) string { return id }, cellosv1.TakeoverRefusedReason, "canonical"},
		{"upper-case", strings.ToUpper, "InvalidFormationID", "upper case"},
		{"32-hex", func(id string) string { return strings.ReplaceAll(id, "-", "") }, "InvalidFormationID", "32 hex digits"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			nsA, nsB := newNamespace(t), newNamespace(t)
			victim, x := declareAdmitted(t, nsB, "victim")
			attacker, _ := declareAdmitted(t, nsA, "attacker")

			spelled := tc.spell(x)
			relabel(t, attacker, spelled)
			if err := within(time.Minute, func() error { return stalledWith(attacker, tc.refusal) }); err != nil {
				t.Errorf("the attacker relabelled with the victim's id in %s (%s): %v", tc.spelling, spelled, err)
			}

			deleteFormation(t, attacker)
			if err := within(2*time.Minute, func() error { return gone(attacker) }); err != nil {
				t.Errorf("the deleted attacker: %v", err)
			}
			settled(t, jsc, operatorNS)
			noCancelFor(t, jsc, x, "after deleting the attacker labelled "+spelled)
			if err := phaseNow(victim, cellosv1.FormationPending); err != nil {
				t.Errorf("the victim, after the attacker labelled with its id in %s was deleted: %v", tc.spelling, err)
			}
		})
	}
}

// TestOwnerFollowsAfterCreatedEventPurged reproduces defect 2: once the
// created event of a Formation admitted here left the stream (retention,
// purge), a restart no longer knew the Formation's namespace: it refused its
// own owner, projected an observed twin in the operator's namespace, put the
// formation's Cells there, and the owner's delete cancelled nothing. The
// contract: a Formation admitted here owns its formation for good: never
// refused, never duplicated by an observed twin, and its delete cancels it,
// even after the stream lost its created event.
func TestOwnerFollowsAfterCreatedEventPurged(t *testing.T) {
	operatorNS, nsA := newNamespace(t), newNamespace(t)
	js := localenv.StartJetStream(t)
	_, jsc := js.Connect(t)
	m := startManager(t, js.URL(), operatorNS, "--flush-window=50ms")
	ctx := context.Background()

	key, x := declareAdmitted(t, nsA, "owner")
	publish(t, jsc, []sampleMessage{supervisorEvent(x, "running")})
	phaseIs(t, key, cellosv1.FormationRunning)
	created, err := exactlyOne(jsc, x, createdType)
	if err != nil {
		t.Fatal(err)
	}

	harness.Stop(t, m.Manager)
	s, err := jsc.Stream(ctx, "CELLOS_EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteMsg(ctx, created.Seq); err != nil {
		t.Fatalf("deleting the created event at sequence %d: %v", created.Seq, err)
	}
	// Without the checkpoint, which still knows the created event: the
	// start folds what the stream holds.
	startManager(t, js.URL(), operatorNS, "--flush-window=50ms", "--checkpoint-interval=0")
	settled(t, jsc, operatorNS)

	if err := within(10*time.Second, func() error {
		f, err := getFormation(key)
		if err != nil {
			return err
		}
		if c := meta.FindStatusCondition(f.Status.Conditions, cellosv1.StalledCondition); c != nil && c.Status == metav1.ConditionTrue {
			return fmt.Errorf("Stalled=True/%s: %s", c.Reason, c.Message)
		}
		if f.Status.Phase != cellosv1.FormationRunning || f.Status.FormationID != x {
			return fmt.Errorf("phase %q, formationId %q; want Running, %s (conditions %s)", f.Status.Phase, f.Status.FormationID, x, conditionsString(f.Status.Conditions))
		}
		return nil
	}); err != nil {
		t.Errorf("the owner, after a restart over a stream without its created event: %v", err)
	}
	if twins := formationsLabelled(t, operatorNS, x); len(twins) > 0 {
		t.Errorf("an observed twin of the owner's formation in the operator's namespace: %s/%s (phase %q)", twins[0].Namespace, twins[0].Name, twins[0].Status.Phase)
	}

	cellID := "owner-lead-" + x[:8]
	publish(t, jsc, []sampleMessage{cellStarted(cellID, x)})
	if err := within(time.Minute, func() error { _, err := cellIn(nsA, cellID); return err }); err != nil {
		t.Errorf("the Cell of the owner's formation in the owner's namespace %s: %v", nsA, err)
	}
	if _, err := cellIn(operatorNS, cellID); err == nil {
		t.Errorf("the Cell of the owner's formation was created in the operator's namespace %s", operatorNS)
	} else if !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}

	deleteFormation(t, key)
	if err := within(2*time.Minute, func() error { return gone(key) }); err != nil {
		t.Errorf("the deleted owner: %v", err)
	}
	// The cancel comes before the finalizer goes; a moment more for a slow
	// reader of the stream.
	if err := within(20*time.Second, func() error { _, err := exactlyOne(jsc, x, cancelledType); return err }); err != nil {
		t.Errorf("deleting the owner: %v", err)
	}
}

// TestOnlyTheOwnersDeleteCancels reproduces defect 3: deleting a declared
// Formation that merely carried the label of a formation (a copy beside the
// owner, one whose id the stream never named, a follower of an observed
// formation) published the formation's cancel. The contract: only the
// owner's delete publishes a cancel; deleting a follower, a copy, a refused
// or an unadmitted Formation publishes nothing.
func TestOnlyTheOwnersDeleteCancels(t *testing.T) {
	operatorNS, nsA := newNamespace(t), newNamespace(t)
	js := localenv.StartJetStream(t)
	_, jsc := js.Connect(t)
	startManager(t, js.URL(), operatorNS, "--flush-window=50ms")

	owner, x := declareAdmitted(t, nsA, "owner")

	t.Run("copy", func(t *testing.T) {
		key := createFormation(t, labelledFormation(nsA, "copy", x))
		harness.Eventually(t, 2*time.Minute, "the operator handles the copy", func() error { return handled(key) })
		deleteFormation(t, key)
		if err := within(2*time.Minute, func() error { return gone(key) }); err != nil {
			t.Errorf("the deleted copy: %v", err)
		}
		settled(t, jsc, operatorNS)
		noCancelFor(t, jsc, x, "after deleting a copy of the owner")
		if err := phaseNow(owner, cellosv1.FormationPending); err != nil {
			t.Errorf("the owner, after its copy was deleted: %v", err)
		}
	})

	t.Run("never-named", func(t *testing.T) {
		y := uuid.NewString()
		key := createFormation(t, labelledFormation(nsA, "unnamed", y))
		harness.Eventually(t, 2*time.Minute, "the Formation of an id the stream never named awaits it", func() error {
			return conditionIs(key, cellosv1.ReconcilingCondition, cellosv1.AwaitingStreamReason)
		})
		deleteFormation(t, key)
		if err := within(2*time.Minute, func() error { return gone(key) }); err != nil {
			t.Errorf("the deleted Formation: %v", err)
		}
		settled(t, jsc, operatorNS)
		evs, err := streamEventsOn(jsc, formationSubject(y))
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) > 0 {
			t.Errorf("deleting a Formation labelled with an id the stream never named published %s", describeEvents(evs))
		}
		noCancelFor(t, jsc, y, "after deleting a Formation of an id the stream never named")
	})

	t.Run("follower", func(t *testing.T) {
		z := uuid.NewString()
		publish(t, jsc, []sampleMessage{supervisorEvent(z, "created"), supervisorEvent(z, "running")})
		observedIn(t, operatorNS, z, cellosv1.FormationRunning)
		key := createFormation(t, labelledFormation(operatorNS, "follower", z))
		harness.Eventually(t, 2*time.Minute, "the operator handles the follower", func() error { return handled(key) })
		deleteFormation(t, key)
		if err := within(2*time.Minute, func() error { return gone(key) }); err != nil {
			t.Errorf("the deleted follower: %v", err)
		}
		settled(t, jsc, operatorNS)
		noCancelFor(t, jsc, z, "after deleting a follower of an observed formation")
	})
}

// nextOnSubject reads the first message on subject at or after sequence
// from, as soon as JetStream stores it.
func nextOnSubject(t *testing.T, s natsjs.Stream, subject string, from uint64, timeout time.Duration) streamEvent {
	t.Helper()
	ctx := context.Background()
	cons, err := s.OrderedConsumer(ctx, natsjs.OrderedConsumerConfig{
		FilterSubjects: []string{subject},
		DeliverPolicy:  natsjs.DeliverByStartSequencePolicy,
		OptStartSeq:    from,
	})
	if err != nil {
		t.Fatal(err)
	}
	it, err := cons.Messages()
	if err != nil {
		t.Fatal(err)
	}
	defer it.Stop()
	type result struct {
		ev  streamEvent
		err error
	}
	got := make(chan result, 1)
	go func() {
		msg, err := it.Next()
		if err != nil {
			got <- result{err: err}
			return
		}
		ev := streamEvent{Subject: msg.Subject(), MsgID: msg.Headers().Get("Nats-Msg-Id")}
		if md, err := msg.Metadata(); err == nil {
			ev.Seq = md.Sequence.Stream
		}
		got <- result{ev: ev, err: json.Unmarshal(msg.Data(), &ev)}
	}()
	select {
	case r := <-got:
		if r.err != nil {
			t.Fatalf("reading %s: %v", subject, r.err)
		}
		return r.ev
	case <-time.After(timeout):
		t.Fatalf("no message on %s from sequence %d within %s", subject, from, timeout)
	}
	return streamEvent{}
}

// TestCancelReleasesOnItsOwnEventOnce reproduces defect 4: after deleting a
// running declared Formation, a supervisor event that followed the
// operator's cancelled event into the stream, before the Formation's next
// reconcile, made the operator cancel again: the Formation stayed
// Terminating, or a second cancelled event landed once the duplicate window
// had passed. The contract: a cancel is published at most once, ever; the
// finalizer goes as soon as the stream holds the operator's cancelled event,
// whatever events follow it.
func TestCancelReleasesOnItsOwnEventOnce(t *testing.T) {
	operatorNS, nsA := newNamespace(t), newNamespace(t)
	js := localenv.StartJetStream(t)
	_, jsc := js.Connect(t)
	ctx := context.Background()
	// A short duplicate window: a cancel published again after it is a new
	// message, as it would be after the default two minutes.
	cfg := jetstream.DefaultStreamConfig("CELLOS_EVENTS")
	cfg.Duplicates = 2 * time.Second
	s, err := jsc.CreateStream(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	// A long flush window: the fold runs ahead of the reconciles.
	startManager(t, js.URL(), operatorNS, "--flush-window=2s")

	key, x := declareAdmitted(t, nsA, "running")
	publish(t, jsc, []sampleMessage{supervisorEvent(x, "running")})
	phaseIs(t, key, cellosv1.FormationRunning)

	from := lastSequence(t, jsc) + 1
	deleteFormation(t, key)
	ev := nextOnSubject(t, s, formationSubject(x), from, 2*time.Minute)
	if ev.Type != cancelledType {
		t.Fatalf("the first event on %s after the delete is %s (sequence %d), want the cancelled event", formationSubject(x), ev.Type, ev.Seq)
	}
	publish(t, jsc, []sampleMessage{supervisorEvent(x, "running")})

	if err := within(time.Minute, func() error { return gone(key) }); err != nil {
		t.Errorf("the deleted Formation, once its cancelled event is in the stream: %v", err)
	}
	time.Sleep(10 * time.Second) // well past the duplicate window
	evs, err := cancelledAnywhere(jsc, x)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 {
		t.Errorf("%d cancelled events of formation %s in the stream, want exactly 1: %s", len(evs), x, describeWithSubjects(evs))
	}
}

// TestDeletedFormationNotResurrectedAfterPurge reproduces defect 5: once the
// created and cancelled events of a deleted declared Formation left the
// stream, a restart folded the later events of its formation into a new
// observed Formation and its Cell. The contract: a deleted declared
// Formation never comes back, even after its created and cancelled events
// are purged and a restart refolds what remains.
func TestDeletedFormationNotResurrectedAfterPurge(t *testing.T) {
	operatorNS, nsA := newNamespace(t), newNamespace(t)
	js := localenv.StartJetStream(t)
	_, jsc := js.Connect(t)
	m := startManager(t, js.URL(), operatorNS, "--flush-window=50ms")
	ctx := context.Background()

	key, x := declareAdmitted(t, nsA, "deleted")
	publish(t, jsc, []sampleMessage{supervisorEvent(x, "running")})
	phaseIs(t, key, cellosv1.FormationRunning)
	deleteFormation(t, key)
	harness.Eventually(t, 2*time.Minute, "the deleted Formation goes", func() error { return gone(key) })
	cancelled, err := exactlyOne(jsc, x, cancelledType)
	if err != nil {
		t.Fatal(err)
	}
	created, err := exactlyOne(jsc, x, createdType)
	if err != nil {
		t.Fatal(err)
	}
	cellID := "deleted-late-" + x[:8]
	publish(t, jsc, []sampleMessage{supervisorEvent(x, "running"), cellStarted(cellID, x)})
	settled(t, jsc, operatorNS)

	harness.Stop(t, m.Manager)
	s, err := jsc.Stream(ctx, "CELLOS_EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	for _, seq := range []uint64{created.Seq, cancelled.Seq} {
		if err := s.DeleteMsg(ctx, seq); err != nil {
			t.Fatalf("deleting sequence %d: %v", seq, err)
		}
	}
	// Without the checkpoint, which still knows both events: the start
	// folds what the stream holds.
	startManager(t, js.URL(), operatorNS, "--flush-window=50ms", "--checkpoint-interval=0")
	settled(t, jsc, operatorNS)
	if err := nothingOf(x, cellID); err != nil {
		t.Errorf("after a restart over a stream without the created and cancelled events: %v", err)
	}
}

// publishFiller publishes n events of a type the fold ignores, asynchronously,
// and waits for their acks.
func publishFiller(t *testing.T, jsc natsjs.JetStream, n int) {
	t.Helper()
	const batch = 2000
	for sent := 0; sent < n; {
		var futures []natsjs.PubAckFuture
		for i := 0; i < batch && sent < n; i, sent = i+1, sent+1 {
			payload := `{"specversion":"1.0","id":"filler-` + strconv.Itoa(sent) + `","source":"test","type":"dev.cellos.events.test.v1.filler","data":{}}`
			f, err := jsc.PublishAsync("cellos.events.filler", []byte(payload))
			if err != nil {
				t.Fatalf("publishing filler %d: %v", sent, err)
			}
			futures = append(futures, f)
		}
		select {
		case <-jsc.PublishAsyncComplete():
		case <-time.After(time.Minute):
			t.Fatalf("filler acks still pending after a minute")
		}
		for _, f := range futures {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				t.Fatalf("publishing filler: %v", err)
			}
		}
	}
}

// fillerEvents is how many ignored events come before the formation's own in
// TestNoDecisionFromAPartialFold, so that the start-up fold takes a while.
const fillerEvents = 100_000

// TestNoDecisionFromAPartialFold reproduces defect 6: at start the
// reconcilers ran before the fold had reached a formation's events, and
// decided from what they had not seen yet: the observed Formation gave way
// to a refused declared one, and that one flipped from TakeoverRefused to
// AwaitingStream and back, with a new Warning Event each restart. The
// contract: nothing is decided from a partial fold; until the start-up fold
// reaches the stream's end, no Formation is refused, deleted, given way, or
// cancelled.
func TestNoDecisionFromAPartialFold(t *testing.T) {
	operatorNS, nsA := newNamespace(t), newNamespace(t)
	js := localenv.StartJetStream(t)
	_, jsc := js.Connect(t)
	ensureEventStream(t, jsc)
	began := time.Now()
	publishFiller(t, jsc, fillerEvents)
	t.Logf("published %d filler events in %s", fillerEvents, time.Since(began).Round(time.Millisecond))

	z := uuid.NewString()
	cellID := "partial-" + z[:8]
	publish(t, jsc, []sampleMessage{supervisorEvent(z, "created"), supervisorEvent(z, "running"), cellStarted(cellID, z)})
	began = time.Now()
	m := startManager(t, js.URL(), operatorNS, "--flush-window=50ms")
	observedKey := types.NamespacedName{Namespace: operatorNS, Name: store.ObjectName(z)}
	var observed *cellosv1.Formation
	harness.Eventually(t, 3*time.Minute, "the observed Formation runs", func() error {
		var err error
		observed, err = getFormation(observedKey)
		if err != nil {
			return err
		}
		if observed.Status.Phase != cellosv1.FormationRunning {
			return fmt.Errorf("phase %q", observed.Status.Phase)
		}
		return nil
	})
	t.Logf("the first fold reached the formation in %s", time.Since(began).Round(time.Millisecond))
	var cell *cellosv1.Cell
	harness.Eventually(t, 2*time.Minute, "the Cell of the observed formation", func() error {
		var err error
		cell, err = cellIn(operatorNS, cellID)
		return err
	})

	refusedKey := createFormation(t, labelledFormation(nsA, "refused", z))
	harness.Eventually(t, 2*time.Minute, "the Formation labelled with the observed formation's id is refused", func() error {
		return stalledWith(refusedKey, cellosv1.TakeoverRefusedReason)
	})
	harness.Eventually(t, time.Minute, "a TakeoverRefused Warning Event on the refused Formation", func() error {
		if n, _ := warningEvents(t, refusedKey, cellosv1.TakeoverRefusedReason); n == 0 {
			return fmt.Errorf("none yet")
		}
		return nil
	})
	time.Sleep(2 * time.Second)
	warnings, _ := warningEvents(t, refusedKey, cellosv1.TakeoverRefusedReason)

	// Watch the three objects through the restarts.
	var mu sync.Mutex
	problems := map[string]int{}
	var firstProblems []string
	note := func(p string) {
		mu.Lock()
		defer mu.Unlock()
		if problems[p] == 0 && len(firstProblems) < 20 {
			firstProblems = append(firstProblems, p)
		}
		problems[p]++
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			switch f, err := getFormation(observedKey); {
			case apierrors.IsNotFound(err):
				note("the observed Formation was missing")
			case err != nil:
			case f.UID != observed.UID:
				note(fmt.Sprintf("the observed Formation was recreated (uid %s, was %s)", f.UID, observed.UID))
			case f.DeletionTimestamp != nil:
				note("the observed Formation was being deleted")
			}
			switch c, err := cellIn(operatorNS, cellID); {
			case apierrors.IsNotFound(err):
				note("the Cell was missing")
			case err != nil:
			case c.UID != cell.UID:
				note(fmt.Sprintf("the Cell was recreated (uid %s, was %s)", c.UID, cell.UID))
			case c.DeletionTimestamp != nil:
				note("the Cell was being deleted")
			}
			if f, err := getFormation(refusedKey); err == nil {
				if c := meta.FindStatusCondition(f.Status.Conditions, cellosv1.StalledCondition); c == nil ||
					c.Status != metav1.ConditionTrue || c.Reason != cellosv1.TakeoverRefusedReason {
					note(fmt.Sprintf("the refused Formation was not Stalled=True/TakeoverRefused (conditions %s)", conditionsString(f.Status.Conditions)))
				}
			} else {
				note(fmt.Sprintf("the refused Formation could not be read: %v", err))
			}
		}
	})

	for i := 1; i <= 3; i++ {
		harness.Stop(t, m.Manager)
		began = time.Now()
		// Without a checkpoint, which would leave no partial fold to see.
		m = startManager(t, js.URL(), operatorNS, "--flush-window=50ms", "--checkpoint-interval=0")
		settled(t, jsc, operatorNS)
		t.Logf("restart %d: the fold passed the sentinel in %s", i, time.Since(began).Round(time.Millisecond))
	}
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()

	if len(firstProblems) > 0 {
		var lines []string
		for _, p := range firstProblems {
			lines = append(lines, fmt.Sprintf("%s (%d polls)", p, problems[p]))
		}
		t.Errorf("across 3 restarts, decisions taken before the fold reached the formation:\n  %s", strings.Join(lines, "\n  "))
	}
	if err := stalledWith(refusedKey, cellosv1.TakeoverRefusedReason); err != nil {
		t.Errorf("the refused Formation at the end: %v", err)
	}
	if after, notes := warningEvents(t, refusedKey, cellosv1.TakeoverRefusedReason); after != warnings {
		t.Errorf("TakeoverRefused Warning Events on the refused Formation: %d before the restarts, %d after: %q", warnings, after, notes)
	}
	if err := mirrors(observedKey, z, cellosv1.FormationRunning); err != nil {
		t.Errorf("the observed Formation at the end: %v", err)
	}
}

// TestProjectionNamespaceCannotFollowDeclaredFormation reproduces defect 7:
// a Formation in the operator's --namespace labelled with a formation
// declared and admitted in another namespace was accepted as a follower
// (waiting behind the owner, with the cancel finalizer) instead of refused,
// and its delete cancelled the owner's formation. The contract: a formation
// declared in a namespace (its created event names it) is the owner's; the
// projection namespace may follow only the formations no namespace declared,
// so this Formation is refused (Stalled=True, TakeoverRefused), mirrors
// nothing, and its delete publishes nothing.
func TestProjectionNamespaceCannotFollowDeclaredFormation(t *testing.T) {
	operatorNS, nsA := newNamespace(t), newNamespace(t)
	js := localenv.StartJetStream(t)
	_, jsc := js.Connect(t)
	startManager(t, js.URL(), operatorNS, "--flush-window=50ms")

	owner, x := declareAdmitted(t, nsA, "owner")
	key := createFormation(t, labelledFormation(operatorNS, "intruder", x))
	var mirrored []string
	check := func() error {
		f, err := getFormation(key)
		if err != nil {
			return err
		}
		if f.Status.FormationID == x || f.Status.Phase != "" || f.Status.LastAppliedSequence != 0 {
			mirrored = append(mirrored, fmt.Sprintf("formationId %q, phase %q at %d", f.Status.FormationID, f.Status.Phase, f.Status.LastAppliedSequence))
		}
		return stalledWith(key, cellosv1.TakeoverRefusedReason)
	}
	if err := within(time.Minute, check); err != nil {
		t.Errorf("a Formation in the operator's namespace labelled with the owner's formation: %v", err)
	}
	harness.Eventually(t, time.Minute, "the operator handles the Formation", func() error { return handled(key) })
	_ = check()
	if len(mirrored) > 0 {
		t.Errorf("the Formation in the operator's namespace mirrored the owner's formation: %s", mirrored[len(mirrored)-1])
	}

	deleteFormation(t, key)
	if err := within(2*time.Minute, func() error { return gone(key) }); err != nil {
		t.Errorf("the deleted Formation: %v", err)
	}
	settled(t, jsc, operatorNS)
	noCancelFor(t, jsc, x, "after deleting the Formation in the operator's namespace")
	if err := phaseNow(owner, cellosv1.FormationPending); err != nil {
		t.Errorf("the owner: %v", err)
	}
}

// TestForgedOwnershipFactsIgnored reproduces defect 8: the namespace a
// formation belongs to, and that it was deleted, were read from any event
// that said so, whoever published it and on any subject. The contract: facts
// that decide ownership (namespace, deletion) come only from the operator's
// own events, on <prefix>.formation.<id>, with source cellos-operator.
func TestForgedOwnershipFactsIgnored(t *testing.T) {
	operatorNS, nsB := newNamespace(t), newNamespace(t)
	js := localenv.StartJetStream(t)
	_, jsc := js.Connect(t)
	startManager(t, js.URL(), operatorNS, "--flush-window=50ms")

	t.Run("forged-created", func(t *testing.T) {
		z, w := uuid.NewString(), uuid.NewString()
		// A supervisor claims a namespace on the formation's subject...
		publishEvent(t, jsc, formationSubject(z), "cellos-supervisor", createdType,
			map[string]string{"formationId": z, "formationName": "forged", "namespace": nsB})
		// ...and someone claims to be the operator on another subject.
		publishEvent(t, jsc, "cellos.events.forged."+w, "cellos-operator", createdType,
			map[string]string{"formationId": w, "formationName": "forged", "namespace": nsB})
		ids := []string{z, w}
		keys := make([]types.NamespacedName, len(ids))
		for i, id := range ids {
			keys[i] = createFormation(t, labelledFormation(nsB, "claims-"+id[:8], id))
		}
		// One minute for all the checks together.
		deadline := time.Now().Add(time.Minute)
		for i, id := range ids {
			if err := within(time.Until(deadline), func() error { return stalledWith(keys[i], cellosv1.TakeoverRefusedReason) }); err != nil {
				t.Errorf("a Formation in %s labelled with %s, whose created event only a forger says is %s's: %v", nsB, id, nsB, err)
			}
			observedKey := types.NamespacedName{Namespace: operatorNS, Name: store.ObjectName(id)}
			if err := within(time.Until(deadline), func() error { return mirrors(observedKey, id, cellosv1.FormationPending) }); err != nil {
				t.Errorf("the observed Formation of %s in the operator's namespace: %v", id, err)
			}
		}
	})

	t.Run("forged-cancelled", func(t *testing.T) {
		v, u := uuid.NewString(), uuid.NewString()
		// The operator's source on another subject...
		publishEvent(t, jsc, "cellos.events.forged."+v, "cellos-operator", cancelledType, map[string]string{"formationId": v})
		// ...and the formation's subject with another source.
		publishEvent(t, jsc, formationSubject(u), "cellos-supervisor", cancelledType, map[string]string{"formationId": u})
		publish(t, jsc, []sampleMessage{
			supervisorEvent(v, "created"), supervisorEvent(v, "running"),
			supervisorEvent(u, "created"), supervisorEvent(u, "running"),
		})
		settled(t, jsc, operatorNS)
		for _, id := range []string{v, u} {
			observedKey := types.NamespacedName{Namespace: operatorNS, Name: store.ObjectName(id)}
			if err := within(30*time.Second, func() error { return mirrors(observedKey, id, cellosv1.FormationRunning) }); err != nil {
				t.Errorf("the observed Formation of %s, after a forged cancelled event: %v", id, err)
			}
		}
	})
}

// reconcileTotal sums controller_runtime_reconcile_total of a controller over
// its results.
func (m *manager) reconcileTotal(t *testing.T, controller string) float64 {
	t.Helper()
	_, body, err := harness.HTTPGet("http://" + m.MetricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, "controller_runtime_reconcile_total{") || !strings.Contains(line, `controller="`+controller+`"`) {
			continue
		}
		fields := strings.Fields(line)
		v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		sum += v
	}
	return sum
}

// sameLabelFormations is how many Formations TestRefusalNamesNoNamespace
// labels with one id.
const sameLabelFormations = 40

// TestRefusalNamesNoNamespace reproduces defect 9: the refusal of a
// Formation labelled with another namespace's formation told, in its
// condition and Warning Event, which namespace owns the formation and which
// is the operator's: a probe for other teams' namespaces. And every change
// of a Formation queued every Formation of its label, so that n Formations
// of one label, declared one after another, cost about n² reconciles. The contract: a refusal names no
// other namespace; handling n Formations of one label costs O(n) reconciles.
func TestRefusalNamesNoNamespace(t *testing.T) {
	operatorNS, nsA, nsB := newNamespace(t), newNamespace(t), newNamespace(t)
	js := localenv.StartJetStream(t)
	_, jsc := js.Connect(t)
	m := startManager(t, js.URL(), operatorNS, "--flush-window=50ms")

	_, x := declareAdmitted(t, nsB, "owner")
	key := createFormation(t, labelledFormation(nsA, "probe", x))
	harness.Eventually(t, 2*time.Minute, "the probe is refused", func() error { return stalledWith(key, cellosv1.TakeoverRefusedReason) })
	f, err := getFormation(key)
	if err != nil {
		t.Fatal(err)
	}
	stalled := meta.FindStatusCondition(f.Status.Conditions, cellosv1.StalledCondition)
	for _, ns := range []string{nsB, operatorNS} {
		if strings.Contains(stalled.Message, ns) {
			t.Errorf("the Stalled condition of the refused Formation names namespace %s: %q", ns, stalled.Message)
		}
	}
	var notes []string
	harness.Eventually(t, time.Minute, "a Warning Event on the refused Formation", func() error {
		var n int
		n, notes = warningEvents(t, key, "")
		if n == 0 {
			return fmt.Errorf("none yet")
		}
		return nil
	})
	for _, msg := range notes {
		for _, ns := range []string{nsB, operatorNS} {
			if strings.Contains(msg, ns) {
				t.Errorf("a Warning Event about the refused Formation names namespace %s: %q", ns, msg)
			}
		}
	}

	// n Formations of one label, an id the stream never named, declared one
	// after another as Git brings them: each is handled before the next
	// comes. (Created all at once, the work queue coalesces the fan-out:
	// 40, 100 and 200 such Formations took 10, 12 and 9 reconciles each.)
	settled(t, jsc, operatorNS)
	before := m.reconcileTotal(t, "formation")
	q := uuid.NewString()
	keys := make([]types.NamespacedName, sameLabelFormations)
	for i := range keys {
		keys[i] = createFormation(t, labelledFormation(nsA, fmt.Sprintf("same-label-%d", i), q))
		harness.Eventually(t, time.Minute, keys[i].Name+" awaits the stream", func() error {
			return conditionIs(keys[i], cellosv1.ReconcilingCondition, cellosv1.AwaitingStreamReason)
		})
	}
	// Let the queue drain: the count stops moving.
	after := m.reconcileTotal(t, "formation")
	for stable := 0; stable < 3; {
		time.Sleep(time.Second)
		now := m.reconcileTotal(t, "formation")
		if now == after {
			stable++
		} else {
			stable = 0
		}
		after = now
	}
	n := len(keys)
	t.Logf("%d Formations of one label took %v reconciles", n, after-before)
	if after-before >= float64(10*n) {
		t.Errorf("%d Formations of one label took %v Formation reconciles, want fewer than %d (10 per Formation)", n, after-before, 10*n)
	}
}
