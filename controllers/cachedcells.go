package controllers

import (
	"context"
	"fmt"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	toolscache "k8s.io/client-go/tools/cache"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
)

// CachedCells reads the cache's Cells through its indexes (Indexers)
// without copying them. Placing a cell reads the Cells of its formation on
// every event of the cell, to keep the one that holds it; a List from the
// cache copies each Cell it returns into the list even with
// UnsafeDisableDeepCopy (about 1.1 kB a Cell with the list's slices,
// BenchmarkPlaceCell), so at hundreds of cells a formation every event
// would copy hundreds of Cells to keep one (docs/performance.md, "Placing a
// cell"). Set NewInformer as the cache's: it keeps the Cells' informers, one,
// or one for each watched namespace.
type CachedCells struct {
	mu        sync.Mutex
	informers []toolscache.SharedIndexInformer
}

// NewInformer is client-go's informer constructor, the cache's default,
// that keeps each informer of Cells.
func (c *CachedCells) NewInformer(lw toolscache.ListerWatcher, obj runtime.Object, resync time.Duration, indexers toolscache.Indexers) toolscache.SharedIndexInformer {
	informer := toolscache.NewSharedIndexInformer(lw, obj, resync, indexers)
	if _, ok := obj.(*cellosv1.Cell); ok {
		c.mu.Lock()
		c.informers = append(c.informers, informer)
		c.mu.Unlock()
	}
	return informer
}

// ready fails when the cache was not made with NewInformer, or has no
// informer of Cells yet, rather than let placement find no Cell.
func (c *CachedCells) ready() error {
	if c == nil {
		return fmt.Errorf("no CachedCells: set Config.Cells, and the cache's NewInformer to its NewInformer")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.informers) == 0 {
		return fmt.Errorf("the cache has no informer of Cells from CachedCells.NewInformer: set it as the cache's NewInformer")
	}
	return nil
}

// each calls keep with every cached Cell that index, one of Indexers, keys
// under value in any namespace. Like a read from the cache, it waits until
// the informers have synced, as a Cell they have not listed yet would
// otherwise be placed anew. The Cells are the cache's own: keep must not
// change them.
func (c *CachedCells) each(ctx context.Context, index, value string, keep func(*cellosv1.Cell)) error {
	c.mu.Lock()
	informers := c.informers
	c.mu.Unlock()
	for _, informer := range informers {
		if !informer.HasSynced() && !toolscache.WaitForCacheSync(ctx.Done(), informer.HasSynced) {
			return fmt.Errorf("reading the cached Cells by %s: the cache has not synced: %w", index, context.Cause(ctx))
		}
		objs, err := informer.GetIndexer().ByIndex(fieldIndex(index), allNamespacesKey(value))
		if err != nil {
			return fmt.Errorf("reading the cached Cells by %s: %w", index, err)
		}
		for _, obj := range objs {
			if cell, ok := obj.(*cellosv1.Cell); ok {
				keep(cell)
			}
		}
	}
	return nil
}
