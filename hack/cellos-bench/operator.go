package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"cellos.dev/cellos-operator/test/harness"
)

// operatorProc is bin/manager running as a process of its own, as in a Pod:
// its metrics over plain HTTP, its logs in a file.
type operatorProc struct {
	*harness.Manager
	logPath string
}

// startOperator runs the manager binary against the cluster and NATS with
// its default tuning; extra flags come last.
func startOperator(bin string, cl *cluster, natsURL, logDir string, extra ...string) (*operatorProc, error) {
	logFile, err := os.CreateTemp(logDir, "manager-*.log")
	if err != nil {
		return nil, err
	}
	m, err := harness.Start(harness.Config{Binary: bin, Namespace: cl.ns,
		Args: append(harness.Flags(cl.cp.KubeconfigPath, natsURL, cl.ns), extra...), Echo: logFile})
	if err != nil {
		logFile.Close()
		return nil, err
	}
	go func() {
		<-m.Done()
		logFile.Close()
	}()
	return &operatorProc{Manager: m, logPath: logFile.Name()}, nil
}

// waitReady waits for /readyz to answer 200.
func (p *operatorProc) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-p.Done():
			return fmt.Errorf("the manager exited before it was ready: %v (log: %s)", p.Err(), p.logPath)
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		if p.Ready() == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("the manager was not ready within %s (log: %s)", timeout, p.logPath)
}

// stat is the manager's CPU time so far and peak RSS, in bytes.
func (p *operatorProc) stat() (time.Duration, int64, error) {
	cpu, err1 := harness.CPUTime(p.Pid())
	kib, err2 := harness.PeakRSSKiB(p.Pid())
	return cpu, kib << 10, errors.Join(err1, err2)
}

// stop sends SIGTERM, as Kubernetes does, and waits for the exit.
func (p *operatorProc) stop() error {
	if err := p.Stop(); err != nil {
		return fmt.Errorf("%w (log: %s)", err, p.logPath)
	}
	return nil
}
