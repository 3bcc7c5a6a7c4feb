package reliability

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"cellos.dev/cellos-operator/test/harness"
)

// API server outage: kube-apiserver stops mid-stream and comes back on the
// same port and certificates (etcd stays up), while a backlog of events
// naming many new objects arrives. The operator (one process, no restart)
// backs off, stops pulling the stream once --max-unflushed-objects objects
// await their write (cellos_operator_ingest_paused, a log line, /readyz),
// so that its memory stays bounded; holds the cursor; and catches up.
//
// test/localenv cannot stop its API server (it keeps its
// envtest.Environment to itself), so this suite starts its own control
// plane, and stops and starts envtest's APIServer on the same port.
func TestAPIServerOutage(t *testing.T) {
	maxUnflushed := knob("APISERVER_MAX_UNFLUSHED", 60, 1000)
	length := seconds("APISERVER_OUTAGE_SECONDS", 8, 30)
	before := knob("APISERVER_EVENTS_BEFORE", 200, 3000)
	during := knob("APISERVER_EVENTS_DURING", 1000, 30000)
	ns, js, jsc, rec := newScenario(t)
	msgs := generate(31, before+during, adversarial)

	m := startManager(t, managerConfig{natsURL: js.URL(), namespace: ns, args: []string{fmt.Sprintf("--max-unflushed-objects=%d", maxUnflushed)}})
	publish(t, jsc, msgs[:before], 0)
	want, _ := expect(t, jsc)
	converge(t, ns, want, 5*time.Minute)
	rssBefore := m.PeakMiB()

	// It stops listening at once; its graceful shutdown may take longer.
	down := time.Now()
	if err := cp.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	restarted := false
	defer func() {
		if !restarted {
			if err := cp.StartAPIServer(); err != nil {
				t.Errorf("starting the API server again: %v", err)
			}
		}
	}()
	publish(t, jsc, msgs[before:], 0)
	publishedAt := time.Now()
	published := len(msgs)
	var paused, pausedReady bool
	var maxSeen, folded float64
	// Watch for the length of the outage, and at least a few seconds after
	// the backlog arrived.
	for time.Since(down) < length || time.Since(publishedAt) < 5*time.Second {
		if !m.Running() {
			t.Fatalf("the manager exited while the API server was away: %v\n%s", m.Err(), harness.Tail(m.Logs(), 40))
		}
		all, err := m.Metrics()
		if err != nil {
			t.Fatal(err)
		}
		if all["cellos_operator_ingest_paused"] == 1 {
			paused = true
		}
		maxSeen = max(maxSeen, all["cellos_operator_unflushed_objects"])
		folded = harness.Sum(all, "cellos_operator_events_total")
		// The probe withholds why; the log line below says it.
		if err := m.Ready(); err != nil && paused && strings.Contains(err.Error(), "not projecting the stream") {
			pausedReady = true
		}
		time.Sleep(250 * time.Millisecond)
	}
	rssDown := m.PeakMiB()
	if !paused {
		t.Errorf("cellos_operator_ingest_paused never reached 1 while the API server was away")
	}
	if !pausedReady {
		t.Errorf("/readyz/projection never failed while the fold was paused and the API server away")
	}
	if !strings.Contains(m.Logs(), "Paused the fold") {
		t.Errorf("no log line says the fold paused")
	}
	if maxSeen > float64(maxUnflushed) {
		t.Errorf("cellos_operator_unflushed_objects reached %v, above --max-unflushed-objects=%d", maxSeen, maxUnflushed)
	}
	if folded >= float64(published) {
		t.Errorf("the fold pulled all %d events while the API server was away: nothing held it back", published)
	}
	t.Logf("API server away %s: fold paused at %v unflushed objects, %v of %d events folded; peak RSS %.0f MiB before, %.0f MiB at the end of the outage",
		length, maxSeen, folded, published, rssBefore, rssDown)

	if err := cp.StartAPIServer(); err != nil {
		t.Fatal(err)
	}
	restarted = true
	want, snap := expect(t, jsc)
	recovered, lost := converge(t, ns, want, 10*time.Minute)
	harness.Eventually(t, time.Minute, "the manager is ready again", m.Ready)
	if m.Metric(t, "cellos_operator_ingest_paused") != 0 {
		t.Errorf("still paused after catching up")
	}
	if !m.Running() {
		t.Errorf("the manager exited: %v", m.Err())
	}
	regressed := rec.mustHold(t, want, snap)
	results.add(row{
		Scenario: "API server outage", Runs: 1, Events: int(want.Last), Lost: lost, Regressed: regressed,
		Recover: durations([]time.Duration{recovered}), PeakMiB: m.PeakMiB(),
		Notes: fmt.Sprintf("kube-apiserver stopped %s while %d events arrived; fold paused at %v unflushed objects (--max-unflushed-objects=%d) with %v of %d events folded; RSS %.0f MiB before, %.0f MiB at the end of the outage; one manager process throughout",
			length, during, maxSeen, maxUnflushed, folded, published, rssBefore, rssDown),
	})
}

// The same outage with --leader-elect, as the chart runs the operator: the
// leader cannot renew its Lease while the API server is away. A process
// that exits is started again after 10s, then 20s, as a kubelet would
// (CrashLoopBackOff); the test counts the exits. It must catch up when the
// API server is back and then stay up: at most one exit per outage, and
// none after it, is no crash loop.
func TestAPIServerOutageWithLeaderElection(t *testing.T) {
	// Longer than the renew deadline (10s) plus the first restart's 10s,
	// so that the leader loses its Lease and a process starts while the
	// API server is away.
	length := seconds("APISERVER_LEADER_ELECT_OUTAGE_SECONDS", 25, 30)
	ns, js, jsc, rec := newScenario(t)
	msgs := generate(33, 4000, adversarial)
	cfg := managerConfig{natsURL: js.URL(), namespace: ns, args: []string{"--leader-elect"}}
	m := startManager(t, cfg)
	all := fleet{m}
	harness.Eventually(t, time.Minute, "the manager leads", func() error { return m.Leads() })
	publish(t, jsc, msgs[:2000], 0)
	want, _ := expect(t, jsc)
	converge(t, ns, want, 5*time.Minute)

	down := time.Now()
	if err := cp.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	publish(t, jsc, msgs[2000:], 0)
	exits := 0
	var exitedAfter time.Duration
	var reasons []string
	backoff := 10 * time.Second
	restart := func() {
		exits++
		why := "?"
		for _, line := range strings.Split(m.Logs(), "\n") {
			if strings.Contains(line, `"Operator failed"`) {
				if i := strings.Index(line, `"error":"`); i >= 0 {
					why = strings.SplitN(line[i+9:], `"`, 2)[0]
				}
			}
		}
		reasons = append(reasons, fmt.Sprintf("%s after %s: %s", m.Name, exitedAfter.Round(100*time.Millisecond), why))
		t.Logf("%s exited %s into the outage: %v: %s", m.Name, exitedAfter.Round(100*time.Millisecond), m.Err(), why)
		time.Sleep(backoff)
		backoff *= 2
		cfg.name = fmt.Sprintf("manager-%d", exits)
		m = startManager(t, cfg)
		all = append(all, m)
	}
	for time.Since(down) < length {
		if !m.Running() {
			exitedAfter = time.Since(down)
			restart()
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err := cp.StartAPIServer(); err != nil {
		t.Fatal(err)
	}
	up := time.Now()
	duringOutage := exits
	want, snap := expect(t, jsc)
	for deadline := time.Now().Add(10 * time.Minute); ; {
		if !m.Running() {
			exitedAfter = time.Since(down)
			restart()
		}
		if cursorReached(t.Context(), ns, want) == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	recovered, lost := converge(t, ns, want, 5*time.Minute)
	recovered += time.Since(up) - recovered
	// Losing the Lease ends the leader: controller-runtime's way, so that
	// two replicas never both write. The process started next waits for
	// the API server rather than exit.
	if exits > 1 {
		t.Errorf("the manager exited %d times (a kubelet would show CrashLoopBackOff), %d of them after the API server was back:\n%s",
			exits, exits-duringOutage, strings.Join(reasons, "\n"))
	}
	regressed := rec.mustHold(t, want, snap)
	results.add(row{
		Scenario: "API server outage, --leader-elect", Runs: 1, Events: int(want.Last), Lost: lost, Regressed: regressed,
		Recover: durations([]time.Duration{recovered}), PeakMiB: all.peakMiB(),
		Notes: fmt.Sprintf("kube-apiserver stopped %s; the manager exited %d times (restarted after 10s, 20s, ..., as a kubelet would): %s; recovery: API server back to every object and the cursor caught up", length, exits, strings.Join(reasons, "; ")),
	})
}
