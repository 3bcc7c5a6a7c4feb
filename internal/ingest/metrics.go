package ingest

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"cellos.dev/cellos-operator/internal/checkpoint"
)

// The ingester's metrics, on the manager's /metrics endpoint.
var (
	eventsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cellos_operator_events_total",
		Help: "Stream events folded, by event family and result (applied, ignored, rejected, skipped).",
	}, []string{"family", "result"})

	cursorSequence = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "cellos_operator_cursor_sequence",
		Help: "The committed cursor: every event at or below it is reflected in status.",
	})

	streamLastSequence = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "cellos_operator_stream_last_sequence",
		Help: "The stream's last sequence, as last seen: at start, then with each message delivered.",
	})

	lagEvents = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "cellos_operator_lag_events",
		Help: "How many stream sequences are not yet reflected in status: stream last sequence minus watermark.",
	})

	streamRecreationsTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "cellos_operator_stream_recreations_total",
		Help: "Times the stream was found recreated under its name and folded again from its first event.",
	})

	unflushedObjects = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "cellos_operator_unflushed_objects",
		Help: "Objects whose status lags the projection; at --max-unflushed-objects the fold pauses.",
	})

	liveObjects = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "cellos_operator_live_objects",
		Help: "Formations and Cells the fold holds, by kind: those not yet expired, which bound the operator's memory.",
	}, []string{"kind"})

	ingestPaused = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "cellos_operator_ingest_paused",
		Help: "1 while the fold stops pulling the stream because too many objects await their status write.",
	})

	streamGapsTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "cellos_operator_stream_gaps_total",
		Help: "Runs of sequences found missing from the stream (purged or deleted).",
	})

	streamGapEventsTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "cellos_operator_stream_gap_events_total",
		Help: "Sequences found missing from the stream, whose events the projection cannot reflect.",
	})

	consumerErrorsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cellos_operator_consumer_errors_total",
		Help: "Problems the JetStream consumer met (missed heartbeats, resets, lost connections), by reason.",
	}, []string{"reason"})

	checkpointFallbacksTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cellos_operator_checkpoint_fallbacks_total",
		Help: "Starts that folded the stream from its first event because the checkpoint could not be used, by reason.",
	}, []string{"reason"})

	checkpointBytes = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "cellos_operator_checkpoint_bytes",
		Help: "Size of the last checkpoint written.",
	})

	checkpointSequence = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "cellos_operator_checkpoint_sequence",
		Help: "The stream sequence the last checkpoint written or restored covers.",
	})

	checkpointDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "cellos_operator_checkpoint_duration_seconds",
		Help:    "Time to encode and write one checkpoint.",
		Buckets: prometheus.ExponentialBuckets(0.005, 2, 12),
	})

	checkpointWriteFailuresTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "cellos_operator_checkpoint_write_failures_total",
		Help: "Checkpoints that could not be encoded or written.",
	})
)

func init() {
	metrics.Registry.MustRegister(eventsTotal, cursorSequence, streamLastSequence, lagEvents, streamRecreationsTotal, unflushedObjects, liveObjects, ingestPaused, streamGapsTotal, streamGapEventsTotal, consumerErrorsTotal,
		checkpointFallbacksTotal, checkpointBytes, checkpointSequence, checkpointDuration, checkpointWriteFailuresTotal)
	// Every reason is exported from the start, at 0, so that an alert on
	// its increase sees the first one.
	for _, r := range checkpoint.Reasons {
		checkpointFallbacksTotal.WithLabelValues(string(r))
	}
}
