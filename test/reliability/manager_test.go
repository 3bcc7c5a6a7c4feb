package reliability

import (
	"cmp"
	"os"
	"testing"

	"cellos.dev/cellos-operator/test/harness"
)

// manager is one process of the manager binary that harness.BuildManager
// builds into a temporary folder at the suite's start (managerBin).
type manager = harness.Manager

// managerConfig says how to run a manager.
type managerConfig struct {
	name       string // for logs; "manager" when empty
	natsURL    string
	namespace  string
	kubeconfig string // the administrator's when empty
	args       []string
}

// startManager runs the suite's manager binary (managerBin) against the
// control plane with metrics in plain HTTP; the test stops it with SIGTERM
// when it ends, if it still runs.
func startManager(tb testing.TB, c managerConfig) *manager {
	tb.Helper()
	if c.kubeconfig == "" {
		c.kubeconfig = cp.KubeconfigPath
	}
	cfg := harness.Config{Name: c.name, Binary: managerBin, Namespace: c.namespace,
		Args: append(harness.Flags(c.kubeconfig, c.natsURL, c.namespace), c.args...)}
	if os.Getenv("RELIABILITY_MANAGER_LOGS") != "" {
		cfg.Echo = harness.Prefixed(os.Stdout, cmp.Or(c.name, "manager")+" | ")
	}
	return harness.StartManager(tb, cfg)
}
