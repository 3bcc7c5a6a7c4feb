package ingest

import (
	"context"
	"runtime"
	"testing"
	"time"

	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"cellos.dev/cellos-operator/internal/fold"
	"cellos.dev/cellos-operator/internal/jetstream"
	"cellos.dev/cellos-operator/internal/simulator"
	"cellos.dev/cellos-operator/internal/store"
	"cellos.dev/cellos-operator/test/localenv"
)

// BenchmarkStartUp measures what every start of the operator costs before
// the reconcilers compare status: reading a stream of 1,000,000 simulated
// events from a real JetStream server and folding all of it into the store.
func BenchmarkStartUp(b *testing.B) {
	const events = 1_000_000
	srv := localenv.StartJetStream(b)
	_, js := srv.Connect(b)
	ctx := context.Background()
	if _, err := jetstream.EnsureStream(ctx, js, jetstream.DefaultStreamName); err != nil {
		b.Fatal(err)
	}
	// An endless simulation, cut at exactly events.
	gen := simulator.NewGenerator(simulator.Config{Seed: 1, FailureRate: 0.2, DegradedRate: 0.2})
	firstEvents := func(yield func(simulator.Event) bool) {
		n := 0
		for ev := range gen.All() {
			if n == events || !yield(ev) {
				return
			}
			n++
		}
	}
	published, err := simulator.Publish(ctx, js, firstEvents, 0)
	if err != nil {
		b.Fatal(err)
	}

	var total time.Duration
	var heap uint64
	for b.Loop() {
		s := store.New(0, "", 0, fold.TTLs{})
		stop := drain(b, s)
		c := jetstream.NewConsumer(js, jetstream.DefaultStreamName)
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		returned := make(chan error, 1)
		start := time.Now()
		go func() {
			returned <- c.Run(runCtx, 1, func(ctx context.Context, msg jetstream.Message) error {
				s.Apply(ctx, msg.Sequence, msg.Time, msg.Subject, msg.Header, msg.Payload)
				if msg.Sequence == uint64(published) {
					close(done)
				}
				return nil
			})
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Minute):
			b.Fatal("timed out folding the stream")
		}
		total += time.Since(start)
		cancel()
		if err := <-returned; err != nil {
			b.Fatal(err)
		}
		var m runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m)
		heap = m.HeapAlloc
		runtime.KeepAlive(s)
		stop()
	}
	b.ReportMetric(float64(published), "events")
	b.ReportMetric(total.Seconds()/float64(b.N), "s/start")
	b.ReportMetric(float64(published)*float64(b.N)/total.Seconds(), "events/s")
	b.ReportMetric(float64(heap)/(1<<20), "MiB-heap")
}

// drain starts the store's sources with handlers that drop every id, as
// controllers that are up to date would, so that the fold never waits.
func drain(b *testing.B, s *store.Store) (stop func()) {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
	ready := make(chan struct{})
	close(ready)
	for _, kind := range []store.Kind{store.FormationKind, store.CellKind} {
		if err := store.Source(s, kind, ready, handler.TypedFuncs[string, reconcile.Request]{}).Start(ctx, q); err != nil {
			b.Fatal(err)
		}
	}
	return func() {
		cancel()
		q.ShutDown()
	}
}
