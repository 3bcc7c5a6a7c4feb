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

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/internal/fold"
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
	// CountWindow is how long the fold's changes to a formation's cells
	// gather before its Formation's counts are written: longer than
	// FlushWindow, as a burst of cell events would otherwise rewrite their
	// Formation many times, while its own events still come after
	// FlushWindow.
	CountWindow time.Duration
	// Workers bounds the concurrent status writes of each kind.
	Workers int
	// Clock stamps condition transitions.
	Clock clock.PassiveClock
	// Recorder raises a Normal Event for each phase a Formation reaches and
	// for each step of a declared one's lifecycle, and a Warning Event when
	// the API server refuses a projection for good (ProjectionRefused), a
	// ResourceQuota refuses a create (QuotaExceeded), a Cell's id meets
	// another's name (NameCollision), a Formation is refused (InvalidSpec at
	// admission; stalled with TakeoverRefused or InvalidFormationID), or a
	// publish fails (PublishFailed).
	Recorder events.EventRecorder
	// Publisher publishes declared Formations' events.
	Publisher Publisher
	// Tombstones remember the formations whose declared Formation was
	// deleted, after the stream has forgotten them.
	Tombstones *tombstone.Set
	// TTLs say how long final objects stay before they are deleted; the
	// fold releases them by the same TTLs.
	TTLs fold.TTLs
	// Cells reads the cache's Cells for placement; the manager's cache
	// must be made with its NewInformer.
	Cells *CachedCells

	// quotaWaits, shared by both reconcilers, are set by Setup.
	quotaWaits *quotaWaits
}

// settled tells whether the projection holds every ownership fact: the fold
// has reached the end the stream had at start, and the tombstones are
// loaded. Until then, the decisions that read those facts wait: no takeover
// is refused, no observed Formation gives way (is deleted), none is marked
// as awaiting the stream, and no declared one is cancelled, as a partial
// fold would decide from facts it has not read yet (decideFormation tells
// which decisions do not wait). Refusals that need no stream facts do not
// wait either: an invalid formation id label (refuseInvalidID) or an
// invalid spec at admission.
func (c Config) settled() bool {
	return c.replayed() && c.Tombstones.Loaded()
}

// replayed tells whether the fold has reached the end the stream had at
// start.
func (c Config) replayed() bool {
	replayed, _ := c.Store.Replayed()
	select {
	case <-replayed:
		return true
	default:
		return false
	}
}

// settleRetry is how soon a decision that waits for the fold to settle is
// tried again.
const settleRetry = time.Second

// Setup registers the cache indexes, both reconcilers, the pruner and the
// expirer with mgr.
func Setup(ctx context.Context, mgr ctrl.Manager, cfg Config) error {
	if err := addIndexes(ctx, mgr.GetCache()); err != nil {
		return err
	}
	if err := cfg.Cells.ready(); err != nil {
		return err
	}
	cfg.quotaWaits = newQuotaWaits()
	writes := newOwnWrites()
	for _, kind := range []client.Object{&cellosv1.Formation{}, &cellosv1.Cell{}} {
		if err := writes.follow(ctx, mgr.GetCache(), kind); err != nil {
			return fmt.Errorf("following the cache's %T: %w", kind, err)
		}
	}
	c := ownWritesClient{Client: mgr.GetClient(), writes: writes}
	if err := (&FormationReconciler{Client: c, Config: cfg}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the Formation controller: %w", err)
	}
	if err := (&CellReconciler{Client: c, Config: cfg}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the Cell controller: %w", err)
	}
	if err := mgr.Add(&pruner{deleter: deleter{c}, Config: cfg}); err != nil {
		return fmt.Errorf("adding the pruner: %w", err)
	}
	if err := setupExpiry(mgr, &expirer{Config: cfg, deleter: deleter{c}}); err != nil {
		return err
	}
	return nil
}

// Request asks for one reconcile: of the object at Key, for the stream id
// ID. The id travels with the key from where it is known (the store's
// lagging id, a Formation's label, a Cell's status), so that no reconcile
// has to tell from a name which id it is for. The object, when it exists,
// has the last word: a Formation is for the id its label names, a Cell for
// the one its status names. ID is empty for a Formation without a label.
type Request struct {
	Key types.NamespacedName
	ID  string
}

// requestFor is the one request for key and id, or none when key is empty.
func requestFor(key client.ObjectKey, id string) []Request {
	if key.Name == "" {
		return nil
	}
	return []Request{{Key: key, ID: id}}
}

// logFor is the logger of controller's reconciles, each with the object
// its request is for.
func logFor(mgr ctrl.Manager, controller string) func(*Request) logr.Logger {
	log := mgr.GetLogger().WithValues("controller", controller)
	return func(req *Request) logr.Logger {
		if req == nil {
			return log
		}
		return log.WithValues("namespace", req.Key.Namespace, "name", req.Key.Name)
	}
}

// afterWindow queues the requests that toRequests finds for an id the
// store hands over, after window: FlushWindow for the store's changes, and
// the longer of CountWindow and FlushWindow for the fold's changes to a
// Formation's counts. The queue holds a request once, so every change
// inside the window is written by one reconcile. The store's Source sends
// generic events only.
func afterWindow(window time.Duration, toRequests func(context.Context, string) []Request) handler.TypedEventHandler[string, Request] {
	return handler.TypedFuncs[string, Request]{
		GenericFunc: func(ctx context.Context, e event.TypedGenericEvent[string], q workqueue.TypedRateLimitingInterface[Request]) {
			for _, req := range toRequests(ctx, e.Object) {
				q.AddAfter(req, window)
			}
		},
	}
}
