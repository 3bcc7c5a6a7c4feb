package controllers

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/internal/status"
	"cellos.dev/cellos-operator/internal/store"
)

// CellReconciler makes each Cell's status equal to the projection of its
// cell's events, creating the Cell when the stream first names it.
type CellReconciler struct {
	Projection
}

// +kubebuilder:rbac:groups=cellos.dev,resources=cells,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=cellos.dev,resources=cells/status,verbs=get;update;patch

// Reconcile writes one Cell.
func (r *CellReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	return retryConflicts(r.reconcile(ctx, req))
}

func (r *CellReconciler) reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	want, ok := r.Store.Cell(req.NamespacedName)
	if !ok {
		// Not a cell of the stream (yet): there is nothing to mirror.
		return ctrl.Result{}, nil
	}
	ref := store.Ref{Kind: store.CellKind, Key: req.NamespacedName}
	cell, err := r.fetchOrCreate(ctx, req.NamespacedName, want.FormationID)
	if err != nil {
		return r.settle(ctx, ref, store.ObjectOf(ref), want.LastAppliedSequence, err)
	}
	if r.Store.Ahead(cell.Status.LastAppliedSequence, want.LastAppliedSequence) {
		// Never move status backwards: it already reflects later events.
		return r.settle(ctx, ref, cell, want.LastAppliedSequence, nil)
	}
	desired := status.CellStatus(want, cell.Status.Conditions, r.Clock.Now())
	if !equality.Semantic.DeepEqual(cell.Status, desired) {
		cell.Status = desired
		err = updateStatus(ctx, r.Client, "Cell", cell)
	}
	return r.settle(ctx, ref, cell, want.LastAppliedSequence, err)
}

// fetchOrCreate returns the Cell at key, correlated with its formation,
// creating it when the stream first names the cell.
func (r *CellReconciler) fetchOrCreate(ctx context.Context, key types.NamespacedName, formationID string) (*cellosv1.Cell, error) {
	cell := &cellosv1.Cell{}
	err := r.Get(ctx, key, cell)
	if apierrors.IsNotFound(err) {
		cell = &cellosv1.Cell{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}
		if err := r.correlate(ctx, cell, formationID); err != nil {
			return nil, err
		}
		if err := r.Create(ctx, cell); err != nil {
			return nil, fmt.Errorf("creating Cell: %w", err)
		}
		ctrl.LoggerFrom(ctx).Info("Created Cell first seen in the stream")
		return cell, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading Cell: %w", err)
	}
	before := cell.DeepCopy()
	if err := r.correlate(ctx, cell, formationID); err != nil {
		return nil, err
	}
	if !equality.Semantic.DeepEqual(before.ObjectMeta, cell.ObjectMeta) {
		if err := r.Patch(ctx, cell, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})); err != nil {
			return nil, fmt.Errorf("correlating Cell with its Formation: %w", err)
		}
	}
	return cell, nil
}

// correlate labels a Cell with its formation's id, and makes the Formation
// its owner when both live in one namespace.
func (r *CellReconciler) correlate(ctx context.Context, cell *cellosv1.Cell, formationID string) error {
	if formationID == "" {
		return nil
	}
	metav1.SetMetaDataLabel(&cell.ObjectMeta, cellosv1.FormationIDLabel, formationID)
	key, ok := r.Store.FormationKey(formationID)
	if !ok || key.Namespace != cell.Namespace {
		return nil
	}
	var f cellosv1.Formation
	if err := r.Get(ctx, key, &f); err != nil {
		// The Formation is not created yet: the next reconcile owns the Cell.
		return client.IgnoreNotFound(err)
	}
	if err := controllerutil.SetOwnerReference(&f, cell, r.Scheme()); err != nil {
		return fmt.Errorf("owning Cell by its Formation: %w", err)
	}
	return nil
}

// cellsOfFormation maps a Formation to the Cells that carry its id, so that
// Cells seen before their Formation existed get their owner.
func (r *CellReconciler) cellsOfFormation(ctx context.Context, f client.Object) []reconcile.Request {
	id := f.GetLabels()[cellosv1.FormationIDLabel]
	if id == "" {
		return nil
	}
	var cells cellosv1.CellList
	if err := r.List(ctx, &cells, client.InNamespace(f.GetNamespace()), client.MatchingLabels{cellosv1.FormationIDLabel: id}); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Listing the Cells of a new Formation")
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(cells.Items))
	for i := range cells.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&cells.Items[i])})
	}
	return reqs
}

// SetupWithManager watches Cells, to heal them; new Formations, to own their
// Cells; and the projection's lagging Cells.
func (r *CellReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return r.watchLagging(ctrl.NewControllerManagedBy(mgr).
		For(&cellosv1.Cell{}).
		Watches(&cellosv1.Formation{}, handler.EnqueueRequestsFromMapFunc(r.cellsOfFormation),
			builder.WithPredicates(predicate.Funcs{
				CreateFunc:  func(event.CreateEvent) bool { return true },
				UpdateFunc:  func(event.UpdateEvent) bool { return false },
				DeleteFunc:  func(event.DeleteEvent) bool { return false },
				GenericFunc: func(event.GenericEvent) bool { return false },
			}))).
		Complete(r)
}
