package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/types"

	"cellos.dev/cellos-operator/test/harness"
	"cellos.dev/cellos-operator/test/localenv"
)

// manager is the operator binary running against the test control plane.
type manager struct{ *harness.Manager }

// startManager runs the manager built for the tests against the test control
// plane, with the given extra flags and its metrics in plain HTTP.
func startManager(tb testing.TB, natsURL, namespace string, extra ...string) *manager {
	tb.Helper()
	return runManager(tb, harness.Config{Namespace: namespace,
		Args: append(harness.Flags(controlPlane.KubeconfigPath, natsURL, namespace), extra...)})
}

// startManagerAs runs the manager with a kubeconfig of the test's choosing,
// and its metrics served as the chart serves them.
func startManagerAs(tb testing.TB, kubeconfig, natsURL, namespace string, extra ...string) *manager {
	tb.Helper()
	return runManager(tb, harness.Config{Namespace: namespace,
		Args: append([]string{"--kubeconfig", kubeconfig, "--nats-url", natsURL}, extra...)})
}

// runManager runs the manager as c says, the tests' build unless c names
// another; the test stops it with SIGTERM when it ends. Its logs go to
// stdout too under go test -v.
func runManager(tb testing.TB, c harness.Config) *manager {
	tb.Helper()
	if c.Binary == "" {
		c.Binary = managerBin
	}
	if testing.Verbose() {
		c.Echo = os.Stdout
	}
	return &manager{harness.StartManager(tb, c)}
}

func TestManagerStartsReadyAndLeads(t *testing.T) {
	ns := newNamespace(t)
	js := localenv.StartJetStream(t)
	m := startManager(t, js.URL(), ns, "--leader-elect")

	harness.Eventually(t, time.Minute, "manager ready", m.Ready)
	harness.Eventually(t, time.Minute, "manager holds the Lease", func() error {
		var lease coordinationv1.Lease
		key := types.NamespacedName{Namespace: ns, Name: "cellos-operator.cellos.dev"}
		if err := controlPlane.Client.Get(context.Background(), key, &lease); err != nil {
			return err
		}
		if lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity == "" {
			return fmt.Errorf("lease has no holder")
		}
		return nil
	})
	code, body, err := harness.HTTPGet("http://" + m.MetricsAddr + "/metrics")
	if err != nil || code != http.StatusOK || !strings.Contains(body, "leader_election_master_status") {
		t.Fatalf("metrics endpoint: code %d, err %v, leader metric present: %v", code, err, strings.Contains(body, "leader_election_master_status"))
	}
}

func TestManagerNotReadyWithoutNATS(t *testing.T) {
	ns := newNamespace(t)
	js := localenv.StartJetStream(t)
	m := startManager(t, js.URL(), ns)
	harness.Eventually(t, time.Minute, "manager ready", m.Ready)
	js.Stop()
	harness.Eventually(t, time.Minute, "manager not ready without NATS", func() error {
		if m.Ready() == nil {
			return fmt.Errorf("still ready")
		}
		return nil
	})
	js.Restart()
	harness.Eventually(t, time.Minute, "manager ready again", m.Ready)
}

// TestManagerRefusesAnUnwatchedNamespace: the manager exits at start, and
// says why, when --namespace, or the operator's namespace it defaults to, is
// not among --watch-namespaces, or when these are not namespace names.
func TestManagerRefusesAnUnwatchedNamespace(t *testing.T) {
	cases := []struct {
		name, want string
		args       []string
	}{
		{"--namespace not watched", `--namespace "team-c" is not among --watch-namespaces (team-a,team-b)`,
			[]string{"--watch-namespaces=team-a,team-b", "--namespace=team-c"}},
		{"its own namespace not watched", `--namespace (by default the operator's own namespace) "team-ops" is not among --watch-namespaces (team-a)`,
			[]string{"--watch-namespaces=team-a"}},
		{"not a namespace name", `--watch-namespaces: "Team_B" is not a namespace name`,
			[]string{"--watch-namespaces=team-a,Team_B", "--namespace=team-a"}},
		{"no namespace at all", `--watch-namespaces " , " names no namespace`,
			[]string{"--watch-namespaces= , ", "--namespace=team-a"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, managerBin, append([]string{"--kubeconfig", controlPlane.KubeconfigPath,
				"--nats-url", "nats://127.0.0.1:1", "--health-probe-bind-address=0", "--metrics-bind-address=0"}, c.args...)...)
			cmd.Env = append(os.Environ(), "POD_NAMESPACE=team-ops")
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 1 {
				t.Fatalf("%v: exited with %v, want status 1\n%s", c.args, err, out)
			}
			if !strings.Contains(string(out), strings.ReplaceAll(c.want, `"`, `\"`)) {
				t.Errorf("%v: the log does not say %s:\n%s", c.args, c.want, out)
			}
		})
	}
}
