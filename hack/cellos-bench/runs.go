package main

import (
	"context"
	"fmt"
	"log"
	"math"
	"slices"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"cellos.dev/cellos-operator/internal/cursor"
	"cellos.dev/cellos-operator/internal/simulator"
	"cellos.dev/cellos-operator/test/harness"
)

// System is who projects the stream in a run.
type System string

const (
	Operator System = "operator"
	Naive    System = "naive"
	Ceiling  System = "ceiling"
	// Minimal is the ceiling writing minimal objects (minimal.go).
	Minimal System = "minimal"
)

// shape is the objects the system writes: minimal ones for Minimal, the
// operator's for every other.
func (s System) shape() objectShape {
	if s == Minimal {
		return minimalObjects{}
	}
	return operatorObjects{}
}

// Result is one measured run: one workload, one system, a fresh control
// plane and JetStream server.
type Result struct {
	Workload string `json:"workload"`
	System   System `json:"system"`
	// Run is the round of a live run that -repeat repeats, from 1; 0 when
	// it is not repeated.
	Run     int `json:"run,omitempty"`
	Events  int `json:"events"`
	Objects int `json:"objects"`
	Cells   int `json:"cells"`
	// Seconds is from the first publish (or, for the operator's rebuild or
	// replay, its start; for the ceiling's rebuild point, its first write)
	// until every object matched the fold (for a ceiling point run without
	// watching the objects, its last write acknowledged) and, for the
	// operator, the cursor reached the last sequence.
	Seconds      float64 `json:"seconds"`
	EventsPerSec float64 `json:"eventsPerSec"`
	// MatchedSeconds is when every object matched; CursorSeconds when the
	// cursor reached the last sequence (operator only).
	MatchedSeconds float64 `json:"matchedSeconds,omitempty"`
	CursorSeconds  float64 `json:"cursorSeconds,omitempty"`
	// Writes are the API server's counts of writes during the run.
	Writes         map[string]float64 `json:"writes"`
	WritesTotal    float64            `json:"writesTotal"`
	WritesObjects  float64            `json:"writesObjects"`
	WritesFailed   float64            `json:"writesFailed"`
	WritesPerEvent float64            `json:"writesPerEvent"`
	MinPerEvent    float64            `json:"minWritesPerEvent"`
	// Latency, at a fixed offered rate only.
	P50ms     float64 `json:"p50ms,omitempty"`
	P99ms     float64 `json:"p99ms,omitempty"`
	Latencies int     `json:"latencies,omitempty"`
	// The operator's process.
	CPUSecPer1k float64 `json:"cpuSecondsPer1kEvents,omitempty"`
	PeakRSSMiB  float64 `json:"peakRSSMiB,omitempty"`
	// A replay's phases: from the operator's start to its first event folded
	// (start-up, mostly listing every object into its cache), from the first
	// event to the last folded, and from then until every object was
	// compared. FoldEventsPerSec is the second alone.
	StartupSeconds   float64 `json:"startupSeconds,omitempty"`
	FoldSeconds      float64 `json:"foldSeconds,omitempty"`
	SettleSeconds    float64 `json:"settleSeconds,omitempty"`
	FoldEventsPerSec float64 `json:"foldEventsPerSec,omitempty"`
	// BehindAtPublishEnd is how far the cursor was behind when the last
	// event was published (steady).
	BehindAtPublishEnd int64 `json:"behindAtPublishEnd,omitempty"`
	// PublishSeconds is how long publishing took, acknowledgements included.
	PublishSeconds float64 `json:"publishSeconds,omitempty"`
	// ControlPlaneBeforeMiB and ControlPlaneAfterMiB are the resident
	// memory (VmRSS) of kube-apiserver and etcd, by name, before the
	// ceiling's first write and after its last (ceiling rebuild points),
	// for what the objects cost the control plane.
	ControlPlaneBeforeMiB map[string]float64 `json:"controlPlaneBeforeMiB,omitempty"`
	ControlPlaneAfterMiB  map[string]float64 `json:"controlPlaneAfterMiB,omitempty"`
	// APIServerCPUSeconds is the CPU time (user and system, from
	// /proc/<pid>/stat) kube-apiserver and etcd used over the run, whoever
	// wrote: what the run cost the API server. APIServerCPUMsPerEvent is
	// the same in milliseconds per event of the workload.
	APIServerCPUSeconds    float64 `json:"apiserverCPUSeconds"`
	APIServerCPUMsPerEvent float64 `json:"apiserverCPUMsPerEvent"`
	// OtherCores is how many of the machine's cores, on average, processes
	// other than this run's kept busy meanwhile.
	OtherCores float64 `json:"otherCores"`
	// Cores is what each of this run's processes used, on average.
	Cores      map[string]float64 `json:"cores,omitempty"`
	Failed     int64              `json:"failedWrites,omitempty"`
	Incomplete string             `json:"incomplete,omitempty"`
	Note       string             `json:"note,omitempty"`
}

// workload is a stream to project and how to offer it.
type workload struct {
	name string
	cfg  simulator.Config
	// rate is the offered rate in events a second; 0 publishes as fast as
	// JetStream acknowledges.
	rate float64
	// whenNamed runs it only when -only names it.
	whenNamed bool
}

func (w workload) events() []simulator.Event { return simulator.Generate(w.cfg) }

// runTimeout bounds one run, so that a stuck projection cannot stall the
// whole benchmark; the run is then reported as incomplete.
const runTimeout = 4 * time.Minute

// bench holds what every run needs.
type bench struct {
	manager      string
	logDir       string
	operatorArgs []string
}

// env is a fresh control plane and JetStream server, with the projection of
// the workload's stream.
type env struct {
	cl  *cluster
	nt  *natsEnv
	o   *projection
	pub *publisher
}

func (b *bench) newEnv(ctx context.Context, events []simulator.Event) (*env, error) {
	cl, err := newCluster(ctx)
	if err != nil {
		return nil, err
	}
	nt, err := newNATS(ctx)
	if err != nil {
		cl.stop()
		return nil, err
	}
	o := newProjection(events)
	o.setStream(nt.stream)
	return &env{cl: cl, nt: nt, o: o, pub: newPublisher(nt.js, len(events))}, nil
}

func (e *env) close() {
	e.nt.close()
	e.cl.stop()
}

func (e *env) result(workload string, system System) Result {
	return Result{
		Workload: workload, System: system, Events: len(e.o.events), Objects: e.o.objects(),
		Cells: len(e.o.final.Cells), MinPerEvent: 2 * float64(e.o.objects()) / float64(len(e.o.events)),
	}
}

// label names the run: its workload, its system and its round if any.
func (r Result) label() string {
	l := r.Workload + ", " + string(r.System)
	if r.Run > 0 {
		l += fmt.Sprintf(", run %d", r.Run)
	}
	return l
}

// setCPU records what each process used over the run, and the API
// server's share of it per event.
func (r *Result) setCPU(u cpuUse) {
	r.OtherCores, r.Cores = u.others, u.cores
	r.APIServerCPUSeconds = u.controlPlaneCPU()
	r.APIServerCPUMsPerEvent = 1000 * r.APIServerCPUSeconds / float64(r.Events)
}

func (r *Result) setWrites(w writeCounts) {
	r.Writes = w.ByKind
	r.WritesTotal, r.WritesObjects, r.WritesFailed = w.Total, w.Objects, w.Failed
	r.WritesPerEvent = w.Total / float64(r.Events)
}

// cursorAt reads the operator's cursor ConfigMap; 0 when there is none yet.
func (e *env) cursorAt(ctx context.Context) uint64 {
	cm := &cursor.ConfigMap{Client: e.cl.c, Key: types.NamespacedName{Namespace: e.cl.ns, Name: "cellos-projection-cursor"}}
	p, ok, err := cm.Load(ctx)
	if err != nil || !ok || p.Stream != e.nt.stream.Name || !p.StreamCreated.Equal(e.nt.stream.Created) {
		return 0
	}
	return p.Sequence
}

// waitCursor polls the cursor until it reaches seq.
func (e *env) waitCursor(ctx context.Context, seq uint64) (time.Time, error) {
	for {
		if e.cursorAt(ctx) >= seq {
			return time.Now(), nil
		}
		select {
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("cursor at %d, not %d: %w", e.cursorAt(context.Background()), seq, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// waitAll waits for the watch to see every object match the fold.
func waitAll(ctx context.Context, w *watcher, o *projection) (time.Time, error) {
	select {
	case <-w.all:
		return w.allAt, nil
	case <-ctx.Done():
		return time.Time{}, fmt.Errorf("%d of %d objects match the fold: %w", w.matchedCount(), o.objects(), ctx.Err())
	}
}

// runLive projects a workload published while the system runs: burst,
// chatty and steady.
func (b *bench) runLive(ctx context.Context, wl workload, system System) (res Result, err error) {
	events := wl.events()
	e, err := b.newEnv(ctx, events)
	if err != nil {
		return res, err
	}
	defer e.close()
	res = e.result(wl.name, system)
	ctx, cancel := context.WithTimeout(ctx, runTimeout)
	defer cancel()

	if err := e.cl.installCRDs(system.shape().crds()); err != nil {
		return res, err
	}
	w, err := watch(ctx, e.cl, e.o, e.pub, system.shape().kinds())
	if err != nil {
		return res, err
	}
	sys, err := b.startSystem(ctx, e, system)
	if sys != nil {
		defer func() {
			if serr := sys.stop(); serr != nil && err == nil {
				log.Printf("%s/%s: %v", wl.name, system, serr)
			}
		}()
	}
	if err != nil {
		return res, err
	}

	before, err := e.cl.requests(ctx)
	if err != nil {
		return res, err
	}
	meter := startCPUMeter(e.cl.ourPIDs(sys.pids()...))
	start, end, err := e.publishAndMatch(ctx, w, wl, system, &res)
	if err != nil {
		return res, err
	}
	after, err := e.cl.requests(context.WithoutCancel(ctx))
	if err != nil {
		return res, err
	}
	res.setCPU(meter.read())
	res.Seconds = end.Sub(start).Seconds()
	res.EventsPerSec = float64(len(events)) / res.Seconds
	res.setWrites(diffWrites(before, after))
	if wl.rate > 0 {
		res.setLatencies(w)
	}
	return res, sys.measure(&res, len(events), start)
}

// liveSystem is the system a live run measures, running: the operator, the
// naive projector or a ceiling.
type liveSystem struct {
	op   *operatorProc
	cpu0 time.Duration // the operator's CPU time once ready
	nv   *naive
	ceil *ceiling
	// stop stops it; only the operator's stop can fail.
	stop func() error
}

// startSystem starts system on e: the operator as a process of its own,
// waited for until ready; the naive projector, reading the stream; or a
// ceiling, writing as the stream acknowledges the workload's events. The
// system returned, even with an error, is to be stopped.
func (b *bench) startSystem(ctx context.Context, e *env, system System) (*liveSystem, error) {
	s := &liveSystem{stop: func() error { return nil }}
	switch system {
	case Operator:
		op, err := startOperator(b.manager, e.cl, e.nt.url, b.logDir, b.operatorArgs...)
		if err != nil {
			return nil, err
		}
		s.op, s.stop = op, op.stop
		if err := op.waitReady(ctx, time.Minute); err != nil {
			return s, err
		}
		if s.cpu0, _, err = op.stat(); err != nil {
			return s, err
		}
	case Naive:
		s.nv = newNaive(e.cl.c, e.cl.ns, e.nt.stream)
		nctx, ncancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			if err := s.nv.run(nctx, e.nt); err != nil && nctx.Err() == nil {
				log.Printf("naive projector: %v", err)
			}
		}()
		s.stop = func() error { ncancel(); <-done; return nil }
	case Ceiling, Minimal:
		s.ceil = newCeiling(ctx, e.cl.c, e.cl.ns, e.o, system.shape())
		e.pub.onAck = func(seq uint64) { s.ceil.ack(ctx, seq) }
		s.stop = func() error { s.ceil.close(); return nil }
	}
	return s, nil
}

// pids are the processes of the system besides this one's.
func (s *liveSystem) pids() []int {
	if s.op != nil {
		return []int{s.op.Pid()}
	}
	return nil
}

// measure records the system's own figures of a run that started at
// start: the operator's CPU and memory, the other systems' failed writes.
func (s *liveSystem) measure(res *Result, events int, start time.Time) error {
	switch {
	case s.op != nil:
		cpu1, rss, err := s.op.stat()
		if err != nil {
			return err
		}
		res.CPUSecPer1k = (cpu1 - s.cpu0).Seconds() * 1000 / float64(events)
		res.PeakRSSMiB = float64(rss) / (1 << 20)
	case s.nv != nil:
		res.Failed = s.nv.failed.Load()
	case s.ceil != nil:
		res.Failed = s.ceil.failed.Load()
		if at := s.ceil.doneAt(); !at.IsZero() {
			res.Note = fmt.Sprintf("last write acknowledged at %.2f s", at.Sub(start).Seconds())
		}
	}
	return nil
}

// publishAndMatch publishes the workload at its rate and waits until the
// watch sees every object match the fold and, for the operator, the cursor
// reach the last sequence. It returns when publishing started and when
// that was; a run that did not get there in time ends now, marked
// incomplete in res. The error is the publisher's.
func (e *env) publishAndMatch(ctx context.Context, w *watcher, wl workload, system System, res *Result) (start, end time.Time, err error) {
	events := e.o.events
	start = time.Now()
	published := make(chan error, 1)
	var publishedAt time.Time
	go func() {
		err := e.pub.publish(ctx, events, wl.rate)
		publishedAt = time.Now()
		if err == nil && system == Operator && wl.rate > 0 {
			res.BehindAtPublishEnd = int64(len(events)) - int64(e.cursorAt(ctx))
		}
		published <- err
	}()
	end, err = waitAll(ctx, w, e.o)
	if perr := <-published; perr != nil {
		return start, end, perr
	}
	res.PublishSeconds = publishedAt.Sub(start).Seconds()
	if err != nil {
		res.Incomplete = err.Error()
		end = time.Now()
	}
	res.MatchedSeconds = end.Sub(start).Seconds()
	if system == Operator && res.Incomplete == "" {
		at, err := e.waitCursor(ctx, uint64(len(events)))
		if err != nil {
			res.Incomplete = err.Error()
		}
		res.CursorSeconds = at.Sub(start).Seconds()
		if at.After(end) {
			end = at
		}
	}
	return start, end, nil
}

// setLatencies records the event-to-status latencies the watch saw.
func (r *Result) setLatencies(w *watcher) {
	lat, n := w.latencies()
	r.Latencies = len(lat)
	r.P50ms = float64(quantile(lat, 0.50)) / float64(time.Millisecond)
	r.P99ms = float64(quantile(lat, 0.99)) / float64(time.Millisecond)
	if len(lat) < n {
		r.Note = fmt.Sprintf("latency of %d of %d events", len(lat), n)
	}
}

// runRebuild publishes the whole stream first, then starts the operator
// into the empty cluster (a rebuild from sequence 1), then restarts it over
// the applied stream (a replay, which must write nothing).
func (b *bench) runRebuild(ctx context.Context, wl workload) (rebuild, replay Result, err error) {
	events := wl.events()
	e, err := b.newEnv(ctx, events)
	if err != nil {
		return rebuild, replay, err
	}
	defer e.close()
	rebuild = e.result(wl.name+" rebuild", Operator)
	replay = e.result(wl.name+" replay", Operator)
	ctx, cancel := context.WithTimeout(ctx, runTimeout)
	defer cancel()
	if err := e.pub.publish(ctx, events, 0); err != nil {
		return rebuild, replay, err
	}
	w, err := watch(ctx, e.cl, e.o, e.pub, operatorObjects{}.kinds())
	if err != nil {
		return rebuild, replay, err
	}
	before, err := e.cl.requests(ctx)
	if err != nil {
		return rebuild, replay, err
	}
	op, err := startOperator(b.manager, e.cl, e.nt.url, b.logDir, b.operatorArgs...)
	if err != nil {
		return rebuild, replay, err
	}
	meter := startCPUMeter(e.cl.ourPIDs(op.Pid()))
	start := op.Started
	end, err := waitAll(ctx, w, e.o)
	if err != nil {
		rebuild.Incomplete = err.Error()
		end = time.Now()
	} else {
		rebuild.MatchedSeconds = end.Sub(start).Seconds()
		at, err := e.waitCursor(ctx, uint64(len(events)))
		if err != nil {
			rebuild.Incomplete = err.Error()
		}
		rebuild.CursorSeconds = at.Sub(start).Seconds()
		end = later(end, at)
	}
	after, err := e.cl.requests(ctx)
	if err != nil {
		_ = op.stop()
		return rebuild, replay, err
	}
	rebuild.Seconds = end.Sub(start).Seconds()
	rebuild.EventsPerSec = float64(len(events)) / rebuild.Seconds
	rebuild.setWrites(diffWrites(before, after))
	cpu, rss, err := op.stat()
	if err != nil {
		_ = op.stop()
		return rebuild, replay, err
	}
	rebuild.CPUSecPer1k = cpu.Seconds() * 1000 / float64(len(events))
	rebuild.PeakRSSMiB = float64(rss) / (1 << 20)
	rebuild.Note = "from the operator's start"
	rebuild.setCPU(meter.read())
	if err := op.stop(); err != nil {
		return rebuild, replay, err
	}
	if rebuild.Incomplete != "" {
		return rebuild, replay, nil
	}
	replay, err = b.replay(ctx, e, replay)
	return rebuild, replay, err
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// replay starts the operator over a cluster whose every object already
// matches the stream, and measures how fast it folds the whole stream again
// and compares every object, and what it writes meanwhile (it must write
// nothing). Checkpoints are off: the rebuild's operator checkpointed the
// fold as it stopped, and a start from that checkpoint folds no event at
// all, which is a start against history (BenchmarkStartUpAgainstHistory),
// not a replay. The cursor commit interval is shortened to 100ms only so
// that the operator's gauges of unflushed objects and lag, which it
// refreshes at each commit, tell promptly when it has compared everything;
// with nothing to commit it commits nothing.
func (b *bench) replay(ctx context.Context, e *env, res Result) (Result, error) {
	n := float64(len(e.o.events))
	before, err := e.cl.requests(ctx)
	if err != nil {
		return res, err
	}
	op, err := startOperator(b.manager, e.cl, e.nt.url, b.logDir, append(slices.Clone(b.operatorArgs), "--checkpoint-interval=0", "--cursor-commit-interval=100ms")...)
	if err != nil {
		return res, err
	}
	defer func() { _ = op.stop() }()
	meter := startCPUMeter(e.cl.ourPIDs(op.Pid()))
	start := op.Started
	var first, folded, settled time.Time
	for settled.IsZero() {
		select {
		case <-ctx.Done():
			res.Incomplete = "the replay did not settle: " + ctx.Err().Error()
			return res, nil
		case <-op.Done():
			return res, fmt.Errorf("the manager exited during the replay: %v (log: %s)", op.Err(), op.logPath)
		case <-time.After(10 * time.Millisecond):
		}
		m, err := op.Metrics()
		if err != nil {
			continue // not serving yet
		}
		now := time.Now()
		folds := harness.Sum(m, "cellos_operator_events_total")
		if first.IsZero() && folds > 0 {
			first = now
		}
		if folded.IsZero() && folds >= n {
			folded = now
		}
		// A gauge read 250ms (two commit ticks and more) after the fold
		// ended reflects the state after it.
		if !folded.IsZero() && now.Sub(folded) > 250*time.Millisecond &&
			m["cellos_operator_unflushed_objects"] == 0 && m["cellos_operator_lag_events"] == 0 {
			settled = now
		}
	}
	// Writes that a slow reconcile would still make show within a few
	// seconds.
	time.Sleep(3 * time.Second)
	after, err := e.cl.requests(ctx)
	if err != nil {
		return res, err
	}
	res.setCPU(meter.read())
	res.Seconds = settled.Sub(start).Seconds()
	res.EventsPerSec = n / res.Seconds
	res.StartupSeconds = first.Sub(start).Seconds()
	res.FoldSeconds = folded.Sub(first).Seconds()
	res.SettleSeconds = settled.Sub(folded).Seconds()
	if d := folded.Sub(first).Seconds(); d > 0 {
		res.FoldEventsPerSec = n / d
	} else {
		res.FoldEventsPerSec = math.Inf(1)
	}
	res.setWrites(diffWrites(before, after))
	cpu, rss, err := op.stat()
	if err != nil {
		return res, err
	}
	res.CPUSecPer1k = cpu.Seconds() * 1000 / n
	res.PeakRSSMiB = float64(rss) / (1 << 20)
	res.Note = fmt.Sprintf("from the operator's start: %.1f s to its first event, %.1f s folding (%s events/s), %.1f s more until every object was compared",
		res.StartupSeconds, res.FoldSeconds, count(res.FoldEventsPerSec), res.SettleSeconds)
	return res, nil
}

// runCeilingAt writes a whole published stream with the ceiling writer,
// and, when withReplay is set, then starts the operator over it to measure a
// replay (and its memory) at that scale. With watchObjects unset the
// ceiling's end is its last write acknowledged, not a watch seeing it,
// which spares the harness a watch of every object.
func (b *bench) runCeilingAt(ctx context.Context, wl workload, watchObjects, withReplay bool) (ceil, replay Result, err error) {
	events := wl.events()
	e, err := b.newEnv(ctx, events)
	if err != nil {
		return ceil, replay, err
	}
	defer e.close()
	ceil = e.result(wl.name+" rebuild", Ceiling)
	replay = e.result(wl.name+" replay", Operator)
	parent := ctx
	// Ten milliseconds an object: a large point takes minutes to write.
	ctx, cancel := context.WithTimeout(ctx, max(2*runTimeout, time.Duration(e.o.objects())*10*time.Millisecond))
	defer cancel()
	if err := e.pub.publish(ctx, events, 0); err != nil {
		return ceil, replay, err
	}
	var w *watcher
	if watchObjects {
		if w, err = watch(ctx, e.cl, e.o, e.pub, operatorObjects{}.kinds()); err != nil {
			return ceil, replay, err
		}
	}
	before, err := e.cl.requests(ctx)
	if err != nil {
		return ceil, replay, err
	}
	meter := startCPUMeter(e.cl.ourPIDs())
	ceil.ControlPlaneBeforeMiB = e.cl.controlPlaneRSS()
	start := time.Now()
	writer := newCeiling(ctx, e.cl.c, e.cl.ns, e.o, operatorObjects{})
	for seq := range uint64(len(events)) {
		writer.ack(ctx, seq+1)
	}
	writer.close()
	end := time.Now()
	if w != nil {
		if end, err = waitAll(ctx, w, e.o); err != nil {
			ceil.Incomplete = err.Error()
			end = time.Now()
		}
	} else {
		ceil.Note = "end: last write acknowledged"
	}
	ceil.ControlPlaneAfterMiB = e.cl.controlPlaneRSS()
	after, err := e.cl.requests(ctx)
	if err != nil {
		return ceil, replay, err
	}
	ceil.setCPU(meter.read())
	ceil.Seconds = end.Sub(start).Seconds()
	ceil.EventsPerSec = float64(len(events)) / ceil.Seconds
	ceil.setWrites(diffWrites(before, after))
	ceil.Failed = writer.failed.Load()
	if ceil.Failed > 0 {
		return ceil, replay, fmt.Errorf("the ceiling failed %d writes", ceil.Failed)
	}
	if !withReplay {
		return ceil, replay, nil
	}
	// The cluster as an operator leaves it: its cursor at the end.
	cm := &cursor.ConfigMap{Client: e.cl.c, Key: types.NamespacedName{Namespace: e.cl.ns, Name: "cellos-projection-cursor"}}
	if _, err := cm.Commit(ctx, cursor.Position{Stream: e.nt.stream.Name, StreamCreated: e.nt.stream.Created, Sequence: uint64(len(events))}); err != nil {
		return ceil, replay, err
	}
	// The replay has a time of its own, as the writes may have used up
	// theirs: it rewrites every status that the ceiling wrote without a
	// finishedAt (docs/performance.md). Five milliseconds an object is a
	// guess, and at 100,000 Cells it was not enough here.
	replayCtx, cancelReplay := context.WithTimeout(parent, max(runTimeout, time.Duration(e.o.objects())*5*time.Millisecond))
	defer cancelReplay()
	replay, err = b.replay(replayCtx, e, replay)
	return ceil, replay, err
}

// count formats a rate for a note.
func count(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "too fast to time"
	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 1e4:
		return fmt.Sprintf("%.0fk", v/1e3)
	default:
		return fmt.Sprintf("%.0f", v)
	}
}
