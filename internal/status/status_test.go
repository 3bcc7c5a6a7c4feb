package status

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/internal/fold"
)

var now = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

// kstatusOf computes what kubectl wait and Flux see for obj.
func kstatusOf(t *testing.T, obj runtime.Object) status.Status {
	t.Helper()
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		t.Fatal(err)
	}
	res, err := status.Compute(&unstructured.Unstructured{Object: u})
	if err != nil {
		t.Fatal(err)
	}
	return res.Status
}

func TestFormationConditions(t *testing.T) {
	cases := map[string]struct {
		phase    cellosv1.FormationPhase
		degraded bool
		kstatus  status.Status
		true     []string
		// complete is the reason of the Complete condition.
		complete string
	}{
		"pending is in progress":      {cellosv1.FormationPending, false, status.InProgressStatus, []string{cellosv1.ReconcilingCondition}, cellosv1.NotFinishedReason},
		"running is current":          {cellosv1.FormationRunning, false, status.CurrentStatus, []string{cellosv1.ReadyCondition}, cellosv1.NotFinishedReason},
		"degraded is current":         {cellosv1.FormationRunning, true, status.CurrentStatus, []string{cellosv1.ReadyCondition, cellosv1.DegradedCondition}, cellosv1.NotFinishedReason},
		"succeeded is current":        {cellosv1.FormationSucceeded, false, status.CurrentStatus, []string{cellosv1.ReadyCondition, cellosv1.CompleteCondition}, cellosv1.SucceededReason},
		"failed is failed":            {cellosv1.FormationFailed, false, status.FailedStatus, []string{cellosv1.StalledCondition}, cellosv1.FinishedWithoutSuccessReason},
		"cancelled is failed":         {cellosv1.FormationCancelled, false, status.FailedStatus, []string{cellosv1.StalledCondition}, cellosv1.FinishedWithoutSuccessReason},
		"degraded then failed stalls": {cellosv1.FormationFailed, true, status.FailedStatus, []string{cellosv1.StalledCondition, cellosv1.DegradedCondition}, cellosv1.FinishedWithoutSuccessReason},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			f := &fold.Formation{ID: "02daa0b3-49a7-a4bf-8050-cbb812881d4e", Phase: tc.phase, Degraded: tc.degraded, LastAppliedSequence: 7}
			obj := &cellosv1.Formation{ObjectMeta: metav1.ObjectMeta{Generation: 3}}
			obj.Status = FormationStatus(f, "", cellosv1.CellCounts{}, 3, nil, now)
			if got := kstatusOf(t, obj); got != tc.kstatus {
				t.Errorf("kstatus %s, want %s", got, tc.kstatus)
			}
			assertTrueConditions(t, obj.Status.Conditions, tc.true)
			if c := meta.FindStatusCondition(obj.Status.Conditions, cellosv1.CompleteCondition); c == nil || c.Reason != tc.complete {
				t.Errorf("Complete %+v, want reason %s", c, tc.complete)
			}
		})
	}
}

func TestCellConditions(t *testing.T) {
	cases := map[string]struct {
		state   cellosv1.CellState
		outcome string
		kstatus status.Status
		true    []string
	}{
		"pending is in progress":           {cellosv1.CellPending, "", status.InProgressStatus, []string{cellosv1.ReconcilingCondition}},
		"running is current":               {cellosv1.CellRunning, "", status.CurrentStatus, []string{cellosv1.ReadyCondition}},
		"destroyed after success":          {cellosv1.CellDestroyed, "succeeded", status.CurrentStatus, []string{cellosv1.ReadyCondition}},
		"destroyed after failure":          {cellosv1.CellDestroyed, "failed", status.FailedStatus, []string{cellosv1.StalledCondition}},
		"destroyed with no known outcome":  {cellosv1.CellDestroyed, "", status.FailedStatus, []string{cellosv1.StalledCondition}},
		"running again after a re-publish": {cellosv1.CellRunning, "succeeded", status.CurrentStatus, []string{cellosv1.ReadyCondition}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			c := &fold.Cell{ID: "cell-0", State: tc.state, Outcome: tc.outcome, LastAppliedSequence: 4}
			obj := &cellosv1.Cell{ObjectMeta: metav1.ObjectMeta{Generation: 1}}
			obj.Status = CellStatus(c, "", 0, nil, now)
			if got := kstatusOf(t, obj); got != tc.kstatus {
				t.Errorf("kstatus %s, want %s", got, tc.kstatus)
			}
			assertTrueConditions(t, obj.Status.Conditions, tc.true)
		})
	}
}

func assertTrueConditions(t *testing.T, conds []metav1.Condition, want []string) {
	t.Helper()
	var got []string
	for _, c := range conds {
		if c.Status == metav1.ConditionTrue {
			got = append(got, c.Type)
		}
	}
	wantSet := map[string]bool{}
	for _, w := range want {
		wantSet[w] = true
	}
	if len(got) != len(want) {
		t.Fatalf("true conditions %v, want %v", got, want)
	}
	for _, g := range got {
		if !wantSet[g] {
			t.Fatalf("true conditions %v, want %v", got, want)
		}
	}
}

func TestConditionsKeepTransitionTimeWhileUnchanged(t *testing.T) {
	f := &fold.Formation{ID: "02daa0b3-49a7-a4bf-8050-cbb812881d4e", Phase: cellosv1.FormationRunning, LastAppliedSequence: 7}
	first := FormationStatus(f, "", cellosv1.CellCounts{}, 1, nil, now)
	later := FormationStatus(f, "", cellosv1.CellCounts{}, 1, first.Conditions, now.Add(time.Hour))
	if !reflect.DeepEqual(first.Conditions, later.Conditions) {
		t.Fatalf("conditions changed without a transition:\n%v\n%v", first.Conditions, later.Conditions)
	}
	f.Phase = cellosv1.FormationSucceeded
	done := FormationStatus(f, "", cellosv1.CellCounts{}, 1, later.Conditions, now.Add(2*time.Hour))
	ready := meta.FindStatusCondition(done.Conditions, cellosv1.ReadyCondition)
	complete := meta.FindStatusCondition(done.Conditions, cellosv1.CompleteCondition)
	if !ready.LastTransitionTime.Time.Equal(now) || !complete.LastTransitionTime.Time.Equal(now.Add(2*time.Hour)) {
		t.Fatalf("Ready moved at %v (want %v), Complete at %v (want %v)", ready.LastTransitionTime, now, complete.LastTransitionTime, now.Add(2*time.Hour))
	}
}

func TestSameDocument(t *testing.T) {
	raw := func(s string) *runtime.RawExtension { return &runtime.RawExtension{Raw: []byte(s)} }
	cases := map[string]struct {
		a, b *runtime.RawExtension
		same bool
	}{
		"both absent":           {nil, nil, true},
		"one absent":            {raw(`{}`), nil, false},
		"reordered and spaced":  {raw(`{"b": 1, "a": [true]}`), raw(`{"a":[true],"b":1}`), true},
		"different values":      {raw(`{"a":1}`), raw(`{"a":2}`), false},
		"unparsable but equal":  {raw(`{`), raw(`{`), true},
		"unparsable and differ": {raw(`{`), raw(`}`), false},
	}
	for name, tc := range cases {
		if got := SameDocument(tc.a, tc.b); got != tc.same {
			t.Errorf("%s: SameDocument = %v, want %v", name, got, tc.same)
		}
	}
}

func TestAwaitingStreamIsInProgress(t *testing.T) {
	obj := &cellosv1.Formation{ObjectMeta: metav1.ObjectMeta{Generation: 2}}
	SetAwaitingStream(&obj.Status, 2, now)
	if got := kstatusOf(t, obj); got != status.InProgressStatus {
		t.Fatalf("kstatus %s, want InProgress", got)
	}
	assertTrueConditions(t, obj.Status.Conditions, []string{cellosv1.ReconcilingCondition})
	f := &fold.Formation{ID: "x", Phase: cellosv1.FormationRunning, LastAppliedSequence: 1}
	obj.Status = FormationStatus(f, "", cellosv1.CellCounts{}, 2, obj.Status.Conditions, now)
	if got := kstatusOf(t, obj); got != status.CurrentStatus {
		t.Fatalf("after the first event: kstatus %s, want Current", got)
	}
}

func TestUnstorableDocumentsStayOut(t *testing.T) {
	for doc, kept := range map[string]bool{
		`{"formationId":"x"}`: true,
		`{"size":1e400}`:      false,
		`null`:                false,
		``:                    false,
	} {
		f := &fold.Formation{ID: "x", Phase: cellosv1.FormationPending, Document: json.RawMessage(doc), LastAppliedSequence: 1}
		if got := FormationStatus(f, "", cellosv1.CellCounts{}, 1, nil, now).Document != nil; got != kept {
			t.Errorf("document %q kept: %v, want %v", doc, got, kept)
		}
	}
}

// A document the fold dropped for its size leaves a condition that says
// so, and the kstatus the phase gives; a Formation with its document has
// no such condition, even if it had one before.
func TestDroppedDocumentIsSaid(t *testing.T) {
	f := &fold.Formation{ID: "x", Phase: cellosv1.FormationRunning, DocumentDropped: true, LastAppliedSequence: 1}
	obj := &cellosv1.Formation{ObjectMeta: metav1.ObjectMeta{Generation: 1}}
	obj.Status = FormationStatus(f, "", cellosv1.CellCounts{}, 1, nil, now)
	c := meta.FindStatusCondition(obj.Status.Conditions, cellosv1.DocumentDroppedCondition)
	if obj.Status.Document != nil || c == nil || c.Status != metav1.ConditionTrue || c.Reason != cellosv1.DocumentTooLargeReason {
		t.Fatalf("document %v, condition %+v; want none and DocumentDropped=True, reason %s", obj.Status.Document, c, cellosv1.DocumentTooLargeReason)
	}
	if got := kstatusOf(t, obj); got != status.CurrentStatus {
		t.Errorf("kstatus %s, want %s", got, status.CurrentStatus)
	}
	f.DocumentDropped, f.Document = false, json.RawMessage(`{}`)
	if got := FormationStatus(f, "", cellosv1.CellCounts{}, 1, obj.Status.Conditions, now); meta.FindStatusCondition(got.Conditions, cellosv1.DocumentDroppedCondition) != nil {
		t.Error("DocumentDropped kept on a Formation with its document")
	}
}
