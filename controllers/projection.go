// Package controllers holds one reconciler per kind. Each makes its objects'
// status equal to the projection: level-triggered, so a deleted object or a
// hand-edited status heals, and coalesced, so many events cost one write.
package controllers

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"cellos.dev/cellos-operator/internal/store"
)

// Projection is what a reconciler needs to mirror the projection of its kind
// into status.
type Projection struct {
	client.Client
	// Store holds the projection.
	Store *store.Store
	// Lagging carries the objects whose status lags the projection.
	Lagging <-chan event.GenericEvent
	// FlushWindow is how long events on one object gather before a write.
	FlushWindow time.Duration
	// Clock stamps condition transitions.
	Clock clock.PassiveClock
	// Workers bounds the concurrent status writes.
	Workers int
	// Recorder raises a Warning Event when the API server refuses an object.
	Recorder events.EventRecorder
}

// RefusedReason is the reason of the Warning Event raised when the API server
// refuses to store an object's projection.
const RefusedReason = "ProjectionRefused"

var objectsRefusedTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "cellos_operator_objects_refused_total",
	Help: "Objects whose projection the API server refused for good and the operator moved past, by kind.",
}, []string{"kind"})

func init() {
	metrics.Registry.MustRegister(objectsRefusedTotal)
}

// settle ends a reconcile of ref, whose projection was read at seq. With no
// error, or one the API server will repeat forever (an invalid status, a
// namespace that is gone or terminating), the object's events up to seq count
// as done: retrying cannot help, and the cursor must not wait forever. A
// refusal is logged, counted, and raised as a Warning Event on obj. Any other
// error is returned, to be retried.
func (p *Projection) settle(ctx context.Context, ref store.Ref, obj client.Object, seq uint64, err error) (ctrl.Result, error) {
	if err != nil && !refusedForGood(err) {
		return ctrl.Result{}, err
	}
	if err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "The API server refuses this object's projection; moving on", "sequence", seq)
		objectsRefusedTotal.WithLabelValues(string(ref.Kind)).Inc()
		// Lost when the object's namespace is gone; the log and the metric stay.
		p.Recorder.Eventf(obj, nil, corev1.EventTypeWarning, RefusedReason, "Project",
			"The API server refused the projection up to stream sequence %d: %v", seq, err)
	}
	p.Store.Flushed(ref, seq)
	return ctrl.Result{}, nil
}

func refusedForGood(err error) bool {
	if apierrors.IsInvalid(err) || apierrors.IsBadRequest(err) ||
		apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause) {
		return true
	}
	var status apierrors.APIStatus
	if apierrors.IsNotFound(err) && errors.As(err, &status) {
		details := status.Status().Details
		return details != nil && details.Kind == "namespaces"
	}
	return false
}

// watchLagging queues the lagging objects and bounds the concurrent writes.
func (p *Projection) watchLagging(b *builder.Builder) *builder.Builder {
	itself := func(_ context.Context, obj client.Object) []reconcile.Request {
		return []reconcile.Request{{NamespacedName: client.ObjectKeyFromObject(obj)}}
	}
	return b.WatchesRawSource(source.Channel(p.Lagging, p.afterWindow(itself))).
		WithOptions(controller.Options{MaxConcurrentReconciles: p.Workers})
}

// afterWindow queues the objects that toObjects finds for a changed object
// after the flush window. The queue holds a key once, so every change inside
// the window is written by one reconcile.
func (p *Projection) afterWindow(toObjects handler.MapFunc) handler.EventHandler {
	type queue = workqueue.TypedRateLimitingInterface[reconcile.Request]
	add := func(ctx context.Context, obj client.Object, q queue) {
		for _, req := range toObjects(ctx, obj) {
			q.AddAfter(req, p.FlushWindow)
		}
	}
	return handler.Funcs{
		CreateFunc:  func(ctx context.Context, e event.CreateEvent, q queue) { add(ctx, e.Object, q) },
		UpdateFunc:  func(ctx context.Context, e event.UpdateEvent, q queue) { add(ctx, e.ObjectNew, q) },
		DeleteFunc:  func(ctx context.Context, e event.DeleteEvent, q queue) { add(ctx, e.Object, q) },
		GenericFunc: func(ctx context.Context, e event.GenericEvent, q queue) { add(ctx, e.Object, q) },
	}
}

// conflictRetry is how soon a write that lost a race is tried again.
const conflictRetry = 100 * time.Millisecond

// retryConflicts turns the losses of optimistic concurrency into a quiet
// retry: they mean the cache was behind the API server, not that anything
// failed, and the retry reads fresh data.
func retryConflicts(res ctrl.Result, err error) (ctrl.Result, error) {
	if apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) {
		return ctrl.Result{RequeueAfter: conflictRetry}, nil
	}
	return res, err
}
