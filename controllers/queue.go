// Package controllers holds one reconciler per kind. Each makes its objects'
// status equal to the projection: level-triggered, so a deleted object or a
// hand-edited status heals, and coalesced, so many events cost one write.
package controllers

import (
	"context"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	ctrl "sigs.k8s.io/controller-runtime"

	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"
)

// lagging is the source of the objects whose status lags the projection.
// Each is queued after the flush window: the queue holds a key once, so every
// event on that object inside the window is written by one reconcile.
func lagging(events <-chan event.GenericEvent, window time.Duration) source.Source {
	return source.Channel(events, handler.Funcs{
		GenericFunc: func(_ context.Context, e event.GenericEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			q.AddAfter(reconcile.Request{NamespacedName: client.ObjectKeyFromObject(e.Object)}, window)
		},
	})
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
