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
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

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
func (r *CellReconciler) Reconcile(ctx context.Context, req ctrl.Request) (res ctrl.Result, err error) {
	// Every branch ends here; only the one that mirrors the projection sets
	// what its write settles.
	var done settlement
	defer func() { res, err = r.settle(ctx, done, res, err) }()
	cell, id, found, err := r.cellAt(ctx, req.NamespacedName)
	if err != nil || !found {
		return ctrl.Result{}, err
	}
	if err := r.refuseCollisions(ctx, cell, id); err != nil {
		return ctrl.Result{}, err
	}
	want, stream, ok := r.Store.Cell(id)
	if !ok {
		// Not a cell of the stream (yet): there is nothing to mirror.
		return ctrl.Result{}, nil
	}
	ref := store.Ref{Kind: store.CellKind, ID: id}
	done = settlement{stream: stream, ref: ref, seq: want.LastAppliedSequence, obj: cell}

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

// cellAt finds which cell the Cell at key is for: the one its status names,
// or, before its first write, the id placed at key. The Cell itself is empty
// (but named) when it does not exist yet. found is false when no cell of the
// stream belongs at key.
func (r *CellReconciler) cellAt(ctx context.Context, key client.ObjectKey) (cell *cellosv1.Cell, id string, found bool, err error) {
	cell = &cellosv1.Cell{}
	if err := r.Get(ctx, key, cell); client.IgnoreNotFound(err) != nil {
		return nil, "", false, fmt.Errorf("reading Cell: %w", err)
	} else if err != nil {
		cell = &cellosv1.Cell{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}
	}
	if id, ok := cellIDOf(cell); ok {
		return cell, id, true, nil
	}
	p := r.placer(r.Client)
	for _, id := range r.Store.IDsNamed(store.CellKind, key.Name) {
		want, _, ok := r.Store.Cell(id)
		if !ok {
			continue
		}
		placed, err := p.cellKey(ctx, id, want.FormationID)
		if err != nil {
			return nil, "", false, err
		}
		if placed == key {
			return cell, id, true, nil
		}
	}
	return nil, "", false, nil
}

// refuseCollisions refuses every lagging cell placed on the Cell of the cell
// id: its id meets id's object name, which takes a collision of 128 bits of
// SHA-256 (store.ObjectName). One Cell cannot hold two cells, and a cell
// without one would hold the cursor back for good, so the id the Cell holds,
// or before it is written the one the stream named first (cellAt), keeps the
// name; each other is refused with a Warning Event on the Cell, counted, and
// its events count as reflected.
func (r *CellReconciler) refuseCollisions(ctx context.Context, cell *cellosv1.Cell, id string) error {
	key := client.ObjectKeyFromObject(cell)
	for _, other := range r.Store.IDsNamed(store.CellKind, key.Name) {
		ref := store.Ref{Kind: store.CellKind, ID: other}
		want, stream, ok := r.Store.Cell(other)
		if other == id || !ok || !r.Store.Lags(ref) {
			continue
		}
		placed, err := r.placer(r.Client).cellKey(ctx, other, want.FormationID)
		if err != nil {
			return err
		}
		if placed != key {
			continue
		}
		ctrl.LoggerFrom(ctx).Error(nil, "Refused a cell whose id meets another cell's object name", "cellID", other, "sequence", want.LastAppliedSequence)
		nameCollisionsTotal.WithLabelValues(string(store.CellKind)).Inc()
		r.Recorder.Eventf(cell, nil, corev1.EventTypeWarning, cellosv1.NameCollisionReason, "Project",
			"Refused the cell %.128q up to stream sequence %d: its id meets this Cell's name, which cell %.128q holds", other, want.LastAppliedSequence, id)
		r.reflected(stream, ref, want.LastAppliedSequence)
	}
	return nil
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
func (r *CellReconciler) lagging(ctx context.Context, id string) []reconcile.Request {
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
	return request(key)
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

// cellsOfFormation maps a new Formation to the Cells that carry its id, so
// that Cells seen before their Formation existed get their owner.
func (r *CellReconciler) cellsOfFormation(ctx context.Context, f client.Object) []reconcile.Request {
	id := f.GetLabels()[cellosv1.FormationIDLabel]
	if id == "" {
		return nil
	}
	var cells cellosv1.CellList
	if err := r.List(ctx, &cells, client.InNamespace(f.GetNamespace()), client.MatchingFields{formationIDIndex: id}); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Listing the Cells of a new Formation")
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(cells.Items))
	for i := range cells.Items {
		reqs = append(reqs, request(client.ObjectKeyFromObject(&cells.Items[i]))...)
	}
	return reqs
}

// SetupWithManager watches Cells, to heal them; new Formations, to own their
// Cells; and the store's lagging cells.
func (r *CellReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&cellosv1.Cell{}).
		Watches(&cellosv1.Formation{}, handler.EnqueueRequestsFromMapFunc(r.cellsOfFormation),
			builder.WithPredicates(predicate.Funcs{
				UpdateFunc:  func(event.UpdateEvent) bool { return false },
				DeleteFunc:  func(event.DeleteEvent) bool { return false },
				GenericFunc: func(event.GenericEvent) bool { return false },
			})).
		WatchesRawSource(r.Store.Source(store.CellKind, afterWindow(r.FlushWindow, r.lagging))).
		WithOptions(controller.Options{MaxConcurrentReconciles: r.Workers}).
		Complete(r)
}
