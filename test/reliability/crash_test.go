package reliability

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"cellos.dev/cellos-operator/test/harness"
)

// fleet is every manager process a scenario ran, for the peak memory.
type fleet []*manager

func (f fleet) peakMiB() float64 {
	var p float64
	for _, m := range f {
		p = max(p, m.PeakMiB())
	}
	return p
}

// Crash anywhere: SIGKILL the operator at many moments while an adversarial
// stream arrives, restart it each time, and check that nothing is lost and
// nothing regressed. The moments are drawn among: any time; during start
// (cache sync, replay); right after a status write, before the cursor
// commit that would cover it; in the middle of a burst of status writes;
// right after a cursor commit.
func TestCrashAnywhere(t *testing.T) {
	events := knob("CRASH_EVENTS", 2000, 20000)
	kills := knob("CRASH_KILLS", 5, 25)
	ns, js, jsc, rec := newScenario(t)
	msgs := generate(11, events, adversarial)
	t.Logf("stream: %v", kinds(msgs))

	// The stream arrives over about as long as the kills take, so that they
	// land while events are folded and written, not after.
	rate := float64(events) / (float64(kills) * 2.5)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	published := make(chan error, 1)
	go func() { published <- publishCtx(ctx, jsc, msgs, rate) }()

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
	t.Logf("kill moments drawn with seed %d", rng.Uint64())
	modes := []string{"during start", "any time", "after a status write", "in a burst of writes", "after a cursor commit"}
	var all fleet
	count := map[string]int{}
	uncommitted := 0
	for i := range kills {
		m := startManager(t, managerConfig{name: fmt.Sprintf("manager-%d", i), natsURL: js.URL(), namespace: ns})
		all = append(all, m)
		mode := modes[i%len(modes)]
		switch mode {
		case "during start":
			time.Sleep(time.Duration(100+rng.IntN(1500)) * time.Millisecond)
		case "any time":
			time.Sleep(time.Duration(300+rng.IntN(4700)) * time.Millisecond)
		case "after a status write":
			waitFor(m, func() bool { return m.Ready() == nil })
			seen := rec.statusChanges.Load()
			if !waitFor(m, func() bool { return rec.statusChanges.Load() > seen }) {
				mode += " (none came)"
			}
		case "in a burst of writes":
			waitFor(m, func() bool { return m.Ready() == nil })
			if !waitFor(m, burst(rec, 5, 300*time.Millisecond)) {
				mode += " (none came)"
			}
		case "after a cursor commit":
			waitFor(m, func() bool { return m.Ready() == nil })
			seen := rec.cursorCommits.Load()
			if !waitFor(m, func() bool { return rec.cursorCommits.Load() > seen }) {
				mode += " (none came)"
			}
		}
		if m.ExitedUnasked() {
			t.Fatalf("%s exited on its own: %v\n%s", m.Name, m.Err(), harness.Tail(m.Logs(), 40))
		}
		// A status ahead of the cursor: the kill lands between a write and
		// the commit that covers it.
		if rec.lastSeq.Load() > rec.cursorSeq.Load() {
			uncommitted++
		}
		m.Kill()
		count[mode]++
	}
	t.Logf("kills: %v; %d of them with status written beyond the committed cursor", count, uncommitted)
	if err := <-published; err != nil {
		t.Fatal(err)
	}

	final := startManager(t, managerConfig{name: "manager-final", natsURL: js.URL(), namespace: ns})
	all = append(all, final)
	want, snap := expect(t, jsc)
	recovered, lost := converge(t, ns, want, 10*time.Minute)
	regressed := rec.mustHold(t, want, snap)
	results.add(row{
		Scenario: "Crash anywhere (SIGKILL)", Runs: kills, Events: int(want.Last), Lost: lost, Regressed: regressed,
		Recover: durations([]time.Duration{recovered}), PeakMiB: all.peakMiB(),
		Notes: fmt.Sprintf("%d kills (%d with status written beyond the cursor); recovery measured from the last restart", kills, uncommitted),
	})
}

// killMomentTimeout bounds the wait for a kill's moment: a manager that is
// not ready, or writes nothing, within it is killed all the same.
const killMomentTimeout = 15 * time.Second

// waitFor polls cond every 2ms until it holds, the manager exits, or
// killMomentTimeout passes; it tells whether cond held.
func waitFor(m *manager, cond func() bool) bool {
	deadline := time.Now().Add(killMomentTimeout)
	for time.Now().Before(deadline) && m.Running() {
		if cond() {
			return true
		}
		time.Sleep(2 * time.Millisecond)
	}
	return false
}

// burst holds once n status changes were seen within window.
func burst(rec *recorder, n int64, window time.Duration) func() bool {
	type mark struct {
		at    time.Time
		count int64
	}
	var marks []mark
	return func() bool {
		now := time.Now()
		c := rec.statusChanges.Load()
		marks = append(marks, mark{now, c})
		for len(marks) > 0 && now.Sub(marks[0].at) > window {
			marks = marks[1:]
		}
		return c-marks[0].count >= n
	}
}
