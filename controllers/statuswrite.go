package controllers

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"cellos.dev/cellos-operator/internal/store"
)

var (
	statusWritesTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cellos_operator_status_writes_total",
		Help: "Status writes to the API server, by kind and result (ok, conflict, refused, error).",
	}, []string{"kind", "result"})

	statusWriteSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "cellos_operator_status_write_duration_seconds",
		Help:    "Latency of status writes to the API server, by kind.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
	}, []string{"kind"})
)

func init() {
	metrics.Registry.MustRegister(statusWritesTotal, statusWriteSeconds)
}

// updateStatus writes obj's status with the resourceVersion obj was read at,
// so a concurrent change makes it fail with a conflict rather than be lost;
// the reconcile is then retried on fresh data.
func updateStatus(ctx context.Context, c client.Client, kind store.Kind, obj client.Object) error {
	start := time.Now()
	err := c.Status().Update(ctx, obj)
	statusWriteSeconds.WithLabelValues(string(kind)).Observe(time.Since(start).Seconds())
	result := "ok"
	switch {
	case err == nil:
	case apierrors.IsConflict(err):
		result = "conflict"
	case refusedForGood(err):
		result = "refused"
	default:
		result = "error"
	}
	statusWritesTotal.WithLabelValues(string(kind), result).Inc()
	if err != nil {
		return fmt.Errorf("writing %s status: %w", kind, err)
	}
	return nil
}
