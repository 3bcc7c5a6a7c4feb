package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"sigs.k8s.io/controller-runtime/pkg/client"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/internal/fold"
	"cellos.dev/cellos-operator/internal/store"
)

// Placement decides where each projected object lives, and nothing else
// does: the store knows ids only, and both reconcilers and their event
// handlers ask here. It reads the cache through the indexes below, so every
// decision is made from the same view of the cluster.

// The cache indexes placement reads.
const (
	// formationIDIndex indexes Formations and Cells by the label
	// cellos.dev/formation-id.
	formationIDIndex = "formationId"
	// cellIDIndex indexes Cells by status.cellId, once a status names it.
	cellIDIndex = "status.cellId"
)

func addIndexes(ctx context.Context, indexer client.FieldIndexer) error {
	byLabel := func(obj client.Object) []string {
		if id := obj.GetLabels()[cellosv1.FormationIDLabel]; id != "" {
			return []string{id}
		}
		return nil
	}
	if err := indexer.IndexField(ctx, &cellosv1.Formation{}, formationIDIndex, byLabel); err != nil {
		return fmt.Errorf("indexing Formations by formation id: %w", err)
	}
	if err := indexer.IndexField(ctx, &cellosv1.Cell{}, formationIDIndex, byLabel); err != nil {
		return fmt.Errorf("indexing Cells by formation id: %w", err)
	}
	err := indexer.IndexField(ctx, &cellosv1.Cell{}, cellIDIndex, func(obj client.Object) []string {
		if id, ok := cellIDOf(obj.(*cellosv1.Cell)); ok {
			return []string{id}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("indexing Cells by cell id: %w", err)
	}
	return nil
}

// cellIDOf is the cell id a Cell's status names. A status that was never
// written names none; "" is a cell id like any other once written. The
// operator names every Cell after its id, so a status naming another id was
// edited by hand, names none, and is healed.
func cellIDOf(c *cellosv1.Cell) (string, bool) {
	id := c.Status.CellID
	return id, c.Status.LastAppliedSequence > 0 && c.Name == store.ObjectName(id)
}

// placer reads placement from reader, the cache.
func (c Config) placer(reader client.Reader) placer {
	return placer{Reader: reader, store: c.Store, namespace: c.Namespace}
}

// placer answers placement questions from the cache and the store. It reads
// the cache without copying: placement runs for every event, and reads the
// objects it finds without changing them.
type placer struct {
	client.Reader
	store     *store.Store
	namespace string
}

// formationKey is where the formation with this id lives; an empty key when
// it lives nowhere.
func (p placer) formationKey(ctx context.Context, id string) (client.ObjectKey, error) {
	labelled, err := p.formationsOf(ctx, id)
	if err != nil {
		return client.ObjectKey{}, err
	}
	want, _, projected := p.store.Formation(id)
	return placeFormation(id, labelled, p.rules(want, projected)), nil
}

// rules are the placement rules for a formation the stream has named
// (projected) or not.
func (p placer) rules(want fold.Formation, projected bool) formationRules {
	return formationRules{namespace: p.namespace, projected: projected, declaredIn: want.Namespace, deleted: want.Deleted}
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
// nowhere, as its formation does.
func (p placer) cellKey(ctx context.Context, id, formationID string) (client.ObjectKey, error) {
	var list cellosv1.CellList
	if err := p.List(ctx, &list, client.MatchingFields{cellIDIndex: id}, client.UnsafeDisableDeepCopy); err != nil {
		return client.ObjectKey{}, fmt.Errorf("listing the Cells of cell %q: %w", id, err)
	}
	namespace := p.namespace
	if formationID != "" {
		key, err := p.formationKey(ctx, formationID)
		if err != nil {
			return client.ObjectKey{}, err
		}
		namespace = key.Namespace
	}
	return placeCell(id, list.Items, namespace), nil
}

// formationRules is what placement knows of a formation besides the
// Formations labelled with it.
type formationRules struct {
	// namespace is the operator's --namespace.
	namespace string
	// projected tells whether the stream has named the formation.
	projected bool
	// declaredIn is the namespace its created event names, if any.
	declaredIn string
	// deleted tells whether the operator cancelled it because its declared
	// Formation was deleted.
	deleted bool
}

// mayFollow tells whether the Formation f may follow the formation: no
// namespace may take over another's. Once the stream has named the
// formation, only a Formation in the namespace its created event names, or in
// the operator's namespace, follows it.
func (r formationRules) mayFollow(f *cellosv1.Formation) bool {
	return !r.projected || f.Namespace == r.namespace || (r.declaredIn != "" && f.Namespace == r.declaredIn)
}

// placeFormation places the formation with this id on one of the Formations
// labelled with it that may follow it: a declared one (a user wrote it)
// before an observed one (the operator created it), then the oldest, then by
// key so that every replica chooses alike. With none, the formation gets a
// Formation of its own in the operator's namespace, unless it was declared in
// a namespace or deleted: then it lives nowhere (an empty key), so that the
// stream never brings back a Formation its user deleted.
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
	case rules.projected && (rules.declaredIn != "" || rules.deleted):
		return client.ObjectKey{}
	}
	return client.ObjectKey{Namespace: rules.namespace, Name: store.ObjectName(id)}
}

func placedBefore(a, b *cellosv1.Formation) bool {
	if declared := a.Spec != nil; declared != (b.Spec != nil) {
		return declared
	}
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return a.CreationTimestamp.Before(&b.CreationTimestamp)
	}
	return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name) < 0
}

// placeCell places a cell on the Cell whose status already names it, so a
// Cell never moves; else beside its formation, in namespace; nowhere (an
// empty key) when namespace is empty, as its formation lives nowhere.
func placeCell(id string, named []cellosv1.Cell, namespace string) client.ObjectKey {
	existing := slices.IndexFunc(named, func(c cellosv1.Cell) bool {
		got, ok := cellIDOf(&c)
		return ok && got == id && c.DeletionTimestamp == nil
	})
	switch {
	case existing >= 0:
		return client.ObjectKeyFromObject(&named[existing])
	case namespace == "":
		return client.ObjectKey{}
	}
	return client.ObjectKey{Namespace: namespace, Name: store.ObjectName(id)}
}
