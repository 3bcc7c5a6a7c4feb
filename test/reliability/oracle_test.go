package reliability

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	natsjs "github.com/nats-io/nats.go/jetstream"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/internal/cursor"
	"cellos.dev/cellos-operator/internal/fold"
	"cellos.dev/cellos-operator/internal/status"
	"cellos.dev/cellos-operator/internal/store"
	"cellos.dev/cellos-operator/test/harness"
	"cellos.dev/cellos-operator/test/localenv"
)

const streamName = "CELLOS_EVENTS"

// message is one stream message as the oracle reads it back.
type message struct {
	seq     uint64
	subject string
	header  map[string][]string
	data    []byte
}

// snapshot is every message a stream holds, and which stream it is.
type snapshot struct {
	stream      store.Stream
	first, last uint64
	msgs        []message
}

// readStream reads every message of the stream with an ordered consumer.
// Nothing may publish meanwhile: it fails when the stream changed.
func readStream(t testing.TB, jsc natsjs.JetStream) snapshot {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// The client may still be reconnecting to a server just restarted.
	var s natsjs.Stream
	var err error
	for range 300 {
		if s, err = jsc.Stream(ctx, streamName); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	info := s.CachedInfo()
	snap := snapshot{
		stream: store.Stream{Name: info.Config.Name, Created: info.Created},
		first:  info.State.FirstSeq, last: info.State.LastSeq,
	}
	if info.State.Msgs > 0 {
		cons, err := jsc.OrderedConsumer(ctx, streamName, natsjs.OrderedConsumerConfig{})
		if err != nil {
			t.Fatal(err)
		}
		it, err := cons.Messages(natsjs.PullMaxMessages(1000))
		if err != nil {
			t.Fatal(err)
		}
		for {
			msg, err := it.Next(natsjs.NextContext(ctx))
			if err != nil {
				it.Stop()
				t.Fatalf("reading the stream back after %d messages: %v", len(snap.msgs), err)
			}
			meta, err := msg.Metadata()
			if err != nil {
				t.Fatal(err)
			}
			var header map[string][]string
			if len(msg.Headers()) > 0 {
				header = msg.Headers()
			}
			snap.msgs = append(snap.msgs, message{seq: meta.Sequence.Stream, subject: msg.Subject(), header: header, data: slices.Clone(msg.Data())})
			if meta.Sequence.Stream >= info.State.LastSeq {
				break
			}
		}
		it.Stop()
	}
	after, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !after.Created.Equal(info.Created) || after.State.LastSeq != info.State.LastSeq || uint64(len(snap.msgs)) != info.State.Msgs {
		t.Fatalf("the stream changed while the oracle read it, or holds %d messages where %d were read", info.State.Msgs, len(snap.msgs))
	}
	return snap
}

// foldOf is the pure fold of the snapshot's messages, and each one's outcome.
func foldOf(snap snapshot) (*fold.State, []fold.Outcome) {
	s := fold.NewState()
	outs := make([]fold.Outcome, 0, len(snap.msgs))
	for _, m := range snap.msgs {
		outs = append(outs, s.Apply(m.seq, m.subject, m.header, m.data))
	}
	return s, outs
}

// expectation is what the objects of a namespace must be.
type expectation struct {
	stream store.Stream
	last   uint64
	state  *fold.State
	// leftover allows an object of an id the stream no longer names (its
	// events were purged, or belong to a stream since deleted): it must
	// then be exactly as leftover's state has it, under leftover's stream.
	leftover *expectation
}

// expect is the expectation of the stream as it is now.
func expect(t testing.TB, jsc natsjs.JetStream) (expectation, snapshot) {
	t.Helper()
	snap := readStream(t, jsc)
	state, _ := foldOf(snap)
	return expectation{stream: snap.stream, last: snap.last, state: state}, snap
}

// mismatches compares every Formation and Cell of ns with want: each id
// the fold names is on exactly one object, named after it, whose status
// is its projection; and no object holds an id the fold does not name. It
// returns one line per object that differs.
func mismatches(ctx context.Context, ns string, want expectation) ([]string, error) {
	var formations cellosv1.FormationList
	if err := cp.Client.List(ctx, &formations, client.InNamespace(ns)); err != nil {
		return nil, err
	}
	var cells cellosv1.CellList
	if err := cp.Client.List(ctx, &cells, client.InNamespace(ns)); err != nil {
		return nil, err
	}
	var bad []string
	byFormation := map[string][]*cellosv1.Formation{}
	for i := range formations.Items {
		f := &formations.Items[i]
		id := f.Labels[cellosv1.FormationIDLabel]
		byFormation[id] = append(byFormation[id], f)
	}
	byCell := map[string][]*cellosv1.Cell{}
	cellsOf := map[string][]cellosv1.Cell{}
	for i := range cells.Items {
		c := &cells.Items[i]
		if c.Status.LastAppliedSequence == 0 {
			bad = append(bad, fmt.Sprintf("Cell %s has no status", c.Name))
			continue
		}
		byCell[c.Status.CellID] = append(byCell[c.Status.CellID], c)
		if id := c.Labels[cellosv1.FormationIDLabel]; id != "" {
			cellsOf[id] = append(cellsOf[id], *c)
		}
	}

	// A Formation only purged events or a deleted stream named keeps its
	// last status, cell counts included, even as its Cells change.
	checkFormation := func(id string, exp expectation, wf *fold.Formation, leftover bool) {
		found := byFormation[id]
		if len(found) != 1 {
			bad = append(bad, fmt.Sprintf("formation %s: on %d Formations, want 1", id, len(found)))
			return
		}
		f := found[0]
		s := f.Status
		counts := status.CountCells(cellsOf[id])
		if leftover {
			counts = s.CellCounts
		}
		got := fmt.Sprint(f.Name, "|", s.FormationID, "|", s.FormationName, "|", s.Phase, "|", s.LastAppliedSequence, "|", s.StreamStamp, "|", s.CellCounts)
		wantLine := fmt.Sprint(store.ObjectName(id), "|", wf.ID, "|", wf.Name, "|", wf.Phase, "|", wf.LastAppliedSequence, "|",
			store.Stamp(exp.stream, store.Ref{Kind: store.FormationKind, ID: id}, wf.LastAppliedSequence), "|", counts)
		if got != wantLine {
			bad = append(bad, fmt.Sprintf("formation %s:\n   got %s\n  want %s", id, got, wantLine))
			return
		}
		if !sameDocument(wf.Document, s.Document) {
			bad = append(bad, fmt.Sprintf("formation %s: document %.80s, want %.80s", id, rawString(s.Document), wf.Document))
		}
	}
	checkCell := func(id string, exp expectation, wc *fold.Cell) {
		found := byCell[id]
		if len(found) != 1 {
			bad = append(bad, fmt.Sprintf("cell %.80q: on %d Cells, want 1", id, len(found)))
			return
		}
		c := found[0]
		s := c.Status
		got := strings.Join([]string{c.Name, s.CellID, s.SpecID, s.RunID, s.FormationID, string(s.State),
			metaTimeString(s.StartedAt), metaTimeString(s.DestroyedAt), s.Outcome, exitCodeString(s.ExitCode),
			fmt.Sprint(s.LastAppliedSequence), s.StreamStamp}, "|")
		wantLine := strings.Join([]string{store.ObjectName(id), wc.ID, wc.SpecID, wc.RunID, wc.FormationID, string(wc.State),
			foldTimeString(wc.StartedAt), foldTimeString(wc.DestroyedAt), wc.Outcome, exitCodeString(wc.ExitCode),
			fmt.Sprint(wc.LastAppliedSequence), store.Stamp(exp.stream, store.Ref{Kind: store.CellKind, ID: id}, wc.LastAppliedSequence)}, "|")
		if got != wantLine {
			bad = append(bad, fmt.Sprintf("cell %.80q:\n   got %.300s\n  want %.300s", id, got, wantLine))
		}
	}

	for id, wf := range want.state.Formations {
		checkFormation(id, want, wf, false)
	}
	for id, wc := range want.state.Cells {
		checkCell(id, want, wc)
	}
	for id := range byFormation {
		if _, ok := want.state.Formations[id]; ok {
			continue
		}
		if old := want.leftover; old != nil && old.state.Formations[id] != nil {
			checkFormation(id, *old, old.state.Formations[id], true)
			continue
		}
		bad = append(bad, fmt.Sprintf("extra Formation of formation %q, which the stream does not name", id))
	}
	for id := range byCell {
		if _, ok := want.state.Cells[id]; ok {
			continue
		}
		if old := want.leftover; old != nil && old.state.Cells[id] != nil {
			checkCell(id, *old, old.state.Cells[id])
			continue
		}
		bad = append(bad, fmt.Sprintf("extra Cell of cell %.80q, which the stream does not name", id))
	}
	slices.Sort(bad)
	return bad, nil
}

// cursorReached is nil once the cursor of ns names want's stream and has
// reached its last sequence.
func cursorReached(ctx context.Context, ns string, want expectation) error {
	return harness.CursorReached(ctx, cp.Client, ns,
		cursor.Position{Stream: want.stream.Name, StreamCreated: want.stream.Created, Sequence: want.last})
}

// converge waits until every object of ns equals want and the cursor
// reaches its end. It returns how long that took and how many objects still
// differ (0 when they converged); it fails the test when they did not.
//
// It waits for the cursor first, a read of one ConfigMap, and compares
// every object only then, and at most once a second: listing every object
// of a large run often would slow the API server the operator writes to.
func converge(t testing.TB, ns string, want expectation, timeout time.Duration) (time.Duration, int) {
	t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	ctx := context.Background()
	for cursorReached(ctx, ns, want) != nil && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	for {
		bad, err := mismatches(ctx, ns, want)
		if err == nil && len(bad) == 0 {
			err = cursorReached(ctx, ns, want)
		}
		if err == nil && len(bad) == 0 {
			return time.Since(start), 0
		}
		if time.Now().After(deadline) {
			if len(bad) > 0 {
				t.Errorf("after %s, %d objects differ from the fold of the stream (%d formations, %d cells, last sequence %d):\n%s",
					timeout, len(bad), len(want.state.Formations), len(want.state.Cells), want.last, strings.Join(first(bad, 15), "\n"))
			} else {
				t.Errorf("after %s: %v", timeout, err)
			}
			return time.Since(start), len(bad)
		}
		time.Sleep(min(time.Second, time.Duration(len(want.state.Cells)+len(want.state.Formations))*time.Millisecond+100*time.Millisecond))
	}
}

func first(s []string, n int) []string {
	if len(s) > n {
		return append(s[:n:n], fmt.Sprintf("... and %d more", len(s)-n))
	}
	return s
}

// sameDocument tells whether status holds the document the fold kept: the
// same JSON, or none when the API server could not store it.
func sameDocument(doc json.RawMessage, got *runtime.RawExtension) bool {
	var v any
	if json.Unmarshal(doc, &v) != nil || v == nil {
		return got == nil
	}
	return status.SameDocument(&runtime.RawExtension{Raw: doc}, got)
}

func rawString(r *runtime.RawExtension) string {
	if r == nil {
		return "<none>"
	}
	return string(r.Raw)
}

func metaTimeString(t *metav1.Time) string {
	if t == nil {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

func foldTimeString(t *time.Time) string {
	if t == nil {
		return ""
	}
	return t.Truncate(time.Second).UTC().Format(time.RFC3339)
}

func exitCodeString(p *int32) string {
	if p == nil {
		return "nil"
	}
	return fmt.Sprint(*p)
}

// newScenario starts what every scenario runs against besides the control
// plane: a namespace of its own, a JetStream server with the stream, and a
// recorder watching the namespace from the start.
func newScenario(t testing.TB) (ns string, js *localenv.JetStreamServer, jsc natsjs.JetStream, rec *recorder) {
	t.Helper()
	ns = newNamespace(t)
	js = localenv.StartJetStream(t)
	_, jsc = js.Connect(t)
	rec = record(t, ns)
	rec.addStream(ensureStream(t, jsc))
	return ns, js, jsc, rec
}

// newNamespace gives a scenario a namespace of its own, emptied of cellos
// objects at the end (envtest runs no namespace controller): stream ids are
// global, and the next scenario's operator must not find them.
func newNamespace(t testing.TB) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "reliability-"}}
	if err := cp.Client.Create(context.Background(), ns); err != nil {
		t.Fatalf("creating namespace: %v", err)
	}
	t.Cleanup(func() {
		// Every manager caches every Formation and Cell of the cluster: the
		// next scenario starts once this one's are gone. Deleting tens of
		// thousands outlasts one request, so ask again until they are.
		ctx := context.Background()
		deadline := time.Now().Add(15 * time.Minute)
		for _, obj := range []client.Object{&cellosv1.Formation{}, &cellosv1.Cell{}} {
			for {
				err := cp.Client.DeleteAllOf(ctx, obj, client.InNamespace(ns.Name))
				var left metav1.PartialObjectMetadataList
				left.SetGroupVersionKind(cellosv1.GroupVersion.WithKind(reflect.TypeOf(obj).Elem().Name() + "List"))
				lerr := cp.Client.List(ctx, &left, client.InNamespace(ns.Name), client.Limit(1))
				if err == nil && lerr == nil && len(left.Items) == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Logf("emptying namespace %s: %v %v", ns.Name, err, lerr)
					break
				}
				time.Sleep(2 * time.Second)
			}
		}
	})
	return ns.Name
}

// warningEvents lists the Warning Events of ns with reason, newest last.
func warningEvents(t testing.TB, ns, reason string) []corev1.Event {
	t.Helper()
	var list corev1.EventList
	if err := cp.Client.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	var out []corev1.Event
	for _, e := range list.Items {
		if e.Type == corev1.EventTypeWarning && e.Reason == reason {
			out = append(out, e)
		}
	}
	return out
}
