package simulator

import (
	"encoding/binary"
	"fmt"
	"iter"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	"github.com/google/uuid"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/internal/fold"
)

// Defaults applied to zero Config fields, chosen so that a zero Config still
// shows the interesting part: several formations of several cells at once.
const (
	DefaultCellsPerFormation = 3
	DefaultInFlight          = 4
)

// Hosts is the number of supervisor hosts events come from
// (/cellos/supervisor/host-1 to host-Hosts); a few make the sources look like
// a small cluster without adding a knob.
const Hosts = 4

// serverSource is the source of the event that accepts a formation: the
// server receives the document before any supervisor launches it.
const serverSource = "/cellos/server"

// failureExitCodes are the non-zero exits a failing command returns: a
// generic error, a usage error, SIGKILL (137) and SIGTERM (143).
var failureExitCodes = [...]int{1, 2, 137, 143}

// workloads name formations after what they might run, so that log lines and
// `kubectl get formations` are easier to tell apart than formation-1, -2, ...
var workloads = [...]string{"build", "test", "etl", "render", "train", "index", "backup", "deploy"}

// Config says what stream to simulate. Zero fields take defaults, so that
// only what matters to a caller needs setting.
type Config struct {
	// Seed makes the stream reproducible: the same Config gives the same
	// events, byte for byte, ids included.
	Seed uint64
	// Formations is how many formations to play to completion; zero or less
	// means NewGenerator keeps starting new ones forever.
	Formations int
	// CellsPerFormation is the number of cells of every formation
	// (zero or less: DefaultCellsPerFormation).
	CellsPerFormation int
	// FailureRate is the probability that a formation fails: at least one of
	// its cells exits non-zero. 0 never, 1 always.
	FailureRate float64
	// DegradedRate is the probability that a running formation reports
	// degraded once, then running again, before it ends.
	DegradedRate float64
	// InFlight bounds how many formations run at once (zero or less:
	// DefaultInFlight). Their events interleave.
	InFlight int
	// CommandsPerCell is how many command.completed events each cell emits
	// between started and destroyed (zero or less: one). The earlier ones
	// exit 0; the last carries the cell's exit code. Many commands make a
	// chatty stream: few objects, many events each.
	CommandsPerCell int
	// Start is the simulated time of the first event; the zero time means
	// now. Times are whole seconds, as cellos writes them.
	Start time.Time
}

// Generator produces a simulated event stream one event at a time, so that
// an endless stream can be published without holding it in memory.
//
// Each formation and each cell emits its own events in causal order; which
// of the formations in flight, and which of a formation's cells, goes next
// is drawn at random. A Generator is not safe for concurrent use.
type Generator struct {
	cfg      Config
	rng      *rand.Rand
	now      time.Time
	started  int // formations started so far
	active   []*formation
	prefixes map[string]struct{} // first 8 hex of every formation id used
	choices  []choice            // scratch space for formation.next
}

// NewGenerator returns a generator of the stream cfg describes.
func NewGenerator(cfg Config) *Generator {
	if cfg.CellsPerFormation <= 0 {
		cfg.CellsPerFormation = DefaultCellsPerFormation
	}
	if cfg.InFlight <= 0 {
		cfg.InFlight = DefaultInFlight
	}
	if cfg.CommandsPerCell <= 0 {
		cfg.CommandsPerCell = 1
	}
	if cfg.Start.IsZero() {
		cfg.Start = time.Now()
	}
	// Two words of seed: the second is a constant so Seed alone decides.
	return &Generator{
		cfg:      cfg,
		rng:      rand.New(rand.NewPCG(cfg.Seed, 0x63656c6c6f73)), // "cellos"
		now:      cfg.Start.UTC().Truncate(time.Second),
		prefixes: map[string]struct{}{},
	}
}

// Generate returns the whole stream of cfg.Formations formations, for tests
// and one-shot runs. It returns nil when cfg.Formations is zero or less,
// since that stream never ends.
func Generate(cfg Config) []Event {
	if cfg.Formations <= 0 {
		return nil
	}
	return slices.Collect(NewGenerator(cfg).All())
}

// Next returns the next event, and false once every formation has ended
// (never, when Config.Formations is zero or less).
func (g *Generator) Next() (Event, bool) {
	g.admit()
	if len(g.active) == 0 {
		return Event{}, false
	}
	i := g.rng.IntN(len(g.active))
	f := g.active[i]
	ev := g.emit(f)
	if f.stage == stageDone {
		g.active = slices.Delete(g.active, i, i+1)
	}
	return ev, true
}

// All yields the events Next returns, for range loops and Publish.
func (g *Generator) All() iter.Seq[Event] {
	return func(yield func(Event) bool) {
		for {
			ev, ok := g.Next()
			if !ok || !yield(ev) {
				return
			}
		}
	}
}

// admit starts new formations while there is room. Formations arrive one at
// a time at random steps rather than all together, so their lifecycles
// overlap at different stages.
func (g *Generator) admit() {
	for len(g.active) < g.cfg.InFlight && (g.cfg.Formations <= 0 || g.started < g.cfg.Formations) {
		if len(g.active) > 0 && g.rng.IntN(2) == 0 {
			return
		}
		g.active = append(g.active, g.newFormation())
	}
}

// stage is where a formation is in its lifecycle.
type stage uint8

const (
	stageNew      stage = iota // nothing emitted yet
	stageCreated               // created emitted; launching next
	stageLaunched              // launching emitted; cells starting
	stageRunning               // running emitted; cells completing
	stageDone                  // terminal event emitted
)

// cellStep is the last lifecycle event a cell emitted.
type cellStep uint8

const (
	cellPending cellStep = iota
	cellStarted
	cellCompleted
	cellDestroyed
)

type formation struct {
	id, name string
	prefix   string // first 8 hex of id, the cell subject token
	source   string // the supervisor that launches it
	cells    []cell
	stage    stage
	failing  bool

	started, destroyed int // cells that emitted started, destroyed

	// degrade says a degraded/running pair is still to come; degraded says
	// degraded was emitted and running is next.
	degrade, degraded bool
}

type cell struct {
	id, specID, runID string
	source            string
	exitCode          int
	step              cellStep
	commands          int // command.completed events emitted
}

// choice is one event a formation could emit next: a formation phase, or
// the next event of cell index cell.
type choice struct {
	phase string // "" for a cell event
	cell  int
}

func (g *Generator) newFormation() *formation {
	g.started++
	id := g.uuid()
	// Cell subjects and ids use the first 8 hex digits; keep them unique in
	// this stream so no two formations share a cell id.
	for {
		if _, used := g.prefixes[id[:8]]; !used {
			break
		}
		id = g.uuid()
	}
	g.prefixes[id[:8]] = struct{}{}

	f := &formation{
		id:      id,
		name:    workloads[g.rng.IntN(len(workloads))] + "-" + strconv.Itoa(g.started),
		prefix:  id[:8],
		source:  g.host(),
		cells:   make([]cell, g.cfg.CellsPerFormation),
		failing: g.rng.Float64() < g.cfg.FailureRate,
		degrade: g.rng.Float64() < g.cfg.DegradedRate,
	}
	for i := range f.cells {
		f.cells[i] = cell{
			id:     "cell-" + f.prefix + "-" + strconv.Itoa(i),
			specID: "spec-" + strconv.Itoa(1+g.rng.IntN(9)),
			runID:  fmt.Sprintf("run-%012x", g.rng.Uint64()>>16),
			source: g.host(),
		}
	}
	if f.failing {
		// Some cells fail, and at least one so that the formation's outcome
		// follows from its cells.
		for i := range f.cells {
			if g.rng.IntN(2) == 0 {
				f.cells[i].exitCode = g.failureExitCode()
			}
		}
		if !slices.ContainsFunc(f.cells, func(c cell) bool { return c.exitCode != 0 }) {
			f.cells[g.rng.IntN(len(f.cells))].exitCode = g.failureExitCode()
		}
	}
	return f
}

// choices lists the events f may emit next without breaking causality:
// cells start only after launching, the formation runs once they all have
// started, a degradation happens while a cell still lives, and the terminal
// event comes after every cell is destroyed.
func (f *formation) choices(buf []choice) []choice {
	buf = buf[:0]
	switch f.stage {
	case stageNew:
		return append(buf, choice{phase: fold.PhaseCreated})
	case stageCreated:
		return append(buf, choice{phase: fold.PhaseLaunching})
	case stageLaunched:
		if f.started == len(f.cells) {
			return append(buf, choice{phase: fold.PhaseRunning})
		}
		for i, c := range f.cells {
			if c.step == cellPending {
				buf = append(buf, choice{cell: i})
			}
		}
		return buf
	case stageRunning:
		if f.destroyed == len(f.cells) {
			if f.failing {
				return append(buf, choice{phase: fold.PhaseFailed})
			}
			return append(buf, choice{phase: fold.PhaseCompleted})
		}
		// The last cell outlives a pending degradation.
		holdLast := len(f.cells)-f.destroyed == 1 && f.degrade
		for i, c := range f.cells {
			if c.step == cellStarted || (c.step == cellCompleted && !holdLast) {
				buf = append(buf, choice{cell: i})
			}
		}
		switch {
		case f.degraded:
			buf = append(buf, choice{phase: fold.PhaseRunning})
		case f.degrade:
			buf = append(buf, choice{phase: fold.PhaseDegraded})
		}
		return buf
	}
	return buf
}

// emit advances f by one event drawn from its choices.
func (g *Generator) emit(f *formation) Event {
	g.choices = f.choices(g.choices)
	ch := g.choices[g.rng.IntN(len(g.choices))]
	var ev Event
	if ch.phase != "" {
		ev = g.formationEvent(f, ch.phase)
	} else {
		ev = g.cellEvent(f, &f.cells[ch.cell])
	}
	// Events are seconds apart at most; several in one second are common.
	g.now = g.now.Add(time.Duration(g.rng.IntN(3)) * time.Second)
	return ev
}

func (g *Generator) formationEvent(f *formation, phase string) Event {
	source := f.source
	switch phase {
	case fold.PhaseCreated:
		f.stage = stageCreated
		source = serverSource
	case fold.PhaseLaunching:
		f.stage = stageLaunched
	case fold.PhaseRunning:
		if f.degraded {
			f.degraded, f.degrade = false, false
		}
		f.stage = stageRunning
	case fold.PhaseDegraded:
		f.degraded = true
	case fold.PhaseCompleted, fold.PhaseFailed:
		f.stage = stageDone
	}
	typ := fold.FormationTypePrefix + phase
	return Event{
		Subject: formationSubjectPrefix + f.id,
		Payload: encode(g.uuid(), source, typ, g.now, "urn:cellos:formation:"+f.id,
			formationData{FormationID: f.id, FormationName: f.name}),
		Type:          typ,
		FormationID:   f.id,
		FormationName: f.name,
	}
}

func (g *Generator) cellEvent(f *formation, c *cell) Event {
	var typ string
	var data any
	switch c.step {
	case cellPending:
		typ = fold.TypeCellStarted
		data = cellStartedData{CellID: c.id, SpecID: c.specID, RunID: c.runID, FormationID: f.id}
		f.started++
	case cellStarted:
		typ = fold.TypeCellCommandCompleted
		c.commands++
		code := c.exitCode
		if c.commands < g.cfg.CommandsPerCell {
			// Not the last command: it succeeds, and the cell stays started.
			code = 0
			c.step--
		}
		data = cellCompletedData{CellID: c.id, ExitCode: code, FormationID: f.id}
	case cellCompleted:
		typ = fold.TypeCellDestroyed
		outcome := cellosv1.OutcomeSucceeded
		if c.exitCode != 0 {
			outcome = cellosv1.OutcomeFailed
		}
		data = cellDestroyedData{CellID: c.id, SpecID: c.specID, RunID: c.runID, Outcome: outcome, FormationID: f.id}
		f.destroyed++
	}
	c.step++
	return Event{
		Subject:       cellSubjectPrefix + f.prefix,
		Payload:       encode(g.uuid(), c.source, typ, g.now, "cell:"+c.id, data),
		Type:          typ,
		FormationID:   f.id,
		FormationName: f.name,
	}
}

// uuid draws a version 4 UUID from the seeded source rather than from
// crypto/rand, so that a seed reproduces every id.
func (g *Generator) uuid() string {
	var b uuid.UUID
	binary.LittleEndian.PutUint64(b[:8], g.rng.Uint64())
	binary.LittleEndian.PutUint64(b[8:], g.rng.Uint64())
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80 // RFC 4122 variant
	return b.String()
}

func (g *Generator) host() string {
	return "/cellos/supervisor/host-" + strconv.Itoa(1+g.rng.IntN(Hosts))
}

func (g *Generator) failureExitCode() int {
	return failureExitCodes[g.rng.IntN(len(failureExitCodes))]
}
