package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/internal/fold"
	"cellos.dev/cellos-operator/internal/status"
	"cellos.dev/cellos-operator/internal/store"
)

// FormationReconciler makes each Formation's status equal to the projection
// of its formation's events, with cell counts derived from its Cells.
type FormationReconciler struct {
	client.Client
	Config
}

// +kubebuilder:rbac:groups=cellos.dev,resources=formations,verbs=list;watch;create;patch;delete
// +kubebuilder:rbac:groups=cellos.dev,resources=formations/status,verbs=update

// Reconcile writes one Formation.
func (r *FormationReconciler) Reconcile(ctx context.Context, req ctrl.Request) (res ctrl.Result, err error) {
	key := req.NamespacedName
	f, id, err := r.formationAt(ctx, key)
	if err != nil {
		return ctrl.Result{}, err
	}
	want, stream, projected := r.Store.Formation(id)
	p := r.placer(r.Client)
	rules := p.rules(want, projected)
	placed := key
	if id != "" {
		if placed, err = p.formationKey(ctx, id); err != nil {
			return ctrl.Result{}, err
		}
	}
	mayFollow := f == nil || rules.mayFollow(f)
	if f != nil && f.Spec != nil {
		d := declared{f: f, id: id, want: want, projected: projected, mayFollow: mayFollow}
		if done, err := r.declare(ctx, d); done || err != nil {
			return ctrl.Result{}, err
		}
	}
	switch decideFormation(f, id, key, placed, projected, mayFollow) {
	case nothingHere:
		return ctrl.Result{}, nil
	case awaitStream:
		return ctrl.Result{}, r.awaitStream(ctx, f)
	case giveWay:
		return ctrl.Result{}, r.giveWay(ctx, f, placed)
	case refuseTakeover:
		return ctrl.Result{}, r.refuseTakeover(ctx, f, want)
	}
	ref := store.Ref{Kind: store.FormationKind, ID: id}
	done := settlement{stream: stream, ref: ref, seq: want.LastAppliedSequence, obj: &cellosv1.Formation{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}}
	defer func() { res, err = r.settle(ctx, done, err) }()

	if f, err = r.createIfMissing(ctx, key, f, id); err != nil {
		return ctrl.Result{}, err
	}
	done.obj = f
	if ahead(stream, ref, want.LastAppliedSequence, f.Status.LastAppliedSequence, f.Status.StreamStamp) {
		return ctrl.Result{}, nil
	}
	var cells cellosv1.CellList
	if err := r.List(ctx, &cells, client.MatchingFields{formationIDIndex: id}); err != nil {
		return ctrl.Result{}, fmt.Errorf("listing the Formation's Cells: %w", err)
	}
	desired := status.FormationStatus(&want, store.Stamp(stream, ref, want.LastAppliedSequence),
		status.CountCells(cells.Items), f.Generation, f.Status.Conditions, r.Clock.Now())
	if status.SameDocument(desired.Document, f.Status.Document) {
		desired.Document = f.Status.Document
	}
	if equality.Semantic.DeepEqual(f.Status, desired) {
		return ctrl.Result{}, nil
	}
	from := f.Status.Phase
	f.Status = desired
	if err := updateStatus(ctx, r.Client, store.FormationKind, f); err != nil {
		return ctrl.Result{}, err
	}
	if from != desired.Phase {
		// The phase history, for kubectl describe.
		r.Recorder.Eventf(f, nil, corev1.EventTypeNormal, string(desired.Phase), "Project",
			"Phase %s at stream sequence %d", desired.Phase, want.LastAppliedSequence)
	}
	return ctrl.Result{}, nil
}

// formationAt reads the Formation at key (nil when there is none) and the
// formation id it is for: its label, or for a missing Formation the id
// placed at key. The id is empty when the Formation carries no label, or
// when no formation of the stream belongs at a missing key.
func (r *FormationReconciler) formationAt(ctx context.Context, key client.ObjectKey) (*cellosv1.Formation, string, error) {
	f := &cellosv1.Formation{}
	err := r.Get(ctx, key, f)
	if err == nil {
		return f, f.Labels[cellosv1.FormationIDLabel], nil
	}
	if client.IgnoreNotFound(err) != nil {
		return nil, "", fmt.Errorf("reading Formation: %w", err)
	}
	for _, id := range r.Store.IDsNamed(store.FormationKind, key.Name) {
		placed, err := r.placer(r.Client).formationKey(ctx, id)
		if err != nil {
			return nil, "", err
		}
		if placed == key {
			return nil, id, nil
		}
	}
	return nil, "", nil
}

// refuseTakeover stalls a Formation labelled with a formation of another
// namespace: the projection stays where it is.
func (r *FormationReconciler) refuseTakeover(ctx context.Context, f *cellosv1.Formation, want fold.Formation) error {
	msg := fmt.Sprintf("Formation %s belongs to namespace %q; only a Formation there or in the operator's namespace %q may follow it. Remove the label %s",
		want.ID, want.Namespace, r.Namespace, cellosv1.FormationIDLabel)
	if !meta.IsStatusConditionTrue(f.Status.Conditions, cellosv1.StalledCondition) {
		r.Recorder.Eventf(f, nil, corev1.EventTypeWarning, cellosv1.TakeoverRefusedReason, "Follow", "%s", msg)
	}
	return r.hold(ctx, f, true, cellosv1.TakeoverRefusedReason, msg)
}

// giveWay deletes an observed Formation whose formation a declared one
// holds, leaving its Cells where they are.
func (r *FormationReconciler) giveWay(ctx context.Context, f *cellosv1.Formation, holder client.ObjectKey) error {
	err := r.Delete(ctx, f, client.PropagationPolicy(metav1.DeletePropagationOrphan), client.Preconditions{UID: &f.UID})
	if client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("deleting the observed Formation in favour of the declared %s: %w", holder, err)
	}
	ctrl.LoggerFrom(ctx).Info("Declared Formation takes over from the observed one", "declared", holder)
	return nil
}

// awaitStream marks a Formation that holds no projection: a declared one
// waiting for its first event. A status that ever mirrored the stream is left
// alone, so that a Formation is never rewritten before the projection loads.
func (r *FormationReconciler) awaitStream(ctx context.Context, f *cellosv1.Formation) error {
	if f.Status.LastAppliedSequence > 0 {
		return nil
	}
	return r.hold(ctx, f, false, cellosv1.AwaitingStreamReason, "No event of the stream has named this formation yet")
}

// createIfMissing returns the Formation f at key, creating it labelled with
// its formation id when the stream first names the formation (f is nil).
func (r *FormationReconciler) createIfMissing(ctx context.Context, key client.ObjectKey, f *cellosv1.Formation, id string) (*cellosv1.Formation, error) {
	if f == nil {
		f = &cellosv1.Formation{ObjectMeta: metav1.ObjectMeta{
			Namespace: key.Namespace, Name: key.Name,
			Labels: map[string]string{cellosv1.FormationIDLabel: id},
		}}
		if err := r.Create(ctx, f); err != nil {
			return nil, fmt.Errorf("creating Formation: %w", err)
		}
		ctrl.LoggerFrom(ctx).Info("Created Formation first seen in the stream")
	}
	return f, nil
}

// lagging maps a formation id whose projection changed to its Formation. A
// formation that lives nowhere (deleted, or declared in a namespace that no
// longer holds it) has no status to write: its events count as reflected.
func (r *FormationReconciler) lagging(ctx context.Context, id string) []reconcile.Request {
	key, err := r.placer(r.Client).formationKey(ctx, id)
	if err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Placing a formation", "formationId", id)
		return nil
	}
	if key.Name == "" {
		if want, stream, ok := r.Store.Formation(id); ok {
			r.Store.Flushed(stream, store.Ref{Kind: store.FormationKind, ID: id}, want.LastAppliedSequence)
		}
	}
	return request(key)
}

// formationOfCell maps a Cell to its Formation, whose counts it changes.
func (r *FormationReconciler) formationOfCell(ctx context.Context, cell client.Object) []reconcile.Request {
	if id := cell.GetLabels()[cellosv1.FormationIDLabel]; id != "" {
		return r.lagging(ctx, id)
	}
	return nil
}

// formationsOfID maps a Formation to every Formation of its id, so that an
// observed one learns when a declared one takes its formation over.
func (r *FormationReconciler) formationsOfID(ctx context.Context, f client.Object) []reconcile.Request {
	reqs := request(client.ObjectKeyFromObject(f))
	id := f.GetLabels()[cellosv1.FormationIDLabel]
	if id == "" {
		return reqs
	}
	labelled, err := r.placer(r.Client).formationsOf(ctx, id)
	if err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Listing the Formations of an id", "formationId", id)
		return reqs
	}
	for i := range labelled {
		if key := client.ObjectKeyFromObject(&labelled[i]); key != client.ObjectKeyFromObject(f) {
			reqs = append(reqs, request(key)...)
		}
	}
	return reqs
}

// SetupWithManager watches Formations, to heal them and settle who holds an
// id; Cells, for the counts, gathered over the count window; and the store's
// lagging formations.
func (r *FormationReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("formation").
		Watches(&cellosv1.Formation{}, handler.EnqueueRequestsFromMapFunc(r.formationsOfID)).
		Watches(&cellosv1.Cell{}, afterWindow(max(r.CountWindow, r.FlushWindow), r.formationOfCell)).
		WatchesRawSource(r.Store.Source(store.FormationKind, afterWindow(r.FlushWindow, r.lagging))).
		WithOptions(controller.Options{MaxConcurrentReconciles: r.Workers}).
		Complete(r)
}
