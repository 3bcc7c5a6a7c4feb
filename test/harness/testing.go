package harness

import (
	"context"
	"errors"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"cellos.dev/cellos-operator/internal/cursor"
)

// TB is the part of testing.TB the helpers use: *testing.T satisfies it,
// and callers without one (tools such as the bench) pass their own.
type TB interface {
	Helper()
	Cleanup(func())
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
}

// StartManager runs a manager as c says; when the test ends it stops it,
// and fails the test on an unclean exit after SIGTERM, or on a panic, data
// race or fatal error in its logs. A process that exited before the test
// ended is not checked for how it exited (Stop returns nil for it); its
// logs still are.
func StartManager(t TB, c Config) *Manager {
	t.Helper()
	m, err := Start(c)
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(func() {
		reportEarlyExit(t, m)
		if err := m.Stop(); err != nil {
			t.Errorf("%v", err)
		}
		for _, fault := range m.LoggedFaults() {
			t.Errorf("%s", fault)
		}
	})
	return m
}

// reportEarlyExit logs, for a test that failed, that m had exited without
// being asked to, and how: a test that waits for status from a manager
// that is gone fails only with what it waited for.
func reportEarlyExit(t TB, m *Manager) {
	failed, ok := t.(interface {
		Failed() bool
		Logf(format string, args ...any)
	})
	if ok && failed.Failed() && m.ExitedUnasked() {
		failed.Logf("%s exited before the test ended, unasked: %v\n%s", m.Name, m.Err(), Tail(m.Logs(), 30))
	}
}

// Metric reads one series of the manager's metrics, 0 when absent.
func (m *Manager) Metric(t TB, series string) float64 {
	t.Helper()
	all, err := m.Metrics()
	if err != nil {
		t.Fatalf("%s: %v", m.Name, err)
	}
	return all[series]
}

// CursorName is the name of the manager's cursor ConfigMap, its default.
const CursorName = "cellos-projection-cursor"

// Cursor reads the cursor ConfigMap of ns; ok is false when there is none.
func Cursor(ctx context.Context, c client.Client, ns string) (p cursor.Position, ok bool, err error) {
	cm := &cursor.ConfigMap{Client: c, Key: types.NamespacedName{Namespace: ns, Name: CursorName}}
	return cm.Load(ctx)
}

// CursorReached is nil once the cursor of ns has reached want.Sequence and,
// when want names a stream, names that stream: a cursor of an earlier
// stream of the same name, however high, does not count.
func CursorReached(ctx context.Context, c client.Client, ns string, want cursor.Position) error {
	p, ok, err := Cursor(ctx, c, ns)
	switch {
	case err != nil:
		return err
	case !ok:
		return errors.New("no cursor")
	case want.Stream != "" && (p.Stream != want.Stream || !p.StreamCreated.Equal(want.StreamCreated)):
		return fmt.Errorf("the cursor is at %d of stream %s created %s, want one created %s",
			p.Sequence, p.Stream, p.StreamCreated.Format(time.RFC3339Nano), want.StreamCreated.Format(time.RFC3339Nano))
	case p.Sequence < want.Sequence:
		return fmt.Errorf("the cursor stays at %d, below sequence %d", p.Sequence, want.Sequence)
	}
	return nil
}

// Eventually polls cond every 100 ms until it holds, and returns how long
// it took; once the timeout passes, it fails the test (Fatalf) with cond's
// last error.
func Eventually(t TB, timeout time.Duration, what string, cond func() error) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		err := cond()
		if err == nil {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not true after %s: %v", what, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Stop stops m as Manager.Stop does and fails the test on an unclean exit.
func Stop(t TB, m *Manager) {
	t.Helper()
	if err := m.Stop(); err != nil {
		t.Errorf("%v", err)
	}
}

// WaitForCursor waits until CursorReached holds for want, and fails the test
// when it does not within timeout.
func WaitForCursor(t TB, c client.Client, ns string, want cursor.Position, timeout time.Duration) {
	t.Helper()
	Eventually(t, timeout, fmt.Sprintf("the cursor reaches sequence %d", want.Sequence), func() error {
		return CursorReached(context.Background(), c, ns, want)
	})
}
