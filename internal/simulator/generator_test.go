package simulator_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/internal/fold"
	"cellos.dev/cellos-operator/internal/simulator"
)

var testStart = time.Date(2026, 11, 13, 13, 52, 23, 0, time.UTC)

// decoded is what the tests read back from a payload.
type decoded struct {
	SpecVersion     string `json:"specversion"`
	ID              string `json:"id"`
	Source          string `json:"source"`
	Type            string `json:"type"`
	Time            string `json:"time"`
	DataContentType string `json:"datacontenttype"`
	Subject         string `json:"subject"`
	Data            struct {
		FormationID   string `json:"formationId"`
		FormationName string `json:"formationName"`
		CellID        string `json:"cellId"`
		SpecID        string `json:"specId"`
		RunID         string `json:"runId"`
		ExitCode      *int   `json:"exitCode"`
		Outcome       string `json:"outcome"`
	} `json:"data"`
}

func decode(t *testing.T, ev simulator.Event) decoded {
	t.Helper()
	var d decoded
	dec := json.NewDecoder(bytes.NewReader(ev.Payload))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("payload is not JSON: %v\n%s", err, ev.Payload)
	}
	return d
}

// TestGenerateFoldsIntoExpectedStates folds generated streams through the
// real projection and checks, event by event and at the end, that the state
// is one the cellos producers could have caused.
func TestGenerateFoldsIntoExpectedStates(t *testing.T) {
	tests := map[string]simulator.Config{
		"defaults":          {Seed: 1, Formations: 20},
		"no failures":       {Seed: 2, Formations: 30, CellsPerFormation: 4, InFlight: 5},
		"all fail":          {Seed: 3, Formations: 30, FailureRate: 1},
		"all degrade":       {Seed: 4, Formations: 30, DegradedRate: 1, FailureRate: 0.5},
		"one at a time":     {Seed: 5, Formations: 10, InFlight: 1, FailureRate: 0.3, DegradedRate: 0.3},
		"single cell":       {Seed: 6, Formations: 40, CellsPerFormation: 1, InFlight: 8, FailureRate: 0.5, DegradedRate: 0.5},
		"many cells":        {Seed: 7, Formations: 10, CellsPerFormation: 12, InFlight: 3, FailureRate: 0.5, DegradedRate: 0.5},
		"many in flight":    {Seed: 8, Formations: 200, InFlight: 50, FailureRate: 0.2, DegradedRate: 0.2},
		"chatty cells":      {Seed: 11, Formations: 10, CellsPerFormation: 4, CommandsPerCell: 20, FailureRate: 0.5, DegradedRate: 0.5},
		"sub-second start":  {Seed: 9, Formations: 3, Start: testStart.Add(700 * time.Millisecond)},
		"non-UTC start":     {Seed: 10, Formations: 3, Start: testStart.In(time.FixedZone("CET", 3600))},
		"seed zero allowed": {Seed: 0, Formations: 5},
	}
	for name, cfg := range tests {
		t.Run(name, func(t *testing.T) {
			if cfg.Start.IsZero() {
				cfg.Start = testStart
			}
			cells := cfg.CellsPerFormation
			if cells <= 0 {
				cells = simulator.DefaultCellsPerFormation
			}
			inFlight := cfg.InFlight
			if inFlight <= 0 {
				inFlight = simulator.DefaultInFlight
			}
			events := simulator.Generate(cfg)
			checkStream(t, cfg, cells, inFlight, events)
		})
	}
}

func checkStream(t *testing.T, cfg simulator.Config, cells, inFlight int, events []simulator.Event) {
	t.Helper()
	state := fold.NewState()
	ids := map[string]bool{}
	exit := map[string]int{}     // cell id → exit code
	commands := map[string]int{} // cell id → command.completed events
	perCell := max(cfg.CommandsPerCell, 1)
	cellsOf := map[string][]string{} // formation id → cell ids
	phases := map[string][]string{}  // formation id → phases in order
	inFlightNow, maxInFlight := 0, 0
	prev := cfg.Start.UTC().Truncate(time.Second)

	for i, ev := range events {
		seq := uint64(i + 1)
		d := decode(t, ev)
		checkEnvelope(t, ev, d, ids)
		at, err := time.Parse(time.RFC3339, d.Time)
		if err != nil || at.Location() != time.UTC || at.Nanosecond() != 0 {
			t.Fatalf("event %d: time %q is not whole UTC seconds in RFC 3339 (%v)", seq, d.Time, err)
		}
		if at.Before(prev) {
			t.Fatalf("event %d: time %s goes back from %s", seq, at, prev)
		}
		prev = at
		fid := d.Data.FormationID
		if ev.FormationID != fid {
			t.Fatalf("event %d: Event.FormationID %q, data.formationId %q", seq, ev.FormationID, fid)
		}

		// Causality, checked against the projection before the event.
		f := state.Formations[fid]
		if phase := ev.FormationPhase(); phase != "" {
			if want := "cellos.events.formation." + fid; ev.Subject != want {
				t.Fatalf("event %d: subject %q, want %q", seq, ev.Subject, want)
			}
			if d.Data.FormationName == "" || d.Data.FormationName != ev.FormationName {
				t.Fatalf("event %d: formationName %q, Event.FormationName %q", seq, d.Data.FormationName, ev.FormationName)
			}
			checkPhaseOrder(t, seq, phases[fid], phase)
			phases[fid] = append(phases[fid], phase)
			switch phase {
			case fold.PhaseCreated:
				inFlightNow++
				maxInFlight = max(maxInFlight, inFlightNow)
				if d.Source != "/cellos/server" {
					t.Errorf("event %d: created comes from %q, want the server", seq, d.Source)
				}
			case fold.PhaseCompleted, fold.PhaseFailed:
				inFlightNow--
				failed := false
				if len(cellsOf[fid]) != cells {
					t.Fatalf("event %d: formation %s ends with %d cells, want %d", seq, fid, len(cellsOf[fid]), cells)
				}
				for _, c := range cellsOf[fid] {
					cs := state.Cells[c]
					if cs.State != cellosv1.CellDestroyed {
						t.Fatalf("event %d: formation %s ends while cell %s is %s", seq, fid, c, cs.State)
					}
					failed = failed || exit[c] != 0
				}
				if failed != (phase == fold.PhaseFailed) {
					t.Fatalf("event %d: formation %s is %s, but a cell failed: %v", seq, fid, phase, failed)
				}
			}
		} else {
			if want := "cellos.events.cell." + fid[:8]; ev.Subject != want {
				t.Fatalf("event %d: subject %q, want %q", seq, ev.Subject, want)
			}
			if f == nil || f.Phase != cellosv1.FormationRunning {
				t.Fatalf("event %d: cell event %s while its formation is %+v", seq, ev.Type, f)
			}
			if d.Subject != "cell:"+d.Data.CellID {
				t.Errorf("event %d: envelope subject %q", seq, d.Subject)
			}
			c := state.Cells[d.Data.CellID]
			switch ev.Type {
			case fold.TypeCellStarted:
				if c != nil {
					t.Fatalf("event %d: cell %s started twice", seq, d.Data.CellID)
				}
				if len(phases[fid]) != 2 || phases[fid][1] != fold.PhaseLaunching {
					t.Fatalf("event %d: cell started after formation phases %v", seq, phases[fid])
				}
				cellsOf[fid] = append(cellsOf[fid], d.Data.CellID)
			case fold.TypeCellCommandCompleted:
				if c == nil || c.State != cellosv1.CellRunning || commands[d.Data.CellID] >= perCell {
					t.Fatalf("event %d: command %d completed on cell %+v", seq, commands[d.Data.CellID]+1, c)
				}
				if d.Data.ExitCode == nil {
					t.Fatalf("event %d: command completed without exitCode", seq)
				}
				if commands[d.Data.CellID]++; commands[d.Data.CellID] < perCell && *d.Data.ExitCode != 0 {
					t.Fatalf("event %d: command %d of %d exits %d; only the last may fail", seq, commands[d.Data.CellID], perCell, *d.Data.ExitCode)
				}
				exit[d.Data.CellID] = *d.Data.ExitCode
			case fold.TypeCellDestroyed:
				if c == nil || c.State != cellosv1.CellRunning || commands[d.Data.CellID] != perCell {
					t.Fatalf("event %d: destroyed after %d of %d commands completed: %+v", seq, commands[d.Data.CellID], perCell, c)
				}
			default:
				t.Fatalf("event %d: unexpected type %q", seq, ev.Type)
			}
		}

		out := state.Apply(seq, time.Time{}, ev.Subject, nil, ev.Payload)
		if out.Result != fold.ResultApplied {
			t.Fatalf("event %d %s: %s (%s)\n%s", seq, ev.Type, out.Result, out.Reason, ev.Payload)
		}
	}

	// The end state.
	if len(state.Formations) != cfg.Formations {
		t.Fatalf("%d formations, want %d", len(state.Formations), cfg.Formations)
	}
	if len(state.Cells) != cfg.Formations*cells {
		t.Fatalf("%d cells, want %d", len(state.Cells), cfg.Formations*cells)
	}
	if inFlight > 1 && cfg.Formations > 1 && maxInFlight < 2 {
		t.Errorf("at most %d formation in flight; want interleaving", maxInFlight)
	}
	if maxInFlight > inFlight {
		t.Errorf("%d formations in flight, more than InFlight %d", maxInFlight, inFlight)
	}
	failedFormations, degradedFormations := 0, 0
	for fid, f := range state.Formations {
		failed := false
		for _, id := range cellsOf[fid] {
			c := state.Cells[id]
			wantOutcome := "succeeded"
			if exit[id] != 0 {
				wantOutcome, failed = "failed", true
			}
			if c.State != cellosv1.CellDestroyed || c.Outcome != wantOutcome ||
				c.ExitCode == nil || int(*c.ExitCode) != exit[id] ||
				c.FormationID != fid || c.SpecID == "" || c.RunID == "" ||
				c.StartedAt == nil || c.DestroyedAt == nil || c.DestroyedAt.Before(*c.StartedAt) {
				t.Errorf("cell %s of formation %s ends as %+v (exit %d)", id, fid, c, exit[id])
			}
		}
		want := cellosv1.FormationSucceeded
		if failed {
			want = cellosv1.FormationFailed
			failedFormations++
		}
		if f.Phase != want || f.Degraded {
			t.Errorf("formation %s ends %s (degraded %v), want %s", fid, f.Phase, f.Degraded, want)
		}
		if strings.Contains(strings.Join(phases[fid], " "), fold.PhaseDegraded) {
			degradedFormations++
		}
	}
	switch cfg.FailureRate {
	case 0:
		if failedFormations != 0 {
			t.Errorf("%d formations failed with FailureRate 0", failedFormations)
		}
	case 1:
		if failedFormations != cfg.Formations {
			t.Errorf("%d of %d formations failed with FailureRate 1", failedFormations, cfg.Formations)
		}
	}
	switch cfg.DegradedRate {
	case 0:
		if degradedFormations != 0 {
			t.Errorf("%d formations degraded with DegradedRate 0", degradedFormations)
		}
	case 1:
		if degradedFormations != cfg.Formations {
			t.Errorf("%d of %d formations degraded with DegradedRate 1", degradedFormations, cfg.Formations)
		}
	}
}

func checkEnvelope(t *testing.T, ev simulator.Event, d decoded, ids map[string]bool) {
	t.Helper()
	if d.SpecVersion != "1.0" || d.DataContentType != "application/json" || d.Type != ev.Type {
		t.Fatalf("bad envelope %s", ev.Payload)
	}
	u, ok := strings.CutPrefix(d.ID, "urn:cellos:event:")
	if _, err := uuid.Parse(u); !ok || err != nil {
		t.Fatalf("event id %q is not urn:cellos:event:<uuid>", d.ID)
	}
	if ids[d.ID] {
		t.Fatalf("event id %q repeats", d.ID)
	}
	ids[d.ID] = true
	if d.Source != "/cellos/server" && !strings.HasPrefix(d.Source, "/cellos/supervisor/host-") {
		t.Fatalf("source %q", d.Source)
	}
	if _, err := uuid.Parse(d.Data.FormationID); err != nil {
		t.Fatalf("formationId %q: %v", d.Data.FormationID, err)
	}
}

// checkPhaseOrder checks one formation's phases follow
// created → launching → running (→ degraded → running) → completed|failed.
func checkPhaseOrder(t *testing.T, seq uint64, before []string, phase string) {
	t.Helper()
	last := ""
	if len(before) > 0 {
		last = before[len(before)-1]
	}
	allowed := map[string][]string{
		"":                  {fold.PhaseCreated},
		fold.PhaseCreated:   {fold.PhaseLaunching},
		fold.PhaseLaunching: {fold.PhaseRunning},
		fold.PhaseRunning:   {fold.PhaseDegraded, fold.PhaseCompleted, fold.PhaseFailed},
		fold.PhaseDegraded:  {fold.PhaseRunning},
	}[last]
	for _, a := range allowed {
		if a == phase {
			if phase == fold.PhaseDegraded && strings.Contains(strings.Join(before, " "), fold.PhaseDegraded) {
				t.Fatalf("event %d: second degradation after %v", seq, before)
			}
			return
		}
	}
	t.Fatalf("event %d: phase %s after %v", seq, phase, before)
}

// TestDegradedPassesThroughRunning checks what the operator sees of a
// degradation: Running and Degraded, then Running again.
func TestDegradedPassesThroughRunning(t *testing.T) {
	events := simulator.Generate(simulator.Config{Seed: 11, Formations: 3, DegradedRate: 1, Start: testStart})
	state := fold.NewState()
	seen := map[string]string{} // formation id → what was observed, in order
	for i, ev := range events {
		if out := state.Apply(uint64(i+1), time.Time{}, ev.Subject, nil, ev.Payload); out.Result != fold.ResultApplied {
			t.Fatalf("event %d: %s (%s)", i+1, out.Result, out.Reason)
		}
		if ev.FormationPhase() == "" {
			continue
		}
		f := state.Formations[ev.FormationID]
		seen[ev.FormationID] += fmt.Sprintf("%s/%v ", f.Phase, f.Degraded)
	}
	for id, got := range seen {
		want := "Pending/false Running/false Running/false Running/true Running/false "
		if !strings.HasPrefix(got, want) {
			t.Errorf("formation %s went %q, want it to start %q", id, got, want)
		}
	}
}

func TestGenerateIsDeterministic(t *testing.T) {
	cfg := simulator.Config{Seed: 42, Formations: 25, FailureRate: 0.3, DegradedRate: 0.3, Start: testStart}
	a, b := simulator.Generate(cfg), simulator.Generate(cfg)
	if len(a) != len(b) {
		t.Fatalf("same seed: %d events, then %d", len(a), len(b))
	}
	for i := range a {
		if a[i].Subject != b[i].Subject || !bytes.Equal(a[i].Payload, b[i].Payload) {
			t.Fatalf("same seed differs at event %d:\n%s\n%s", i+1, a[i].Payload, b[i].Payload)
		}
	}

	cfg.Seed = 43
	c := simulator.Generate(cfg)
	if len(c) > 0 && bytes.Equal(a[0].Payload, c[0].Payload) {
		t.Fatalf("seeds 42 and 43 give the same first event %s", c[0].Payload)
	}
}

func TestGenerateEndlessConfigReturnsNil(t *testing.T) {
	if evs := simulator.Generate(simulator.Config{}); evs != nil {
		t.Fatalf("Generate of an endless stream returned %d events", len(evs))
	}
}

// TestGeneratorContinuous checks that with no formation limit the generator
// never runs dry, keeps InFlight formations going, and its stream stays valid.
func TestGeneratorContinuous(t *testing.T) {
	const n = 20000
	g := simulator.NewGenerator(simulator.Config{Seed: 12, InFlight: 7, FailureRate: 0.2, DegradedRate: 0.2, Start: testStart})
	state := fold.NewState()
	live := map[string]bool{}
	finished, maxLive := 0, 0
	for i := range n {
		ev, ok := g.Next()
		if !ok {
			t.Fatalf("continuous generator ran dry after %d events", i)
		}
		if out := state.Apply(uint64(i+1), time.Time{}, ev.Subject, nil, ev.Payload); out.Result != fold.ResultApplied {
			t.Fatalf("event %d: %s (%s)", i+1, out.Result, out.Reason)
		}
		switch ev.FormationPhase() {
		case fold.PhaseCreated:
			live[ev.FormationID] = true
		case fold.PhaseCompleted, fold.PhaseFailed:
			delete(live, ev.FormationID)
			finished++
		}
		maxLive = max(maxLive, len(live))
	}
	if maxLive != 7 {
		t.Errorf("at most %d formations in flight, want 7", maxLive)
	}
	if finished < n/20 {
		t.Errorf("only %d formations finished in %d events", finished, n)
	}
	for id, f := range state.Formations {
		if !live[id] && f.Phase != cellosv1.FormationSucceeded && f.Phase != cellosv1.FormationFailed {
			t.Errorf("finished formation %s is %s", id, f.Phase)
		}
	}
}

func TestGeneratorStart(t *testing.T) {
	firstTime := func(cfg simulator.Config) time.Time {
		t.Helper()
		ev, ok := simulator.NewGenerator(cfg).Next()
		if !ok {
			t.Fatal("no event")
		}
		var d decoded
		if err := json.Unmarshal(ev.Payload, &d); err != nil {
			t.Fatal(err)
		}
		at, err := time.Parse(time.RFC3339, d.Time)
		if err != nil {
			t.Fatal(err)
		}
		return at
	}

	if at := firstTime(simulator.Config{Formations: 1, Start: testStart.Add(999 * time.Millisecond)}); !at.Equal(testStart) {
		t.Errorf("first event at %s, want the start truncated to %s", at, testStart)
	}
	before := time.Now().Truncate(time.Second)
	at := firstTime(simulator.Config{Formations: 1})
	if at.Before(before) || at.After(time.Now()) {
		t.Errorf("first event at %s, want now (%s) with a zero Start", at, before)
	}
}

func TestFormationPhase(t *testing.T) {
	tests := map[string]string{
		"dev.cellos.events.cell.formation.v1.created": "created",
		"dev.cellos.events.cell.formation.v1.failed":  "failed",
		fold.TypeCellStarted:                          "",
		"":                                            "",
	}
	for typ, want := range tests {
		if got := (simulator.Event{Type: typ}).FormationPhase(); got != want {
			t.Errorf("FormationPhase of %q = %q, want %q", typ, got, want)
		}
	}
}

func BenchmarkGenerate(b *testing.B) {
	g := simulator.NewGenerator(simulator.Config{Seed: 1, FailureRate: 0.2, DegradedRate: 0.2, Start: testStart})
	b.ReportAllocs()
	bytes := 0
	for b.Loop() {
		ev, _ := g.Next()
		bytes += len(ev.Payload)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(bytes)/float64(b.N), "B/event")
}
