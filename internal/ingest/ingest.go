// Package projector runs the projection: it folds the JetStream stream into a
// Store, tells the controllers which objects lag, and commits the cursor.
package ingest

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/go-logr/logr"
	natsjs "github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/internal/cursor"
	"cellos.dev/cellos-operator/internal/fold"
	"cellos.dev/cellos-operator/internal/jetstream"
	"cellos.dev/cellos-operator/internal/store"
)

// RejectedEventReason is the reason of the Warning Event raised on the cursor
// ConfigMap for an event that could not be used.
const RejectedEventReason = "RejectedEvent"

// Projector consumes the stream on the elected leader. It is a manager
// Runnable.
type Projector struct {
	// Reader lists the objects once at start, straight from the API server.
	Reader client.Reader
	// JetStream and Stream name the stream to project.
	JetStream natsjs.JetStream
	Stream    string
	// Cursor stores the resume point.
	Cursor *cursor.ConfigMap
	// Store receives the fold.
	Store *store.Store
	// Formations and Cells tell the controllers which objects lag.
	Formations, Cells chan<- event.GenericEvent
	// Recorder raises the Warning Events for rejected events.
	Recorder events.EventRecorder
	// CommitInterval is how often the cursor is committed.
	CommitInterval time.Duration

	// rejections limits Warning Events, so that a flood of bad events
	// cannot flood the API server; every rejection is still logged and counted.
	rejections *rate.Limiter

	mu       sync.Mutex
	consumer *jetstream.Consumer
	problem  error
	// cursorObject is what the Warning Events are about.
	cursorObject *corev1.ConfigMap
}

// NeedLeaderElection makes only the leader consume: two writers would fight.
func (p *Projector) NeedLeaderElection() bool { return true }

// Start loads the projection and consumes the stream until ctx ends.
func (p *Projector) Start(ctx context.Context) error {
	log := ctrl.LoggerFrom(ctx).WithName("projector")
	ctx = logr.NewContext(ctx, log)
	p.rejections = rate.NewLimiter(rate.Every(10*time.Second), 5)

	stream, err := p.ensureStream(ctx)
	if err != nil {
		return err
	}
	info := stream.CachedInfo()
	created := info.Created
	p.Store.SetStreamLast(info.State.LastSeq)
	streamLastSequence.Set(float64(info.State.LastSeq))
	pos, found, err := p.resumePoint(ctx, created)
	if err != nil {
		return err
	}
	if pos, err = p.Cursor.Commit(ctx, pos); err != nil {
		return err
	}
	cursorSequence.Set(float64(pos.Sequence))
	if err := p.loadCursorObject(ctx); err != nil {
		return err
	}
	// Without a cursor the projection is rebuilt from the first event: the
	// objects only say where they live, and their status is not trusted.
	if err := p.seed(ctx, found); err != nil {
		return err
	}
	p.Store.SetProcessed(pos.Sequence)

	commitCtx, stopCommits := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { p.commitLoop(commitCtx, pos) })
	defer wg.Wait()
	defer stopCommits()

	consumer := jetstream.NewConsumer(p.JetStream, p.Stream)
	consumer.OnError = func(reason string, _ error) { consumerErrorsTotal.WithLabelValues(reason).Inc() }
	p.mu.Lock()
	p.consumer = consumer
	p.mu.Unlock()
	log.Info("Consuming", "stream", p.Stream, "fromSequence", pos.Sequence+1)
	if err := consumer.Run(ctx, pos.Sequence+1, p.handle); err != nil {
		return fmt.Errorf("consuming stream %s: %w", p.Stream, err)
	}
	return nil
}

// cursorRecheck is how often a cursor of another stream is read again, to
// notice that a person deleted it.
const cursorRecheck = 10 * time.Second

// resumePoint is where to resume: the cursor, or the first sequence when there
// is none. A cursor of another stream (one recreated under the same name)
// would skip or misapply events, so the projector waits, unready, until a
// person deletes it. found tells whether a cursor was found.
func (p *Projector) resumePoint(ctx context.Context, created time.Time) (cursor.Position, bool, error) {
	log := logr.FromContextOrDiscard(ctx)
	for warned := false; ; warned = true {
		pos, found, err := p.Cursor.Load(ctx)
		if err != nil {
			return pos, false, err
		}
		if !found {
			log.Info("No cursor: replaying the stream from its first sequence", "configMap", p.Cursor.Key)
			if warned {
				// The objects' sequences count another stream's events: a
				// status "ahead" of the projection is stale, not newer.
				p.Store.DistrustStatus()
			}
			p.setProblem(nil)
			return cursor.Position{Stream: p.Stream, StreamCreated: created}, false, nil
		}
		if pos.Stream == p.Stream && pos.StreamCreated.Equal(created) {
			return pos, true, nil
		}
		if !warned {
			p.setProblem(fmt.Errorf("cursor ConfigMap %s belongs to stream %s created %s, but stream %s was created %s: delete the ConfigMap to rebuild the projection from this stream",
				p.Cursor.Key, pos.Stream, pos.StreamCreated.Format(time.RFC3339), p.Stream, created.Format(time.RFC3339)))
			log.Error(p.Healthy(), "Not consuming")
		}
		select {
		case <-ctx.Done():
			return pos, false, ctx.Err()
		case <-time.After(cursorRecheck):
		}
	}
}

// ensureStream waits for NATS: the operator may start before it.
func (p *Projector) ensureStream(ctx context.Context) (natsjs.Stream, error) {
	log := logr.FromContextOrDiscard(ctx)
	for delay := time.Second; ; delay = min(2*delay, 30*time.Second) {
		stream, err := jetstream.EnsureStream(ctx, p.JetStream, p.Stream)
		if err == nil {
			p.setProblem(nil)
			return stream, nil
		}
		p.setProblem(err)
		log.Error(err, "Cannot reach the stream; retrying", "stream", p.Stream, "retryIn", delay)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(delay):
		}
	}
}

// seed loads where the objects live, and with records their projection.
func (p *Projector) seed(ctx context.Context, records bool) error {
	var formations cellosv1.FormationList
	if err := p.Reader.List(ctx, &formations); err != nil {
		return fmt.Errorf("listing Formations: %w", err)
	}
	var cells cellosv1.CellList
	if err := p.Reader.List(ctx, &cells); err != nil {
		return fmt.Errorf("listing Cells: %w", err)
	}
	p.Store.Seed(formations.Items, cells.Items, records)
	logr.FromContextOrDiscard(ctx).Info("Loaded the objects", "formations", len(formations.Items), "cells", len(cells.Items), "projectionFromStatus", records)
	return nil
}

func (p *Projector) loadCursorObject(ctx context.Context) error {
	var cm corev1.ConfigMap
	if err := p.Reader.Get(ctx, p.Cursor.Key, &cm); err != nil {
		return fmt.Errorf("reading cursor ConfigMap %s: %w", p.Cursor.Key, err)
	}
	p.cursorObject = &cm
	return nil
}

// handle folds one message. It runs on the consumer's one goroutine, in
// stream order.
func (p *Projector) handle(ctx context.Context, msg jetstream.Message) error {
	out, ref := p.Store.Apply(msg.Sequence, msg.Payload)
	eventsTotal.WithLabelValues(string(out.Family), string(out.Result)).Inc()
	p.Store.SetStreamLast(msg.StreamLast)
	streamLastSequence.Set(float64(msg.StreamLast))
	if out.Result == fold.ResultRejected {
		p.reject(ctx, out)
	}
	if ref == nil {
		return nil
	}
	ch := p.Cells
	if ref.Kind == store.FormationKind {
		ch = p.Formations
	}
	select {
	case ch <- event.GenericEvent{Object: store.ObjectOf(*ref)}:
		return nil
	case <-ctx.Done():
		return nil
	}
}

// reject surfaces an event that cannot be used: in the log, in metrics, and
// as a Warning Event on the cursor ConfigMap. The stream moves on.
func (p *Projector) reject(ctx context.Context, out fold.Outcome) {
	logr.FromContextOrDiscard(ctx).Info("Rejected an event", "sequence", out.Seq, "eventID", out.EventID, "reason", out.Reason)
	if p.rejections.Allow() {
		p.Recorder.Eventf(p.cursorObject, nil, corev1.EventTypeWarning, RejectedEventReason, "Project",
			"Skipped the event at stream sequence %d (id %q): %s", out.Seq, out.EventID, out.Reason)
	}
}

// commitLoop commits the watermark about once per interval, and once more
// when ctx ends, so that a clean shutdown loses no progress.
func (p *Projector) commitLoop(ctx context.Context, pos cursor.Position) {
	log := logr.FromContextOrDiscard(ctx)
	tick := time.NewTicker(p.CommitInterval)
	defer tick.Stop()
	commit := func(ctx context.Context) {
		w := p.Store.Watermark()
		if last := p.Store.StreamLast(); last >= w {
			lagEvents.Set(float64(last - w))
		}
		if w <= pos.Sequence {
			return
		}
		next := pos
		next.Sequence = w
		stored, err := p.Cursor.Commit(ctx, next)
		if err != nil {
			log.Error(err, "Committing the cursor", "sequence", w)
			return
		}
		pos = stored
		cursorSequence.Set(float64(stored.Sequence))
	}
	for {
		select {
		case <-tick.C:
			commit(ctx)
		case <-ctx.Done():
			final, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			commit(final)
			cancel()
			log.Info("Committed the cursor on shutdown", "sequence", pos.Sequence)
			return
		}
	}
}

func (p *Projector) setProblem(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.problem = err
}

// Healthy is the readiness of the projection: nil on a replica that does
// not lead, or while the leader can reach the stream and consume it.
func (p *Projector) Healthy() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.problem != nil {
		return p.problem
	}
	if p.consumer != nil {
		return p.consumer.Healthy()
	}
	return nil
}
