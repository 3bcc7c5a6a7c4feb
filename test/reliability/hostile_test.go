package reliability

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"cellos.dev/cellos-operator/internal/fold"
	"cellos.dev/cellos-operator/test/harness"
)

// A hostile publisher, one who may publish anything to cellos.events.>,
// mixed with a normal stream: payloads of almost 1 MiB (a formation's
// document, a cell's specId), many distinct cell ids, ids of 10 KB, JSON
// nested past serde_json's limit and numbers beyond f64. Every well-formed
// event is reflected, nothing crashes, every refused event is counted, and
// the operator's peak RSS stays under the chart's memory limit: nothing a
// publisher sends is kept whole.
func TestHostilePublisher(t *testing.T) {
	big := knob("HOSTILE_BIG_PAYLOADS", 100, 400)
	manyIDs := knob("HOSTILE_CELL_IDS", 300, 100000)
	ns, js, jsc, rec := newScenario(t)

	normal := generate(47, knob("HOSTILE_NORMAL_EVENTS", 600, 5000), mix{})
	var hostile []msg
	for i := range big {
		hostile = append(hostile, bigDocument(i), bigSpecID(i))
	}
	for i := range manyIDs {
		hostile = append(hostile, cellStarted(fmt.Sprintf("many-%06d", i), "many", "hostile/many-ids"))
	}
	for i := range 50 {
		hostile = append(hostile,
			cellStarted(fmt.Sprintf("%d-%s", i, strings.Repeat("i", 10<<10)), "long", "hostile/long-id"),
			deeplyNested(i),
			hugeNumber(i))
	}
	msgs := interleave(rand.New(rand.NewPCG(47, 0x686f)), normal, hostile)
	t.Logf("stream: %v", kinds(msgs))

	m := startManager(t, managerConfig{natsURL: js.URL(), namespace: ns})
	start := time.Now()
	publish(t, jsc, msgs, 0)
	want, snap := expect(t, jsc)
	took, lost := converge(t, ns, want, 15*time.Minute)
	took += time.Since(start) - took

	// The oracle's own reading: the bounds refuse what they must, and
	// nothing else.
	_, outs := harness.Fold(snap.Messages)
	refused := 0
	for i, out := range outs {
		kind := msgs[i].kind
		wantResult := fold.ResultApplied
		switch kind {
		case "hostile/big-spec-id", "hostile/long-id", "hostile/deep", "hostile/huge-number":
			wantResult = fold.ResultRejected
		}
		if out.Result != wantResult {
			t.Errorf("%s event at %d: %s (%.200s), want %s", kind, out.Seq, out.Result, out.Reason, wantResult)
		}
		if len(out.Reason) > 1024 {
			t.Errorf("%s event at %d: a reason of %d bytes", kind, out.Seq, len(out.Reason))
		}
		if out.Result == fold.ResultRejected {
			refused++
		}
	}
	all, err := m.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	if got := harness.Sum(all, "cellos_operator_events_total"); got != float64(len(msgs)) {
		t.Errorf("cellos_operator_events_total adds up to %v, want %d", got, len(msgs))
	}
	rejected := all[`cellos_operator_events_total{family="other",result="rejected"}`] +
		all[`cellos_operator_events_total{family="formation",result="rejected"}`] +
		all[`cellos_operator_events_total{family="cell",result="rejected"}`]
	if rejected != float64(refused) {
		t.Errorf("%v events counted as rejected, want %d", rejected, refused)
	}
	// The chart's memory limit: the fold keeps no payload whole, and the
	// consumer buffers a bounded number of bytes, not of messages.
	const bound = 512 // MiB
	if p := m.PeakMiB(); p > bound {
		t.Errorf("peak RSS %.0f MiB, above %d MiB, with %d payloads of almost 1 MiB in the stream", p, bound, 2*big)
	}
	if m.ExitedUnasked() {
		t.Errorf("the manager exited: %v", m.Err())
	}
	regressed := rec.mustHold(t, want, snap)
	results.add(row{
		Scenario: "Hostile publisher", Runs: 1, Events: len(msgs), Lost: lost, Regressed: regressed,
		Recover: durations([]time.Duration{took}), PeakMiB: m.PeakMiB(),
		Notes: fmt.Sprintf("%d payloads of almost 1 MiB (documents and specIds), %d distinct cell ids, 50 each of 10 KB ids, JSON nested 128 deep and numbers beyond f64, among %d normal events; %d refused; time: from the first publish to every object and the cursor caught up",
			2*big, manyIDs, len(normal), refused),
	})
}

// almostMiB is the size of the hostile payloads: under the server's and the
// operator's 1 MiB limit on a message, with room for the envelope.
const almostMiB = 1<<20 - 4<<10

// hostileEnvelope is a CloudEvent of type typ with data, as a supervisor
// would publish it.
func hostileEnvelope(i int, typ string, data map[string]any) []byte {
	return mustJSON(map[string]any{
		"specversion": "1.0", "id": fmt.Sprintf("urn:cellos:event:hostile-%s-%d", typ, i),
		"source": "/cellos/supervisor/hostile", "type": typ,
		"time": time.Date(2027, 5, 1, 10, 0, i%60, 0, time.UTC).Format(time.RFC3339),
		"data": data,
	})
}

// bigDocument is a well-formed created event whose document is almost
// 1 MiB: applied, with its document dropped from status.
func bigDocument(i int) msg {
	id := fmt.Sprintf("0b0e8f4c-7d1a-4c2e-9f3b-%012x", 0xb16d0c0000+i)
	data := map[string]any{"formationId": id, "formationName": fmt.Sprintf("big-%d", i), "blob": strings.Repeat("d", almostMiB)}
	return msg{subject: "cellos.events.formation." + id, data: hostileEnvelope(i, fold.FormationTypePrefix+fold.PhaseCreated, data), kind: "hostile/big-document"}
}

// bigSpecID is a cell event whose specId is almost 1 MiB: refused.
func bigSpecID(i int) msg {
	data := map[string]any{"cellId": fmt.Sprintf("big-spec-%d", i), "specId": strings.Repeat("s", almostMiB)}
	return msg{subject: "cellos.events.cell.hostile", data: hostileEnvelope(i, fold.TypeCellStarted, data), kind: "hostile/big-spec-id"}
}

// cellStarted is a started event of cell id.
func cellStarted(id, specID, kind string) msg {
	data := map[string]any{"cellId": id, "specId": specID}
	return msg{subject: "cellos.events.cell.hostile", data: hostileEnvelope(len(id), fold.TypeCellStarted, data), kind: kind}
}

// deeplyNested is a cell event with a member nested 128 levels deep, which
// serde_json refuses.
func deeplyNested(i int) msg {
	payload := fmt.Sprintf(`{"type":%q,"data":{"cellId":"deep-%d","extra":%s%s}}`,
		fold.TypeCellStarted, i, strings.Repeat("[", 128), strings.Repeat("]", 128))
	return msg{subject: "cellos.events.cell.hostile", data: []byte(payload), kind: "hostile/deep"}
}

// hugeNumber is a cell event carrying a number beyond f64, which serde_json
// refuses: 1e400, or an integer of 401 digits.
func hugeNumber(i int) msg {
	number := "1e400"
	if i%2 == 1 {
		number = "1" + strings.Repeat("0", 400)
	}
	payload := fmt.Sprintf(`{"type":%q,"data":{"cellId":"huge-%d","exitCode":%s}}`, fold.TypeCellCommandCompleted, i, number)
	return msg{subject: "cellos.events.cell.hostile", data: []byte(payload), kind: "hostile/huge-number"}
}

// interleave mixes b into a at random places, keeping each one's order.
func interleave(rng *rand.Rand, a, b []msg) []msg {
	out := make([]msg, 0, len(a)+len(b))
	for len(a) > 0 || len(b) > 0 {
		if len(b) == 0 || (len(a) > 0 && rng.IntN(len(a)+len(b)) < len(a)) {
			out, a = append(out, a[0]), a[1:]
		} else {
			out, b = append(out, b[0]), b[1:]
		}
	}
	return out
}
