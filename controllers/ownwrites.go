package controllers

import (
	"context"
	"reflect"
	"slices"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// ownWritesClient is the manager's client made to read this replica's own
// writes. Its reads come from the informer cache, which trails the API
// server by a watch event: a reconcile that reads an object soon after this
// replica wrote it would get the object as it was before, and the write
// that follows, on that resourceVersion, would be refused as a conflict and
// retried after a back-off (2.7% to 3.5% of writes at a steady 500 events/s,
// docs/performance.md). Where the cache shows a version this replica has
// written over, the read returns what the API server answered to that
// write instead. Nothing is guessed: the object is the API server's own,
// and a write by anyone else since shows in the cache as a version this
// replica did not write over, which is read as it is.
type ownWritesClient struct {
	client.Client
	writes *ownWrites
}

// ownWrites is, per object, what this replica's last write returned, until
// the cache shows it. The cache's informers drop each entry when their
// watch delivers that write, or anyone else's, or the object's deletion
// (forget), so it holds only the writes in flight, not the live objects.
type ownWrites struct {
	mu      sync.Mutex
	written map[ownKey]ownWrite
	// followed are the kinds whose informer forgets their entries (follow),
	// the only kinds remembered: an entry of another kind would never be
	// forgotten, and reading it from the cache would start an informer.
	followed map[reflect.Type]bool
}

type ownKey struct {
	kind reflect.Type
	key  types.NamespacedName
}

type ownWrite struct {
	// obj is the object as the API server returned it from the write.
	obj client.Object
	// over are the resourceVersions this replica wrote over to reach obj,
	// oldest first, "" for an object it created: what a trailing cache may
	// still show in its place.
	over []string
}

// maxOver bounds the versions an entry remembers: a cache that trails by
// more writes of one object than this is read as it is.
const maxOver = 8

func newOwnWrites() *ownWrites {
	return &ownWrites{written: map[ownKey]ownWrite{}, followed: map[reflect.Type]bool{}}
}

func keyOf(obj client.Object) ownKey {
	return ownKey{reflect.TypeOf(obj), client.ObjectKeyFromObject(obj)}
}

// Get reads obj from the cache, or what this replica last wrote to it where
// the cache shows a version it has written over, or no object yet where it
// created one. The last write is looked up before the cache is read: the
// informer drops it only once the cache shows it, so the cache read after
// is at least as new, and no drop between the two reads goes unseen.
func (c ownWritesClient) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	k := ownKey{reflect.TypeOf(obj), key}
	last, remembered := c.writes.last(k)
	err := c.Client.Get(ctx, key, obj, opts...)
	if !remembered || (err != nil && !apierrors.IsNotFound(err)) {
		return err
	}
	shown := ""
	if err == nil {
		shown = obj.GetResourceVersion()
	}
	if !slices.Contains(last.over, shown) {
		return err
	}
	reflect.ValueOf(obj).Elem().Set(reflect.ValueOf(last.obj.DeepCopyObject()).Elem())
	return nil
}

// last is what this replica last wrote at k, if the cache may not show it
// yet. An entry is never changed in place, only replaced.
func (w *ownWrites) last(k ownKey) (ownWrite, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	e, ok := w.written[k]
	return e, ok
}

// wrote remembers obj as the API server returned it from a write made on
// version before ("" for a create).
func (w *ownWrites) wrote(before string, obj client.Object) {
	k := keyOf(obj)
	w.mu.Lock()
	defer w.mu.Unlock()
	over := []string{before}
	if e, ok := w.written[k]; ok && before != "" && e.obj.GetResourceVersion() == before {
		over = slices.Concat(e.over[max(0, len(e.over)+1-maxOver):], over)
	}
	w.written[k] = ownWrite{obj: obj.DeepCopyObject().(client.Object), over: over}
}

// remember records the write of obj, made on version before, and forgets
// it at once when the cache shows it already: the informer may have had its
// watch event before the client had the answer.
func (c ownWritesClient) remember(ctx context.Context, before string, obj client.Object) {
	c.writes.wrote(before, obj)
	shown := reflect.New(reflect.TypeOf(obj).Elem()).Interface().(client.Object)
	if c.Client.Get(ctx, client.ObjectKeyFromObject(obj), shown, client.UnsafeDisableDeepCopy) == nil { // read only
		c.writes.forget(shown, false)
	}
}

// forget drops the entry at obj's key unless the cache, which now shows
// obj, still trails this replica's last write to it.
func (w *ownWrites) forget(obj client.Object, deleted bool) {
	k := keyOf(obj)
	w.mu.Lock()
	defer w.mu.Unlock()
	if e, ok := w.written[k]; ok && (deleted || !slices.Contains(e.over, obj.GetResourceVersion())) {
		delete(w.written, k)
	}
}

// len is how many writes the cache has not shown yet.
func (w *ownWrites) len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.written)
}

// follow has the informer of obj's kind drop the entries its watch has
// caught up with.
func (w *ownWrites) follow(ctx context.Context, c cache.Cache, obj client.Object) error {
	informer, err := c.GetInformer(ctx, obj)
	if err != nil {
		return err
	}
	seen := func(o any, deleted bool) {
		if tomb, ok := o.(toolscache.DeletedFinalStateUnknown); ok {
			o = tomb.Obj
		}
		if o, ok := o.(client.Object); ok {
			w.forget(o, deleted)
		}
	}
	if _, err = informer.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { seen(o, false) },
		UpdateFunc: func(_, o any) { seen(o, false) },
		DeleteFunc: func(o any) { seen(o, true) },
	}); err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.followed[reflect.TypeOf(obj)] = true
	return nil
}

// follows tells whether an informer forgets the entries of obj's kind.
func (w *ownWrites) follows(obj client.Object) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.followed[reflect.TypeOf(obj)]
}

// write runs do, a write of obj, and remembers what it returned if an
// informer follows its kind.
func (c ownWritesClient) write(ctx context.Context, obj client.Object, do func() error) error {
	before := obj.GetResourceVersion() // "" for a create
	if err := do(); err != nil {
		return err
	}
	if c.writes.follows(obj) {
		c.remember(ctx, before, obj)
	}
	return nil
}

func (c ownWritesClient) Create(ctx context.Context, obj client.Object, opts ...client.CreateOption) error {
	return c.write(ctx, obj, func() error { return c.Client.Create(ctx, obj, opts...) })
}

func (c ownWritesClient) Update(ctx context.Context, obj client.Object, opts ...client.UpdateOption) error {
	return c.write(ctx, obj, func() error { return c.Client.Update(ctx, obj, opts...) })
}

func (c ownWritesClient) Patch(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
	return c.write(ctx, obj, func() error { return c.Client.Patch(ctx, obj, patch, opts...) })
}

func (c ownWritesClient) Delete(ctx context.Context, obj client.Object, opts ...client.DeleteOption) error {
	err := c.Client.Delete(ctx, obj, opts...)
	if err == nil || apierrors.IsNotFound(err) {
		c.writes.forget(obj, true)
	}
	return err
}

// Status remembers status updates too. A status patch, which the
// controllers do not make, is not remembered.
func (c ownWritesClient) Status() client.SubResourceWriter {
	return ownStatusWriter{c.Client.Status(), c}
}

type ownStatusWriter struct {
	client.SubResourceWriter
	c ownWritesClient
}

func (s ownStatusWriter) Update(ctx context.Context, obj client.Object, opts ...client.SubResourceUpdateOption) error {
	return s.c.write(ctx, obj, func() error { return s.SubResourceWriter.Update(ctx, obj, opts...) })
}
