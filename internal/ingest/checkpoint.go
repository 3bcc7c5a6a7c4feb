package ingest

import (
	"context"
	"errors"
	"time"

	"github.com/go-logr/logr"

	"cellos.dev/cellos-operator/internal/checkpoint"
	"cellos.dev/cellos-operator/internal/store"
)

// restore loads the checkpoint of stream into the store, just Reset, and
// returns the sequence it covers; 0, for a fold from the first event, when
// checkpoints are off or the checkpoint cannot be used, which it says.
func (in *Ingester) restore(ctx context.Context, stream store.Stream, last uint64) uint64 {
	if in.Checkpoints == nil {
		return 0
	}
	log := logr.FromContextOrDiscard(ctx)
	snap, err := in.Checkpoints.Load(ctx, checkpoint.Want{Stream: stream, LastSequence: last, Settings: in.Store.Settings()})
	var fallback *checkpoint.Fallback
	if errors.As(err, &fallback) {
		checkpointFallbacksTotal.WithLabelValues(string(fallback.Reason)).Inc()
		log.Info("Folding the stream from its first event: the checkpoint cannot be used",
			"stream", stream.Name, "bucket", in.Checkpoints.Name, "reason", fallback.Reason, "why", fallback.Err.Error())
		return 0
	}
	in.Store.Restore(ctx, snap)
	checkpointSequence.Set(float64(snap.Sequence))
	formations, cells := in.Store.Live()
	log.Info("Restored the fold from its checkpoint", "stream", stream.Name, "bucket", in.Checkpoints.Name,
		"sequence", snap.Sequence, "formations", formations, "cells", cells)
	return snap.Sequence
}

// checkpointLoop writes a checkpoint every CheckpointInterval when the fold
// moved past written, the sequence of the last one, and once more when ctx
// ends, so that a graceful stop leaves the next start no tail to fold.
func (in *Ingester) checkpointLoop(ctx context.Context, written uint64) {
	tick := time.NewTicker(in.CheckpointInterval)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			written, _ = in.writeCheckpoint(ctx, written)
		case <-ctx.Done():
			final, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			written, ok := in.writeCheckpoint(final, written)
			cancel()
			if ok {
				logr.FromContextOrDiscard(ctx).Info("Checkpointed the fold on shutdown", "sequence", written)
			}
			return
		}
	}
}

// writeCheckpoint writes the fold as it is, unless it is still at written,
// and returns the sequence the bucket now holds a checkpoint of, and
// whether that is the fold as it is (false: the write failed, and said so).
func (in *Ingester) writeCheckpoint(ctx context.Context, written uint64) (uint64, bool) {
	start := time.Now()
	var snap store.Snapshot
	var data []byte
	var err error
	// Encoded under the store's lock, which holds the fold still: the state
	// is exactly the fold up to the sequence it says.
	in.Store.Snapshot(func(s store.Snapshot) {
		if snap = s; s.Sequence > written && s.Stream == in.stream {
			data, err = checkpoint.Encode(s)
		}
	})
	if data == nil && err == nil {
		return written, true
	}
	if err == nil {
		err = in.Checkpoints.Save(ctx, snap.Stream.Name, data)
	}
	if err != nil {
		checkpointWriteFailuresTotal.Inc()
		logr.FromContextOrDiscard(ctx).Error(err, "Writing the checkpoint; the next start folds a longer tail", "sequence", snap.Sequence)
		return written, false
	}
	checkpointDuration.Observe(time.Since(start).Seconds())
	checkpointBytes.Set(float64(len(data)))
	checkpointSequence.Set(float64(snap.Sequence))
	return snap.Sequence, true
}
