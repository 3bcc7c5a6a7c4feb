package ingest

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

var consumerBufferBytes = prometheus.NewGauge(prometheus.GaugeOpts{
	Name: "cellos_operator_consumer_buffer_bytes",
	Help: "Byte bound of each pull from the stream (--consumer-buffer-bytes, raised to the server's max_payload); the client buffers at most about twice this.",
})

func init() {
	metrics.Registry.MustRegister(consumerBufferBytes)
}
