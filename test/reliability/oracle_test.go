package reliability

import (
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	natsjs "github.com/nats-io/nats.go/jetstream"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/test/harness"
	"cellos.dev/cellos-operator/test/localenv"
)

const streamName = "CELLOS_EVENTS"

// expect is the expectation of the stream as it is now, read back with
// the harness oracle, and the messages it holds.
func expect(tb testing.TB, jsc natsjs.JetStream) (harness.Expectation, harness.Snapshot) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	snap, err := harness.ReadStream(ctx, jsc, streamName)
	if err != nil {
		tb.Fatal(err)
	}
	return harness.Expect(snap), snap
}

// cursorReached is nil once the cursor of ns names want's stream and has
// reached its last sequence.
func cursorReached(ctx context.Context, ns string, want harness.Expectation) error {
	return harness.CursorReached(ctx, cp.Client, ns, want.Cursor())
}

// converge waits until every object of ns equals want and the cursor
// reaches its end. It returns how long that took and how many objects still
// differ (0 when they converged); it fails the test when they did not.
//
// It waits for the cursor first, a read of one ConfigMap, and compares
// every object only then, every 100 ms plus 1 ms per object the fold names,
// and at most a second apart: listing every object of a large run often
// would slow the API server the operator writes to.
func converge(tb testing.TB, ns string, want harness.Expectation, timeout time.Duration) (time.Duration, int) {
	tb.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	ctx := context.Background()
	for cursorReached(ctx, ns, want) != nil && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	for {
		bad, err := harness.Mismatches(ctx, cp.Client, ns, want)
		if err == nil && len(bad) == 0 {
			err = cursorReached(ctx, ns, want)
		}
		if err == nil && len(bad) == 0 {
			return time.Since(start), 0
		}
		if time.Now().After(deadline) {
			if len(bad) > 0 {
				tb.Errorf("after %s, %d objects differ from the fold of the stream (%d formations, %d cells, last sequence %d):\n%s",
					timeout, len(bad), len(want.State.Formations), len(want.State.Cells), want.Last, strings.Join(harness.Head(bad, 15), "\n"))
			} else {
				tb.Errorf("after %s: %v", timeout, err)
			}
			return time.Since(start), len(bad)
		}
		time.Sleep(min(time.Second, time.Duration(len(want.State.Cells)+len(want.State.Formations))*time.Millisecond+100*time.Millisecond))
	}
}

// newScenario starts what every scenario runs against besides the control
// plane: a namespace of its own, a JetStream server with the stream, and a
// recorder watching the namespace from the start.
func newScenario(tb testing.TB) (ns string, js *localenv.JetStreamServer, jsc natsjs.JetStream, rec *recorder) {
	tb.Helper()
	ns = newNamespace(tb)
	js = localenv.StartJetStream(tb)
	_, jsc = js.Connect(tb)
	rec = record(tb, ns)
	rec.addStream(ensureStream(tb, jsc))
	return ns, js, jsc, rec
}

// newNamespace gives a scenario a namespace of its own, emptied of cellos
// objects at the end (envtest runs no namespace controller): stream ids are
// global, and the next scenario's operator must not find them.
func newNamespace(tb testing.TB) string {
	tb.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "reliability-"}}
	if err := cp.Client.Create(context.Background(), ns); err != nil {
		tb.Fatalf("creating namespace: %v", err)
	}
	tb.Cleanup(func() {
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
					tb.Logf("emptying namespace %s: %v %v", ns.Name, err, lerr)
					break
				}
				time.Sleep(2 * time.Second)
			}
		}
	})
	return ns.Name
}

// warningEvents lists the Warning Events of ns with reason, newest last.
func warningEvents(tb testing.TB, ns, reason string) []corev1.Event {
	tb.Helper()
	var list corev1.EventList
	if err := cp.Client.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		tb.Fatal(err)
	}
	var out []corev1.Event
	for _, e := range list.Items {
		if e.Type == corev1.EventTypeWarning && e.Reason == reason {
			out = append(out, e)
		}
	}
	return out
}
