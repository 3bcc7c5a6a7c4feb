package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/types"

	"cellos.dev/cellos-operator/internal/localenv"
)

// freePort returns a loopback address with a port that was free a moment ago.
func freePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// manager is the operator binary running against the test control plane.
type manager struct {
	cmd                *exec.Cmd
	probeAddr, metrics string
	done               chan error
	// logs is what the manager wrote to stdout and stderr.
	logs *syncBuffer
}

// syncBuffer is a bytes.Buffer that a process's output and a test may use
// at once.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startManager runs the manager built for the tests with the given extra
// flags; the test stops it with SIGTERM when it ends. Its metrics are plain
// HTTP (--metrics-secure=false), unless extra says otherwise.
func startManager(t testing.TB, natsURL, namespace string, extra ...string) *manager {
	t.Helper()
	return startManagerBinary(t, managerBin, natsURL, namespace, extra...)
}

func startManagerBinary(t testing.TB, bin, natsURL, namespace string, extra ...string) *manager {
	t.Helper()
	m := &manager{probeAddr: freePort(t), metrics: freePort(t), done: make(chan error, 1), logs: &syncBuffer{}}
	args := append([]string{
		"--kubeconfig", controlPlane.KubeconfigPath,
		"--nats-url", natsURL,
		"--namespace", namespace,
		"--health-probe-bind-address", m.probeAddr,
		"--metrics-bind-address", m.metrics,
		"--metrics-secure=false",
	}, extra...)
	m.cmd = exec.Command(bin, args...)
	m.cmd.Env = append(os.Environ(), "POD_NAMESPACE="+namespace)
	m.cmd.Stdout, m.cmd.Stderr = m.logs, m.logs
	if testing.Verbose() {
		out := io.MultiWriter(m.logs, os.Stdout)
		m.cmd.Stdout, m.cmd.Stderr = out, out
	}
	if err := m.cmd.Start(); err != nil {
		t.Fatalf("starting manager: %v", err)
	}
	go func() { m.done <- m.cmd.Wait() }()
	t.Cleanup(func() { m.stop(t) })
	return m
}

// stop sends SIGTERM, as Kubernetes does, and waits for a clean exit.
func (m *manager) stop(t testing.TB) {
	t.Helper()
	if m.cmd.ProcessState != nil {
		return
	}
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-m.done:
		if err != nil {
			t.Errorf("manager exited uncleanly: %v", err)
		}
	case <-time.After(30 * time.Second):
		_ = m.cmd.Process.Kill()
		t.Errorf("manager did not stop within 30s of SIGTERM")
	}
}

func httpGet(url string) (int, string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// eventually polls cond until it holds or the timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not true after %s: %v", what, timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// ready is nil when the manager's /readyz says it is ready.
func (m *manager) ready() error {
	code, body, err := httpGet("http://" + m.probeAddr + "/readyz")
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("readyz %d: %s", code, body)
	}
	return nil
}

func TestManagerStartsReadyAndLeads(t *testing.T) {
	ns := newNamespace(t)
	js := localenv.StartJetStream(t)
	m := startManager(t, js.URL(), ns, "--leader-elect")

	eventually(t, time.Minute, "manager ready", m.ready)
	eventually(t, time.Minute, "manager holds the Lease", func() error {
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
	code, body, err := httpGet("http://" + m.metrics + "/metrics")
	if err != nil || code != http.StatusOK || !strings.Contains(body, "leader_election_master_status") {
		t.Fatalf("metrics endpoint: code %d, err %v, leader metric present: %v", code, err, strings.Contains(body, "leader_election_master_status"))
	}
}

func TestManagerNotReadyWithoutNATS(t *testing.T) {
	ns := newNamespace(t)
	js := localenv.StartJetStream(t)
	m := startManager(t, js.URL(), ns)
	eventually(t, time.Minute, "manager ready", m.ready)
	js.Stop()
	eventually(t, time.Minute, "manager not ready without NATS", func() error {
		if m.ready() == nil {
			return fmt.Errorf("still ready")
		}
		return nil
	})
	js.Restart()
	eventually(t, time.Minute, "manager ready again", m.ready)
}
