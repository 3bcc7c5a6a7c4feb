// Package playground runs the whole system on one machine, with nothing but
// Go installed: a control plane, JetStream, the operator and a simulated
// cellos supervisor. It is what `make dev` starts.
package playground

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"

	"cellos.dev/cellos-operator/internal/jetstream"
	"cellos.dev/cellos-operator/internal/simulator"
	"cellos.dev/cellos-operator/test/harness"
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
	defer func() { _ = op.Stop() }()
	step("Operator ready (metrics at http://%s/metrics)", op.MetricsAddr)

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
	case <-op.Done():
		return fmt.Errorf("the operator exited: %v", op.Err())
	case err := <-simDone:
		if err != nil && ctx.Err() == nil {
			return fmt.Errorf("the simulator stopped: %w", err)
		}
		<-ctx.Done()
	}
	step("Stopping")
	return nil
}

// startOperator runs the operator binary as a child process and waits
// until it is ready.
func startOperator(ctx context.Context, cfg Config, kubeconfig, natsURL string) (*harness.Manager, error) {
	op, err := harness.Start(harness.Config{
		Name: "operator", Binary: cfg.ManagerBin, Namespace: "default",
		// Plain HTTP metrics (harness.Flags): the playground's are for
		// whoever runs it.
		Args: append(harness.Flags(kubeconfig, natsURL, "default"), "--zap-encoder=console", "--zap-time-encoding=rfc3339"),
		Echo: cfg.Logs, OwnGroup: true,
	})
	if err != nil {
		return nil, err
	}
	for op.Ready() != nil {
		select {
		case <-op.Done():
			return nil, fmt.Errorf("the operator exited before it was ready: %v", op.Err())
		case <-ctx.Done():
			_ = op.Stop()
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return op, nil
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
