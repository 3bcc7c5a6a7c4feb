package main

import (
	"crypto/tls"

	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
)

// metricsOptions serves the metrics over HTTPS on :8443 to the clients the
// API server authenticates (TokenReview) and authorizes (SubjectAccessReview
// of get on /metrics), or, when secure is false, over plain HTTP on :8080 to
// anyone. certDir holds tls.crt and tls.key; empty, a self-signed
// certificate is generated at start.
func metricsOptions(addr string, secure bool, certDir string) metricsserver.Options {
	if addr == "" {
		addr = ":8080"
		if secure {
			addr = ":8443"
		}
	}
	if !secure {
		return metricsserver.Options{BindAddress: addr}
	}
	return metricsserver.Options{
		BindAddress:    addr,
		SecureServing:  true,
		FilterProvider: filters.WithAuthenticationAndAuthorization,
		CertDir:        certDir,
		// HTTP/1.1 only: HTTP/2's stream reset and cancellation flaws
		// (CVE-2023-44487, CVE-2023-39325) are not worth it for a scrape.
		TLSOpts: []func(*tls.Config){func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} }},
	}
}
