package controllers

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
)

func newNamespace(t *testing.T) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "controllers-"}}
	if err := controlPlane.Client.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
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

// A formation document the API server cannot store (a number beyond float64)
// is left out of status; the rest of the status is written.
func TestUnstorableDocumentStillWritesStatus(t *testing.T) {
	ns := newNamespace(t)
	r := startReconcilers(t, ns)
	const id = "3f1e2d4c-5b6a-4978-8a9b-0c1d2e3f4a5b"
	seq := r.apply(t, `{"type":"dev.cellos.events.cell.formation.v1.running","data":{"formationId":"`+id+`","size":1e400}}`)

	eventually(t, "the Formation's status is written without the document", func() error {
		var f cellosv1.Formation
		if err := controlPlane.Client.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: id}, &f); err != nil {
			return err
		}
		if f.Status.Phase != cellosv1.FormationRunning || f.Status.Document != nil || f.Status.LastAppliedSequence != int64(seq) {
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

// A formation document too large for the API server (or etcd) to store is
// refused for good, whatever status code says so: the watermark passes it
// and the refusal is counted, instead of a write retried forever.
func TestOversizedDocumentIsRefused(t *testing.T) {
	ns := newNamespace(t)
	r := startReconcilers(t, ns)
	for _, size := range []int{2 << 20, 4 << 20} {
		before := testutil.ToFloat64(objectsRefusedTotal.WithLabelValues("Formation"))
		id := fmt.Sprintf("3f1e2d4c-5b6a-4978-8a9b-%012d", size)
		seq := r.apply(t, `{"type":"dev.cellos.events.cell.formation.v1.created","data":{"formationId":"`+id+`","blob":"`+strings.Repeat("x", size)+`"}}`)
		eventually(t, fmt.Sprintf("the watermark passes a %d MiB document", size>>20), func() error {
			if w := r.store.Watermark(); w < seq {
				return fmt.Errorf("watermark %d, want %d", w, seq)
			}
			return nil
		})
		// The Formation's own creation may queue it once more: each refusal counts.
		if got := testutil.ToFloat64(objectsRefusedTotal.WithLabelValues("Formation")) - before; got < 1 {
			t.Errorf("%d MiB document: refusals counted %v, want at least 1", size>>20, got)
		}
	}
}
