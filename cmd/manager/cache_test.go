package main

import (
	"encoding/json"
	"fmt"
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
	"cellos.dev/cellos-operator/internal/fold"
	"cellos.dev/cellos-operator/internal/status"
	"cellos.dev/cellos-operator/internal/store"
)

// BenchmarkCachedCellBytes reports the live heap one Cell costs in an
// informer's store: decoded from the JSON the API server sends, passed
// through the cache's transform, and indexed as the manager's cache indexes
// Cells (by namespace, and by formation id and cell id both per namespace
// and across namespaces, as controller-runtime's field indexes do). Its
// bytes/cell is what the cache adds per live Cell, before the garbage
// collector's headroom.
func BenchmarkCachedCellBytes(b *testing.B) {
	const cells = 20000
	scheme := k8sruntime.NewScheme()
	if err := cellosv1.AddToScheme(scheme); err != nil {
		b.Fatal(err)
	}
	decoder := serializer.NewCodecFactory(scheme).UniversalDeserializer()
	for range b.N {
		store := newCellStore()
		before := liveHeap()
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
		after := liveHeap()
		b.ReportMetric(float64(after-before)/cells, "bytes/cell")
		runtime.KeepAlive(store)
	}
}

// newCellStore is an informer's store for Cells with the manager's indexes.
func newCellStore() toolscache.Indexer {
	bothScopes := func(value func(*cellosv1.Cell) string) toolscache.IndexFunc {
		return func(obj any) ([]string, error) {
			c := obj.(*cellosv1.Cell)
			v := value(c)
			if v == "" {
				return nil, nil
			}
			return []string{"__all_namespaces/" + v, c.Namespace + "/" + v}, nil
		}
	}
	return toolscache.NewIndexer(toolscache.MetaNamespaceKeyFunc, toolscache.Indexers{
		toolscache.NamespaceIndex:       toolscache.MetaNamespaceIndexFunc,
		"field:" + formationIDIndexName: bothScopes(func(c *cellosv1.Cell) string { return c.Labels[cellosv1.FormationIDLabel] }),
		"field:status.cellId":           bothScopes(func(c *cellosv1.Cell) string { return c.Status.CellID }),
	})
}

const formationIDIndexName = "formationId"

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

// liveHeap is the heap in use after a full collection.
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestSlimObjectsKeepsWhatTheOperatorReads checks that the transform
// changes nothing the reconcilers compare, and that two Cells decoded apart
// share their repeated words.
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
}
