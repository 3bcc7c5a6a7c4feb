package jetstream

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"
)

// newTestConsumer returns a consumer with short intervals so recovery paths
// run quickly in tests.
func newTestConsumer(js natsjs.JetStream, errs *errorLog) *Consumer {
	c := NewConsumer(js, testStream)
	c.CheckInterval = 500 * time.Millisecond
	c.MinBackoff = 50 * time.Millisecond
	c.MaxBackoff = time.Second
	c.OnError = errs.onError
	return c
}

func TestRunDeliversEverythingFromStart(t *testing.T) {
	for _, start := range []uint64{0, 1} {
		t.Run(fmt.Sprintf("start=%d", start), func(t *testing.T) {
			_, js := setup(t)
			const n = 1000
			publish(t, js, 0, n)

			c := newTestConsumer(js, &errorLog{})
			if err := c.Healthy(); err == nil {
				t.Fatal("Healthy before Run: got nil, want an error")
			}
			rec := &recorder{}
			stop := startRun(t, c, start, rec.handle)
			eventually(t, "all messages handled", func() bool { return rec.len() >= n })
			eventually(t, "healthy", func() bool { return c.Healthy() == nil })
			if err := stop(); err != nil {
				t.Fatalf("Run after cancel: got %v, want nil", err)
			}
			rec.requireSequences(t, 1, n)
			for i, m := range rec.msgs {
				if want := payload(i); string(m.Payload) != string(want) {
					t.Fatalf("message %d payload: got %s, want %s", m.Sequence, m.Payload, want)
				}
				if want := fmt.Sprintf("cellos.events.test.%d", i%7); m.Subject != want {
					t.Fatalf("message %d subject: got %s, want %s", m.Sequence, m.Subject, want)
				}
				if m.StreamLast != n {
					t.Fatalf("message %d StreamLast: got %d, want %d", m.Sequence, m.StreamLast, n)
				}
				if m.Header != nil {
					t.Fatalf("message %d published without headers: got Header %v, want nil", m.Sequence, m.Header)
				}
			}
			if err := c.Healthy(); err == nil {
				t.Fatal("Healthy after Run returned: got nil, want an error")
			}
		})
	}
}

func TestRunDeliversHeaders(t *testing.T) {
	_, js := setup(t)
	want := map[string][]string{
		"Ce-Type":     {"dev.cellos.events.cell.lifecycle.v1.started"},
		"X-Multi":     {"one", "two"},
		"Nats-Msg-Id": {"event-1"},
	}
	msg := nats.NewMsg("cellos.events.test.0")
	msg.Data = payload(0)
	msg.Header = nats.Header(want)
	if _, err := js.PublishMsg(testContext(t), msg); err != nil {
		t.Fatal(err)
	}

	rec := &recorder{}
	startRun(t, newTestConsumer(js, &errorLog{}), 0, rec.handle)
	eventually(t, "message handled", func() bool { return rec.len() >= 1 })
	if got := rec.msgs[0].Header; !maps.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("Header: got %v, want %v", got, want)
	}
}

func TestRunFromStartSequence(t *testing.T) {
	_, js := setup(t)
	publish(t, js, 0, 100)

	rec := &recorder{}
	startRun(t, newTestConsumer(js, &errorLog{}), 42, rec.handle)
	eventually(t, "messages 42..100 handled", func() bool { return rec.len() >= 59 })

	// Messages published while Run waits are delivered too.
	publish(t, js, 100, 10)
	eventually(t, "messages 42..110 handled", func() bool { return rec.len() >= 69 })
	time.Sleep(100 * time.Millisecond) // would expose a duplicate delivered late
	rec.requireSequences(t, 42, 110)
}

func TestRunDeliversInOrderAcrossServerRestart(t *testing.T) {
	srv, js := setup(t)
	const n, m = 1000, 500
	publish(t, js, 0, n)

	errs := &errorLog{}
	c := newTestConsumer(js, errs)
	c.BatchSize = 100 // several pull batches are outstanding across the restart
	rec := &recorder{before: func(msg Message) error {
		if msg.Sequence <= 300 {
			time.Sleep(2 * time.Millisecond) // keep the restart in the middle of the stream
		}
		return nil
	}}
	startRun(t, c, 0, rec.handle)
	eventually(t, "first messages handled", func() bool { return rec.len() >= 50 })

	srv.Stop()
	eventually(t, "unhealthy while the server is down", func() bool { return c.Healthy() != nil })
	t.Logf("Healthy while down: %v", c.Healthy())
	if got := rec.len(); got >= n {
		t.Logf("all %d messages were handled before the server stopped; the restart is not mid-stream", got)
	}

	srv.Restart()
	eventually(t, "healthy after restart", func() bool { return c.Healthy() == nil })
	publish(t, js, n, m)
	eventually(t, "all messages handled", func() bool { return rec.len() >= n+m })
	time.Sleep(100 * time.Millisecond) // would expose a duplicate delivered late
	rec.requireSequences(t, 1, n+m)

	for i, msg := range rec.msgs {
		if want := payload(i); string(msg.Payload) != string(want) {
			t.Fatalf("message %d payload: got %s, want %s", msg.Sequence, msg.Payload, want)
		}
	}
	if errs.count(ReasonDisconnected) == 0 || errs.count(ReasonReconnected) == 0 {
		t.Fatalf("OnError reasons: got %v, want disconnected and reconnected", errs.reasons)
	}
	eventually(t, "healthy at the end", func() bool { return c.Healthy() == nil })
}

func TestHandleErrorStopsRun(t *testing.T) {
	_, js := setup(t)
	publish(t, js, 0, 10)

	boom := errors.New("boom")
	rec := &recorder{before: func(m Message) error {
		if m.Sequence == 5 {
			return boom
		}
		return nil
	}}
	c := newTestConsumer(js, &errorLog{})
	err := c.Run(testContext(t), 0, rec.handle)
	if !errors.Is(err, boom) {
		t.Fatalf("Run: got %v, want an error wrapping %v", err, boom)
	}
	rec.requireSequences(t, 1, 4)
	if err := c.Healthy(); err == nil {
		t.Fatal("Healthy after Run failed: got nil, want an error")
	}

	// The caller resumes at the message that failed.
	rec.before = nil
	startRun(t, c, 5, rec.handle)
	eventually(t, "remaining messages handled", func() bool { return rec.len() >= 10 })
	rec.requireSequences(t, 1, 10)
}

func TestRunRecoversAfterStreamDeleted(t *testing.T) {
	_, js := setup(t)
	ctx := testContext(t)
	publish(t, js, 0, 10)

	errs := &errorLog{}
	c := newTestConsumer(js, errs)
	rec := &recorder{}
	startRun(t, c, 0, rec.handle)
	eventually(t, "first messages handled", func() bool { return rec.len() >= 10 })

	if err := js.DeleteStream(ctx, testStream); err != nil {
		t.Fatal(err)
	}
	eventually(t, "stream not found reported", func() bool { return errs.count(ReasonStreamNotFound) > 0 })
	eventually(t, "unhealthy without stream", func() bool { return c.Healthy() != nil })
	t.Logf("Healthy without stream: %v", c.Healthy())

	// Recreate it continuing the sequence, as a restore would.
	cfg := DefaultStreamConfig(testStream)
	cfg.FirstSeq = 11
	recreateStream(t, js, cfg)
	publish(t, js, 10, 5)
	eventually(t, "messages after recreation handled", func() bool { return rec.len() >= 15 })
	rec.requireSequences(t, 1, 15)
	eventually(t, "healthy again", func() bool { return c.Healthy() == nil })
}

// TestRunDetectsRecreatedStream deletes and recreates the stream while the
// handler holds the last message of the first one, so that nats.go, which
// recreates its consumer lazily on the next read, resumes on the new stream
// from the old cursor. When the new stream holds fewer messages than were
// handled, nothing is delivered and only the watchdog can notice. When it
// holds more, they are delivered by the recreated consumer; the watchdog is
// kept out so that the check of that consumer must stop them before the
// handler sees one.
func TestRunDetectsRecreatedStream(t *testing.T) {
	const handled = 20
	for _, tc := range []struct {
		name          string
		republish     int
		checkInterval time.Duration
	}{
		{"fewer messages", 5, 100 * time.Millisecond},
		{"more messages", 50, time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, js := setup(t)
			ctx := testContext(t)
			publish(t, js, 0, handled)
			created := streamCreated(t, js)

			errs := &errorLog{}
			c := newTestConsumer(js, errs)
			c.CheckInterval = tc.checkInterval
			c.StreamCreated = created
			holding, release := make(chan struct{}), make(chan struct{})
			rec := &recorder{before: func(m Message) error {
				if m.Sequence == handled {
					close(holding)
					<-release
				}
				return nil
			}}
			done := make(chan error, 1)
			go func() { done <- c.Run(ctx, 0, rec.handle) }()
			select {
			case <-holding:
			case <-time.After(waitTimeout):
				t.Fatalf("the last message of the first stream was not handled within %s", waitTimeout)
			}

			if err := js.DeleteStream(ctx, testStream); err != nil {
				t.Fatal(err)
			}
			recreateStream(t, js, DefaultStreamConfig(testStream))
			recreated := streamCreated(t, js)
			publish(t, js, handled, tc.republish)
			close(release)

			var err error
			select {
			case err = <-done:
			case <-time.After(waitTimeout):
				t.Fatalf("Run did not return within %s after the stream was recreated", waitTimeout)
			}
			if !errors.Is(err, ErrStreamRecreated) {
				t.Fatalf("Run: got %v, want an error wrapping %v", err, ErrStreamRecreated)
			}
			for _, at := range []time.Time{created, recreated} {
				if ts := at.UTC().Format(time.RFC3339Nano); !strings.Contains(err.Error(), ts) {
					t.Fatalf("Run error %q does not name the creation time %s", err, ts)
				}
			}
			if errs.count(ReasonStalled) != 0 {
				t.Fatal("the recreated stream was only noticed through a stall")
			}
			rec.requireSequences(t, 1, handled)
			for i, m := range rec.msgs {
				if want := payload(i); string(m.Payload) != string(want) {
					t.Fatalf("message %d payload: got %s, want %s of the first stream", m.Sequence, m.Payload, want)
				}
			}
		})
	}
}

func TestRunRefusesStreamOfAnotherCreation(t *testing.T) {
	_, js := setup(t)
	publish(t, js, 0, 10)

	c := newTestConsumer(js, &errorLog{})
	c.StreamCreated = streamCreated(t, js).Add(-time.Hour) // the cursor of a stream that is gone
	rec := &recorder{}
	if err := c.Run(testContext(t), 5, rec.handle); !errors.Is(err, ErrStreamRecreated) {
		t.Fatalf("Run: got %v, want an error wrapping %v", err, ErrStreamRecreated)
	}
	if got := rec.len(); got != 0 {
		t.Fatalf("handled %d messages of a stream of another creation, want none", got)
	}
}

func TestHealthyReportsStreamBehindStartSequence(t *testing.T) {
	_, js := setup(t)
	publish(t, js, 0, 5)

	errs := &errorLog{}
	c := newTestConsumer(js, errs)
	c.CheckInterval = 100 * time.Millisecond
	rec := &recorder{}
	startRun(t, c, 100, rec.handle)
	eventually(t, "stream behind reported", func() bool { return errs.count(ReasonStreamBehind) > 0 })
	if err := c.Healthy(); err == nil {
		t.Fatal("Healthy with the stream behind the start sequence: got nil, want an error")
	}

	publish(t, js, 5, 100) // sequences 6..105
	eventually(t, "messages from the start sequence handled", func() bool { return rec.len() >= 6 })
	rec.requireSequences(t, 100, 105)
	eventually(t, "healthy once the stream caught up", func() bool { return c.Healthy() == nil })
}

func TestRunRejectsConcurrentRun(t *testing.T) {
	_, js := setup(t)
	c := newTestConsumer(js, &errorLog{})
	startRun(t, c, 0, (&recorder{}).handle)
	eventually(t, "healthy", func() bool { return c.Healthy() == nil })
	ctx, cancel := context.WithTimeout(testContext(t), time.Second)
	defer cancel()
	if err := c.Run(ctx, 0, (&recorder{}).handle); err == nil {
		t.Fatal("second concurrent Run: got nil, want an error")
	}
}

func TestRunRecoversFromDeletedConsumer(t *testing.T) {
	_, js := setup(t)
	ctx := testContext(t)
	publish(t, js, 0, 10)

	errs := &errorLog{}
	c := newTestConsumer(js, errs)
	rec := &recorder{}
	startRun(t, c, 0, rec.handle)
	eventually(t, "first messages handled", func() bool { return rec.len() >= 10 })

	// Delete the server-side consumer under the idle ordered consumer, as an
	// administrator or a server-side cleanup might.
	stream, err := js.Stream(ctx, testStream)
	if err != nil {
		t.Fatal(err)
	}
	names := stream.ConsumerNames(ctx)
	var deleted int
	for name := range names.Name() {
		if err := stream.DeleteConsumer(ctx, name); err != nil {
			t.Fatal(err)
		}
		deleted++
	}
	if err := names.Err(); err != nil || deleted == 0 {
		t.Fatalf("deleting consumers: deleted %d, err %v", deleted, err)
	}
	eventually(t, "recreation reported", func() bool { return errs.count(ReasonReset) > 0 })

	publish(t, js, 10, 5)
	eventually(t, "later messages handled", func() bool { return rec.len() >= 15 })
	time.Sleep(100 * time.Millisecond) // would expose a duplicate delivered late
	rec.requireSequences(t, 1, 15)
	eventually(t, "healthy", func() bool { return c.Healthy() == nil })
}

func TestRunWithFilterSubject(t *testing.T) {
	_, js := setup(t)
	publish(t, js, 0, 70) // subjects cellos.events.test.0..6, round robin

	c := newTestConsumer(js, &errorLog{})
	c.FilterSubject = "cellos.events.test.3"
	rec := &recorder{}
	startRun(t, c, 0, rec.handle)
	eventually(t, "filtered messages handled", func() bool { return rec.len() >= 10 })
	time.Sleep(100 * time.Millisecond)
	got := rec.sequences()
	if len(got) != 10 {
		t.Fatalf("handled %d messages, want 10", len(got))
	}
	for i, seq := range got {
		if want := uint64(4 + 7*i); seq != want {
			t.Fatalf("message %d: sequence %d, want %d", i, seq, want)
		}
	}
}

// The consumer's buffer is bounded in bytes, not only in messages: while the
// handler holds the first message, the server delivers no more than one pull
// request's bytes, although the batch would hold the whole stream. A
// BufferBytes below a message's size is raised to fit it, so large events
// still flow.
func TestRunBoundsTheBufferInBytes(t *testing.T) {
	_, js := setup(t)
	const n, size = 64, 256 << 10
	publishEach(t, js, n, 8, func(int) (string, []byte) { return "cellos.events.test.large", make([]byte, size) })

	c := newTestConsumer(js, &errorLog{})
	c.BufferBytes = size / 4
	reported := make(chan int, 10)
	c.OnBufferBytes = func(bytes int) { reported <- bytes }
	held := make(chan struct{})
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { close(held) }) }
	rec := &recorder{before: func(Message) error { <-held; return nil }}
	startRun(t, c, 0, rec.handle)
	t.Cleanup(release) // runs before startRun's cleanup stops Run

	var bound int
	select {
	case bound = <-reported:
	case <-time.After(waitTimeout):
		t.Fatal("OnBufferBytes was not called")
	}
	if maxPayload := int(js.Conn().MaxPayload()); bound < maxPayload {
		t.Fatalf("buffer bound %d bytes, want at least the server's max_payload %d", bound, maxPayload)
	}

	// The server is done delivering once it has closed the pull request
	// (its byte bound reached) or delivered the whole stream.
	stream, err := js.Stream(testContext(t), testStream)
	if err != nil {
		t.Fatal(err)
	}
	var delivered uint64
	eventually(t, "the server done delivering", func() bool {
		consumers := stream.ListConsumers(testContext(t))
		for info := range consumers.Info() {
			delivered = info.Delivered.Stream
			return delivered > 0 && (info.NumWaiting == 0 || delivered == n)
		}
		return false
	})
	if max := uint64(bound / size); delivered > max {
		t.Fatalf("the server delivered %d messages of %d bytes to a consumer holding the first one, want at most %d (a buffer bound of %d bytes)",
			delivered, size, max, bound)
	}

	release()
	eventually(t, "all messages handled", func() bool { return rec.len() >= n })
	rec.requireSequences(t, 1, n)
}
