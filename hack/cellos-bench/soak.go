package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/internal/simulator"
	"cellos.dev/cellos-operator/internal/store"
	"cellos.dev/cellos-operator/test/harness"
)

// soakTTLs are the operator's TTLs in the soak: short enough that a few
// minutes hold many lifetimes of the live set, so that whatever grows with
// history rather than with live objects shows as a slope.
var soakTTLs = []string{"--cell-ttl=20s", "--formation-ttl=30s"}

const (
	// soakInterval is how often the soak samples.
	soakInterval = 5 * time.Second
	// soakIdle is how long the operator runs with no object before its idle
	// RSS is read: long enough for its start-up allocations to settle.
	soakIdle = 5 * time.Second
	// soakOverhead is the soak's time besides publishing: a control plane
	// and JetStream to start and stop, the operator to start and idle.
	soakOverhead = 30 * time.Second
	// minSoak is the shortest soak worth running in the full run: its middle
	// third must start after the live set has had time to fill (the longest
	// TTL and a formation's run).
	minSoak = 2 * time.Minute
	// plateauTolerance is how far the mean of the last third of a series may
	// be from the middle third's for the series to be called a plateau.
	plateauTolerance = 0.10
)

// soakWorkload is the soak's stream at rate events a second for d: new
// formations of 5 cells, 16 in flight, as in steady, every one finishing.
func soakWorkload(rate float64, d time.Duration) workload {
	return workload{name: soakName, rate: rate, cfg: simulator.Config{Seed: 7, Formations: formationsFor(rate*d.Seconds(), 5),
		CellsPerFormation: 5, InFlight: 16, FailureRate: 0.2, DegradedRate: 0.2}}
}

// SoakSample is the soak's state at one moment.
type SoakSample struct {
	// Seconds is the time since publishing began.
	Seconds float64 `json:"seconds"`
	// Folded is the events the operator folded so far
	// (cellos_operator_events_total).
	Folded float64 `json:"folded"`
	// LiveFormations and LiveCells are what the operator's fold holds
	// (cellos_operator_live_objects).
	LiveFormations float64 `json:"liveFormations"`
	LiveCells      float64 `json:"liveCells"`
	// Expired is cellos_operator_expired_objects_total, both kinds.
	Expired float64 `json:"expired"`
	// DeleteLagSeconds is the mean time from expiry to delete of the
	// objects deleted since the previous sample
	// (cellos_operator_expiry_delete_lag_seconds): it grows when the deletes
	// fall behind the expiries.
	DeleteLagSeconds float64 `json:"deleteLagSeconds"`
	lagSum, lagCount float64
	// APIFormations and APICells are the API server's count in the
	// namespace.
	APIFormations int `json:"apiFormations"`
	APICells      int `json:"apiCells"`
	// The resident memory (VmRSS) of the operator, kube-apiserver and etcd.
	OperatorRSSMiB  float64 `json:"operatorRSSMiB"`
	APIServerRSSMiB float64 `json:"apiserverRSSMiB"`
	EtcdRSSMiB      float64 `json:"etcdRSSMiB"`
}

func (s SoakSample) live() float64       { return s.LiveFormations + s.LiveCells }
func (s SoakSample) apiObjects() float64 { return float64(s.APIFormations + s.APICells) }

// Plateau compares the middle and last thirds of one series of the soak.
type Plateau struct {
	Series string  `json:"series"`
	Middle float64 `json:"middle"`
	Last   float64 `json:"last"`
	OK     bool    `json:"ok"`
}

// Soak is the soak point: steady events for a while, with short TTLs, and
// the series of its samples.
type Soak struct {
	Rate         float64  `json:"rate"`
	Seconds      float64  `json:"seconds"`
	Events       int      `json:"events"`
	OperatorArgs []string `json:"operatorArgs"`
	// IdleRSSMiB is the operator's RSS once ready, before the first event.
	IdleRSSMiB float64      `json:"idleRSSMiB"`
	Samples    []SoakSample `json:"samples"`
	Plateaus   []Plateau    `json:"plateaus"`
	// PlateauRSSMiB, PlateauLive and PlateauAPIObjects are the means of the
	// operator's RSS, its live objects and the API server's objects over
	// the last third. RSSPerLiveObject is the RSS above idle divided by the
	// live objects, in bytes; RSSPerAPIObject by the API server's objects,
	// which the operator's informer cache holds until their delete, however
	// late.
	PlateauRSSMiB     float64            `json:"plateauRSSMiB"`
	PlateauLive       float64            `json:"plateauLive"`
	PlateauAPIObjects float64            `json:"plateauAPIObjects"`
	RSSPerLiveObject  float64            `json:"rssBytesPerLiveObject"`
	RSSPerAPIObject   float64            `json:"rssBytesPerAPIObject"`
	Writes            map[string]float64 `json:"writes"`
	OtherCores        float64            `json:"otherCores"`
	Cores             map[string]float64 `json:"cores,omitempty"`
	Incomplete        string             `json:"incomplete,omitempty"`
}

// runSoak publishes wl at its rate to the operator running with the soak's
// TTLs, and samples the operator, the API server and etcd every
// soakInterval until the last event is published.
func (b *bench) runSoak(ctx context.Context, wl workload) (*Soak, error) {
	events := wl.events()
	e, err := b.newEnv(ctx, events)
	if err != nil {
		return nil, err
	}
	defer e.close()
	// The flags of -operator-args come last, so that they can change the
	// TTLs too.
	args := slices.Concat(soakTTLs, b.operatorArgs)
	soak := &Soak{Rate: wl.rate, Events: len(events), OperatorArgs: args}
	op, err := startOperator(b.manager, e.cl, e.nt.url, b.logDir, args...)
	if err != nil {
		return nil, err
	}
	defer func() { _ = op.stop() }()
	if err := op.waitReady(ctx, time.Minute); err != nil {
		return nil, err
	}
	time.Sleep(soakIdle)
	if soak.IdleRSSMiB, err = rssMiB(op.Pid()); err != nil {
		return nil, err
	}
	before, err := e.cl.requests(ctx)
	if err != nil {
		return nil, err
	}
	meter := startCPUMeter(e.cl.ourPIDs(op.Pid()))
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	published := make(chan error, 1)
	start := time.Now()
	go func() { published <- e.pub.publish(pctx, events, wl.rate) }()
	tick := time.NewTicker(soakInterval)
	defer tick.Stop()
	for done := false; !done; {
		select {
		case err := <-published:
			if err != nil {
				return nil, err
			}
			done = true
		case <-op.Done():
			return nil, fmt.Errorf("the manager exited during the soak: %v (log: %s)", op.Err(), op.logPath)
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-tick.C:
		}
		var prev SoakSample
		if n := len(soak.Samples); n > 0 {
			prev = soak.Samples[n-1]
		}
		sample, err := e.soakSample(ctx, op, start, prev)
		if err != nil {
			return nil, err
		}
		soak.Samples = append(soak.Samples, sample)
	}
	soak.Seconds = time.Since(start).Seconds()
	after, err := e.cl.requests(ctx)
	if err != nil {
		return nil, err
	}
	soak.Writes = diffWrites(before, after).ByKind
	use := meter.read()
	soak.OtherCores, soak.Cores = use.others, use.cores
	soak.judge()
	return soak, nil
}

// soakSample reads the operator's metrics and RSS, the API server's count of
// Formations and Cells, and the control plane's RSS; prev is the previous
// sample, or none.
func (e *env) soakSample(ctx context.Context, op *operatorProc, start time.Time, prev SoakSample) (SoakSample, error) {
	s := SoakSample{Seconds: time.Since(start).Seconds()}
	m, err := op.Metrics()
	if err != nil {
		return s, err
	}
	s.Folded = harness.Sum(m, "cellos_operator_events_total")
	s.Expired = harness.Sum(m, "cellos_operator_expired_objects_total")
	s.lagSum = harness.Sum(m, "cellos_operator_expiry_delete_lag_seconds_sum")
	s.lagCount = harness.Sum(m, "cellos_operator_expiry_delete_lag_seconds_count")
	if s.lagCount > prev.lagCount {
		s.DeleteLagSeconds = (s.lagSum - prev.lagSum) / (s.lagCount - prev.lagCount)
	}
	for series, v := range m {
		if rest, ok := strings.CutPrefix(series, "cellos_operator_live_objects{"); ok {
			switch parseLabels(strings.TrimSuffix(rest, "}"))["kind"] {
			case string(store.FormationKind):
				s.LiveFormations = v
			case string(store.CellKind):
				s.LiveCells = v
			}
		}
	}
	if s.APIFormations, err = e.cl.count(ctx, &cellosv1.FormationList{}); err != nil {
		return s, err
	}
	if s.APICells, err = e.cl.count(ctx, &cellosv1.CellList{}); err != nil {
		return s, err
	}
	if s.OperatorRSSMiB, err = rssMiB(op.Pid()); err != nil {
		return s, err
	}
	rss := e.cl.controlPlaneRSS()
	s.APIServerRSSMiB, s.EtcdRSSMiB = rss["kube-apiserver"], rss["etcd"]
	return s, nil
}

// count is how many objects of list's kind the API server holds in the
// namespace: a list of one item and the API server's count of the rest
// (remainingItemCount), so that sampling costs it little however many there
// are.
func (cl *cluster) count(ctx context.Context, list client.ObjectList) (int, error) {
	if err := cl.c.List(ctx, list, client.InNamespace(cl.ns), client.Limit(1)); err != nil {
		return 0, err
	}
	n := meta.LenList(list)
	if rest := list.GetRemainingItemCount(); rest != nil {
		n += int(*rest)
	} else if list.GetContinue() != "" {
		return 0, errors.New("the API server listed one item and did not count the rest")
	}
	return n, nil
}

// judge computes the plateau of live objects, the operator's RSS and the API
// server's objects, the series retention must hold level, and the RSS per
// live object at the plateau. A series plateaus when the mean of the last
// third of the samples (by time) is within plateauTolerance of the mean of
// the middle third: the first third is the live set filling up.
func (s *Soak) judge() {
	if len(s.Samples) < 6 {
		s.Incomplete = fmt.Sprintf("%d samples, too few for thirds", len(s.Samples))
		return
	}
	end := s.Samples[len(s.Samples)-1].Seconds
	meanOf := func(from, to float64, v func(SoakSample) float64) float64 {
		sum, n := 0.0, 0
		for _, x := range s.Samples {
			if x.Seconds >= from && x.Seconds < to {
				sum, n = sum+v(x), n+1
			}
		}
		return sum / float64(n)
	}
	series := []struct {
		name string
		v    func(SoakSample) float64
	}{
		{"live objects (the operator's cellos_operator_live_objects)", SoakSample.live},
		{"the operator's RSS, MiB", func(x SoakSample) float64 { return x.OperatorRSSMiB }},
		{"Formations and Cells in the API server", SoakSample.apiObjects},
	}
	s.Plateaus = nil
	for _, ser := range series {
		mid, last := meanOf(end/3, 2*end/3, ser.v), meanOf(2*end/3, math.Inf(1), ser.v)
		s.Plateaus = append(s.Plateaus, Plateau{Series: ser.name, Middle: mid, Last: last,
			OK: mid > 0 && math.Abs(last/mid-1) <= plateauTolerance})
	}
	s.PlateauLive = s.Plateaus[0].Last
	s.PlateauRSSMiB = s.Plateaus[1].Last
	s.PlateauAPIObjects = s.Plateaus[2].Last
	if s.PlateauLive > 0 && s.PlateauAPIObjects > 0 {
		grown := (s.PlateauRSSMiB - s.IdleRSSMiB) * (1 << 20)
		s.RSSPerLiveObject, s.RSSPerAPIObject = grown/s.PlateauLive, grown/s.PlateauAPIObjects
	}
}

// printSoak writes the soak's series, its plateau verdicts and the RSS per
// live object.
func printSoak(out io.Writer, s *Soak) {
	if len(s.Samples) == 0 {
		fmt.Fprintf(out, "\nSoak at %.0f events/s: INCOMPLETE: %s\n", s.Rate, s.Incomplete)
		return
	}
	fmt.Fprintf(out, "\nSoak: %.0f events/s for %s (%d events), the operator with %s; a sample every %s:\n\n",
		s.Rate, (time.Duration(s.Seconds) * time.Second).Round(time.Second), s.Events, strings.Join(s.OperatorArgs, " "), soakInterval)
	fmt.Fprintln(out, "| s | events folded | live Formations | live Cells | expired | delete lag | API Formations | API Cells | operator RSS | kube-apiserver RSS | etcd RSS |")
	fmt.Fprintln(out, "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
	for _, x := range s.Samples {
		fmt.Fprintf(out, "| %.0f | %.0f | %.0f | %.0f | %.0f | %.1f s | %d | %d | %.1f MiB | %.0f MiB | %.0f MiB |\n", x.Seconds, x.Folded,
			x.LiveFormations, x.LiveCells, x.Expired, x.DeleteLagSeconds, x.APIFormations, x.APICells, x.OperatorRSSMiB, x.APIServerRSSMiB, x.EtcdRSSMiB)
	}
	if s.Incomplete != "" {
		fmt.Fprintf(out, "- INCOMPLETE: %s\n", s.Incomplete)
		return
	}
	fmt.Fprintf(out, "\nPlateau: the mean of the last third of the samples within %.0f%% of the middle third's.\n", 100*plateauTolerance)
	for _, p := range s.Plateaus {
		v := "plateau"
		if !p.OK {
			v = "NO plateau"
		}
		fmt.Fprintf(out, "- %s: %.1f, then %.1f (%+.1f%%): %s\n", p.Series, p.Middle, p.Last, 100*(p.Last/p.Middle-1), v)
	}
	fmt.Fprintf(out, "- RSS per live object: (%.1f MiB at the plateau - %.1f MiB idle with no object) / %.0f live objects = %.0f bytes (target at most 4 KiB: %s)\n",
		s.PlateauRSSMiB, s.IdleRSSMiB, s.PlateauLive, s.RSSPerLiveObject, verdict(s.RSSPerLiveObject <= 4096))
	fmt.Fprintf(out, "- RSS per object in the API server, which the operator's cache holds until its delete: %.0f bytes (%.0f objects)\n", s.RSSPerAPIObject, s.PlateauAPIObjects)
	fmt.Fprintf(out, "- API writes per event: %s\n- cores: %s\n", writesLine(s.Writes, s.Events), coresLine(s.Cores, s.OtherCores))
}
