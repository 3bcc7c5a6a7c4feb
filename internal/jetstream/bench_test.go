package jetstream

import (
	"context"
	"testing"
	"time"

	natsjs "github.com/nats-io/nats.go/jetstream"

	"cellos.dev/cellos-operator/internal/simulator"
)

// replayTimeout only bounds a hung consumer: replaying a million messages
// on a slow, shared machine must not trip it.
const replayTimeout = 10 * time.Minute

// BenchmarkConsume measures replaying a stream of 20k events from the start,
// the operator's cold-start path.
func BenchmarkConsume(b *testing.B) {
	const n = 20_000
	_, js := setup(b)
	publish(b, js, 0, n)
	benchmarkReplay(b, js, n)
}

// BenchmarkConsumeMillion measures the same cold start on a stream of a busy
// installation: a million simulated cellos CloudEvents, the size and shape
// the simulator publishes, in file storage.
func BenchmarkConsumeMillion(b *testing.B) {
	const (
		n = 1_000_000
		// pending bounds the unacknowledged messages the publisher holds,
		// and so its memory, while keeping the server busy.
		pending = 16_384
	)
	srv, _ := setup(b)
	nc, _ := srv.Connect(b)
	js, err := natsjs.New(nc, natsjs.WithPublishAsyncMaxPending(pending))
	if err != nil {
		b.Fatal(err)
	}
	gen := simulator.NewGenerator(simulator.Config{
		Seed:         1,
		FailureRate:  0.2,
		DegradedRate: 0.2,
		Start:        time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
	})
	var size int
	publishEach(b, js, n, pending, func(int) (string, []byte) {
		ev, _ := gen.Next() // endless: Config.Formations is 0
		size += len(ev.Payload)
		return ev.Subject, ev.Payload
	})
	benchmarkReplay(b, js, n)
	b.ReportMetric(float64(size)/n, "B/msg") // after b.Loop, which clears metrics
}

// benchmarkReplay replays the n messages of the test stream with a new
// Consumer per iteration and reports the rate. Only the time from Run's start
// to the last message counts; the stream must be filled beforehand, which
// b.Loop keeps out of the measurement.
func benchmarkReplay(b *testing.B, js natsjs.JetStream, n int) {
	b.Helper()
	var total time.Duration
	for b.Loop() {
		c := NewConsumer(js, testStream)
		ctx, cancel := context.WithCancel(context.Background())
		var count int
		done := make(chan struct{})
		returned := make(chan error, 1)
		start := time.Now()
		go func() {
			returned <- c.Run(ctx, 0, func(context.Context, Message) error {
				if count++; count == n {
					close(done)
				}
				return nil
			})
		}()
		select {
		case <-done:
		case <-time.After(replayTimeout):
			b.Fatalf("timed out after %s consuming %d messages", replayTimeout, n)
		}
		total += time.Since(start)
		cancel()
		if err := <-returned; err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n)*float64(b.N)/total.Seconds(), "msgs/s")
}
