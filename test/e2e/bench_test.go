package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"cellos.dev/cellos-operator/internal/jetstream"
	"cellos.dev/cellos-operator/internal/localenv"
	"cellos.dev/cellos-operator/internal/simulator"
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
	bin := filepath.Join(b.TempDir(), "manager")
	build := exec.Command("go", "build", "-o", bin, "./cmd/manager")
	build.Dir = localenv.RepoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("building the manager: %v\n%s", err, out)
	}
	m := startManagerBinary(b, bin, js.URL(), ns)

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
	writes := m.metric(b, `cellos_operator_status_writes_total{kind="Cell",result="ok"}`) +
		m.metric(b, `cellos_operator_status_writes_total{kind="Formation",result="ok"}`)
	b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(writes/float64(events), "writes/event")
	b.ReportMetric(peakRSSMiB(b, m.cmd.Process.Pid), "peak-RSS-MiB")
	b.ReportMetric(cpuSeconds(b, m.cmd.Process.Pid)*1e6/float64(events), "operator-CPU-ms/1k-events")
	b.ReportMetric(float64(events)/float64(b.N), "events/op")
}

// peakRSSMiB reads a process's peak resident memory from /proc.
func peakRSSMiB(b *testing.B, pid int) float64 {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb / 1024
		}
	}
	b.Fatal("no VmHWM in /proc status")
	return 0
}

// cpuSeconds reads the CPU time a process has used, user and system, from /proc.
func cpuSeconds(b *testing.B, pid int) float64 {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// The fields after the command name, which is in parentheses.
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+2:]))
	utime, err1 := strconv.ParseFloat(fields[11], 64)
	stime, err2 := strconv.ParseFloat(fields[12], 64)
	if err1 != nil || err2 != nil {
		b.Fatalf("parsing /proc/%d/stat: %v %v", pid, err1, err2)
	}
	const clockTicks = 100 // USER_HZ on Linux
	return (utime + stime) / clockTicks
}
