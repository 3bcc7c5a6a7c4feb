// Package playground runs the whole system on one machine, with nothing but
// Go installed: a control plane, JetStream, the operator and a simulated
// cellos supervisor. It is what `make dev` starts.
package playground

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"

	"cellos.dev/cellos-operator/internal/jetstream"
	"cellos.dev/cellos-operator/internal/simulator"
	"cellos.dev/cellos-operator/test/localenv"
)

// Config says where the playground keeps its state and what it runs.
type Config struct {
	// StateDir holds the kubeconfig, etcd's data and the JetStream store. It
	// is emptied at start: every playground begins from nothing.
	StateDir string
	// NATSPort is the port of the embedded JetStream server; 0 picks a free one.
	NATSPort int
	// ManagerBin and KubectlBin are the operator and kubectl binaries.
	ManagerBin, KubectlBin string
	// Simulation is what the simulated supervisor plays.
	Simulation simulator.Config
	// Rate is how many events per second the simulator publishes.
	Rate float64
	// Steps receives one line per step; Logs receives the operator's logs.
	Steps, Logs io.Writer
}

// Run starts everything, prints what to run next, and stops everything when
// ctx ends, leaving no process behind.
func Run(ctx context.Context, cfg Config) error {
	step := func(format string, args ...any) { fmt.Fprintf(cfg.Steps, "==> "+format+"\n", args...) }
	if err := os.RemoveAll(cfg.StateDir); err != nil {
		return fmt.Errorf("emptying state folder: %w", err)
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("creating state folder: %w", err)
	}

	step("Starting the control plane: kube-apiserver and etcd")
	cp, stopControlPlane, err := localenv.NewControlPlane(filepath.Join(cfg.StateDir, "controlplane"))
	if err != nil {
		return err
	}
	defer stopControlPlane()
	kubeconfig := filepath.Join(cfg.StateDir, "kubeconfig")
	if err := copyFile(cp.KubeconfigPath, kubeconfig); err != nil {
		return err
	}
	step("Control plane up at %s, with the Formation and Cell CRDs installed", cp.Config.Host)

	ns, err := localenv.RunJetStream(filepath.Join(cfg.StateDir, "jetstream"), cfg.NATSPort, nil)
	if err != nil {
		return err
	}
	defer func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	}()
	natsURL := ns.ClientURL()
	step("JetStream up at %s", natsURL)

	op, err := startOperator(ctx, cfg, kubeconfig, natsURL)
	if err != nil {
		return err
	}
	defer op.stop()
	step("Operator ready (metrics at http://%s/metrics)", op.metrics)

	nc, err := nats.Connect(natsURL, nats.Name("cellos-sim"))
	if err != nil {
		return fmt.Errorf("connecting the simulator to NATS: %w", err)
	}
	defer nc.Close()
	js, err := natsjs.New(nc)
	if err != nil {
		return fmt.Errorf("opening JetStream: %w", err)
	}
	if _, err := jetstream.EnsureStream(ctx, js, jetstream.DefaultStreamName); err != nil {
		return err
	}
	gen := simulator.NewGenerator(cfg.Simulation)
	simDone := make(chan error, 1)
	go func() {
		_, err := simulator.Publish(ctx, js, gen.All(), cfg.Rate)
		simDone <- err
	}()
	step("Simulated supervisor playing cellos lifecycles at %g events/s (seed %d)", cfg.Rate, cfg.Simulation.Seed)

	fmt.Fprintf(cfg.Steps, `
Watch the projection:
  %s --kubeconfig %s get formations,cells -w
Publish your own events with the nats CLI:
  nats --server %s pub cellos.events.demo '{"specversion":"1.0","id":"1","type":"dev.cellos.events.cell.lifecycle.v1.started","data":{"cellId":"my-cell"}}'
Press Ctrl-C to stop everything.

`, cfg.KubectlBin, kubeconfig, natsURL)

	select {
	case <-ctx.Done():
	case <-op.exited:
		return fmt.Errorf("the operator exited: %v", op.err)
	case err := <-simDone:
		if err != nil && ctx.Err() == nil {
			return fmt.Errorf("the simulator stopped: %w", err)
		}
		<-ctx.Done()
	}
	step("Stopping")
	return nil
}

// operator is the operator binary running as a child process.
type operator struct {
	cmd     *exec.Cmd
	metrics string
	// exited is closed when the operator has exited, with err its exit status.
	exited chan struct{}
	err    error
}

func startOperator(ctx context.Context, cfg Config, kubeconfig, natsURL string) (*operator, error) {
	probes, err := freeAddr()
	if err != nil {
		return nil, err
	}
	metrics, err := freeAddr()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(cfg.ManagerBin,
		"--kubeconfig", kubeconfig,
		"--nats-url", natsURL,
		"--namespace", "default",
		"--health-probe-bind-address", probes,
		"--metrics-bind-address", metrics,
		// Plain HTTP: the playground's metrics are for whoever runs it.
		"--metrics-secure=false",
		"--zap-encoder=console",
		"--zap-time-encoding=rfc3339",
	)
	cmd.Stdout, cmd.Stderr = cfg.Logs, cfg.Logs
	// Its own process group: Ctrl-C reaches the playground alone, which then
	// stops the operator in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the operator: %w", err)
	}
	op := &operator{cmd: cmd, metrics: metrics, exited: make(chan struct{})}
	go func() {
		op.err = cmd.Wait()
		close(op.exited)
	}()

	ready := "http://" + probes + "/readyz"
	for {
		if resp, err := http.Get(ready); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return op, nil
			}
		}
		select {
		case <-op.exited:
			return nil, fmt.Errorf("the operator exited before it was ready: %v", op.err)
		case <-ctx.Done():
			op.stop()
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// stop sends SIGTERM, as Kubernetes does, and waits; a hung operator is killed.
func (o *operator) stop() {
	if o.cmd.ProcessState != nil {
		return
	}
	_ = o.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-o.exited:
	case <-time.After(30 * time.Second):
		_ = o.cmd.Process.Kill()
		<-o.exited
	}
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return "127.0.0.1:" + strconv.Itoa(l.Addr().(*net.TCPAddr).Port), nil
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", to, err)
	}
	return nil
}
