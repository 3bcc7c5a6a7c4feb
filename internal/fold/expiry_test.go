package fold

import (
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
)

// expiryClock is the JetStream time of the first event of the expiry tests.
var expiryClock = time.Date(2027, 1, 2, 10, 0, 0, 0, time.UTC)

// timed is one message of a stream with its JetStream time, as seconds
// after expiryClock.
type timed struct {
	second  int
	subject string
	payload string
}

func cellEvent(eventType, cell, extra string) string {
	return obj(typ(eventType), data(`{"cellId":"`+cell+`","formationId":"`+fid+`"`+extra+`}`))
}

func formationEvent(phase string) string {
	return obj(typ(tFormation+phase), data(`{"formationId":"`+fid+`","formationName":"one"}`))
}

// foldTimed folds msgs, in order from sequence 1, under ttls, and returns the
// state and every object each message released.
func foldTimed(t *testing.T, ttls TTLs, msgs []timed) (*State, [][]Expiry) {
	t.Helper()
	s := NewState()
	s.TTLs = ttls
	var released [][]Expiry
	for i, m := range msgs {
		out := s.Apply(uint64(i+1), expiryClock.Add(time.Duration(m.second)*time.Second), m.subject, nil, []byte(m.payload))
		if out.Result != ResultApplied && out.Result != ResultIgnored {
			t.Fatalf("message %d: %s %s", i+1, out.Result, out.Reason)
		}
		released = append(released, out.Expired)
	}
	return s, released
}

// A destroyed cell is released when stream time reaches its FinishedAt plus
// the cell TTL, and not before; its formation keeps counting it.
func TestDestroyedCellExpiresByStreamTime(t *testing.T) {
	ttls := TTLs{Cell: 10 * time.Second}
	s, released := foldTimed(t, ttls, []timed{
		{0, "", formationEvent("created")},
		{1, "", cellEvent(tStarted, "c1", "")},
		{2, "", cellEvent(tDestroyed, "c1", `,"outcome":"ok"`)},
		{11, "", cellEvent(tStarted, "c2", "")},
		{12, "", cellEvent(tStarted, "c3", "")},
	})
	if got := released[3]; len(got) != 0 {
		t.Errorf("at 11 s, a cell destroyed at 2 s with a 10 s TTL was released: %v", got)
	}
	if got, want := released[4], []Expiry{{Kind: CellKind, ID: "c1"}}; !reflect.DeepEqual(got, want) {
		t.Errorf("released at 12 s: %v, want %v", got, want)
	}
	if s.Cells["c1"] != nil {
		t.Error("the fold still holds the expired cell")
	}
	want := cellosv1.CellCounts{Total: 3, Running: 2, Destroyed: 1}
	if got := s.Counts(fid); got != want {
		t.Errorf("counts %+v, want %+v: an expired cell still counts", got, want)
	}
}

// FinishedAt is the JetStream time of the event that made the object final,
// to the second, and stays while it is final.
func TestFinishedAtIsTheFinalEventsStreamTime(t *testing.T) {
	s, _ := foldTimed(t, TTLs{}, []timed{
		{0, "", formationEvent("created")},
		{1, "", cellEvent(tStarted, "c1", "")},
		{2, "", cellEvent(tDestroyed, "c1", "")},
		{3, "", cellEvent(tDestroyed, "c1", "")},
		{4, "", formationEvent("failed")},
		{5, "", formationEvent("cancelled")},
	})
	if c := s.Cells["c1"]; !sameTime(c.FinishedAt, expiryClock.Add(2*time.Second)) {
		t.Errorf("cell FinishedAt %v, want the time of its first destroyed event", c.FinishedAt)
	}
	if f := s.Formations[fid]; !sameTime(f.FinishedAt, expiryClock.Add(4*time.Second)) {
		t.Errorf("formation FinishedAt %v, want the time it first became final", f.FinishedAt)
	}
}

// A cell started again after it was destroyed is no longer final: the
// expiry queued for its first end does not release it.
func TestRestartedCellDoesNotExpire(t *testing.T) {
	s, released := foldTimed(t, TTLs{Cell: 10 * time.Second}, []timed{
		{1, "", cellEvent(tStarted, "c1", "")},
		{2, "", cellEvent(tDestroyed, "c1", "")},
		{3, "", cellEvent(tStarted, "c1", "")},
		{30, "", cellEvent(tStarted, "c2", "")},
	})
	if s.Cells["c1"] == nil || s.Cells["c1"].FinishedAt != nil || len(released[3]) != 0 {
		t.Errorf("a running cell expired: %+v, released %v", s.Cells["c1"], released[3])
	}
}

// An observed formation expires with whatever cells of it the fold still
// holds; a later event of its id, or of one of its cells, starts it afresh.
func TestObservedFormationExpiresWithItsCells(t *testing.T) {
	ttls := TTLs{Cell: time.Hour, Formation: 20 * time.Second}
	s, released := foldTimed(t, ttls, []timed{
		{0, "", formationEvent("created")},
		{1, "", cellEvent(tStarted, "c1", `,"specId":"s1"`)},
		{2, "", cellEvent(tDestroyed, "c1", "")},
		{3, "", formationEvent("completed")},
		{23, "", cellEvent(tStarted, "c1", "")},
		{24, "", formationEvent("running")},
	})
	got := released[4]
	slices.SortFunc(got, func(a, b Expiry) int { return len(a.Kind) - len(b.Kind) })
	if want := []Expiry{{Kind: CellKind, ID: "c1"}, {Kind: FormationKind, ID: fid}}; !reflect.DeepEqual(got, want) {
		t.Errorf("released at 23 s: %v, want %v", got, want)
	}
	c := s.Cells["c1"]
	if c == nil || c.SpecID != "" || c.State != cellosv1.CellRunning || c.LastAppliedSequence != 5 || c.FinishedAt != nil {
		t.Errorf("the cell started afresh as %+v, want a running cell with nothing of its first life", c)
	}
	f := s.Formations[fid]
	if f == nil || f.Phase != cellosv1.FormationRunning || f.FinishedAt != nil || f.LastAppliedSequence != 6 {
		t.Errorf("the formation started afresh as %+v", f)
	}
	if want := (cellosv1.CellCounts{Total: 1, Running: 1}); s.Counts(fid) != want {
		t.Errorf("counts %+v after the formation started afresh, want %+v", s.Counts(fid), want)
	}
}

// A formation the operator declared is its user's: it never expires, its
// cells do, and it keeps counting them.
func TestDeclaredFormationNeverExpires(t *testing.T) {
	own := SubjectPrefix + ".formation." + fid
	declared := func(phase string) string {
		return `{"type":"` + FormationTypePrefix + phase + `","source":"` + OperatorSource + `","data":{"formationId":"` + fid + `","namespace":"team-a"}}`
	}
	ttls := TTLs{Cell: 5 * time.Second, Formation: 5 * time.Second}
	s, _ := foldTimed(t, ttls, []timed{
		{0, own, declared("created")},
		{1, "", cellEvent(tStarted, "c1", "")},
		{2, "", cellEvent(tDestroyed, "c1", "")},
		{3, "", formationEvent("completed")},
		{100, "", cellEvent(tStarted, "other", `,"formationId":"`+fid+`"`)},
	})
	f := s.Formations[fid]
	if f == nil || f.Phase != cellosv1.FormationSucceeded {
		t.Fatalf("the declared formation is %+v, want it kept, Succeeded", f)
	}
	if _, ok := f.Expires(ttls); ok {
		t.Error("a declared formation expires")
	}
	if s.Cells["c1"] != nil {
		t.Error("a cell of a declared formation did not expire")
	}
	if want := (cellosv1.CellCounts{Total: 2, Running: 1, Destroyed: 1}); s.Counts(fid) != want {
		t.Errorf("counts %+v, want %+v", s.Counts(fid), want)
	}
}

// With TTLs of 0, nothing expires.
func TestZeroTTLsKeepEverything(t *testing.T) {
	s, _ := foldTimed(t, TTLs{}, []timed{
		{0, "", formationEvent("created")},
		{1, "", cellEvent(tDestroyed, "c1", "")},
		{2, "", formationEvent("completed")},
		{1 << 20, "", cellEvent(tStarted, "c2", "")},
	})
	if s.Formations[fid] == nil || s.Cells["c1"] == nil {
		t.Error("an object expired with TTLs of 0")
	}
}

// A state rebuilt from its exported fields, as a checkpoint restores it,
// expires the same objects at the same times once reindexed.
func TestReindexRebuildsTheExpiryOrder(t *testing.T) {
	ttls := TTLs{Cell: 10 * time.Second, Formation: 30 * time.Second}
	msgs := []timed{
		{0, "", formationEvent("created")},
		{1, "", cellEvent(tStarted, "c1", "")},
		{2, "", cellEvent(tDestroyed, "c1", "")},
		{3, "", cellEvent(tDestroyed, "c2", "")},
		{4, "", formationEvent("failed")},
	}
	later := timed{40, "", cellEvent(tStarted, "c3", "")}
	whole, released := foldTimed(t, ttls, append(msgs, later))

	head, _ := foldTimed(t, ttls, msgs)
	copied := &State{Formations: head.Formations, Cells: head.Cells, TTLs: head.TTLs, Tallies: head.Tallies, LastSequence: head.LastSequence}
	copied.Reindex()
	out := copied.Apply(uint64(len(msgs)+1), expiryClock.Add(40*time.Second), "", nil, []byte(later.payload))
	byID := func(a, b Expiry) int { return strings.Compare(string(a.Kind)+a.ID, string(b.Kind)+b.ID) }
	slices.SortFunc(out.Expired, byID)
	slices.SortFunc(released[len(msgs)], byID)
	if !reflect.DeepEqual(out.Expired, released[len(msgs)]) {
		t.Errorf("reindexed state released %v, the whole fold %v", out.Expired, released[len(msgs)])
	}
	if !reflect.DeepEqual(copied.Formations, whole.Formations) || !reflect.DeepEqual(copied.Cells, whole.Cells) || !reflect.DeepEqual(copied.Tallies, whole.Tallies) {
		t.Error("the reindexed state and the whole fold differ")
	}
}

// A declared formation deleted after it was final, and after its expiry
// passed it over, expires at the next event, as a restored fold, which
// queues it afresh, would have it.
func TestDeclaredFormationExpiresOnceDeleted(t *testing.T) {
	own := SubjectPrefix + ".formation." + fid
	operator := func(phase string) string {
		return `{"type":"` + FormationTypePrefix + phase + `","source":"` + OperatorSource + `","data":{"formationId":"` + fid + `","namespace":"team-a"}}`
	}
	ttls := TTLs{Cell: 5 * time.Second, Formation: 5 * time.Second}
	s, released := foldTimed(t, ttls, []timed{
		{0, own, operator("created")},
		{3, "", formationEvent("completed")},
		{100, "", cellEvent(tStarted, "other", "")},
		{101, own, operator("cancelled")},
		{102, "", cellEvent(tStarted, "another", "")},
	})
	if len(released[2]) != 0 || len(released[3]) != 0 {
		t.Errorf("released %v and %v before the formation was deleted", released[2], released[3])
	}
	if s.Formations[fid] != nil || !slices.Contains(released[4], Expiry{Kind: FormationKind, ID: fid}) {
		t.Errorf("the deleted declared formation was not released at the next event: %v", released[4])
	}
}
