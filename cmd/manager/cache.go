package main

import (
	"maps"
	"slices"
	"sync"

	"k8s.io/apimachinery/pkg/api/equality"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
)

// slimObjects is the cache's transform. The cache holds every live
// Formation and Cell for the life of the process, so what each costs there
// is what the operator's memory grows by per live object
// (docs/performance.md, "RSS per live object"). It drops what the operator
// never reads, and makes the strings that repeat share one copy: decoding
// gives each field of each object its own, though most are one of a few
// words (condition types, reasons and messages, states, the namespace, the
// label key), within a Cell the formation id and the cell id each appear
// more than once, and the Cells of a formation carry the same labels and
// owner references.
func slimObjects(obj any) (any, error) {
	o, ok := obj.(client.Object)
	if !ok {
		return obj, nil
	}
	o.SetManagedFields(nil)
	if annotations := o.GetAnnotations(); annotations[corev1.LastAppliedConfigAnnotation] != "" {
		delete(annotations, corev1.LastAppliedConfigAnnotation)
		o.SetAnnotations(annotations)
	}
	switch o := o.(type) {
	case *cellosv1.Cell:
		shareMeta(&o.TypeMeta, &o.ObjectMeta, o.Status.FormationID)
		kin.share(o.Status.FormationID, &o.ObjectMeta)
		o.Status.CellID = sameAs(o.Status.CellID, o.Name)
		if o.Status.FinishedAt.Equal(o.Status.DestroyedAt) {
			o.Status.FinishedAt = o.Status.DestroyedAt
		}
		o.Status.State = cellosv1.CellState(words.intern(string(o.Status.State)))
		o.Status.Outcome = words.intern(o.Status.Outcome)
		o.Status.Conditions = shareConditions(o.Status.Conditions)
	case *cellosv1.Formation:
		o.Status.FormationID = sameAs(o.Status.FormationID, o.Name)
		shareMeta(&o.TypeMeta, &o.ObjectMeta, o.Status.FormationID)
		o.Status.Phase = cellosv1.FormationPhase(words.intern(string(o.Status.Phase)))
		o.Status.Conditions = shareConditions(o.Status.Conditions)
	}
	return obj, nil
}

// shareMeta shares the words of an object's type and metadata, and the
// formation id wherever its labels and owner references repeat it.
func shareMeta(tm *metav1.TypeMeta, meta *metav1.ObjectMeta, formationID string) {
	tm.APIVersion = words.intern(tm.APIVersion)
	tm.Kind = words.intern(tm.Kind)
	meta.Namespace = words.intern(meta.Namespace)
	if len(meta.Labels) > 0 {
		// A new map rather than new keys in the old one: the spec does not
		// say that assigning an existing key replaces the key's string.
		labels := make(map[string]string, len(meta.Labels))
		for k, v := range meta.Labels {
			labels[words.intern(k)] = sameAs(v, formationID)
		}
		meta.Labels = labels
	}
	for i := range meta.OwnerReferences {
		ref := &meta.OwnerReferences[i]
		ref.APIVersion = words.intern(ref.APIVersion)
		ref.Kind = words.intern(ref.Kind)
		ref.Name = sameAs(ref.Name, formationID)
	}
}

// shareConditions shares the words of conds, in a slice of their own
// length: decoding grows a slice by doubling, so three conditions come with
// room for four, a quarter more than they need.
func shareConditions(conds []metav1.Condition) []metav1.Condition {
	if cap(conds) > len(conds) {
		conds = slices.Clone(conds)
	}
	for i := range conds {
		c := &conds[i]
		c.Type = words.intern(c.Type)
		c.Status = metav1.ConditionStatus(words.intern(string(c.Status)))
		c.Reason = words.intern(c.Reason)
		c.Message = words.intern(c.Message)
	}
	return conds
}

// sameAs is s, as other's copy when the two are equal.
func sameAs(s, other string) string {
	if s == other {
		return other
	}
	return s
}

// words holds one copy of each word the cached objects repeat.
var words = vocabulary{words: map[string]string{}}

// maxWords bounds the vocabulary. The operator writes a few dozen words; the
// rest of the bound is for what users write by hand, past which a word is
// kept as decoded rather than shared.
const maxWords = 4096

type vocabulary struct {
	mu    sync.Mutex
	words map[string]string
}

// intern is the shared copy of word, which it becomes if there is none yet
// and the vocabulary has room.
func (v *vocabulary) intern(word string) string {
	if word == "" {
		return word
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if shared, ok := v.words[word]; ok {
		return shared
	}
	if len(v.words) < maxWords {
		v.words[word] = word
	}
	return word
}

// kin holds, for each formation seen lately, the labels and owner
// references its Cells carry, for them to share: they are the same in every
// Cell of a formation (the formation's id, its Formation), and a map and a
// slice of its own cost each cached Cell about 490 bytes.
var kin kinship

// kindred is what the Cells of one formation share: the latest labels and
// owner references decoded for it.
type kindred struct {
	labels map[string]string
	owners []metav1.OwnerReference
}

// maxKin bounds each generation of kin. Formations come and go, so kin
// keeps two generations and drops the older when the newer is full: a
// formation looked up in the older one moves to the newer, so the formations
// that still have Cells to decode stay, and the table holds at most twice
// maxKin. Past that many formations alive at once, some Cells keep their own
// copies.
const maxKin = 4096

type kinship struct {
	mu                sync.Mutex
	current, previous map[string]*kindred
}

// share makes meta's labels and owner references those of its formation's
// other Cells when they are equal, and the ones the next Cells share when
// not. The cache's objects are read only, so sharing is safe.
func (k *kinship) share(formationID string, meta *metav1.ObjectMeta) {
	if formationID == "" {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	kin, ok := k.current[formationID]
	if !ok {
		if kin, ok = k.previous[formationID]; !ok {
			kin = &kindred{}
		}
		if k.current == nil || len(k.current) >= maxKin {
			k.previous, k.current = k.current, map[string]*kindred{}
		}
		k.current[formationID] = kin
	}
	if maps.Equal(kin.labels, meta.Labels) {
		meta.Labels = kin.labels
	} else {
		kin.labels = meta.Labels
	}
	if equality.Semantic.DeepEqual(kin.owners, meta.OwnerReferences) {
		meta.OwnerReferences = kin.owners
	} else {
		kin.owners = meta.OwnerReferences
	}
}
