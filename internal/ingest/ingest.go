// Package ingest runs the projection: on every replica it restores the
// fold from its checkpoint, consumes the stream after it (from its first
// event without one) and folds it into the store, which tells the
// controllers what lags; on the elected leader only it also commits the
// cursor, checkpoints the fold and raises Warning Events. A standby so holds
// the fold, warm, and its controllers write at once when it takes over.
//
// Every start has the fold of the whole stream before it writes, rather
// than trusting the objects' status or the cursor: status is always the fold
// of the stream it came from, whatever happened while the operator was down
// (a recreated stream, a status edited by hand, a deleted object or cursor).
// A checkpoint only saves folding again what it covers, and is used only
// when it is of this very stream, with these settings. The controllers
// write only what differs, so replaying an applied stream costs reads, not
// writes.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	natsjs "github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/internal/checkpoint"
	"cellos.dev/cellos-operator/internal/cloudevent"
	"cellos.dev/cellos-operator/internal/cursor"
	"cellos.dev/cellos-operator/internal/fold"
	"cellos.dev/cellos-operator/internal/jetstream"
	"cellos.dev/cellos-operator/internal/store"
)

// The reasons of the Warning Events raised on the cursor ConfigMap, kept
// here only for the suites under test/ that still name them through this
// package; use the cellosv1 constants elsewhere.
const (
	RejectedEventReason   = cellosv1.RejectedEventReason
	StreamGapReason       = cellosv1.StreamGapReason
	StreamRecreatedReason = cellosv1.StreamRecreatedReason
)

// heldWarnings is how many Warning Events a replica holds, the latest,
// from before it leads, to raise when it does.
const heldWarnings = 8

// purgeCheckInterval is how often the leader looks for events purged from
// the stream after it folded them.
const purgeCheckInterval = 5 * time.Second

// Ingester consumes the stream on every replica, and writes on the elected
// leader only. It is a manager Runnable.
type Ingester struct {
	// Reader reads the cursor ConfigMap, for the Warning Events about it.
	Reader client.Reader
	// JetStream and Stream name the stream to project.
	JetStream natsjs.JetStream
	Stream    string
	// Cursor stores the low watermark.
	Cursor *cursor.ConfigMap
	// Store receives the fold.
	Store *store.Store
	// Recorder raises the Warning Events on the cursor ConfigMap: rejected
	// events, gaps in the stream, a recreated stream.
	Recorder events.EventRecorder
	// CommitInterval is how often the cursor is committed.
	CommitInterval time.Duration
	// NoCreateStream leaves a missing stream to whoever operates NATS: the
	// ingester waits for it, unready, and never creates it.
	NoCreateStream bool
	// ConsumerBufferBytes bounds the bytes of each pull from the stream
	// (jetstream.DefaultBufferBytes when 0).
	ConsumerBufferBytes int
	// Checkpoints keeps the fold's checkpoints, written every
	// CheckpointInterval and on a graceful stop, and loaded at start; nil
	// folds every start from the stream's first event.
	Checkpoints        *checkpoint.Bucket
	CheckpointInterval time.Duration
	// Elected is closed once this replica leads (ctrl.Manager.Elected).
	// Until then the ingester folds the stream and writes nothing.
	Elected <-chan struct{}

	// rejections limits Warning Events, so that a flood of bad events
	// cannot flood the API server; every rejection is still logged and counted.
	rejections *rate.Limiter
	// streamLast is the stream's last sequence, as last seen.
	streamLast atomic.Uint64
	// lastSeq is the sequence of the message handled last, to notice gaps;
	// only the consumer's goroutine writes it.
	lastSeq atomic.Uint64
	// replayTo is the stream's last sequence when its fold began; reaching
	// it tells the store that every object of the stream is known.
	replayTo uint64
	stream   store.Stream

	mu       sync.Mutex
	consumer *jetstream.Consumer
	problem  error
	// cursorObject is what the Warning Events are about.
	cursorObject *corev1.ConfigMap
	// lastGap is the last run of missing sequences, for the cursor.
	lastGap string
	// paused is set while the fold waits for status writes to catch up.
	paused bool
	// held are the latest Warning Events found before this replica led.
	held []warning
	// leads is set once this replica leads and has taken the cursor over:
	// from then on it commits the cursor, raises Warning Events, and holds
	// the fold at the bound of unflushed objects. A replica that stops
	// leading exits.
	leads atomic.Bool
}

// NeedLeaderElection is false: every replica folds the stream, so that a
// standby takes over without folding it first. What writes waits for
// Elected.
func (in *Ingester) NeedLeaderElection() bool { return false }

// Start folds the stream until ctx ends, from the first event again each time
// the stream is recreated under its name.
func (in *Ingester) Start(ctx context.Context) error {
	log := ctrl.LoggerFrom(ctx).WithName("ingest")
	ctx = logr.NewContext(ctx, log)
	in.rejections = rate.NewLimiter(rate.Every(10*time.Second), 5)
	for {
		err := in.foldStream(ctx)
		if !errors.Is(err, jetstream.ErrStreamRecreated) {
			return err
		}
		// The next fold finds the cursor of the old stream, and says so.
		log.V(1).Info("The consumer found the stream recreated", "reason", err.Error())
	}
}

// foldStream folds one incarnation of the stream until ctx ends or the
// stream is recreated.
func (in *Ingester) foldStream(ctx context.Context) error {
	info, err := in.ensureStream(ctx)
	if err != nil {
		return err
	}
	stream := store.Stream{Name: in.Stream, Created: info.Created}
	in.Store.Reset(stream)
	in.observeStreamLast(info.State.LastSeq)
	// next is the first sequence the fold lacks: after the checkpoint's,
	// else the stream's very first.
	next := in.restore(ctx, stream, info.State.LastSeq) + 1
	in.replayTo, in.stream = info.State.LastSeq, stream
	if info.State.Msgs == 0 || next > info.State.LastSeq {
		in.Store.MarkReplayed(stream)
	}
	// The consumer starts where both the fold and the stream do; the gap
	// between them is surfaced once this replica leads, and not again at
	// the first message.
	from := max(next, info.State.FirstSeq)
	in.lastSeq.Store(from - 1)

	leadCtx, stopLeading := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { in.lead(leadCtx, info, next) })
	wg.Go(func() { in.reportLive(leadCtx) })
	defer wg.Wait()
	defer stopLeading()

	consumer := jetstream.NewConsumer(in.JetStream, in.Stream)
	consumer.StreamCreated = info.Created
	consumer.OnError = func(reason string, _ error) { consumerErrorsTotal.WithLabelValues(reason).Inc() }
	consumer.BufferBytes = in.ConsumerBufferBytes
	consumer.OnBufferBytes = func(bytes int) { consumerBufferBytes.Set(float64(bytes)) }
	in.mu.Lock()
	in.consumer = consumer
	in.mu.Unlock()
	logr.FromContextOrDiscard(ctx).Info("Folding the stream", "stream", in.Stream, "from", from,
		"created", info.Created, "lastSequence", info.State.LastSeq, "leading", in.leads.Load())
	if err := consumer.Run(ctx, from, in.handle); err != nil {
		return fmt.Errorf("consuming stream %s: %w", in.Stream, err)
	}
	return nil
}

// lead waits until this replica leads, then writes for the fold of the
// stream info describes, which began at sequence next: it takes the cursor
// over, surfaces the events purged before the stream's first that the fold
// lacks, and commits the cursor, checkpoints the fold and looks for purges
// until ctx ends. The fold runs meanwhile, from before this replica leads.
func (in *Ingester) lead(ctx context.Context, info *natsjs.StreamInfo, next uint64) {
	select {
	case <-in.Elected:
	case <-ctx.Done():
		return
	}
	stream := store.Stream{Name: in.Stream, Created: info.Created}
	var pos cursor.Position
	for delay := time.Second; ; delay = min(2*delay, 30*time.Second) {
		var err error
		if pos, err = in.startCursor(ctx, stream); err == nil {
			in.setProblem(nil)
			break
		}
		// As after a lost Lease, the API server may be away: wait for it,
		// unready, rather than exit into a crash loop.
		in.setProblem(err)
		logr.FromContextOrDiscard(ctx).Error(err, "Taking the cursor over; retrying", "retryIn", delay)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
	}
	in.mu.Lock()
	in.leads.Store(true)
	held, about := in.held, in.cursorObject
	in.held = nil
	in.mu.Unlock()
	for _, w := range held {
		in.Recorder.Eventf(about, nil, corev1.EventTypeWarning, w.reason, "Project", "%s", w.note)
	}
	logr.FromContextOrDiscard(ctx).Info("Leading: writing the fold", "stream", in.Stream, "created", info.Created,
		"cursor", pos.Sequence, "folded", in.lastSeq.Load())
	if info.State.FirstSeq > next {
		in.gap(ctx, next, info.State.FirstSeq-1, "the projection cannot reflect their events")
	}
	var wg sync.WaitGroup
	wg.Go(func() { in.commitLoop(ctx, pos) })
	wg.Go(func() { in.watchPurges(ctx, info.Created, max(next, info.State.FirstSeq)) })
	if in.Checkpoints != nil {
		wg.Go(func() { in.checkpointLoop(ctx, next-1) })
	}
	wg.Wait()
}

// startCursor makes the cursor ConfigMap belong to stream, keeping its
// sequence when it already does: a cursor of an earlier stream of the same
// name starts again from 0, as its sequences numbered other events. It
// returns the position now stored.
func (in *Ingester) startCursor(ctx context.Context, stream store.Stream) (cursor.Position, error) {
	// A cursor that cannot be read is replaced below, and says nothing.
	prev, _, _ := in.Cursor.Load(ctx)
	pos, err := in.Cursor.Commit(ctx, cursor.Position{Stream: stream.Name, StreamCreated: stream.Created})
	if err != nil {
		return pos, err
	}
	cursorSequence.Set(float64(pos.Sequence))
	var cm corev1.ConfigMap
	if err := in.Reader.Get(ctx, in.Cursor.Key, &cm); err != nil {
		return pos, fmt.Errorf("reading cursor ConfigMap %s: %w", in.Cursor.Key, err)
	}
	in.mu.Lock()
	in.cursorObject = &cm
	in.mu.Unlock()
	if prev.Stream == stream.Name && !prev.StreamCreated.IsZero() && !prev.StreamCreated.Equal(stream.Created) {
		in.recreated(ctx, prev, stream)
	}
	return pos, nil
}

// recreated surfaces a stream found deleted and created again since the
// cursor was committed, while the operator ran or while it was down.
func (in *Ingester) recreated(ctx context.Context, prev cursor.Position, stream store.Stream) {
	logr.FromContextOrDiscard(ctx).Info("The stream was recreated: folding the new one from its first event",
		"stream", stream.Name, "created", stream.Created, "previouslyCreated", prev.StreamCreated, "previousCursor", prev.Sequence)
	streamRecreationsTotal.Inc()
	in.mu.Lock()
	about := in.cursorObject
	in.mu.Unlock()
	// Raised before this replica counts as leading, as it takes the cursor
	// over.
	in.Recorder.Eventf(about, nil, corev1.EventTypeWarning, cellosv1.StreamRecreatedReason, "Project",
		"Stream %s was recreated (created %s, the cursor was at sequence %d of the one created %s): folding it from its first event; objects only the old stream named keep their status until pruned",
		stream.Name, stream.Created.Format(time.RFC3339), prev.Sequence, prev.StreamCreated.Format(time.RFC3339))
}

// ensureStream waits for NATS, as the operator may start before it, and
// returns the stream's state.
func (in *Ingester) ensureStream(ctx context.Context) (*natsjs.StreamInfo, error) {
	log := logr.FromContextOrDiscard(ctx)
	get := jetstream.EnsureStream
	if in.NoCreateStream {
		get = jetstream.LookupStream
	}
	for delay := time.Second; ; delay = min(2*delay, 30*time.Second) {
		stream, err := get(ctx, in.JetStream, in.Stream)
		if err == nil {
			in.setProblem(nil)
			return stream.CachedInfo(), nil
		}
		if in.NoCreateStream && errors.Is(err, natsjs.ErrStreamNotFound) {
			err = fmt.Errorf("%w; the operator does not create it (--create-stream=false): waiting for it to be created", err)
		}
		in.setProblem(err)
		log.Error(err, "Cannot reach the stream; retrying", "stream", in.Stream, "retryIn", delay)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(delay):
		}
	}
}

// handle folds one message. It runs on the consumer's one goroutine, in
// stream order.
func (in *Ingester) handle(ctx context.Context, msg jetstream.Message) error {
	// A standby flushes nothing, so at the bound it would wait for good:
	// its fold is not bounded, and what lags on it is every object the
	// fold holds anyway, no more. Taking over, it writes them down to the
	// bound before it folds on.
	if in.leads.Load() {
		in.Store.AwaitRoom(ctx, func(unflushed int) { in.pause(ctx, unflushed) })
		in.resume(ctx)
	}
	if last := in.lastSeq.Load(); last != 0 && msg.Sequence > last+1 {
		in.gap(ctx, last+1, msg.Sequence-1, "the projection cannot reflect their events")
	}
	in.lastSeq.Store(msg.Sequence)
	out := in.Store.Apply(ctx, msg.Sequence, msg.Time, msg.Subject, msg.Header, msg.Payload)
	if msg.Sequence == in.replayTo {
		in.Store.MarkReplayed(in.stream)
	}
	eventsTotal.WithLabelValues(string(out.Family), string(out.Result)).Inc()
	in.observeStreamLast(msg.StreamLast)
	if out.Result == fold.ResultRejected {
		in.reject(ctx, out)
	}
	return nil
}

// pause reports that the fold stopped pulling the stream: too many objects
// wait for their status write, as when the API server is away.
func (in *Ingester) pause(ctx context.Context, unflushed int) {
	logr.FromContextOrDiscard(ctx).Info("Paused the fold: too many objects await their status write", "unflushed", unflushed)
	ingestPaused.Set(1)
	in.mu.Lock()
	in.paused = true
	in.mu.Unlock()
}

func (in *Ingester) resume(ctx context.Context) {
	in.mu.Lock()
	was := in.paused
	in.paused = false
	in.mu.Unlock()
	if was {
		logr.FromContextOrDiscard(ctx).Info("Resumed the fold")
		ingestPaused.Set(0)
	}
}

// gap surfaces sequences missing from the stream, purged or deleted, with
// what that costs the projection. It goes on with what remains.
func (in *Ingester) gap(ctx context.Context, first, last uint64, cost string) {
	logr.FromContextOrDiscard(ctx).Info("The stream has a gap: its events were purged or deleted", "firstMissing", first, "lastMissing", last, "cost", cost)
	streamGapsTotal.Inc()
	streamGapEventsTotal.Add(float64(last - first + 1))
	in.mu.Lock()
	in.lastGap = fmt.Sprintf("%d-%d", first, last)
	in.mu.Unlock()
	in.warn(cellosv1.StreamGapReason, "Stream sequences %d to %d are missing (purged or deleted): %s", first, last, cost)
}

// warning is a Warning Event held until this replica leads.
type warning struct{ reason, note string }

// warn raises a Warning Event on the cursor ConfigMap, on the leader only.
// Before this replica leads it holds the latest few, and raises them when
// it takes over: the fold starts before the Lease is won, even on a lone
// replica, and what it finds first must still be seen. A standby that
// stood by long raises again what the leader it replaces raised; the API
// server counts an Event repeated on one object as one. What warns is
// still logged and counted on every replica.
func (in *Ingester) warn(reason, note string, args ...any) {
	w := warning{reason: reason, note: fmt.Sprintf(note, args...)}
	in.mu.Lock()
	if !in.leads.Load() {
		in.held = append(in.held, w)[max(0, len(in.held)+1-heldWarnings):]
		in.mu.Unlock()
		return
	}
	about := in.cursorObject
	in.mu.Unlock()
	in.Recorder.Eventf(about, nil, corev1.EventTypeWarning, w.reason, "Project", "%s", w.note)
}

// watchPurges surfaces events purged from the stream after they were
// folded: the projection keeps them, but a restart without a checkpoint,
// which folds the stream from its first event, no longer can. A purge of events not yet folded
// shows as a jump in the sequences the consumer delivers instead.
func (in *Ingester) watchPurges(ctx context.Context, created time.Time, first uint64) {
	tick := time.NewTicker(purgeCheckInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		stream, err := in.JetStream.Stream(ctx, in.Stream)
		if err != nil {
			continue // the consumer reports why
		}
		info := stream.CachedInfo()
		if !info.Created.Equal(created) {
			return // recreated: the consumer ends this fold
		}
		if purgedTo := min(info.State.FirstSeq-1, in.lastSeq.Load()); purgedTo >= first {
			in.gap(ctx, first, purgedTo, "they were folded, but a restart cannot fold them again")
		}
		first = max(first, info.State.FirstSeq)
	}
}

// reportLive sets the live objects of the fold about once per commit
// interval until ctx ends, on every replica: a standby holds the fold too,
// and its memory follows it.
func (in *Ingester) reportLive(ctx context.Context) {
	tick := time.NewTicker(in.CommitInterval)
	defer tick.Stop()
	for {
		formations, cells := in.Store.Live()
		liveObjects.WithLabelValues(string(store.FormationKind)).Set(float64(formations))
		liveObjects.WithLabelValues(string(store.CellKind)).Set(float64(cells))
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (in *Ingester) observeStreamLast(seq uint64) {
	in.streamLast.Store(seq)
	streamLastSequence.Set(float64(seq))
}

// reject surfaces an event that cannot be used: in the log, in metrics, and
// as a Warning Event on the cursor ConfigMap. The stream moves on.
// The event id is the publisher's: it is quoted short, as the reason quotes
// every value it names, so that neither a log line nor an Event (whose note
// the API server caps at 1 KiB) grows with what a publisher sends.
func (in *Ingester) reject(ctx context.Context, out fold.Outcome) {
	eventID := cloudevent.Quote(out.EventID)
	logr.FromContextOrDiscard(ctx).Info("Rejected an event", "sequence", out.Seq, "eventID", eventID, "reason", out.Reason)
	if in.rejections.Allow() {
		in.warn(cellosv1.RejectedEventReason, "Skipped the event at stream sequence %d (id %s): %s", out.Seq, eventID, out.Reason)
	}
}

// commitLoop commits the watermark about once per interval, and once more
// when ctx ends, so that a clean shutdown loses no progress.
func (in *Ingester) commitLoop(ctx context.Context, pos cursor.Position) {
	log := logr.FromContextOrDiscard(ctx)
	tick := time.NewTicker(in.CommitInterval)
	defer tick.Stop()
	commit := func(ctx context.Context) {
		w := in.Store.Watermark()
		if last := in.streamLast.Load(); last >= w {
			lagEvents.Set(float64(last - w))
		}
		unflushedObjects.Set(float64(in.Store.Unflushed()))
		in.mu.Lock()
		gap := in.lastGap
		in.mu.Unlock()
		if w <= pos.Sequence && gap == pos.LastGap {
			return
		}
		next := pos
		next.Sequence = max(w, pos.Sequence)
		next.LastGap = gap
		stored, err := in.Cursor.Commit(ctx, next)
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

func (in *Ingester) setProblem(err error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.problem = err
}

// Healthy is the readiness of the projection: nil while the replica can
// reach the stream and consume it; on the leader, while it is not held back
// by status writes that cannot keep up; on a standby, once its fold has
// caught up with the stream, so that it would take over warm (a rolling
// update waits for that before it stops the leader).
func (in *Ingester) Healthy() error {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.problem != nil {
		return in.problem
	}
	if in.paused {
		return errors.New("the fold is paused: too many objects await their status write (is the API server reachable?)")
	}
	if in.consumer != nil {
		if err := in.consumer.Healthy(); err != nil {
			return err
		}
	}
	if !in.leads.Load() && !in.caughtUp() {
		return errors.New("standing by: the fold has not caught up with the stream yet")
	}
	return nil
}

// caughtUp tells whether the fold has reached the end the stream had when
// it began.
func (in *Ingester) caughtUp() bool {
	replayed, _ := in.Store.Replayed()
	select {
	case <-replayed:
		return true
	default:
		return false
	}
}
