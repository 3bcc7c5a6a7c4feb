package harness

import (
	"context"
	"fmt"
	"slices"
	"time"

	natsjs "github.com/nats-io/nats.go/jetstream"

	"cellos.dev/cellos-operator/internal/fold"
	"cellos.dev/cellos-operator/internal/store"
)

// Message is one stream message as the oracle folds it.
type Message struct {
	Seq uint64
	// Time is when the stream stored the message, the fold's clock.
	Time    time.Time
	Subject string
	Header  map[string][]string
	Data    []byte
}

// Snapshot is every message a stream holds, and which stream it is.
type Snapshot struct {
	Stream      store.Stream
	First, Last uint64
	Messages    []Message
}

// ReadStream reads every message of the stream name with an ordered
// consumer. Nothing may publish meanwhile: it fails when the stream changed
// while it read. It waits up to 30s for the stream, as a client still
// reconnecting to a server just restarted would.
func ReadStream(ctx context.Context, jsc natsjs.JetStream, name string) (Snapshot, error) {
	var s natsjs.Stream
	var err error
	for range 300 {
		if s, err = jsc.Stream(ctx, name); err == nil || ctx.Err() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return Snapshot{}, fmt.Errorf("reading stream %s: %w", name, err)
	}
	info := s.CachedInfo()
	snap := Snapshot{
		Stream: store.Stream{Name: info.Config.Name, Created: info.Created},
		First:  info.State.FirstSeq, Last: info.State.LastSeq,
	}
	if info.State.Msgs > 0 {
		if snap.Messages, err = readMessages(ctx, jsc, name, info.State.LastSeq); err != nil {
			return Snapshot{}, err
		}
	}
	after, err := s.Info(ctx)
	if err != nil {
		return Snapshot{}, err
	}
	if !after.Created.Equal(info.Created) || after.State.LastSeq != info.State.LastSeq || uint64(len(snap.Messages)) != info.State.Msgs {
		return Snapshot{}, fmt.Errorf("the stream changed while the oracle read it, or holds %d messages where %d were read", info.State.Msgs, len(snap.Messages))
	}
	return snap, nil
}

// readMessages reads the messages of stream name up to sequence last.
func readMessages(ctx context.Context, jsc natsjs.JetStream, name string, last uint64) ([]Message, error) {
	cons, err := jsc.OrderedConsumer(ctx, name, natsjs.OrderedConsumerConfig{})
	if err != nil {
		return nil, err
	}
	it, err := cons.Messages(natsjs.PullMaxMessages(1000))
	if err != nil {
		return nil, err
	}
	defer it.Stop()
	var msgs []Message
	for {
		msg, err := it.Next(natsjs.NextContext(ctx))
		if err != nil {
			return nil, fmt.Errorf("reading the stream back after %d messages: %w", len(msgs), err)
		}
		meta, err := msg.Metadata()
		if err != nil {
			return nil, err
		}
		var header map[string][]string
		if len(msg.Headers()) > 0 {
			header = msg.Headers()
		}
		msgs = append(msgs, Message{Seq: meta.Sequence.Stream, Time: meta.Timestamp, Subject: msg.Subject(), Header: header, Data: slices.Clone(msg.Data())})
		if meta.Sequence.Stream >= last {
			return msgs, nil
		}
	}
}

// Fold is the pure fold (internal/fold) of msgs, in order, with no TTL,
// and each one's outcome.
func Fold(msgs []Message) (*fold.State, []fold.Outcome) {
	return FoldTTLs(msgs, fold.TTLs{})
}

// FoldTTLs is the pure fold of msgs, in order, with ttls, and each one's
// outcome.
func FoldTTLs(msgs []Message, ttls fold.TTLs) (*fold.State, []fold.Outcome) {
	s := fold.NewState()
	s.TTLs = ttls
	outs := make([]fold.Outcome, 0, len(msgs))
	for _, m := range msgs {
		outs = append(outs, s.Apply(m.Seq, m.Time, m.Subject, m.Header, m.Data))
	}
	return s, outs
}
