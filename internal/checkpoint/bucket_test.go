package checkpoint

import (
	"context"
	"errors"
	"testing"

	natsjs "github.com/nats-io/nats.go/jetstream"

	"cellos.dev/cellos-operator/internal/fold"
	"cellos.dev/cellos-operator/test/localenv"
)

func reasonOf(t *testing.T, err error) Reason {
	t.Helper()
	var f *Fallback
	if !errors.As(err, &f) {
		t.Fatalf("got %v, want a fallback", err)
	}
	return f.Reason
}

// A checkpoint saved to a real JetStream is loaded back; a later one
// replaces it; each stream has its own.
func TestBucketSavesAndLoads(t *testing.T) {
	ctx := context.Background()
	_, js := localenv.StartJetStream(t).Connect(t)
	b := &Bucket{JetStream: js, Name: DefaultBucket}

	if _, err := b.Load(ctx, Want{Stream: stream, Settings: settings(fold.TTLs{})}); reasonOf(t, err) != Missing {
		t.Fatalf("an empty bucket: %v", err)
	}
	evs := events(200, 3)
	st := newState(fold.TTLs{})
	done := 0
	for _, cut := range []int{len(evs) / 2, len(evs)} {
		foldFrom(st, uint64(done+1), evs[done:cut])
		done = cut
		snap := snapshotOf(st, uint64(cut))
		data := encode(t, snap)
		if err := b.Save(ctx, stream.Name, data); err != nil {
			t.Fatal(err)
		}
		if cut == len(evs) && len(data) < 128<<10 {
			t.Errorf("a checkpoint of %d bytes fits one chunk of the Object Store: the test reads no chunked object", len(data))
		}
		got, err := b.Load(ctx, Want{Stream: stream, LastSequence: uint64(len(evs)), Settings: settings(fold.TTLs{})})
		if err != nil {
			t.Fatal(err)
		}
		if got.Sequence != uint64(cut) || len(got.State.Cells) != len(st.Cells) {
			t.Errorf("loaded sequence %d with %d cells, saved %d with %d", got.Sequence, len(got.State.Cells), cut, len(st.Cells))
		}
	}
	if _, err := b.Load(ctx, Want{Stream: stream, LastSequence: 1, Settings: settings(fold.TTLs{})}); reasonOf(t, err) != Ahead {
		t.Errorf("a stream behind the checkpoint: %v", err)
	}
	other := stream
	other.Name = "OTHER"
	if _, err := b.Load(ctx, Want{Stream: other, LastSequence: 1 << 20, Settings: settings(fold.TTLs{})}); reasonOf(t, err) != Missing {
		t.Errorf("another stream's checkpoint: %v", err)
	}

	// Whatever else is in the object is refused as corrupt.
	obs, err := js.ObjectStore(ctx, DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := obs.PutString(ctx, stream.Name, "not a checkpoint"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Load(ctx, Want{Stream: stream, LastSequence: 1 << 20, Settings: settings(fold.TTLs{})}); reasonOf(t, err) != Corrupt {
		t.Errorf("a damaged checkpoint: %v", err)
	}
}

// With NoCreate the bucket is never created: loads are unreadable and
// saves fail until someone creates it, and then both work.
func TestBucketNoCreate(t *testing.T) {
	ctx := context.Background()
	_, js := localenv.StartJetStream(t).Connect(t)
	b := &Bucket{JetStream: js, Name: "precreated", NoCreate: true}
	if _, err := b.Load(ctx, Want{Stream: stream}); reasonOf(t, err) != Unreadable {
		t.Fatalf("a missing bucket: %v", err)
	}
	if err := b.Save(ctx, stream.Name, []byte("x")); err == nil {
		t.Fatal("saved into a missing bucket")
	}
	if _, err := js.ObjectStore(ctx, "precreated"); !errors.Is(err, natsjs.ErrBucketNotFound) {
		t.Fatalf("the bucket was created: %v", err)
	}
	if _, err := js.CreateObjectStore(ctx, natsjs.ObjectStoreConfig{Bucket: "precreated"}); err != nil {
		t.Fatal(err)
	}
	st := newState(ttls)
	foldFrom(st, 1, events(2, 1))
	snap := snapshotOf(st, st.LastSequence)
	if err := b.Save(ctx, stream.Name, encode(t, snap)); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Load(ctx, want(snap)); err != nil {
		t.Fatal(err)
	}
}
