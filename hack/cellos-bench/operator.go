package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// operatorProc is bin/manager running as a process of its own, as in a Pod:
// its metrics over plain HTTP, its logs in a file.
type operatorProc struct {
	cmd     *exec.Cmd
	metrics string // host:port
	probe   string
	logPath string
	done    chan error
	started time.Time
}

// freeAddr returns a loopback address with a port free a moment ago.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// startOperator runs the manager binary against the cluster and NATS with
// its default tuning; extra flags come last.
func startOperator(bin string, cl *cluster, natsURL, logDir string, extra ...string) (*operatorProc, error) {
	metrics, err := freeAddr()
	if err != nil {
		return nil, err
	}
	probe, err := freeAddr()
	if err != nil {
		return nil, err
	}
	logFile, err := os.CreateTemp(logDir, "manager-*.log")
	if err != nil {
		return nil, err
	}
	args := append([]string{
		"--kubeconfig", cl.cp.KubeconfigPath,
		"--nats-url", natsURL,
		"--namespace", cl.ns,
		"--metrics-bind-address", metrics,
		"--metrics-secure=false",
		"--health-probe-bind-address", probe,
	}, extra...)
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "POD_NAMESPACE="+cl.ns)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	p := &operatorProc{cmd: cmd, metrics: metrics, probe: probe, logPath: logFile.Name(), done: make(chan error, 1), started: time.Now()}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	go func() {
		p.done <- cmd.Wait()
		logFile.Close()
	}()
	return p, nil
}

// waitReady waits for /readyz to answer 200.
func (p *operatorProc) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case err := <-p.done:
			p.done <- err
			return fmt.Errorf("the manager exited before it was ready: %v (log: %s)", err, p.logPath)
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		if resp, err := http.Get("http://" + p.probe + "/readyz"); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("the manager was not ready within %s (log: %s)", timeout, p.logPath)
}

// scrape reads the manager's metrics: each sample line by its series, as
// `name{labels}`.
func (p *operatorProc) scrape() (map[string]float64, error) {
	resp, err := http.Get("http://" + p.metrics + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for line := range strings.SplitSeq(string(body), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out, nil
}

// sum adds the samples of one metric, all label sets.
func sum(samples map[string]float64, name string) float64 {
	var s float64
	for series, v := range samples {
		if series == name || strings.HasPrefix(series, name+"{") {
			s += v
		}
	}
	return s
}

// stat is the manager's CPU time so far and peak RSS.
func (p *operatorProc) stat() (time.Duration, int64, error) {
	return procStat(p.cmd.Process.Pid)
}

// stop sends SIGTERM, as Kubernetes does, and waits for the exit.
func (p *operatorProc) stop() error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		return err
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		err := <-p.done
		return fmt.Errorf("the manager did not stop within 30s of SIGTERM, and was killed (%v; log: %s)", err, p.logPath)
	}
}
