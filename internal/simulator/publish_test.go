package simulator_test

import (
	"bytes"
	"context"
	"slices"
	"testing"
	"time"

	natsjs "github.com/nats-io/nats.go/jetstream"

	cellosjs "cellos.dev/cellos-operator/internal/jetstream"
	"cellos.dev/cellos-operator/internal/simulator"
	"cellos.dev/cellos-operator/test/localenv"
)

const testStream = "CELLOS_EVENTS"

func startStream(t *testing.T) (natsjs.JetStream, natsjs.Stream) {
	t.Helper()
	srv := localenv.StartJetStream(t)
	_, js := srv.Connect(t)
	stream, err := cellosjs.EnsureStream(t.Context(), js, testStream)
	if err != nil {
		t.Fatalf("ensure stream: %v", err)
	}
	return js, stream
}

// TestPublish publishes more events than the ack window holds and reads them
// back: every one stored, in order, on its subject, byte for byte.
func TestPublish(t *testing.T) {
	js, stream := startStream(t)
	events := simulator.Generate(simulator.Config{Seed: 7, Formations: 100, FailureRate: 0.3, DegradedRate: 0.3, Start: testStart})

	n, err := simulator.Publish(t.Context(), js, slices.Values(events), 0)
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	if n != len(events) {
		t.Fatalf("published %d events, want %d", n, len(events))
	}
	info, err := stream.Info(t.Context())
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	if info.State.Msgs != uint64(len(events)) {
		t.Fatalf("stream holds %d messages, want %d", info.State.Msgs, len(events))
	}
	for i, ev := range events {
		msg, err := stream.GetMsg(t.Context(), uint64(i+1))
		if err != nil {
			t.Fatalf("get message %d: %v", i+1, err)
		}
		if msg.Subject != ev.Subject || !bytes.Equal(msg.Data, ev.Payload) {
			t.Fatalf("message %d is %s %s, want %s %s", i+1, msg.Subject, msg.Data, ev.Subject, ev.Payload)
		}
	}
}

func TestPublishPaces(t *testing.T) {
	js, _ := startStream(t)
	events := simulator.Generate(simulator.Config{Seed: 8, Formations: 2, Start: testStart})[:11]

	begin := time.Now()
	n, err := simulator.Publish(t.Context(), js, slices.Values(events), 100)
	if err != nil || n != len(events) {
		t.Fatalf("publish: %d events, %v", n, err)
	}
	// 11 events at 100/s: the first at once, the last 100ms later.
	if elapsed := time.Since(begin); elapsed < 100*time.Millisecond {
		t.Fatalf("11 events at 100/s took %s", elapsed)
	}
}

// TestPublishStopsWithContext checks that ending the context is a clean stop
// and that what was published is counted exactly.
func TestPublishStopsWithContext(t *testing.T) {
	js, stream := startStream(t)
	ctx, cancel := context.WithCancel(t.Context())
	g := simulator.NewGenerator(simulator.Config{Seed: 9, Start: testStart}) // endless
	time.AfterFunc(300*time.Millisecond, cancel)

	n, err := simulator.Publish(ctx, js, g.All(), 50)
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	// How many fit in 300ms depends on the machine's load; the point is
	// that the stop is clean and the count exact.
	if n == 0 {
		t.Fatal("published nothing before the context ended")
	}
	info, err := stream.Info(t.Context())
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	if info.State.Msgs != uint64(n) {
		t.Fatalf("stream holds %d messages, Publish counted %d", info.State.Msgs, n)
	}
}

// TestPublishChecksAcks publishes to a subject no stream captures: the
// server never acknowledges it, and Publish must say so.
func TestPublishChecksAcks(t *testing.T) {
	js, _ := startStream(t)
	events := simulator.Generate(simulator.Config{Seed: 10, Formations: 1, Start: testStart})
	events[2].Subject = "not.cellos"

	n, err := simulator.Publish(t.Context(), js, slices.Values(events), 0)
	if err == nil {
		t.Fatal("publish to a subject without a stream succeeded")
	}
	if n >= len(events) {
		t.Fatalf("counted %d of %d events as acknowledged despite %v", n, len(events), err)
	}
	t.Logf("error as reported: %v", err)
}

func TestPublishRejectsNegativeRate(t *testing.T) {
	if _, err := simulator.Publish(t.Context(), nil, slices.Values([]simulator.Event(nil)), -1); err == nil {
		t.Fatal("negative rate accepted")
	}
}
