package main

import (
	"errors"
	"net/http"
	"sync"

	"github.com/go-logr/logr"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
)

// withheldReadiness is check as a readiness check whose HTTP answer is
// fixed: anyone who can reach the probe port reads it, and a full error
// (a NATS connection's names the user and the files of its credentials)
// is for the log only. The full error is logged once each time it changes,
// not at every probe.
func withheldReadiness(log logr.Logger, name, reason string, check func() error) healthz.Checker {
	r := &readiness{log: log.WithValues("check", name), answer: withheldAnswer(reason), check: check}
	return r.probe
}

// unloggedReadiness is check as a readiness check with the fixed answer of
// withheldReadiness, for a check whose owner logs each change of its state
// itself (the NATS connection, natsconn.Conn.Start): logged here too, an
// outage would be logged twice.
func unloggedReadiness(reason string, check func() error) healthz.Checker {
	answer := withheldAnswer(reason)
	return func(*http.Request) error {
		if check() != nil {
			return answer
		}
		return nil
	}
}

// withheldAnswer is a readiness check's answer for reason, which sends the
// reader to the log for the error it withholds.
func withheldAnswer(reason string) error {
	return errors.New(reason + "; the operator's log says why")
}

type readiness struct {
	log    logr.Logger
	answer error
	check  func() error

	mu   sync.Mutex
	last string // the error last logged; "" while the check passes
}

func (r *readiness) probe(*http.Request) error {
	err := r.check()
	now := ""
	if err != nil {
		now = err.Error()
	}
	r.mu.Lock()
	changed := now != r.last
	r.last = now
	r.mu.Unlock()
	switch {
	case changed && err != nil:
		r.log.Error(err, "Not ready")
	case changed:
		r.log.Info("Ready again")
	}
	if err != nil {
		return r.answer
	}
	return nil
}
