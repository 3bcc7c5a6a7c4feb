package controllers

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/internal/projector"
	"cellos.dev/cellos-operator/internal/statuswriter"
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
	cell, err := r.fetchOrCreate(ctx, req.NamespacedName)
	if err != nil {
		return ctrl.Result{}, err
	}
	if err := r.correlate(ctx, cell, want.FormationID); err != nil {
		return ctrl.Result{}, err
	}
	ref := projector.Ref{Kind: projector.CellKind, Key: req.NamespacedName}
	if cell.Status.LastAppliedSequence > int64(want.LastAppliedSequence) {
		// Never move status backwards: it already reflects later events.
		r.Store.Flushed(ref, want.LastAppliedSequence)
		return ctrl.Result{}, nil
	}
	desired := statuswriter.CellStatus(want, cell.Status.Conditions, r.Clock.Now())
	if !equality.Semantic.DeepEqual(cell.Status, desired) {
		cell.Status = desired
		if err := statuswriter.Update(ctx, r.Client, "Cell", cell); err != nil {
			return ctrl.Result{}, err
		}
	}
	r.Store.Flushed(ref, want.LastAppliedSequence)
	return ctrl.Result{}, nil
}

func (r *CellReconciler) fetchOrCreate(ctx context.Context, key types.NamespacedName) (*cellosv1.Cell, error) {
	cell := &cellosv1.Cell{}
	err := r.Get(ctx, key, cell)
	if !apierrors.IsNotFound(err) {
		if err != nil {
			return nil, fmt.Errorf("reading Cell: %w", err)
		}
		return cell, nil
	}
	cell = &cellosv1.Cell{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}
	if err := r.Create(ctx, cell); err != nil {
		return nil, fmt.Errorf("creating Cell: %w", err)
	}
	ctrl.LoggerFrom(ctx).Info("Created Cell first seen in the stream")
	return cell, nil
}

// correlate labels a Cell with its formation's id, and makes the Formation
// its owner when both live in one namespace.
func (r *CellReconciler) correlate(ctx context.Context, cell *cellosv1.Cell, formationID string) error {
	if formationID == "" {
		return nil
	}
	before := cell.DeepCopy()
	metav1.SetMetaDataLabel(&cell.ObjectMeta, cellosv1.FormationIDLabel, formationID)
	if key, ok := r.Store.FormationKey(formationID); ok && key.Namespace == cell.Namespace {
		var f cellosv1.Formation
		if err := r.Get(ctx, key, &f); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("reading the Cell's Formation: %w", err)
		} else if err == nil {
			if err := controllerutil.SetOwnerReference(&f, cell, r.Scheme()); err != nil {
				return fmt.Errorf("owning Cell by its Formation: %w", err)
			}
		}
	}
	if equality.Semantic.DeepEqual(before.ObjectMeta, cell.ObjectMeta) {
		return nil
	}
	if err := r.Patch(ctx, cell, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})); err != nil {
		return fmt.Errorf("correlating Cell with its Formation: %w", err)
	}
	return nil
}

// SetupWithManager watches Cells, to heal them, and the projection's lagging Cells.
func (r *CellReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return r.watchLagging(ctrl.NewControllerManagedBy(mgr).For(&cellosv1.Cell{})).Complete(r)
}
