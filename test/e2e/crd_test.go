package e2e

import (
	"context"
	"os/exec"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/test/localenv"
)

// newNamespace gives each test a namespace of its own. envtest runs no
// namespace controller and no garbage collector, so the test empties it of
// cellos objects at the end, finalizers included: stream ids are global, and
// the next test's operator must not find them.
func newNamespace(tb testing.TB) string {
	tb.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "e2e-"}}
	if err := controlPlane.Client.Create(context.Background(), ns); err != nil {
		tb.Fatalf("creating namespace: %v", err)
	}
	emptyOnCleanup(tb, ns.Name)
	return ns.Name
}

// emptyOnCleanup empties namespace ns of cellos objects, finalizers
// included, when the test ends.
func emptyOnCleanup(tb testing.TB, ns string) {
	tb.Helper()
	tb.Cleanup(func() {
		ctx := context.Background()
		c := controlPlane.Client
		var formations cellosv1.FormationList
		if err := c.List(ctx, &formations, client.InNamespace(ns)); err != nil {
			tb.Errorf("listing Formations in %s: %v", ns, err)
		}
		for i := range formations.Items {
			f := &formations.Items[i]
			if len(f.Finalizers) > 0 {
				f.Finalizers = nil
				if err := client.IgnoreNotFound(c.Update(ctx, f)); err != nil {
					tb.Errorf("removing finalizers of %s: %v", f.Name, err)
				}
			}
		}
		for _, obj := range []client.Object{&cellosv1.Formation{}, &cellosv1.Cell{}} {
			if err := c.DeleteAllOf(ctx, obj, client.InNamespace(ns)); err != nil {
				tb.Errorf("emptying namespace %s: %v", ns, err)
			}
		}
	})
}

func kubectl(tb testing.TB, args ...string) string {
	tb.Helper()
	cmd := exec.Command(localenv.Binary("kubectl"), append([]string{"--kubeconfig", controlPlane.KubeconfigPath}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		tb.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func member(name, authorizedBy string) cellosv1.FormationMember {
	return cellosv1.FormationMember{Name: name, AuthorizedBy: authorizedBy}
}

func TestFormationAdmission(t *testing.T) {
	ns := newNamespace(t)
	cases := []struct {
		name string
		spec cellosv1.FormationSpec
		// wantErr is empty when the API server must accept the Formation,
		// else a part of the message it must refuse it with.
		wantErr string
	}{
		{
			name: "coordinator alone",
			spec: cellosv1.FormationSpec{Coordinator: "lead", Members: []cellosv1.FormationMember{member("lead", "")}},
		},
		{
			name: "chain of authorization",
			spec: cellosv1.FormationSpec{Coordinator: "lead", Members: []cellosv1.FormationMember{
				member("lead", ""), member("planner", "lead"), member("worker-1", "planner"),
			}},
		},
		{
			name: "duplicate member names",
			spec: cellosv1.FormationSpec{Coordinator: "lead", Members: []cellosv1.FormationMember{
				member("lead", ""), member("worker", "lead"), member("worker", "lead"),
			}},
			wantErr: "member names must be unique",
		},
		{
			name: "coordinator not a member",
			spec: cellosv1.FormationSpec{Coordinator: "boss", Members: []cellosv1.FormationMember{
				member("lead", ""),
			}},
			wantErr: "coordinator must name one of the members",
		},
		{
			name: "member without authorizedBy",
			spec: cellosv1.FormationSpec{Coordinator: "lead", Members: []cellosv1.FormationMember{
				member("lead", ""), member("worker", ""),
			}},
			wantErr: "every member other than the coordinator needs authorizedBy",
		},
		{
			name: "authorizedBy names a stranger",
			spec: cellosv1.FormationSpec{Coordinator: "lead", Members: []cellosv1.FormationMember{
				member("lead", ""), member("worker", "ghost"),
			}},
			wantErr: "authorizedBy must name another member of the formation",
		},
		{
			name: "member authorizes itself",
			spec: cellosv1.FormationSpec{Coordinator: "lead", Members: []cellosv1.FormationMember{
				member("lead", ""), member("worker", "worker"),
			}},
			wantErr: "authorizedBy must name another member of the formation",
		},
		{
			name:    "no members",
			spec:    cellosv1.FormationSpec{Coordinator: "lead"},
			wantErr: "spec.members",
		},
		{
			name: "member name not a DNS label",
			spec: cellosv1.FormationSpec{Coordinator: "Lead", Members: []cellosv1.FormationMember{
				member("Lead", ""),
			}},
			wantErr: "spec.members[0].name",
		},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			spec := tc.spec
			f := &cellosv1.Formation{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "f" + string(rune('a'+i))},
				Spec:       &spec,
			}
			err := controlPlane.Client.Create(context.Background(), f)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("valid Formation refused: %v", err)
			case tc.wantErr != "" && err == nil:
				t.Fatalf("invalid Formation accepted; want refusal with %q", tc.wantErr)
			case tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr):
				t.Fatalf("refusal %q does not say %q", err, tc.wantErr)
			}
		})
	}
}

func TestObservedFormationNeedsNoSpec(t *testing.T) {
	ns := newNamespace(t)
	f := &cellosv1.Formation{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "observed"}}
	if err := controlPlane.Client.Create(context.Background(), f); err != nil {
		t.Fatalf("a Formation without spec must be accepted: %v", err)
	}
}

func TestKubectlGetShowsPrinterColumns(t *testing.T) {
	ns := newNamespace(t)
	ctx := context.Background()
	f := &cellosv1.Formation{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "demo"}}
	if err := controlPlane.Client.Create(ctx, f); err != nil {
		t.Fatal(err)
	}
	f.Status = cellosv1.FormationStatus{
		FormationID: "02daa0b3-49a7-a4bf-8050-cbb812881d4e", Phase: cellosv1.FormationRunning,
		Cells: "1/2", LastAppliedSequence: 16,
	}
	if err := controlPlane.Client.Status().Update(ctx, f); err != nil {
		t.Fatal(err)
	}
	exit := int32(3)
	c := &cellosv1.Cell{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "cell-0"}}
	if err := controlPlane.Client.Create(ctx, c); err != nil {
		t.Fatal(err)
	}
	c.Status = cellosv1.CellStatus{
		CellID: "cell-0", SpecID: "spec-8", State: cellosv1.CellDestroyed, Outcome: "failed",
		ExitCode: &exit, FormationID: "02daa0b3-49a7-a4bf-8050-cbb812881d4e",
	}
	if err := controlPlane.Client.Status().Update(ctx, c); err != nil {
		t.Fatal(err)
	}

	out := kubectl(t, "get", "formations,cells", "-n", ns)
	for _, want := range []string{
		"NAME", "PHASE", "CELLS", "AGE", "formation.cellos.dev/demo", "Running", "1/2",
		"STATE", "OUTCOME", "EXIT CODE", "FORMATION", "cell.cellos.dev/cell-0", "Destroyed", "failed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl get formations,cells lacks %q:\n%s", want, out)
		}
	}
	wide := kubectl(t, "get", "formations,cells", "-n", ns, "-o", "wide")
	for _, want := range []string{"FORMATION ID", "LAST SEQ", "16", "CELL ID", "SPEC", "spec-8"} {
		if !strings.Contains(wide, want) {
			t.Errorf("kubectl get -o wide lacks %q:\n%s", want, wide)
		}
	}
	if cat := kubectl(t, "get", "cellos", "-n", ns); !strings.Contains(cat, "formation.cellos.dev/demo") || !strings.Contains(cat, "cell.cellos.dev/cell-0") {
		t.Errorf("category cellos does not list both kinds:\n%s", cat)
	}
}

func TestKubectlExplainTeaches(t *testing.T) {
	out := kubectl(t, "explain", "formation.spec")
	for _, want := range []string{"coordinator", "members", "authorizedBy", "declares the formation"} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl explain formation.spec lacks %q:\n%s", want, out)
		}
	}
	out = kubectl(t, "explain", "cell.status")
	for _, want := range []string{"cellId", "lastAppliedSequence", "exitCode"} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl explain cell.status lacks %q:\n%s", want, out)
		}
	}
}
