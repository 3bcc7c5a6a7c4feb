// Command chartgen writes the parts of the Helm chart that config/ already
// says: the CRDs, kept on uninstall, and the RBAC, so that the chart and
// kustomize install the same thing. `make manifests` runs it; `make verify`
// fails when its output is not committed.
//
//	go run ./hack/chartgen [-config config] [-chart charts/cellos-operator]
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/yaml"
)

// keepAnnotation keeps the CRDs, and so every Formation and Cell, when the
// release is uninstalled.
const keepAnnotation = "helm.sh/resource-policy: keep"

// The kustomize names that the chart replaces with its own.
const (
	kustomizeNamespace      = "system"
	kustomizeServiceAccount = "controller-manager"
)

// managerRole is the ClusterRole controller-gen writes from the
// +kubebuilder:rbac markers (rbac:roleName in the Makefile): the operator's
// access to Formations, Cells and their Events. With watchNamespaces the
// chart binds it in each watched namespace rather than cluster-wide.
const managerRole = "manager-role"

func main() {
	config := flag.String("config", "config", "The kustomize tree to read.")
	chart := flag.String("chart", "charts/cellos-operator", "The chart to write into.")
	flag.Parse()
	if err := run(*config, *chart); err != nil {
		fmt.Fprintln(os.Stderr, "chartgen:", err)
		os.Exit(1)
	}
}

func run(config, chart string) error {
	if err := writeCRDs(filepath.Join(config, "crd", "bases"), filepath.Join(chart, "crds")); err != nil {
		return err
	}
	objs, err := readKustomization(filepath.Join(config, "rbac"))
	if err != nil {
		return err
	}
	out, err := rbacTemplate(objs)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(chart, "templates", "rbac.yaml"), out, 0o644)
}

// writeCRDs copies every CRD into the chart's crds/, annotated to be kept,
// and removes the chart's CRDs that config/ no longer has.
func writeCRDs(from, to string) error {
	srcs, err := filepath.Glob(filepath.Join(from, "*.yaml"))
	if err != nil {
		return err
	}
	if len(srcs) == 0 {
		return fmt.Errorf("no CRDs in %s", from)
	}
	if err := os.MkdirAll(to, 0o755); err != nil {
		return err
	}
	olds, err := filepath.Glob(filepath.Join(to, "*.yaml"))
	if err != nil {
		return err
	}
	for _, old := range olds {
		if !slices.Contains(srcs, filepath.Join(from, filepath.Base(old))) {
			if err := os.Remove(old); err != nil {
				return err
			}
		}
	}
	for _, src := range srcs {
		b, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		kept, err := keep(string(b))
		if err != nil {
			return fmt.Errorf("%s: %w", src, err)
		}
		header := "# Generated from config/crd/bases/" + filepath.Base(src) + " by hack/chartgen (make manifests): edit the API types, not this file.\n" +
			"# Helm installs it before the release and never upgrades or deletes it: see the chart's README.\n"
		if err := os.WriteFile(filepath.Join(to, filepath.Base(src)), []byte(header+kept), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// keep adds the keep annotation to a CRD as controller-gen writes it: its
// metadata has annotations, at two spaces.
func keep(crd string) (string, error) {
	const anchor = "\nmetadata:\n  annotations:\n"
	i := strings.Index(crd, anchor)
	if i < 0 {
		return "", errors.New("no metadata.annotations where controller-gen writes them")
	}
	i += len(anchor)
	return crd[:i] + "    " + keepAnnotation + "\n" + crd[i:], nil
}

// readKustomization decodes every object of the resources a kustomization
// lists (files only).
func readKustomization(dir string) ([]map[string]any, error) {
	var k struct {
		Resources []string `json:"resources"`
	}
	if err := decodeFile(filepath.Join(dir, "kustomization.yaml"), func(d *yaml.YAMLOrJSONDecoder) error { return d.Decode(&k) }); err != nil {
		return nil, err
	}
	var objs []map[string]any
	for _, r := range k.Resources {
		err := decodeFile(filepath.Join(dir, r), func(d *yaml.YAMLOrJSONDecoder) error {
			for {
				var obj map[string]any
				if err := d.Decode(&obj); errors.Is(err, io.EOF) {
					return nil
				} else if err != nil {
					return err
				}
				if obj != nil {
					objs = append(objs, obj)
				}
			}
		})
		if err != nil {
			return nil, err
		}
	}
	return objs, nil
}

func decodeFile(path string, decode func(*yaml.YAMLOrJSONDecoder) error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }()
	if err := decode(yaml.NewYAMLOrJSONDecoder(f, 4096)); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// rbacTemplate renders config/rbac's roles and bindings as one chart
// template: names prefixed with the release's full name (as kustomize's
// namePrefix does), namespace "system" replaced by the release's, and the
// ServiceAccount by the chart's. ClusterRoles aggregated into the built-in
// view and edit roles are switched by rbac.aggregatedRoles, and the secure
// metrics endpoint's (metrics-auth-*) by metrics.secure. The ClusterRoleBinding
// of manager-role becomes, with watchNamespaces, one RoleBinding of the same
// ClusterRole in each watched namespace.
func rbacTemplate(objs []map[string]any) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString("{{- /*\nGenerated from config/rbac by hack/chartgen (make manifests): edit the\n" +
		"+kubebuilder:rbac markers or config/rbac, not this file.\n*/ -}}\n")
	b.WriteString("{{- if .Values.rbac.create }}\n")
	for _, obj := range objs {
		kind, _ := obj["kind"].(string)
		var err error
		switch kind {
		case "ServiceAccount":
			continue // templates/serviceaccount.yaml
		case "ClusterRole":
			var r rbacv1.ClusterRole
			if err = fromUnstructured(obj, &r); err == nil {
				err = writeRole(&b, kind, r.Name, "", r.Labels, r.Rules)
			}
		case "Role":
			var r rbacv1.Role
			if err = fromUnstructured(obj, &r); err == nil {
				err = writeRole(&b, kind, r.Name, r.Namespace, r.Labels, r.Rules)
			}
		case "ClusterRoleBinding":
			var rb rbacv1.ClusterRoleBinding
			if err = fromUnstructured(obj, &rb); err == nil {
				err = writeBinding(&b, kind, rb.Name, "", rb.RoleRef, rb.Subjects)
			}
		case "RoleBinding":
			var rb rbacv1.RoleBinding
			if err = fromUnstructured(obj, &rb); err == nil {
				err = writeBinding(&b, kind, rb.Name, rb.Namespace, rb.RoleRef, rb.Subjects)
			}
		default:
			err = fmt.Errorf("config/rbac has a %s, which the chart does not render", kind)
		}
		if err != nil {
			return nil, err
		}
	}
	b.WriteString("{{- end }}\n")
	return b.Bytes(), nil
}

func fromUnstructured(obj map[string]any, into any) error {
	return runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(obj, into, true)
}

// The template's root context: "." at its top, "$" inside a range.
const (
	top     = "."
	inRange = "$"
)

func fullname(root string) string {
	return `{{ include "cellos-operator.fullname" ` + root + ` }}`
}

func aggregated(labels map[string]string) bool {
	for k := range labels {
		if strings.HasPrefix(k, "rbac.authorization.k8s.io/aggregate-to-") {
			return true
		}
	}
	return false
}

// writeMeta writes an object's header. namespace is config/'s: none, or the
// operator's; or a template expression, when it starts with "{{".
func writeMeta(b *bytes.Buffer, root, kind, name, namespace string, labels map[string]string) error {
	fmt.Fprintf(b, "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: %s\nmetadata:\n  name: %s-%s\n", kind, fullname(root), name)
	switch {
	case namespace == "":
	case namespace == kustomizeNamespace:
		fmt.Fprintf(b, "  namespace: {{ %s.Release.Namespace }}\n", strings.TrimSuffix(root, "."))
	case strings.HasPrefix(namespace, "{{"):
		fmt.Fprintf(b, "  namespace: %s\n", namespace)
	default:
		return fmt.Errorf("%s %s is in namespace %q, not the operator's (%q)", kind, name, namespace, kustomizeNamespace)
	}
	fmt.Fprintf(b, "  labels:\n    {{- include \"cellos-operator.labels\" %s | nindent 4 }}\n", root)
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(b, "    %s: %s\n", k, strconv.Quote(labels[k]))
	}
	return nil
}

// metricsAuth tells whether a role or binding is for the secure metrics
// endpoint's authentication and authorization, needed only with it.
func metricsAuth(name string) bool { return strings.HasPrefix(name, "metrics-auth-") }

// condition is the template condition a role or binding is rendered under,
// or "" for always.
func condition(name string, labels map[string]string) string {
	switch {
	case aggregated(labels):
		return ".Values.rbac.aggregatedRoles"
	case metricsAuth(name):
		return ".Values.metrics.secure"
	}
	return ""
}

func writeRole(b *bytes.Buffer, kind, name, namespace string, labels map[string]string, rules []rbacv1.PolicyRule) error {
	cond := condition(name, labels)
	if cond != "" {
		b.WriteString("{{- if " + cond + " }}\n")
	}
	if err := writeMeta(b, top, kind, name, namespace, labels); err != nil {
		return err
	}
	b.WriteString("rules:\n")
	for _, r := range rules {
		sep := "- "
		for _, f := range []struct {
			key    string
			values []string
		}{
			{"apiGroups", r.APIGroups}, {"resources", r.Resources}, {"resourceNames", r.ResourceNames},
			{"nonResourceURLs", r.NonResourceURLs}, {"verbs", r.Verbs},
		} {
			if f.values == nil {
				continue
			}
			fmt.Fprintf(b, "%s%s: %s\n", sep, f.key, flow(f.values))
			sep = "  "
		}
	}
	if cond != "" {
		b.WriteString("{{- end }}\n")
	}
	return nil
}

func writeBinding(b *bytes.Buffer, kind, name, namespace string, ref rbacv1.RoleRef, subjects []rbacv1.Subject) error {
	for _, s := range subjects {
		if s.Kind != rbacv1.ServiceAccountKind || s.Name != kustomizeServiceAccount || s.Namespace != kustomizeNamespace {
			return fmt.Errorf("%s %s binds %s %s/%s; the chart binds only the operator's ServiceAccount", kind, name, s.Kind, s.Namespace, s.Name)
		}
	}
	if kind == "ClusterRoleBinding" && ref.Kind == "ClusterRole" && ref.Name == managerRole {
		// A namespaced install: the same ClusterRole, bound in each
		// watched namespace only.
		b.WriteString("{{- if .Values.watchNamespaces }}\n{{- range $namespace := .Values.watchNamespaces }}\n")
		if err := writeBindingObject(b, inRange, "RoleBinding", name+"-watched", "{{ $namespace }}", ref, len(subjects)); err != nil {
			return err
		}
		b.WriteString("{{- end }}\n{{- else }}\n")
		if err := writeBindingObject(b, top, kind, name, namespace, ref, len(subjects)); err != nil {
			return err
		}
		b.WriteString("{{- end }}\n")
		return nil
	}
	cond := condition(ref.Name, nil)
	if cond != "" {
		b.WriteString("{{- if " + cond + " }}\n")
	}
	if err := writeBindingObject(b, top, kind, name, namespace, ref, len(subjects)); err != nil {
		return err
	}
	if cond != "" {
		b.WriteString("{{- end }}\n")
	}
	return nil
}

// writeBindingObject writes a binding of ref to the chart's ServiceAccount,
// once for each of config/'s subjects (all of them the operator's).
func writeBindingObject(b *bytes.Buffer, root, kind, name, namespace string, ref rbacv1.RoleRef, subjects int) error {
	if err := writeMeta(b, root, kind, name, namespace, nil); err != nil {
		return err
	}
	fmt.Fprintf(b, "roleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: %s\n  name: %s-%s\nsubjects:\n", ref.Kind, fullname(root), ref.Name)
	release := strings.TrimSuffix(root, ".") + ".Release.Namespace"
	for range subjects {
		fmt.Fprintf(b, "- kind: ServiceAccount\n  name: {{ include \"cellos-operator.serviceAccountName\" %s }}\n  namespace: {{ %s }}\n", root, release)
	}
	return nil
}

// flow writes a list of strings in YAML's flow style, each quoted.
func flow(values []string) string {
	q := make([]string, len(values))
	for i, v := range values {
		q[i] = strconv.Quote(v)
	}
	return "[" + strings.Join(q, ", ") + "]"
}
