// Package tombstone keeps the one ownership fact that the stream forgets:
// that a declared formation was deleted. The operator's cancelled event
// states it, but retention (max_age, max_msgs) or a purge removes that
// event in time, and later events of the formation would then bring it back
// as an observed Formation. A tombstone lives in a JetStream KV bucket, in
// the same NATS as the stream, so that it lasts as long as the events it
// answers for and no longer.
//
// Every replica holds the tombstones in memory, loaded at start and kept
// current by a watch of the bucket, so that placement asks no server per
// event. Only the leader records them.
package tombstone

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-logr/logr"
	natsjs "github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// DefaultBucket is the KV bucket the tombstones are kept in.
const DefaultBucket = "cellos-formation-tombstones"

// Beyond the stream's max_age, a tombstone lives margin longer, and is
// written again when an event of its formation is folded and it is older
// than refreshAfter. So it expires no sooner than max_age + margin -
// refreshAfter after the last event of its formation was folded: after that
// event has aged out of the stream.
const (
	margin       = 24 * time.Hour
	refreshAfter = time.Hour
)

var tombstones = prometheus.NewGauge(prometheus.GaugeOpts{
	Name: "cellos_operator_formation_tombstones",
	Help: "Deleted declared formations this replica remembers, so that no later event brings them back.",
})

func init() {
	metrics.Registry.MustRegister(tombstones)
}

// Set is the tombstones of one bucket. Create it with New and run it as a
// manager Runnable on every replica.
type Set struct {
	js     natsjs.JetStream
	bucket string
	stream string

	mu     sync.RWMutex
	kv     natsjs.KeyValue
	ttl    time.Duration
	byID   map[string]tombstone
	loaded chan struct{}
}

// tombstone is one deleted formation: when it was last written, and what.
type tombstone struct {
	written time.Time
	value   []byte
}

// New returns the Set of bucket, whose tombstones outlive the events of
// stream.
func New(js natsjs.JetStream, bucket, stream string) *Set {
	return &Set{js: js, bucket: bucket, stream: stream, byID: map[string]tombstone{}, loaded: make(chan struct{})}
}

// NeedLeaderElection is false: a standby holds the tombstones too, ready
// for when it leads.
func (s *Set) NeedLeaderElection() bool { return false }

// Start opens the bucket, loads it, and follows it until ctx ends, opening
// it again after any failure.
func (s *Set) Start(ctx context.Context) error {
	log := ctrl.LoggerFrom(ctx).WithName("tombstones")
	for delay := time.Second; ; delay = min(2*delay, 30*time.Second) {
		err := s.follow(ctx)
		if ctx.Err() != nil {
			return nil
		}
		log.Error(err, "Following the tombstones of deleted formations; retrying", "bucket", s.bucket, "retryIn", delay)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
	}
}

// follow opens the bucket with a TTL past the stream's max_age, then holds
// every tombstone it has and gets, until ctx ends or the watch fails.
func (s *Set) follow(ctx context.Context) error {
	stream, err := s.js.Stream(ctx, s.stream)
	if err != nil {
		return fmt.Errorf("reading the max_age of stream %s: %w", s.stream, err)
	}
	ttl := time.Duration(0) // a stream that keeps events for ever
	if maxAge := stream.CachedInfo().Config.MaxAge; maxAge > 0 {
		ttl = maxAge + margin
	}
	kv, err := s.js.CreateOrUpdateKeyValue(ctx, natsjs.KeyValueConfig{
		Bucket:      s.bucket,
		Description: "Formations whose declared Formation was deleted: cellos-operator never brings them back.",
		History:     1,
		TTL:         ttl,
		Storage:     natsjs.FileStorage,
	})
	if err != nil {
		return fmt.Errorf("opening KV bucket %s: %w", s.bucket, err)
	}
	s.mu.Lock()
	s.kv, s.ttl = kv, ttl
	s.mu.Unlock()

	watchCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := kv.WatchAll(watchCtx)
	if err != nil {
		return fmt.Errorf("watching KV bucket %s: %w", s.bucket, err)
	}
	sweep := time.NewTicker(refreshAfter)
	defer sweep.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-sweep.C:
			s.forgetExpired()
		case e, ok := <-w.Updates():
			switch {
			case !ok:
				return errors.New("the watch of the bucket ended")
			case e == nil:
				// Every tombstone the bucket held is in memory.
				s.markLoaded(ctx)
			case e.Operation() == natsjs.KeyValuePut:
				s.hold(e.Key(), tombstone{written: e.Created(), value: e.Value()})
			default:
				s.forget(e.Key())
			}
		}
	}
}

func (s *Set) markLoaded(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.loaded:
	default:
		close(s.loaded)
		logr.FromContextOrDiscard(ctx).Info("Loaded the tombstones of deleted formations", "bucket", s.bucket, "count", len(s.byID), "ttl", s.ttl)
	}
}

// WhenLoaded is closed once every tombstone the bucket held at start is
// known.
func (s *Set) WhenLoaded() <-chan struct{} { return s.loaded }

// Loaded tells whether every tombstone the bucket held at start is known:
// until then, no decision may rest on the absence of one.
func (s *Set) Loaded() bool {
	select {
	case <-s.loaded:
		return true
	default:
		return false
	}
}

// Has tells whether the formation with this id was deleted.
func (s *Set) Has(id string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	t, ok := s.byID[id]
	return ok && !s.expired(t, time.Now())
}

// Record writes the tombstone of the formation with this id, deleted with
// its declared Formation (what names it, for whoever reads the bucket). It
// holds from the moment Record returns, before the watch brings it back.
func (s *Set) Record(ctx context.Context, id, what string) error {
	s.mu.RLock()
	kv := s.kv
	s.mu.RUnlock()
	if kv == nil {
		return fmt.Errorf("recording that formation %s was deleted: KV bucket %s is not open yet", id, s.bucket)
	}
	if _, err := kv.Put(ctx, id, []byte(what)); err != nil {
		return fmt.Errorf("recording that formation %s was deleted: %w", id, err)
	}
	s.hold(id, tombstone{written: time.Now(), value: []byte(what)})
	return nil
}

// Refresh writes the tombstone of id again when it is older than
// refreshAfter, because an event of its formation was just folded: the
// tombstone must outlive that event in the stream.
func (s *Set) Refresh(ctx context.Context, id string) error {
	s.mu.RLock()
	t, ok := s.byID[id]
	s.mu.RUnlock()
	if !ok || time.Since(t.written) < refreshAfter {
		return nil
	}
	return s.Record(ctx, id, string(t.value))
}

func (s *Set) hold(id string, t tombstone) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.byID[id] = t
	tombstones.Set(float64(len(s.byID)))
}

func (s *Set) forget(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.byID, id)
	tombstones.Set(float64(len(s.byID)))
}

// forgetExpired drops what the bucket's TTL has removed, which its watch
// does not report, so that memory follows the bucket.
func (s *Set) forgetExpired() {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	for id, t := range s.byID {
		if s.expired(t, now) {
			delete(s.byID, id)
		}
	}
	tombstones.Set(float64(len(s.byID)))
}

func (s *Set) expired(t tombstone, now time.Time) bool {
	return s.ttl > 0 && now.Sub(t.written) > s.ttl
}
