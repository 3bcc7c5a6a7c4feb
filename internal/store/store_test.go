package store

import (
	"fmt"
	"testing"

	"k8s.io/apimachinery/pkg/types"
)

func started(cellID, formationID string) []byte {
	return fmt.Appendf(nil, `{"type":"dev.cellos.events.cell.lifecycle.v1.started","time":"2026-11-28T12:00:00Z","data":{"cellId":%q,"formationId":%q}}`, cellID, formationID)
}

func created(formationID string) []byte {
	return fmt.Appendf(nil, `{"type":"dev.cellos.events.cell.formation.v1.created","data":{"formationId":%q}}`, formationID)
}

func noDeclared(string) (types.NamespacedName, bool) { return types.NamespacedName{}, false }

const formationA = "02daa0b3-49a7-a4bf-8050-cbb812881d4e"

func TestWatermarkWaitsForEveryWrite(t *testing.T) {
	s := NewStore("cellos", noDeclared)
	_, f := s.Apply(1, created(formationA))
	_, c0 := s.Apply(2, started("cell-0", formationA))
	s.Apply(3, []byte(`not json`))
	_, c1 := s.Apply(4, started("cell-1", formationA))
	if f == nil || c0 == nil || c1 == nil {
		t.Fatal("applied events named no object")
	}
	if w := s.Watermark(); w != 0 {
		t.Fatalf("watermark %d before any write, want 0", w)
	}
	s.Flushed(*c0, 2)
	if w := s.Watermark(); w != 0 {
		t.Fatalf("watermark %d with the formation unwritten, want 0", w)
	}
	s.Flushed(*f, 1)
	if w := s.Watermark(); w != 3 {
		t.Fatalf("watermark %d with only cell-1 unwritten, want 3", w)
	}
	s.Flushed(*c1, 4)
	if w := s.Watermark(); w != 4 {
		t.Fatalf("watermark %d with all written, want 4", w)
	}
}

func TestEventsAfterASnapshotKeepTheObjectDirty(t *testing.T) {
	s := NewStore("cellos", noDeclared)
	_, c := s.Apply(1, started("cell-0", ""))
	s.Apply(2, started("cell-0", ""))
	// A write of the projection as of sequence 1 leaves sequence 2 unwritten.
	s.Flushed(*c, 1)
	if w := s.Watermark(); w != 1 {
		t.Fatalf("watermark %d, want 1", w)
	}
	s.Flushed(*c, 2)
	if w := s.Watermark(); w != 2 {
		t.Fatalf("watermark %d, want 2", w)
	}
}

func TestPlacement(t *testing.T) {
	declared := func(id string) (types.NamespacedName, bool) {
		if id == formationA {
			return types.NamespacedName{Namespace: "team-a", Name: "research"}, true
		}
		return types.NamespacedName{}, false
	}
	s := NewStore("cellos", declared)
	_, f := s.Apply(1, created(formationA))
	_, correlated := s.Apply(2, started("cell-0", formationA))
	_, loose := s.Apply(3, started("cell-1", ""))
	other := "9974d75b-3338-24fe-6179-0134676b1b69"
	_, observed := s.Apply(4, created(other))
	checks := []struct {
		name string
		got  types.NamespacedName
		want types.NamespacedName
	}{
		{"declared formation", f.Key, types.NamespacedName{Namespace: "team-a", Name: "research"}},
		{"cell beside its formation", correlated.Key, types.NamespacedName{Namespace: "team-a", Name: "cell-0"}},
		{"uncorrelated cell", loose.Key, types.NamespacedName{Namespace: "cellos", Name: "cell-1"}},
		{"observed formation", observed.Key, types.NamespacedName{Namespace: "cellos", Name: other}},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s placed at %s, want %s", c.name, c.got, c.want)
		}
	}
	if got, ok := s.Cell(correlated.Key); !ok || got.ID != "cell-0" {
		t.Errorf("Cell(%s) = %v, %v", correlated.Key, got, ok)
	}
}

func TestSetProcessedStartsTheWatermarkAtTheCursor(t *testing.T) {
	s := NewStore("cellos", noDeclared)
	s.SetProcessed(40)
	if w := s.Watermark(); w != 40 {
		t.Fatalf("watermark %d, want 40", w)
	}
	_, c := s.Apply(41, started("cell-0", ""))
	if w := s.Watermark(); w != 40 {
		t.Fatalf("watermark %d, want 40", w)
	}
	s.Flushed(*c, 41)
	if w := s.Watermark(); w != 41 {
		t.Fatalf("watermark %d, want 41", w)
	}
}

func TestRebindMovesTheFormationAndHoldsTheWatermark(t *testing.T) {
	s := NewStore("cellos", noDeclared)
	_, observed := s.Apply(1, created(formationA))
	s.Flushed(*observed, 1)
	declared := types.NamespacedName{Namespace: "team-a", Name: "research"}
	s.Rebind(formationA, declared)
	if key, _ := s.FormationKey(formationA); key != declared {
		t.Fatalf("formation at %s after Rebind, want %s", key, declared)
	}
	if _, ok := s.Formation(observed.Key); ok {
		t.Fatal("the observed key still maps to the formation")
	}
	if w := s.Watermark(); w != 0 {
		t.Fatalf("watermark %d before the declared Formation is written, want 0", w)
	}
	s.Flushed(Ref{Kind: FormationKind, Key: declared}, 1)
	if w := s.Watermark(); w != 1 {
		t.Fatalf("watermark %d after it is written, want 1", w)
	}
}
