package main

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/go-logr/logr/funcr"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
)

// /readyz/<check> answers which check failed and a fixed reason, never the
// check's error, which may name a user and the files of its credentials;
// the error goes to the log once per change.
func TestReadinessAnswerWithholdsTheError(t *testing.T) {
	var logged []string
	log := funcr.New(func(_, args string) { logged = append(logged, args) }, funcr.Options{})
	secretful := errors.New(`not connected to NATS: authorization violation; the server refused the credentials of --nats-user "0p3r4t0r" and --nats-password-file /etc/cellos/nats/password`)
	current := secretful
	handler := healthz.CheckHandler{Checker: withheldReadiness(log, "nats", "not connected to NATS", func() error { return current })}

	probe := func() (int, string) {
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz/nats", nil))
		return rec.Code, rec.Body.String()
	}
	for range 3 {
		code, body := probe()
		if code == http.StatusOK || !strings.Contains(body, "not connected to NATS") {
			t.Fatalf("/readyz/nats answered %d %q, want a failure saying it is not connected", code, body)
		}
		for _, secret := range []string{"0p3r4t0r", "/etc/cellos", "password", "authorization"} {
			if strings.Contains(body, secret) {
				t.Errorf("/readyz/nats answered %q, which holds %q", body, secret)
			}
		}
	}
	if len(logged) != 1 || !strings.Contains(logged[0], "/etc/cellos/nats/password") {
		t.Fatalf("logged %q, want the full error once for three probes", logged)
	}

	current = nil
	if code, body := probe(); code != http.StatusOK {
		t.Fatalf("/readyz/nats answered %d %q once the check passes", code, body)
	}
	current = errors.New("not connected to NATS: connection refused")
	probe()
	if len(logged) != 3 || !strings.Contains(logged[2], "connection refused") {
		t.Fatalf("logged %q, want the recovery and the new error", logged)
	}
}
