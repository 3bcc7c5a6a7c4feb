package e2e

import (
	"context"
	"testing"

	"cellos.dev/cellos-operator/internal/jetstream"
	"cellos.dev/cellos-operator/internal/simulator"
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
	bin, err := harness.BuildManager(b.TempDir(), false)
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
