package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	natsjs "github.com/nats-io/nats.go/jetstream"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/internal/cursor"
	"cellos.dev/cellos-operator/internal/ingest"
	"cellos.dev/cellos-operator/internal/jetstream"
	"cellos.dev/cellos-operator/internal/store"
	"cellos.dev/cellos-operator/test/harness"
	"cellos.dev/cellos-operator/test/localenv"
)

// sampleDir holds the sample stream and the projection it must produce.
var sampleDir = filepath.Join(localenv.RepoRoot(), "internal", "fold", "testdata")

type sampleMessage struct {
	Subject string `json:"subject"`
	Data    string `json:"data"`
}

func readSample(t *testing.T) []sampleMessage {
	t.Helper()
	f, err := os.Open(filepath.Join(sampleDir, "events-sample.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var msgs []sampleMessage
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m sampleMessage
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, m)
	}
	return msgs
}

type expectedProjection struct {
	Formations map[string]struct {
		FormationID         string `json:"formationId"`
		Name                string `json:"name"`
		Phase               string `json:"phase"`
		LastAppliedSequence int64  `json:"lastAppliedSequence"`
	} `json:"formations"`
	Cells map[string]struct {
		CellID              string  `json:"cellId"`
		SpecID              string  `json:"specId"`
		RunID               *string `json:"runId"`
		State               string  `json:"state"`
		StartedAt           *string `json:"startedAt"`
		DestroyedAt         *string `json:"destroyedAt"`
		Outcome             *string `json:"outcome"`
		ExitCode            *int32  `json:"exitCode"`
		LastAppliedSequence int64   `json:"lastAppliedSequence"`
	} `json:"cells"`
	Ignored      int    `json:"ignored"`
	Rejected     int    `json:"rejected"`
	LastSequence uint64 `json:"lastSequence"`
}

func readExpected(t *testing.T) expectedProjection {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(sampleDir, "events-sample.expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var e expectedProjection
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatal(err)
	}
	return e
}

// publish sends messages to the stream, creating it as the operator would.
func publish(tb testing.TB, js natsjs.JetStream, msgs []sampleMessage) {
	tb.Helper()
	ctx := context.Background()
	if _, err := jetstream.EnsureStream(ctx, js, "CELLOS_EVENTS"); err != nil {
		tb.Fatal(err)
	}
	for _, m := range msgs {
		if _, err := js.Publish(ctx, m.Subject, []byte(m.Data)); err != nil {
			tb.Fatalf("publishing: %v", err)
		}
	}
}

func timeString(t interface{ UTC() time.Time }) string { return t.UTC().Format(time.RFC3339) }

// matchesExpected compares every object in ns with the expected projection.
func matchesExpected(ns string, want expectedProjection) error {
	ctx := context.Background()
	c := controlPlane.Client
	for id, wf := range want.Formations {
		var f cellosv1.Formation
		if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: id}, &f); err != nil {
			return fmt.Errorf("formation %s: %w", id, err)
		}
		s := f.Status
		got := fmt.Sprint(s.FormationID, s.FormationName, s.Phase, s.LastAppliedSequence, f.Labels[cellosv1.FormationIDLabel])
		exp := fmt.Sprint(wf.FormationID, wf.Name, wf.Phase, wf.LastAppliedSequence, wf.FormationID)
		if got != exp {
			return fmt.Errorf("formation %s: got %s, want %s", id, got, exp)
		}
	}
	var formations cellosv1.FormationList
	if err := c.List(ctx, &formations, client.InNamespace(ns)); err != nil {
		return err
	}
	if len(formations.Items) != len(want.Formations) {
		return fmt.Errorf("%d Formations, want %d", len(formations.Items), len(want.Formations))
	}
	for id, wc := range want.Cells {
		var cell cellosv1.Cell
		if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: store.ObjectName(id)}, &cell); err != nil {
			return fmt.Errorf("cell %s: %w", id, err)
		}
		s := cell.Status
		str := func(p *string) string {
			if p == nil {
				return ""
			}
			return *p
		}
		var started, destroyed string
		if s.StartedAt != nil {
			started = timeString(s.StartedAt)
		}
		if s.DestroyedAt != nil {
			destroyed = timeString(s.DestroyedAt)
		}
		exit := "nil"
		if s.ExitCode != nil {
			exit = strconv.Itoa(int(*s.ExitCode))
		}
		wantExit := "nil"
		if wc.ExitCode != nil {
			wantExit = strconv.Itoa(int(*wc.ExitCode))
		}
		got := strings.Join([]string{s.CellID, s.SpecID, s.RunID, string(s.State), started, destroyed, s.Outcome, exit, strconv.FormatInt(s.LastAppliedSequence, 10)}, "|")
		exp := strings.Join([]string{wc.CellID, wc.SpecID, str(wc.RunID), wc.State, str(wc.StartedAt), str(wc.DestroyedAt), str(wc.Outcome), wantExit, strconv.FormatInt(wc.LastAppliedSequence, 10)}, "|")
		if got != exp {
			return fmt.Errorf("cell %s:\n got %s\nwant %s", id, got, exp)
		}
	}
	var cells cellosv1.CellList
	if err := c.List(ctx, &cells, client.InNamespace(ns)); err != nil {
		return err
	}
	if len(cells.Items) != len(want.Cells) {
		return fmt.Errorf("%d Cells, want %d", len(cells.Items), len(want.Cells))
	}
	// A Formation's counts are written after its Cells, once the count
	// window has passed: they match when its Cells are all counted.
	for i := range formations.Items {
		f := &formations.Items[i]
		var labelled []cellosv1.Cell
		for _, cell := range cells.Items {
			if cell.Labels[cellosv1.FormationIDLabel] == f.Labels[cellosv1.FormationIDLabel] {
				labelled = append(labelled, cell)
			}
		}
		if got, want := f.Status.CellCounts, countCells(labelled); got != want {
			return fmt.Errorf("formation %s counts %+v, its Cells %+v", f.Name, got, want)
		}
	}
	return nil
}

// countCells counts Cells by state, as their Formation's counts must when
// none has expired.
func countCells(cells []cellosv1.Cell) cellosv1.CellCounts {
	var n cellosv1.CellCounts
	for i := range cells {
		n.Total++
		switch cells[i].Status.State {
		case cellosv1.CellRunning:
			n.Running++
		case cellosv1.CellDestroyed:
			n.Destroyed++
		default:
			n.Pending++
		}
	}
	return n
}

// cursorAt reads the committed cursor sequence in ns, 0 when there is none.
func cursorAt(tb testing.TB, ns string) uint64 {
	tb.Helper()
	p, _, err := harness.Cursor(context.Background(), controlPlane.Client, ns)
	if err != nil {
		tb.Fatal(err)
	}
	return p.Sequence
}

// waitForCursor waits until the committed cursor in ns reaches seq.
func waitForCursor(tb testing.TB, ns string, seq uint64) {
	tb.Helper()
	harness.WaitForCursor(tb, controlPlane.Client, ns, cursor.Position{Sequence: seq}, 5*time.Minute)
}

// sampleRun is a manager that projected the whole sample stream, in a
// namespace of its own, with the objects and the cursor caught up.
type sampleRun struct {
	ns   string
	js   *localenv.JetStreamServer
	jsc  natsjs.JetStream
	m    *manager
	want expectedProjection
}

func projectSample(t *testing.T) sampleRun {
	t.Helper()
	r := sampleRun{ns: newNamespace(t), js: localenv.StartJetStream(t), want: readExpected(t)}
	_, r.jsc = r.js.Connect(t)
	r.m = startManager(t, r.js.URL(), r.ns, "--flush-window=50ms")
	publish(t, r.jsc, readSample(t))
	harness.Eventually(t, time.Minute, "objects match the expected projection", func() error { return matchesExpected(r.ns, r.want) })
	waitForCursor(t, r.ns, r.want.LastSequence)
	return r
}

func TestProjectsSampleStream(t *testing.T) {
	r := projectSample(t)
	ns, m, want := r.ns, r.m, r.want

	var applied float64
	for _, family := range []string{"cell", "formation", "other"} {
		applied += m.Metric(t, `cellos_operator_events_total{family="`+family+`",result="applied"}`)
	}
	rejected := m.Metric(t, `cellos_operator_events_total{family="other",result="rejected"}`) +
		m.Metric(t, `cellos_operator_events_total{family="formation",result="rejected"}`)
	ignored := m.Metric(t, `cellos_operator_events_total{family="other",result="ignored"}`) +
		m.Metric(t, `cellos_operator_events_total{family="cell",result="ignored"}`) +
		m.Metric(t, `cellos_operator_events_total{family="formation",result="ignored"}`)
	if int(rejected) != want.Rejected || int(ignored) != want.Ignored || int(applied+rejected+ignored) != int(want.LastSequence) {
		t.Errorf("events counted: applied %v, rejected %v (want %d), ignored %v (want %d)", applied, rejected, want.Rejected, ignored, want.Ignored)
	}
	if got := m.Metric(t, "cellos_operator_cursor_sequence"); uint64(got) != want.LastSequence {
		t.Errorf("cursor metric %v, want %d", got, want.LastSequence)
	}

	harness.Eventually(t, 30*time.Second, "a Warning Event on the cursor ConfigMap for a rejected event", func() error {
		var evs eventsv1.EventList
		if err := controlPlane.Client.List(context.Background(), &evs, client.InNamespace(ns)); err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Reason == ingest.RejectedEventReason && e.Type == corev1.EventTypeWarning &&
				e.Regarding.Kind == "ConfigMap" && e.Regarding.Name == "cellos-projection-cursor" {
				return nil
			}
		}
		return fmt.Errorf("none among %d events", len(evs.Items))
	})

	harness.Eventually(t, 30*time.Second, "a Normal Event for the phase a Formation reached", func() error {
		var evs eventsv1.EventList
		if err := controlPlane.Client.List(context.Background(), &evs, client.InNamespace(ns)); err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Reason == string(cellosv1.FormationSucceeded) && e.Type == corev1.EventTypeNormal &&
				e.Regarding.Kind == "Formation" && e.Regarding.Name == "02daa0b3-49a7-a4bf-8050-cbb812881d4e" {
				return nil
			}
		}
		return fmt.Errorf("none among %d events", len(evs.Items))
	})

	assertKstatus(t, ns)
}

// assertKstatus checks that the objects read correctly to kstatus, as Flux
// reads them.
func assertKstatus(t *testing.T, ns string) {
	t.Helper()
	cases := []struct {
		obj  client.Object
		name string
		want status.Status
	}{
		{&cellosv1.Formation{}, "02daa0b3-49a7-a4bf-8050-cbb812881d4e", status.CurrentStatus}, // Succeeded
		{&cellosv1.Formation{}, "d49db22d-a1b6-c6c0-c492-90279eab75cd", status.CurrentStatus}, // Running
		{&cellosv1.Cell{}, "cell-02daa0b3-0", status.CurrentStatus},                           // destroyed, succeeded
		{&cellosv1.Cell{}, "cell-9974d75b-1", status.CurrentStatus},                           // Running
		{&cellosv1.Cell{}, store.ObjectName(longCellID(t)), status.FailedStatus},              // destroyed, failed
		{&cellosv1.Cell{}, "only-completed", status.InProgressStatus},                         // Pending
	}
	for _, tc := range cases {
		if err := controlPlane.Client.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: tc.name}, tc.obj); err != nil {
			t.Fatal(err)
		}
		u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(tc.obj)
		if err != nil {
			t.Fatal(err)
		}
		res, err := status.Compute(&unstructured.Unstructured{Object: u})
		if err != nil {
			t.Fatal(err)
		}
		if res.Status != tc.want {
			t.Errorf("%T %s: kstatus %s (%s), want %s", tc.obj, tc.name, res.Status, res.Message, tc.want)
		}
	}
	kubectl(t, "wait", "-n", ns, "--for=condition=Ready", "--timeout=10s", "formation/d49db22d-a1b6-c6c0-c492-90279eab75cd")
}

// longCellID is the sample's cell id that is too long to be a name.
func longCellID(t *testing.T) string {
	t.Helper()
	for id := range readExpected(t).Cells {
		if len(id) > 253 {
			return id
		}
	}
	t.Fatal("the sample has no cell id longer than a name")
	return ""
}
