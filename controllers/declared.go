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
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/internal/fold"
	"cellos.dev/cellos-operator/internal/status"
	"cellos.dev/cellos-operator/internal/store"
)

// The lifecycle of a declared Formation, before and after the stream drives
// its status: admission, one created event, and delete = cancel.

// Publisher publishes the operator's own events for declared Formations.
type Publisher interface {
	Created(ctx context.Context, id string, f *cellosv1.Formation) error
	Cancelled(ctx context.Context, id string) error
}

// declared is one reconcile of a declared Formation f with formation id id
// (empty before admission), whose projection is want when projected, and
// whether the projection has settled (Config.settled).
type declared struct {
	f         *cellosv1.Formation
	id        string
	want      fold.Formation
	projected bool
	settled   bool
}

// declare runs the steps of a declared Formation's lifecycle that are due.
// Only the Formation that owns its formation (owns) has a lifecycle: a copy
// or a follower publishes nothing and holds nothing. done tells whether the
// reconcile ends here; otherwise the stream drives f like any other
// Formation.
func (r *FormationReconciler) declare(ctx context.Context, d declared) (res ctrl.Result, done bool, err error) {
	f := d.f
	switch {
	case f.DeletionTimestamp != nil:
		res, err = r.release(ctx, d)
		return res, true, err
	case d.id == "":
		return res, true, r.admit(ctx, f)
	case !owns(f):
		return res, false, nil
	case !controllerutil.ContainsFinalizer(f, cellosv1.CancelFinalizer):
		before := f.DeepCopy()
		controllerutil.AddFinalizer(f, cellosv1.CancelFinalizer)
		return res, true, r.patchMeta(ctx, before, f, "holding the Formation until its formation is cancelled")
	case f.Status.FormationID != d.id:
		// Admission recorded in status after the label, in its own step, so
		// that whoever finds the label set finishes it.
		f.Status.FormationID = d.id
		return res, true, r.hold(ctx, f, false, cellosv1.AwaitingAdmissionReason, "Admitted; publishing its created event")
	case !meta.IsStatusConditionTrue(f.Status.Conditions, cellosv1.PublishedCondition):
		// Projected, the created event is in the stream already: the
		// operator stopped between its ack and this status.
		return res, true, r.publishCreated(ctx, f, d.id, !d.projected)
	}
	return res, false, nil
}

// admit gives a valid declared Formation its formation id, its uid, once: the
// label and the finalizer; status follows in the next reconcile. An invalid one is refused,
// stalled with the reason, and nothing is published.
func (r *FormationReconciler) admit(ctx context.Context, f *cellosv1.Formation) error {
	if err := f.Spec.Validate(); err != nil {
		r.Recorder.Eventf(f, nil, corev1.EventTypeWarning, cellosv1.InvalidSpecReason, "Admit", "Refused: %v", err)
		return r.hold(ctx, f, true, cellosv1.InvalidSpecReason, fmt.Sprintf("The spec breaks an admission rule; create a corrected Formation: %v", err))
	}
	id := string(f.UID)
	before := f.DeepCopy()
	metav1.SetMetaDataLabel(&f.ObjectMeta, cellosv1.FormationIDLabel, id)
	controllerutil.AddFinalizer(f, cellosv1.CancelFinalizer)
	if err := r.patchMeta(ctx, before, f, "admitting the Formation"); err != nil {
		return err
	}
	// The change queues f again; that reconcile records the id in status.
	r.Recorder.Eventf(f, nil, corev1.EventTypeNormal, cellosv1.AdmittedReason, "Admit", "Admitted as formation %s", id)
	return nil
}

// publishCreated publishes f's created event, unless it is known to be in
// the stream, and records the outcome in the Published condition; a failure
// is returned, to be retried with backoff.
func (r *FormationReconciler) publishCreated(ctx context.Context, f *cellosv1.Formation, id string, publish bool) error {
	now := r.Clock.Now()
	if !publish {
		status.SetPublished(&f.Status, f.Generation, true, cellosv1.PublishedReason, "The created event is in the stream", now)
		return updateStatus(ctx, r.Client, store.FormationKind, f)
	}
	if _, acked := r.createdAcked.Load(f.UID); acked {
		return r.recordPublished(ctx, f, id)
	}
	if err := r.Publisher.Created(ctx, id, f); err != nil {
		r.Recorder.Eventf(f, nil, corev1.EventTypeWarning, cellosv1.PublishFailedReason, "Publish", "Publishing the created event failed; retrying: %v", err)
		status.SetPublished(&f.Status, f.Generation, false, cellosv1.PublishFailedReason, err.Error(), now)
		if werr := updateStatus(ctx, r.Client, store.FormationKind, f); werr != nil {
			return fmt.Errorf("%w; and recording it: %w", err, werr)
		}
		return err
	}
	r.createdAcked.Store(f.UID, struct{}{})
	return r.recordPublished(ctx, f, id)
}

// recordPublished records in f's status that its created event is in the
// stream.
func (r *FormationReconciler) recordPublished(ctx context.Context, f *cellosv1.Formation, id string) error {
	now := r.Clock.Now()
	status.SetPublished(&f.Status, f.Generation, true, cellosv1.PublishedReason, "The created event is in the stream", now)
	status.SetAwaitingStream(&f.Status, f.Generation, now)
	if err := updateStatus(ctx, r.Client, store.FormationKind, f); err != nil {
		return err
	}
	r.Recorder.Eventf(f, nil, corev1.EventTypeNormal, cellosv1.PublishedReason, "Publish", "Published the created event of formation %s", id)
	return nil
}

// release lets a deleted declared Formation go. A Formation that does not
// own its formation goes at once: only the owner's delete cancels. The
// owner waits until the projection has settled, then publishes the
// cancelled event (unless its formation already ended, or never reached
// the stream, or the stream holds the operator's cancel already), records
// the formation's tombstone, so that no later event brings it back however
// long the stream keeps them, and goes. The tombstone makes the cancel go
// out at most once: a retry after it publishes nothing, and one before it
// finds the cancel in the fold, or in JetStream's duplicate window.
func (r *FormationReconciler) release(ctx context.Context, d declared) (ctrl.Result, error) {
	f := d.f
	switch {
	case !controllerutil.ContainsFinalizer(f, cellosv1.CancelFinalizer):
		return ctrl.Result{}, nil
	case !owns(f):
		return ctrl.Result{}, r.releaseFinalizer(ctx, f)
	case !d.settled:
		return ctrl.Result{RequeueAfter: settleRetry}, nil
	}
	if !r.Tombstones.Has(d.id) {
		phase := f.Status.Phase
		if d.projected {
			phase = d.want.Phase
		}
		reached := d.projected || meta.IsStatusConditionTrue(f.Status.Conditions, cellosv1.PublishedCondition)
		if reached && !terminal(phase) && !d.want.Deleted {
			if err := r.Publisher.Cancelled(ctx, d.id); err != nil {
				r.Recorder.Eventf(f, nil, corev1.EventTypeWarning, cellosv1.PublishFailedReason, "Cancel", "Publishing the cancelled event failed; retrying: %v", err)
				return ctrl.Result{}, err
			}
			r.Recorder.Eventf(f, nil, corev1.EventTypeNormal, cellosv1.CancelledReason, "Cancel", "Published the cancelled event of formation %s", d.id)
		}
		if err := r.Tombstones.Record(ctx, d.id, f.Namespace+"/"+f.Name); err != nil {
			return ctrl.Result{}, err
		}
	}
	return ctrl.Result{}, r.releaseFinalizer(ctx, f)
}

// releaseFinalizer removes the cancel finalizer, which lets a deleted
// Formation go.
func (r *FormationReconciler) releaseFinalizer(ctx context.Context, f *cellosv1.Formation) error {
	if !controllerutil.ContainsFinalizer(f, cellosv1.CancelFinalizer) {
		return nil
	}
	before := f.DeepCopy()
	controllerutil.RemoveFinalizer(f, cellosv1.CancelFinalizer)
	r.createdAcked.Delete(f.UID)
	return r.patchMeta(ctx, before, f, "releasing the deleted Formation")
}

func terminal(phase cellosv1.FormationPhase) bool {
	return phase == cellosv1.FormationSucceeded || phase == cellosv1.FormationFailed || phase == cellosv1.FormationCancelled
}

// hold writes the kstatus summary of a declared Formation that holds no
// projection, when it changes.
func (r *FormationReconciler) hold(ctx context.Context, f *cellosv1.Formation, stalled bool, reason, message string) error {
	before := f.Status.DeepCopy()
	status.SetHeld(&f.Status, f.Generation, stalled, reason, message, r.Clock.Now())
	if equality.Semantic.DeepEqual(*before, f.Status) {
		return nil
	}
	return updateStatus(ctx, r.Client, store.FormationKind, f)
}

// patchMeta patches f's labels and finalizers from before, with optimistic
// locking so that a concurrent change is retried on fresh data.
func (r *FormationReconciler) patchMeta(ctx context.Context, before, f *cellosv1.Formation, what string) error {
	if err := r.Patch(ctx, f, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	ctrl.LoggerFrom(ctx).V(1).Info("Patched the Formation", "what", what)
	return nil
}
