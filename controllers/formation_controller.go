package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/internal/fold"
	"cellos.dev/cellos-operator/internal/status"
	"cellos.dev/cellos-operator/internal/store"
)

// FormationReconciler makes each Formation's status equal to the projection
// of its formation's events, with cell counts derived from its Cells.
type FormationReconciler struct {
	Projection
}

// +kubebuilder:rbac:groups=cellos.dev,resources=formations,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=cellos.dev,resources=formations/status,verbs=get;update;patch

// Reconcile writes one Formation.
func (r *FormationReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	return retryConflicts(r.reconcile(ctx, req))
}

func (r *FormationReconciler) reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	want, ok := r.Store.Formation(req.NamespacedName)
	if !ok {
		adopted, err := r.adoptOrAwait(ctx, req.NamespacedName)
		if !adopted || err != nil {
			return ctrl.Result{}, err
		}
		want, _ = r.Store.Formation(req.NamespacedName)
	}
	ref := store.Ref{Kind: store.FormationKind, Key: req.NamespacedName}
	f, err := r.fetchOrCreate(ctx, req.NamespacedName, want)
	if err != nil {
		return r.settle(ctx, ref, store.ObjectOf(ref), want.LastAppliedSequence, err)
	}
	if r.Store.Ahead(f.Status.LastAppliedSequence, want.LastAppliedSequence) {
		// Never move status backwards: it already reflects later events.
		return r.settle(ctx, ref, f, want.LastAppliedSequence, nil)
	}
	var cells cellosv1.CellList
	if err := r.List(ctx, &cells, client.MatchingLabels{cellosv1.FormationIDLabel: want.ID}); err != nil {
		return ctrl.Result{}, fmt.Errorf("listing the Formation's Cells: %w", err)
	}
	desired := status.FormationStatus(want, status.CountCells(cells.Items), f.Generation, f.Status.Conditions, r.Clock.Now())
	if status.SameDocument(desired.Document, f.Status.Document) {
		desired.Document = f.Status.Document
	}
	if equality.Semantic.DeepEqual(f.Status, desired) {
		return r.settle(ctx, ref, f, want.LastAppliedSequence, nil)
	}
	from := f.Status.Phase
	f.Status = desired
	if err := updateStatus(ctx, r.Client, "Formation", f); err != nil {
		return r.settle(ctx, ref, f, want.LastAppliedSequence, err)
	}
	if from != desired.Phase {
		// The phase history, for kubectl describe.
		r.Recorder.Eventf(f, nil, corev1.EventTypeNormal, string(desired.Phase), "Project",
			"Phase %s at stream sequence %d", desired.Phase, want.LastAppliedSequence)
	}
	return r.settle(ctx, ref, f, want.LastAppliedSequence, nil)
}

// adoptOrAwait handles a Formation the projection has no record for. A
// declared one whose id the stream already named on an observed Formation
// takes the projection over, and the observed one is deleted, leaving its
// Cells where they are. Otherwise it is marked as waiting for its first
// event. adopted tells whether the projection now has a record for it.
func (r *FormationReconciler) adoptOrAwait(ctx context.Context, key types.NamespacedName) (adopted bool, err error) {
	var f cellosv1.Formation
	if err := r.Get(ctx, key, &f); err != nil {
		return false, client.IgnoreNotFound(err)
	}
	id := f.Labels[cellosv1.FormationIDLabel]
	if observedKey, known := r.Store.FormationKey(id); known && f.Spec != nil && observedKey != key {
		var observed cellosv1.Formation
		err := r.Get(ctx, observedKey, &observed)
		if client.IgnoreNotFound(err) != nil {
			return false, fmt.Errorf("reading the Formation the stream named: %w", err)
		}
		// Two declared Formations with one id: the first keeps it.
		if err != nil || observed.Spec == nil {
			r.Store.Rebind(id, key)
			if err == nil {
				err = r.Delete(ctx, &observed, client.PropagationPolicy(metav1.DeletePropagationOrphan), client.Preconditions{UID: &observed.UID})
				if client.IgnoreNotFound(err) != nil {
					return false, fmt.Errorf("deleting the observed Formation %s: %w", observedKey, err)
				}
			}
			ctrl.LoggerFrom(ctx).Info("Declared Formation takes over from the observed one", "formationId", id, "observed", observedKey)
			return true, nil
		}
	}
	return false, r.awaitStream(ctx, &f)
}

// awaitStream marks a Formation that the stream has not named: a declared one
// waiting for its first event. A status that ever mirrored the stream is left
// alone, so that a Formation is never rewritten before the projection loads.
func (r *FormationReconciler) awaitStream(ctx context.Context, f *cellosv1.Formation) error {
	if f.Status.LastAppliedSequence > 0 {
		return nil
	}
	before := f.Status.DeepCopy()
	status.SetAwaitingStream(&f.Status, f.Generation, r.Clock.Now())
	if equality.Semantic.DeepEqual(*before, f.Status) {
		return nil
	}
	return updateStatus(ctx, r.Client, "Formation", f)
}

// fetchOrCreate returns the Formation at key, labelled with its formation id,
// creating it when the stream first names the formation.
func (r *FormationReconciler) fetchOrCreate(ctx context.Context, key types.NamespacedName, want *fold.Formation) (*cellosv1.Formation, error) {
	f := &cellosv1.Formation{}
	err := r.Get(ctx, key, f)
	if apierrors.IsNotFound(err) {
		f = &cellosv1.Formation{ObjectMeta: metav1.ObjectMeta{
			Namespace: key.Namespace, Name: key.Name,
			Labels: map[string]string{cellosv1.FormationIDLabel: want.ID},
		}}
		if err := r.Create(ctx, f); err != nil {
			return nil, fmt.Errorf("creating Formation: %w", err)
		}
		ctrl.LoggerFrom(ctx).Info("Created Formation first seen in the stream")
		return f, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading Formation: %w", err)
	}
	if f.Labels[cellosv1.FormationIDLabel] != want.ID {
		before := f.DeepCopy()
		metav1.SetMetaDataLabel(&f.ObjectMeta, cellosv1.FormationIDLabel, want.ID)
		if err := r.Patch(ctx, f, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})); err != nil {
			return nil, fmt.Errorf("labelling Formation with its id: %w", err)
		}
	}
	return f, nil
}

// formationOfCell maps a Cell to its Formation, whose counts it changes.
func (r *FormationReconciler) formationOfCell(_ context.Context, cell client.Object) []reconcile.Request {
	id := cell.GetLabels()[cellosv1.FormationIDLabel]
	if id == "" {
		return nil
	}
	key, ok := r.Store.FormationKey(id)
	if !ok {
		return nil
	}
	return []reconcile.Request{{NamespacedName: key}}
}

// SetupWithManager watches Formations, to heal them; Cells, for the counts,
// gathered over the flush window like events; and the projection's lagging
// Formations.
func (r *FormationReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return r.watchLagging(ctrl.NewControllerManagedBy(mgr).
		For(&cellosv1.Formation{}).
		Watches(&cellosv1.Cell{}, r.afterWindow(r.formationOfCell))).
		Complete(r)
}
