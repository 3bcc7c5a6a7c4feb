package e2e

// The ValidatingAdmissionPolicy the chart and config/ ship on the label
// cellos.dev/formation-id, enforced by a real API server: what a user with
// edit in a namespace may do with the label, and what only the operator may.

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/test/harness"
)

// The policy's messages, as a refused user reads them.
const (
	labelImmutableMessage = "the label cellos.dev/formation-id cannot be changed or removed once set: it says which formation this Formation owns or follows; create a new Formation instead"
	labelCanonicalMessage = "the label cellos.dev/formation-id must be a lower-case hyphenated UUID such as 0f8fad5b-d9cb-469f-a165-70867728950e"
)

// TestFormationIDLabelPolicy applies the chart's ValidatingAdmissionPolicy
// and binding, rendered for a release in a namespace of the test's, and
// nothing else of the chart. A user with edit in a team's namespace may
// declare Formations with a canonical id, add the label to a Formation
// without one, change anything else, and delete; but not write an id in
// another spelling, nor change or remove one. The operator's ServiceAccount
// may change the label, to canonical values only; another ServiceAccount of
// its namespace may not. A Formation labelled before the policy, in a
// spelling it refuses now, can still lose its finalizer and be deleted.
func TestFormationIDLabelPolicy(t *testing.T) {
	ctx := context.Background()
	c := controlPlane.Client
	operatorNS, team := newNamespace(t), newNamespace(t)
	const release = "labels"
	operatorSA := release + "-cellos-operator-controller-manager"

	// Labelled before the policy, in upper case, and held by a finalizer.
	legacyID := strings.ToUpper(uuid.NewString())
	legacy := labelled(lifecycleFormation(team, "legacy"), legacyID)
	legacy.Finalizers = []string{"example.com/hold"}
	harness.Eventually(t, time.Minute, "a Formation labelled in upper case is admitted before the policy", func() error {
		return c.Create(ctx, legacy)
	})

	out := render(t, release, operatorNS, "--show-only", "templates/formation-id-policy.yaml")
	var kinds []string
	for _, obj := range decodeAll(t, out) {
		kinds = append(kinds, obj.GetKind())
	}
	if want := "ValidatingAdmissionPolicy ValidatingAdmissionPolicyBinding"; strings.Join(kinds, " ") != want {
		t.Fatalf("the template renders %v, want %s", kinds, want)
	}
	if !strings.Contains(out, "'system:serviceaccount:"+operatorNS+":"+operatorSA+"'") {
		t.Fatalf("the policy does not name the operator's ServiceAccount %s/%s:\n%s", operatorNS, operatorSA, out)
	}
	for _, obj := range decodeAll(t, render(t, release, operatorNS, "--set", "formationIDPolicy.enabled=false")) {
		if strings.HasPrefix(obj.GetKind(), "ValidatingAdmissionPolicy") {
			t.Errorf("formationIDPolicy.enabled=false renders %s %s", obj.GetKind(), obj.GetName())
		}
	}
	applyServerSide(t, out)
	waitForLabelPolicy(t, team)

	// A user with edit in the team's namespace. Without kube-controller-manager
	// nothing aggregates ClusterRoles, so the user is bound to what
	// aggregation would add to edit too: the shipped formation editor.
	installClusterRole(t, shippedClusterRoles(t, formationEditorRole)[formationEditorRole])
	const user = "label-policy-dev"
	bindInNamespace(t, team, "edit", user)
	bindInNamespace(t, team, formationEditorRole, user)
	dev := clientAs(t, user)

	// Created with a canonical id: admitted.
	id := uuid.NewString()
	owned := labelled(lifecycleFormation(team, "owned"), id)
	allowedTo(t, "the user creates a Formation with a canonical id", func() error { return dev.Create(ctx, owned) })

	// Any other spelling is refused, whoever writes it.
	for name, bad := range map[string]string{
		"upper-case": strings.ToUpper(uuid.NewString()),
		"32-hex":     strings.ReplaceAll(uuid.NewString(), "-", ""),
		"truncated":  uuid.NewString()[:23],
	} {
		refused(t, "creating a Formation labelled "+name, labelCanonicalMessage,
			dev.Create(ctx, labelled(lifecycleFormation(team, "bad-"+name), bad)))
		refused(t, "creating a Formation labelled "+name+" as an admin", labelCanonicalMessage,
			c.Create(ctx, labelled(lifecycleFormation(team, "bad-"+name), bad)))
	}

	// Changed or removed: refused, by update and by patch.
	changed := owned.DeepCopy()
	changed.Labels[cellosv1.FormationIDLabel] = uuid.NewString()
	refused(t, "changing the id", labelImmutableMessage, dev.Update(ctx, changed))
	removed := owned.DeepCopy()
	delete(removed.Labels, cellosv1.FormationIDLabel)
	refused(t, "removing the id", labelImmutableMessage, dev.Update(ctx, removed))
	refused(t, "removing the id with a patch", labelImmutableMessage,
		dev.Patch(ctx, owned.DeepCopy(), mergePatch(`{"metadata":{"labels":{"cellos.dev/formation-id":null}}}`)))
	refused(t, "removing every label", labelImmutableMessage,
		dev.Patch(ctx, owned.DeepCopy(), client.RawPatch(types.JSONPatchType, []byte(`[{"op":"remove","path":"/metadata/labels"}]`))))
	refused(t, "changing the id as an admin", labelImmutableMessage, c.Update(ctx, changed))

	// Everything else about it may change, and it may be deleted, finalizer
	// and all.
	if err := dev.Patch(ctx, owned, mergePatch(`{"metadata":{"labels":{"team":"a"},"annotations":{"note":"x"},"finalizers":["example.com/hold"]}}`)); err != nil {
		t.Fatalf("labelling, annotating and holding the Formation: %v", err)
	}
	if err := dev.Delete(ctx, owned); err != nil {
		t.Fatalf("deleting the Formation: %v", err)
	}
	if err := dev.Get(ctx, client.ObjectKeyFromObject(owned), owned); err != nil || owned.DeletionTimestamp == nil {
		t.Fatalf("the deleted Formation: %v, deletion %v", err, owned.DeletionTimestamp)
	}
	owned.Finalizers = nil
	if err := dev.Update(ctx, owned); err != nil {
		t.Fatalf("removing the finalizer of the deleted Formation: %v", err)
	}
	harness.Eventually(t, 30*time.Second, "the deleted Formation is gone", func() error { return gone(client.ObjectKeyFromObject(owned)) })

	// A Formation without the label may get one, in canonical form only.
	bare := lifecycleFormation(team, "bare")
	if err := dev.Create(ctx, bare); err != nil {
		t.Fatal(err)
	}
	refused(t, "adding an upper-case id", labelCanonicalMessage,
		dev.Patch(ctx, bare.DeepCopy(), mergePatch(`{"metadata":{"labels":{"cellos.dev/formation-id":"`+strings.ToUpper(string(bare.UID))+`"}}}`)))
	bare.Labels = map[string]string{cellosv1.FormationIDLabel: string(bare.UID)}
	if err := dev.Update(ctx, bare); err != nil {
		t.Fatalf("adding the id to a Formation without one: %v", err)
	}
	// Status is the operator's to write, and the policy leaves it alone.
	bare.Status.FormationID = string(bare.UID)
	if err := c.Status().Update(ctx, bare); err != nil {
		t.Fatalf("writing the status of a labelled Formation: %v", err)
	}

	// The operator's ServiceAccount may change the id, to a canonical one;
	// another ServiceAccount of its namespace, with the same rights, may not.
	operator := serviceAccountClient(t, operatorNS, operatorSA)
	other := serviceAccountClient(t, operatorNS, "not-the-operator")
	for _, sa := range []string{operatorSA, "not-the-operator"} {
		bindServiceAccount(t, team, formationEditorRole, operatorNS, sa)
	}
	replaced := uuid.NewString()
	allowedTo(t, "the operator changes the id", func() error {
		return operator.Patch(ctx, bare.DeepCopy(), mergePatch(`{"metadata":{"labels":{"cellos.dev/formation-id":"`+replaced+`"}}}`))
	})
	refused(t, "the operator writing an upper-case id", labelCanonicalMessage,
		operator.Patch(ctx, bare.DeepCopy(), mergePatch(`{"metadata":{"labels":{"cellos.dev/formation-id":"`+strings.ToUpper(replaced)+`"}}}`)))
	allowedTo(t, "another ServiceAccount may patch Formations", func() error {
		err := other.Patch(ctx, bare.DeepCopy(), mergePatch(`{"metadata":{"labels":{"cellos.dev/formation-id":"`+uuid.NewString()+`"}}}`))
		if apierrors.IsForbidden(err) && !strings.Contains(err.Error(), labelImmutableMessage) {
			return err // RBAC, not yet aware of the binding
		}
		refused(t, "another ServiceAccount changing the id", labelImmutableMessage, err)
		return nil
	})
	if err := operator.Patch(ctx, bare.DeepCopy(), mergePatch(`{"metadata":{"labels":{"cellos.dev/formation-id":null}}}`)); err != nil {
		t.Errorf("the operator removing the id: %v", err)
	}

	// The Formation labelled before the policy may still lose its finalizer
	// and go; its label may not be corrected in place.
	if err := c.Get(ctx, client.ObjectKeyFromObject(legacy), legacy); err != nil {
		t.Fatal(err)
	}
	fixed := legacy.DeepCopy()
	fixed.Labels[cellosv1.FormationIDLabel] = strings.ToLower(legacyID)
	refused(t, "correcting an id labelled before the policy", labelImmutableMessage, dev.Update(ctx, fixed))
	if err := dev.Delete(ctx, legacy); err != nil {
		t.Fatalf("deleting the Formation labelled before the policy: %v", err)
	}
	if err := dev.Patch(ctx, legacy, mergePatch(`{"metadata":{"finalizers":null}}`)); err != nil {
		t.Fatalf("removing the finalizer of the Formation labelled before the policy: %v", err)
	}
	harness.Eventually(t, 30*time.Second, "the Formation labelled before the policy is gone", func() error { return gone(client.ObjectKeyFromObject(legacy)) })
}

// labelled is f with the label cellos.dev/formation-id set to id.
func labelled(f *cellosv1.Formation, id string) *cellosv1.Formation {
	metav1.SetMetaDataLabel(&f.ObjectMeta, cellosv1.FormationIDLabel, id)
	return f
}

func mergePatch(patch string) client.Patch {
	return client.RawPatch(types.MergePatchType, []byte(patch))
}

// refused checks that err is the policy's refusal, with message.
func refused(t *testing.T, what, message string, err error) {
	t.Helper()
	switch {
	case err == nil:
		t.Errorf("%s: allowed, want refused with %q", what, message)
	case !apierrors.IsInvalid(err) && !apierrors.IsForbidden(err):
		t.Errorf("%s: %v, want refused as invalid or forbidden", what, err)
	case !strings.Contains(err.Error(), message):
		t.Errorf("%s: refused with %q, want %q", what, err, message)
	}
}

// waitForLabelPolicy waits until the API server enforces the label policy,
// which it loads a moment after the policy and its binding are stored:
// until a dry run of a Formation labelled in upper case in ns is refused.
func waitForLabelPolicy(t *testing.T, ns string) {
	t.Helper()
	probe := labelled(lifecycleFormation(ns, "policy-probe"), strings.ToUpper(uuid.NewString()))
	harness.Eventually(t, time.Minute, "the label policy is enforced", func() error {
		err := controlPlane.Client.Create(context.Background(), probe.DeepCopy(), client.DryRunAll)
		if err == nil {
			return errors.New("a Formation labelled in upper case is admitted")
		}
		if !strings.Contains(err.Error(), labelCanonicalMessage) {
			return err
		}
		return nil
	})
}

// serviceAccountClient is a client that impersonates the ServiceAccount
// ns/name, with the groups the API server gives ServiceAccounts.
func serviceAccountClient(t *testing.T, ns, name string) client.Client {
	t.Helper()
	cfg := rest.CopyConfig(controlPlane.Config)
	cfg.Impersonate = rest.ImpersonationConfig{
		UserName: "system:serviceaccount:" + ns + ":" + name,
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
	}
	c, err := client.New(cfg, client.Options{Scheme: controlPlane.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// bindServiceAccount binds the ServiceAccount saNS/sa to the ClusterRole
// role in ns only.
func bindServiceAccount(t *testing.T, ns, role, saNS, sa string) {
	t.Helper()
	rb := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: sa + "-" + role},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: saNS, Name: sa}},
	}
	if err := controlPlane.Client.Create(context.Background(), rb); err != nil {
		t.Fatal(err)
	}
}
