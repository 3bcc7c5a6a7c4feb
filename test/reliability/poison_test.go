package reliability

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"cellos.dev/cellos-operator/internal/fold"
	"cellos.dev/cellos-operator/internal/store"
	"cellos.dev/cellos-operator/test/harness"
)

// Poison input through the live operator: thousands of random and malformed
// payloads (not JSON, truncated, huge, deeply nested, wrong types, bad
// UUIDs, bad UTF-8, broken binary-mode headers) mixed with valid events,
// some of them on cell ids that are no valid object name (upper case, 300
// characters, non-ASCII, slashes, empty). No panic, no blocked stream,
// every payload counted, every valid event applied, and each id on an
// object of its own.
func TestPoisonInput(t *testing.T) {
	poison := knob("POISON_PAYLOADS", 1000, 10000)
	ns, js, jsc, rec := newScenario(t)
	var msgs []msg
	for seed := uint64(41); count(msgs, "poison/") < poison; seed++ {
		msgs = append(msgs, generate(seed, 2*(poison-count(msgs, "poison/"))+10, mix{poison: 0.5, duplicate: 0.03, binary: 0.05, respelled: 0.05, awkwardID: 0.1})...)
	}
	t.Logf("stream: %v", kinds(msgs))

	m := startManager(t, managerConfig{natsURL: js.URL(), namespace: ns})
	start := time.Now()
	publish(t, jsc, msgs, 0)
	want, snap := expect(t, jsc)
	took, lost := converge(t, ns, want, 10*time.Minute)
	took += time.Since(start) - took

	// The oracle's own reading: every valid event applies, no poison does.
	_, outs := harness.Fold(snap.Messages)
	want1 := map[string]int{}
	for i, out := range outs {
		want1[`{family="`+string(out.Family)+`",result="`+string(out.Result)+`"}`]++
		m := msgs[i]
		if m.poison() && out.Result == fold.ResultApplied {
			t.Errorf("poison %s at %d applied: %.120q", m.kind, out.Seq, m.data)
		}
		if !m.poison() && out.Result != fold.ResultApplied {
			t.Errorf("%s event at %d %s (%s): %.120q", m.kind, out.Seq, out.Result, out.Reason, m.data)
		}
	}
	// Every payload counted, as the fold counts it.
	all, err := m.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	if got := harness.Sum(all, "cellos_operator_events_total"); got != float64(len(msgs)) {
		t.Errorf("cellos_operator_events_total adds up to %v, want %d", got, len(msgs))
	}
	for labels, n := range want1 {
		if got := all["cellos_operator_events_total"+labels]; got != float64(n) {
			t.Errorf("cellos_operator_events_total%s = %v, want %d", labels, got, n)
		}
	}
	rejected := want1[`{family="other",result="rejected"}`] + want1[`{family="formation",result="rejected"}`] + want1[`{family="cell",result="rejected"}`]
	// The log samples a flood, as docs/operations.md says: the first 100
	// lines of a second are all kept; the metric above counts every one.
	if got := strings.Count(m.Logs(), `"msg":"Rejected an event"`); got < min(rejected, 100) {
		t.Errorf("%d log lines say an event was rejected, want at least %d of the %d", got, min(rejected, 100), rejected)
	}
	// Events are sent in the background: give them a moment.
	harness.Eventually(t, 30*time.Second, "a Warning Event RejectedEvent", func() error {
		if len(warningEvents(t, ns, "RejectedEvent")) == 0 {
			return fmt.Errorf("none")
		}
		return nil
	})
	// Each object's name is its id's, and no two ids share one.
	names := map[string]string{}
	for id := range want.State.Cells {
		n := store.ObjectName(id)
		if other, ok := names[n]; ok {
			t.Errorf("cells %.60q and %.60q both named %s", id, other, n)
		}
		names[n] = id
	}
	if m.ExitedUnasked() {
		t.Errorf("the manager exited: %v", m.Err())
	}
	regressed := rec.mustHold(t, want, snap)
	results.add(row{
		Scenario: "Poison input", Runs: 1, Events: len(msgs), Lost: lost, Regressed: regressed,
		Recover: durations([]time.Duration{took}), PeakMiB: m.PeakMiB(),
		Notes: fmt.Sprintf("%d poison payloads of 10 kinds among %d messages, %d of them valid events on %d ids that are no object name; time: from the first publish to every object and the cursor caught up",
			count(msgs, "poison/"), len(msgs), count(msgs, "awkward-id"), len(awkwardIDs)),
	})
}

// count counts the messages whose kind starts with prefix.
func count(msgs []msg, prefix string) int {
	n := 0
	for _, m := range msgs {
		if strings.HasPrefix(m.kind, prefix) {
			n++
		}
	}
	return n
}

// An id that spells another id's object name (its sanitized form and hash
// suffix, which is itself a valid name) is a valid id: both cells must be
// projected, each on an object of its own. Both orders are tried: the
// sanitized id first, and the one that spells its name first.
func TestIDSpellingAnothersObjectName(t *testing.T) {
	ns, js, jsc, rec := newScenario(t)
	event := func(typ, id string) msg {
		return msg{subject: "cellos.events.cell.x", kind: "valid", data: mustJSON(map[string]any{
			"specversion": "1.0", "id": typ + id, "source": "/s", "type": typ, "time": "2027-05-01T08:00:00Z",
			"data": map[string]any{"cellId": id, "specId": "spec-" + id},
		})}
	}
	a, c := "CELL-Upper-Case", "Another/Cell"
	b, d := store.ObjectName(a), store.ObjectName(c)
	msgs := []msg{
		event(fold.TypeCellStarted, a), event(fold.TypeCellStarted, b), // a first
		event(fold.TypeCellStarted, d), event(fold.TypeCellStarted, c), // d first
		event(fold.TypeCellDestroyed, a), event(fold.TypeCellDestroyed, b),
		event(fold.TypeCellDestroyed, c), event(fold.TypeCellDestroyed, d),
	}
	m := startManager(t, managerConfig{natsURL: js.URL(), namespace: ns})
	publish(t, jsc, msgs, 0)
	want, snap := expect(t, jsc)
	// Each id on one Cell of its own, and the cursor at the end.
	var bad []string
	var stuck error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		var err error
		if bad, err = harness.Mismatches(t.Context(), cp.Client, ns, want); err != nil {
			t.Fatal(err)
		}
		if stuck = cursorReached(t.Context(), ns, want); len(bad) == 0 && stuck == nil {
			break
		}
	}
	if len(bad) > 0 || stuck != nil {
		t.Fatalf("cells whose id spells another's object name are not each projected (lag %v):\n%s\n%v",
			m.Metric(t, "cellos_operator_lag_events"), strings.Join(bad, "\n"), stuck)
	}
	if m.ExitedUnasked() {
		t.Errorf("the manager exited: %v", m.Err())
	}
	rec.mustHold(t, want, snap)
}
