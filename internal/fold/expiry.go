package fold

import (
	"container/heap"
	"time"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
)

// Kind tells which kind of object a stream id names.
type Kind string

// The kinds the projection holds.
const (
	FormationKind Kind = "Formation"
	CellKind      Kind = "Cell"
)

// TTLs say how long a final object stays after its FinishedAt; 0 keeps it
// for ever.
type TTLs struct {
	// Cell is how long a destroyed cell stays.
	Cell time.Duration
	// Formation is how long a final formation stays, unless the operator
	// declared it: its user owns that one.
	Formation time.Duration
}

// Expiry names an object the fold released because it expired.
type Expiry struct {
	Kind Kind
	ID   string
}

// Tally counts one formation's cells by state, the expired ones included
// (as destroyed: only a destroyed cell expires), and holds the ids of those
// still held, which go with the formation when it expires.
type Tally struct {
	Counts cellosv1.CellCounts
	Live   map[string]bool
}

// final tells whether a formation phase is one no event is expected after.
func final(p cellosv1.FormationPhase) bool {
	return p == cellosv1.FormationSucceeded || p == cellosv1.FormationFailed || p == cellosv1.FormationCancelled
}

// finish returns an object's FinishedAt after an event stored at time at:
// nil unless it is final; the time it became final while it stays so. The
// object is queued to expire ttl after that, unless ttl is 0.
func (s *State) finish(isFinal bool, prev *time.Time, at time.Time, ttl time.Duration, kind Kind, id string) *time.Time {
	if !isFinal || at.IsZero() {
		return nil
	}
	if prev != nil {
		return prev
	}
	s.queue(kind, id, at, ttl)
	return &at
}

// queue has the object of kind and id, final since finished, expire ttl
// after that, unless ttl is 0.
func (s *State) queue(kind Kind, id string, finished time.Time, ttl time.Duration) {
	if ttl > 0 {
		heap.Push(&s.expiries, expiryEntry{at: finished.Add(ttl), finished: finished, Expiry: Expiry{Kind: kind, ID: id}})
	}
}

// expire releases every object whose expiry is at or before at, in the
// order they expire, and returns them. An object whose FinishedAt changed
// since it was queued (it was started again, or destroyed again) is not
// released by the stale entry, nor is a formation that Formation.Expires
// keeps.
func (s *State) expire(at time.Time) []Expiry {
	var released []Expiry
	for len(s.expiries) > 0 && !s.expiries[0].at.After(at) {
		e := heap.Pop(&s.expiries).(expiryEntry)
		switch e.Kind {
		case CellKind:
			if c := s.Cells[e.ID]; c != nil && sameTime(c.FinishedAt, e.finished) {
				released = append(released, s.releaseCell(c))
			}
		case FormationKind:
			if f := s.Formations[e.ID]; f != nil && sameTime(f.FinishedAt, e.finished) {
				if _, ok := f.Expires(s.TTLs); ok {
					released = append(released, s.releaseFormation(f)...)
				}
			}
		}
	}
	return released
}

// ExpiresAt is when an object final since finished expires under ttl;
// false when it never does (not final, or a TTL of 0).
func ExpiresAt(finished *time.Time, ttl time.Duration) (time.Time, bool) {
	if finished == nil || ttl <= 0 {
		return time.Time{}, false
	}
	return finished.Add(ttl), true
}

// Expires tells when formation f expires under ttls, if it does: a final
// formation expires ttls.Formation after FinishedAt, unless the operator
// declared it and its Formation was not deleted, as its user owns it.
func (f *Formation) Expires(ttls TTLs) (time.Time, bool) {
	if f.Namespace != "" && !f.Deleted {
		return time.Time{}, false
	}
	return ExpiresAt(f.FinishedAt, ttls.Formation)
}

// Expires tells when cell c expires under ttls by its own TTL, if it does;
// it also goes with its formation (see Formation.Expires).
func (c *Cell) Expires(ttls TTLs) (time.Time, bool) {
	return ExpiresAt(c.FinishedAt, ttls.Cell)
}

// releaseFormation forgets f and the cells of it the fold still holds.
func (s *State) releaseFormation(f *Formation) []Expiry {
	released := []Expiry{{Kind: FormationKind, ID: f.ID}}
	delete(s.Formations, f.ID)
	if t := s.Tallies[f.ID]; t != nil {
		for id := range t.Live {
			delete(s.Cells, id)
			released = append(released, Expiry{Kind: CellKind, ID: id})
		}
		delete(s.Tallies, f.ID)
	}
	return released
}

// releaseCell forgets c. Its formation keeps counting it, as destroyed.
func (s *State) releaseCell(c *Cell) Expiry {
	delete(s.Cells, c.ID)
	if t := s.Tallies[c.FormationID]; t != nil {
		delete(t.Live, c.ID)
		if len(t.Live) == 0 && s.Formations[c.FormationID] == nil {
			delete(s.Tallies, c.FormationID)
		}
	}
	return Expiry{Kind: CellKind, ID: c.ID}
}

// tally adds c, as it is, to its formation's counts (by -1: takes it out).
func (s *State) tally(c *Cell, by int32) {
	if c.FormationID == "" {
		return
	}
	t := s.Tallies[c.FormationID]
	if t == nil {
		t = &Tally{Live: map[string]bool{}}
		s.Tallies[c.FormationID] = t
	}
	t.Live[c.ID] = true
	t.Counts.Total += by
	switch c.State {
	case cellosv1.CellRunning:
		t.Counts.Running += by
	case cellosv1.CellDestroyed:
		t.Counts.Destroyed += by
	default:
		t.Counts.Pending += by
	}
}

// Counts returns the counts of the cells of formation id.
func (s *State) Counts(id string) cellosv1.CellCounts {
	if t := s.Tallies[id]; t != nil {
		return t.Counts
	}
	return cellosv1.CellCounts{}
}

// Reindex rebuilds what the fold derives from its objects, the order in
// which they expire, after its exported fields were loaded from elsewhere
// (a checkpoint), with the TTLs now configured; and has cells share their
// formation's id again, as applyCell has them.
func (s *State) Reindex() {
	s.expiries = nil
	for id, f := range s.Formations {
		if f.FinishedAt != nil {
			s.queue(FormationKind, id, *f.FinishedAt, s.TTLs.Formation)
		}
	}
	for id, c := range s.Cells {
		if f := s.Formations[c.FormationID]; f != nil {
			c.FormationID = f.ID
		}
		if c.FinishedAt != nil {
			s.queue(CellKind, id, *c.FinishedAt, s.TTLs.Cell)
		}
	}
}

func sameTime(t *time.Time, u time.Time) bool {
	return t != nil && t.Equal(u)
}

// expiryEntry is an object queued to expire at at, for the FinishedAt it had
// when queued.
type expiryEntry struct {
	at, finished time.Time
	Expiry
}

// expiryQueue is a min-heap of expiryEntry by at (container/heap).
type expiryQueue []expiryEntry

func (q expiryQueue) Len() int           { return len(q) }
func (q expiryQueue) Less(i, j int) bool { return q[i].at.Before(q[j].at) }
func (q expiryQueue) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *expiryQueue) Push(x any)        { *q = append(*q, x.(expiryEntry)) }
func (q *expiryQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	*q = old[:len(old)-1]
	return e
}
