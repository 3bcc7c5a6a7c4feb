package main

import (
	"strings"
	"testing"
	"time"
)

func TestLeaseTimingsAreValidated(t *testing.T) {
	if err := defaultLease.validate(); err != nil {
		t.Fatalf("the defaults: %v", err)
	}
	for name, c := range map[string]struct {
		l    leaseTimings
		flag string
	}{
		"no retry period":           {leaseTimings{3 * time.Second, 2 * time.Second, 0}, "--leader-elect-retry-period"},
		"renew within a retry":      {leaseTimings{3 * time.Second, time.Second, time.Second}, "--leader-elect-renew-deadline"},
		"lease within the deadline": {leaseTimings{2 * time.Second, 2 * time.Second, 250 * time.Millisecond}, "--leader-elect-lease-duration"},
		"lease in fractions":        {leaseTimings{3500 * time.Millisecond, 2 * time.Second, 250 * time.Millisecond}, "whole number of seconds"},
	} {
		err := c.l.validate()
		if err == nil || !strings.Contains(err.Error(), c.flag) {
			t.Errorf("%s: %v, want an error naming %s", name, err, c.flag)
		}
	}
}
