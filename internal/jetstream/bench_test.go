package jetstream

import (
	"context"
	"testing"
	"time"
)

// BenchmarkConsume measures replaying a stream of 20k events from the start,
// the operator's cold-start path.
func BenchmarkConsume(b *testing.B) {
	const n = 20_000
	_, js := setup(b)
	publish(b, js, 0, n)

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
		case <-time.After(waitTimeout):
			b.Fatal("timed out consuming")
		}
		total += time.Since(start)
		cancel()
		if err := <-returned; err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n)*float64(b.N)/total.Seconds(), "msgs/s")
}
