package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/internal/fold"
	"cellos.dev/cellos-operator/internal/jetstream"
	"cellos.dev/cellos-operator/internal/simulator"
	"cellos.dev/cellos-operator/internal/store"
	"cellos.dev/cellos-operator/test/harness"
	"cellos.dev/cellos-operator/test/localenv"
)

// BenchmarkProjectSimulatedStream measures the whole operator: simulated
// cellos lifecycles published to JetStream until the cursor says every event
// is in status. Each iteration is a fresh batch of formations.
func BenchmarkProjectSimulatedStream(b *testing.B) {
	const formations, cells = 200, 3
	ns := newNamespace(b)
	js := localenv.StartJetStream(b)
	_, jsc := js.Connect(b)
	ctx := context.Background()
	if _, err := jetstream.EnsureStream(ctx, jsc, "CELLOS_EVENTS"); err != nil {
		b.Fatal(err)
	}
	// The tests' manager has the race detector, which would distort figures.
	bin, err := harness.BuildManager(binDir, false)
	if err != nil {
		b.Fatal(err)
	}
	m := runManager(b, harness.Config{Binary: bin, Namespace: ns, Args: harness.Flags(controlPlane.KubeconfigPath, js.URL(), ns)})

	var events int
	for i := 0; b.Loop(); i++ {
		gen := simulator.NewGenerator(simulator.Config{Seed: uint64(i + 1), Formations: formations, CellsPerFormation: cells})
		n, err := simulator.Publish(ctx, jsc, gen.All(), 0)
		if err != nil {
			b.Fatal(err)
		}
		stream, err := jsc.Stream(ctx, "CELLOS_EVENTS")
		if err != nil {
			b.Fatal(err)
		}
		last := stream.CachedInfo().State.LastSeq
		waitForCursor(b, ns, last)
		events += n
	}
	writes := m.Metric(b, `cellos_operator_status_writes_total{kind="Cell",result="ok"}`) +
		m.Metric(b, `cellos_operator_status_writes_total{kind="Formation",result="ok"}`)
	b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(writes/float64(events), "writes/event")
	cpu, err := harness.CPUTime(m.Pid())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(m.PeakMiB(), "peak-RSS-MiB")
	b.ReportMetric(float64(cpu.Microseconds())/float64(events), "operator-CPU-ms/1k-events")
	b.ReportMetric(float64(events)/float64(b.N), "events/op")
}

// BenchmarkStartUpAgainstHistory measures what a restart costs against the
// stream's history: the time from the manager's start until an event
// published while it was down is in status. The stream holds a history of
// finished formations, all expired (TTLs of 1 s), then the same live set of
// running formations; the sub-benchmarks differ only in the history's
// length, 10 times over. Each iteration stops the manager with SIGTERM,
// publishes one new cell, starts it again and times the cell into status.
func BenchmarkStartUpAgainstHistory(b *testing.B) {
	bin, err := harness.BuildManager(binDir, false)
	if err != nil {
		b.Fatal(err)
	}
	for _, history := range []int{1_500, 15_000} {
		b.Run(fmt.Sprintf("history=%dformations", history), func(b *testing.B) {
			startUpAgainstHistory(b, bin, history)
		})
	}
}

func startUpAgainstHistory(b *testing.B, bin string, historyFormations int) {
	b.Helper()
	const liveFormations, liveCells = 100, 3
	ctx := context.Background()
	ns := newNamespace(b)
	js := localenv.StartJetStream(b)
	_, jsc := js.Connect(b)
	if _, err := jetstream.EnsureStream(ctx, jsc, "CELLOS_EVENTS"); err != nil {
		b.Fatal(err)
	}
	gen := simulator.NewGenerator(simulator.Config{Seed: 7, Formations: historyFormations, CellsPerFormation: 3, InFlight: 64})
	events, err := simulator.Publish(ctx, jsc, gen.All(), 0)
	if err != nil {
		b.Fatal(err)
	}
	// Past the TTLs by the stream's clock and the wall clock alike: the
	// history is expired before the manager first sees it.
	time.Sleep(2 * time.Second)
	var live []sampleMessage
	for f := range liveFormations {
		id := fmt.Sprintf("00000000-0000-4000-8000-%012d", f)
		live = append(live, formationMessage(id, "created"), formationMessage(id, "running"))
		for c := range liveCells {
			live = append(live, cellMessage(fold.TypeCellStarted, fmt.Sprintf("live-%d-%d", f, c), id))
		}
	}
	publish(b, jsc, live)
	events += len(live)

	args := append(harness.Flags(controlPlane.KubeconfigPath, js.URL(), ns), "--cell-ttl=1s", "--formation-ttl=1s")
	m := runManager(b, harness.Config{Binary: bin, Namespace: ns, Args: args})
	waitForCursor(b, ns, uint64(events))

	var total time.Duration
	for i := 0; b.Loop(); i++ {
		if err := m.Stop(); err != nil {
			b.Fatal(err)
		}
		probe := fmt.Sprintf("probe-%d", i)
		publish(b, jsc, []sampleMessage{cellMessage(fold.TypeCellStarted, probe, "")})
		m = runManager(b, harness.Config{Binary: bin, Namespace: ns, Args: args})
		key := types.NamespacedName{Namespace: ns, Name: store.ObjectName(probe)}
		for {
			var c cellosv1.Cell
			if err := controlPlane.Client.Get(ctx, key, &c); err == nil && c.Status.State == cellosv1.CellRunning {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		total += time.Since(m.Started)
	}
	b.ReportMetric(float64(events), "history-events")
	b.ReportMetric(total.Seconds()/float64(b.N), "s-to-status")
}
