// Package cursor keeps the projection's progress on a ConfigMap: the low
// watermark of the stream sequences whose effects are all in status. It is
// for people and tools; the operator does not resume from it, because every
// start folds the stream from its first event.
package cursor

import (
	"context"
	"fmt"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The ConfigMap's keys. Tests outside the repository read SequenceKey.
const (
	SequenceKey      = "sequence"
	StreamKey        = "stream"
	StreamCreatedKey = "streamCreated"
	LastGapKey       = "lastGap"
)

// Position is how far the projection has reached in one stream.
type Position struct {
	// Sequence is the low watermark: every event at or below it is reflected
	// in status, or was ignored or rejected.
	Sequence uint64
	// Stream names the stream the sequence belongs to.
	Stream string
	// StreamCreated tells a stream apart from a later one of the same name,
	// whose sequences would mean other events.
	StreamCreated time.Time
	// LastGap is the last run of sequences found missing from the stream
	// (purged or deleted), as "first-last"; empty when none was.
	LastGap string
}

// ConfigMap reads and writes a Position on one ConfigMap.
type ConfigMap struct {
	Client client.Client
	Key    types.NamespacedName
}

// Load returns the stored position, and false when there is none yet. The
// operator does not resume from it: it reads it at start only to tell
// whether the stream was recreated since it was committed. It is for people,
// tools and tests that watch the projection's progress.
func (c *ConfigMap) Load(ctx context.Context) (Position, bool, error) {
	var cm corev1.ConfigMap
	if err := c.Client.Get(ctx, c.Key, &cm); err != nil {
		if apierrors.IsNotFound(err) {
			return Position{}, false, nil
		}
		return Position{}, false, fmt.Errorf("reading cursor ConfigMap %s: %w", c.Key, err)
	}
	p, err := decode(cm.Data)
	if err != nil {
		return Position{}, false, fmt.Errorf("cursor ConfigMap %s: %w", c.Key, err)
	}
	return p, true, nil
}

// Commit stores p, keeping the stored sequence where it is higher: within
// one stream the cursor never decreases, even when two writers race, while
// the cursor of a stream since recreated under the same name (or one that
// cannot be read) is replaced, as its sequences numbered other events. It
// writes with the ConfigMap's resourceVersion and retries on a conflict. It
// returns the position now stored.
func (c *ConfigMap) Commit(ctx context.Context, p Position) (Position, error) {
	for {
		stored, err := c.commitOnce(ctx, p)
		if (apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err)) && ctx.Err() == nil {
			continue
		}
		return stored, err
	}
}

func (c *ConfigMap) commitOnce(ctx context.Context, p Position) (Position, error) {
	var cm corev1.ConfigMap
	err := c.Client.Get(ctx, c.Key, &cm)
	if apierrors.IsNotFound(err) {
		cm = corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{
				Namespace: c.Key.Namespace, Name: c.Key.Name,
				Labels: map[string]string{"app.kubernetes.io/managed-by": "cellos-operator"},
			},
			Data: encode(p),
		}
		if err := c.Client.Create(ctx, &cm); err != nil {
			return Position{}, fmt.Errorf("creating cursor ConfigMap %s: %w", c.Key, err)
		}
		return p, nil
	}
	if err != nil {
		return Position{}, fmt.Errorf("reading cursor ConfigMap %s: %w", c.Key, err)
	}
	if stored, err := decode(cm.Data); err == nil && stored.Stream == p.Stream && stored.StreamCreated.Equal(p.StreamCreated) {
		p.Sequence = max(p.Sequence, stored.Sequence)
		if p.Sequence == stored.Sequence && p.LastGap == stored.LastGap {
			return stored, nil
		}
	}
	cm.Data = encode(p)
	if err := c.Client.Update(ctx, &cm); err != nil {
		return Position{}, fmt.Errorf("updating cursor ConfigMap %s: %w", c.Key, err)
	}
	return p, nil
}

func encode(p Position) map[string]string {
	return map[string]string{
		SequenceKey:      strconv.FormatUint(p.Sequence, 10),
		StreamKey:        p.Stream,
		StreamCreatedKey: p.StreamCreated.UTC().Format(time.RFC3339Nano),
		LastGapKey:       p.LastGap,
	}
}

func decode(data map[string]string) (Position, error) {
	seq, err := strconv.ParseUint(data[SequenceKey], 10, 64)
	if err != nil {
		return Position{}, fmt.Errorf("key %q is not a stream sequence: %w", SequenceKey, err)
	}
	p := Position{Sequence: seq, Stream: data[StreamKey], LastGap: data[LastGapKey]}
	if s := data[StreamCreatedKey]; s != "" {
		if p.StreamCreated, err = time.Parse(time.RFC3339Nano, s); err != nil {
			return Position{}, fmt.Errorf("key %q is not a time: %w", StreamCreatedKey, err)
		}
	}
	return p, nil
}
