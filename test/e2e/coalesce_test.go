package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/test/harness"
	"cellos.dev/cellos-operator/test/localenv"
)

func TestManyEventsOnOneObjectCostOneWrite(t *testing.T) {
	ns := newNamespace(t)
	js := localenv.StartJetStream(t)
	_, jsc := js.Connect(t)
	m := startManager(t, js.URL(), ns, "--flush-window=3s")

	const completions = 50
	msgs := []sampleMessage{{
		Subject: "cellos.events.cell.busy",
		Data:    `{"specversion":"1.0","id":"e0","type":"dev.cellos.events.cell.lifecycle.v1.started","time":"2026-11-28T12:00:00Z","data":{"cellId":"busy","specId":"spec-1"}}`,
	}}
	for i := 1; i <= completions; i++ {
		msgs = append(msgs, sampleMessage{
			Subject: "cellos.events.cell.busy",
			Data:    fmt.Sprintf(`{"specversion":"1.0","id":"e%d","type":"dev.cellos.events.cell.command.v1.completed","data":{"cellId":"busy","exitCode":%d}}`, i, i),
		})
	}
	publish(t, jsc, msgs)

	harness.Eventually(t, time.Minute, "the Cell reflects every event", func() error {
		var cell cellosv1.Cell
		if err := controlPlane.Client.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: "busy"}, &cell); err != nil {
			return err
		}
		if cell.Status.LastAppliedSequence != completions+1 || cell.Status.ExitCode == nil || *cell.Status.ExitCode != completions {
			return fmt.Errorf("lastAppliedSequence %d, exitCode %v", cell.Status.LastAppliedSequence, cell.Status.ExitCode)
		}
		return nil
	})
	// The events were published well inside one flush window; a second
	// write is tolerated for a window boundary falling among them.
	if writes := m.Metric(t, `cellos_operator_status_writes_total{kind="Cell",result="ok"}`); writes < 1 || writes > 2 {
		t.Errorf("%d events on one Cell cost %v status writes, want 1 (at most 2)", completions+1, writes)
	}
}
