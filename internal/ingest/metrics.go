package ingest

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
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

	consumerErrorsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cellos_operator_consumer_errors_total",
		Help: "Problems the JetStream consumer met (missed heartbeats, resets, lost connections), by reason.",
	}, []string{"reason"})
)

func init() {
	metrics.Registry.MustRegister(eventsTotal, cursorSequence, streamLastSequence, lagEvents, streamRecreationsTotal, consumerErrorsTotal)
}
