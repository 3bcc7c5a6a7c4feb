package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	authorizationv1 "k8s.io/api/authorization/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/test/harness"
	"cellos.dev/cellos-operator/test/localenv"
)

// The chart, rendered by the helm that `make test` builds into bin/.
var chartDir = filepath.Join(localenv.RepoRoot(), "charts", "cellos-operator")

func helm(tb testing.TB, args ...string) string {
	tb.Helper()
	out, err := runHelm(args...)
	if err != nil {
		tb.Fatalf("helm %s: %v", strings.Join(args, " "), err)
	}
	return out
}

// runHelm runs bin/helm, with its stderr in the error.
func runHelm(args ...string) (string, error) {
	cmd := exec.Command(localenv.Binary("helm"), args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%w: %s", err, stderr.String())
	}
	return string(out), nil
}

// render is helm template of the chart as release in namespace ns.
func render(tb testing.TB, release, ns string, args ...string) string {
	tb.Helper()
	return helm(tb, append([]string{"template", release, chartDir, "--namespace", ns}, args...)...)
}

// applyServerSide applies manifests with server-side apply, first as a dry
// run, in which the API server validates and defaults every object, then
// for real. The admission policies among them go when the test ends.
func applyServerSide(tb testing.TB, manifests string) {
	tb.Helper()
	removeAdmissionPolicies(tb, decodeAll(tb, manifests))
	file := filepath.Join(tb.TempDir(), "manifests.yaml")
	if err := os.WriteFile(file, []byte(manifests), 0o600); err != nil {
		tb.Fatal(err)
	}
	for _, dryRun := range []string{"--dry-run=server", "--dry-run=none"} {
		kubectl(tb, "apply", "--server-side", "--field-manager=chart-test", dryRun, "-f", file)
	}
}

// prometheusOperatorCRDs stands in for the Prometheus Operator's CRDs, so
// that the ServiceMonitor and PrometheusRule apply: same group, kinds and
// names, any content.
const prometheusOperatorCRDs = `
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: servicemonitors.monitoring.coreos.com
spec:
  group: monitoring.coreos.com
  names: {kind: ServiceMonitor, listKind: ServiceMonitorList, plural: servicemonitors, singular: servicemonitor}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: prometheusrules.monitoring.coreos.com
spec:
  group: monitoring.coreos.com
  names: {kind: PrometheusRule, listKind: PrometheusRuleList, plural: prometheusrules, singular: prometheusrule}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
`

// TestChartAppliesWithEachCIValuesFile renders the chart with each values
// file under ci/ and applies the whole of it, CRDs included, to the API
// server, after making the namespaces a namespaced install watches. The
// operator's ClusterRole is bound cluster-wide, or, with watchNamespaces, in
// each watched namespace and nowhere else. A ResourceQuota, where one is
// enabled, lives in the projection namespace.
func TestChartAppliesWithEachCIValuesFile(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(chartDir, "ci", "*-values.yaml"))
	if err != nil || len(files) < 4 {
		t.Fatalf("want at least 4 values files in ci/, got %v (%v)", files, err)
	}
	var namespaced, quota bool
	applyServerSide(t, prometheusOperatorCRDs)
	kubectl(t, "wait", "--for=condition=Established", "--timeout=60s",
		"crd/servicemonitors.monitoring.coreos.com", "crd/prometheusrules.monitoring.coreos.com")
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), "-values.yaml")
		t.Run(name, func(t *testing.T) {
			helm(t, "lint", "--strict", "--quiet", chartDir, "-f", file)
			watched := valuesWatchNamespaces(t, file)
			namespaced = namespaced || len(watched) > 0
			for _, w := range watched {
				ensureNamespace(t, w)
			}
			ns := newNamespace(t)
			out := render(t, name, ns, "--include-crds", "-f", file)
			applyServerSide(t, out)
			objs := decodeAll(t, out)
			kinds := map[string]int{}
			for _, obj := range objs {
				kinds[obj.GetKind()]++
			}
			for _, kind := range []string{"CustomResourceDefinition", "Deployment", "ClusterRole", "Role", "Service"} {
				if kinds[kind] == 0 {
					t.Errorf("no %s rendered; rendered %v", kind, kinds)
				}
			}
			// Objects first seen in the stream go elsewhere than the
			// operator's namespace, to one the chart creates (and keeps)
			// unless the values say it exists.
			args, _ := container(t, deployment(t, objs))["args"].([]any)
			var projection string
			for _, a := range args {
				if s, _ := a.(string); strings.HasPrefix(s, "--namespace=") {
					projection = strings.TrimPrefix(s, "--namespace=")
				}
			}
			if projection == "" || projection == ns {
				t.Errorf("the Deployment's --namespace is %q, want a namespace other than the release's (%s)", projection, ns)
			}
			for _, obj := range objs {
				if obj.GetKind() == "Namespace" && (obj.GetName() != projection || obj.GetAnnotations()["helm.sh/resource-policy"] != "keep") {
					t.Errorf("the chart makes Namespace %s (annotations %v), want only %s, kept on uninstall", obj.GetName(), obj.GetAnnotations(), projection)
				}
				// The quota bounds what the operator creates: it belongs
				// where the operator creates objects.
				if obj.GetKind() == "ResourceQuota" {
					quota = true
					if obj.GetNamespace() != projection {
						t.Errorf("the chart makes ResourceQuota %s in namespace %s, want %s", obj.GetName(), obj.GetNamespace(), projection)
					}
				}
			}
			clusterWide, inNamespaces := managerRoleBindings(objs)
			if len(watched) == 0 {
				if !clusterWide || len(inNamespaces) > 0 {
					t.Errorf("the manager's ClusterRole: bound cluster-wide %v, in namespaces %v; want cluster-wide only", clusterWide, inNamespaces)
				}
				return
			}
			if clusterWide || !slices.Equal(slices.Sorted(slices.Values(inNamespaces)), slices.Sorted(slices.Values(watched))) {
				t.Errorf("the manager's ClusterRole: bound cluster-wide %v, in namespaces %v; want in %v only", clusterWide, inNamespaces, watched)
			}
			if want := "--watch-namespaces=" + strings.Join(watched, ","); !slices.Contains(args, any(want)) {
				t.Errorf("the Deployment's args %v lack %s", args, want)
			}
		})
	}
	if !namespaced {
		t.Error("no values file in ci/ sets watchNamespaces")
	}
	if !quota {
		t.Error("no values file in ci/ enables resourceQuota")
	}
}

// valuesWatchNamespaces is watchNamespaces in a values file.
func valuesWatchNamespaces(tb testing.TB, file string) []string {
	tb.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		tb.Fatal(err)
	}
	var values struct {
		WatchNamespaces []string `json:"watchNamespaces"`
	}
	if err := yaml.Unmarshal(b, &values); err != nil {
		tb.Fatalf("%s: %v", file, err)
	}
	return values.WatchNamespaces
}

// ensureNamespace makes the namespace name unless it exists: one that a
// values file names, the same in every run.
func ensureNamespace(tb testing.TB, name string) {
	tb.Helper()
	err := controlPlane.Client.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		tb.Fatal(err)
	}
}

// managerRoleBindings tells where rendered objects bind the operator's
// ClusterRole, <fullname>-manager-role: by a ClusterRoleBinding, and by
// RoleBindings in which namespaces.
func managerRoleBindings(objs []*unstructured.Unstructured) (clusterWide bool, namespaces []string) {
	for _, obj := range objs {
		kind, _, _ := unstructured.NestedString(obj.Object, "roleRef", "kind")
		name, _, _ := unstructured.NestedString(obj.Object, "roleRef", "name")
		if kind != "ClusterRole" || !strings.HasSuffix(name, "-manager-role") {
			continue
		}
		switch obj.GetKind() {
		case "ClusterRoleBinding":
			clusterWide = true
		case "RoleBinding":
			namespaces = append(namespaces, obj.GetNamespace())
		}
	}
	return clusterWide, namespaces
}

// deployment is the one Deployment among objs.
func deployment(tb testing.TB, objs []*unstructured.Unstructured) *unstructured.Unstructured {
	tb.Helper()
	var found []*unstructured.Unstructured
	for _, obj := range objs {
		if obj.GetKind() == "Deployment" {
			found = append(found, obj)
		}
	}
	if len(found) != 1 {
		tb.Fatalf("%d Deployments rendered, want 1", len(found))
	}
	return found[0]
}

// TestChartRejectsBadValues: the schema refuses a misspelt or wrongly typed
// value, and the templates a contradictory one, each with a message that
// names it.
func TestChartRejectsBadValues(t *testing.T) {
	cases := []struct {
		name, want string
		args       []string
	}{
		{"misspelt key", "'ulr' not allowed", []string{"--set", "nats.ulr=nats://x:4222"}},
		{"misspelt top-level key", "'replicas' not allowed", []string{"--set", "replicas=3"}},
		{"misspelt secret field", "'nmae' not allowed", []string{"--set", "nats.token.secret.nmae=t"}},
		{"string for an integer", "/replicaCount", []string{"--set-string", "replicaCount=2"}},
		{"string for a boolean", "/nats/tls/enabled", []string{"--set-string", "nats.tls.enabled=yes"}},
		{"not a NATS URL", "/nats/url", []string{"--set", "nats.url=http://nats:4222"}},
		{"two ways to authenticate", "only one way to authenticate",
			[]string{"--set", "nats.token.secret.name=t", "--set", "nats.credentials.secret.name=c"}},
		{"user without password", "needs nats.user.password.secret.name", []string{"--set", "nats.user.name=u"}},
		{"credentials in the URL", "carries credentials", []string{"--set", "nats.url=nats://u:p@nats:4222"}},
		{"TLS files without TLS", "nats.tls.enabled is false", []string{"--set", "nats.tls.ca.secret.name=ca"}},
		{"replicas without leader election", "needs leaderElection.enabled", []string{"--set", "leaderElection.enabled=false"}},
		{"not a namespace name to watch", "/watchNamespaces/1", []string{"--set", "watchNamespaces={team-a,Team_B}"}},
		{"a watched namespace twice", "/watchNamespaces", []string{"--set", "watchNamespaces={team-a,team-a}", "--set", "projectionNamespace=team-a"}},
		{"projection namespace not watched", "does not hold team-c",
			[]string{"--set", "watchNamespaces={team-a,team-b}", "--set", "projectionNamespace=team-c"}},
		{"projection namespace by default not watched", "does not hold cellos-projection", []string{"--set", "watchNamespaces={team-a}"}},
		{"release namespace not watched", "does not hold default",
			[]string{"--set", "watchNamespaces={team-a}", "--set", "projectionNamespace=", "--set", "createProjectionNamespace=false"}},
		{"creating the release namespace", "is the release's namespace", []string{"--set", "projectionNamespace=default"}},
		{"creating no projection namespace", "projectionNamespace is empty", []string{"--set", "projectionNamespace="}},
		{"string for createProjectionNamespace", "/createProjectionNamespace", []string{"--set-string", "createProjectionNamespace=no"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := runHelm(append([]string{"template", "bad", chartDir}, c.args...)...)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("helm template %v: got %v, want an error with %q", c.args, err, c.want)
			}
		})
	}
}

// TestChartRBACIsEnoughAndNoMore runs the manager as the chart's
// ServiceAccount, impersonated, with only the RBAC the chart renders: it
// leads, projects a stream, admits, publishes and cancels a declared
// Formation, and may read no Secret, nor any ConfigMap but its cursor.
func TestChartRBACIsEnoughAndNoMore(t *testing.T) {
	ns := newNamespace(t)
	const release = "rbac"
	sa := release + "-cellos-operator-controller-manager"
	user := "system:serviceaccount:" + ns + ":" + sa
	groups := []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"}
	applyServerSide(t, render(t, release, ns, "--show-only", "templates/serviceaccount.yaml", "--show-only", "templates/rbac.yaml"))
	kubeconfig := impersonatingKubeconfig(t, user, groups)

	js := localenv.StartJetStream(t)
	_, jsc := js.Connect(t)
	m := startManagerAs(t, kubeconfig, js.URL(), ns, "--leader-elect", "--flush-window=50ms")
	harness.Eventually(t, time.Minute, "manager ready", m.Ready)

	// It leads, through its Lease in its namespace.
	harness.Eventually(t, time.Minute, "the Lease names a holder", func() error {
		var l coordinationv1.Lease
		if err := controlPlane.Client.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: "cellos-operator.cellos.dev"}, &l); err != nil {
			return err
		}
		if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == "" {
			return errors.New("no holder")
		}
		return nil
	})

	// It projects a stream, and commits its cursor.
	want := readExpected(t)
	publish(t, jsc, readSample(t))
	harness.Eventually(t, time.Minute, "objects match the expected projection", func() error { return matchesExpected(ns, want) })
	waitForCursor(t, ns, want.LastSequence)

	// It admits a declared Formation, publishes its created event, and
	// cancels it when it is deleted.
	ctx := context.Background()
	f := &cellosv1.Formation{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "declared"},
		Spec:       &cellosv1.FormationSpec{Coordinator: "lead", Members: []cellosv1.FormationMember{member("lead", "")}},
	}
	if err := controlPlane.Client.Create(ctx, f); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, time.Minute, "the declared Formation is published", func() error {
		if err := controlPlane.Client.Get(ctx, client.ObjectKeyFromObject(f), f); err != nil {
			return err
		}
		if !meta.IsStatusConditionTrue(f.Status.Conditions, cellosv1.PublishedCondition) {
			return fmt.Errorf("conditions %v", f.Status.Conditions)
		}
		return nil
	})
	if err := controlPlane.Client.Delete(ctx, f); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, time.Minute, "the deleted Formation is cancelled and gone", func() error {
		err := controlPlane.Client.Get(ctx, client.ObjectKeyFromObject(f), f)
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("still there (%v): phase %q, finalizers %v", err, f.Status.Phase, f.Finalizers)
	})

	// Its Events: events.k8s.io on Formations, core ones from leader election.
	harness.Eventually(t, 30*time.Second, "Events on Formations and on the Lease", func() error {
		var evs eventsv1.EventList
		if err := controlPlane.Client.List(ctx, &evs, client.InNamespace(ns)); err != nil {
			return err
		}
		var onFormation, onLease bool
		for _, e := range evs.Items {
			onFormation = onFormation || e.Regarding.Kind == "Formation"
			onLease = onLease || (e.Regarding.Kind == "Lease" && e.Reason == "LeaderElection")
		}
		if !onFormation || !onLease {
			return fmt.Errorf("on a Formation: %v, on the Lease: %v, among %d", onFormation, onLease, len(evs.Items))
		}
		return nil
	})
	harness.Stop(t, m.Manager)
	if logs := m.Logs(); strings.Contains(strings.ToLower(logs), "forbidden") {
		t.Errorf("the manager was refused something:\n%s", grepLines(logs, "forbidden"))
	}

	// And nothing more.
	other := newNamespace(t)
	allowed := []access{
		{"get", "", "configmaps", "", "cellos-projection-cursor", ns},
		{"update", "", "configmaps", "", "cellos-projection-cursor", ns},
		{"create", "", "configmaps", "", "", ns},
		{"get", "coordination.k8s.io", "leases", "", "cellos-operator.cellos.dev", ns},
		{"update", "coordination.k8s.io", "leases", "", "cellos-operator.cellos.dev", ns},
		{"create", "", "events", "", "", ns},
		{"create", "events.k8s.io", "events", "", "", other},
		{"watch", "cellos.dev", "formations", "", "", ""},
		{"patch", "cellos.dev", "cells", "", "", other},
		{"update", "cellos.dev", "formations", "status", "", other},
		// The pruner deletes the Cells of a stream since recreated.
		{"delete", "cellos.dev", "cells", "", "", other},
	}
	denied := []access{
		{"get", "", "secrets", "", "", ns},
		{"list", "", "secrets", "", "", ""},
		{"get", "", "configmaps", "", "kube-root-ca.crt", ns},
		{"get", "", "configmaps", "", "cellos-projection-cursor", other},
		{"list", "", "configmaps", "", "", ns},
		{"patch", "", "configmaps", "", "cellos-projection-cursor", ns},
		{"delete", "", "configmaps", "", "cellos-projection-cursor", ns},
		{"get", "coordination.k8s.io", "leases", "", "someone-elses", ns},
		{"create", "coordination.k8s.io", "leases", "", "", other},
		{"create", "", "events", "", "", other},
		{"update", "cellos.dev", "cells", "", "", other},
		{"update", "cellos.dev", "formations", "", "", other},
		{"patch", "cellos.dev", "formations", "status", "", other},
		{"create", "", "pods", "", "", ns},
	}
	assertAccess(t, user, groups, allowed, denied)

	// The same, as the API server answers the ServiceAccount itself.
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	as, err := client.New(cfg, client.Options{Scheme: controlPlane.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: other, Name: "not-yours"}, StringData: map[string]string{"k": "v"}}
	if err := controlPlane.Client.Create(ctx, secret); err != nil {
		t.Fatal(err)
	}
	for _, obj := range []client.Object{&corev1.Secret{}, &corev1.ConfigMap{}} {
		err := as.Get(ctx, types.NamespacedName{Namespace: other, Name: "not-yours"}, obj)
		if !apierrors.IsForbidden(err) {
			t.Errorf("reading a %T in another namespace as the ServiceAccount: %v, want forbidden", obj, err)
		}
	}
	if err := as.List(ctx, &corev1.ConfigMapList{}, client.InNamespace(ns)); !apierrors.IsForbidden(err) {
		t.Errorf("listing ConfigMaps in its own namespace: %v, want forbidden", err)
	}
}

// access is one request, which a SubjectAccessReview asks about.
type access struct {
	verb, group, resource, subresource, name, namespace string
}

// assertAccess asks the API server, with a SubjectAccessReview each, whether
// user in groups may make each request: every one of allowed, and none of
// denied.
func assertAccess(tb testing.TB, user string, groups []string, allowed, denied []access) {
	tb.Helper()
	for _, c := range []struct {
		want bool
		list []access
	}{{true, allowed}, {false, denied}} {
		for _, a := range c.list {
			sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
				User: user, Groups: groups,
				ResourceAttributes: &authorizationv1.ResourceAttributes{
					Verb: a.verb, Group: a.group, Resource: a.resource, Subresource: a.subresource, Name: a.name, Namespace: a.namespace,
				},
			}}
			if err := controlPlane.Client.Create(context.Background(), sar); err != nil {
				tb.Fatal(err)
			}
			if sar.Status.Allowed != c.want {
				tb.Errorf("%+v: allowed %v, want %v", a, sar.Status.Allowed, c.want)
			}
		}
	}
}

// TestChartNamespacedInstall installs the chart with ci/namespaced-values.yaml,
// its two watched namespaces replaced by two of the test's, in a release
// namespace it does not watch, and runs the manager with the Deployment's
// --namespace and --watch-namespaces as the chart's ServiceAccount,
// impersonated, with only the chart's RBAC: it leads and keeps its cursor
// in the release's namespace, projects the stream into the first watched
// namespace, and admits, publishes and cancels a Formation declared in the
// second. It never touches a Formation declared in a namespace it does not
// watch, and may not even list Formations there.
func TestChartNamespacedInstall(t *testing.T) {
	ns := newNamespace(t)
	watchedA, watchedB, other := newNamespace(t), newNamespace(t), newNamespace(t)
	const release = "scoped"
	sa := release + "-cellos-operator-controller-manager"
	user := "system:serviceaccount:" + ns + ":" + sa
	groups := []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"}
	out := render(t, release, ns, "-f", filepath.Join(chartDir, "ci", "namespaced-values.yaml"),
		"--set", "watchNamespaces={"+watchedA+","+watchedB+"}", "--set", "projectionNamespace="+watchedA)
	applyServerSide(t, out)
	objs := decodeAll(t, out)
	clusterWide, bound := managerRoleBindings(objs)
	if clusterWide || !slices.Equal(slices.Sorted(slices.Values(bound)), slices.Sorted(slices.Values([]string{watchedA, watchedB}))) {
		t.Fatalf("the manager's ClusterRole: bound cluster-wide %v, in namespaces %v; want in %s and %s only", clusterWide, bound, watchedA, watchedB)
	}
	var flags []string
	args, _ := container(t, deployment(t, objs))["args"].([]any)
	for _, a := range args {
		if s, _ := a.(string); strings.HasPrefix(s, "--namespace=") || strings.HasPrefix(s, "--watch-namespaces=") {
			flags = append(flags, s)
		}
	}
	if want := []string{"--namespace=" + watchedA, "--watch-namespaces=" + watchedA + "," + watchedB}; !slices.Equal(flags, want) {
		t.Fatalf("the Deployment passes %v, want %v", flags, want)
	}
	kubeconfig := impersonatingKubeconfig(t, user, groups)

	// A Formation declared where the operator does not look.
	ctx := context.Background()
	c := controlPlane.Client
	elsewhere := &cellosv1.Formation{
		ObjectMeta: metav1.ObjectMeta{Namespace: other, Name: "unwatched"},
		Spec:       &cellosv1.FormationSpec{Coordinator: "lead", Members: []cellosv1.FormationMember{member("lead", "")}},
	}
	if err := c.Create(ctx, elsewhere); err != nil {
		t.Fatal(err)
	}

	js := localenv.StartJetStream(t)
	_, jsc := js.Connect(t)
	m := startManagerAs(t, kubeconfig, js.URL(), ns, append([]string{"--leader-elect", "--flush-window=50ms"}, flags...)...)
	harness.Eventually(t, time.Minute, "manager ready", m.Ready)
	harness.Eventually(t, time.Minute, "the Lease in the release's namespace names a holder", func() error {
		var l coordinationv1.Lease
		if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: "cellos-operator.cellos.dev"}, &l); err != nil {
			return err
		}
		if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == "" {
			return errors.New("no holder")
		}
		return nil
	})

	// The stream's objects in the first watched namespace; the cursor in the
	// release's.
	want := readExpected(t)
	publish(t, jsc, readSample(t))
	harness.Eventually(t, time.Minute, "objects match the expected projection", func() error { return matchesExpected(watchedA, want) })
	waitForCursor(t, ns, want.LastSequence)

	// A Formation declared in the second is admitted, published, and
	// cancelled when deleted.
	declared := &cellosv1.Formation{
		ObjectMeta: metav1.ObjectMeta{Namespace: watchedB, Name: "declared"},
		Spec:       &cellosv1.FormationSpec{Coordinator: "lead", Members: []cellosv1.FormationMember{member("lead", "")}},
	}
	if err := c.Create(ctx, declared); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, time.Minute, "the declared Formation is published", func() error {
		if err := c.Get(ctx, client.ObjectKeyFromObject(declared), declared); err != nil {
			return err
		}
		if !meta.IsStatusConditionTrue(declared.Status.Conditions, cellosv1.PublishedCondition) {
			return fmt.Errorf("conditions %v", declared.Status.Conditions)
		}
		return nil
	})
	if err := c.Delete(ctx, declared); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, time.Minute, "the deleted Formation is cancelled and gone", func() error {
		err := c.Get(ctx, client.ObjectKeyFromObject(declared), declared)
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("still there (%v): phase %q, finalizers %v", err, declared.Status.Phase, declared.Finalizers)
	})

	// Meanwhile the unwatched one was left as its user wrote it, and
	// nothing was written to the release's namespace or the unwatched one.
	if err := c.Get(ctx, client.ObjectKeyFromObject(elsewhere), elsewhere); err != nil {
		t.Fatal(err)
	}
	if len(elsewhere.Finalizers) > 0 || elsewhere.Status.Phase != "" || len(elsewhere.Status.Conditions) > 0 {
		t.Errorf("the Formation in an unwatched namespace was touched: finalizers %v, phase %q, conditions %v",
			elsewhere.Finalizers, elsewhere.Status.Phase, elsewhere.Status.Conditions)
	}
	for _, n := range []string{ns, other} {
		var formations cellosv1.FormationList
		var cells cellosv1.CellList
		if err := c.List(ctx, &formations, client.InNamespace(n)); err != nil {
			t.Fatal(err)
		}
		if err := c.List(ctx, &cells, client.InNamespace(n)); err != nil {
			t.Fatal(err)
		}
		if len(cells.Items) > 0 || (n == ns && len(formations.Items) > 0) || (n == other && len(formations.Items) != 1) {
			t.Errorf("namespace %s holds %d Formations and %d Cells", n, len(formations.Items), len(cells.Items))
		}
	}
	harness.Stop(t, m.Manager)
	if logs := m.Logs(); strings.Contains(strings.ToLower(logs), "forbidden") {
		t.Errorf("the manager was refused something:\n%s", grepLines(logs, "forbidden"))
	}

	// What it may do: its job in the watched namespaces, its cursor, Lease
	// and their Events in its own; and nothing in any other namespace, nor
	// cluster-wide.
	var allowed []access
	for _, w := range []string{watchedA, watchedB} {
		allowed = append(allowed,
			access{"list", "cellos.dev", "formations", "", "", w},
			access{"watch", "cellos.dev", "cells", "", "", w},
			access{"create", "cellos.dev", "formations", "", "", w},
			access{"patch", "cellos.dev", "cells", "", "", w},
			access{"delete", "cellos.dev", "cells", "", "", w},
			access{"update", "cellos.dev", "formations", "status", "", w},
			access{"update", "cellos.dev", "cells", "status", "", w},
			access{"create", "events.k8s.io", "events", "", "", w},
		)
	}
	allowed = append(allowed,
		access{"get", "", "configmaps", "", "cellos-projection-cursor", ns},
		access{"update", "", "configmaps", "", "cellos-projection-cursor", ns},
		access{"get", "coordination.k8s.io", "leases", "", "cellos-operator.cellos.dev", ns},
		access{"create", "", "events", "", "", ns},
		// Warning Events on the cursor ConfigMap.
		access{"create", "events.k8s.io", "events", "", "", ns},
	)
	var denied []access
	for _, n := range []string{other, ns, ""} {
		denied = append(denied,
			access{"list", "cellos.dev", "formations", "", "", n},
			access{"watch", "cellos.dev", "cells", "", "", n},
			access{"patch", "cellos.dev", "formations", "", "", n},
			access{"update", "cellos.dev", "formations", "status", "", n},
			access{"delete", "cellos.dev", "cells", "", "", n},
		)
	}
	denied = append(denied,
		access{"create", "events.k8s.io", "events", "", "", other},
		access{"get", "", "configmaps", "", "cellos-projection-cursor", watchedA},
		access{"create", "coordination.k8s.io", "leases", "", "", watchedA},
		access{"list", "", "secrets", "", "", watchedA},
	)
	assertAccess(t, user, groups, allowed, denied)

	// The same, as the API server answers the ServiceAccount itself.
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	as, err := client.New(cfg, client.Options{Scheme: controlPlane.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	if err := as.List(ctx, &cellosv1.FormationList{}, client.InNamespace(watchedA)); err != nil {
		t.Errorf("listing Formations in a watched namespace as the ServiceAccount: %v", err)
	}
	for _, n := range []string{other, ""} {
		if err := as.List(ctx, &cellosv1.FormationList{}, client.InNamespace(n)); !apierrors.IsForbidden(err) {
			t.Errorf("listing Formations in namespace %q as the ServiceAccount: %v, want forbidden", n, err)
		}
	}
	if err := as.Get(ctx, client.ObjectKeyFromObject(elsewhere), &cellosv1.Formation{}); !apierrors.IsForbidden(err) {
		t.Errorf("reading the Formation in an unwatched namespace as the ServiceAccount: %v, want forbidden", err)
	}
}

// impersonatingKubeconfig is the test control plane's kubeconfig, acting as
// user with groups.
func impersonatingKubeconfig(tb testing.TB, user string, groups []string) string {
	tb.Helper()
	cfg, err := clientcmd.LoadFromFile(controlPlane.KubeconfigPath)
	if err != nil {
		tb.Fatal(err)
	}
	for _, auth := range cfg.AuthInfos {
		auth.Impersonate = user
		auth.ImpersonateGroups = groups
	}
	path := filepath.Join(tb.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		tb.Fatal(err)
	}
	return path
}

func grepLines(s, substr string) string {
	var b strings.Builder
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(strings.ToLower(line), substr) {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

// decodeAll decodes every object of a multi-document YAML stream.
func decodeAll(tb testing.TB, manifests string) []*unstructured.Unstructured {
	tb.Helper()
	d := yaml.NewYAMLOrJSONDecoder(strings.NewReader(manifests), 4096)
	var objs []*unstructured.Unstructured
	for {
		var obj map[string]any
		if err := d.Decode(&obj); errors.Is(err, io.EOF) {
			return objs
		} else if err != nil {
			tb.Fatal(err)
		}
		if obj != nil {
			objs = append(objs, &unstructured.Unstructured{Object: obj})
		}
	}
}

// TestKustomizeInstallsWhatTheChartDoes applies config/default, and compares
// it with the chart's defaults, rendered as kustomize names objects: the same objects,
// the same RBAC, CRDs, Service and PodDisruptionBudget, and a Deployment
// that differs only in how it is told the NATS settings.
func TestKustomizeInstallsWhatTheChartDoes(t *testing.T) {
	out, err := exec.Command(localenv.Binary("kubectl"), "kustomize", filepath.Join(localenv.RepoRoot(), "config", "default")).Output()
	if err != nil {
		t.Fatalf("kubectl kustomize config/default: %v", err)
	}
	// It applies, as make deploy applies it; a dry run needs its namespace.
	err = controlPlane.Client.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "cellos-system"}})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	applyServerSide(t, string(out))
	kustomize := index(decodeAll(t, string(out)))
	chart := index(decodeAll(t, render(t, "cellos-operator", "cellos-system", "--include-crds", "--set", "fullnameOverride=cellos")))

	// Only kustomize makes the operator's namespace (Helm's release
	// namespace), and the ConfigMap it reads NATS settings from; the chart
	// passes them as flags. Both make the projection namespace.
	for key, obj := range kustomize {
		if (obj.GetKind() == "Namespace" && obj.GetName() == "cellos-system") || obj.GetKind() == "ConfigMap" {
			delete(kustomize, key)
		}
	}
	if got, want := slices.Sorted(mapKeys(kustomize)), slices.Sorted(mapKeys(chart)); !slices.Equal(got, want) {
		t.Fatalf("objects differ:\nkustomize %v\nchart     %v", got, want)
	}
	for key, k := range kustomize {
		c := chart[key]
		var paths [][]string
		switch k.GetKind() {
		case "CustomResourceDefinition":
			paths = [][]string{{"spec"}}
			if c.GetAnnotations()["helm.sh/resource-policy"] != "keep" {
				t.Errorf("%s: not kept on uninstall", key)
			}
		case "ClusterRole", "Role":
			paths = [][]string{{"rules"}}
			if !reflect.DeepEqual(rbacLabels(k), rbacLabels(c)) {
				t.Errorf("%s: aggregation labels differ: kustomize %v, chart %v", key, rbacLabels(k), rbacLabels(c))
			}
		case "ClusterRoleBinding", "RoleBinding":
			paths = [][]string{{"roleRef"}, {"subjects"}}
		case "ServiceAccount":
		case "Namespace":
			if c.GetAnnotations()["helm.sh/resource-policy"] != "keep" {
				t.Errorf("%s: not kept on uninstall", key)
			}
		case "Service":
			paths = [][]string{{"spec", "ports"}, {"spec", "type"}}
		case "PodDisruptionBudget":
			paths = [][]string{{"spec", "maxUnavailable"}}
		case "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding":
			paths = [][]string{{"spec"}}
		case "Deployment":
			paths = [][]string{{"spec", "replicas"}, {"spec", "template", "spec", "securityContext"},
				{"spec", "template", "spec", "serviceAccountName"}, {"spec", "template", "spec", "terminationGracePeriodSeconds"}}
			kc, cc := container(t, k), container(t, c)
			for _, field := range []string{"ports", "livenessProbe", "readinessProbe", "resources", "securityContext"} {
				if !reflect.DeepEqual(kc[field], cc[field]) {
					t.Errorf("%s: container %s differs:\nkustomize %v\nchart     %v", key, field, kc[field], cc[field])
				}
			}
			if kf, cf := flagNames(kc), flagNames(cc); !slices.Equal(kf, cf) {
				t.Errorf("%s: flags differ:\nkustomize %v\nchart     %v", key, kf, cf)
			}
			if kt, ct := spread(t, k), spread(t, c); !slices.Equal(kt, ct) {
				t.Errorf("%s: topology spread differs: kustomize %v, chart %v", key, kt, ct)
			}
		default:
			t.Errorf("%s: the test does not compare a %s", key, k.GetKind())
		}
		for _, path := range paths {
			kv, _, _ := unstructured.NestedFieldNoCopy(k.Object, path...)
			cv, _, _ := unstructured.NestedFieldNoCopy(c.Object, path...)
			if !reflect.DeepEqual(kv, cv) {
				t.Errorf("%s: %s differs:\nkustomize %v\nchart     %v", key, strings.Join(path, "."), kv, cv)
			}
		}
	}

	// The label policy lets the operator's ServiceAccount change the label,
	// by a name written in CEL, which kustomize does not rewrite: it must be
	// the ServiceAccount config/default makes.
	var accounts, policies []*unstructured.Unstructured
	for _, obj := range kustomize {
		switch obj.GetKind() {
		case "ServiceAccount":
			accounts = append(accounts, obj)
		case "ValidatingAdmissionPolicy":
			policies = append(policies, obj)
		}
	}
	if len(accounts) != 1 || len(policies) != 1 {
		t.Fatalf("config/default makes %d ServiceAccounts and %d ValidatingAdmissionPolicies, want 1 each", len(accounts), len(policies))
	}
	user := "'system:serviceaccount:" + accounts[0].GetNamespace() + ":" + accounts[0].GetName() + "'"
	if validations, _, _ := unstructured.NestedSlice(policies[0].Object, "spec", "validations"); !strings.Contains(fmt.Sprint(validations), user) {
		t.Errorf("the policy %s does not exempt %s: %v", policies[0].GetName(), user, validations)
	}
}

func index(objs []*unstructured.Unstructured) map[string]*unstructured.Unstructured {
	m := map[string]*unstructured.Unstructured{}
	for _, obj := range objs {
		m[obj.GetKind()+" "+obj.GetNamespace()+"/"+obj.GetName()] = obj
	}
	return m
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func rbacLabels(obj *unstructured.Unstructured) map[string]string {
	out := map[string]string{}
	for k, v := range obj.GetLabels() {
		if strings.HasPrefix(k, "rbac.authorization.k8s.io/") {
			out[k] = v
		}
	}
	return out
}

func container(tb testing.TB, deploy *unstructured.Unstructured) map[string]any {
	tb.Helper()
	cs, _, _ := unstructured.NestedSlice(deploy.Object, "spec", "template", "spec", "containers")
	if len(cs) != 1 {
		tb.Fatalf("%s: %d containers, want 1", deploy.GetName(), len(cs))
	}
	return cs[0].(map[string]any)
}

// flagNames are the container's flags other than those for NATS
// authentication and TLS, which each install passes in its own way, with
// their values where these are not NATS settings.
func flagNames(c map[string]any) []string {
	var out []string
	args, _ := c["args"].([]any)
	for _, a := range args {
		s, _ := a.(string)
		name, value, _ := strings.Cut(s, "=")
		switch {
		case strings.HasPrefix(name, "--nats-"), name == "--zap-log-level":
			continue
		// Kustomize passes these from the nats ConfigMap, the chart from
		// its values: the same flags, told differently.
		case name == "--stream", name == "--create-stream", name == "--checkpoint-bucket", name == "--checkpoint-interval":
			out = append(out, name)
		default:
			out = append(out, name+"="+value)
		}
	}
	slices.Sort(out)
	return out
}

func spread(tb testing.TB, deploy *unstructured.Unstructured) []string {
	tb.Helper()
	cs, _, _ := unstructured.NestedSlice(deploy.Object, "spec", "template", "spec", "topologySpreadConstraints")
	var out []string
	for _, c := range cs {
		m := c.(map[string]any)
		out = append(out, fmt.Sprint(m["topologyKey"], m["maxSkew"], m["whenUnsatisfiable"], m["matchLabelKeys"]))
	}
	return out
}

// removeAdmissionPolicies deletes, when the test ends, the admission
// policies and bindings among objs, and waits until the API server admits
// a Formation labelled in upper case again: they are cluster-wide, and
// would act on every later test's Formations.
func removeAdmissionPolicies(tb testing.TB, objs []*unstructured.Unstructured) {
	tb.Helper()
	var policies []*unstructured.Unstructured
	for _, obj := range objs {
		switch obj.GetKind() {
		case "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding":
			o := &unstructured.Unstructured{}
			o.SetGroupVersionKind(obj.GroupVersionKind())
			o.SetName(obj.GetName())
			policies = append(policies, o)
		}
	}
	if len(policies) == 0 {
		return
	}
	tb.Cleanup(func() {
		ctx := context.Background()
		for _, o := range policies {
			if err := client.IgnoreNotFound(controlPlane.Client.Delete(ctx, o)); err != nil {
				tb.Errorf("deleting %s %s: %v", o.GetKind(), o.GetName(), err)
			}
		}
		probe := lifecycleFormation("default", "policy-probe")
		probe.Labels = map[string]string{cellosv1.FormationIDLabel: strings.ToUpper(uuid.NewString())}
		harness.Eventually(tb, time.Minute, "the deleted admission policies are no longer enforced", func() error {
			return controlPlane.Client.Create(ctx, probe.DeepCopy(), client.DryRunAll)
		})
	})
}
