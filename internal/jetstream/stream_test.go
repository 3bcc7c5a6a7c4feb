package jetstream

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsjs "github.com/nats-io/nats.go/jetstream"

	"cellos.dev/cellos-operator/test/localenv"
)

func TestEnsureStreamCreatesWithDefaults(t *testing.T) {
	srv := localenv.StartJetStream(t)
	_, js := srv.Connect(t)
	ctx := testContext(t)

	stream, err := EnsureStream(ctx, js, testStream)
	if err != nil {
		t.Fatal(err)
	}
	cfg := stream.CachedInfo().Config
	if !slices.Equal(cfg.Subjects, []string{Subjects}) || cfg.Storage != natsjs.FileStorage || cfg.MaxAge != DefaultMaxAge || cfg.MaxMsgSize != DefaultMaxMsgSize {
		t.Fatalf("created stream config: subjects %v, storage %v, maxAge %v, maxMsgSize %d; want %v, file, %v, %d",
			cfg.Subjects, cfg.Storage, cfg.MaxAge, cfg.MaxMsgSize, []string{Subjects}, DefaultMaxAge, DefaultMaxMsgSize)
	}

	// A second call finds the stream instead of failing.
	again, err := EnsureStream(ctx, js, testStream)
	if err != nil {
		t.Fatalf("EnsureStream on existing stream: %v", err)
	}
	if got, want := again.CachedInfo().Created, stream.CachedInfo().Created; !got.Equal(want) {
		t.Fatalf("second EnsureStream returned a stream created at %v, want %v", got, want)
	}
}

func TestEnsureStreamLeavesExistingStreamUntouched(t *testing.T) {
	srv := localenv.StartJetStream(t)
	_, js := srv.Connect(t)
	ctx := testContext(t)

	custom := natsjs.StreamConfig{
		Name:     testStream,
		Subjects: []string{"cellos.events.custom.>"},
		Storage:  natsjs.MemoryStorage,
		MaxAge:   time.Hour,
	}
	if _, err := js.CreateStream(ctx, custom); err != nil {
		t.Fatal(err)
	}

	stream, err := EnsureStream(ctx, js, testStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cfg := info.Config
	if !slices.Equal(cfg.Subjects, custom.Subjects) || cfg.Storage != custom.Storage || cfg.MaxAge != custom.MaxAge {
		t.Fatalf("existing stream was changed: subjects %v, storage %v, maxAge %v; want %v, %v, %v",
			cfg.Subjects, cfg.Storage, cfg.MaxAge, custom.Subjects, custom.Storage, custom.MaxAge)
	}
}

func TestLookupStreamNeverCreates(t *testing.T) {
	srv := localenv.StartJetStream(t)
	_, js := srv.Connect(t)
	ctx := testContext(t)

	if _, err := LookupStream(ctx, js, testStream); !errors.Is(err, natsjs.ErrStreamNotFound) {
		t.Fatalf("LookupStream of a missing stream: %v, want ErrStreamNotFound", err)
	}
	if _, err := js.Stream(ctx, testStream); !errors.Is(err, natsjs.ErrStreamNotFound) {
		t.Fatalf("LookupStream created the stream: %v", err)
	}
	created, err := js.CreateStream(ctx, natsjs.StreamConfig{Name: testStream, Subjects: []string{"elsewhere.>"}, Storage: natsjs.MemoryStorage})
	if err != nil {
		t.Fatal(err)
	}
	stream, err := LookupStream(ctx, js, testStream)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := stream.CachedInfo().Created, created.CachedInfo().Created; !got.Equal(want) {
		t.Fatalf("LookupStream returned a stream created at %v, want %v", got, want)
	}
}

// The created stream refuses an event larger than DefaultMaxMsgSize, even
// from a server whose max_payload would let it through.
func TestEnsureStreamRefusesEventsAboveMaxMsgSize(t *testing.T) {
	srv := localenv.StartJetStreamWith(t, localenv.ServerConfig{Configure: func(o *server.Options) { o.MaxPayload = 4 * DefaultMaxMsgSize }})
	_, js := srv.Connect(t)
	ctx := testContext(t)
	if _, err := EnsureStream(ctx, js, testStream); err != nil {
		t.Fatal(err)
	}

	if _, err := js.Publish(ctx, "cellos.events.test", make([]byte, DefaultMaxMsgSize)); err != nil {
		t.Fatalf("publishing an event of exactly %d bytes: %v", DefaultMaxMsgSize, err)
	}
	_, err := js.Publish(ctx, "cellos.events.test", make([]byte, DefaultMaxMsgSize+1))
	var apiErr *natsjs.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode != natsjs.JSErrCodeStreamMessageExceedsMaximum {
		t.Fatalf("publishing an event of %d bytes: %v, want the stream's refusal (message size exceeds maximum allowed)", DefaultMaxMsgSize+1, err)
	}
}
