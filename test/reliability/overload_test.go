package reliability

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"cellos.dev/cellos-operator/test/harness"
)

// Overload: realistic lifecycles published at 5,000 events a second for a
// minute, far above what the API server takes in status writes. The
// operator keeps up or falls behind gracefully: the lag shows in
// cellos_operator_lag_events, and once --max-unflushed-objects objects wait
// for their write the fold pauses and /readyz says so; memory stays
// bounded; and it catches up afterwards with nothing lost.
func TestOverload(t *testing.T) {
	// Even the small run offers far more than the API server takes in
	// status writes, so that the fold surely pauses: at 500 events/s, an
	// idle machine kept up.
	rate := knob("OVERLOAD_RATE", 5000, 5000)
	length := seconds("OVERLOAD_SECONDS", 1, 60)
	maxUnflushed := knob("OVERLOAD_MAX_UNFLUSHED", 100, 10000)
	n := rate * int(length.Seconds())
	ns, js, jsc, rec := newScenario(t)
	msgs := generate(71, n, mix{poison: 0.01, duplicate: 0.01, binary: 0.01})

	m := startManager(t, managerConfig{natsURL: js.URL(), namespace: ns, args: []string{fmt.Sprintf("--max-unflushed-objects=%d", maxUnflushed)}})
	harness.Eventually(t, time.Minute, "the manager is ready", m.Ready)

	// Sample what an operator would see, every second, until caught up.
	type sample struct {
		lag, unflushed, paused float64
		ready                  error
	}
	var mu sync.Mutex
	var samples []sample
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for ctx.Err() == nil {
			if all, err := m.Metrics(); err == nil {
				s := sample{lag: all["cellos_operator_lag_events"], unflushed: all["cellos_operator_unflushed_objects"], paused: all["cellos_operator_ingest_paused"], ready: m.Ready()}
				mu.Lock()
				samples = append(samples, s)
				mu.Unlock()
			}
			sleep(ctx, time.Second)
		}
	})
	defer func() { cancel(); wg.Wait() }()

	begin := time.Now()
	publish(t, jsc, msgs, float64(rate))
	published := time.Since(begin)
	want, snap := expect(t, jsc)
	caughtUp, lost := converge(t, ns, want, 90*time.Minute)
	cancel()
	wg.Wait()

	var maxLag, maxUnflushedSeen float64
	var pausedSamples, unreadyWhilePaused int
	var why string
	for _, s := range samples {
		maxLag = max(maxLag, s.lag)
		maxUnflushedSeen = max(maxUnflushedSeen, s.unflushed)
		if s.paused == 1 {
			pausedSamples++
			if s.ready != nil {
				unreadyWhilePaused++
				// The aggregate and the per-check probes are read one after
				// the other, so a sample may catch the fold resuming between
				// them: keep a reason that names the projection.
				if !strings.Contains(why, "not projecting the stream") {
					why = s.ready.Error()
				}
			}
		}
	}
	t.Logf("published %d events in %s (%.0f/s); caught up %s later; lag up to %.0f events; unflushed up to %.0f; paused in %d of %d samples, unready in %d of them (%s)",
		n, published.Round(time.Millisecond), float64(n)/published.Seconds(), caughtUp.Round(time.Second), maxLag, maxUnflushedSeen, pausedSamples, len(samples), unreadyWhilePaused, why)
	if maxLag == 0 {
		t.Errorf("cellos_operator_lag_events never showed a lag")
	}
	if pausedSamples == 0 {
		t.Errorf("the fold never paused at --max-unflushed-objects=%d", maxUnflushed)
	}
	if unreadyWhilePaused == 0 || !strings.Contains(why, "not projecting the stream") {
		t.Errorf("/readyz/projection never failed while the fold was paused")
	}
	if maxUnflushedSeen > float64(maxUnflushed) {
		t.Errorf("cellos_operator_unflushed_objects reached %v, above --max-unflushed-objects=%d", maxUnflushedSeen, maxUnflushed)
	}
	if err := m.Ready(); err != nil {
		t.Errorf("not ready after catching up: %v", err)
	}
	if lag := m.Metric(t, "cellos_operator_lag_events"); lag != 0 {
		t.Errorf("lag %v after catching up", lag)
	}
	const bound = 2048 // MiB: far above what the stream needs, far below unbounded
	if p := m.PeakMiB(); p > bound {
		t.Errorf("peak RSS %.0f MiB, above %d MiB", p, bound)
	}
	if m.ExitedUnasked() {
		t.Errorf("the manager exited: %v", m.Err())
	}
	regressed := rec.mustHold(t, want, snap)
	results.add(row{
		Scenario: "Overload", Runs: 1, Events: n, Lost: lost, Regressed: regressed,
		Recover: durations([]time.Duration{caughtUp}), PeakMiB: m.PeakMiB(),
		Notes: fmt.Sprintf("%d events/s for %s (%d formations, %d cells); lag up to %.0f events; fold paused at --max-unflushed-objects=%d in %d of %d one-second samples, /readyz failing meanwhile; recovery: end of publishing to every object and the cursor caught up",
			rate, length, len(want.State.Formations), len(want.State.Cells), maxLag, maxUnflushed, pausedSamples, len(samples)),
	})
}
