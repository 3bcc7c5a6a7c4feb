package e2e

// Who may do what with Formations, on a real API server with RBAC on: the
// aggregated ClusterRoles config/rbac ships, bound in one namespace, and a
// user of that namespace trying to take another team's formation over.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/test/harness"
	"cellos.dev/cellos-operator/test/localenv"
)

// The aggregated roles, by the names an install gives them.
const (
	formationViewerRole = "cellos-formation-viewer"
	formationEditorRole = "cellos-formation-editor"
)

// shippedClusterRoles renders config/default, the install, with kubectl's
// kustomize, and decodes the ClusterRoles of it with these names: the roles
// as shipped, name prefix included.
func shippedClusterRoles(t *testing.T, names ...string) map[string]*rbacv1.ClusterRole {
	t.Helper()
	cmd := exec.Command(localenv.Binary("kubectl"), "kustomize", "config/default")
	cmd.Dir = localenv.RepoRoot()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kubectl kustomize config/default: %v\n%s", err, stderr.String())
	}
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	roles := map[string]*rbacv1.ClusterRole{}
	dec := k8syaml.NewYAMLOrJSONDecoder(bytes.NewReader(out), 4096)
	for {
		var u unstructured.Unstructured
		if err := dec.Decode(&u.Object); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decoding config/default: %v", err)
		}
		if u.GetKind() != "ClusterRole" || !want[u.GetName()] {
			continue
		}
		var role rbacv1.ClusterRole
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &role); err != nil {
			t.Fatalf("ClusterRole %s: %v", u.GetName(), err)
		}
		roles[role.Name] = &role
	}
	for _, n := range names {
		if roles[n] == nil {
			t.Fatalf("config/default ships no ClusterRole %s", n)
		}
	}
	return roles
}

// installClusterRole creates role as shipped, replacing an earlier copy, and
// removes it when the test ends.
func installClusterRole(t *testing.T, role *rbacv1.ClusterRole) {
	t.Helper()
	ctx := context.Background()
	c := controlPlane.Client
	if err := client.IgnoreNotFound(c.Delete(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: role.Name}})); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 30*time.Second, "the earlier ClusterRole "+role.Name+" is gone", func() error {
		err := c.Get(ctx, client.ObjectKey{Name: role.Name}, &rbacv1.ClusterRole{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("still there (%v)", err)
	})
	if err := c.Create(ctx, role.DeepCopy()); err != nil {
		t.Fatalf("installing ClusterRole %s: %v", role.Name, err)
	}
	t.Cleanup(func() {
		_ = c.Delete(context.Background(), &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: role.Name}})
	})
}

// bindInNamespace binds user to the ClusterRole role in ns only.
func bindInNamespace(t *testing.T, ns, role, user string) {
	t.Helper()
	rb := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: user + "-" + role},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: user}},
	}
	if err := controlPlane.Client.Create(context.Background(), rb); err != nil {
		t.Fatal(err)
	}
}

// clientAs is a client that impersonates user, with the test's scheme.
func clientAs(t *testing.T, user string) client.Client {
	t.Helper()
	cfg := rest.CopyConfig(controlPlane.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user}
	c, err := client.New(cfg, client.Options{Scheme: controlPlane.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// allowedTo waits until RBAC lets the user do what do tries: the
// authorizer's cache learns of a new binding within moments.
func allowedTo(t *testing.T, what string, do func() error) {
	t.Helper()
	harness.Eventually(t, 30*time.Second, what, do)
}

// authorizationResourceAttributes is one request, to ask the authorizer
// about for the user a client impersonates.
type authorizationResourceAttributes authorizationv1.ResourceAttributes

func (a *authorizationResourceAttributes) path() string {
	p := a.Resource
	if a.Subresource != "" {
		p += "/" + a.Subresource
	}
	return p + " in " + a.Namespace
}

// ask tells whether the user c impersonates may make the request.
func (a *authorizationResourceAttributes) ask(ctx context.Context, c client.Client) (bool, error) {
	review := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
		ResourceAttributes: (*authorizationv1.ResourceAttributes)(a),
	}}
	if err := c.Create(ctx, review); err != nil {
		return false, err
	}
	return review.Status.Allowed, nil
}

// forbidden checks that RBAC refuses what err came from.
func forbidden(t *testing.T, what string, err error) {
	t.Helper()
	if !apierrors.IsForbidden(err) {
		t.Errorf("%s: got %v, want Forbidden", what, err)
	}
}

// The aggregated roles carry the labels that fold them into view and edit,
// and grant what they say and no more, on a real API server.
func TestAggregatedRolesGrantWhatTheySay(t *testing.T) {
	roles := shippedClusterRoles(t, formationViewerRole, formationEditorRole)
	for name, label := range map[string]string{
		formationViewerRole: "rbac.authorization.k8s.io/aggregate-to-view",
		formationEditorRole: "rbac.authorization.k8s.io/aggregate-to-edit",
	} {
		if roles[name].Labels[label] != "true" {
			t.Errorf("ClusterRole %s lacks the label %s: \"true\" (labels %v)", name, label, roles[name].Labels)
		}
	}
	for _, r := range roles {
		installClusterRole(t, r)
	}
	ns, other := newNamespace(t), newNamespace(t)
	bindInNamespace(t, ns, formationViewerRole, "rbac-viewer")
	bindInNamespace(t, ns, formationEditorRole, "rbac-editor")
	ctx := context.Background()
	viewer, editor := clientAs(t, "rbac-viewer"), clientAs(t, "rbac-editor")

	// What each may do, asked of the authorizer itself: one row a request.
	type row struct {
		verb, resource, subresource, namespace string
		viewer, editor                         bool
	}
	var rows []row
	for _, verb := range []string{"get", "list", "watch"} {
		rows = append(rows,
			row{verb, "formations", "", ns, true, true},
			row{verb, "cells", "", ns, true, true},
			row{verb, "formations", "", other, false, false},
			row{verb, "cells", "", other, false, false})
	}
	for _, verb := range []string{"create", "update", "patch", "delete"} {
		rows = append(rows,
			row{verb, "formations", "", ns, false, true},
			row{verb, "formations", "", other, false, false},
			row{verb, "cells", "", ns, false, false})
	}
	for _, verb := range []string{"update", "patch"} {
		rows = append(rows,
			row{verb, "formations", "status", ns, false, false},
			row{verb, "cells", "status", ns, false, false})
	}
	rows = append(rows, row{"update", "formations", "finalizers", ns, false, false})
	for _, who := range []struct {
		name string
		c    client.Client
		may  func(row) bool
	}{{"viewer", viewer, func(r row) bool { return r.viewer }}, {"editor", editor, func(r row) bool { return r.editor }}} {
		for _, r := range rows {
			attrs := &authorizationResourceAttributes{Namespace: r.namespace, Verb: r.verb, Group: cellosv1.GroupVersion.Group, Resource: r.resource, Subresource: r.subresource}
			what := fmt.Sprintf("%s may %s %s", who.name, r.verb, attrs.path())
			allowedTo(t, what+": "+fmt.Sprint(who.may(r)), func() error {
				got, err := attrs.ask(ctx, who.c)
				if err != nil {
					return err
				}
				if got != who.may(r) {
					return fmt.Errorf("the authorizer says %v", got)
				}
				return nil
			})
		}
	}
}

// 8. A user who may declare Formations in team B only creates one there
// labelled with team A's formation id. RBAC lets the user; the operator
// refuses the takeover (Stalled, TakeoverRefused, a Warning Event), and team
// A's Formation keeps the projection and goes on following the stream. The
// user can neither write team A's Formations nor any Formation's status.
func TestTeamCannotTakeOverAnotherTeamsFormation(t *testing.T) {
	roles := shippedClusterRoles(t, formationEditorRole)
	installClusterRole(t, roles[formationEditorRole])
	operatorNS, teamA, teamB := newNamespace(t), newNamespace(t), newNamespace(t)
	js := localenv.StartJetStream(t)
	_, jsc := js.Connect(t)
	startManager(t, js.URL(), operatorNS, "--flush-window=50ms")
	ctx := context.Background()
	c := controlPlane.Client

	// Team A's formation, declared in team A and admitted there.
	a := lifecycleFormation(teamA, "research")
	if err := c.Create(ctx, a); err != nil {
		t.Fatal(err)
	}
	keyA := client.ObjectKeyFromObject(a)
	admittedPending(t, keyA)
	idA := string(a.UID)
	waitForCursor(t, operatorNS, lastSequence(t, jsc))
	var before cellosv1.Formation
	if err := c.Get(ctx, keyA, &before); err != nil {
		t.Fatal(err)
	}

	const user = "team-b-dev"
	bindInNamespace(t, teamB, formationEditorRole, user)
	dev := clientAs(t, user)

	// The takeover: allowed by RBAC, refused by the operator.
	b := &cellosv1.Formation{
		ObjectMeta: metav1.ObjectMeta{Namespace: teamB, Name: "research", Labels: map[string]string{cellosv1.FormationIDLabel: idA}},
		Spec:       lifecycleFormation(teamB, "research").Spec,
	}
	allowedTo(t, "the team B user creates a Formation in team B", func() error { return dev.Create(ctx, b.DeepCopy()) })
	keyB := client.ObjectKeyFromObject(b)
	var refused cellosv1.Formation
	harness.Eventually(t, 2*time.Minute, "the operator refuses the takeover", func() error {
		if err := c.Get(ctx, keyB, &refused); err != nil {
			return err
		}
		cond := meta.FindStatusCondition(refused.Status.Conditions, cellosv1.StalledCondition)
		if cond == nil || cond.Status != metav1.ConditionTrue || cond.Reason != cellosv1.TakeoverRefusedReason {
			return fmt.Errorf("Stalled %+v", cond)
		}
		return nil
	})
	if refused.Status.Phase != "" || refused.Status.LastAppliedSequence != 0 || refused.Status.FormationID == idA {
		t.Errorf("the refused Formation shows the projection: phase %q at %d, id %q", refused.Status.Phase, refused.Status.LastAppliedSequence, refused.Status.FormationID)
	}
	harness.Eventually(t, time.Minute, "a Warning Event TakeoverRefused on the refused Formation", func() error {
		var evs eventsv1.EventList
		if err := c.List(ctx, &evs, client.InNamespace(teamB)); err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Type == corev1.EventTypeWarning && e.Reason == cellosv1.TakeoverRefusedReason &&
				e.Regarding.Kind == "Formation" && e.Regarding.Name == b.Name && e.Regarding.Namespace == teamB {
				return nil
			}
		}
		return fmt.Errorf("none among %d Events in %s", len(evs.Items), teamB)
	})

	// Team A's Formation keeps its status...
	var after cellosv1.Formation
	if err := c.Get(ctx, keyA, &after); err != nil {
		t.Fatal(err)
	}
	if !equality.Semantic.DeepEqual(before.Status, after.Status) {
		t.Errorf("team A's status changed with the takeover attempt:\nbefore %+v\n after %+v", before.Status, after.Status)
	}
	// ...and goes on following the stream, while team B's stays refused.
	publish(t, jsc, []sampleMessage{supervisorEvent(idA, "running")})
	phaseIs(t, keyA, cellosv1.FormationRunning)
	waitForCursor(t, operatorNS, lastSequence(t, jsc))
	if err := c.Get(ctx, keyB, &refused); err != nil {
		t.Fatal(err)
	}
	if refused.Status.Phase != "" || !meta.IsStatusConditionTrue(refused.Status.Conditions, cellosv1.StalledCondition) {
		t.Errorf("team B's Formation: phase %q, conditions %s; want no phase and Stalled", refused.Status.Phase, conditionsString(refused.Status.Conditions))
	}
	if _, err := exactlyOne(jsc, idA, createdType); err != nil {
		t.Error(err)
	}

	// RBAC keeps the team B user out of team A and out of status.
	var fromA cellosv1.Formation
	forbidden(t, "reading team A's Formation", dev.Get(ctx, keyA, &fromA))
	intruder := lifecycleFormation(teamA, "intruder")
	forbidden(t, "creating a Formation in team A", dev.Create(ctx, intruder))
	labelled := after.DeepCopy()
	labelled.Labels["team"] = "b"
	forbidden(t, "updating team A's Formation", dev.Update(ctx, labelled))
	forbidden(t, "patching team A's Formation", dev.Patch(ctx, after.DeepCopy(), client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"team":"b"}}}`))))
	forbidden(t, "deleting team A's Formation", dev.Delete(ctx, after.DeepCopy()))
	forbidden(t, "writing team A's Formation status", dev.Status().Patch(ctx, after.DeepCopy(), client.RawPatch(types.MergePatchType, []byte(`{"status":{"phase":"Succeeded"}}`))))
	forbidden(t, "writing its own Formation's status", dev.Status().Patch(ctx, refused.DeepCopy(), client.RawPatch(types.MergePatchType, []byte(`{"status":{"phase":"Running","formationId":"`+idA+`"}}`))))
	own := refused.DeepCopy()
	own.Status.Conditions = nil
	forbidden(t, "updating its own Formation's status", dev.Status().Update(ctx, own))

	// Nothing of that reached team A.
	if err := c.Get(ctx, keyA, &fromA); err != nil {
		t.Fatal(err)
	}
	if fromA.Status.Phase != cellosv1.FormationRunning || fromA.Labels["team"] != "" || fromA.DeletionTimestamp != nil {
		t.Errorf("team A's Formation changed: phase %q, labels %v, deletion %v", fromA.Status.Phase, fromA.Labels, fromA.DeletionTimestamp)
	}
}
