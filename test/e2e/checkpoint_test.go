package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	natsjs "github.com/nats-io/nats.go/jetstream"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/internal/checkpoint"
	"cellos.dev/cellos-operator/internal/fold"
	"cellos.dev/cellos-operator/internal/simulator"
	"cellos.dev/cellos-operator/internal/store"
	"cellos.dev/cellos-operator/test/harness"
	"cellos.dev/cellos-operator/test/localenv"
)

// A start folds only the events after the checkpoint the last leader left
// in JetStream, and ends with the objects a full fold gives; a checkpoint
// that cannot give them is not used, and the start folds the stream from
// its first event instead, saying why.

// checkpointRun is one operator projecting a generated stream in its own
// namespace, with its checkpoints in the default bucket.
type checkpointRun struct {
	ns  string
	js  *localenv.JetStreamServer
	jsc natsjs.JetStream
	m   *manager
	// events is the whole generated stream; published counts those in it.
	events    []simulator.Event
	published int
}

func newCheckpointRun(t *testing.T, seed uint64) *checkpointRun {
	t.Helper()
	r := &checkpointRun{ns: newNamespace(t), js: localenv.StartJetStream(t)}
	_, r.jsc = r.js.Connect(t)
	ensureEventStream(t, r.jsc)
	r.events = simulator.Generate(simulator.Config{Seed: seed, Formations: 60, CellsPerFormation: 3, FailureRate: 0.2, DegradedRate: 0.2,
		Start: time.Date(2027, 4, 1, 8, 0, 0, 0, time.UTC)})
	return r
}

// publish publishes the next n generated events.
func (r *checkpointRun) publish(t *testing.T, n int) {
	t.Helper()
	sent, err := simulator.Publish(context.Background(), r.jsc, slices.Values(r.events[r.published:r.published+n]), 0)
	if err != nil {
		t.Fatal(err)
	}
	r.published += sent
}

// start starts the manager and waits until every object equals the fold
// of the whole stream and the cursor reaches its end.
func (r *checkpointRun) start(t *testing.T, extra ...string) {
	t.Helper()
	want := foldStream(t, r.jsc)
	r.m = startManager(t, r.js.URL(), r.ns, append([]string{"--flush-window=50ms", "--cursor-commit-interval=200ms"}, extra...)...)
	harness.Eventually(t, time.Minute, "ready", r.m.Ready)
	harness.Eventually(t, 2*time.Minute, "every object equals the fold of the stream", func() error { return matchesFold(r.ns, want) })
	waitForCursorOf(t, r.ns, want)
}

// expectFolded checks that this start folded n events and fell back for
// reason alone ("" for none). The metrics are read until they say so,
// then once more a moment later, so that a fold that goes on past n fails.
func (r *checkpointRun) expectFolded(t *testing.T, n int, reason checkpoint.Reason) {
	t.Helper()
	want := map[checkpoint.Reason]int{}
	if reason != "" {
		want[reason] = 1
	}
	check := func() error {
		samples, err := r.m.Metrics()
		if err != nil {
			return err
		}
		got := map[checkpoint.Reason]int{}
		for _, reason := range checkpoint.Reasons {
			if n := samples[`cellos_operator_checkpoint_fallbacks_total{reason="`+string(reason)+`"}`]; n > 0 {
				got[reason] = int(n)
			}
		}
		folded := int(harness.Sum(samples, "cellos_operator_events_total"))
		if fmt.Sprint(got) != fmt.Sprint(want) || folded != n {
			return fmt.Errorf("folded %d events, want %d; fallbacks %v, want %v", folded, n, got, want)
		}
		return nil
	}
	harness.Eventually(t, time.Minute, "the start folds what it must", check)
	time.Sleep(time.Second)
	if err := check(); err != nil {
		t.Errorf("%v\n%s", err, harness.Tail(r.m.Logs(), 30))
	}
}

// stop stops the manager gracefully, which writes a checkpoint of the
// fold at the stream's end, and waits until it is in the bucket.
func (r *checkpointRun) stop(t *testing.T) {
	t.Helper()
	harness.Stop(t, r.m.Manager)
	if !strings.Contains(r.m.Logs(), "Checkpointed the fold on shutdown") {
		t.Fatalf("no checkpoint written on shutdown:\n%s", harness.Tail(r.m.Logs(), 30))
	}
}

// object is the checkpoint object of the stream, and the store it is in.
func (r *checkpointRun) object(t *testing.T) (natsjs.ObjectStore, []byte) {
	t.Helper()
	obs, err := r.jsc.ObjectStore(context.Background(), checkpoint.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	data, err := obs.GetBytes(context.Background(), "CELLOS_EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	return obs, data
}

func (r *checkpointRun) putObject(t *testing.T, obs natsjs.ObjectStore, data []byte) {
	t.Helper()
	if _, err := obs.PutBytes(context.Background(), "CELLOS_EVENTS", data); err != nil {
		t.Fatal(err)
	}
}

// A start after a checkpoint folds only the events after it: after a
// SIGKILL, those since the last periodic checkpoint; after a graceful stop,
// those since the stop. Both end with the objects a full fold gives.
func TestCheckpointFoldsOnlyTheTail(t *testing.T) {
	r := newCheckpointRun(t, 31)
	first := len(r.events) / 2
	r.publish(t, first)
	r.start(t, "--checkpoint-interval=1s")
	r.expectFolded(t, first, checkpoint.Missing)
	harness.Eventually(t, time.Minute, "a periodic checkpoint of the whole stream", func() error {
		if got := r.m.Metric(t, "cellos_operator_checkpoint_sequence"); int(got) != first {
			return fmt.Errorf("checkpoint at %v, the stream at %d", got, first)
		}
		return nil
	})
	if n := r.m.Metric(t, "cellos_operator_checkpoint_bytes"); n <= 0 {
		t.Errorf("checkpoint_bytes %v after a checkpoint", n)
	}
	r.m.Kill()

	tail := len(r.events) / 4
	r.publish(t, tail)
	r.start(t, "--checkpoint-interval=1h")
	r.expectFolded(t, tail, "")
	if !strings.Contains(r.m.Logs(), "Restored the fold from its checkpoint") {
		t.Errorf("the log does not say the fold was restored:\n%s", harness.Tail(r.m.Logs(), 30))
	}
	r.stop(t)

	r.publish(t, len(r.events)-r.published)
	r.start(t)
	r.expectFolded(t, len(r.events)-first-tail, "")
	r.stop(t)

	// Nothing after the checkpoint: nothing to fold, and ready at once.
	r.start(t)
	r.expectFolded(t, 0, "")
	if failed := r.m.Metric(t, "cellos_operator_checkpoint_write_failures_total"); failed != 0 {
		t.Errorf("%v checkpoint writes failed", failed)
	}
}

// Every checkpoint that cannot stand in for the fold is passed over: the
// start folds the stream from its first event, counts why, and ends with
// the objects the full fold gives.
func TestCheckpointFallsBackToAFullFold(t *testing.T) {
	r := newCheckpointRun(t, 33)
	r.publish(t, len(r.events))
	r.start(t)
	r.expectFolded(t, len(r.events), checkpoint.Missing)
	r.stop(t)

	for _, c := range []struct {
		reason checkpoint.Reason
		// spoil makes the checkpoint unusable for reason, and returns the
		// flags of the next start.
		spoil func(t *testing.T) []string
	}{
		{checkpoint.Missing, func(t *testing.T) []string {
			t.Helper()
			obs, _ := r.object(t)
			if err := obs.Delete(context.Background(), "CELLOS_EVENTS"); err != nil {
				t.Fatal(err)
			}
			return nil
		}},
		{checkpoint.Corrupt, func(t *testing.T) []string {
			t.Helper()
			obs, data := r.object(t)
			data[len(data)-1] ^= 0xff
			r.putObject(t, obs, data)
			return nil
		}},
		{checkpoint.Format, func(t *testing.T) []string {
			t.Helper()
			obs, data := r.object(t)
			data[len("CELLOSCP")]++ // the format version
			r.putObject(t, obs, data)
			return nil
		}},
		{checkpoint.Ahead, func(t *testing.T) []string {
			t.Helper()
			// As when the stream is restored from a backup older than the
			// checkpoint: it covers sequences the stream does not hold.
			obs, data := r.object(t)
			s, err := r.jsc.Stream(context.Background(), "CELLOS_EVENTS")
			if err != nil {
				t.Fatal(err)
			}
			info := s.CachedInfo()
			stream := store.Stream{Name: "CELLOS_EVENTS", Created: info.Created}
			snap, err := checkpoint.Decode(data, checkpoint.Want{Stream: stream, LastSequence: info.State.LastSeq, Settings: defaultSettings()})
			if err != nil {
				t.Fatal(err)
			}
			snap.Sequence += 100
			if data, err = checkpoint.Encode(snap); err != nil {
				t.Fatal(err)
			}
			r.putObject(t, obs, data)
			return nil
		}},
		{checkpoint.OtherSettings, func(*testing.T) []string {
			// Events of the stream are all far below either bound: the
			// result is the same, but the fold is not.
			return []string{fmt.Sprintf("--max-event-bytes=%d", 2*fold.DefaultMaxEventBytes)}
		}},
		{checkpoint.OtherStream, func(t *testing.T) []string {
			t.Helper()
			// The stream deleted and created again with the same events:
			// the sequences match, the creation time does not.
			if err := r.jsc.DeleteStream(context.Background(), "CELLOS_EVENTS"); err != nil {
				t.Fatal(err)
			}
			ensureEventStream(t, r.jsc)
			r.published = 0
			r.publish(t, len(r.events))
			return nil
		}},
	} {
		t.Run(string(c.reason), func(t *testing.T) {
			r.start(t, c.spoil(t)...)
			r.expectFolded(t, len(r.events), c.reason)
			r.stop(t)
		})
	}
}

// defaultSettings are the settings of a manager started with the default
// flags.
func defaultSettings() store.Settings {
	return store.Settings{OperatorPrefix: fold.DefaultOperatorPrefix, MaxEventBytes: fold.DefaultMaxEventBytes,
		TTLs: fold.TTLs{Cell: time.Hour, Formation: 24 * time.Hour}}
}

// With --create-stream=false the operator creates no bucket: without one
// the start says the checkpoint is unreadable and folds the whole stream;
// once someone creates it, the checkpoint is written and used.
func TestCheckpointBucketNotCreatedWithoutCreateStream(t *testing.T) {
	r := newCheckpointRun(t, 35)
	r.publish(t, len(r.events))
	r.start(t, "--create-stream=false")
	r.expectFolded(t, len(r.events), checkpoint.Unreadable)
	harness.Stop(t, r.m.Manager)
	if _, err := r.jsc.ObjectStore(context.Background(), checkpoint.DefaultBucket); err == nil {
		t.Fatal("the operator created the bucket with --create-stream=false")
	}

	if _, err := r.jsc.CreateObjectStore(context.Background(), natsjs.ObjectStoreConfig{Bucket: checkpoint.DefaultBucket}); err != nil {
		t.Fatal(err)
	}
	r.start(t, "--create-stream=false")
	r.expectFolded(t, len(r.events), checkpoint.Missing)
	r.stop(t)
	r.start(t, "--create-stream=false")
	r.expectFolded(t, 0, "")
}

// With --checkpoint-interval=0 nothing is written or read: every start
// folds the stream from its first event.
func TestCheckpointDisabled(t *testing.T) {
	r := newCheckpointRun(t, 37)
	r.publish(t, len(r.events))
	r.start(t)
	r.stop(t)
	r.start(t, "--checkpoint-interval=0")
	r.expectFolded(t, len(r.events), "")
	harness.Stop(t, r.m.Manager)
	if strings.Contains(strings.ToLower(r.m.Logs()), "checkpoint") {
		t.Errorf("the log speaks of checkpoints with --checkpoint-interval=0:\n%s", harness.Tail(r.m.Logs(), 30))
	}
}

// An object that expired before the checkpoint stays gone after a start
// from it: the checkpoint holds the fold without it.
func TestCheckpointKeepsExpiredObjectsGone(t *testing.T) {
	// Long enough for the objects to be written before they expire, on a
	// busy machine too.
	ttls := fold.TTLs{Cell: 10 * time.Second, Formation: 10 * time.Second}
	flags := []string{"--cell-ttl=10s", "--formation-ttl=10s", "--flush-window=50ms", "--cursor-commit-interval=200ms"}
	r := newCheckpointRun(t, 39)
	ctx := context.Background()
	r.m = startManager(t, r.js.URL(), r.ns, flags...)
	gone := simulator.Generate(simulator.Config{Seed: 39, Formations: 3, CellsPerFormation: 2, Start: time.Date(2027, 4, 1, 8, 0, 0, 0, time.UTC)})
	if _, err := simulator.Publish(ctx, r.jsc, slices.Values(gone), 0); err != nil {
		t.Fatal(err)
	}
	expired := time.Now().Add(ttls.Formation + time.Second)
	expect := func() harness.Expectation {
		snap, err := harness.ReadStream(ctx, r.jsc, "CELLOS_EVENTS")
		if err != nil {
			t.Fatal(err)
		}
		return harness.ExpectTTLs(snap, ttls, time.Now())
	}
	converge := func(want harness.Expectation) {
		t.Helper()
		harness.Eventually(t, 2*time.Minute, "every object equals the fold, the expired ones gone", func() error {
			bad, err := harness.Mismatches(ctx, controlPlane.Client, r.ns, want)
			if err != nil || len(bad) == 0 {
				return err
			}
			return fmt.Errorf("%d objects differ:\n%s", len(bad), strings.Join(harness.Head(bad, 10), "\n"))
		})
	}
	harness.Eventually(t, time.Minute, "the formations are projected", func() error {
		if n := len(formationsIn(t, r.ns)); n != 3 {
			return fmt.Errorf("%d Formations", n)
		}
		return nil
	})
	// Past their TTLs, by the stream's clock: the next event releases them.
	time.Sleep(time.Until(expired))
	later := simulator.Generate(simulator.Config{Seed: 40, Formations: 1, CellsPerFormation: 1, Start: time.Date(2027, 4, 1, 9, 0, 0, 0, time.UTC)})
	if _, err := simulator.Publish(ctx, r.jsc, slices.Values(later[:2]), 0); err != nil {
		t.Fatal(err)
	}
	want := expect()
	if len(want.State.Formations) != 1 {
		t.Fatalf("%d formations live in the fold, want the later one alone", len(want.State.Formations))
	}
	converge(want)
	r.stop(t)

	r.m = startManager(t, r.js.URL(), r.ns, flags...)
	harness.Eventually(t, time.Minute, "ready", r.m.Ready)
	// Long enough for a restored object to be handed to its controller.
	time.Sleep(3 * time.Second)
	converge(expect())
	r.expectFolded(t, 0, "")
	if formations := formationsIn(t, r.ns); len(formations) != 1 {
		t.Errorf("%d Formations after the restart, want the later one alone", len(formations))
	}
}

// formationsIn lists the Formations of ns.
func formationsIn(t *testing.T, ns string) []cellosv1.Formation {
	t.Helper()
	var list cellosv1.FormationList
	if err := controlPlane.Client.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	return list.Items
}
