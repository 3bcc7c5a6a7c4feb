package controllers

import (
	"context"
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/internal/store"
)

const cellsQuota corev1.ResourceName = "count/cells.cellos.dev"

// setCellsQuota sets the namespace's quota of Cells to limit. No quota
// controller runs against the test API server, so the test writes the status
// that one would: the admission plugin refuses creates until status.hard
// holds the limit, then raises status.used on each create.
func setCellsQuota(t *testing.T, ns string, limit int64) {
	t.Helper()
	ctx := context.Background()
	hard := corev1.ResourceList{cellsQuota: *resource.NewQuantity(limit, resource.DecimalSI)}
	quota := &corev1.ResourceQuota{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "cells"}}
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := controlPlane.Client.Get(ctx, client.ObjectKeyFromObject(quota), quota); client.IgnoreNotFound(err) != nil {
			return err
		} else if err != nil {
			quota.Spec.Hard = hard
			return controlPlane.Client.Create(ctx, quota)
		}
		quota.Spec.Hard = hard
		return controlPlane.Client.Update(ctx, quota)
	})
	if err != nil {
		t.Fatal(err)
	}
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := controlPlane.Client.Get(ctx, client.ObjectKeyFromObject(quota), quota); err != nil {
			return err
		}
		quota.Status.Hard = hard
		if quota.Status.Used == nil {
			quota.Status.Used = corev1.ResourceList{cellsQuota: resource.MustParse("0")}
		}
		return controlPlane.Client.Status().Update(ctx, quota)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Cells beyond a ResourceQuota wait for room without being moved past: the
// cursor stays before the first refused one, the wait shows on a Warning
// Event and a metric, and once the quota is raised every Cell is created and
// the cursor reaches the end.
func TestCellsOverQuotaWaitForRoom(t *testing.T) {
	const allowed, beyond = 2, 2
	ctx := context.Background()
	ns := newNamespace(t)
	setCellsQuota(t, ns, allowed)
	before := testutil.ToFloat64(quotaRefusalsTotal.WithLabelValues("Cell"))
	r := startReconcilers(t, ns)
	seqs := map[string]uint64{}
	var last uint64
	for i := range allowed + beyond {
		id := fmt.Sprintf("quota-%d", i)
		last = r.apply(t, `{"type":"dev.cellos.events.cell.lifecycle.v1.started","data":{"cellId":"`+id+`"}}`)
		seqs[id] = last
	}

	// Which Cells the quota lets in depends on the order of concurrent
	// creates; the cursor waits before the first of those it refuses.
	eventually(t, "the quota's Cells created, the others refused and counted, the cursor before the first refused", func() error {
		var cells cellosv1.CellList
		if err := controlPlane.Client.List(ctx, &cells, client.InNamespace(ns)); err != nil {
			return err
		}
		if len(cells.Items) != allowed {
			return fmt.Errorf("%d Cells, want %d", len(cells.Items), allowed)
		}
		firstRefused := last
		for id, seq := range seqs {
			if !containsCell(cells.Items, id) {
				firstRefused = min(firstRefused, seq)
			}
		}
		if got := testutil.ToFloat64(quotaRefusalsTotal.WithLabelValues("Cell")) - before; got != beyond {
			return fmt.Errorf("quota refusals counted %v, want %d", got, beyond)
		}
		if w := r.store.Watermark(); w != firstRefused-1 {
			return fmt.Errorf("watermark %d, want %d: just before the first refused cell", w, firstRefused-1)
		}
		return nil
	})
	eventually(t, "a Warning Event QuotaExceeded", func() error {
		var evs eventsv1.EventList
		if err := controlPlane.Client.List(ctx, &evs, client.InNamespace(ns)); err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Type == corev1.EventTypeWarning && e.Reason == cellosv1.QuotaExceededReason {
				return nil
			}
		}
		return fmt.Errorf("none among %d events", len(evs.Items))
	})

	setCellsQuota(t, ns, allowed+beyond)
	eventually(t, "every Cell created and the cursor at the last event", func() error {
		var cells cellosv1.CellList
		if err := controlPlane.Client.List(ctx, &cells, client.InNamespace(ns)); err != nil {
			return err
		}
		if len(cells.Items) != allowed+beyond {
			return fmt.Errorf("%d Cells, want %d", len(cells.Items), allowed+beyond)
		}
		if w := r.store.Watermark(); w != last {
			return fmt.Errorf("watermark %d, want %d", w, last)
		}
		return nil
	})
}

// containsCell tells whether cells hold the Cell of cell id.
func containsCell(cells []cellosv1.Cell, id string) bool {
	for i := range cells {
		if cells[i].Name == store.ObjectName(id) {
			return true
		}
	}
	return false
}
