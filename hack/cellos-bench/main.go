// Command cellos-bench measures the operator end to end, side by side with a
// naive projector and with the ceiling of what the API server absorbs, and
// prints one table from one run.
//
// Every run starts a fresh control plane (kube-apiserver and etcd from bin/,
// as envtest runs them) and a fresh embedded JetStream server, publishes a
// simulated cellos stream, and measures until every Formation and Cell
// matches the fold of that stream (the oracle of test/harness: internal/fold
// run over the events, and each object compared with its projection) and,
// for the operator, its cursor ConfigMap reaches the stream's
// last sequence. API writes are the API server's own count,
// apiserver_request_total, scraped from its /metrics before and after.
// The operator is bin/manager as a process of its own, with its default
// flags; the naive projector and the ceiling run inside this program.
//
// `make bench` runs it after the Go benchmarks; docs/performance.md explains
// the workloads, the columns and the figures of the last run.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"cellos.dev/cellos-operator/internal/simulator"
)

// options are the command's flags.
type options struct {
	manager, jsonOut, goBench, opArgs, only string
	quick, keepLogs, memOnly                bool
	budget, steady, soak                    time.Duration
	deadline                                int64
	rate, soakRate                          float64
	maxCells, repeat                        int
}

func parseFlags() options {
	var o options
	flag.StringVar(&o.manager, "manager", "bin/manager", "The operator binary to measure (make build writes bin/manager).")
	flag.StringVar(&o.jsonOut, "json", "", "Also write every result as JSON to this file, for hack/plot.")
	flag.StringVar(&o.goBench, "gobench", "", "Output of `go test -bench` to read the fold and start-up figures from, for the targets.")
	flag.BoolVar(&o.quick, "quick", false, "Small workloads, for trying the harness out: the figures mean little.")
	flag.DurationVar(&o.budget, "budget", 20*time.Minute, "Time for the whole run; the rebuild and memory points are scaled down, or skipped, to fit what is left of it.")
	flag.Int64Var(&o.deadline, "deadline", 0, "A Unix time the run must end by, as well as -budget: make bench passes its own start plus 25 minutes, so that a first build of the tools leaves less time to the largest points rather than overrunning.")
	flag.DurationVar(&o.steady, "steady", time.Minute, "How long the steady workload offers events: long enough to show whether the lag grows.")
	flag.Float64Var(&o.rate, "rate", 500, "The steady workload's offered rate, events a second.")
	flag.DurationVar(&o.soak, "soak", 3*time.Minute, "How long the soak publishes: steady events to the operator with short TTLs ("+strings.Join(soakTTLs, " ")+"), sampled every "+soakInterval.String()+"; shortened to fit the time left, and skipped below "+minSoak.String()+".")
	flag.Float64Var(&o.soakRate, "soak-rate", 100, "The soak's offered rate, events a second: 100 is what a busy cellos deployment emits.")
	flag.IntVar(&o.maxCells, "max-cells", 100_000, "Cells of the largest memory point, if the budget allows.")
	flag.BoolVar(&o.keepLogs, "keep-logs", false, "Keep the operator's logs (their folder is printed).")
	flag.StringVar(&o.opArgs, "operator-args", "", "Extra flags for the operator, space-separated, to try its knobs (make bench passes none: the defaults are measured).")
	flag.BoolVar(&o.memOnly, "memory-only", false, "Run only the memory point at -max-cells, whatever the budget: the ceiling writes it, the operator replays it (100,000 Cells take about 10 minutes here).")
	flag.StringVar(&o.only, "only", "", "Run only these live workloads (comma-separated: burst-small, burst, chatty, steady, soak, and wide and breakdown, which run only when named) and systems (operator, naive, ceiling, minimal), and no rebuild or memory point; for experiments.")
	flag.IntVar(&o.repeat, "repeat", 1, "Run each live workload's systems, and each feature of the breakdown, this many times, alternated, and print their spread: the machine is shared, and one run is not a figure.")
	flag.Parse()
	return o
}

func main() {
	opts := parseFlags()
	log.SetFlags(log.Ltime)
	ctrllog.SetLogger(logr.Discard()) // the harness's watch logs nothing worth reading
	if _, err := os.Stat(opts.manager); err != nil {
		log.Fatalf("no operator binary: %v (run make build)", err)
	}
	logDir, err := os.MkdirTemp("", "cellos-bench-logs-")
	if err != nil {
		log.Fatal(err)
	}
	if opts.keepLogs {
		log.Printf("the operator's logs go to %s", logDir)
	} else {
		defer os.RemoveAll(logDir)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	s := &session{opts: opts, began: time.Now(), loadAtStart: loadAverage(),
		bench: &bench{manager: opts.manager, logDir: logDir, operatorArgs: strings.Fields(opts.opArgs)}}
	p := plan(opts.quick, opts.rate, opts.steady, opts.maxCells)
	for _, wl := range p.live {
		s.workloadNames = append(s.workloadNames, wl.name)
	}
	s.workloadNames = append(s.workloadNames, soakName, breakdownName)
	if opts.memOnly {
		p.live, p.rebuild.cfg.Formations = nil, 0
	}
	s.runLive(ctx, p.live)
	s.runBreakdown(ctx)
	if opts.only != "" {
		p.rebuild.cfg.Formations, p.large.cfg.Formations = 0, 0
	}
	ceil := s.runRebuild(ctx, p.rebuild)
	// Before the memory point, which takes whatever time is left.
	if !opts.memOnly {
		s.runSoak(ctx)
	}
	s.runMemory(ctx, p.large, ceil)
	for _, skipped := range s.skipped {
		log.Printf("skipped for time: %s", skipped)
	}
	s.writeReport()
}

// session is one invocation of the command: the runs it measured so far,
// those it skipped for time, and the time it has left.
type session struct {
	opts        options
	bench       *bench
	began       time.Time
	loadAtStart string
	results     []Result
	soak        *Soak
	breakdown   *Breakdown
	// workloadNames are the workloads -only can name.
	workloadNames []string
	skipped       []string
}

// left is the time left of the budget and before the deadline.
func (s *session) left() time.Duration {
	l := s.opts.budget - time.Since(s.began)
	if s.opts.deadline > 0 {
		l = min(l, time.Until(time.Unix(s.opts.deadline, 0)))
	}
	return l
}

// record keeps a run's result, incomplete when it failed, and logs it.
func (s *session) record(r Result, err error) {
	if err != nil {
		log.Printf("%s/%s: %v", r.Workload, r.System, err)
		if r.Incomplete == "" {
			r.Incomplete = err.Error()
		}
	}
	log.Printf("%-30s %7d events %6d objects  %8.0f events/s  %.3f writes/event  %.2f ms API server CPU/event%s", r.label(), r.Events, r.Objects, r.EventsPerSec, r.WritesPerEvent, r.APIServerCPUMsPerEvent, incomplete(r))
	s.results = append(s.results, r)
}

// skip records a point skipped because it needed about need.
func (s *session) skip(what string, need time.Duration) {
	s.skipped = append(s.skipped, fmt.Sprintf("%s (about %s needed, %s left)", what, need.Round(time.Second), s.left().Round(time.Second)))
}

// soakName is the soak's name for -only.
const soakName = "soak"

// selects tells whether -only selects name, one of the names of its kind
// (workloads or systems): all of a kind when -only names none of them.
func (s *session) selects(name string, kind []string) bool {
	onlyList := strings.Split(s.opts.only, ",")
	namesKind := slices.ContainsFunc(kind, func(n string) bool { return slices.Contains(onlyList, n) })
	return s.opts.only == "" || !namesKind || slices.Contains(onlyList, name)
}

// runLive runs each live workload with each system that -only selects,
// -repeat times, the systems alternated within each round so that a
// change in the machine's load falls on all of them.
func (s *session) runLive(ctx context.Context, workloads []workload) {
	for _, wl := range workloads {
		for round := range s.opts.repeat {
			for _, sys := range systems {
				if !s.selects(wl.name, s.workloadNames) || !s.selects(string(sys), systemNames) || skipped(wl, sys) ||
					(wl.whenNamed && !s.names(wl.name)) {
					continue
				}
				if ctx.Err() != nil {
					log.Fatal(ctx.Err())
				}
				r, err := s.bench.runLive(ctx, wl, sys)
				if s.opts.repeat > 1 {
					r.Run = round + 1
				}
				s.record(r, err)
			}
		}
	}
}

// skipped tells whether sys sits out wl: the naive projector the steady
// workload, which it cannot keep up with (about 150 of 500 events/s), so
// that its minute of events would take it minutes more, for no figure a
// target reads.
func skipped(wl workload, sys System) bool {
	return wl.rate > 0 && sys == Naive
}

// names tells whether -only names name, which runs only when named.
func (s *session) names(name string) bool {
	return slices.Contains(strings.Split(s.opts.only, ","), name)
}

// systems are the live runs' systems, in the order they run.
var systems = []System{Operator, Naive, Ceiling, Minimal}

// systemNames are the systems -only can name.
var systemNames = func() []string {
	names := make([]string, len(systems))
	for i, sys := range systems {
		names[i] = string(sys)
	}
	return names
}()

// runBreakdown runs the breakdown when -only names it, -repeat rounds.
func (s *session) runBreakdown(ctx context.Context) {
	if !s.names(breakdownName) {
		return
	}
	bd, err := s.bench.runBreakdown(ctx, breakdownWorkload(s.opts.quick), s.opts.repeat)
	if err != nil {
		log.Printf("breakdown: %v", err)
	}
	s.breakdown = bd
}

// runSoak runs the soak when -only selects it, for -soak or as much of it
// as the time left allows, and not at all when that is less than minSoak
// (-quick: any length).
func (s *session) runSoak(ctx context.Context) {
	if !s.selects(soakName, s.workloadNames) || !s.selects(string(Operator), systemNames) {
		return
	}
	d := min(s.opts.soak, s.left()-soakOverhead)
	if s.opts.quick {
		d = min(s.opts.soak, time.Minute)
	} else if d < minSoak {
		s.skip("the soak", minSoak+soakOverhead)
		return
	}
	log.Printf("soak: %.0f events/s for %s", s.opts.soakRate, d)
	soak, err := s.bench.runSoak(ctx, soakWorkload(s.opts.soakRate, d))
	if err != nil {
		log.Printf("soak: %v", err)
		soak = &Soak{Rate: s.opts.soakRate, Incomplete: err.Error()}
	}
	s.soak = soak
}

// runRebuild runs the rebuild from sequence 1 into an empty cluster and a
// restart over it, then the ceiling on the same stream. Each is skipped
// when the burst's rates say it would not fit the time left. It returns
// the ceiling's result, which sizes the memory point.
func (s *session) runRebuild(ctx context.Context, wl workload) (ceil Result) {
	if wl.cfg.Formations <= 0 {
		return ceil
	}
	events := len(wl.events())
	objects := wl.cfg.Formations * (wl.cfg.CellsPerFormation + 1)
	if need := estimate(s.results, "burst", Operator, events, 0) + 30*time.Second; need > s.left() {
		s.skip(wl.name+" rebuild and replay", need)
	} else {
		rebuild, replay, err := s.bench.runRebuild(ctx, wl)
		s.record(rebuild, err)
		if replay.Seconds > 0 || err == nil {
			s.record(replay, nil)
		}
	}
	if need := estimate(s.results, "burst", Ceiling, 0, 2*objects) + 15*time.Second; need > s.left() {
		s.skip(wl.name+" ceiling", need)
		return ceil
	}
	ceil, _, err := s.bench.runCeilingAt(ctx, wl, true, false)
	s.record(ceil, err)
	return ceil
}

// runMemory runs the largest point, scaled to the time left by the rate
// of the rebuild's ceiling: the ceiling writes it, the operator replays
// it.
func (s *session) runMemory(ctx context.Context, large workload, rebuildCeiling Result) {
	if !s.opts.quick && !s.opts.memOnly {
		large = fit(large, rebuildCeiling, s.left())
	}
	if s.opts.only == "" && large.cfg.Formations*large.cfg.CellsPerFormation < s.opts.maxCells {
		instead := "none measured instead"
		if n := large.cfg.Formations * large.cfg.CellsPerFormation; n > 0 {
			instead = fmt.Sprintf("measured at %d instead", n)
		}
		s.skipped = append(s.skipped, fmt.Sprintf("the memory point at %d Cells did not fit the %s left; %s", s.opts.maxCells, s.left().Round(time.Second), instead))
	}
	if large.cfg.Formations > 0 {
		ceil, replay, err := s.bench.runCeilingAt(ctx, large, false, true)
		s.record(ceil, err)
		if err == nil {
			s.record(replay, nil)
		}
	}
}

// writeReport prints the report, and writes every result as JSON when
// -json asks.
func (s *session) writeReport() {
	var gb goBenchFigures
	if s.opts.goBench != "" {
		var err error
		if gb, err = readGoBench(s.opts.goBench); err != nil {
			log.Printf("reading %s: %v", s.opts.goBench, err)
		}
	}
	rep := report{results: s.results, soak: s.soak, breakdown: s.breakdown, gobench: gb, steadyRate: s.opts.rate, requestedCells: s.opts.maxCells, elapsed: time.Since(s.began), skipped: s.skipped,
		load: fmt.Sprintf("load average %s at the start, %s at the end", s.loadAtStart, loadAverage())}
	rep.print(os.Stdout)
	if s.opts.jsonOut == "" {
		return
	}
	out, _ := json.MarshalIndent(struct {
		Machine   string     `json:"machine"`
		Load      string     `json:"load"`
		Results   []Result   `json:"results"`
		Soak      *Soak      `json:"soak,omitempty"`
		Breakdown *Breakdown `json:"breakdown,omitempty"`
	}{machine(), rep.load, s.results, s.soak, s.breakdown}, "", "  ")
	if err := os.WriteFile(s.opts.jsonOut, append(out, '\n'), 0o644); err != nil {
		log.Fatal(err)
	}
}

func incomplete(r Result) string {
	if r.Incomplete != "" {
		return "  INCOMPLETE: " + r.Incomplete
	}
	return ""
}

// benchPlan is every workload of one run.
type benchPlan struct {
	live    []workload
	rebuild workload
	large   workload
}

func plan(quick bool, rate float64, steady time.Duration, maxCells int) benchPlan {
	const cells = 25
	p := benchPlan{
		live: []workload{
			// A smaller burst, for the plot of events/s against objects.
			{name: "burst-small", cfg: simulator.Config{Seed: 6, Formations: 15, CellsPerFormation: cells, InFlight: 16, FailureRate: 0.2, DegradedRate: 0.2}},
			// Every object new, lifecycles of 16 formations interleaved.
			{name: "burst", cfg: simulator.Config{Seed: 1, Formations: 60, CellsPerFormation: cells, InFlight: 16, FailureRate: 0.2, DegradedRate: 0.2}},
			// Few objects, 20 command.completed events on each cell.
			{name: "chatty", cfg: simulator.Config{Seed: 2, Formations: 10, CellsPerFormation: 4, CommandsPerCell: 20, InFlight: 10, FailureRate: 0.2, DegradedRate: 0.2}},
			// New formations of 5 cells at a fixed rate, for latency.
			{name: "steady", cfg: simulator.Config{Seed: 3, Formations: formationsFor(rate*steady.Seconds(), 5), CellsPerFormation: 5, InFlight: 16, FailureRate: 0.2, DegradedRate: 0.2}, rate: rate},
			// As many Cells as burst in 4 formations of 400, for what a
			// cell's event costs with the size of its formation.
			{name: "wide", cfg: simulator.Config{Seed: 7, Formations: 4, CellsPerFormation: 400, InFlight: 4, FailureRate: 0.2, DegradedRate: 0.2}, whenNamed: true},
		},
		rebuild: workload{name: "10k cells", cfg: simulator.Config{Seed: 4, Formations: 10_000 / cells, CellsPerFormation: cells, InFlight: 32, FailureRate: 0.2, DegradedRate: 0.2}},
		large:   workload{name: "large", cfg: simulator.Config{Seed: 5, Formations: maxCells / cells, CellsPerFormation: cells, InFlight: 64, FailureRate: 0.2, DegradedRate: 0.2}},
	}
	if quick {
		p.live[0].cfg.Formations = 4
		p.live[1].cfg.Formations = 10
		p.live[2].cfg.Formations = 3
		p.live[3].cfg.Formations = formationsFor(rate*3, 5)
		p.live[4].cfg.CellsPerFormation = 40
		p.rebuild.cfg.Formations = 20
		p.rebuild.name = "500 cells"
		p.large.cfg.Formations = 40
	}
	if p.large.cfg.Formations > 0 {
		p.large.name = fmt.Sprintf("%dk cells", p.large.cfg.Formations*cells/1000)
	}
	return p
}

// formationsFor is how many formations of cells cells make about events
// events.
func formationsFor(events float64, cells int) int {
	sample := simulator.Generate(simulator.Config{Seed: 99, Formations: 200, CellsPerFormation: cells, InFlight: 16, FailureRate: 0.2, DegradedRate: 0.2})
	return max(1, int(events*200/float64(len(sample))+0.5))
}

// fit scales the large point down to what the time left allows: the
// ceiling's write rate at the rebuild point for its two writes an object,
// about a millisecond an object for the operator to list and compare it
// all, and time to start and stop a control plane.
func fit(large workload, rebuildCeiling Result, left time.Duration) workload {
	if rebuildCeiling.Seconds <= 0 || rebuildCeiling.WritesTotal <= 0 {
		large.cfg.Formations = 0 // no rate to estimate with
		return large
	}
	writesPerSec := rebuildCeiling.WritesTotal / rebuildCeiling.Seconds
	cells := large.cfg.CellsPerFormation
	for large.cfg.Formations > 0 {
		objects := float64(large.cfg.Formations * (cells + 1))
		need := time.Duration((1.2*2*objects/writesPerSec + objects/1000 + 30) * float64(time.Second))
		if need <= left {
			break
		}
		large.cfg.Formations = large.cfg.Formations * 4 / 5
		if large.cfg.Formations*cells < 20_000 {
			large.cfg.Formations = 0
		}
	}
	if large.cfg.Formations > 0 {
		large.name = fmt.Sprintf("%dk cells", large.cfg.Formations*cells/1000)
	}
	return large
}

// estimate is how long a run of events events or writes writes would take
// at the rates the named run measured; a long time when it did not run.
func estimate(results []Result, workload string, system System, events, writes int) time.Duration {
	for _, r := range results {
		if r.Workload != workload || r.System != system || r.Incomplete != "" || r.Seconds <= 0 {
			continue
		}
		secs := 0.0
		if events > 0 {
			secs += float64(events) / r.EventsPerSec
		}
		if writes > 0 && r.WritesTotal > 0 {
			secs += float64(writes) / (r.WritesTotal / r.Seconds)
		}
		return time.Duration(1.2 * secs * float64(time.Second))
	}
	return time.Hour
}

// machine describes where the run happened.
func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		if _, err := fmt.Sscanf(string(b), "MemTotal: %d kB", &kb); err == nil {
			mem = fmt.Sprintf(", %.0f GiB", float64(kb)/(1<<20))
		}
	}
	return fmt.Sprintf("%d CPUs (%s)%s, %s %s/%s", runtime.NumCPU(), model, mem, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// loadAverage is the 1-minute load average: other work on the machine
// takes cores from the API server, and so from every figure.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	return strings.Fields(string(b))[0]
}
