package checkpoint

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"

	natsjs "github.com/nats-io/nats.go/jetstream"

	"cellos.dev/cellos-operator/internal/store"
)

// DefaultBucket is the Object Store bucket the checkpoints are kept in.
const DefaultBucket = "cellos-projection-checkpoints"

// Bucket keeps one checkpoint per stream, the object named after the
// stream, in a JetStream Object Store: in the same NATS as the stream, so
// that it is kept, replicated and secured as the stream is. A Put replaces
// the object whole, so a reader sees the old checkpoint or the new one.
type Bucket struct {
	JetStream natsjs.JetStream
	Name      string
	// NoCreate leaves the bucket to whoever operates NATS, as
	// --create-stream=false leaves the stream.
	NoCreate bool

	mu  sync.Mutex
	obs natsjs.ObjectStore
}

// open returns the bucket, created first unless NoCreate. Only a success
// is remembered, so a bucket created later is found at the next call.
func (b *Bucket) open(ctx context.Context) (natsjs.ObjectStore, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.obs != nil {
		return b.obs, nil
	}
	var obs natsjs.ObjectStore
	var err error
	if !b.NoCreate {
		obs, err = b.JetStream.CreateObjectStore(ctx, natsjs.ObjectStoreConfig{
			Bucket:      b.Name,
			Description: "Checkpoints of cellos-operator's fold, one per stream: a start folds only the events after one.",
			Storage:     natsjs.FileStorage,
		})
	}
	if b.NoCreate || errors.Is(err, natsjs.ErrBucketExists) {
		obs, err = b.JetStream.ObjectStore(ctx, b.Name)
	}
	if errors.Is(err, natsjs.ErrBucketNotFound) && b.NoCreate {
		err = fmt.Errorf("%w; the operator does not create it (--create-stream=false)", err)
	}
	if err != nil {
		return nil, fmt.Errorf("opening Object Store bucket %s: %w", b.Name, err)
	}
	b.obs = obs
	return obs, nil
}

// Load reads the checkpoint of stream and decodes it as Decode does, or
// says why it cannot be used: a *Fallback, always.
func (b *Bucket) Load(ctx context.Context, want Want) (store.Snapshot, error) {
	obs, err := b.open(ctx)
	if err != nil {
		return store.Snapshot{}, &Fallback{Reason: Unreadable, Err: err}
	}
	data, err := obs.GetBytes(ctx, want.Stream.Name)
	if errors.Is(err, natsjs.ErrObjectNotFound) {
		return store.Snapshot{}, fallback(Missing, "bucket %s holds no checkpoint of stream %s", b.Name, want.Stream.Name)
	}
	if err != nil {
		return store.Snapshot{}, fallback(Unreadable, "reading the checkpoint of stream %s from bucket %s: %w", want.Stream.Name, b.Name, err)
	}
	return Decode(data, want)
}

// Save writes data, a checkpoint of stream, over the one before.
func (b *Bucket) Save(ctx context.Context, stream string, data []byte) error {
	obs, err := b.open(ctx)
	if err != nil {
		return err
	}
	if _, err := obs.Put(ctx, natsjs.ObjectMeta{Name: stream}, bytes.NewReader(data)); err != nil {
		return fmt.Errorf("writing the checkpoint of stream %s to bucket %s: %w", stream, b.Name, err)
	}
	return nil
}
