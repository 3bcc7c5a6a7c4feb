package main

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"cellos.dev/cellos-operator/internal/store"
)

// watcher follows every Formation and Cell of the run through a watch, as a
// user's kubectl get -w would: it tells when every object's status equals
// the final projection, and for each event when a status first reflected it.
type watcher struct {
	o   *projection
	pub *publisher

	mu       sync.Mutex
	matched  map[store.Ref]bool
	next     map[store.Ref]int // index of the first sequence of seqsOf not yet seen
	latency  []time.Duration
	all      chan struct{} // closed when every object matches
	allAt    time.Time
	progress int
}

// watch starts a watch of the namespace's objects of kinds (Formations and
// Cells, or their minimal counterparts); it stops when ctx ends.
func watch(ctx context.Context, cl *cluster, o *projection, pub *publisher, kinds []client.Object) (*watcher, error) {
	w := &watcher{o: o, pub: pub, matched: map[store.Ref]bool{}, next: map[store.Ref]int{}, all: make(chan struct{})}
	c, err := cache.New(cl.cfg, cache.Options{
		Scheme:            cl.cp.Scheme,
		DefaultNamespaces: map[string]cache.Config{cl.ns: {}},
		DefaultTransform:  cache.TransformStripManagedFields(),
	})
	if err != nil {
		return nil, err
	}
	for _, obj := range kinds {
		inf, err := c.GetInformer(ctx, obj)
		if err != nil {
			return nil, err
		}
		if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
			AddFunc:    w.seen,
			UpdateFunc: func(_, obj any) { w.seen(obj) },
		}); err != nil {
			return nil, err
		}
	}
	go func() { _ = c.Start(ctx) }()
	if !c.WaitForCacheSync(ctx) {
		return nil, fmt.Errorf("the watch of Formations and Cells did not sync")
	}
	return w, nil
}

func (w *watcher) seen(obj any) {
	now := time.Now()
	ref, seq, match, ok := w.o.observed(obj)
	if !ok {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	seqs, i := w.o.seqsOf[ref], w.next[ref]
	for ; i < len(seqs) && int64(seqs[i]) <= seq; i++ {
		if at := w.pub.sentAt(seqs[i]); !at.IsZero() {
			w.latency = append(w.latency, now.Sub(at))
		}
	}
	w.next[ref] = i
	if match != w.matched[ref] {
		if match {
			w.progress++
		} else {
			w.progress--
		}
		w.matched[ref] = match
	}
	if w.progress == w.o.objects() && w.allAt.IsZero() {
		w.allAt = now
		close(w.all)
	}
}

// matchedCount is how many objects match their final projection now.
func (w *watcher) matchedCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.progress
}

// latencies returns the event-to-status latencies seen so far, sorted, and
// how many of the workload's events changed an object.
func (w *watcher) latencies() (sorted []time.Duration, events int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	sorted = slices.Clone(w.latency)
	slices.Sort(sorted)
	for _, seqs := range w.o.seqsOf {
		events += len(seqs)
	}
	return sorted, events
}

// quantile of sorted durations, nearest rank.
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}
