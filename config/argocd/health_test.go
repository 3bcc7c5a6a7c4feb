package argocd

import (
	"bytes"
	"flag"
	"os"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/internal/fold"
	"cellos.dev/cellos-operator/internal/status"
)

var update = flag.Bool("update", false, "write argocd-cm-patch.yaml from the .lua files")

var now = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

const formationID = "5b0e8f4c-7d1a-4c2e-9f3b-2a6d8e1c4b7a"

// The patch embeds the scripts exactly as they are in their files.
func TestConfigMapPatch(t *testing.T) {
	const file = "argocd-cm-patch.yaml"
	want := ConfigMapPatch()
	if *update {
		if err := os.WriteFile(file, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is stale: run (cd config/argocd && go test -run TestConfigMapPatch -update)", file)
	}

	var cm corev1.ConfigMap
	if err := k8syaml.NewYAMLOrJSONDecoder(bytes.NewReader(got), 4096).Decode(&cm); err != nil {
		t.Fatal(err)
	}
	if cm.Kind != "ConfigMap" || cm.Name != "argocd-cm" || cm.Namespace != "argocd" {
		t.Errorf("the patch is for %s %s/%s, not ConfigMap argocd/argocd-cm", cm.Kind, cm.Namespace, cm.Name)
	}
	if len(cm.Data) != len(Scripts) {
		t.Errorf("the patch has %d keys, want %d", len(cm.Data), len(Scripts))
	}
	for kind, name := range ScriptFiles {
		script, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if string(script) != Scripts[kind] {
			t.Errorf("Scripts[%q] is not %s", kind, name)
		}
		if cm.Data[ConfigMapKey(kind)] != string(script) {
			t.Errorf("the patch's %s differs from %s:\n%s", ConfigMapKey(kind), name, cm.Data[ConfigMapKey(kind)])
		}
	}
}

// setKstatus sets Ready, Reconciling and Stalled as the operator writes them:
// the one named true, the other two false, all with the same reason.
func setKstatus(conds *[]metav1.Condition, trueType, reason, message string) {
	for _, t := range []string{cellosv1.ReadyCondition, cellosv1.ReconcilingCondition, cellosv1.StalledCondition} {
		s := metav1.ConditionFalse
		if t == trueType {
			s = metav1.ConditionTrue
		}
		meta.SetStatusCondition(conds, metav1.Condition{Type: t, Status: s, Reason: reason, Message: message, ObservedGeneration: 1, LastTransitionTime: metav1.NewTime(now)})
	}
}

func setPublished(conds *[]metav1.Condition, ok bool, reason, message string) {
	s := metav1.ConditionFalse
	if ok {
		s = metav1.ConditionTrue
	}
	meta.SetStatusCondition(conds, metav1.Condition{Type: cellosv1.PublishedCondition, Status: s, Reason: reason, Message: message, ObservedGeneration: 1, LastTransitionTime: metav1.NewTime(now)})
}

// projected is the status the operator writes for a formation in phase.
func projected(phase cellosv1.FormationPhase, degraded bool) func(*cellosv1.FormationStatus) {
	return func(s *cellosv1.FormationStatus) {
		f := &fold.Formation{ID: formationID, Name: "research", Phase: phase, Degraded: degraded, Document: []byte(`{"formationId":"` + formationID + `"}`), LastAppliedSequence: 7}
		*s = status.FormationStatus(f, "stamp", cellosv1.CellCounts{Total: 2, Running: 1, Destroyed: 1}, 1, s.Conditions, now)
	}
}

// formationCase is a Formation's status and the health Argo CD must show.
type formationCase struct {
	Name   string
	Status func(*cellosv1.FormationStatus) // nil: no status at all
	Health string
	// Message is the message of this condition type when it starts with
	// "condition:", else the message itself.
	Message string
}

// formationCases cover every phase and every condition the operator writes.
var formationCases = []formationCase{
	{"applied, no status yet", nil, "Progressing", "Waiting for the cellos operator to report status"},
	{"awaiting admission", func(s *cellosv1.FormationStatus) {
		setKstatus(&s.Conditions, cellosv1.ReconcilingCondition, cellosv1.AwaitingAdmissionReason, "The operator has not admitted this formation yet")
	}, "Progressing", "condition:Reconciling"},
	{"publish failed", func(s *cellosv1.FormationStatus) {
		s.FormationID = formationID
		setKstatus(&s.Conditions, cellosv1.ReconcilingCondition, cellosv1.AwaitingAdmissionReason, "The operator has not published this formation yet")
		setPublished(&s.Conditions, false, cellosv1.PublishFailedReason, "Publishing the created event failed: nats: timeout; retrying")
	}, "Progressing", "condition:Published"},
	{"awaiting the stream", func(s *cellosv1.FormationStatus) {
		status.SetAwaitingStream(s, 1, now)
	}, "Progressing", "condition:Reconciling"},
	{"published, awaiting the stream", func(s *cellosv1.FormationStatus) {
		s.FormationID = formationID
		status.SetAwaitingStream(s, 1, now)
		setPublished(&s.Conditions, true, cellosv1.PublishedReason, "The created event is in the stream")
	}, "Progressing", "condition:Reconciling"},
	{"pending", projected(cellosv1.FormationPending, false), "Progressing", "condition:Reconciling"},
	{"running", projected(cellosv1.FormationRunning, false), "Progressing", "condition:Ready"},
	{"running degraded", projected(cellosv1.FormationRunning, true), "Progressing", "condition:Degraded"},
	{"succeeded", projected(cellosv1.FormationSucceeded, false), "Healthy", "condition:Complete"},
	{"failed", projected(cellosv1.FormationFailed, false), "Degraded", "condition:Stalled"},
	{"failed after degraded", projected(cellosv1.FormationFailed, true), "Degraded", "condition:Stalled"},
	{"cancelled", projected(cellosv1.FormationCancelled, false), "Degraded", "condition:Stalled"},
	{"invalid spec", func(s *cellosv1.FormationStatus) {
		setKstatus(&s.Conditions, cellosv1.StalledCondition, cellosv1.InvalidSpecReason, "Member worker-1 is authorized by itself; create a corrected Formation")
	}, "Degraded", "condition:Stalled"},
	{"takeover refused", func(s *cellosv1.FormationStatus) {
		setKstatus(&s.Conditions, cellosv1.StalledCondition, cellosv1.TakeoverRefusedReason, "Formation "+formationID+" belongs to namespace team-a")
	}, "Degraded", "condition:Stalled"},
	{"running, once admitted and published", func(s *cellosv1.FormationStatus) {
		setPublished(&s.Conditions, true, cellosv1.PublishedReason, "The created event is in the stream")
		projected(cellosv1.FormationRunning, false)(s)
	}, "Progressing", "condition:Ready"},
}

// wantMessage is the message Argo CD must show for a case, read from the
// status when the case names a condition.
func (c formationCase) wantMessage(s cellosv1.FormationStatus) string {
	if len(c.Message) > len("condition:") && c.Message[:len("condition:")] == "condition:" {
		typ := c.Message[len("condition:"):]
		if cond := meta.FindStatusCondition(s.Conditions, typ); cond != nil {
			return cond.Message
		}
		return "no condition " + typ
	}
	return c.Message
}

func declared(name string) *cellosv1.Formation {
	return &cellosv1.Formation{
		TypeMeta:   metav1.TypeMeta{APIVersion: cellosv1.GroupVersion.String(), Kind: "Formation"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "team", Generation: 1},
		Spec: &cellosv1.FormationSpec{Coordinator: "lead", Members: []cellosv1.FormationMember{
			{Name: "lead"}, {Name: "worker-1", AuthorizedBy: "lead"},
		}},
	}
}

func unstructuredOf(t *testing.T, obj runtime.Object) map[string]any {
	t.Helper()
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestFormationHealth(t *testing.T) {
	for _, tc := range formationCases {
		t.Run(tc.Name, func(t *testing.T) {
			f := declared("research")
			if tc.Status != nil {
				tc.Status(&f.Status)
			}
			got, err := Assess(FormationHealth, unstructuredOf(t, f))
			if err != nil {
				t.Fatal(err)
			}
			want := Health{Status: tc.Health, Message: tc.wantMessage(f.Status)}
			if got != want {
				t.Errorf("got %+v, want %+v", got, want)
			}
		})
	}
}

// A status without conditions, such as one written by hand, still reads by
// its phase.
func TestFormationHealthFromThePhaseAlone(t *testing.T) {
	for phase, want := range map[string]Health{
		"Pending":   {"Progressing", "Waiting for the cellos operator to report status"},
		"Running":   {"Progressing", "Waiting for the cellos operator to report status"},
		"Succeeded": {"Healthy", "Phase Succeeded"},
		"Failed":    {"Degraded", "Phase Failed"},
		"Cancelled": {"Degraded", "Phase Cancelled"},
	} {
		obj := map[string]any{"kind": "Formation", "status": map[string]any{"phase": phase}}
		got, err := Assess(FormationHealth, obj)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("phase %s: got %+v, want %+v", phase, got, want)
		}
	}
	// A stalled condition without a message says its reason.
	obj := map[string]any{"status": map[string]any{"conditions": []any{
		map[string]any{"type": "Stalled", "status": "True", "reason": cellosv1.TakeoverRefusedReason},
	}}}
	if got, err := Assess(FormationHealth, obj); err != nil || got != (Health{"Degraded", cellosv1.TakeoverRefusedReason}) {
		t.Errorf("stalled without a message: %+v, %v", got, err)
	}
}

// cellCase is a Cell's projection and the health Argo CD must show.
type cellCase struct {
	Name    string
	Cell    *fold.Cell // nil: no status at all
	Health  string
	Message string // as formationCase.Message
}

func exitCode(n int32) *int32 { return &n }

// cellCases cover every state and outcome.
var cellCases = []cellCase{
	{"no status yet", nil, "Progressing", "Waiting for the cellos operator to report status"},
	{"pending", &fold.Cell{ID: "research-lead", FormationID: formationID, State: cellosv1.CellPending, LastAppliedSequence: 3}, "Progressing", "condition:Reconciling"},
	{"running", &fold.Cell{ID: "research-lead", FormationID: formationID, State: cellosv1.CellRunning, StartedAt: &now, LastAppliedSequence: 4}, "Progressing", "condition:Ready"},
	{"destroyed after succeeding", &fold.Cell{ID: "research-lead", State: cellosv1.CellDestroyed, Outcome: cellosv1.OutcomeSucceeded, ExitCode: exitCode(0), LastAppliedSequence: 5}, "Healthy", "condition:Ready"},
	{"destroyed after failing", &fold.Cell{ID: "research-lead", State: cellosv1.CellDestroyed, Outcome: cellosv1.OutcomeFailed, ExitCode: exitCode(3), LastAppliedSequence: 5}, "Degraded", "condition:Stalled| (exit code 3)"},
	{"destroyed with another outcome", &fold.Cell{ID: "research-lead", State: cellosv1.CellDestroyed, Outcome: "evicted", LastAppliedSequence: 5}, "Degraded", "condition:Stalled"},
	{"destroyed without an outcome", &fold.Cell{ID: "research-lead", State: cellosv1.CellDestroyed, LastAppliedSequence: 5}, "Degraded", "condition:Stalled"},
}

// wantMessage is as formationCase.wantMessage; "condition:T|suffix" is the
// message of condition T followed by suffix.
func (c cellCase) wantMessage(s cellosv1.CellStatus) string {
	const prefix = "condition:"
	if len(c.Message) <= len(prefix) || c.Message[:len(prefix)] != prefix {
		return c.Message
	}
	typ, suffix := c.Message[len(prefix):], ""
	for i := range typ {
		if typ[i] == '|' {
			typ, suffix = typ[:i], typ[i+1:]
			break
		}
	}
	if cond := meta.FindStatusCondition(s.Conditions, typ); cond != nil {
		return cond.Message + suffix
	}
	return "no condition " + typ
}

func TestCellHealth(t *testing.T) {
	for _, tc := range cellCases {
		t.Run(tc.Name, func(t *testing.T) {
			c := &cellosv1.Cell{
				TypeMeta:   metav1.TypeMeta{APIVersion: cellosv1.GroupVersion.String(), Kind: "Cell"},
				ObjectMeta: metav1.ObjectMeta{Name: "research-lead", Namespace: "team", Generation: 1},
			}
			if tc.Cell != nil {
				c.Status = status.CellStatus(tc.Cell, "stamp", 1, nil, now)
			}
			got, err := Assess(CellHealth, unstructuredOf(t, c))
			if err != nil {
				t.Fatal(err)
			}
			want := Health{Status: tc.Health, Message: tc.wantMessage(c.Status)}
			if got != want {
				t.Errorf("got %+v, want %+v", got, want)
			}
		})
	}
	// Without conditions, the fallbacks say the outcome and the exit code.
	obj := map[string]any{"status": map[string]any{"state": "Destroyed", "outcome": "failed", "exitCode": int64(137)}}
	if got, err := Assess(CellHealth, obj); err != nil || got != (Health{"Degraded", "Destroyed, outcome failed (exit code 137)"}) {
		t.Errorf("destroyed without conditions: %+v, %v", got, err)
	}
}

// Assess refuses what Argo CD would not show.
func TestAssessRefusesBadScripts(t *testing.T) {
	for script, why := range map[string]string{
		`return "Healthy"`:                                 "a string, not a table",
		`return { status = "Fine" }`:                       "not a health status",
		`return { status = "Healthy", message = 1 }`:       "a number as message",
		`return { status = string.lower("Healthy") }`:      "the string library, which Argo CD does not open",
		`while true do end`:                                "runs past a second",
		`return { status = "Healthy", message = obj.x.y }`: "indexes nil",
	} {
		if h, err := Assess(script, map[string]any{}); err == nil {
			t.Errorf("%s (%s): got %+v, want an error", script, why, h)
		}
	}
}
