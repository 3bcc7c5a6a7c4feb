// Package jetstream is the operator's adapter to NATS JetStream: it makes sure
// the cellos event stream exists and reads it in stream order from a start
// sequence (the stream's first, for the operator), surfacing every consumer problem instead of stalling silently.
// It has no Kubernetes dependencies so it can be tested against a real
// JetStream server alone.
package jetstream

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/go-logr/logr"
	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"

	"cellos.dev/cellos-operator/internal/fold"
)

// DefaultStreamName is the stream cellos publishes its events to.
const DefaultStreamName = "CELLOS_EVENTS"

// URLFromEnv is the NATS URL in the environment variable NATS_URL, else the
// NATS default, so that the operator and the simulator find the same server.
func URLFromEnv() string {
	if url := os.Getenv("NATS_URL"); url != "" {
		return url
	}
	return nats.DefaultURL
}

// Subjects is the subject filter of the cellos event stream; every cellos
// event is published below it.
const Subjects = fold.SubjectPrefix + ".>"

// DefaultMaxAge is how long a created stream keeps events. Every start of the
// operator folds the stream from its first event, so this is also how far back
// status can reflect: an event purged by age is no longer in any fold.
const DefaultMaxAge = 90 * 24 * time.Hour

// DefaultStorage is file storage, so events survive a server restart.
const DefaultStorage = natsjs.FileStorage

// DefaultMaxMsgSize is the largest event, in bytes (headers and payload), a
// created stream accepts: the NATS default max_payload, and the largest event
// the fold accepts, so the stream refuses at publish what the operator would
// refuse anyway, and no message can outgrow the consumer's buffer.
const DefaultMaxMsgSize = fold.DefaultMaxEventBytes

// DefaultStreamConfig is the configuration EnsureStream creates a missing
// stream with. It is exported so tools and tests create identical streams.
func DefaultStreamConfig(name string) natsjs.StreamConfig {
	return natsjs.StreamConfig{
		Name:       name,
		Subjects:   []string{Subjects},
		Storage:    DefaultStorage,
		MaxAge:     DefaultMaxAge,
		MaxMsgSize: DefaultMaxMsgSize,
	}
}

// LookupStream returns the stream called name, and never creates it: for
// deployments where the stream belongs to whoever operates NATS. A missing
// stream is an error wrapping natsjs.ErrStreamNotFound.
func LookupStream(ctx context.Context, js natsjs.JetStream, name string) (natsjs.Stream, error) {
	stream, err := js.Stream(ctx, name)
	if errors.Is(err, natsjs.ErrStreamNotFound) {
		return nil, fmt.Errorf("stream %q does not exist: %w", name, err)
	}
	if err != nil {
		return nil, fmt.Errorf("look up stream %q: %w", name, err)
	}
	return stream, nil
}

// EnsureStream returns the stream called name, creating it with
// DefaultStreamConfig when it does not exist. An existing stream is returned
// as it is and never updated: its configuration belongs to whoever operates
// the NATS deployment, and silently changing retention could destroy events.
// A concurrent creation by another process is tolerated.
func EnsureStream(ctx context.Context, js natsjs.JetStream, name string) (natsjs.Stream, error) {
	stream, err := js.Stream(ctx, name)
	if err == nil {
		return stream, nil
	}
	if !errors.Is(err, natsjs.ErrStreamNotFound) {
		return nil, fmt.Errorf("look up stream %q: %w", name, err)
	}

	cfg := DefaultStreamConfig(name)
	stream, err = js.CreateStream(ctx, cfg)
	switch {
	case err == nil:
		logr.FromContextOrDiscard(ctx).Info("Created JetStream stream",
			"stream", name, "subjects", cfg.Subjects, "maxAge", cfg.MaxAge.String(), "maxMsgSize", cfg.MaxMsgSize)
		return stream, nil
	case errors.Is(err, natsjs.ErrStreamNameAlreadyInUse):
		// Someone else created it (with other settings) between our lookup
		// and create; use theirs as we would any existing stream.
		stream, err = js.Stream(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("look up stream %q after concurrent create: %w", name, err)
		}
		return stream, nil
	default:
		return nil, fmt.Errorf("create stream %q: %w", name, err)
	}
}
