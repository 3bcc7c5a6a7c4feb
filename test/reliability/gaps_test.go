package reliability

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	natsjs "github.com/nats-io/nats.go/jetstream"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"cellos.dev/cellos-operator/internal/cursor"
	"cellos.dev/cellos-operator/internal/ingest"
	"cellos.dev/cellos-operator/test/harness"
	"cellos.dev/cellos-operator/test/localenv"
)

// Stream gaps: the stream purged below the cursor, and deleted and created
// again under its name, each while the operator runs and while it is down.
// Each must be detected, at start and while running, and surfaced as a
// Warning Event, a metric, a log line and a state on the cursor ConfigMap;
// the operator then resyncs as docs/architecture.md says (every start folds
// the stream as it is from its first event; a recreated stream is folded
// from its first event as soon as it is noticed), never skips silently and
// never crash-loops.
//
// After a purge, ids that only purged events named keep the status they
// had, and so do ids only a deleted stream named ("Objects only the old
// stream named keep their last status"): the oracle allows them as they
// were, and nothing else.
func TestStreamGaps(t *testing.T) {
	events := knob("GAPS_EVENTS", 300, 3000)
	// While running, a periodic check must notice: the consumer checks
	// the stream every 15s. At start, the fold from the first event does,
	// in the first seconds.
	detect := seconds("GAPS_DETECT_SECONDS", 16, 40)
	atStart := seconds("GAPS_DETECT_AT_START_SECONDS", 8, 40)
	var recoveries []time.Duration
	var peak float64
	var lost, regressed, runs, total int
	done := func(t *testing.T, g *gapRun, recovered time.Duration, l int) {
		t.Helper()
		regressed += g.rec.mustHold(t, g.want, g.snap)
		recoveries = append(recoveries, recovered)
		lost += l
		runs++
		total += int(g.want.Last)
		for _, m := range g.managers {
			peak = max(peak, m.PeakMiB())
		}
	}

	// Not side by side: the operators would share the awkward cell ids of
	// the generated streams, and placement finds a Cell by its id in any
	// namespace.
	t.Cleanup(func() {
		results.add(row{
			Scenario: "Stream gaps", Runs: runs, Events: total, Lost: lost, Regressed: regressed,
			Recover: durations(recoveries), PeakMiB: peak,
			Notes: "purge below the cursor and delete+recreate, each while running and while down; recovery: from the restart (or, for the recreation while running, from the deletion) to every object equal to the fold of the stream as it is and the cursor at its end",
		})
	})

	t.Run("purged below the cursor while running", func(t *testing.T) {
		g := startGapRun(t, 51, events)
		seen := g.want
		purged := g.purgeHalf(t)
		fault := time.Now()
		// While it runs, the projection keeps what it folded; new events
		// apply on top of it.
		g.publishMore(t, 52, events/4)
		g.want, g.snap = expect(t, g.jsc)
		running := seen.State
		for _, m := range g.snap.Messages[len(g.snap.Messages)-events/4:] {
			running.Apply(m.Seq, m.Time, m.Subject, m.Header, m.Data)
		}
		converge(t, g.ns, harness.Expectation{Stream: g.want.Stream, Last: g.want.Last, State: running}, 2*time.Minute)
		t.Logf("caught up with the events after the purge %s after it", time.Since(fault).Round(100*time.Millisecond))
		g.expectSurfaced(t, detect, "gap", fmt.Sprintf("1-%d", purged))
		// A restart folds the stream as it is now: purged ids keep their status.
		g.restart(t)
		g.want.Leftover = &harness.Expectation{Stream: seen.Stream, Last: seen.Last, State: running}
		recovered, l := converge(t, g.ns, g.want, 2*time.Minute)
		g.expectSurfaced(t, atStart, "gap", fmt.Sprintf("1-%d", purged))
		done(t, g, recovered, l)
	})

	t.Run("purged below the cursor while down", func(t *testing.T) {
		g := startGapRun(t, 53, events)
		before := g.want
		harness.Stop(t, g.managers[0])
		purged := g.purgeHalf(t)
		g.restart(t)
		g.want.Leftover = &before
		recovered, l := converge(t, g.ns, g.want, 2*time.Minute)
		g.expectSurfaced(t, atStart, "gap", fmt.Sprintf("1-%d", purged))
		done(t, g, recovered, l)
	})

	t.Run("deleted and recreated while running", func(t *testing.T) {
		g := startGapRun(t, 55, events)
		before := g.want
		fault := time.Now()
		g.recreate(t, 55, events/2)
		g.want.Leftover = &before
		_, l := converge(t, g.ns, g.want, 2*time.Minute)
		recovered := time.Since(fault)
		g.expectSurfaced(t, detect, "recreated", "")
		done(t, g, recovered, l)
	})

	t.Run("deleted and recreated while down", func(t *testing.T) {
		g := startGapRun(t, 57, events)
		before := g.want
		harness.Stop(t, g.managers[0])
		g.recreate(t, 57, events/2)
		g.restart(t)
		g.want.Leftover = &before
		recovered, l := converge(t, g.ns, g.want, 2*time.Minute)
		g.expectSurfaced(t, atStart, "recreated", "")
		done(t, g, recovered, l)
	})
}

// noCheckpoints makes every start fold the stream as it is: the scenarios
// above are of a restart over what a purge left, which a checkpoint of the
// fold before the purge would not see (test/e2e/checkpoint_test.go tests
// starts from one).
var noCheckpoints = []string{"--checkpoint-interval=0"}

// gapRun is one operator projecting one stream in its own namespace.
type gapRun struct {
	ns       string
	js       *localenv.JetStreamServer
	jsc      natsjs.JetStream
	rec      *recorder
	managers []*manager
	want     harness.Expectation
	snap     harness.Snapshot
}

// startGapRun projects a generated stream of n events and waits until
// every object equals its fold.
func startGapRun(t *testing.T, seed uint64, n int) *gapRun {
	t.Helper()
	g := &gapRun{ns: newNamespace(t), js: localenv.StartJetStream(t)}
	_, g.jsc = g.js.Connect(t)
	g.rec = record(t, g.ns)
	// After a purge, a resync may turn a Cell back to Pending, and its
	// Formation's counts with it: status is the fold of the stream as it is.
	g.rec.allowCounts = true
	g.rec.addStream(ensureStream(t, g.jsc))
	g.managers = []*manager{startManager(t, managerConfig{natsURL: g.js.URL(), namespace: g.ns, args: noCheckpoints})}
	publish(t, g.jsc, generate(seed, n, adversarial), 0)
	g.want, g.snap = expect(t, g.jsc)
	converge(t, g.ns, g.want, 2*time.Minute)
	return g
}

func (g *gapRun) manager() *manager { return g.managers[len(g.managers)-1] }

// restart starts a new manager (the last one was stopped, or is stopped now).
func (g *gapRun) restart(t *testing.T) {
	t.Helper()
	harness.Stop(t, g.manager())
	g.managers = append(g.managers, startManager(t, managerConfig{name: fmt.Sprintf("manager-%d", len(g.managers)), natsURL: g.js.URL(), namespace: g.ns, args: noCheckpoints}))
	g.want, g.snap = expect(t, g.jsc)
}

// purgeHalf purges the first half of the stream, below the cursor, and
// returns the last sequence purged.
func (g *gapRun) purgeHalf(t *testing.T) uint64 {
	t.Helper()
	ctx := context.Background()
	p, _, err := harness.Cursor(ctx, cp.Client, g.ns)
	if err != nil {
		t.Fatal(err)
	}
	last := p.Sequence / 2
	s, err := g.jsc.Stream(ctx, streamName)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Purge(ctx, natsjs.WithPurgeSequence(last+1)); err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.FirstSeq != last+1 {
		t.Fatalf("purged to %d, the stream starts at %d", last, info.State.FirstSeq)
	}
	t.Logf("purged sequences 1 to %d, below the cursor at %d", last, p.Sequence)
	return last
}

// publishMore publishes n more generated events.
func (g *gapRun) publishMore(t *testing.T, seed uint64, n int) {
	t.Helper()
	publish(t, g.jsc, generate(seed, n, adversarial), 0)
}

// recreate deletes the stream and creates it again with n events of the
// same generated lifecycles, so that ids come back at lower sequences,
// while the old statuses claim higher ones.
func (g *gapRun) recreate(t *testing.T, seed uint64, n int) {
	t.Helper()
	ctx := context.Background()
	if err := g.jsc.DeleteStream(ctx, streamName); err != nil {
		t.Fatal(err)
	}
	g.rec.addStream(ensureStream(t, g.jsc))
	publish(t, g.jsc, generate(seed, n, adversarial), 0)
	g.want, g.snap = expect(t, g.jsc)
}

// expectSurfaced checks that the running manager surfaced the gap (what is
// "gap" or "recreated") within timeout: a Warning Event, its metric, a log
// line, and its state on the cursor ConfigMap. lastGap is the range a gap
// must leave on the cursor.
func (g *gapRun) expectSurfaced(t *testing.T, timeout time.Duration, what, lastGap string) {
	t.Helper()
	m := g.manager()
	type channel struct {
		name string
		ok   func() bool
	}
	var channels []channel
	switch what {
	case "gap":
		channels = []channel{
			{"Warning Event " + ingest.StreamGapReason, func() bool {
				for _, e := range warningEvents(t, g.ns, ingest.StreamGapReason) {
					if lastSeen(e).After(m.Started) && strings.Contains(e.Message, strings.Replace(lastGap, "-", " to ", 1)) {
						return true
					}
				}
				return false
			}},
			{"metric cellos_operator_stream_gaps_total", func() bool { return metricAbove(m, "cellos_operator_stream_gaps_total", 0) }},
			{"log line", func() bool { return strings.Contains(m.Logs(), "The stream has a gap") }},
			{"cursor key " + cursor.LastGapKey + "=" + lastGap, func() bool {
				p, _, err := harness.Cursor(context.Background(), cp.Client, g.ns)
				return err == nil && p.LastGap == lastGap
			}},
		}
	case "recreated":
		channels = []channel{
			{"Warning Event about the recreated stream", func() bool {
				return len(recreationEvents(t, g.ns, m.Started)) > 0
			}},
			{"metric cellos_operator_stream_recreations_total", func() bool { return metricAbove(m, "cellos_operator_stream_recreations_total", 0) }},
			{"log line", func() bool { return strings.Contains(m.Logs(), "The stream was recreated") }},
			{"cursor of the new stream", func() bool {
				p, _, err := harness.Cursor(context.Background(), cp.Client, g.ns)
				return err == nil && p.StreamCreated.Equal(g.want.Stream.Created) && p.Stream == g.want.Stream.Name
			}},
		}
	}
	deadline := time.Now().Add(timeout)
	var missing []string
	for {
		missing = missing[:0]
		for _, c := range channels {
			if !c.ok() {
				missing = append(missing, c.name)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if m.ExitedUnasked() {
		t.Fatalf("%s exited: %v\n%s", m.Name, m.Err(), harness.Tail(m.Logs(), 40))
	}
	if len(missing) > 0 {
		t.Errorf("stream %s, %s for %s: not surfaced as %s", what, map[bool]string{true: "after a restart", false: "while running"}[len(g.managers) > 1], timeout, strings.Join(missing, ", "))
	} else {
		t.Logf("stream %s surfaced by every channel", what)
	}
}

// recreationEvents lists the Warning Events of ns seen since since that
// say the stream was recreated.
func recreationEvents(t *testing.T, ns string, since time.Time) []string {
	t.Helper()
	var list corev1.EventList
	if err := cp.Client.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range list.Items {
		if e.Type == corev1.EventTypeWarning && lastSeen(e).After(since) && strings.Contains(strings.ToLower(e.Reason+" "+e.Message), "recreat") {
			out = append(out, e.Reason+": "+e.Message)
		}
	}
	return out
}

// lastSeen is when an Event was last recorded.
func lastSeen(e corev1.Event) time.Time {
	switch {
	case e.Series != nil:
		return e.Series.LastObservedTime.Time
	case !e.EventTime.IsZero():
		return e.EventTime.Time
	case !e.LastTimestamp.IsZero():
		return e.LastTimestamp.Time
	}
	return e.CreationTimestamp.Time
}

// metricAbove tells whether the manager serves series above v.
func metricAbove(m *manager, series string, v float64) bool {
	all, err := m.Metrics()
	return err == nil && all[series] > v
}
