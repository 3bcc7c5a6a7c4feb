package reliability

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
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

// manager is one bin/manager process.
type manager struct {
	name                   string
	cmd                    *exec.Cmd
	probeAddr, metricsAddr string
	started                time.Time
	done                   chan struct{}
	err                    error // set before done closes
	logs                   *syncBuffer
	// hwmKiB is the highest VmHWM sampled while it ran.
	hwmKiB atomic.Int64
	// signalled tells that the test ended it on purpose (SIGKILL, SIGTERM).
	signalled atomic.Bool
}

// managerConfig says how to run a manager.
type managerConfig struct {
	name       string // for logs; "manager" when empty
	natsURL    string
	namespace  string
	kubeconfig string // the administrator's when empty
	args       []string
}

// startManager runs bin/manager against the control plane with metrics in
// plain HTTP; the test stops it with SIGTERM when it ends, if it still runs.
func startManager(t testing.TB, c managerConfig) *manager {
	t.Helper()
	if c.name == "" {
		c.name = "manager"
	}
	if c.kubeconfig == "" {
		c.kubeconfig = cp.KubeconfigPath
	}
	m := &manager{name: c.name, probeAddr: freePort(t), metricsAddr: freePort(t), done: make(chan struct{}), logs: &syncBuffer{}}
	args := append([]string{
		"--kubeconfig", c.kubeconfig,
		"--nats-url", c.natsURL,
		"--namespace", c.namespace,
		"--health-probe-bind-address", m.probeAddr,
		"--metrics-bind-address", m.metricsAddr,
		"--metrics-secure=false",
	}, c.args...)
	m.cmd = exec.Command(managerBin, args...)
	m.cmd.Env = append(os.Environ(), "POD_NAMESPACE="+c.namespace)
	var out io.Writer = m.logs
	if os.Getenv("RELIABILITY_MANAGER_LOGS") != "" {
		out = io.MultiWriter(m.logs, prefixed(os.Stdout, c.name+" | "))
	}
	m.cmd.Stdout, m.cmd.Stderr = out, out
	m.started = time.Now()
	if err := m.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", c.name, err)
	}
	go func() {
		m.err = m.cmd.Wait()
		close(m.done)
	}()
	go m.sampleMemory()
	t.Cleanup(func() {
		m.stop(t)
		m.checkLogs(t)
	})
	return m
}

// prefixed writes each write of a process to w after prefix.
func prefixed(w io.Writer, prefix string) io.Writer {
	return writerFunc(func(p []byte) (int, error) {
		_, err := w.Write(append([]byte(prefix), p...))
		return len(p), err
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// sampleMemory keeps the highest VmHWM of the process until it exits.
func (m *manager) sampleMemory() {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		if kib := vmHWM(m.cmd.Process.Pid); kib > m.hwmKiB.Load() {
			m.hwmKiB.Store(kib)
		}
		select {
		case <-m.done:
			return
		case <-tick.C:
		}
	}
}

// peakMiB is the process's peak resident memory as sampled.
func (m *manager) peakMiB() float64 {
	if kib := vmHWM(m.cmd.Process.Pid); kib > m.hwmKiB.Load() {
		m.hwmKiB.Store(kib)
	}
	return float64(m.hwmKiB.Load()) / 1024
}

// vmHWM reads a process's peak resident set size, in KiB, from /proc; 0
// when the process is gone.
func vmHWM(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}

// running tells whether the process has not exited.
func (m *manager) running() bool {
	select {
	case <-m.done:
		return false
	default:
		return true
	}
}

// kill ends the manager with SIGKILL, as the OOM killer or a lost node
// would: no shutdown, no last commit.
func (m *manager) kill(t testing.TB) {
	t.Helper()
	m.peakMiB()
	m.signalled.Store(true)
	_ = m.cmd.Process.Signal(syscall.SIGKILL)
	<-m.done
}

// signal sends sig (SIGSTOP, SIGCONT) to the process.
func (m *manager) signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	if err := m.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signalling %s with %v: %v", m.name, sig, err)
	}
}

// stop sends SIGTERM, as Kubernetes does, and waits for a clean exit.
func (m *manager) stop(t testing.TB) {
	t.Helper()
	if !m.running() {
		return
	}
	m.peakMiB()
	m.signalled.Store(true)
	// A stopped process takes SIGTERM only once continued.
	_ = m.cmd.Process.Signal(syscall.SIGCONT)
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
		// Killed by the signal itself: it came before the manager set up
		// its handler, just after it started.
		early := m.err != nil && strings.Contains(m.err.Error(), "signal: terminated") && time.Since(m.started) < 5*time.Second
		if m.err != nil && !early {
			t.Errorf("%s exited uncleanly after SIGTERM: %v\n%s", m.name, m.err, tail(m.logs.String(), 40))
		}
	case <-time.After(30 * time.Second):
		_ = m.cmd.Process.Kill()
		<-m.done
		t.Errorf("%s did not stop within 30s of SIGTERM", m.name)
	}
}

// checkLogs fails the test on a panic or a data race in the manager's logs.
func (m *manager) checkLogs(t testing.TB) {
	t.Helper()
	logs := m.logs.String()
	for _, bad := range []string{"panic:", "WARNING: DATA RACE", "fatal error:"} {
		if i := strings.Index(logs, bad); i >= 0 {
			t.Errorf("%s logged %q:\n%s", m.name, bad, tail(logs[i:], 60))
		}
	}
}

// exitedUnasked tells whether the process exited without the test ending it.
func (m *manager) exitedUnasked() bool {
	return !m.running() && !m.signalled.Load()
}

// tail is the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

var httpClient = &http.Client{Timeout: 5 * time.Second}

func httpGet(url string) (int, string, error) {
	resp, err := httpClient.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// ready is nil when the manager's /readyz says it is ready, else why not.
func (m *manager) ready() error {
	code, _, err := httpGet("http://" + m.probeAddr + "/readyz")
	if err != nil {
		return err
	}
	if code == http.StatusOK {
		return nil
	}
	// /readyz withholds the reasons; each check tells its own.
	var why []string
	for _, check := range []string{"nats", "projection"} {
		if code, body, err := httpGet("http://" + m.probeAddr + "/readyz/" + check); err == nil && code != http.StatusOK {
			why = append(why, check+": "+strings.TrimSpace(body))
		}
	}
	return fmt.Errorf("not ready (%d): %s", code, strings.Join(why, "; "))
}

// metrics reads every sample of the manager's metrics, by series.
func (m *manager) metrics() (map[string]float64, error) {
	code, body, err := httpGet("http://" + m.metricsAddr + "/metrics")
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("metrics: %d", code)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(body, "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out, nil
}

// metric reads one series, 0 when absent.
func (m *manager) metric(t testing.TB, series string) float64 {
	t.Helper()
	all, err := m.metrics()
	if err != nil {
		t.Fatalf("%s: %v", m.name, err)
	}
	return all[series]
}

// sum adds every series of metric name.
func sum(all map[string]float64, name string) float64 {
	var n float64
	for series, v := range all {
		if series == name || strings.HasPrefix(series, name+"{") {
			n += v
		}
	}
	return n
}

// eventually polls cond until it holds or the timeout passes, and returns
// how long it took.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() error) time.Duration {
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
