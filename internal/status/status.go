// Package status builds the status a Formation or Cell must have from its
// projection.
//
// The builders are pure: a status is a function of the projection, the
// conditions already on the object and the time, so they are table-tested
// without an API server. Writing is the controllers' job.
package status

import (
	"encoding/json"
	"fmt"
	"reflect"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/internal/fold"
)

// FormationStatus is the status a Formation must have: the projection f with
// its stream stamp, the counts of its Cells, and kstatus conditions for the
// object's generation. Conditions that do not change keep their
// lastTransitionTime from existing.
func FormationStatus(f *fold.Formation, stamp string, counts cellosv1.CellCounts, generation int64, existing []metav1.Condition, now time.Time) cellosv1.FormationStatus {
	s := cellosv1.FormationStatus{
		FormationID:         f.ID,
		FormationName:       f.Name,
		Phase:               f.Phase,
		Cells:               fmt.Sprintf("%d/%d", counts.Running, counts.Total),
		CellCounts:          counts,
		LastAppliedSequence: int64(f.LastAppliedSequence),
		FinishedAt:          metaTime(f.FinishedAt),
		StreamStamp:         stamp,
		ObservedGeneration:  generation,
		Conditions:          append([]metav1.Condition(nil), existing...),
	}
	if storable(f.Document) {
		s.Document = &runtime.RawExtension{Raw: f.Document}
	}
	setFormationConditions(&s, f.Degraded, generation, metav1.NewTime(now))
	if f.DocumentDropped {
		setCondition(&s.Conditions, cellosv1.DocumentDroppedCondition, true, cellosv1.DocumentTooLargeReason,
			fmt.Sprintf("The formation's first event carried a document of more than %d bytes; status does not keep it", fold.MaxDocumentBytes), generation, metav1.NewTime(now))
	} else {
		meta.RemoveStatusCondition(&s.Conditions, cellosv1.DocumentDroppedCondition)
	}
	return s
}

// storable tells whether a document belongs in status: a JSON value other
// than null (the fold keeps null for a first event without data). The fold
// admits only JSON whose numbers fit a float64, which the API server can
// store.
func storable(doc json.RawMessage) bool {
	var v any
	return json.Unmarshal(doc, &v) == nil && v != nil
}

// CellStatus is the status a Cell must have: the projection c with its stream
// stamp, and kstatus conditions for the object's generation. Conditions that
// do not change keep their lastTransitionTime.
func CellStatus(c *fold.Cell, stamp string, generation int64, existing []metav1.Condition, now time.Time) cellosv1.CellStatus {
	s := cellosv1.CellStatus{
		CellID:              c.ID,
		SpecID:              c.SpecID,
		RunID:               c.RunID,
		FormationID:         c.FormationID,
		State:               c.State,
		StartedAt:           metaTime(c.StartedAt),
		DestroyedAt:         metaTime(c.DestroyedAt),
		Outcome:             c.Outcome,
		ExitCode:            c.ExitCode,
		LastAppliedSequence: int64(c.LastAppliedSequence),
		FinishedAt:          metaTime(c.FinishedAt),
		StreamStamp:         stamp,
		ObservedGeneration:  generation,
		Conditions:          append([]metav1.Condition(nil), existing...),
	}
	setSummary(&s.Conditions, cellSummary(s.State, s.Outcome), generation, metav1.NewTime(now))
	return s
}

func metaTime(t *time.Time) *metav1.Time {
	if t == nil {
		return nil
	}
	// Status carries whole seconds, as metav1.Time serializes them; rounding
	// here keeps the status built equal to the one read back, so that an
	// unchanged object costs no write.
	mt := metav1.NewTime(t.UTC().Truncate(time.Second))
	return &mt
}

// SameDocument tells whether two documents hold the same JSON. The API server
// re-serializes what it stores, so bytes differ where meaning does not.
func SameDocument(a, b *runtime.RawExtension) bool {
	if a == nil || b == nil {
		return a == b
	}
	var va, vb any
	if json.Unmarshal(a.Raw, &va) != nil || json.Unmarshal(b.Raw, &vb) != nil {
		return string(a.Raw) == string(b.Raw)
	}
	return reflect.DeepEqual(va, vb)
}
