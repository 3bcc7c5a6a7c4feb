// Package controllers holds one reconciler per kind and the pruner. Each
// reconciler makes its objects' status equal to the projection:
// level-triggered, so a deleted object or a hand-edited status heals, and
// coalesced, so many events cost one write. The Formation reconciler also
// runs the lifecycle of declared Formations (declared.go): it admits them
// and publishes their created and cancelled events, the one path by which
// the operator writes to the stream. Placement (placement.go) and the
// decisions every reconcile makes (decisions.go) are kept apart from the
// reconcilers so that they can be table-tested.
package controllers

import (
	"context"
	"fmt"
	"time"

	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"cellos.dev/cellos-operator/internal/store"
	"cellos.dev/cellos-operator/internal/tombstone"
)

// Config is what both reconcilers share.
type Config struct {
	// Store holds the projection and hands each controller its lagging ids.
	Store *store.Store
	// Namespace receives the objects first seen in the stream.
	Namespace string
	// FlushWindow is how long events on one object gather before a write.
	FlushWindow time.Duration
	// CountWindow is how long changes to a Formation's Cells gather before
	// its counts are written: longer than FlushWindow, as a burst of Cells
	// would otherwise rewrite their Formation for each, while its own events
	// still come after FlushWindow.
	CountWindow time.Duration
	// Workers bounds the concurrent status writes of each kind.
	Workers int
	// Clock stamps condition transitions.
	Clock clock.PassiveClock
	// Recorder raises a Normal Event for each phase a Formation reaches, and
	// for each step of a declared one's lifecycle, and a Warning Event when
	// the API server refuses an object.
	Recorder events.EventRecorder
	// Publisher publishes declared Formations' events.
	Publisher Publisher
	// Tombstones remember the formations whose declared Formation was
	// deleted, after the stream has forgotten them.
	Tombstones *tombstone.Set

	// quotaWaits, shared by both reconcilers, are set by Setup.
	quotaWaits *quotaWaits
}

// settled tells whether the projection holds every ownership fact: the fold
// has reached the end the stream had at start, and the tombstones are
// loaded. Until then, no Formation is refused, deleted, given way or
// cancelled: a partial fold would decide from facts it has not read yet.
func (c Config) settled() bool {
	replayed, _ := c.Store.Replayed()
	select {
	case <-replayed:
		return c.Tombstones.Loaded()
	default:
		return false
	}
}

// settleRetry is how soon a decision that waits for the fold to settle is
// tried again.
const settleRetry = time.Second

// Setup registers the cache indexes, both reconcilers and the pruner with mgr.
func Setup(ctx context.Context, mgr ctrl.Manager, cfg Config) error {
	if err := addIndexes(ctx, mgr.GetFieldIndexer()); err != nil {
		return err
	}
	cfg.quotaWaits = newQuotaWaits()
	c := mgr.GetClient()
	if err := (&FormationReconciler{Client: c, Config: cfg}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the Formation controller: %w", err)
	}
	if err := (&CellReconciler{Client: c, Config: cfg}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the Cell controller: %w", err)
	}
	if err := mgr.Add(&pruner{Client: c, Config: cfg}); err != nil {
		return fmt.Errorf("adding the pruner: %w", err)
	}
	return nil
}

// afterWindow queues the requests that toRequests finds for a change after
// the flush window. The queue holds a key once, so every change inside the
// window is written by one reconcile.
func afterWindow[T any](window time.Duration, toRequests func(context.Context, T) []reconcile.Request) handler.TypedEventHandler[T, reconcile.Request] {
	type queue = workqueue.TypedRateLimitingInterface[reconcile.Request]
	add := func(ctx context.Context, obj T, q queue) {
		for _, req := range toRequests(ctx, obj) {
			q.AddAfter(req, window)
		}
	}
	return handler.TypedFuncs[T, reconcile.Request]{
		CreateFunc:  func(ctx context.Context, e event.TypedCreateEvent[T], q queue) { add(ctx, e.Object, q) },
		UpdateFunc:  func(ctx context.Context, e event.TypedUpdateEvent[T], q queue) { add(ctx, e.ObjectNew, q) },
		DeleteFunc:  func(ctx context.Context, e event.TypedDeleteEvent[T], q queue) { add(ctx, e.Object, q) },
		GenericFunc: func(ctx context.Context, e event.TypedGenericEvent[T], q queue) { add(ctx, e.Object, q) },
	}
}

// request is the one request for key, or none when it is empty.
func request(key client.ObjectKey) []reconcile.Request {
	if key.Name == "" {
		return nil
	}
	return []reconcile.Request{{NamespacedName: key}}
}
