package harness

import (
	"fmt"
	"strings"
	"testing"
)

// A data race does not stop the manager, so more is logged after its
// report: the fault shown is the report itself, not the lines that follow.
func TestLoggedFaultsShowTheFaultItself(t *testing.T) {
	m := &Manager{Name: "manager", logs: &Buffer{}}
	fmt.Fprintln(m.logs, "started")
	fmt.Fprintln(m.logs, "WARNING: DATA RACE")
	fmt.Fprintln(m.logs, "Write at 0x00c000 by goroutine 7:")
	for i := range 100 {
		fmt.Fprintf(m.logs, "reconciled %d\n", i)
	}
	faults := m.LoggedFaults()
	if len(faults) != 1 {
		t.Fatalf("got %d faults, want 1: %q", len(faults), faults)
	}
	for _, want := range []string{"WARNING: DATA RACE", "Write at 0x00c000 by goroutine 7:", "... and 43 more"} {
		if !strings.Contains(faults[0], want) {
			t.Errorf("the fault does not show %q:\n%s", want, faults[0])
		}
	}
	if strings.Contains(faults[0], "started") {
		t.Errorf("the fault shows what came before it:\n%s", faults[0])
	}
}
