package main

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	natsjs "github.com/nats-io/nats.go/jetstream"

	"cellos.dev/cellos-operator/internal/simulator"
)

// publisher publishes a workload's events in order, at a fixed rate or as
// fast as JetStream acknowledges, and records when each was published.
type publisher struct {
	js natsjs.JetStream
	// sent holds, for each sequence, the UnixNano time just before its event
	// was handed to the client: the moment a producer published it.
	sent []atomic.Int64
	// onAck, when set, is told each sequence the server acknowledged, in
	// order, from one goroutine.
	onAck func(seq uint64)
}

func newPublisher(js natsjs.JetStream, n int) *publisher {
	return &publisher{js: js, sent: make([]atomic.Int64, n+1)}
}

// sentAt is when sequence seq was published; zero before it was.
func (p *publisher) sentAt(seq uint64) time.Time {
	if ns := p.sent[seq].Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// publish sends every event, paced against the start time at rate events a
// second (0: unpaced), and returns once all are acknowledged. The stream
// must be empty, so that event i gets sequence i+1; an acknowledgement
// that says otherwise is an error.
func (p *publisher) publish(ctx context.Context, events []simulator.Event, rate float64) error {
	var interval time.Duration
	if rate > 0 {
		interval = time.Duration(float64(time.Second) / rate)
	}
	futures := make(chan natsjs.PubAckFuture, 1024)
	acked := make(chan error, 1)
	go func() {
		var first error
		seq := uint64(0)
		for f := range futures {
			seq++
			if first != nil {
				continue
			}
			select {
			case ack := <-f.Ok():
				if ack.Sequence != seq {
					first = fmt.Errorf("event %d was stored at sequence %d: the stream was not empty", seq, ack.Sequence)
					continue
				}
				if p.onAck != nil {
					p.onAck(seq)
				}
			case err := <-f.Err():
				first = fmt.Errorf("publishing event %d: %w", seq, err)
			case <-time.After(30 * time.Second):
				first = fmt.Errorf("no acknowledgement of event %d within 30s", seq)
			}
		}
		acked <- first
	}()
	begin := time.Now()
	var err error
	for i, ev := range events {
		if interval > 0 {
			if d := time.Until(begin.Add(time.Duration(i) * interval)); d > 0 {
				time.Sleep(d)
			}
		}
		if ctx.Err() != nil {
			err = ctx.Err()
			break
		}
		p.sent[i+1].Store(time.Now().UnixNano())
		f, perr := p.js.PublishAsync(ev.Subject, ev.Payload)
		if perr != nil {
			err = fmt.Errorf("publishing event %d: %w", i+1, perr)
			break
		}
		futures <- f
	}
	close(futures)
	if aerr := <-acked; err == nil {
		err = aerr
	}
	return err
}
