package controllers

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
)

func newNamespace(tb testing.TB) string {
	tb.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "controllers-"}}
	if err := controlPlane.Client.Create(context.Background(), ns); err != nil {
		tb.Fatal(err)
	}
	return ns.Name
}

// An object the API server refuses for good must not hold the watermark back
// forever: the refusal is counted and logged, and the stream moves on.
func TestRefusedObjectIsSettled(t *testing.T) {
	before := testutil.ToFloat64(objectsRefusedTotal.WithLabelValues("Cell"))
	// The operator's namespace does not exist: every Create is refused.
	r := startReconcilers(t, "no-such-namespace")
	seq := r.apply(t, `{"type":"dev.cellos.events.cell.lifecycle.v1.started","data":{"cellId":"stranded"}}`)

	eventually(t, "the watermark passes the refused Cell", func() error {
		if w := r.store.Watermark(); w < seq {
			return fmt.Errorf("watermark %d, want %d", w, seq)
		}
		return nil
	})
	if got := testutil.ToFloat64(objectsRefusedTotal.WithLabelValues("Cell")) - before; got != 1 {
		t.Errorf("refused Cells counted: %v, want 1", got)
	}
}

// A formation document over the fold's bound is dropped: the rest of the
// status is written, with a condition that says so, and the watermark
// passes it. Before the bound, a 2 MiB document was a write the API server
// refused, and the projection lost the Formation's whole status.
func TestDroppedDocumentStillWritesStatus(t *testing.T) {
	ns := newNamespace(t)
	r := startReconcilers(t, ns)
	const id = "3f1e2d4c-5b6a-4978-8a9b-0c1d2e3f4a5b"
	seq := r.apply(t, `{"type":"dev.cellos.events.cell.formation.v1.running","data":{"formationId":"`+id+`","blob":"`+strings.Repeat("x", 100<<10)+`"}}`)

	eventually(t, "the Formation's status is written without the document", func() error {
		var f cellosv1.Formation
		if err := controlPlane.Client.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: id}, &f); err != nil {
			return err
		}
		dropped := meta.FindStatusCondition(f.Status.Conditions, cellosv1.DocumentDroppedCondition)
		if f.Status.Phase != cellosv1.FormationRunning || f.Status.Document != nil || f.Status.LastAppliedSequence != int64(seq) ||
			dropped == nil || dropped.Status != metav1.ConditionTrue {
			return fmt.Errorf("status %+v", f.Status)
		}
		return nil
	})
	eventually(t, "the watermark passes it", func() error {
		if w := r.store.Watermark(); w < seq {
			return fmt.Errorf("watermark %d, want %d", w, seq)
		}
		return nil
	})
}
