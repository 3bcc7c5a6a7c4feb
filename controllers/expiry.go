package controllers

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/internal/fold"
	"cellos.dev/cellos-operator/internal/store"
)

var (
	expiredTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cellos_operator_expired_objects_total",
		Help: "Formations and Cells deleted because their TTL after status.finishedAt passed, by kind.",
	}, []string{"kind"})
	expiryLag = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "cellos_operator_expiry_delete_lag_seconds",
		Help:    "Time from an object's expiry (status.finishedAt plus its TTL) to its delete, by kind.",
		Buckets: prometheus.ExponentialBuckets(0.1, 2, 14),
	}, []string{"kind"})
)

func init() {
	metrics.Registry.MustRegister(expiredTotal, expiryLag)
}

// expired tells whether the projection of a final object, which expires
// at at if ok, has expired by the wall clock: its object is not created
// again, nor written, and the expirer deletes it if it is there. The fold
// releases it later, once the stream's own clock passes the same moment;
// until then no request may bring it back.
func (c Config) expired(at time.Time, ok bool) bool {
	return ok && !c.Clock.Now().Before(at)
}

// cellExpired tells whether cell cl of the fold has expired, by its own TTL
// or with its formation.
func (c Config) cellExpired(cl fold.Cell) bool {
	if c.expired(cl.Expires(c.TTLs)) {
		return true
	}
	f, _, ok := c.Store.Formation(cl.FormationID)
	return ok && c.expired(f.Expires(c.TTLs))
}

// deleter is the one owner of the operator's deletes of the objects it
// projects: the expiry of final objects and the pruning of what a
// recreated stream left. Each delete names the object's uid and
// resourceVersion as preconditions, so it removes exactly the object the
// decision was made on: one recreated or written since is left to the
// next decision, which sees it as it now is.
type deleter struct {
	client.Client
}

// remove deletes obj, of kind, unless it changed since it was read; a
// conflict or a missing object is no error.
func (d deleter) remove(ctx context.Context, obj client.Object, kind store.Kind) (bool, error) {
	uid, rv := obj.GetUID(), obj.GetResourceVersion()
	err := d.Delete(ctx, obj, client.Preconditions{UID: &uid, ResourceVersion: &rv})
	switch {
	case err == nil:
		return true, nil
	case apierrors.IsNotFound(err) || apierrors.IsConflict(err):
		return false, nil
	default:
		return false, fmt.Errorf("deleting %s %s: %w", kind, client.ObjectKeyFromObject(obj), err)
	}
}

// expirer deletes the Formations and Cells whose TTL after status.finishedAt
// has passed. Its queue is the delayed queue: an object not yet due is
// queued again for the moment it expires, so nothing polls. A quarter of
// the status writers' workers per kind paces the deletes: a wave of
// expiries never starves the status writes, yet the deletes keep up with
// objects finishing at the rate they are written (one worker per kind fell
// behind a steady 100 events/s in the soak of docs/performance.md).
type expirer struct {
	Config
	deleter
	// skewed holds the objects whose finish time was in this process's
	// future, logged once each.
	skewed sync.Map
}

// +kubebuilder:rbac:groups=cellos.dev,resources=cells;formations,verbs=delete

// expireCell deletes one Cell once it is due.
func (e *expirer) expireCell(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var c cellosv1.Cell
	if err := e.Get(ctx, req.NamespacedName, &c); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	return e.expire(ctx, &c, store.CellKind, c.Status.FinishedAt, e.TTLs.Cell)
}

// expireFormation deletes one Formation the operator created from the
// stream once it is due, with the Cells of it that remain: first the
// Cells, so that none outlives it, garbage collector or not. A declared
// Formation is its user's, and stays.
func (e *expirer) expireFormation(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var f cellosv1.Formation
	if err := e.Get(ctx, req.NamespacedName, &f); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if f.Spec != nil || f.Status.FormationID == "" {
		return ctrl.Result{}, nil
	}
	if res, due := e.due(ctx, &f, f.Status.FinishedAt, e.TTLs.Formation); !due {
		return res, nil
	}
	cells, err := cellsLabelled(ctx, e, f.Namespace, f.Status.FormationID)
	if err != nil {
		return ctrl.Result{}, fmt.Errorf("an expired Formation: %w", err)
	}
	for i := range cells {
		if err := e.deleteExpired(ctx, &cells[i], store.CellKind, f.Status.FinishedAt, e.TTLs.Formation); err != nil {
			return ctrl.Result{}, err
		}
	}
	return e.expire(ctx, &f, store.FormationKind, f.Status.FinishedAt, e.TTLs.Formation)
}

// expire deletes obj once ttl after finished has passed, and otherwise
// queues it again for then.
func (e *expirer) expire(ctx context.Context, obj client.Object, kind store.Kind, finished *metav1.Time, ttl time.Duration) (ctrl.Result, error) {
	if res, due := e.due(ctx, obj, finished, ttl); !due {
		return res, nil
	}
	return ctrl.Result{}, e.deleteExpired(ctx, obj, kind, finished, ttl)
}

// due tells whether obj, finished at finished, has expired under ttl; when
// it has not but will, the result queues it again for its expiry. A finish
// time in this process's future, which only a clock skew between it and
// the NATS server explains, is logged once, and the delete waits for it.
func (e *expirer) due(ctx context.Context, obj client.Object, finished *metav1.Time, ttl time.Duration) (ctrl.Result, bool) {
	if finished == nil {
		return ctrl.Result{}, false
	}
	at, ok := fold.ExpiresAt(&finished.Time, ttl)
	if !ok {
		return ctrl.Result{}, false
	}
	now := e.Clock.Now()
	if finished.After(now) {
		if _, logged := e.skewed.LoadOrStore(obj.GetUID(), true); !logged {
			ctrl.LoggerFrom(ctx).Info("The object finished in this process's future: the clocks of the NATS server and the operator disagree; its delete waits for its expiry",
				"finishedAt", finished.Time, "now", now, "expiresAt", at)
		}
	}
	if now.Before(at) {
		return ctrl.Result{RequeueAfter: at.Sub(now)}, false
	}
	e.skewed.Delete(obj.GetUID())
	return ctrl.Result{}, true
}

// deleteExpired deletes obj, of kind, which expired ttl after finished, and
// counts it with the time from its expiry to its delete.
func (e *expirer) deleteExpired(ctx context.Context, obj client.Object, kind store.Kind, finished *metav1.Time, ttl time.Duration) error {
	deleted, err := e.remove(ctx, obj, kind)
	if !deleted {
		return err
	}
	expiredTotal.WithLabelValues(string(kind)).Inc()
	expiryLag.WithLabelValues(string(kind)).Observe(e.Clock.Since(finished.Add(ttl)).Seconds())
	ctrl.LoggerFrom(ctx).V(1).Info("Deleted an expired object", "kind", kind, "object", client.ObjectKeyFromObject(obj), "finishedAt", finished.Time)
	return nil
}

// finished passes only the objects that carry a finish time, so that the
// expirer's queue holds nothing else.
var finished = predicate.NewPredicateFuncs(func(obj client.Object) bool {
	switch o := obj.(type) {
	case *cellosv1.Cell:
		return o.Status.FinishedAt != nil
	case *cellosv1.Formation:
		return o.Status.FinishedAt != nil && o.Spec == nil
	}
	return false
})

// setupExpiry adds the expirer's two controllers, for the kinds whose TTL
// is not 0.
func setupExpiry(mgr ctrl.Manager, e *expirer) error {
	kinds := []struct {
		name   string
		ttl    time.Duration
		object client.Object
		expire func(context.Context, ctrl.Request) (ctrl.Result, error)
	}{
		{"cell-expiry", e.TTLs.Cell, &cellosv1.Cell{}, e.expireCell},
		{"formation-expiry", e.TTLs.Formation, &cellosv1.Formation{}, e.expireFormation},
	}
	for _, k := range kinds {
		if k.ttl <= 0 {
			continue
		}
		err := builder.ControllerManagedBy(mgr).
			Named(k.name).
			For(k.object, builder.WithPredicates(finished)).
			WithOptions(controller.Options{MaxConcurrentReconciles: max(1, e.Workers/4)}).
			Complete(reconcile.Func(k.expire))
		if err != nil {
			return fmt.Errorf("setting up the %s controller: %w", k.name, err)
		}
	}
	return nil
}
