package main

import (
	"fmt"
	"time"

	"k8s.io/client-go/tools/leaderelection"
)

// leaseTimings are the timings of leader election.
type leaseTimings struct {
	duration, renewDeadline, retryPeriod time.Duration
}

// defaultLease takes over within 5s of a leader's SIGKILL and within 1s of
// its SIGTERM, counted to the new leader's first write:
//
//   - After a SIGKILL, a standby sees the last renewal at its next try, and
//     takes the Lease at its first try a lease duration later. A standby
//     tries every retry period plus up to 1.2 times as much again (client-go's
//     jitter): 250ms to 550ms. So the Lease passes 3s to 4.1s after the
//     last renewal, which came at most 250ms (and a request's round trip)
//     before the kill.
//   - After a SIGTERM, the leader releases the Lease as it exits, and a
//     standby takes it at its next try: within 550ms.
//
// The new leader's fold is warm, so it writes within a flush window of
// that. The leader renews four times a second and each standby reads the
// Lease about 2.5 times a second: small requests, for a handful of
// replicas. The fence (internal/fence) still leaves the leader writes for
// most of the lease after each renewal.
var defaultLease = leaseTimings{duration: 3 * time.Second, renewDeadline: 2 * time.Second, retryPeriod: 250 * time.Millisecond}

// validate refuses timings leader election cannot run with, naming the
// flags.
func (l leaseTimings) validate() error {
	switch {
	case l.retryPeriod <= 0:
		return fmt.Errorf("--leader-elect-retry-period %s: must be positive", l.retryPeriod)
	case l.renewDeadline <= time.Duration(leaderelection.JitterFactor*float64(l.retryPeriod)):
		return fmt.Errorf("--leader-elect-renew-deadline %s must be longer than %g times --leader-elect-retry-period %s: client-go's leader election refuses it shorter",
			l.renewDeadline, leaderelection.JitterFactor, l.retryPeriod)
	case l.duration <= l.renewDeadline:
		return fmt.Errorf("--leader-elect-lease-duration %s must be longer than --leader-elect-renew-deadline %s: a leader must give up before a standby may take over",
			l.duration, l.renewDeadline)
	case l.duration%time.Second != 0:
		return fmt.Errorf("--leader-elect-lease-duration %s: must be a whole number of seconds, as the Lease records it in seconds", l.duration)
	}
	return nil
}
