package cloudevent

import (
	"testing"
	"time"
)

// What the operator and the simulator write, the projection must read back.
func TestEnvelopeDecodes(t *testing.T) {
	at := time.Date(2026, 11, 28, 13, 0, 0, 0, time.FixedZone("CET", 3600))
	payload, err := NewEnvelope("5b0e8f4c", "cellos-operator", "dev.cellos.events.cell.formation.v1.created",
		"cellos.events.formation.x", at, map[string]string{"formationId": "x"}).Encode()
	if err != nil {
		t.Fatal(err)
	}
	ev, err := Decode(nil, payload)
	if err != nil {
		t.Fatal(err)
	}
	if ev.ID != "urn:cellos:event:5b0e8f4c" || ev.Source != "cellos-operator" || ev.Subject != "cellos.events.formation.x" ||
		ev.Type != "dev.cellos.events.cell.formation.v1.created" || ev.Time == nil || !ev.Time.Equal(at) {
		t.Errorf("decoded %+v", ev)
	}
	if got := string(ev.Data); got != `{"formationId":"x"}` {
		t.Errorf("data %s", got)
	}
}
