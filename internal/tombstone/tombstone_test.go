package tombstone

import (
	"context"
	"fmt"
	"testing"
	"time"

	natsjs "github.com/nats-io/nats.go/jetstream"

	"cellos.dev/cellos-operator/internal/jetstream"
	"cellos.dev/cellos-operator/test/localenv"
)

const id = "0f8fad5b-d9cb-469f-a165-70867728950e"

// run starts a Set of the default bucket for the stream CELLOS_EVENTS until
// the test ends, and waits until it has loaded.
func run(t *testing.T, js natsjs.JetStream) *Set {
	t.Helper()
	s := New(js, DefaultBucket, jetstream.DefaultStreamName)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	eventually(t, "the tombstones are loaded", func() error {
		if !s.Loaded() {
			return fmt.Errorf("not loaded")
		}
		return nil
	})
	return s
}

func eventually(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for err := cond(); err != nil; err = cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A tombstone holds as soon as it is recorded, reaches every replica, and
// is loaded again by the next start; the bucket outlives the stream's
// max_age.
func TestTombstonesOutliveTheStreamsEvents(t *testing.T) {
	js := localenv.StartJetStream(t)
	_, jsc := js.Connect(t)
	ctx := context.Background()
	if _, err := jetstream.EnsureStream(ctx, jsc, jetstream.DefaultStreamName); err != nil {
		t.Fatal(err)
	}
	leader, standby := run(t, jsc), run(t, jsc)
	if leader.Has(id) {
		t.Fatal("a tombstone before any was recorded")
	}
	if err := leader.Record(ctx, id, "team-a/research"); err != nil {
		t.Fatal(err)
	}
	if !leader.Has(id) {
		t.Error("the recording replica does not hold the tombstone it recorded")
	}
	eventually(t, "the standby holds the tombstone", func() error {
		if !standby.Has(id) {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	if err := leader.Refresh(ctx, id); err != nil {
		t.Error(err)
	}

	js.Restart()
	_, again := js.Connect(t)
	if restarted := run(t, again); !restarted.Has(id) {
		t.Error("a start does not load the tombstone recorded before")
	}
	kv, err := again.KeyValue(ctx, DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	status, err := kv.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := jetstream.DefaultMaxAge + margin; status.TTL() != want || status.History() != 1 {
		t.Errorf("bucket TTL %s, history %d; want %s, 1", status.TTL(), status.History(), want)
	}
}

// Without the stream the bucket's TTL derives from, nothing is loaded:
// no decision rests on tombstones not yet read.
func TestNotLoadedWithoutTheStream(t *testing.T) {
	_, jsc := localenv.StartJetStream(t).Connect(t)
	s := New(jsc, DefaultBucket, jetstream.DefaultStreamName)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if s.Loaded() {
		t.Error("loaded without the stream")
	}
	if err := s.Record(context.Background(), id, "x"); err == nil {
		t.Error("recorded without the bucket")
	}
}
