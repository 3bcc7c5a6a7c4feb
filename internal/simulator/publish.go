package simulator

import (
	"context"
	"fmt"
	"iter"
	"math"
	"time"

	natsjs "github.com/nats-io/nats.go/jetstream"
)

// maxPendingAcks bounds the messages published but not yet acknowledged:
// enough to keep the connection busy when unpaced, few enough that a failing
// server stops the publisher quickly and little is left unconfirmed.
const maxPendingAcks = 256

// ackTimeout is how long one acknowledgement may take before the server is
// deemed unresponsive. The client's own async publish has no timeout unless
// its JetStream context was made with one, and Publish must not hang.
const ackTimeout = 10 * time.Second

// Publish publishes events to JetStream in order, at most rate events per
// second (0: as fast as the server acknowledges), and returns how many the
// server acknowledged.
//
// It stops when events is exhausted or ctx ends, and in both cases waits
// for the acknowledgements still outstanding, so the count is exact; ctx
// ending is a normal stop, not an error (check ctx.Err() to tell). It stops
// at the first message the server does not acknowledge and returns why: an
// unacknowledged event is missing from the stream, and the events after it
// would fold into a state the real producers could never have caused.
func Publish(ctx context.Context, js natsjs.JetStream, events iter.Seq[Event], rate float64) (int, error) {
	if rate < 0 || math.IsNaN(rate) {
		return 0, fmt.Errorf("invalid publish rate %v: want events per second, 0 for unpaced", rate)
	}
	var interval time.Duration
	if rate > 0 {
		interval = time.Duration(float64(time.Second) / rate)
	}

	// Pull rather than range, so that pacing waits before an event is taken:
	// a source that logs what it yields then logs at publishing time, and an
	// event taken is never dropped by a stop during the wait.
	next, stop := iter.Pull(events)
	defer stop()
	w := ackWindow{js: js}
	begin := time.Now()
	var err error
	for sent := 0; ; sent++ {
		// Pace against the start time, not the previous event, so that slow
		// acknowledgements or timer lateness do not lower the rate.
		if interval > 0 && !sleepUntil(ctx, begin.Add(time.Duration(sent)*interval)) {
			break
		}
		if ctx.Err() != nil {
			break
		}
		ev, ok := next()
		if !ok {
			break
		}
		if err = w.publish(ev); err != nil {
			break
		}
	}
	if derr := w.drain(); err == nil {
		err = derr
	}
	return w.acked, err
}

// sleepUntil waits until t and reports whether ctx was still live then.
func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}

// ackWindow publishes asynchronously with at most maxPendingAcks messages
// unacknowledged, checking every acknowledgement in publish order.
type ackWindow struct {
	js      natsjs.JetStream
	pending []natsjs.PubAckFuture // oldest first
	acked   int
	err     error // first failed acknowledgement
}

// publish sends ev, first waiting for the oldest acknowledgement when the
// window is full. It returns the first failure seen so far.
func (w *ackWindow) publish(ev Event) error {
	if len(w.pending) == maxPendingAcks {
		w.await(w.pending[0])
		w.pending = w.pending[1:]
		if w.err != nil {
			return w.err
		}
	}
	f, err := w.js.PublishAsync(ev.Subject, ev.Payload)
	if err != nil {
		return fmt.Errorf("publish to %s: %w", ev.Subject, err)
	}
	w.pending = append(w.pending, f)
	return nil
}

// drain waits for every outstanding acknowledgement and returns the first
// failure.
func (w *ackWindow) drain() error {
	for _, f := range w.pending {
		w.await(f)
	}
	w.pending = nil
	return w.err
}

// await waits for one acknowledgement, counting it or recording the first
// failure.
func (w *ackWindow) await(f natsjs.PubAckFuture) {
	timer := time.NewTimer(ackTimeout)
	defer timer.Stop()
	var err error
	select {
	case <-f.Ok():
		w.acked++
		return
	case err = <-f.Err():
	case <-timer.C:
		err = fmt.Errorf("no acknowledgement within %s", ackTimeout)
	}
	if w.err == nil {
		w.err = fmt.Errorf("publish to %s: %w", f.Msg().Subject, err)
	}
}
