package jetstream

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
	natsjs "github.com/nats-io/nats.go/jetstream"

	"cellos.dev/cellos-operator/test/localenv"
)

const (
	testStream = "CELLOS_EVENTS"
	// waitTimeout is generous: the tests run under -race on shared machines
	// and must not depend on speed.
	waitTimeout = 60 * time.Second
)

// eventually polls cond until it holds or waitTimeout passes.
func eventually(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %s waiting for %s", waitTimeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func testContext(tb testing.TB) context.Context {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitTimeout)
	tb.Cleanup(cancel)
	if _, ok := tb.(*testing.B); ok {
		return ctx // keep benchmark output clean
	}
	return logr.NewContext(ctx, testr.NewWithInterface(tb, testr.Options{Verbosity: 1}))
}

// setup starts a server, connects, and creates the cellos stream.
func setup(tb testing.TB) (*localenv.JetStreamServer, natsjs.JetStream) {
	tb.Helper()
	srv := localenv.StartJetStream(tb)
	_, js := srv.Connect(tb)
	if _, err := EnsureStream(testContext(tb), js, testStream); err != nil {
		tb.Fatal(err)
	}
	return srv, js
}

// streamCreated returns the creation time of the test stream.
func streamCreated(tb testing.TB, js natsjs.JetStream) time.Time {
	tb.Helper()
	stream, err := js.Stream(testContext(tb), testStream)
	if err != nil {
		tb.Fatal(err)
	}
	return stream.CachedInfo().Created
}

// recreateStream creates the test stream again after a test deleted it. The
// server moves a deleted stream's files aside and removes them in the
// background; on a loaded machine a create that follows at once can fail
// with "error creating store for stream", and is tried again.
// streamStoreFailed is the server's JSStreamStoreFailedF error code.
const streamStoreFailed natsjs.ErrorCode = 10049

func recreateStream(tb testing.TB, js natsjs.JetStream, cfg natsjs.StreamConfig) {
	tb.Helper()
	var err error
	eventually(tb, "the stream created again", func() bool {
		_, err = js.CreateStream(testContext(tb), cfg)
		var apiErr *natsjs.APIError
		return err == nil || !errors.As(err, &apiErr) || apiErr.ErrorCode != streamStoreFailed
	})
	if err != nil {
		tb.Fatal(err)
	}
}

func payload(i int) []byte { return fmt.Appendf(nil, `{"n":%d}`, i) }

// publish publishes n messages asynchronously and waits for all acks; the
// payloads are numbered from first.
func publish(tb testing.TB, js natsjs.JetStream, first, n int) {
	tb.Helper()
	publishEach(tb, js, n, n, func(i int) (string, []byte) {
		return fmt.Sprintf("cellos.events.test.%d", (first+i)%7), payload(first + i)
	})
}

// publishEach publishes n messages asynchronously, message(i) giving the
// subject and payload of the i-th, and fails unless every one is
// acknowledged. It awaits the acks of each batch of messages before sending
// the next, so that memory stays bounded however many messages there are.
func publishEach(tb testing.TB, js natsjs.JetStream, n, batch int, message func(i int) (subject string, payload []byte)) {
	tb.Helper()
	futures := make([]natsjs.PubAckFuture, 0, min(n, batch))
	for i := 0; i < n; {
		futures = futures[:0]
		for ; i < n && len(futures) < batch; i++ {
			subject, data := message(i)
			f, err := js.PublishAsync(subject, data)
			if err != nil {
				tb.Fatalf("publish message %d: %v", i, err)
			}
			futures = append(futures, f)
		}
		select {
		case <-js.PublishAsyncComplete():
		case <-time.After(waitTimeout):
			tb.Fatal("timed out waiting for publish acks")
		}
		for _, f := range futures {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				tb.Fatalf("publish: %v", err)
			}
		}
	}
}

// recorder is a handle func that records every message it is given.
type recorder struct {
	mu   sync.Mutex
	msgs []Message
	// before, when set, runs before a message is recorded; an error is
	// returned from handle and the message is not recorded.
	before func(Message) error
}

func (r *recorder) handle(_ context.Context, m Message) error {
	if r.before != nil {
		if err := r.before(m); err != nil {
			return err
		}
	}
	r.mu.Lock()
	r.msgs = append(r.msgs, m)
	r.mu.Unlock()
	return nil
}

func (r *recorder) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.msgs)
}

func (r *recorder) sequences() []uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	seqs := make([]uint64, len(r.msgs))
	for i, m := range r.msgs {
		seqs[i] = m.Sequence
	}
	return seqs
}

// requireSequences fails unless the recorded sequences are exactly from..to.
func (r *recorder) requireSequences(tb testing.TB, from, to uint64) {
	tb.Helper()
	got := r.sequences()
	want := make([]uint64, 0, to-from+1)
	for s := from; s <= to; s++ {
		want = append(want, s)
	}
	if !slices.Equal(got, want) {
		tb.Fatalf("handled sequences: got %s, want %d..%d", summarize(got), from, to)
	}
}

// summarize describes a sequence list briefly, pointing at the first
// duplicate or gap.
func summarize(seqs []uint64) string {
	if len(seqs) == 0 {
		return "none"
	}
	for i := 1; i < len(seqs); i++ {
		if seqs[i] != seqs[i-1]+1 {
			return fmt.Sprintf("%d messages %d..%d, broken at index %d: %d followed by %d",
				len(seqs), seqs[0], seqs[len(seqs)-1], i, seqs[i-1], seqs[i])
		}
	}
	return fmt.Sprintf("%d messages %d..%d", len(seqs), seqs[0], seqs[len(seqs)-1])
}

// errorLog records OnError calls.
type errorLog struct {
	mu      sync.Mutex
	reasons map[string]int
}

func (e *errorLog) onError(reason string, err error) {
	if err == nil {
		panic("OnError called with a nil error")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.reasons == nil {
		e.reasons = map[string]int{}
	}
	e.reasons[reason]++
}

func (e *errorLog) count(reason string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.reasons[reason]
}

// startRun runs c in the background until the test ends, and returns a
// function that stops it and returns Run's result.
func startRun(tb testing.TB, c *Consumer, startSeq uint64, handle func(context.Context, Message) error) (stop func() error) {
	tb.Helper()
	ctx, cancel := context.WithCancel(testContext(tb))
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, startSeq, handle) }()
	var once sync.Once
	var result error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case result = <-done:
			case <-time.After(waitTimeout):
				result = fmt.Errorf("Run did not return within %s after cancel", waitTimeout)
			}
		})
		return result
	}
	tb.Cleanup(func() {
		if err := stop(); err != nil {
			tb.Errorf("Run: %v", err)
		}
	})
	return stop
}
