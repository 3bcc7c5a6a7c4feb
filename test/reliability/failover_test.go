package reliability

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	natsjs "github.com/nats-io/nats.go/jetstream"

	"cellos.dev/cellos-operator/test/harness"
	"cellos.dev/cellos-operator/test/localenv"
)

// Failover: two replicas with --leader-elect. The leader is killed with
// SIGKILL, then stopped with SIGTERM: the standby takes over (how long it
// takes is measured) and the final state is correct. Then the leader is
// paused with SIGSTOP past its lease while it has writes pending, the
// standby takes over and moves every object further, and the old leader is
// resumed (SIGCONT): it must not move any object or the cursor backwards.
// Its writes after it resumed are counted from the API server's audit log,
// which names each replica by a user of its own.
//
// The full suite runs it six times, so that a failure in one run of three
// would show with a probability of 1 - (2/3)^6, above 90%.
func TestFailover(t *testing.T) {
	runs := knob("FAILOVER_RUNS", 1, 6)
	events := knob("FAILOVER_EVENTS", 400, 2000)
	// The SIGKILL takeover waits out the lease, 3s by default.
	withKill := knob("FAILOVER_SIGKILL", 1, 1) == 1
	var kills, terms, stales, recoveries []time.Duration
	var staleWrites, staleAccepted, staleRegressions, staleCounts []int
	var peak float64
	var lost, regressed, total int
	for run := range runs {
		t.Run(fmt.Sprintf("run %d", run+1), func(t *testing.T) {
			f := startFailover(t, run)
			defer func() {
				for _, m := range f.all {
					peak = max(peak, m.PeakMiB())
				}
			}()
			msgs := generate(uint64(61+run), 4*events, adversarial)

			// SIGKILL: the standby waits for the lease to expire.
			f.publishAsync(t, msgs[:events])
			f.waitWrites(t, 20)
			if withKill {
				kills = append(kills, f.takeover(t, "SIGKILL", func(m *manager) { m.Kill() }))
			}

			// SIGTERM: the leader releases the lease on its way out.
			f.publishAsync(t, msgs[events:2*events])
			f.waitWrites(t, 20)
			terms = append(terms, f.takeover(t, "SIGTERM", func(m *manager) { harness.Stop(t, m) }))

			// SIGSTOP past the lease, with writes pending; then SIGCONT once
			// the new leader has moved every object further.
			f.waitPublished(t)
			publish(t, f.jsc, msgs[2*events:3*events], 0)
			f.waitWrites(t, 10)
			stale := f.leader(t)
			if err := stale.Signal(syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
			stopped := time.Now()
			stales = append(stales, f.waitLeader(t, stale, stopped, "SIGSTOP"))
			publish(t, f.jsc, msgs[3*events:], 0)
			want, _ := expect(t, f.jsc)
			converge(t, f.ns, want, 5*time.Minute)
			resumed := time.Now()
			if err := stale.Signal(syscall.SIGCONT); err != nil {
				t.Fatal(err)
			}
			// It finds it lost the lease and exits; give it time to write.
			select {
			case <-stale.Done():
			case <-time.After(30 * time.Second):
			}
			t.Logf("stale leader %s resumed after %s paused; it %s", stale.Name, resumed.Sub(stopped).Round(100*time.Millisecond), exitString(stale))
			writes, accepted := f.auditAfter(t, stale, resumed)
			staleWrites = append(staleWrites, writes)
			staleAccepted = append(staleAccepted, accepted)

			want, snap := expect(t, f.jsc)
			recovered, l := converge(t, f.ns, want, 5*time.Minute)
			recoveries = append(recoveries, recovered)
			lost += l
			total += int(want.Last)
			v := f.rec.check()
			staleRegressions = append(staleRegressions, len(v.regressions))
			staleCounts = append(staleCounts, len(v.counts))
			for _, r := range v.regressions {
				t.Logf("regression %s; writers: %s", r, f.attribute(t, r))
			}
			// The fence refuses every write through the manager's client
			// (Formations, Cells, the cursor ConfigMap) of a leader whose
			// Lease may have passed on, before it sends it. Events and the
			// Lease are outside the fence, and so not counted here.
			if accepted > 0 {
				t.Errorf("the stale leader wrote %d times after it resumed past its lease", accepted)
			}
			if len(v.counts) > 0 {
				t.Errorf("a stale leader resumed past its lease moved Formations' cell counts backwards:\n%s", strings.Join(harness.Head(v.counts, 10), "\n"))
			}
			regressed += f.rec.mustHold(t, want, snap)
		})
	}
	results.add(row{
		Scenario: "Failover (2 replicas, --leader-elect)", Runs: runs, Events: total, Lost: lost, Regressed: regressed,
		Recover: durations(recoveries), PeakMiB: peak,
		Notes: fmt.Sprintf("takeover after SIGKILL %s; after SIGTERM %s; after SIGSTOP past the lease %s. Stale leader resumed: writes after resume per run %v, accepted %v, lastAppliedSequence regressions %v, Formation cell counts moved back %v; recovery: from resuming the stale leader to every object and the cursor caught up",
			durations(kills), durations(terms), durations(stales), staleWrites, staleAccepted, staleRegressions, staleCounts),
	})
}

// failover is one run: a namespace, a stream and two replicas.
type failover struct {
	run     int
	ns      string
	js      *localenv.JetStreamServer
	jsc     natsjs.JetStream
	rec     *recorder
	all     []*manager
	live    []*manager
	users   map[*manager]string
	started int
	pub     chan error
}

func startFailover(t *testing.T, run int) *failover {
	t.Helper()
	f := &failover{run: run, ns: newNamespace(t), js: localenv.StartJetStream(t), users: map[*manager]string{}}
	_, f.jsc = f.js.Connect(t)
	f.rec = record(t, f.ns)
	f.rec.addStream(ensureStream(t, f.jsc))
	first := f.replica(t)
	begin := time.Now()
	harness.Eventually(t, time.Minute, "the first replica leads", func() error {
		err := first.Leads()
		if err != nil && time.Since(begin) > 55*time.Second {
			err = fmt.Errorf("%w\n%s", err, harness.Tail(first.Logs(), 20))
		}
		return err
	})
	f.replica(t)
	return f
}

// replica starts one more replica, as a user of its own.
func (f *failover) replica(t *testing.T) *manager {
	t.Helper()
	f.started++
	user := fmt.Sprintf("%s-replica-%d", f.ns, f.started)
	kubeconfig, err := cp.userKubeconfig(user)
	if err != nil {
		t.Fatal(err)
	}
	m := startManager(t, managerConfig{name: fmt.Sprintf("replica-%d", f.started), natsURL: f.js.URL(), namespace: f.ns, kubeconfig: kubeconfig, args: []string{"--leader-elect"}})
	f.users[m] = user
	f.all = append(f.all, m)
	f.live = append(f.live, m)
	return m
}

// leader is the live replica that leads.
func (f *failover) leader(t *testing.T) *manager {
	t.Helper()
	var found *manager
	harness.Eventually(t, time.Minute, "a replica leads", func() error {
		for _, m := range f.live {
			if m.Leads() == nil {
				found = m
				return nil
			}
		}
		return fmt.Errorf("none of %d replicas leads", len(f.live))
	})
	return found
}

// takeover ends the leader with end, measures how long until another
// replica leads, and starts a new standby.
func (f *failover) takeover(t *testing.T, how string, end func(*manager)) time.Duration {
	t.Helper()
	old := f.leader(t)
	begin := time.Now()
	end(old)
	d := f.waitLeader(t, old, begin, how)
	f.replica(t)
	return d
}

// waitLeader waits until a replica other than old leads, and returns how
// long after since.
func (f *failover) waitLeader(t *testing.T, old *manager, since time.Time, how string) time.Duration {
	t.Helper()
	var live []*manager
	for _, m := range f.live {
		if m != old {
			live = append(live, m)
		}
	}
	f.live = live
	var d time.Duration
	harness.Eventually(t, 2*time.Minute, "another replica takes over after "+how, func() error {
		for _, m := range f.live {
			if m.Leads() == nil {
				d = time.Since(since)
				return nil
			}
		}
		return fmt.Errorf("no replica leads")
	})
	t.Logf("takeover after %s of %s: %s", how, old.Name, d.Round(10*time.Millisecond))
	return d
}

// publishAsync publishes msgs at about 200 a second in the background, so
// that the leader ends in the middle of them.
func (f *failover) publishAsync(t *testing.T, msgs []msg) {
	t.Helper()
	f.waitPublished(t)
	f.pub = make(chan error, 1)
	go func() { f.pub <- publishCtx(context.Background(), f.jsc, msgs, 200) }()
}

func (f *failover) waitPublished(t *testing.T) {
	t.Helper()
	if f.pub != nil {
		if err := <-f.pub; err != nil {
			t.Fatal(err)
		}
		f.pub = nil
	}
}

// waitWrites waits until n more status values were written.
func (f *failover) waitWrites(t *testing.T, n int64) {
	t.Helper()
	seen := f.rec.statusChanges.Load()
	harness.Eventually(t, time.Minute, fmt.Sprintf("%d status writes", n), func() error {
		if got := f.rec.statusChanges.Load() - seen; got < n {
			return fmt.Errorf("%d", got)
		}
		return nil
	})
}

// auditAfter counts m's writes to Formations, Cells and ConfigMaps received
// from since on, as the audit log records them, and how many the API
// server accepted.
func (f *failover) auditAfter(t *testing.T, m *manager, since time.Time) (writes, accepted int) {
	t.Helper()
	var evs []auditEvent
	// The log is written asynchronously: give it a moment.
	time.Sleep(2 * time.Second)
	evs, err := cp.auditEvents(f.users[m])
	if err != nil {
		t.Fatal(err)
	}
	byKind := map[string]int{}
	for _, ev := range evs {
		if ev.RequestReceivedTimestamp.Before(since) || ev.ObjectRef == nil {
			continue
		}
		code := 0
		if ev.ResponseStatus != nil {
			code = ev.ResponseStatus.Code
		}
		what := ev.ObjectRef.Resource
		if ev.ObjectRef.Subresource != "" {
			what += "/" + ev.ObjectRef.Subresource
		}
		byKind[fmt.Sprintf("%s %s %d", ev.Verb, what, code)]++
		switch ev.ObjectRef.Resource {
		case "formations", "cells", "configmaps":
			writes++
			if code >= 200 && code < 300 {
				accepted++
			}
		}
	}
	t.Logf("%s's requests after it resumed, by verb, resource and code: %v", m.Name, byKind)
	return writes, accepted
}

// attribute names, from the audit log, who wrote the status a regression
// went back to.
func (f *failover) attribute(t *testing.T, regression string) string {
	t.Helper()
	var kind, name string
	var seq int64
	if _, err := fmt.Sscanf(regression, "%s %s went back from sequence", &kind, &name); err != nil {
		return "?"
	}
	if i := strings.Index(regression, ") to "); i >= 0 {
		_, _ = fmt.Sscanf(regression[i+5:], "%d", &seq)
	}
	var who []string
	for m, user := range f.users {
		evs, err := cp.auditEvents(user)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs {
			if ev.ObjectRef == nil || ev.ObjectRef.Name != name || ev.ObjectRef.Subresource != "status" {
				continue
			}
			var obj struct {
				Status struct {
					LastAppliedSequence int64 `json:"lastAppliedSequence"`
				} `json:"status"`
			}
			if json.Unmarshal(ev.RequestObject, &obj) == nil && obj.Status.LastAppliedSequence == seq {
				code := 0
				if ev.ResponseStatus != nil {
					code = ev.ResponseStatus.Code
				}
				who = append(who, fmt.Sprintf("%s at %s (%d)", m.Name, ev.RequestReceivedTimestamp.Format("15:04:05.000"), code))
			}
		}
	}
	return strings.Join(who, ", ")
}

func exitString(m *manager) string {
	if m.Running() {
		return "still runs"
	}
	return fmt.Sprintf("exited (%v)", m.Err())
}
