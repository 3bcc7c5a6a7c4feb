// Package controllers holds one reconciler per kind. Each makes its objects'
// status equal to the projection: level-triggered, so a deleted object or a
// hand-edited status heals, and coalesced, so many events cost one write.
package controllers

import (
	"context"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"cellos.dev/cellos-operator/internal/projector"
)

// Projection is what a reconciler needs to mirror the projection of its kind
// into status.
type Projection struct {
	client.Client
	// Store holds the projection.
	Store *projector.Store
	// Lagging carries the objects whose status lags the projection.
	Lagging <-chan event.GenericEvent
	// FlushWindow is how long events on one object gather before a write.
	FlushWindow time.Duration
	// Clock stamps condition transitions.
	Clock clock.PassiveClock
	// Workers bounds the concurrent status writes.
	Workers int
}

// watchLagging queues the lagging objects and bounds the concurrent writes.
// Each object is queued after the flush window: the queue holds a key once,
// so every event on that object inside the window is written by one reconcile.
func (p *Projection) watchLagging(b *builder.Builder) *builder.Builder {
	queueAfterWindow := handler.Funcs{
		GenericFunc: func(_ context.Context, e event.GenericEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			q.AddAfter(reconcile.Request{NamespacedName: client.ObjectKeyFromObject(e.Object)}, p.FlushWindow)
		},
	}
	return b.WatchesRawSource(source.Channel(p.Lagging, queueAfterWindow)).
		WithOptions(controller.Options{MaxConcurrentReconciles: p.Workers})
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
