package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"

	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/internal/store"
	"cellos.dev/cellos-operator/internal/tombstone"
)

// Placement decides where each projected object lives, and who may follow a
// formation, and nothing else does: both reconcilers and their event
// handlers ask here. It reads the cache through the indexes below, so every
// decision is made from the same view of the cluster, and the ownership
// facts from where each lasts (docs/architecture.md): the owner from the
// cluster, a deletion from the tombstones, a declaring namespace from the
// operator's own created event.

// The cache indexes placement reads.
const (
	// formationIDIndex indexes Formations and Cells by the label
	// cellos.dev/formation-id.
	formationIDIndex = "formationId"
	// unlabelledCellIDIndex indexes the Cells that carry no formation's
	// label by status.cellId, once a status names it. A labelled Cell is
	// found among its formation's (cellsOfID), so only the few Cells
	// written before their formation was known pay for a key of their own:
	// a set for one Cell, about 360 bytes of every cached Cell when all
	// were keyed (docs/performance.md, "RSS per live object").
	unlabelledCellIDIndex = "status.cellId"
)

// Indexers are the indexes the manager's cache keeps on objects of obj's
// kind. Each is a field index under controller-runtime's names (the index
// "field:<field>", the key "__all_namespaces/<value>"), so that a List with
// client.MatchingFields finds it, but keyed across namespaces only:
// controller-runtime's IndexField keys every value in the object's
// namespace as well, and a key is a set of its own, which for a cell id,
// unique to its Cell, cost every cached Cell 440 bytes
// (docs/performance.md, "RSS per live object"). Placement asks across
// namespaces; the two questions asked in one namespace ask across them and
// keep that namespace's objects (cellsLabelled). A List that also names a
// namespace finds nothing.
func Indexers(obj client.Object) toolscache.Indexers {
	byLabel := func(obj client.Object) string { return obj.GetLabels()[cellosv1.FormationIDLabel] }
	indexers := toolscache.Indexers{fieldIndex(formationIDIndex): acrossNamespaces(byLabel)}
	if _, ok := obj.(*cellosv1.Cell); ok {
		indexers[fieldIndex(unlabelledCellIDIndex)] = acrossNamespaces(func(obj client.Object) string {
			if byLabel(obj) != "" {
				return ""
			}
			id, _ := cellIDOf(obj.(*cellosv1.Cell))
			return id
		})
	}
	return indexers
}

// fieldIndex is controller-runtime's name for the index of a field.
func fieldIndex(field string) string { return "field:" + field }

// acrossNamespaces indexes an object by its value, when it has one, under
// controller-runtime's key for that value in every namespace.
func acrossNamespaces(value func(client.Object) string) toolscache.IndexFunc {
	return func(obj any) ([]string, error) {
		o, ok := obj.(client.Object)
		if !ok {
			return nil, fmt.Errorf("indexing %T, which is not an object", obj)
		}
		if v := value(o); v != "" {
			return []string{allNamespacesKey(v)}, nil
		}
		return nil, nil
	}
}

// allNamespacesKey is controller-runtime's index key for value in every
// namespace.
func allNamespacesKey(value string) string { return "__all_namespaces/" + value }

func addIndexes(ctx context.Context, c cache.Cache) error {
	for _, obj := range []client.Object{&cellosv1.Formation{}, &cellosv1.Cell{}} {
		informer, err := c.GetInformer(ctx, obj, cache.BlockUntilSynced(false))
		if err != nil {
			return fmt.Errorf("indexing %T: %w", obj, err)
		}
		if err := informer.AddIndexers(Indexers(obj)); err != nil {
			return fmt.Errorf("indexing %T: %w", obj, err)
		}
	}
	return nil
}

// cellsLabelled lists the Cells in namespace that carry the label of the
// formation id.
func cellsLabelled(ctx context.Context, r client.Reader, namespace, id string) ([]cellosv1.Cell, error) {
	var list cellosv1.CellList
	if err := r.List(ctx, &list, client.MatchingFields{formationIDIndex: id}); err != nil {
		return nil, fmt.Errorf("listing the Cells of formation %s: %w", id, err)
	}
	return slices.DeleteFunc(list.Items, func(c cellosv1.Cell) bool { return c.Namespace != namespace }), nil
}

// cellIDOf is the cell id a Cell's status names. A status that was never
// written names none; "" is a cell id like any other once written. The
// operator names every Cell after its id (store.IsNameOf: a Cell named before
// the hash suffix grew keeps its name, and is found here by its status), so a
// status naming another id was edited by hand, names none, and is healed.
func cellIDOf(c *cellosv1.Cell) (string, bool) {
	id := c.Status.CellID
	return id, c.Status.LastAppliedSequence > 0 && store.IsNameOf(c.Name, id)
}

// placer reads placement from reader, the cache.
func (c Config) placer(reader client.Reader) placer {
	return placer{Reader: reader, cells: c.Cells, store: c.Store, tombstones: c.Tombstones, namespace: c.Namespace}
}

// placer answers placement questions from the cache and the store. It reads
// the cache without copying: placement runs for every event, and reads the
// objects it finds without changing them.
type placer struct {
	client.Reader
	cells      *CachedCells
	store      *store.Store
	tombstones *tombstone.Set
	namespace  string
}

// placement is where a formation lives, and the rules that put it there.
type placement struct {
	// key is the Formation that holds the formation; empty when it lives
	// nowhere.
	key   client.ObjectKey
	rules formationRules
}

// place decides where the formation with this id lives.
func (p placer) place(ctx context.Context, id string) (placement, error) {
	labelled, err := p.formationsOf(ctx, id)
	if err != nil {
		return placement{}, err
	}
	want, _, projected := p.store.Formation(id)
	rules := formationRules{namespace: p.namespace, projected: projected, declaredIn: want.Namespace,
		deleted: want.Deleted || p.tombstones.Has(id)}
	for i := range labelled {
		if owns(&labelled[i]) {
			rules.ownerNamespace = labelled[i].Namespace
		}
	}
	return placement{key: placeFormation(id, labelled, rules), rules: rules}, nil
}

// formationKey is where the formation with this id lives; an empty key when
// it lives nowhere.
func (p placer) formationKey(ctx context.Context, id string) (client.ObjectKey, error) {
	pl, err := p.place(ctx, id)
	return pl.key, err
}

// owns tells whether the declared Formation f owns its formation: the
// operator admitted it, so its formation id is its own uid. That fact lasts
// as long as f does, whatever the stream forgets, and no other Formation
// can claim it: no two objects share a uid.
func owns(f *cellosv1.Formation) bool {
	return f.Spec != nil && f.Labels[cellosv1.FormationIDLabel] == string(f.UID)
}

// formationsOf lists the Formations that carry the label of id: the cache's
// own objects, for reading only.
func (p placer) formationsOf(ctx context.Context, id string) ([]cellosv1.Formation, error) {
	var list cellosv1.FormationList
	if err := p.List(ctx, &list, client.MatchingFields{formationIDIndex: id}, client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("listing the Formations of formation %s: %w", id, err)
	}
	return list.Items, nil
}

// cellKey is where the cell with this id, of the formation with formationID
// (empty when its events name none), lives; an empty key when it lives
// nowhere, as its formation does. The formation is placed only for a cell
// that has no Cell yet.
func (p placer) cellKey(ctx context.Context, id, formationID string) (client.ObjectKey, error) {
	cells, err := p.cellsOfID(ctx, id, formationID)
	if err != nil {
		return client.ObjectKey{}, err
	}
	return placeCell(id, cells, func() (string, error) {
		if formationID == "" {
			return p.namespace, nil
		}
		key, err := p.formationKey(ctx, formationID)
		return key.Namespace, err
	})
}

// cellsOfID lists the Cells that may hold the cell with this id, of the
// formation with formationID, in any namespace, for placeCell to choose
// from: those labelled with no formation whose status names the id, and
// those labelled with that formation and named after the id. The operator
// labels a Cell with its cell's formation as soon as the stream names it,
// and a cell's formation never changes once named (fold.Cell), so a Cell
// labelled with another formation holds another cell, or was relabelled by
// hand; such a Cell is still found where its cell would be placed anew,
// beside its formation (CellReconciler.cellAt), and healed there. The
// formation's other Cells are passed over in the cache, not copied.
func (p placer) cellsOfID(ctx context.Context, id, formationID string) ([]cellosv1.Cell, error) {
	var found []cellosv1.Cell
	keep := func(c *cellosv1.Cell) { found = append(found, *c) }
	if err := p.cells.each(ctx, unlabelledCellIDIndex, id, keep); err != nil || formationID == "" {
		return found, err
	}
	names := store.NamesOf(id)
	err := p.cells.each(ctx, formationIDIndex, formationID, func(c *cellosv1.Cell) {
		if slices.Contains(names, c.Name) {
			keep(c)
		}
	})
	return found, err
}

// formationRules is what placement knows of a formation besides the
// Formations labelled with it.
type formationRules struct {
	// namespace is the operator's --namespace.
	namespace string
	// projected tells whether the stream has named the formation.
	projected bool
	// declaredIn is the namespace the operator's own created event names,
	// if any.
	declaredIn string
	// deleted tells whether its declared Formation was deleted: a tombstone,
	// or the operator's cancelled event in the stream.
	deleted bool
	// ownerNamespace is the namespace of the Formation that owns it, if one
	// is in the cluster.
	ownerNamespace string
}

// mayFollow tells whether the Formation f may follow the formation: no
// namespace may take over another's. Only the owner's namespace follows an
// owned formation; none a deleted one; only the namespace its created event
// names one that was declared elsewhere; only the operator's namespace any
// other.
func (r formationRules) mayFollow(f *cellosv1.Formation) bool {
	switch {
	case r.ownerNamespace != "":
		return f.Namespace == r.ownerNamespace
	case r.deleted:
		return false
	case r.declaredIn != "":
		return f.Namespace == r.declaredIn
	}
	return f.Namespace == r.namespace
}

// claimed tells whether a Formation that may not follow the formation is
// refused: once the stream has named it, or it is owned or deleted. Before
// that such a Formation only waits.
func (r formationRules) claimed() bool {
	return r.projected || r.deleted || r.ownerNamespace != ""
}

// placeFormation places the formation with this id on one of the Formations
// labelled with it that may follow it: its owner, then a declared one (a
// user wrote it) before an observed one (the operator created it), then the
// oldest, then by key so that every replica chooses alike. With none, the
// formation gets a Formation of its own in the operator's namespace, unless
// it was deleted or declared in a namespace: then it lives nowhere (an
// empty key), so that the stream never brings back a Formation its user
// deleted.
func placeFormation(id string, labelled []cellosv1.Formation, rules formationRules) client.ObjectKey {
	var best *cellosv1.Formation
	for i := range labelled {
		f := &labelled[i]
		if rules.mayFollow(f) && (best == nil || placedBefore(f, best)) {
			best = f
		}
	}
	switch {
	case best != nil:
		return client.ObjectKeyFromObject(best)
	case rules.deleted || (rules.projected && rules.declaredIn != ""):
		return client.ObjectKey{}
	}
	return client.ObjectKey{Namespace: rules.namespace, Name: store.ObjectName(id)}
}

func placedBefore(a, b *cellosv1.Formation) bool {
	if owner := owns(a); owner != owns(b) {
		return owner
	}
	if declared := a.Spec != nil; declared != (b.Spec != nil) {
		return declared
	}
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return a.CreationTimestamp.Before(&b.CreationTimestamp)
	}
	return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name) < 0
}

// placeCell places a cell on the Cell whose status already names it, so a
// Cell never moves; else beside its formation, in the namespace
// formationNamespace returns; nowhere (an empty key) when that is empty, as
// its formation lives nowhere.
func placeCell(id string, named []cellosv1.Cell, formationNamespace func() (string, error)) (client.ObjectKey, error) {
	existing := slices.IndexFunc(named, func(c cellosv1.Cell) bool {
		got, ok := cellIDOf(&c)
		return ok && got == id && c.DeletionTimestamp == nil
	})
	if existing >= 0 {
		return client.ObjectKeyFromObject(&named[existing]), nil
	}
	namespace, err := formationNamespace()
	if err != nil || namespace == "" {
		return client.ObjectKey{}, err
	}
	return client.ObjectKey{Namespace: namespace, Name: store.ObjectName(id)}, nil
}
