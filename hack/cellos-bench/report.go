package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// report prints the run's table, the writes by kind, memory at scale, and
// each target of the performance issue as met or not.
type report struct {
	results        []Result
	soak           *Soak
	breakdown      *Breakdown
	gobench        goBenchFigures
	steadyRate     float64
	requestedCells int
	elapsed        time.Duration
	load           string
	skipped        []string
}

// find is the first complete run of workload by system.
func (rep report) find(workload string, system System) *Result {
	for i := range rep.results {
		r := &rep.results[i]
		if r.Workload == workload && r.System == system && r.Incomplete == "" {
			return r
		}
	}
	return nil
}

// findRun is the complete run of workload by system in round run of
// -repeat (0: not repeated).
func (rep report) findRun(workload string, system System, run int) *Result {
	for i := range rep.results {
		r := &rep.results[i]
		if r.Workload == workload && r.System == system && r.Run == run && r.Incomplete == "" {
			return r
		}
	}
	return nil
}

// print writes the whole report.
func (rep report) print(out io.Writer) {
	fmt.Fprintf(out, "\ncellos-bench on %s, %s in all; %s\n", machine(), rep.elapsed.Round(time.Second), rep.load)
	// A soak run alone (-only soak) has no row, write or target to show.
	if len(rep.results) > 0 {
		fmt.Fprintln(out)
		rep.printTable(out)
		rep.printSpread(out)
		rep.printWrites(out)
		rep.printCores(out)
		rep.printMemory(out)
	}
	if rep.soak != nil {
		printSoak(out, rep.soak)
	}
	printBreakdown(out, rep.breakdown)
	for _, s := range rep.skipped {
		fmt.Fprintf(out, "- skipped to end in time: %s\n", s)
	}
	if len(rep.results) > 0 {
		fmt.Fprintln(out, "\nTargets:")
		for _, t := range rep.targets() {
			fmt.Fprintf(out, "- %s: %s (%s)\n", t.name, t.verdict, t.figure)
		}
	}
}

// printTable writes one row per run, the operator's compared with the
// ceiling and the naive projector on the same workload.
func (rep report) printTable(out io.Writer) {
	fmt.Fprintln(out, "| workload | system | events | objects | events/s | writes/event (minimum) | API server CPU per event (per write) | of ceiling | × naive | latency p50 / p99 | operator CPU per 1k events | operator peak RSS | other load (cores) |")
	fmt.Fprintln(out, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
	for _, r := range rep.results {
		ratio, naive, lat, cpu, rss := "", "", "", "", ""
		if r.System == Operator {
			base := strings.TrimSuffix(r.Workload, " replay")
			if c := rep.findRun(base, Ceiling, r.Run); c != nil && r.EventsPerSec > 0 {
				ratio = fmt.Sprintf("%.0f%%", 100*r.EventsPerSec/c.EventsPerSec)
			}
			if n := rep.findRun(base, Naive, r.Run); n != nil && r.EventsPerSec > 0 {
				naive = fmt.Sprintf("%.1f×", r.EventsPerSec/n.EventsPerSec)
			}
			cpu = fmt.Sprintf("%.2f s", r.CPUSecPer1k)
			rss = fmt.Sprintf("%.0f MiB", r.PeakRSSMiB)
		}
		if r.Latencies > 0 {
			lat = fmt.Sprintf("%s / %s", ms(r.P50ms), ms(r.P99ms))
		}
		rate := fmt.Sprintf("%.0f", r.EventsPerSec)
		if r.Incomplete != "" {
			rate = "incomplete"
		}
		fmt.Fprintf(out, "| %s | %s | %d | %d | %s | %.3f (%.3f) | %s | %s | %s | %s | %s | %s | %.1f |\n",
			r.Workload, r.System, r.Events, r.Objects, rate, r.WritesPerEvent, r.MinPerEvent, apiCPU(r), ratio, naive, lat, cpu, rss, r.OtherCores)
	}
}

// apiCPU is the CPU kube-apiserver and etcd used in a run, per event and,
// in parentheses, per write.
func apiCPU(r Result) string {
	if r.APIServerCPUSeconds <= 0 {
		return ""
	}
	perWrite := ""
	if r.WritesTotal > 0 {
		perWrite = fmt.Sprintf(" (%.2f ms)", 1000*r.APIServerCPUSeconds/r.WritesTotal)
	}
	return fmt.Sprintf("%.2f ms%s", r.APIServerCPUMsPerEvent, perWrite)
}

// printSpread writes, for each workload and system run more than once
// (-repeat), the least, median and most of its figures over the complete
// runs, and the operator's share of the ceiling round by round.
func (rep report) printSpread(out io.Writer) {
	type key struct {
		workload string
		system   System
	}
	var keys []key
	runs := map[key][]Result{}
	for _, r := range rep.results {
		k := key{r.Workload, r.System}
		if r.Incomplete != "" {
			continue
		}
		if runs[k] == nil {
			keys = append(keys, k)
		}
		runs[k] = append(runs[k], r)
	}
	header := false
	for _, k := range keys {
		rs := runs[k]
		if len(rs) < 2 {
			continue
		}
		if !header {
			fmt.Fprintln(out, "\nSpread over repeated runs (least / median / most of the complete runs):")
			header = true
		}
		fig := func(format string, f func(Result) float64) string {
			lo, med, hi := spreadOf(mapped(rs, f))
			return fmt.Sprintf(format+" / "+format+" / "+format, lo, med, hi)
		}
		line := fmt.Sprintf("- %s, %s, %d runs: events/s %s; API server CPU per event %s ms; other load %s cores",
			k.workload, k.system, len(rs), fig("%.0f", func(r Result) float64 { return r.EventsPerSec }),
			fig("%.2f", func(r Result) float64 { return r.APIServerCPUMsPerEvent }), fig("%.1f", func(r Result) float64 { return r.OtherCores }))
		var shares []string
		for _, r := range rs {
			if c := rep.findRun(k.workload, Ceiling, r.Run); c != nil && k.system != Ceiling {
				shares = append(shares, fmt.Sprintf("%.0f%%", 100*r.EventsPerSec/c.EventsPerSec))
			}
		}
		if len(shares) > 0 {
			line += "; of the ceiling, run by run: " + strings.Join(shares, ", ")
		}
		fmt.Fprintln(out, line)
	}
}

// spreadOf is the least, median and most of vals; zeros when it is empty.
func spreadOf(vals []float64) (lo, med, hi float64) {
	if len(vals) == 0 {
		return 0, 0, 0
	}
	vals = slices.Sorted(slices.Values(vals))
	n := len(vals)
	return vals[0], (vals[(n-1)/2] + vals[n/2]) / 2, vals[n-1]
}

// mapped is f of each of xs.
func mapped[T any](xs []T, f func(T) float64) []float64 {
	vals := make([]float64, len(xs))
	for i, x := range xs {
		vals[i] = f(x)
	}
	return vals
}

// printWrites writes each run's API writes by kind, most frequent first.
func (rep report) printWrites(out io.Writer) {
	fmt.Fprintln(out, "\nAPI writes by kind, per event (apiserver_request_total; leases excluded; failed writes in parentheses):")
	for _, r := range rep.results {
		if r.Events == 0 || r.Writes == nil {
			continue
		}
		failed := ""
		if r.WritesFailed > 0 {
			failed = fmt.Sprintf(" (%.0f failed)", r.WritesFailed)
		}
		fmt.Fprintf(out, "- %s: %.0f writes%s: %s\n", r.label(), r.WritesTotal, failed, writesLine(r.Writes, r.Events))
	}
}

// writesLine is writes by kind, per event of events, most frequent first.
func writesLine(writes map[string]float64, events int) string {
	kinds := make([]string, 0, len(writes))
	for k := range writes {
		kinds = append(kinds, k)
	}
	slices.SortFunc(kinds, func(a, b string) int { return int(writes[b] - writes[a]) })
	parts := make([]string, 0, len(kinds))
	for _, k := range kinds {
		parts = append(parts, fmt.Sprintf("%s %.3f", k, writes[k]/float64(events)))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// printCores writes the CPU each process of each run used.
func (rep report) printCores(out io.Writer) {
	fmt.Fprintln(out, "\nCPU by process, in cores on average over each run (the machine has 2 when no one else uses it):")
	for _, r := range rep.results {
		if len(r.Cores) == 0 {
			continue
		}
		fmt.Fprintf(out, "- %s: %s\n", r.label(), coresLine(r.Cores, r.OtherCores))
	}
}

// coresLine is the cores each of a run's processes used, by name, and
// those other processes used.
func coresLine(cores map[string]float64, others float64) string {
	names := make([]string, 0, len(cores))
	for n := range cores {
		names = append(names, n)
	}
	slices.Sort(names)
	parts := make([]string, 0, len(names)+1)
	for _, n := range names {
		parts = append(parts, fmt.Sprintf("%s %.2f", n, cores[n]))
	}
	return strings.Join(append(parts, fmt.Sprintf("other processes %.2f", others)), ", ")
}

// printMemory writes the operator's peak memory per object at each point
// of at least 1000 Cells, and the marginal cost between the replays.
func (rep report) printMemory(out io.Writer) {
	fmt.Fprintln(out, "\nMemory at scale (the operator's peak RSS, VmHWM):")
	var mems []memPoint
	for _, r := range rep.results {
		if r.System == Operator && r.PeakRSSMiB > 0 && r.Cells >= 1000 && r.Incomplete == "" {
			mems = append(mems, memPoint{r.Workload, r.Objects, r.Cells, r.PeakRSSMiB})
			fmt.Fprintf(out, "- %s: %d objects (%d Cells), %.0f MiB, %.0f bytes per object\n",
				r.Workload, r.Objects, r.Cells, r.PeakRSSMiB, r.PeakRSSMiB*(1<<20)/float64(r.Objects))
		}
	}
	if a, b := memReplays(mems); a != nil && b != nil && b.objects > a.objects {
		fmt.Fprintf(out, "- marginal, replay %s to %s: %.0f bytes per object\n", a.name, b.name,
			(b.rssMiB-a.rssMiB)*(1<<20)/float64(b.objects-a.objects))
	}
	rep.printControlPlaneMemory(out)
}

// printControlPlaneMemory writes what the objects the ceiling wrote cost
// kube-apiserver and etcd: their RSS (VmRSS) before its first write and
// after its last, on a fresh control plane holding nothing else of size.
func (rep report) printControlPlaneMemory(out io.Writer) {
	for _, r := range rep.results {
		if len(r.ControlPlaneAfterMiB) == 0 || r.Incomplete != "" {
			continue
		}
		var parts []string
		for _, name := range []string{"kube-apiserver", "etcd"} {
			before, after := r.ControlPlaneBeforeMiB[name], r.ControlPlaneAfterMiB[name]
			parts = append(parts, fmt.Sprintf("%s %.0f to %.0f MiB, %.0f bytes per object", name, before, after, (after-before)*(1<<20)/float64(r.Objects)))
		}
		fmt.Fprintf(out, "- %s, the control plane (VmRSS before the first write and after the last): %s\n", r.Workload, strings.Join(parts, "; "))
	}
}

type memPoint struct {
	name    string
	objects int
	cells   int
	rssMiB  float64
}

// memReplays returns the smallest and largest replay memory points.
func memReplays(points []memPoint) (small, large *memPoint) {
	for i := range points {
		p := &points[i]
		if !strings.HasSuffix(p.name, "replay") {
			continue
		}
		if small == nil || p.objects < small.objects {
			small = p
		}
		if large == nil || p.objects > large.objects {
			large = p
		}
	}
	return small, large
}

func ms(v float64) string {
	if v >= 1000 {
		return fmt.Sprintf("%.1f s", v/1000)
	}
	return fmt.Sprintf("%.0f ms", v)
}

type target struct{ name, verdict, figure string }

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}

// unmeasured is a target whose run is missing or incomplete.
func unmeasured(name string) target {
	return target{name, "not measured", "its run is missing or incomplete"}
}

// targets are the performance issue's targets, in its order.
func (rep report) targets() []target {
	return []target{
		rep.burstTarget(),
		rep.writesTarget("burst"),
		rep.writesTarget("chatty"),
		rep.chattyTarget(),
		rep.replayTarget(),
		rep.foldTarget(),
		rep.latencyTarget(),
		rep.memoryTarget(),
	}
}

// burstTarget: the operator's events/s on the burst against the ceiling's.
func (rep report) burstTarget() target {
	name := "burst: at least 80% of the ceiling's events/s (floor 60%)"
	op, c := rep.find("burst", Operator), rep.find("burst", Ceiling)
	if op == nil || c == nil {
		return unmeasured(name)
	}
	share := op.EventsPerSec / c.EventsPerSec
	v := verdict(share >= 0.8)
	if share < 0.8 && share >= 0.6 {
		v = "floor met, target NOT met"
	}
	return target{name, v, fmt.Sprintf("%.0f%%: %.0f of %.0f events/s", 100*share, op.EventsPerSec, c.EventsPerSec)}
}

// writesTarget: the operator's writes per event on workload wl against the
// minimum.
func (rep report) writesTarget(wl string) target {
	name := wl + ": writes per event at most 1.05 × the minimum"
	op := rep.find(wl, Operator)
	if op == nil {
		return unmeasured(name)
	}
	return target{name, verdict(op.WritesPerEvent <= 1.05*op.MinPerEvent),
		fmt.Sprintf("%.3f against %.3f, %.2f×; Formations and Cells alone %.3f", op.WritesPerEvent, op.MinPerEvent,
			op.WritesPerEvent/op.MinPerEvent, op.WritesObjects/float64(op.Events))}
}

// chattyTarget: the operator against the naive projector on the chatty
// workload.
func (rep report) chattyTarget() target {
	name := "chatty: at least 10× the naive projector"
	op, n := rep.find("chatty", Operator), rep.find("chatty", Naive)
	if op == nil || n == nil {
		return unmeasured(name)
	}
	return target{name, verdict(op.EventsPerSec >= 10*n.EventsPerSec),
		fmt.Sprintf("%.1f×: %.0f against %.0f events/s", op.EventsPerSec/n.EventsPerSec, op.EventsPerSec, n.EventsPerSec)}
}

// replayTarget: every restart replay of the operator, fast and writing
// nothing.
func (rep report) replayTarget() target {
	name := "restart replay: at least 100,000 events/s with 0 writes"
	var replays []string
	ok := true
	for _, r := range rep.results {
		if r.System != Operator || !strings.HasSuffix(r.Workload, "replay") {
			continue
		}
		if r.Incomplete != "" {
			ok = false
			replays = append(replays, r.Workload+" incomplete")
			continue
		}
		ok = ok && r.EventsPerSec >= 100_000 && r.WritesTotal == 0
		replays = append(replays, fmt.Sprintf("%s: %s events/s from start to every object compared, %.0f writes", r.Workload, count(r.EventsPerSec), r.WritesTotal))
	}
	if len(replays) == 0 {
		return unmeasured(name)
	}
	return target{name, verdict(ok), strings.Join(replays, "; ")}
}

// foldTarget: the fold's rate, from go test -bench.
func (rep report) foldTarget() target {
	name := "decode and fold: at least 500,000 events/s on one core"
	if rep.gobench.applyEventsPerSec <= 0 {
		return target{name, "not measured", "pass -gobench with the output of go test -bench"}
	}
	fig := fmt.Sprintf("BenchmarkApply %s events/s", count(rep.gobench.applyEventsPerSec))
	if rep.gobench.startUpEventsPerSec > 0 {
		fig += fmt.Sprintf("; BenchmarkStartUp, 1M events from JetStream into the store, %s events/s, %.1f s", count(rep.gobench.startUpEventsPerSec), rep.gobench.startUpSeconds)
	}
	return target{name, verdict(rep.gobench.applyEventsPerSec >= 500_000), fig}
}

// latencyTarget: the operator's event-to-status latency on the steady
// workload.
func (rep report) latencyTarget() target {
	name := fmt.Sprintf("p99 event-to-status latency at most 300 ms at %.0f events/s", rep.steadyRate)
	op := rep.find("steady", Operator)
	if op == nil {
		return unmeasured(name)
	}
	fig := fmt.Sprintf("p99 %s, p50 %s", ms(op.P99ms), ms(op.P50ms))
	if op.BehindAtPublishEnd > 0 {
		fig += fmt.Sprintf("; the cursor %d events behind when publishing ended", op.BehindAtPublishEnd)
	}
	return target{name, verdict(op.P99ms <= 300), fig}
}

// memoryTarget: the operator's memory per object at its largest complete
// run.
func (rep report) memoryTarget() target {
	name := "at most 2 KiB RSS per projected object at 100,000 Cells"
	var largest *Result
	for i := range rep.results {
		r := &rep.results[i]
		if r.System == Operator && r.Incomplete == "" && r.PeakRSSMiB > 0 && (largest == nil || r.Cells > largest.Cells) {
			largest = r
		}
	}
	if largest == nil {
		return unmeasured(name)
	}
	per := largest.PeakRSSMiB * (1 << 20) / float64(largest.Objects)
	v := verdict(per <= 2048)
	if largest.Cells < 100_000 {
		v = "not measured at 100,000 Cells; at " + strconv.Itoa(largest.Cells) + " Cells " + strings.ToLower(verdict(per <= 2048))
	}
	return target{name, v, fmt.Sprintf("%.0f bytes per object, %.0f MiB for %d objects (%s)", per, largest.PeakRSSMiB, largest.Objects, largest.Workload)}
}

// goBenchFigures are the figures of `go test -bench` the targets need.
type goBenchFigures struct {
	applyEventsPerSec   float64
	startUpEventsPerSec float64
	startUpSeconds      float64
}

// readGoBench reads the fold's and the start-up's figures from the output
// of go test -bench.
func readGoBench(path string) (goBenchFigures, error) {
	var g goBenchFigures
	f, err := os.Open(path)
	if err != nil {
		return g, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 3 {
			continue
		}
		unit := func(u string) float64 {
			for i := 1; i < len(fields); i++ {
				if fields[i] == u {
					v, _ := strconv.ParseFloat(fields[i-1], 64)
					return v
				}
			}
			return 0
		}
		switch {
		case strings.HasPrefix(fields[0], "BenchmarkApply-"), fields[0] == "BenchmarkApply":
			g.applyEventsPerSec = unit("events/s")
		case strings.HasPrefix(fields[0], "BenchmarkStartUp-"), fields[0] == "BenchmarkStartUp":
			g.startUpEventsPerSec = unit("events/s")
			g.startUpSeconds = unit("s/start")
		}
	}
	return g, sc.Err()
}
