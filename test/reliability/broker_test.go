package reliability

import (
	"context"
	"fmt"
	"testing"
	"time"

	natsjs "github.com/nats-io/nats.go/jetstream"

	"cellos.dev/cellos-operator/test/harness"
)

// Broker outage: the JetStream server stops for 10 to 30 seconds, several
// times, while events keep coming (the publisher retries through the
// outage, so they arrive the moment the server is back), and comes back on
// the same port and store. The operator reconnects by itself (the same
// process), reports the outage while it lasts (/readyz fails, the
// consumer's disconnection is counted), and loses nothing.
func TestBrokerOutage(t *testing.T) {
	outages := knob("BROKER_OUTAGES", 1, 3)
	events := knob("BROKER_EVENTS", 1500, 8000)
	lengths := []time.Duration{10 * time.Second, 20 * time.Second, 30 * time.Second}
	if !full {
		lengths = []time.Duration{seconds("BROKER_OUTAGE_SECONDS", 10, 10)}
	}
	const up = 5 * time.Second // between outages
	var total time.Duration
	for i := range outages {
		total += lengths[i%len(lengths)] + up
	}
	ns, js, jsc, rec := newScenario(t)
	msgs := generate(23, events, adversarial)

	m := startManager(t, managerConfig{natsURL: js.URL(), namespace: ns})
	harness.Eventually(t, time.Minute, "the manager is ready", m.Ready)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	published := make(chan error, 1)
	go func() {
		_, err := publishThrough(ctx, jsc, msgs, float64(events)/(total+up).Seconds(), "broker")
		published <- err
	}()

	var recoveries []time.Duration
	for i := range outages {
		time.Sleep(up)
		before, err := m.Metrics()
		if err != nil {
			t.Fatal(err)
		}
		length := lengths[i%len(lengths)]
		js.Stop()
		down := time.Now()
		// While it lasts: not ready, and the disconnection counted.
		detected := harness.Eventually(t, 30*time.Second, "readiness reports the broker outage", func() error {
			if m.Ready() == nil {
				return fmt.Errorf("still ready")
			}
			return nil
		})
		key := `cellos_operator_consumer_errors_total{reason="disconnected"}`
		harness.Eventually(t, 30*time.Second, "metrics report the broker outage", func() error {
			all, err := m.Metrics()
			if err != nil {
				return err
			}
			if all[key] <= before[key] {
				return fmt.Errorf("%s still %v", key, all[key])
			}
			return nil
		})
		for time.Since(down) < length {
			if err := m.Ready(); err == nil {
				t.Errorf("ready %s into a broker outage", time.Since(down).Round(time.Millisecond))
			}
			if !m.Running() {
				t.Fatalf("the manager exited during the broker outage: %v\n%s", m.Err(), harness.Tail(m.Logs(), 40))
			}
			time.Sleep(500 * time.Millisecond)
		}
		why := m.Ready()
		js.Restart()
		back := time.Now()
		reconnect := harness.Eventually(t, 2*time.Minute, "the manager is ready again", m.Ready)
		// Caught up: every event in the stream when it came back is in status.
		last := lastSequence(t, jsc)
		harness.Eventually(t, 5*time.Minute, "the cursor passes the events of before the outage", func() error {
			p, _, err := harness.Cursor(context.Background(), cp.Client, ns)
			if err != nil {
				return err
			}
			if p.Sequence < last {
				return fmt.Errorf("cursor %d, want %d", p.Sequence, last)
			}
			return nil
		})
		recoveries = append(recoveries, time.Since(back))
		t.Logf("outage %d: %s long; not ready after %s (%v); ready %s after the broker came back; cursor past sequence %d after %s",
			i+1, length, detected.Round(time.Millisecond), why, reconnect.Round(time.Millisecond), last, time.Since(back).Round(time.Millisecond))
		if !m.Running() {
			t.Fatalf("the manager exited: %v", m.Err())
		}
	}
	if err := <-published; err != nil {
		t.Fatal(err)
	}
	want, snap := expect(t, jsc)
	_, lost := converge(t, ns, want, 5*time.Minute)
	if m.ExitedUnasked() {
		t.Errorf("the manager exited: %v", m.Err())
	}
	regressed := rec.mustHold(t, want, snap)
	results.add(row{
		Scenario: "Broker outage", Runs: outages, Events: int(want.Last), Lost: lost, Regressed: regressed,
		Recover: durations(recoveries), PeakMiB: m.PeakMiB(),
		Notes: fmt.Sprintf("JetStream stopped %d times (%s) while events kept coming; one manager process throughout; recovery: broker back to cursor past every event published before", outages, lengthsString(lengths[:min(outages, len(lengths))])),
	})
}

// lastSequence is the stream's last sequence, once the client reaches it.
func lastSequence(tb testing.TB, jsc natsjs.JetStream) uint64 {
	tb.Helper()
	var err error
	for range 300 {
		var s natsjs.Stream
		if s, err = jsc.Stream(context.Background(), streamName); err == nil {
			return s.CachedInfo().State.LastSeq
		}
		time.Sleep(100 * time.Millisecond)
	}
	tb.Fatal(err)
	return 0
}

func lengthsString(ds []time.Duration) string {
	s := ""
	for i, d := range ds {
		if i > 0 {
			s += ", "
		}
		s += d.String()
	}
	return s
}
