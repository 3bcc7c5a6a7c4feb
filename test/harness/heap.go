package harness

import "runtime"

// LiveHeap is the heap in use after a full collection: what the objects
// still reachable hold, for benchmarks that report bytes an object. Two
// collections, so that what the first one's finalizers freed is gone too.
func LiveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
