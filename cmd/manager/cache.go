package main

import (
	"sync"

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
// label key), and within a Cell the formation id and the cell id each
// appear more than once.
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
		o.Status.CellID = sameAs(o.Status.CellID, o.Name)
		o.Status.State = cellosv1.CellState(words.intern(string(o.Status.State)))
		o.Status.Outcome = words.intern(o.Status.Outcome)
		shareConditions(o.Status.Conditions)
	case *cellosv1.Formation:
		o.Status.FormationID = sameAs(o.Status.FormationID, o.Name)
		shareMeta(&o.TypeMeta, &o.ObjectMeta, o.Status.FormationID)
		o.Status.Phase = cellosv1.FormationPhase(words.intern(string(o.Status.Phase)))
		shareConditions(o.Status.Conditions)
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

func shareConditions(conds []metav1.Condition) {
	for i := range conds {
		c := &conds[i]
		c.Type = words.intern(c.Type)
		c.Status = metav1.ConditionStatus(words.intern(string(c.Status)))
		c.Reason = words.intern(c.Reason)
		c.Message = words.intern(c.Message)
	}
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
