package main

import (
	"encoding/json"
	"fmt"
	"reflect"
	"runtime"
	"testing"
	"time"
	"unsafe"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/diff"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/controllers"
	"cellos.dev/cellos-operator/internal/fold"
	"cellos.dev/cellos-operator/internal/status"
	"cellos.dev/cellos-operator/internal/store"
	"cellos.dev/cellos-operator/test/harness"
)

// BenchmarkCachedCellBytes reports the live heap one Cell costs in an
// informer's store: decoded from the JSON the API server sends, passed
// through the cache's transform, and indexed as the manager's cache indexes
// Cells (newCellStore). Its bytes/cell is what the cache adds per live Cell,
// before the garbage collector's headroom.
func BenchmarkCachedCellBytes(b *testing.B) {
	const cells = 20000
	scheme := k8sruntime.NewScheme()
	if err := cellosv1.AddToScheme(scheme); err != nil {
		b.Fatal(err)
	}
	decoder := serializer.NewCodecFactory(scheme).UniversalDeserializer()
	for range b.N {
		// Each run starts as a manager does, knowing no formation, so that
		// every run pays for the labels and owners its formations share.
		kin = kinship{}
		store := newCellStore()
		before := harness.LiveHeap()
		for i := range cells {
			obj, _, err := decoder.Decode(cellJSON(b, i), nil, nil)
			if err != nil {
				b.Fatal(err)
			}
			slim, err := slimObjects(obj)
			if err != nil {
				b.Fatal(err)
			}
			if err := store.Add(slim); err != nil {
				b.Fatal(err)
			}
		}
		after := harness.LiveHeap()
		b.ReportMetric(float64(after-before)/cells, "bytes/cell")
		runtime.KeepAlive(store)
	}
}

// newCellStore is an informer's store for Cells with the manager's indexes:
// controller-runtime's by namespace, and the operator's own.
func newCellStore() toolscache.Indexer {
	indexers := controllers.Indexers(&cellosv1.Cell{})
	indexers[toolscache.NamespaceIndex] = toolscache.MetaNamespaceIndexFunc
	return toolscache.NewIndexer(toolscache.MetaNamespaceKeyFunc, indexers)
}

// cellJSON is the i-th of a run's Cells as the API server sends it: five
// Cells to a formation, each destroyed after succeeding, as the operator
// writes them.
func cellJSON(tb testing.TB, i int) []byte {
	tb.Helper()
	formationID := fmt.Sprintf("f0e1d2c3-0000-4000-8000-%012d", i/5)
	cellID := fmt.Sprintf("c0e1d2c3-0000-4000-8000-%012d", i)
	started := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Second)
	destroyed := started.Add(time.Minute)
	want := fold.Cell{ID: cellID, SpecID: "spec-" + cellID[:8], RunID: "run-" + cellID[:8], FormationID: formationID,
		State: cellosv1.CellDestroyed, StartedAt: &started, DestroyedAt: &destroyed, FinishedAt: &destroyed,
		Outcome: cellosv1.OutcomeSucceeded, ExitCode: ptr.To[int32](0), LastAppliedSequence: uint64(3 * i)}
	stream := store.Stream{Name: "CELLOS_EVENTS", Created: started}
	ref := store.Ref{Kind: store.CellKind, ID: cellID}
	cell := cellosv1.Cell{
		TypeMeta: metav1.TypeMeta{APIVersion: cellosv1.GroupVersion.String(), Kind: "Cell"},
		ObjectMeta: metav1.ObjectMeta{
			Name: store.ObjectName(cellID), Namespace: "cellos-system", UID: types.UID(fmt.Sprintf("a0e1d2c3-0000-4000-8000-%012d", i)),
			ResourceVersion: fmt.Sprint(100000 + i), Generation: 1, CreationTimestamp: metav1.NewTime(started),
			Labels: map[string]string{cellosv1.FormationIDLabel: formationID},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: cellosv1.GroupVersion.String(), Kind: "Formation",
				Name: store.ObjectName(formationID), UID: types.UID(fmt.Sprintf("b0e1d2c3-0000-4000-8000-%012d", i/5)),
				Controller: ptr.To(false), BlockOwnerDeletion: ptr.To(false)}},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "manager", Operation: metav1.ManagedFieldsOperationUpdate,
				APIVersion: cellosv1.GroupVersion.String(), Time: ptr.To(metav1.NewTime(started)), FieldsType: "FieldsV1",
				FieldsV1: metav1.NewFieldsV1(`{"f:metadata":{"f:labels":{".":{},"f:cellos.dev/formation-id":{}}}}`)}},
		},
		Status: status.CellStatus(&want, store.Stamp(stream, ref, want.LastAppliedSequence), 1, nil, destroyed),
	}
	data, err := json.Marshal(&cell)
	if err != nil {
		tb.Fatal(err)
	}
	return data
}

// TestSlimObjectsKeepsWhatTheOperatorReads checks that the transform
// changes nothing the reconcilers compare, and that two Cells of a formation
// decoded apart share their repeated words, labels and owner references.
func TestSlimObjectsKeepsWhatTheOperatorReads(t *testing.T) {
	scheme := k8sruntime.NewScheme()
	if err := cellosv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	decoder := serializer.NewCodecFactory(scheme).UniversalDeserializer()
	decode := func(i int) *cellosv1.Cell {
		obj, _, err := decoder.Decode(cellJSON(t, i), nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		return obj.(*cellosv1.Cell)
	}
	first, second := decode(0), decode(1)
	want := first.DeepCopy()
	want.ManagedFields = nil
	if _, err := slimObjects(first); err != nil {
		t.Fatal(err)
	}
	if _, err := slimObjects(second); err != nil {
		t.Fatal(err)
	}
	if !equality.Semantic.DeepEqual(first, want) {
		t.Errorf("the transform changed the Cell:\n%s", diff.Diff(want, first))
	}
	shared := func(what, a, b string) {
		t.Helper()
		if unsafe.StringData(a) != unsafe.StringData(b) {
			t.Errorf("%s: %q and %q are two copies", what, a, b)
		}
	}
	shared("a condition's message in two Cells", first.Status.Conditions[0].Message, second.Status.Conditions[0].Message)
	shared("the namespace of two Cells", first.Namespace, second.Namespace)
	shared("the formation id in a Cell's label and owner", first.Labels[cellosv1.FormationIDLabel], first.OwnerReferences[0].Name)
	shared("a Cell's name and id", first.Name, first.Status.CellID)
	if reflect.ValueOf(first.Labels).UnsafePointer() != reflect.ValueOf(second.Labels).UnsafePointer() {
		t.Error("two Cells of one formation have a map of labels each")
	}
	if &first.OwnerReferences[0] != &second.OwnerReferences[0] {
		t.Error("two Cells of one formation have owner references each")
	}
	if first.Status.FinishedAt != first.Status.DestroyedAt {
		t.Error("a Cell's equal finish and destroy times are two copies")
	}
}

// TestKinshipForgetsFormationsGoneQuiet checks that the table of what
// Cells share stays bounded as formations come and go, and keeps a formation
// whose Cells are still being decoded.
func TestKinshipForgetsFormationsGoneQuiet(t *testing.T) {
	var k kinship
	labelled := func(id string) *metav1.ObjectMeta {
		return &metav1.ObjectMeta{Labels: map[string]string{cellosv1.FormationIDLabel: id}}
	}
	first := labelled("f-0")
	k.share("f-0", first)
	for i := 1; i < 3*maxKin; i++ {
		k.share(fmt.Sprintf("f-%d", i), labelled(fmt.Sprintf("f-%d", i)))
		if i%(maxKin/2) == 0 {
			k.share("f-0", labelled("f-0")) // f-0 still has Cells to decode
		}
	}
	if n := len(k.current) + len(k.previous); n > 2*maxKin {
		t.Errorf("the table holds %d formations, more than %d", n, 2*maxKin)
	}
	if _, ok := k.previous["f-1"]; ok {
		t.Error("the table still holds a formation gone quiet two generations ago")
	}
	again := labelled("f-0")
	k.share("f-0", again)
	if reflect.ValueOf(again.Labels).UnsafePointer() != reflect.ValueOf(first.Labels).UnsafePointer() {
		t.Error("a formation whose Cells kept coming lost its shared labels")
	}
}
