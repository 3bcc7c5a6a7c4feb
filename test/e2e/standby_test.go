package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	natsjs "github.com/nats-io/nats.go/jetstream"
	coordinationv1 "k8s.io/api/coordination/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/test/harness"
	"cellos.dev/cellos-operator/test/localenv"
)

// leaseName is the Lease the replicas elect their leader through.
const leaseName = "cellos-operator.cellos.dev"

// A replica that does not lead folds the stream and writes nothing: no
// object, no status, no cursor, no Event. Its fold is not held at
// --max-unflushed-objects (it flushes nothing, and would wait for good),
// it follows the stream when it is recreated, and it is ready once caught
// up. When it then leads, it writes every object of its fold at once,
// without folding the stream again.
func TestStandbyFoldsWithoutWriting(t *testing.T) {
	ns := newNamespace(t)
	js := localenv.StartJetStream(t)
	_, jsc := js.Connect(t)
	ctx := context.Background()
	// Another replica holds the Lease, and will for an hour.
	now := metav1.NewMicroTime(time.Now())
	lease := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: leaseName},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To("another-replica"), LeaseDurationSeconds: ptr.To[int32](3600),
			AcquireTime: &now, RenewTime: &now},
	}
	if err := controlPlane.Client.Create(ctx, lease); err != nil {
		t.Fatal(err)
	}
	sample := readSample(t)
	publish(t, jsc, sample)
	m := startManager(t, js.URL(), ns, "--leader-elect", "--max-unflushed-objects=2", "--cursor-commit-interval=200ms")

	folded := func(n int) func() error {
		return func() error {
			all, err := m.Metrics()
			if err != nil {
				return err
			}
			if got := harness.Sum(all, "cellos_operator_events_total"); int(got) != n {
				return fmt.Errorf("%v events folded, want %d", got, n)
			}
			return nil
		}
	}
	harness.Eventually(t, time.Minute, "the standby folds the whole stream, past the bound of unflushed objects", folded(len(sample)))
	harness.Eventually(t, time.Minute, "the standby is ready once caught up", m.Ready)
	harness.Eventually(t, time.Minute, "the standby reports the live objects of its fold", func() error {
		all, err := m.Metrics()
		if err != nil {
			return err
		}
		if got := harness.Sum(all, "cellos_operator_live_objects"); got == 0 {
			return fmt.Errorf("cellos_operator_live_objects is 0")
		}
		return nil
	})

	// Recreated while it stands by: it folds the new stream.
	if err := jsc.DeleteStream(ctx, "CELLOS_EVENTS"); err != nil {
		t.Fatal(err)
	}
	recreated := recreatedEvents()
	publish(t, jsc, recreated)
	harness.Eventually(t, time.Minute, "the standby folds the recreated stream", folded(len(sample)+len(recreated)))
	harness.Eventually(t, time.Minute, "the standby is ready on the recreated stream", m.Ready)

	// Long enough for a flush window, a cursor commit and a rejected
	// event's Warning to have been written, had it written them.
	time.Sleep(3 * time.Second)
	if err := nothingWritten(ns); err != nil {
		t.Fatalf("the standby wrote: %v", err)
	}

	// It leads: everything it folded is written, and nothing folded again.
	if err := controlPlane.Client.Delete(ctx, lease); err != nil {
		t.Fatal(err)
	}
	released := time.Now()
	want := foldStream(t, jsc)
	harness.Eventually(t, time.Minute, "every object equals the fold once the standby leads", func() error { return matchesFold(ns, want) })
	t.Logf("every object of the fold written %s after the Lease was released", time.Since(released).Round(10*time.Millisecond))
	waitForCursorOf(t, ns, want)
	if err := folded(len(sample) + len(recreated))(); err != nil {
		t.Errorf("taking over folded the stream again: %v", err)
	}
}

// nothingWritten is nil when ns holds no Formation, Cell, cursor ConfigMap
// or Event about any of them.
func nothingWritten(ns string) error {
	ctx := context.Background()
	var problems []string
	var formations cellosv1.FormationList
	var cells cellosv1.CellList
	if err := controlPlane.Client.List(ctx, &formations, client.InNamespace(ns)); err != nil {
		return err
	}
	if err := controlPlane.Client.List(ctx, &cells, client.InNamespace(ns)); err != nil {
		return err
	}
	if n := len(formations.Items) + len(cells.Items); n > 0 {
		problems = append(problems, fmt.Sprintf("%d Formations and %d Cells", len(formations.Items), len(cells.Items)))
	}
	if _, ok, err := harness.Cursor(ctx, controlPlane.Client, ns); err != nil || ok {
		problems = append(problems, fmt.Sprintf("the cursor ConfigMap (read error %v)", err))
	}
	var evs eventsv1.EventList
	if err := controlPlane.Client.List(ctx, &evs, client.InNamespace(ns)); err != nil {
		return err
	}
	for _, e := range evs.Items {
		if e.Regarding.Kind != "Lease" {
			problems = append(problems, fmt.Sprintf("Event %s about %s %s", e.Reason, e.Regarding.Kind, e.Regarding.Name))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("%s", strings.Join(problems, "; "))
	}
	return nil
}

// takeoverRuns is how many times each way of ending the leader is
// measured.
const takeoverRuns = 3

// Two replicas with --leader-elect and the default lease timings: the
// leader is ended with SIGKILL, then with SIGTERM, takeoverRuns times each,
// and an event published just after is in status once the standby leads.
// The time from the signal to that status is logged, not asserted: it is
// the takeover time docs/operations.md states. Every object equals the
// fold of the stream at the end.
func TestStandbyTakesOver(t *testing.T) {
	ns := newNamespace(t)
	js := localenv.StartJetStream(t)
	_, jsc := js.Connect(t)
	publish(t, jsc, readSample(t))
	replica := func() *manager { return startManager(t, js.URL(), ns, "--leader-elect") }
	live := []*manager{replica()}
	harness.Eventually(t, time.Minute, "the first replica leads", func() error { return live[0].Leads() })
	live = append(live, replica())

	times := map[string][]time.Duration{}
	for run := range 2 * takeoverRuns {
		how := []string{"SIGKILL", "SIGTERM"}[run%2]
		harness.Eventually(t, time.Minute, "the standby is ready", live[1].Ready)
		leader, standby := live[0], live[1]
		if leader.Leads() != nil {
			leader, standby = standby, leader
		}
		if err := leader.Leads(); err != nil {
			t.Fatal(err)
		}
		begin := time.Now()
		stopped := make(chan struct{})
		go func() {
			defer close(stopped)
			if how == "SIGKILL" {
				leader.Kill()
			} else {
				harness.Stop(t, leader.Manager)
			}
		}()
		cellID := fmt.Sprintf("takeover-%d", run+1)
		seq := publishStarted(t, jsc, cellID)
		led, written := awaitTakeover(t, standby, ns, cellID, seq, begin)
		<-stopped
		times[how] = append(times[how], written)
		t.Logf("takeover after %s: the standby led after %s, and the event published after the signal was in status after %s",
			how, led.Round(10*time.Millisecond), written.Round(10*time.Millisecond))
		live = []*manager{standby, replica()}
	}
	for _, how := range []string{"SIGKILL", "SIGTERM"} {
		d := slices.Clone(times[how])
		slices.Sort(d)
		t.Logf("takeover after %s, to an event in status, over %d runs: min %s, median %s, max %s; each: %v",
			how, len(d), d[0].Round(10*time.Millisecond), d[len(d)/2].Round(10*time.Millisecond), d[len(d)-1].Round(10*time.Millisecond), times[how])
	}
	want := foldStream(t, jsc)
	harness.Eventually(t, time.Minute, "every object equals the fold of the stream", func() error { return matchesFold(ns, want) })
	waitForCursorOf(t, ns, want)
}

// publishStarted publishes a started event of a new cell, and returns its
// sequence.
func publishStarted(t *testing.T, jsc natsjs.JetStream, cellID string) uint64 {
	t.Helper()
	data := fmt.Sprintf(`{"specversion":"1.0","id":"%s","source":"test","type":"dev.cellos.events.cell.lifecycle.v1.started","time":"%s","data":{"cellId":"%s"}}`,
		cellID, time.Now().UTC().Format(time.RFC3339), cellID)
	ack, err := jsc.Publish(context.Background(), "cellos.events.cell."+cellID, []byte(data))
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

// awaitTakeover polls, more finely than harness.Eventually, until standby
// leads and the Cell of cellID reflects sequence seq, and returns how long
// after begin each came.
func awaitTakeover(t *testing.T, standby *manager, ns, cellID string, seq uint64, begin time.Time) (led, written time.Duration) {
	t.Helper()
	key := types.NamespacedName{Namespace: ns, Name: cellID}
	for deadline := begin.Add(time.Minute); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if led == 0 && standby.Leads() == nil {
			led = time.Since(begin)
		}
		var cell cellosv1.Cell
		if err := controlPlane.Client.Get(context.Background(), key, &cell); err == nil && cell.Status.LastAppliedSequence == int64(seq) {
			written = time.Since(begin)
			if led == 0 {
				led = written
			}
			return led, written
		}
	}
	t.Fatalf("the Cell %s does not reflect sequence %d a minute after the leader was ended; the standby's log:\n%s", cellID, seq, harness.Tail(standby.Logs(), 40))
	return 0, 0
}
