package controllers

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/config"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"cellos.dev/cellos-operator/internal/fold"
	"cellos.dev/cellos-operator/internal/jetstream"
	"cellos.dev/cellos-operator/internal/store"
	"cellos.dev/cellos-operator/internal/tombstone"
	"cellos.dev/cellos-operator/test/localenv"
)

var controlPlane *localenv.ControlPlane

func TestMain(m *testing.M) {
	ctrllog.SetLogger(logr.Discard())
	cp, stop, err := localenv.NewControlPlane("")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	controlPlane = cp
	code := m.Run()
	stop()
	os.Exit(code)
}

// reconcilers runs both reconcilers in a real manager against the test API
// server, with a Store the test folds events into directly: what the
// ingester would do, having replayed an empty stream. The tombstones live
// in a real JetStream server.
type reconcilers struct {
	store        *store.Store
	tombstones   *tombstone.Set
	nextSequence uint64
}

func startReconcilers(t *testing.T, namespace string, options ...func(*Config)) *reconcilers {
	t.Helper()
	r := &reconcilers{}
	stream := store.Stream{Name: jetstream.DefaultStreamName, Created: time.Now()}
	_, js := localenv.StartJetStream(t).Connect(t)
	if _, err := jetstream.EnsureStream(context.Background(), js, stream.Name); err != nil {
		t.Fatal(err)
	}
	r.tombstones = tombstone.New(js, tombstone.DefaultBucket, stream.Name)
	cells := &CachedCells{}
	mgr := newManager(t, cache.Options{NewInformer: cells.NewInformer})
	ctx, cancel := context.WithCancel(context.Background())
	cfg := Config{
		Namespace: namespace, FlushWindow: 10 * time.Millisecond,
		Clock: clock.RealClock{}, Workers: 2, Recorder: mgr.GetEventRecorder("cellos-operator"),
		Tombstones: r.tombstones, Cells: cells,
	}
	for _, option := range options {
		option(&cfg)
	}
	// The fold releases objects by the TTLs the controllers delete them by.
	r.store = store.New(0, "", 0, cfg.TTLs)
	r.store.Reset(stream)
	r.store.MarkReplayed(stream)
	cfg.Store = r.store
	if err := Setup(ctx, mgr, cfg); err != nil {
		t.Fatal(err)
	}
	if err := mgr.Add(r.tombstones); err != nil {
		t.Fatal(err)
	}
	runUntilCleanup(t, ctx, cancel, mgr)
	return r
}

// newManager is a manager against the test API server, serving nothing.
func newManager(tb testing.TB, cacheOpts ...cache.Options) ctrl.Manager {
	tb.Helper()
	opts := ctrl.Options{
		Scheme:                 controlPlane.Scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		// Each test runs its own manager with the same controllers.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	}
	for _, o := range cacheOpts {
		opts.Cache = o
	}
	mgr, err := ctrl.NewManager(controlPlane.Config, opts)
	if err != nil {
		tb.Fatal(err)
	}
	return mgr
}

// runUntilCleanup runs mgr until the test ends, then cancels ctx and fails
// the test if the manager ended with an error.
func runUntilCleanup(tb testing.TB, ctx context.Context, cancel context.CancelFunc, mgr ctrl.Manager) {
	tb.Helper()
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("manager: %v", err)
		}
	})
}

// apply folds one event at the next sequence, as the ingester does.
func (r *reconcilers) apply(t *testing.T, payload string) uint64 {
	t.Helper()
	return r.applyOn(t, "", payload)
}

// applyOn folds one event published on subject at the next sequence.
func (r *reconcilers) applyOn(t *testing.T, subject, payload string) uint64 {
	t.Helper()
	r.nextSequence++
	out := r.store.Apply(context.Background(), r.nextSequence, time.Now(), subject, nil, []byte(payload))
	if out.Result != fold.ResultApplied {
		t.Fatalf("event %d was not applied: %s %s", r.nextSequence, out.Result, out.Reason)
	}
	return r.nextSequence
}

// eventually polls cond until it holds or the timeout passes.
func eventually(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not true after a minute: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
