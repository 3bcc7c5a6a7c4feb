package main

import (
	"strings"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/internal/status"
	"cellos.dev/cellos-operator/internal/store"
)

// The objects a ceiling writes, and what the API server's cost per event is
// measured against: the operator's Formations and Cells, or minimal objects
// of a test-only group that carry the same ids, phases and states and
// nothing else (no labels, owner references, CEL rules or conditions, a
// schema of four fields). Both are written the same way, one create and
// one status write an object, so that the difference in the API server's
// CPU is the objects'.

// benchGroup is the test-only API group of the minimal objects, and of the
// breakdown's variants of them; the harness installs its CRDs in its own
// control plane only.
const benchGroup = "bench.cellos.dev"

const (
	minimalFormationKind = "MinimalFormation"
	minimalCellKind      = "MinimalCell"
)

// objectShape makes the objects a ceiling writes from the projection.
type objectShape interface {
	// crds are the CRDs the objects need beyond the operator's.
	crds() []*apiextensionsv1.CustomResourceDefinition
	// kinds are an empty object of each kind, for the watch.
	kinds() []client.Object
	newFormation(ns, id string) client.Object
	setFormationStatus(f client.Object, o *projection, id string)
	// newCell is the Cell of cell id, of formation formationID, owned by
	// the Formation of uid owner when not empty.
	newCell(ns, id, formationID string, owner types.UID) client.Object
	setCellStatus(c client.Object, o *projection, id string)
}

// operatorObjects are the operator's objects, with the status its builders
// (internal/status) make.
type operatorObjects struct{}

func (operatorObjects) crds() []*apiextensionsv1.CustomResourceDefinition { return nil }

func (operatorObjects) kinds() []client.Object {
	return []client.Object{&cellosv1.Formation{}, &cellosv1.Cell{}}
}

func (operatorObjects) newFormation(ns, id string) client.Object { return newFormation(ns, id) }

func (operatorObjects) setFormationStatus(obj client.Object, o *projection, id string) {
	f := obj.(*cellosv1.Formation)
	ref := store.Ref{Kind: store.FormationKind, ID: id}
	f.Status = status.FormationStatus(o.final.Formations[id], o.stamps[ref], o.final.Counts(id), f.Generation, nil, time.Now())
}

func (operatorObjects) newCell(ns, id, formationID string, owner types.UID) client.Object {
	return newCell(ns, id, formationID, owner)
}

func (operatorObjects) setCellStatus(obj client.Object, o *projection, id string) {
	c := obj.(*cellosv1.Cell)
	ref := store.Ref{Kind: store.CellKind, ID: id}
	c.Status = status.CellStatus(o.final.Cells[id], o.stamps[ref], c.Generation, nil, time.Now())
}

// minimalObjects carry a Formation's id, phase and last sequence, or a
// Cell's id, state and last sequence (the sequence, so that the watch can
// time each event as it does the operator's objects).
type minimalObjects struct{}

func (minimalObjects) crds() []*apiextensionsv1.CustomResourceDefinition {
	return []*apiextensionsv1.CustomResourceDefinition{
		benchCRD(minimalFormationKind, minimalSchema()),
		benchCRD(minimalCellKind, minimalSchema()),
	}
}

func (minimalObjects) kinds() []client.Object {
	return []client.Object{newMinimal(minimalFormationKind, "", ""), newMinimal(minimalCellKind, "", "")}
}

func (minimalObjects) newFormation(ns, id string) client.Object {
	return newMinimal(minimalFormationKind, ns, store.ObjectName(id))
}

func (minimalObjects) setFormationStatus(obj client.Object, o *projection, id string) {
	f := o.final.Formations[id]
	obj.(*unstructured.Unstructured).Object["status"] = minimalStatus(id, "phase", string(f.Phase), f.LastAppliedSequence)
}

func (minimalObjects) newCell(ns, id, _ string, _ types.UID) client.Object {
	return newMinimal(minimalCellKind, ns, store.ObjectName(id))
}

func (minimalObjects) setCellStatus(obj client.Object, o *projection, id string) {
	c := o.final.Cells[id]
	obj.(*unstructured.Unstructured).Object["status"] = minimalStatus(id, "state", string(c.State), c.LastAppliedSequence)
}

// newMinimal is an object of kind in benchGroup, with no status yet.
func newMinimal(kind, ns, name string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion(benchGroup + "/v1")
	u.SetKind(kind)
	u.SetNamespace(ns)
	u.SetName(name)
	return u
}

// minimalStatus is a minimal object's status: its id, its phase or state
// under the field name the operator's objects use, and its last sequence.
func minimalStatus(id, field, value string, seq uint64) map[string]any {
	return map[string]any{"id": id, field: value, "lastAppliedSequence": int64(seq)}
}

// minimalObserved is what the watch reads of a minimal object: see
// projection.observed.
func (p *projection) minimalObserved(u *unstructured.Unstructured) (ref store.Ref, seq int64, final, ok bool) {
	id, _, _ := unstructured.NestedString(u.Object, "status", "id")
	seq, _, _ = unstructured.NestedInt64(u.Object, "status", "lastAppliedSequence")
	switch u.GetKind() {
	case minimalFormationKind:
		ref = store.Ref{Kind: store.FormationKind, ID: id}
		phase, _, _ := unstructured.NestedString(u.Object, "status", "phase")
		f, known := p.final.Formations[id]
		final = known && phase == string(f.Phase) && seq == int64(f.LastAppliedSequence)
	case minimalCellKind:
		ref = store.Ref{Kind: store.CellKind, ID: id}
		state, _, _ := unstructured.NestedString(u.Object, "status", "state")
		c, known := p.final.Cells[id]
		final = known && state == string(c.State) && seq == int64(c.LastAppliedSequence)
	default:
		return ref, 0, false, false
	}
	return ref, seq, final, id != ""
}

// minimalSchema is the root schema of a minimal object: a status of four
// plain fields, no limits, no rules.
func minimalSchema() apiextensionsv1.JSONSchemaProps {
	str := apiextensionsv1.JSONSchemaProps{Type: "string"}
	return apiextensionsv1.JSONSchemaProps{Type: "object", Properties: map[string]apiextensionsv1.JSONSchemaProps{
		"status": {Type: "object", Properties: map[string]apiextensionsv1.JSONSchemaProps{
			"id": str, "phase": str, "state": str, "lastAppliedSequence": {Type: "integer"},
		}},
	}}
}

// benchCRD is a namespaced CRD of kind in benchGroup, with a status
// subresource as the operator's kinds have, and root as its schema.
func benchCRD(kind string, root apiextensionsv1.JSONSchemaProps) *apiextensionsv1.CustomResourceDefinition {
	plural := benchResource(kind).Resource
	return &apiextensionsv1.CustomResourceDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: plural + "." + benchGroup},
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{
			Group: benchGroup,
			Scope: apiextensionsv1.NamespaceScoped,
			Names: apiextensionsv1.CustomResourceDefinitionNames{
				Kind: kind, ListKind: kind + "List", Plural: plural, Singular: strings.ToLower(kind),
			},
			Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{
				Name: "v1", Served: true, Storage: true,
				Subresources: &apiextensionsv1.CustomResourceSubresources{Status: &apiextensionsv1.CustomResourceSubresourceStatus{}},
				Schema:       &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &root},
			}},
		},
	}
}

// benchResource is the resource of a kind of benchGroup.
func benchResource(kind string) schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: benchGroup, Version: "v1", Resource: strings.ToLower(kind) + "s"}
}

// installCRDs installs crds and waits until the API server serves them.
func (cl *cluster) installCRDs(crds []*apiextensionsv1.CustomResourceDefinition) error {
	if len(crds) == 0 {
		return nil
	}
	_, err := envtest.InstallCRDs(cl.cfg, envtest.CRDInstallOptions{CRDs: crds})
	return err
}
