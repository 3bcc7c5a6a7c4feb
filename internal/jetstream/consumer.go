package jetstream

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"
)

// Defaults for the zero values of the Consumer fields.
const (
	// DefaultBatchSize is how many messages one pull request asks for: large
	// enough to keep replay of a long stream fast, small enough that a slow
	// handler does not make the client buffer much.
	DefaultBatchSize = 500
	// DefaultBufferBytes is how many bytes one pull request asks for: 16
	// events of the largest size the created stream accepts. A batch of
	// large events then still comes in one request, and the client's buffer,
	// at most about two requests, stays a small part of the operator's
	// memory (the chart's limit is 512 MiB) whatever the stream holds.
	DefaultBufferBytes = 16 * DefaultMaxMsgSize
	// DefaultCheckInterval is how often a running consumer is verified against
	// the server. Two checks in a row without progress while messages are
	// pending count as a stall, so a silently stuck consumer is replaced
	// within about twice this interval.
	DefaultCheckInterval = 15 * time.Second
	// DefaultMinBackoff is the first wait before recreating a failed consumer.
	DefaultMinBackoff = 500 * time.Millisecond
	// DefaultMaxBackoff caps the wait between attempts to recreate a consumer,
	// so recovery after a long outage happens within this time.
	DefaultMaxBackoff = 30 * time.Second
)

// Reasons passed to Consumer.OnError. They are stable, low-cardinality tokens
// meant to be used as a metric label.
const (
	// ReasonDisconnected: the NATS connection was lost; the client reconnects
	// on its own.
	ReasonDisconnected = "disconnected"
	// ReasonReconnected: the NATS connection is back. Counted so that flapping
	// connections show up in metrics.
	ReasonReconnected = "reconnected"
	// ReasonClosed: the NATS connection is closed for good; nothing is
	// consumed until the process gets a new connection.
	ReasonClosed = "closed"
	// ReasonReset: nats.go recreated the ordered consumer by itself (after a
	// missed heartbeat, a sequence gap, a deleted consumer or a reconnect), or
	// the consumer disappeared from the server.
	ReasonReset = "reset"
	// ReasonHeartbeat: the server stopped sending heartbeats.
	ReasonHeartbeat = "heartbeat"
	// ReasonStreamNotFound: the stream does not exist (deleted, or not yet
	// created).
	ReasonStreamNotFound = "streamNotFound"
	// ReasonCreate: creating the ordered consumer failed for another reason.
	ReasonCreate = "create"
	// ReasonConsume: reading from the consumer failed for another reason.
	ReasonConsume = "consume"
	// ReasonCheck: the periodic check of the consumer against the server
	// failed.
	ReasonCheck = "check"
	// ReasonStalled: messages are pending on the server but none arrived for
	// two checks in a row; the consumer is replaced.
	ReasonStalled = "stalled"
	// ReasonStreamBehind: the stream's last sequence is below the sequences
	// already handled, although it is the stream StreamCreated names (or the
	// check is disabled). A stream restored from an older backup keeps its
	// creation time, so this is the only sign of the rollback; it also flags
	// a start sequence that does not belong to the stream. Messages below the
	// cursor will not be delivered.
	ReasonStreamBehind = "streamBehind"
)

const (
	// deliveryOverhead is what the server counts against a pull request's
	// byte limit beside a message's headers and payload: its subject
	// (bounded by the server's max_control_line, 4 KiB by default) and its
	// reply subject.
	deliveryOverhead = 64 << 10

	createTimeout = 10 * time.Second
	checkTimeout  = 5 * time.Second
	deleteTimeout = 2 * time.Second
)

// ErrStreamRecreated is wrapped by the error Run returns when the stream is
// not the one created at Consumer.StreamCreated: it was deleted and created
// again under the same name, so its sequences number other messages than the
// ones the caller's state was built from, and continuing from the caller's
// last sequence would skip or misapply events. The caller rebuilds its state from
// the new stream's first sequence.
var ErrStreamRecreated = errors.New("stream was recreated")

var (
	errConnectionLost = errors.New("connection lost")
	errReconnected    = errors.New("reconnected to NATS")
	errNotConsuming   = errors.New("ordered consumer not created yet")
	errNotStarted     = errors.New("consumer has not been started")
	errStopped        = errors.New("consumer has stopped")
)

// Message is one stream message handed to the Run callback.
type Message struct {
	// Sequence is the stream sequence, the value the cursor ConfigMap
	// stores once every event up to it is reflected in status.
	Sequence uint64
	// Time is when the stream stored the message: the clock final objects
	// expire by, the same on every replay.
	Time time.Time
	// Subject is the subject the message was published on.
	Subject string
	// Payload is the message body.
	Payload []byte
	// Header holds the message's NATS headers, nil when it has none. It is a
	// plain map rather than nats.Header so that packages handling messages
	// need not depend on the NATS client.
	Header map[string][]string
	// StreamLast is the stream's last sequence as the server saw it when it
	// delivered this message (Sequence plus the messages still pending for the
	// consumer), so the caller can export lag without another request. With a
	// FilterSubject it only counts matching messages.
	StreamLast uint64
}

// Consumer reads a stream in stream order, one message at a time, with a
// nats.go ordered consumer (an ephemeral, in-memory, ack-less consumer that
// nats.go recreates on gaps and missed heartbeats). The ordered consumer is
// the right fit because the start point is chosen by the caller (the ingester
// always starts at the stream's first sequence), not kept as server state, so nothing has to be acknowledged or cleaned up on the server.
//
// Consumer adds what the projection needs on top: start at a given sequence,
// recovery from failures nats.go gives up on (stream deleted, JetStream not
// ready after a restart, connection closed), a stall watchdog, detection of a
// stream recreated under the same name (which nats.go would silently resume
// on), and reporting of every problem through logs, OnError and Healthy.
//
// Set JS and Stream (or use NewConsumer); the other fields are optional and
// must not be changed while Run is running.
type Consumer struct {
	// JS is the JetStream client; its connection's status drives Healthy.
	JS natsjs.JetStream
	// Stream is the name of the stream to read.
	Stream string
	// FilterSubject optionally restricts delivery to matching subjects. Empty
	// delivers every message of the stream.
	FilterSubject string
	// StreamCreated is the creation time of the stream the caller's state
	// (and so its start sequence) belongs to. When set, Run checks it each
	// time it creates a consumer, each time nats.go recreates one, and at
	// every watchdog check, and returns an error wrapping ErrStreamRecreated
	// as soon as the stream was created at another time. Zero disables the
	// check.
	StreamCreated time.Time
	// BatchSize is the number of messages per pull request
	// (DefaultBatchSize when 0).
	BatchSize int
	// BufferBytes bounds the bytes of one pull request, and so the client's
	// buffer (DefaultBufferBytes when 0). It is raised to fit the largest
	// message the server can deliver (its max_payload), as a request too
	// small for the next message would stall the consumer.
	BufferBytes int
	// CheckInterval is the period of the stall watchdog
	// (DefaultCheckInterval when 0).
	CheckInterval time.Duration
	// MinBackoff and MaxBackoff bound the exponential wait between attempts to
	// recreate a failed consumer (DefaultMinBackoff, DefaultMaxBackoff when 0).
	MinBackoff, MaxBackoff time.Duration
	// OnError, when set, is called for every problem Run observes, with one of
	// the Reason constants and an error describing it (never nil). It is meant
	// for metrics; it may be called concurrently from several goroutines and
	// must not block.
	OnError func(reason string, err error)
	// OnBufferBytes, when set, is called with the byte bound of the pull
	// requests each time a consumer starts pulling, for a metric.
	OnBufferBytes func(bytes int)

	running atomic.Bool   // a Run is active
	idle    atomic.Bool   // Run waits for the next message (is not inside handle)
	handled atomic.Uint64 // last sequence handle accepted (start sequence - 1 before the first)
	errSet  atomic.Bool   // consumerErr != nil; lets the per-message path skip the lock

	mu          sync.Mutex
	state       runState
	consumerErr error // current consumer problem, nil while consuming works
}

type runState int

const (
	stateNew runState = iota
	stateRunning
	stateStopped
)

// NewConsumer returns a Consumer of stream with default settings; callers
// adjust the exported fields before calling Run.
func NewConsumer(js natsjs.JetStream, stream string) *Consumer {
	return &Consumer{JS: js, Stream: stream}
}

// Healthy reports whether the consumer is able to deliver messages, for a
// readiness or liveness probe. It returns nil while messages flow or while
// the consumer is idle on a healthy connection; while the NATS connection is
// not connected, an error naming only its status (why is for
// natsconn.Conn.Healthy to say); the last problem while the consumer cannot
// be (re)created or is stalled; and an error before Run starts or after it
// returns.
func (c *Consumer) Healthy() error {
	c.mu.Lock()
	state, consumerErr := c.state, c.consumerErr
	c.mu.Unlock()
	switch state {
	case stateNew:
		return errNotStarted
	case stateStopped:
		return errStopped
	}
	if status := c.JS.Conn().Status(); status != nats.CONNECTED {
		// Why is the connection's to say (natsconn.Conn.Healthy), and its
		// log's: the outage is logged there, once.
		return fmt.Errorf("NATS connection is %s", status)
	}
	return consumerErr
}

// Run delivers the stream's messages to handle in stream order, one at a time
// and from the calling goroutine, starting at startSeq (0 or 1 for the whole
// stream). Every sequence is handed to handle at most once per Run and none
// present in the stream is skipped: after any failure, consumption resumes
// right after the last message handle accepted.
//
// Failures of the consumer do not end Run; it reports them (log from ctx,
// OnError, Healthy) and retries with exponential backoff until ctx is done,
// because a consumer that silently stops is worse than one that complains.
// Run returns nil when ctx is done, a wrapped error when handle returns one
// (the message it failed on is not counted as handled), and an error wrapping
// ErrStreamRecreated when the stream is not the one StreamCreated names; no
// message of such a stream is handed to handle. Only one Run may be active
// per Consumer.
func (c *Consumer) Run(ctx context.Context, startSeq uint64, handle func(context.Context, Message) error) error {
	if c.JS == nil || c.Stream == "" {
		return errors.New("run consumer: JetStream client and stream name are required")
	}
	if handle == nil {
		return errors.New("run consumer: message handler is required")
	}
	if !c.running.CompareAndSwap(false, true) {
		return errors.New("run consumer: already running")
	}
	defer c.running.Store(false)

	log := logr.FromContextOrDiscard(ctx).WithValues("stream", c.Stream)
	next := max(startSeq, 1)
	c.handled.Store(next - 1)
	c.mu.Lock()
	c.state = stateRunning
	c.mu.Unlock()
	c.setConsumerErr(errNotConsuming)
	defer func() {
		c.mu.Lock()
		c.state = stateStopped
		c.mu.Unlock()
	}()

	nc := c.JS.Conn()
	statusCh := nc.StatusChanged(nats.DISCONNECTED, nats.RECONNECTING, nats.CONNECTED, nats.CLOSED)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.watchConnection(nc, statusCh)
	}()
	defer func() {
		nc.RemoveStatusListener(statusCh) // closes statusCh, ending watchConnection
		wg.Wait()
	}()

	backoff := c.minBackoff()
	for {
		progressed, err := c.consume(ctx, log, &next, handle)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
		if progressed {
			backoff = c.minBackoff()
		}
		log.Info("Restarting ordered consumer", "nextSequence", next, "backoff", backoff.String())
		timer := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-timer.C:
		}
		backoff = min(2*backoff, c.maxBackoff())
	}
}

// consume runs one ordered consumer from *next until it fails (reported here,
// returns nil), ctx is done (returns nil), or handle fails or the stream
// turns out to be recreated (returns the wrapped error). progressed tells
// whether handle accepted any message.
func (c *Consumer) consume(ctx context.Context, log logr.Logger, next *uint64,
	handle func(context.Context, Message) error,
) (progressed bool, _ error) {
	cons, err := c.createConsumer(ctx, *next)
	if err != nil {
		if ctx.Err() == nil {
			err = fmt.Errorf("create ordered consumer on stream %q from sequence %d: %w", c.Stream, *next, err)
			c.fail(log, classify(err, ReasonCreate), "Cannot create ordered consumer", err)
		}
		return false, nil
	}
	defer c.deleteConsumer(cons)
	if ok, err := c.verifyStream(ctx, log); !ok {
		return false, err
	}

	bufferBytes := c.bufferBytes()
	iter, err := cons.Messages(natsjs.PullMaxMessagesWithBytesLimit(c.batchSize(), bufferBytes))
	if err != nil {
		err = fmt.Errorf("start reading stream %q from sequence %d: %w", c.Stream, *next, err)
		c.fail(log, classify(err, ReasonCreate), "Cannot create ordered consumer", err)
		return false, nil
	}
	defer iter.Stop()

	sess := &session{name: consumerName(cons)}
	c.setConsumerErr(nil)
	if c.OnBufferBytes != nil {
		c.OnBufferBytes(bufferBytes)
	}
	log.Info("Consuming stream", "fromSequence", *next, "consumer", sess.name, "bufferBytes", bufferBytes)

	// The watchdog can end this consumer by canceling sctx.
	sctx, stop := context.WithCancelCause(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.watch(sctx, stop, log, cons, sess)
	}()
	defer func() {
		stop(nil)
		wg.Wait()
	}()

	return c.deliver(ctx, sctx, log, iter, sess, next, handle)
}

// deliver hands the messages of one ordered consumer to handle until it
// fails, sctx ends (the watchdog or the caller stopped it) or handle fails.
// handle runs with ctx, which the watchdog does not cancel, so that it never
// sees a message half-abandoned.
func (c *Consumer) deliver(ctx, sctx context.Context, log logr.Logger, iter natsjs.MessagesContext,
	sess *session, next *uint64, handle func(context.Context, Message) error,
) (progressed bool, _ error) {
	seen := sess.name
	first := true
	for {
		c.idle.Store(true)
		msg, err := iter.Next(natsjs.NextContext(sctx))
		c.idle.Store(false)
		if sctx.Err() != nil {
			// ctx is done, or the watchdog stopped this consumer and reported
			// why. A message that came along is left for the next consumer.
			// Only a recreated stream ends Run; after a stall it retries.
			if cause := context.Cause(sctx); errors.Is(cause, ErrStreamRecreated) {
				return progressed, cause
			}
			return progressed, nil
		}
		if err != nil {
			err = fmt.Errorf("read stream %q after sequence %d: %w", c.Stream, *next-1, err)
			c.fail(log, classify(err, ReasonConsume), "Ordered consumer failed", err)
			return progressed, nil
		}
		meta, err := msg.Metadata()
		if err != nil {
			err = fmt.Errorf("read metadata of message after sequence %d: %w", *next-1, err)
			c.fail(log, ReasonConsume, "Ordered consumer failed", err)
			return progressed, nil
		}
		seq := meta.Sequence.Stream
		if seq < *next {
			// nats.go resumes after the last message it returned, so this
			// should not happen; the guard keeps the at-most-once promise.
			log.Info("Skipped message that was already handled", "sequence", seq, "nextSequence", *next)
			continue
		}
		if meta.Consumer != seen {
			seen = meta.Consumer
			sess.changed(c, log, seen)
			// nats.go recreated the consumer by itself, on whatever stream
			// now has the name: check it before handling what it delivers.
			if ok, err := c.verifyStream(sctx, log); !ok {
				return progressed, err
			}
		}
		if first && seq > *next && c.FilterSubject == "" {
			log.Info("Stream has no messages between the start sequence and the first delivered one",
				"fromSequence", *next, "toSequence", seq-1)
		}
		first = false

		m := Message{
			Sequence:   seq,
			Time:       meta.Timestamp,
			Subject:    msg.Subject(),
			Payload:    msg.Data(),
			Header:     header(msg.Headers()),
			StreamLast: seq + meta.NumPending,
		}
		if err := handle(ctx, m); err != nil {
			return progressed, fmt.Errorf("handle message at stream sequence %d: %w", seq, err)
		}
		*next = seq + 1
		c.handled.Store(seq)
		progressed = true
		if c.errSet.Load() {
			c.setConsumerErr(nil)
		}
	}
}

// createConsumer creates an ordered consumer that starts at next.
func (c *Consumer) createConsumer(ctx context.Context, next uint64) (natsjs.Consumer, error) {
	cfg := natsjs.OrderedConsumerConfig{
		DeliverPolicy: natsjs.DeliverAllPolicy,
		// One attempt per internal reset: nats.go then returns a failed
		// reset as an error from Next, and we report it and retry with our
		// own backoff from our own cursor. With the default (unlimited
		// attempts) Next blocks without any error while the consumer cannot
		// be recreated (e.g. the stream is gone), ignoring its context, and
		// Stop blocks until the current backoff sleep (up to 10s) ends.
		MaxResetAttempts: 1,
	}
	if next > 1 {
		cfg.DeliverPolicy = natsjs.DeliverByStartSequencePolicy
		cfg.OptStartSeq = next
	}
	if c.FilterSubject != "" {
		cfg.FilterSubjects = []string{c.FilterSubject}
	}
	ctx, cancel := context.WithTimeout(ctx, createTimeout)
	defer cancel()
	return c.JS.OrderedConsumer(ctx, c.Stream, cfg)
}

// deleteConsumer removes the current server-side consumer of an abandoned
// ordered consumer. Best effort: the server also drops it after its inactive
// threshold.
func (c *Consumer) deleteConsumer(cons natsjs.Consumer) {
	name := consumerName(cons)
	if name == "" || c.JS.Conn().Status() != nats.CONNECTED {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), deleteTimeout)
	defer cancel()
	_ = c.JS.DeleteConsumer(ctx, c.Stream, name)
}

// header converts NATS headers to a Message.Header, normalizing an empty
// header to nil so that callers can test for "no headers" with one check.
func header(h nats.Header) map[string][]string {
	if len(h) == 0 {
		return nil
	}
	return h
}

func consumerName(cons natsjs.Consumer) string {
	if info := cons.CachedInfo(); info != nil {
		return info.Name
	}
	return ""
}

// watch is the stall watchdog of one ordered consumer. Every CheckInterval
// it asks the server for the stream and the consumer. It clears a previous
// problem when the consumer is fine, reports consumers nats.go recreated,
// flags a stream that fell behind the cursor, and stops the consumer
// (through stop) when the stream was recreated, or when two checks in a row
// find Run idle, no progress and messages pending, or fail.
func (c *Consumer) watch(ctx context.Context, stop context.CancelCauseFunc, log logr.Logger,
	cons natsjs.Consumer, sess *session,
) {
	ticker := time.NewTicker(c.checkInterval())
	defer ticker.Stop()
	nc := c.JS.Conn()
	prev := c.handled.Load()
	suspect := 0
	behind := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		if nc.Status() != nats.CONNECTED {
			// Logged by the connection's owner; nats.go resumes after reconnect.
			suspect = 0
			continue
		}
		idle := c.idle.Load()
		handled := c.handled.Load()
		progressed := handled != prev
		prev = handled

		name, pending, streamLast, err := c.inspect(ctx, cons)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, ErrStreamRecreated) {
			stop(err) // Run returns it
			return
		}
		if err != nil {
			c.fail(log, classify(err, ReasonCheck), "Cannot check ordered consumer", err)
		} else {
			sess.changed(c, log, name)
			if streamLast < handled {
				if !behind {
					behind = true
					err := fmt.Errorf("stream %q ends at sequence %d, before the handled sequence %d; was it recreated", c.Stream, streamLast, handled)
					c.fail(log, ReasonStreamBehind, "Stream is behind the consumer", err)
				}
				suspect = 0
				continue
			}
			behind = false
			if pending == 0 || !idle || progressed {
				c.setConsumerErr(nil)
				suspect = 0
				continue
			}
		}
		if !idle || progressed {
			suspect = 0
			continue
		}
		if suspect++; suspect < 2 {
			continue
		}
		err = fmt.Errorf("no message from stream %q after sequence %d for %s although messages are pending", c.Stream, handled, 2*c.checkInterval())
		c.fail(log, ReasonStalled, "Ordered consumer stalled", err)
		stop(err)
		return
	}
}

// inspect returns the current server-side consumer name, its pending count
// and the stream's last sequence. The stream comes first so that a recreated
// stream is recognized even when the consumer vanished with the old one.
func (c *Consumer) inspect(ctx context.Context, cons natsjs.Consumer) (name string, pending, streamLast uint64, _ error) {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	stream, err := c.streamInfo(ctx)
	if err != nil {
		return "", 0, 0, err
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return "", 0, 0, fmt.Errorf("get ordered consumer info of stream %q: %w", c.Stream, err)
	}
	return info.Name, info.NumPending, stream.State.LastSeq, nil
}

// streamInfo returns the stream's info, or an error wrapping
// ErrStreamRecreated when StreamCreated is set and the stream was created at
// another time.
func (c *Consumer) streamInfo(ctx context.Context) (*natsjs.StreamInfo, error) {
	stream, err := c.JS.Stream(ctx, c.Stream)
	if err != nil {
		return nil, fmt.Errorf("get stream %q info: %w", c.Stream, err)
	}
	info := stream.CachedInfo()
	if !c.StreamCreated.IsZero() && !info.Created.Equal(c.StreamCreated) {
		return nil, fmt.Errorf("stream %q was created at %s, but the consumer's state belongs to the one created at %s: %w",
			c.Stream, info.Created.UTC().Format(time.RFC3339Nano), c.StreamCreated.UTC().Format(time.RFC3339Nano), ErrStreamRecreated)
	}
	return info, nil
}

// verifyStream checks, unless StreamCreated is zero, that the stream is the
// one created at StreamCreated, before a new consumer's messages are handled.
// It returns ok false when the consumer must be abandoned: with an error
// wrapping ErrStreamRecreated, which ends Run, or with nil when the check
// failed otherwise (reported here) or ctx is done, so that Run retries.
func (c *Consumer) verifyStream(ctx context.Context, log logr.Logger) (ok bool, _ error) {
	if c.StreamCreated.IsZero() {
		return true, nil
	}
	checkCtx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	_, err := c.streamInfo(checkCtx)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, ErrStreamRecreated):
		return false, err
	case ctx.Err() == nil:
		c.fail(log, classify(err, ReasonCheck), "Cannot check stream", err)
	}
	return false, nil
}

// watchConnection counts NATS connection state changes (OnError) until ch is
// closed. It logs none of them: the connection's owner (natsconn.Conn)
// logs its state once for each change, with the reason, so that an outage
// is logged once however many clients share the connection.
func (c *Consumer) watchConnection(nc *nats.Conn, ch chan nats.Status) {
	connected := nc.IsConnected()
	for status := range ch {
		switch status {
		case nats.DISCONNECTED, nats.RECONNECTING:
			if !connected {
				continue
			}
			connected = false
			cause := nc.LastError()
			if cause == nil {
				cause = errConnectionLost
			}
			c.emit(ReasonDisconnected, fmt.Errorf("lost connection to NATS: %w", cause))
		case nats.CONNECTED:
			if connected {
				continue
			}
			connected = true
			c.emit(ReasonReconnected, errReconnected)
		case nats.CLOSED:
			connected = false
			c.emit(ReasonClosed, fmt.Errorf("NATS connection closed: %w", nats.ErrConnectionClosed))
		}
	}
}

// fail records err as the consumer's current problem and reports it.
func (c *Consumer) fail(log logr.Logger, reason, msg string, err error) {
	c.setConsumerErr(err)
	log.Error(err, msg, "reason", reason)
	c.emit(reason, err)
}

func (c *Consumer) emit(reason string, err error) {
	if c.OnError != nil {
		c.OnError(reason, err)
	}
}

func (c *Consumer) setConsumerErr(err error) {
	c.mu.Lock()
	c.consumerErr = err
	c.errSet.Store(err != nil)
	c.mu.Unlock()
}

func (c *Consumer) batchSize() int {
	if c.BatchSize > 0 {
		return c.BatchSize
	}
	return DefaultBatchSize
}

// bufferBytes is the byte bound of each pull request: BufferBytes, raised
// to fit a message of the connected server's max_payload.
func (c *Consumer) bufferBytes() int {
	bytes := c.BufferBytes
	if bytes <= 0 {
		bytes = DefaultBufferBytes
	}
	return max(bytes, int(c.JS.Conn().MaxPayload())+deliveryOverhead)
}

func (c *Consumer) checkInterval() time.Duration {
	if c.CheckInterval > 0 {
		return c.CheckInterval
	}
	return DefaultCheckInterval
}

func (c *Consumer) minBackoff() time.Duration {
	if c.MinBackoff > 0 {
		return c.MinBackoff
	}
	return DefaultMinBackoff
}

func (c *Consumer) maxBackoff() time.Duration {
	if c.MaxBackoff > 0 {
		return max(c.MaxBackoff, c.minBackoff())
	}
	return max(DefaultMaxBackoff, c.minBackoff())
}

// session tracks the server-side consumer behind one ordered consumer, so a
// recreation by nats.go is reported once whether Run or the watchdog sees it
// first.
type session struct {
	mu   sync.Mutex
	name string
}

func (s *session) changed(c *Consumer, log logr.Logger, name string) {
	s.mu.Lock()
	old := s.name
	s.name = name
	s.mu.Unlock()
	if old == name || old == "" || name == "" {
		return
	}
	err := fmt.Errorf("server-side consumer %s replaced by %s: %w", old, name, natsjs.ErrOrderedConsumerReset)
	log.Info("Ordered consumer was recreated", "previousConsumer", old, "consumer", name, "reason", ReasonReset)
	c.emit(ReasonReset, err)
}

// classify maps err to a Reason, or fallback when no specific one applies.
func classify(err error, fallback string) string {
	switch {
	case errors.Is(err, natsjs.ErrStreamNotFound):
		return ReasonStreamNotFound
	case errors.Is(err, natsjs.ErrNoHeartbeat):
		return ReasonHeartbeat
	case errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, natsjs.ErrConnectionClosed):
		return ReasonClosed
	case errors.Is(err, natsjs.ErrConsumerDeleted), errors.Is(err, natsjs.ErrConsumerNotFound),
		errors.Is(err, natsjs.ErrOrderedConsumerReset):
		return ReasonReset
	}
	return fallback
}
