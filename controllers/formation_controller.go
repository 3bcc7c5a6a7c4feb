package controllers

import (
	"context"
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/internal/fold"
	"cellos.dev/cellos-operator/internal/status"
	"cellos.dev/cellos-operator/internal/store"
)

// FormationReconciler makes each Formation's status equal to the projection
// of its formation's events, with the fold's counts of its cells, expired
// ones included. It also
// admits declared Formations and publishes their events (declared.go), and
// refuses a Formation that may not follow the formation it is labelled with.
type FormationReconciler struct {
	client.Client
	Config

	// createdAcked holds the uid of each Formation whose created event
	// JetStream acked in this process. The cache may still show the
	// Formation unpublished to the next reconcile, which would publish it
	// again; this does not wait for the cache.
	createdAcked sync.Map
}

// +kubebuilder:rbac:groups=cellos.dev,resources=formations,verbs=list;watch;create;patch;delete
// +kubebuilder:rbac:groups=cellos.dev,resources=formations/status,verbs=update

// Reconcile brings one Formation in line with the stream: it may create,
// delete (give way), admit, publish or stall it, and writes its status.
func (r *FormationReconciler) Reconcile(ctx context.Context, req Request) (res ctrl.Result, err error) {
	// Every branch ends here; only the one that mirrors the projection sets
	// what its write settles.
	var done settlement
	defer func() { res, err = r.settle(ctx, done, res, err) }()
	key := req.Key
	f, id, err := r.formationAt(ctx, req)
	if err != nil || id != req.ID {
		// A Formation for another id is reconciled by the requests for that one.
		return ctrl.Result{}, err
	}
	if f != nil && id != "" && !fold.IsCanonical(id) {
		return ctrl.Result{}, r.refuseInvalidID(ctx, f, id)
	}
	want, stream, projected := r.Store.Formation(id)
	p := placement{key: key}
	if id != "" {
		if p, err = r.placer(r.Client).place(ctx, id); err != nil {
			return ctrl.Result{}, err
		}
	}
	settled := r.settled()
	if f != nil && f.Spec != nil {
		d := declared{f: f, id: id, want: want, projected: projected, settled: settled}
		if res, finished, err := r.declare(ctx, d); finished || err != nil {
			return res, err
		}
	}
	switch decideFormation(f, id, key, p, settled, r.Tombstones.Loaded()) {
	case nothingHere:
		return ctrl.Result{}, nil
	case wait:
		return ctrl.Result{RequeueAfter: settleRetry}, nil
	case awaitStream:
		return ctrl.Result{}, r.awaitStream(ctx, f)
	case giveWay:
		return ctrl.Result{}, r.giveWay(ctx, f, p.key)
	case refuseTakeover:
		return ctrl.Result{}, r.refuseTakeover(ctx, f, id, p.rules.deleted)
	}
	if f != nil && f.Status.LastAppliedSequence > 0 && !r.replayed() {
		// A start's fold has not reached every cell it had folded before:
		// its counts would move the Formation's back. The status waits.
		return ctrl.Result{RequeueAfter: settleRetry}, nil
	}
	ref := store.Ref{Kind: store.FormationKind, ID: id}
	done = settlement{stream: stream, ref: ref, seq: want.LastAppliedSequence, obj: &cellosv1.Formation{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}}
	if (f == nil || f.Spec == nil) && r.expired(want.Expires(r.TTLs)) {
		// Gone for good: neither created again nor written; the expirer
		// deletes the Formation if it is still there.
		return ctrl.Result{}, nil
	}

	if f, err = r.createIfMissing(ctx, key, f, id); err != nil {
		return ctrl.Result{}, err
	}
	done.obj = f
	if store.Ahead(stream, ref, want.LastAppliedSequence, f.Status.LastAppliedSequence, f.Status.StreamStamp) {
		return ctrl.Result{}, nil
	}
	desired := status.FormationStatus(&want, store.Stamp(stream, ref, want.LastAppliedSequence),
		r.Store.Counts(id), f.Generation, f.Status.Conditions, r.Clock.Now())
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
		r.Recorder.Eventf(f, nil, corev1.EventTypeNormal, status.PhaseReason(desired.Phase), "Project",
			"Phase %s at stream sequence %d", desired.Phase, want.LastAppliedSequence)
	}
	return ctrl.Result{}, nil
}

// formationAt reads the Formation at req.Key (nil when there is none) and
// the formation id it is for: its label, or for a missing Formation the id
// of the request, which placement then tells whether it belongs there. The
// id is empty when the Formation carries no label.
func (r *FormationReconciler) formationAt(ctx context.Context, req Request) (*cellosv1.Formation, string, error) {
	f := &cellosv1.Formation{}
	err := r.Get(ctx, req.Key, f)
	if err == nil {
		return f, f.Labels[cellosv1.FormationIDLabel], nil
	}
	if client.IgnoreNotFound(err) != nil {
		return nil, "", fmt.Errorf("reading Formation: %w", err)
	}
	return nil, req.ID, nil
}

// refuseTakeover stalls a Formation labelled with a formation it may not
// follow: the projection stays where it is. The message names no other
// namespace: which namespace owns a formation is not this one's to know.
func (r *FormationReconciler) refuseTakeover(ctx context.Context, f *cellosv1.Formation, id string, deleted bool) error {
	why := "belongs to another namespace: only the Formation that declared it, or one in its namespace, may follow it"
	if deleted {
		why = "was deleted with the Formation that declared it, and is never followed again"
	}
	return r.stall(ctx, f, cellosv1.TakeoverRefusedReason, fmt.Sprintf(
		"Formation %s %s. Delete this Formation; declare it without the label %s to start a formation of its own", id, why, cellosv1.FormationIDLabel))
}

// refuseInvalidID stalls a Formation whose label spells a formation id in
// any form but the canonical one, which names no formation: ids are
// compared in their canonical form only. Nothing is published for it, and
// its deletion is never held.
func (r *FormationReconciler) refuseInvalidID(ctx context.Context, f *cellosv1.Formation, label string) error {
	if f.DeletionTimestamp != nil {
		return r.releaseFinalizer(ctx, f)
	}
	return r.stall(ctx, f, cellosv1.InvalidFormationIDReason, fmt.Sprintf(
		"The label %s is %q, which is not a formation id in canonical form (a lower-case hyphenated UUID, such as 0f8fad5b-d9cb-469f-a165-70867728950e). Delete this Formation; declare it with the id so spelled, or without the label",
		cellosv1.FormationIDLabel, label))
}

// stall holds f as Stalled for reason, with a Warning Event when it was not
// stalled so already, so that a refusal is announced once.
func (r *FormationReconciler) stall(ctx context.Context, f *cellosv1.Formation, reason, msg string) error {
	if c := meta.FindStatusCondition(f.Status.Conditions, cellosv1.StalledCondition); c == nil || c.Status != metav1.ConditionTrue || c.Reason != reason {
		r.Recorder.Eventf(f, nil, corev1.EventTypeWarning, reason, "Follow", "%s", msg)
	}
	return r.hold(ctx, f, true, reason, msg)
}

// giveWay deletes an observed Formation whose formation a declared one
// holds, or that may not follow it, leaving its Cells where they are.
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
		ctrl.LoggerFrom(ctx).V(1).Info("Created Formation first seen in the stream")
	}
	return f, nil
}

// lagging maps a formation id to its Formation: an id whose projection
// changed, or whose cells did (the store's hand-offs). A formation that lives nowhere gets no request; its
// events count as reflected (holder) and its tombstone, if any, is refreshed.
func (r *FormationReconciler) lagging(ctx context.Context, id string) []Request {
	key, ok := r.holder(ctx, id)
	if ok && key.Name == "" {
		// An event of the formation may just have been folded, and it stays
		// in the stream for max_age: so must the tombstone that keeps it
		// from bringing the formation back. Refresh rewrites only a
		// tombstone old enough, so a call for each cell event costs little.
		if err := r.Tombstones.Refresh(ctx, id); err != nil {
			ctrl.LoggerFrom(ctx).Error(err, "Refreshing a tombstone", "formationID", id)
		}
	}
	return requestFor(key, id)
}

// holder is the Formation that holds the formation with this id; an empty
// key when it lives nowhere (deleted, or declared in a namespace that no
// longer holds it). Such a formation has no status to write: its events
// count as reflected here, since no reconcile will ever settle them.
func (r *FormationReconciler) holder(ctx context.Context, id string) (client.ObjectKey, bool) {
	key, err := r.placer(r.Client).formationKey(ctx, id)
	if err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Placing a formation", "formationID", id)
		return client.ObjectKey{}, false
	}
	if key.Name == "" {
		if want, stream, ok := r.Store.Formation(id); ok {
			r.reflected(stream, store.Ref{Kind: store.FormationKind, ID: id}, want.LastAppliedSequence)
		}
	}
	return key, true
}

// formationsOfID maps a changed Formation to itself, to the Formation that
// now holds its formation, which may take over, and to the observed one the
// operator made for it, which may give way: a constant number of requests
// whatever the number of Formations with the label, so that n of them cost
// O(n) reconciles, not O(n²). An update is mapped with the old object too, so
// the formation a relabelled Formation stops following is placed again: a
// reconcile queued for it on that Formation now follows the new label. A
// Formation named with another formation's id stands where that
// formation's observed Formation would (store.ObjectName keeps a canonical
// id as it is), so that formation is placed there again too: once such a
// Formation is deleted, its place is free.
func (r *FormationReconciler) formationsOfID(ctx context.Context, f client.Object) []Request {
	key := client.ObjectKeyFromObject(f)
	id := f.GetLabels()[cellosv1.FormationIDLabel]
	reqs := requestFor(key, id)
	if named := f.GetName(); named != id && fold.IsCanonical(named) {
		reqs = append(reqs, requestFor(key, named)...)
	}
	if !fold.IsCanonical(id) {
		return reqs
	}
	holder, ok := r.holder(ctx, id)
	if !ok {
		return reqs
	}
	// The queue holds a request once, so one twice costs one reconcile.
	observed := client.ObjectKey{Namespace: r.Namespace, Name: store.ObjectName(id)}
	return append(append(reqs, requestFor(holder, id)...), requestFor(observed, id)...)
}

// SetupWithManager watches Formations, to heal them and settle who holds an
// id; the store's lagging formations; and the formations whose cells the
// fold changed, for the counts, gathered over the count window.
func (r *FormationReconciler) SetupWithManager(mgr ctrl.Manager) error {
	const name = "formation"
	return builder.TypedControllerManagedBy[Request](mgr).
		Named(name).
		Watches(&cellosv1.Formation{}, handler.TypedEnqueueRequestsFromMapFunc(r.formationsOfID)).
		WatchesRawSource(store.Source(r.Store, store.FormationKind, r.Tombstones.WhenLoaded(), afterWindow(r.FlushWindow, r.lagging))).
		WatchesRawSource(store.Source(r.Store, store.FormationCounts, r.Tombstones.WhenLoaded(), afterWindow(max(r.CountWindow, r.FlushWindow), r.lagging))).
		WithOptions(controller.TypedOptions[Request]{MaxConcurrentReconciles: r.Workers}).
		WithLogConstructor(logFor(mgr, name)).
		Complete(r)
}
