package e2e

// What GitOps tools see of Formations and Cells, on real objects: each status
// the operator writes, built by the operator's own status builders, written
// through the status subresource and read back from the API server. The
// tables below are the table of docs/gitops.md.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	kstatus "sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/internal/fold"
	"cellos.dev/cellos-operator/internal/status"
	"cellos.dev/cellos-operator/test/localenv"
)

const gitopsFormationID = "3f6c2a1e-8b4d-4f7a-9c2e-5d1b7a9e0c34"

var gitopsNow = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

// gitopsPhase is the status the operator writes for a formation in phase.
func gitopsPhase(phase cellosv1.FormationPhase, degraded bool) func(*cellosv1.FormationStatus) {
	return func(s *cellosv1.FormationStatus) {
		f := &fold.Formation{ID: gitopsFormationID, Name: "research", Phase: phase, Degraded: degraded, Document: []byte(`{"formationId":"` + gitopsFormationID + `"}`), LastAppliedSequence: 9}
		*s = status.FormationStatus(f, "stamp", cellosv1.CellCounts{Total: 3, Running: 2, Pending: 1}, 1, s.Conditions, gitopsNow)
	}
}

// seen is what each tool shows of one object.
type seen struct {
	column  string         // kubectl get: PHASE of a Formation, STATE of a Cell ("" when empty)
	ready   bool           // kubectl wait --for=condition=Ready returns at once
	argo    string         // Argo CD health, with the checks of config/argocd
	kstatus kstatus.Status // kstatus: Flux wait and healthChecks, kubectl and cli-utils
}

func TestGitOpsToolsReadFormations(t *testing.T) {
	ns := newNamespace(t)
	cases := []struct {
		name   string
		status func(*cellosv1.FormationStatus) // nil: no status written yet
		// deleting: deleted while the cancel finalizer holds it. kubectl wait
		// meets no condition on an object being deleted.
		deleting bool
		want     seen
	}{
		// Before the operator writes anything, kstatus finds no condition
		// and calls the object Current; docs/gitops.md says so.
		{"applied", nil, false, seen{"", false, "Progressing", kstatus.CurrentStatus}},
		{"awaiting-admission", func(s *cellosv1.FormationStatus) {
			status.SetHeld(s, 1, false, cellosv1.AwaitingAdmissionReason, "Waiting for the operator to admit this formation", gitopsNow)
		}, false, seen{"", false, "Progressing", kstatus.InProgressStatus}},
		{"publish-failed", func(s *cellosv1.FormationStatus) {
			s.FormationID = gitopsFormationID
			status.SetHeld(s, 1, false, cellosv1.AwaitingAdmissionReason, "Waiting for the created event to be published", gitopsNow)
			status.SetPublished(s, 1, false, cellosv1.PublishFailedReason, "Publishing the created event failed: nats: timeout; retrying", gitopsNow)
		}, false, seen{"", false, "Progressing", kstatus.InProgressStatus}},
		{"awaiting-stream", func(s *cellosv1.FormationStatus) {
			s.FormationID = gitopsFormationID
			status.SetPublished(s, 1, true, cellosv1.PublishedReason, "The created event is in the stream", gitopsNow)
			status.SetAwaitingStream(s, 1, gitopsNow)
		}, false, seen{"", false, "Progressing", kstatus.InProgressStatus}},
		{"pending", gitopsPhase(cellosv1.FormationPending, false), false, seen{"Pending", false, "Progressing", kstatus.InProgressStatus}},
		{"running", gitopsPhase(cellosv1.FormationRunning, false), false, seen{"Running", true, "Progressing", kstatus.CurrentStatus}},
		{"degraded", gitopsPhase(cellosv1.FormationRunning, true), false, seen{"Running", true, "Progressing", kstatus.CurrentStatus}},
		{"succeeded", gitopsPhase(cellosv1.FormationSucceeded, false), false, seen{"Succeeded", true, "Healthy", kstatus.CurrentStatus}},
		{"failed", gitopsPhase(cellosv1.FormationFailed, false), false, seen{"Failed", false, "Degraded", kstatus.FailedStatus}},
		{"cancelled", gitopsPhase(cellosv1.FormationCancelled, false), false, seen{"Cancelled", false, "Degraded", kstatus.FailedStatus}},
		{"invalid-spec", func(s *cellosv1.FormationStatus) {
			status.SetHeld(s, 1, true, cellosv1.InvalidSpecReason, "The spec breaks an admission rule; create a corrected Formation", gitopsNow)
		}, false, seen{"", false, "Degraded", kstatus.FailedStatus}},
		{"takeover-refused", func(s *cellosv1.FormationStatus) {
			status.SetHeld(s, 1, true, cellosv1.TakeoverRefusedReason, "The formation belongs to another namespace", gitopsNow)
		}, false, seen{"", false, "Degraded", kstatus.FailedStatus}},
		{"deleting", gitopsPhase(cellosv1.FormationRunning, false), true, seen{"Running", false, "Progressing", kstatus.TerminatingStatus}},
	}
	ctx := context.Background()
	c := controlPlane.Client
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := &cellosv1.Formation{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: tc.name},
				Spec: &cellosv1.FormationSpec{Coordinator: "lead", Members: []cellosv1.FormationMember{
					member("lead", ""), member("worker-1", "lead"),
				}},
			}
			if tc.deleting {
				f.Finalizers = []string{cellosv1.CancelFinalizer}
			}
			if err := c.Create(ctx, f); err != nil {
				t.Fatal(err)
			}
			if tc.status != nil {
				tc.status(&f.Status)
				if err := c.Status().Update(ctx, f); err != nil {
					t.Fatal(err)
				}
			}
			if tc.deleting {
				if err := c.Delete(ctx, f); err != nil {
					t.Fatal(err)
				}
			}
			u := readBack(t, ns, "Formation", tc.name)
			assertSeen(t, u, "PHASE", tc.want)

			// The message Argo CD shows is the operator's: that of the
			// condition that decided.
			h := argoCDHealth(t, u)
			var got cellosv1.Formation
			if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: tc.name}, &got); err != nil {
				t.Fatal(err)
			}
			if !tc.deleting && tc.status != nil && !hasConditionMessage(got.Status.Conditions, h.Message) {
				t.Errorf("Argo CD's message %q is none of the conditions' messages", h.Message)
			}
		})
	}
}

func TestGitOpsToolsReadCells(t *testing.T) {
	ns := newNamespace(t)
	exit := func(n int32) *int32 { return &n }
	cases := []struct {
		name string
		cell *fold.Cell // nil: no status written yet
		want seen
	}{
		{"cell-new", nil, seen{"", false, "Progressing", kstatus.CurrentStatus}},
		{"cell-pending", &fold.Cell{State: cellosv1.CellPending}, seen{"Pending", false, "Progressing", kstatus.InProgressStatus}},
		{"cell-running", &fold.Cell{State: cellosv1.CellRunning, StartedAt: &gitopsNow}, seen{"Running", true, "Progressing", kstatus.CurrentStatus}},
		{"cell-succeeded", &fold.Cell{State: cellosv1.CellDestroyed, Outcome: cellosv1.OutcomeSucceeded, ExitCode: exit(0)}, seen{"Destroyed", true, "Healthy", kstatus.CurrentStatus}},
		{"cell-failed", &fold.Cell{State: cellosv1.CellDestroyed, Outcome: cellosv1.OutcomeFailed, ExitCode: exit(2)}, seen{"Destroyed", false, "Degraded", kstatus.FailedStatus}},
		{"cell-evicted", &fold.Cell{State: cellosv1.CellDestroyed, Outcome: "evicted"}, seen{"Destroyed", false, "Degraded", kstatus.FailedStatus}},
	}
	ctx := context.Background()
	c := controlPlane.Client
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cell := &cellosv1.Cell{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: tc.name}}
			if err := c.Create(ctx, cell); err != nil {
				t.Fatal(err)
			}
			if tc.cell != nil {
				p := *tc.cell
				p.ID, p.FormationID, p.LastAppliedSequence = tc.name, gitopsFormationID, 4
				cell.Status = status.CellStatus(&p, "stamp", cell.Generation, nil, gitopsNow)
				if err := c.Status().Update(ctx, cell); err != nil {
					t.Fatal(err)
				}
			}
			assertSeen(t, readBack(t, ns, "Cell", tc.name), "STATE", tc.want)
		})
	}
}

// readBack gets an object as every tool gets it: unstructured, from the API
// server.
func readBack(t *testing.T, ns, kind, name string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(cellosv1.GroupVersion.WithKind(kind))
	if err := controlPlane.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, u); err != nil {
		t.Fatal(err)
	}
	return u
}

// assertSeen asks each tool what it sees of u: kubectl get and kubectl wait
// as binaries, Argo CD's check through the argocd-health binary, kstatus as
// Flux calls it.
func assertSeen(t *testing.T, u *unstructured.Unstructured, column string, want seen) {
	t.Helper()
	resource := strings.ToLower(u.GetKind()) + "/" + u.GetName()
	var got seen
	got.column = printerColumn(t, u.GetNamespace(), resource, column)
	wait := exec.Command(localenv.Binary("kubectl"), "--kubeconfig", controlPlane.KubeconfigPath,
		"wait", "-n", u.GetNamespace(), "--for=condition=Ready", "--timeout=0s", resource)
	waitOut, err := wait.CombinedOutput()
	got.ready = err == nil
	h := argoCDHealth(t, u)
	got.argo = h.Status
	res, err := kstatus.Compute(u)
	if err != nil {
		t.Fatal(err)
	}
	got.kstatus = res.Status
	if got != want {
		t.Errorf("%s: got %+v, want %+v (kubectl wait says %q, Argo CD %q, kstatus %q)", resource, got, want, strings.TrimSpace(string(waitOut)), h.Message, res.Message)
	}
}

// printerColumn is the value kubectl get prints under the header, "" when
// it prints <none> or nothing.
func printerColumn(t *testing.T, ns, resource, header string) string {
	t.Helper()
	out := kubectl(t, "get", "-n", ns, resource)
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("kubectl get %s printed %q", resource, out)
	}
	at := strings.Index(lines[0], header)
	if at < 0 {
		t.Fatalf("kubectl get %s has no column %s: %q", resource, header, lines[0])
	}
	if at >= len(lines[1]) {
		return ""
	}
	value, _, _ := strings.Cut(lines[1][at:], " ")
	if value == "<none>" {
		return ""
	}
	return value
}

func hasConditionMessage(conds []metav1.Condition, msg string) bool {
	return slices.ContainsFunc(conds, func(c metav1.Condition) bool { return c.Message == msg })
}

// The samples are valid declared Formations, and the kustomization lists
// every one: the API server accepts them all in a server-side dry run.
func TestSamplesAreValidFormations(t *testing.T) {
	ns := newNamespace(t)
	dir := filepath.Join(localenv.RepoRoot(), "config", "samples")
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	kustomization, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var samples int
	for _, file := range files {
		name := filepath.Base(file)
		if name == "kustomization.yaml" {
			continue
		}
		samples++
		if !strings.Contains(string(kustomization), "- "+name+"\n") {
			t.Errorf("config/samples/kustomization.yaml does not list %s", name)
		}
		raw, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var f cellosv1.Formation
		if err := k8syaml.NewYAMLOrJSONDecoder(bytes.NewReader(raw), 4096).Decode(&f); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if f.Kind != "Formation" || f.Spec == nil {
			t.Errorf("%s is not a declared Formation", name)
		}
		f.Namespace = ns
		if err := controlPlane.Client.Create(context.Background(), &f, client.DryRunAll); err != nil {
			t.Errorf("%s: the API server refuses it: %v", name, err)
		}
	}
	out := kubectl(t, "apply", "--dry-run=server", "-n", ns, "-k", dir)
	if got := strings.Count(out, "(server dry run)"); got != samples {
		t.Errorf("kubectl apply -k config/samples applied %d objects, want %d:\n%s", got, samples, out)
	}
}

// The patch in config/argocd merges into an existing argocd-cm as the docs
// say, and leaves its other keys alone.
func TestArgoCDConfigMapPatchInstalls(t *testing.T) {
	ctx := context.Background()
	c := controlPlane.Client
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "argocd"}}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: "argocd", Name: "argocd-cm"},
		Data:       map[string]string{"url": "https://argocd.example.com"},
	}
	if err := c.Create(ctx, cm); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Delete(context.Background(), cm) })

	kubectl(t, "-n", "argocd", "patch", "configmap", "argocd-cm",
		"--patch-file", filepath.Join(localenv.RepoRoot(), "config", "argocd", "argocd-cm-patch.yaml"))
	if err := c.Get(ctx, client.ObjectKeyFromObject(cm), cm); err != nil {
		t.Fatal(err)
	}
	if cm.Data["url"] != "https://argocd.example.com" {
		t.Errorf("the patch changed another key: url is %q", cm.Data["url"])
	}
	for kind, file := range map[string]string{"Formation": "formation_health.lua", "Cell": "cell_health.lua"} {
		script, err := os.ReadFile(filepath.Join(localenv.RepoRoot(), "config", "argocd", file))
		if err != nil {
			t.Fatal(err)
		}
		key := "resource.customizations.health.cellos.dev_" + kind
		if cm.Data[key] != string(script) {
			t.Errorf("argocd-cm %s is not %s:\n%s", key, file, cm.Data[key])
		}
	}
}

// argoCDHealthBinary is config/argocd's health checker, built once: it runs
// the checks in a Lua interpreter as Argo CD does, in a module of its own so
// that the operator's module does not depend on one.
var argoCDHealthBinary = sync.OnceValues(func() (string, error) {
	path := filepath.Join(binDir, "argocd-health")
	cmd := exec.Command("go", "build", "-o", path, "./cmd/argocd-health")
	cmd.Dir = filepath.Join(localenv.RepoRoot(), "config", "argocd")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building argocd-health: %w\n%s", err, out)
	}
	return path, nil
})

// argoCDHealth is the health Argo CD shows for u with the checks of
// config/argocd installed.
func argoCDHealth(t *testing.T, u *unstructured.Unstructured) (h struct{ Status, Message string }) {
	t.Helper()
	bin, err := argoCDHealthBinary()
	if err != nil {
		t.Fatal(err)
	}
	obj, err := json.Marshal(u.Object)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin)
	cmd.Stdin = bytes.NewReader(obj)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("Argo CD health check of %s/%s: %v: %s", u.GetKind(), u.GetName(), err, exitStderr(err))
	}
	if err := json.Unmarshal(out, &h); err != nil {
		t.Fatalf("argocd-health printed %q: %v", out, err)
	}
	return h
}

// exitStderr is what a command that failed wrote to standard error.
func exitStderr(err error) string {
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return strings.TrimSpace(string(exit.Stderr))
	}
	return ""
}
