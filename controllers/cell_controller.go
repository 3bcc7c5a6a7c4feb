package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/internal/fold"
	"cellos.dev/cellos-operator/internal/status"
	"cellos.dev/cellos-operator/internal/store"
)

// CellReconciler makes each Cell's status equal to the projection of its
// cell's events, creating the Cell when the stream first names it.
type CellReconciler struct {
	client.Client
	Config
}

// +kubebuilder:rbac:groups=cellos.dev,resources=cells,verbs=list;watch;create;patch
// +kubebuilder:rbac:groups=cellos.dev,resources=cells/status,verbs=update

// Reconcile writes one Cell.
func (r *CellReconciler) Reconcile(ctx context.Context, req Request) (res ctrl.Result, err error) {
	// Every branch ends here; only the one that mirrors the projection sets
	// what its write settles.
	var done settlement
	defer func() { res, err = r.settle(ctx, done, res, err) }()
	cell, holder, err := r.cellAt(ctx, req)
	if err != nil {
		return ctrl.Result{}, err
	}
	if holder != req.ID {
		r.refuseCollision(ctx, cell, req.ID, holder)
		return ctrl.Result{}, nil
	}
	want, stream, ok := r.Store.Cell(req.ID)
	if !ok {
		// Not a cell of the stream (yet): there is nothing to mirror.
		return ctrl.Result{}, nil
	}
	ref := store.Ref{Kind: store.CellKind, ID: req.ID}
	done = settlement{stream: stream, ref: ref, seq: want.LastAppliedSequence, obj: cell}
	if r.cellExpired(want) {
		// Gone for good: neither created again nor written; the expirer
		// deletes the Cell if it is still there.
		return ctrl.Result{}, nil
	}

	if cell, err = r.fetchOrCreate(ctx, cell, want.FormationID); err != nil {
		return ctrl.Result{}, err
	}
	done.obj = cell
	if store.Ahead(stream, ref, want.LastAppliedSequence, cell.Status.LastAppliedSequence, cell.Status.StreamStamp) {
		return ctrl.Result{}, nil
	}
	desired := status.CellStatus(&want, store.Stamp(stream, ref, want.LastAppliedSequence), cell.Generation, cell.Status.Conditions, r.Clock.Now())
	if equality.Semantic.DeepEqual(cell.Status, desired) {
		return ctrl.Result{}, nil
	}
	cell.Status = desired
	return ctrl.Result{}, updateStatus(ctx, r.Client, store.CellKind, cell)
}

// cellAt reads the Cell at req.Key, empty (but named) when it does not exist
// yet, and the cell it holds: the one its status names, or before its first
// write, the first of the ids that meet its name and are placed at it
// (firstPlaced), which is almost always req.ID.
func (r *CellReconciler) cellAt(ctx context.Context, req Request) (cell *cellosv1.Cell, holder string, err error) {
	cell = &cellosv1.Cell{}
	if err := r.Get(ctx, req.Key, cell); client.IgnoreNotFound(err) != nil {
		return nil, "", fmt.Errorf("reading Cell: %w", err)
	} else if err != nil {
		cell = &cellosv1.Cell{ObjectMeta: metav1.ObjectMeta{Namespace: req.Key.Namespace, Name: req.Key.Name}}
	}
	if id, ok := cellIDOf(cell); ok {
		return cell, id, nil
	}
	holder, err = r.firstPlaced(ctx, req)
	return cell, holder, err
}

// firstPlaced is the cell that the Cell at req.Key, not yet written, goes
// to: of the ids that meet its name, in the order the stream named them
// (store.CellsNamed), the first that the stream knows and that is placed
// there. The request was placed there, so no other is placed unless two ids
// collide.
func (r *CellReconciler) firstPlaced(ctx context.Context, req Request) (string, error) {
	for _, id := range r.Store.CellsNamed(req.Key.Name) {
		if id == req.ID {
			break
		}
		want, _, ok := r.Store.Cell(id)
		if !ok {
			continue
		}
		placed, err := r.placer(r.Client).cellKey(ctx, id, want.FormationID)
		if err != nil {
			return "", err
		}
		if placed == req.Key {
			return id, nil
		}
	}
	return req.ID, nil
}

// refuseCollision refuses the cell id, placed on the Cell of the cell
// holder: its id meets holder's object name, which takes a collision of 128
// bits of SHA-256 (store.ObjectName). One Cell cannot hold two cells, and a
// cell without one would hold the cursor back for good, so the id the Cell
// holds (cellAt) keeps the name, and id is refused with a Warning Event on
// the Cell, counted, and its events count as reflected. An id that no longer
// lags was refused already, or has nothing to refuse.
func (r *CellReconciler) refuseCollision(ctx context.Context, cell *cellosv1.Cell, id, holder string) {
	ref := store.Ref{Kind: store.CellKind, ID: id}
	want, stream, ok := r.Store.Cell(id)
	if !ok || !r.Store.Lags(ref) {
		return
	}
	ctrl.LoggerFrom(ctx).Error(nil, "Refused a cell whose id meets another cell's object name", "cellID", id, "sequence", want.LastAppliedSequence)
	nameCollisionsTotal.WithLabelValues(string(store.CellKind)).Inc()
	r.Recorder.Eventf(cell, nil, corev1.EventTypeWarning, cellosv1.NameCollisionReason, "Project",
		"Refused the cell %.128q up to stream sequence %d: its id meets this Cell's name, which cell %.128q holds", id, want.LastAppliedSequence, holder)
	r.reflected(stream, ref, want.LastAppliedSequence)
}

// fetchOrCreate returns cell correlated with its formation, created when the
// stream first names it.
func (r *CellReconciler) fetchOrCreate(ctx context.Context, cell *cellosv1.Cell, formationID string) (*cellosv1.Cell, error) {
	before := cell.DeepCopy()
	if err := r.correlate(ctx, cell, formationID); err != nil {
		return nil, err
	}
	if cell.CreationTimestamp.IsZero() {
		if err := r.Create(ctx, cell); err != nil {
			return nil, fmt.Errorf("creating Cell: %w", err)
		}
		ctrl.LoggerFrom(ctx).V(1).Info("Created Cell first seen in the stream")
		return cell, nil
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
	key, err := r.placer(r.Client).formationKey(ctx, formationID)
	if err != nil || key.Namespace != cell.Namespace {
		return err
	}
	var f cellosv1.Formation
	if err := r.Get(ctx, key, &f); err != nil {
		// The Formation is not created yet: its creation requeues the Cell.
		return client.IgnoreNotFound(err)
	}
	if err := controllerutil.SetOwnerReference(&f, cell, r.Scheme()); err != nil {
		return fmt.Errorf("owning Cell by its Formation: %w", err)
	}
	return nil
}

// lagging maps a cell id whose projection changed to its Cell. A cell that
// lives nowhere has no status to write, and one whose status already
// reflects the projection, as during the replay after a restart, needs no
// reconcile: their events count as reflected at once.
func (r *CellReconciler) lagging(ctx context.Context, id string) []Request {
	want, stream, ok := r.Store.Cell(id)
	if !ok {
		return nil
	}
	ref := store.Ref{Kind: store.CellKind, ID: id}
	key, err := r.placer(r.Client).cellKey(ctx, id, want.FormationID)
	if err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Placing a cell", "cellID", id)
		return nil
	}
	// A cell whose formation lives nowhere lives nowhere too.
	if key.Name == "" || r.reflects(ctx, key, stream, ref, &want) {
		r.reflected(stream, ref, want.LastAppliedSequence)
		return nil
	}
	return requestFor(key, id)
}

// reflects tells whether the cached Cell at key needs no write for ref at
// sequence projected: its status is ahead, under a valid stamp (a later
// event will hand the id over again), or at projected and equal to the
// status built from the projection. The stamp alone is not enough: it
// covers the sequence, not the content, so a status edited by hand, one
// written from a stream whose early events were since purged, or one
// written before a change of the fold's semantics would otherwise be kept.
// Building the status is pure and cheap; the reconcile it saves is not.
// Everything else a Cell holds is written along with its first status, or
// healed by the Cell's own watch.
func (r *CellReconciler) reflects(ctx context.Context, key client.ObjectKey, stream store.Stream, ref store.Ref, want *fold.Cell) bool {
	var cell cellosv1.Cell
	if err := r.Get(ctx, key, &cell, client.UnsafeDisableDeepCopy); err != nil { // read only
		return false
	}
	if id, ok := cellIDOf(&cell); !ok || id != ref.ID {
		return false
	}
	projected := want.LastAppliedSequence
	if store.Ahead(stream, ref, projected, cell.Status.LastAppliedSequence, cell.Status.StreamStamp) {
		return true
	}
	desired := status.CellStatus(want, store.Stamp(stream, ref, projected), cell.Generation, cell.Status.Conditions, r.Clock.Now())
	return equality.Semantic.DeepEqual(cell.Status, desired)
}

// cellOf maps a Cell to itself, for the cell its status names. A Cell not
// yet written is left to the reconcile writing it, whose write maps it
// here.
func (r *CellReconciler) cellOf(_ context.Context, c client.Object) []Request {
	if id, ok := cellIDOf(c.(*cellosv1.Cell)); ok {
		return requestFor(client.ObjectKeyFromObject(c), id)
	}
	return nil
}

// cellsOfFormation maps a new Formation to the Cells that carry its id, so
// that Cells seen before their Formation existed get their owner.
func (r *CellReconciler) cellsOfFormation(ctx context.Context, f client.Object) []Request {
	id := f.GetLabels()[cellosv1.FormationIDLabel]
	if id == "" {
		return nil
	}
	cells, err := cellsLabelled(ctx, r, f.GetNamespace(), id)
	if err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Listing the Cells of a new Formation")
		return nil
	}
	reqs := make([]Request, 0, len(cells))
	for i := range cells {
		reqs = append(reqs, r.cellOf(ctx, &cells[i])...)
	}
	return reqs
}

// SetupWithManager watches Cells, to heal them; new Formations, to own their
// Cells; and the store's lagging cells.
func (r *CellReconciler) SetupWithManager(mgr ctrl.Manager) error {
	const name = "cell"
	return builder.TypedControllerManagedBy[Request](mgr).
		Named(name).
		Watches(&cellosv1.Cell{}, handler.TypedEnqueueRequestsFromMapFunc(r.cellOf)).
		Watches(&cellosv1.Formation{}, handler.TypedEnqueueRequestsFromMapFunc(r.cellsOfFormation),
			builder.WithPredicates(predicate.Funcs{
				UpdateFunc:  func(event.UpdateEvent) bool { return false },
				DeleteFunc:  func(event.DeleteEvent) bool { return false },
				GenericFunc: func(event.GenericEvent) bool { return false },
			})).
		WatchesRawSource(store.Source(r.Store, store.CellKind, r.Tombstones.WhenLoaded(), afterWindow(r.FlushWindow, r.lagging))).
		WithOptions(controller.TypedOptions[Request]{MaxConcurrentReconciles: r.Workers}).
		WithLogConstructor(logFor(mgr, name)).
		Complete(r)
}
