package harness

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"cellos.dev/cellos-operator/test/localenv"
)

// Config says how to run a manager.
type Config struct {
	// Name names the process in errors; "manager" when empty. Echoed logs
	// are written unprefixed: callers label them with Prefixed.
	Name   string
	Binary string
	// Namespace is the manager's own namespace, given as POD_NAMESPACE, as
	// the Deployment gives it.
	Namespace string
	// ProbeAddr and MetricsAddr are where it serves its probes and metrics;
	// a free loopback port each when empty.
	ProbeAddr, MetricsAddr string
	// Args are the manager's flags; the two addresses above override any
	// in them.
	Args []string
	// Echo, when set, also gets the manager's output.
	Echo io.Writer
	// OwnGroup runs the manager in a process group of its own, sent SIGTERM
	// when its parent dies: a terminal's Ctrl-C then reaches an interactive
	// tool alone, which stops the manager in order.
	OwnGroup bool
}

// Flags are the flags that run a manager against kubeconfig's cluster and
// natsURL, projecting into namespace, with its metrics in plain HTTP.
func Flags(kubeconfig, natsURL, namespace string) []string {
	return []string{
		"--kubeconfig", kubeconfig,
		"--nats-url", natsURL,
		"--namespace", namespace,
		"--metrics-secure=false",
	}
}

// Manager is one running manager process.
type Manager struct {
	Name                   string
	ProbeAddr, MetricsAddr string
	Started                time.Time
	cmd                    *exec.Cmd
	done                   chan struct{}
	err                    error // set before done closes
	logs                   *Buffer
	// hwmKiB is the highest VmHWM sampled while it ran.
	hwmKiB atomic.Int64
	// signalled tells that it was ended on purpose (Kill, Stop).
	signalled atomic.Bool
}

// Start runs a manager as c says.
func Start(c Config) (*Manager, error) {
	if c.Name == "" {
		c.Name = "manager"
	}
	m := &Manager{Name: c.Name, ProbeAddr: c.ProbeAddr, MetricsAddr: c.MetricsAddr, done: make(chan struct{}), logs: &Buffer{}}
	for _, addr := range []*string{&m.ProbeAddr, &m.MetricsAddr} {
		if *addr != "" {
			continue
		}
		free, err := localenv.FreePort()
		if err != nil {
			return nil, err
		}
		*addr = free
	}
	// After c.Args, which may hold a rendered Deployment's addresses: the
	// last of a flag given twice wins.
	args := slices.Concat(c.Args, []string{"--health-probe-bind-address", m.ProbeAddr, "--metrics-bind-address", m.MetricsAddr})
	m.cmd = exec.Command(c.Binary, args...)
	m.cmd.Env = append(os.Environ(), "POD_NAMESPACE="+c.Namespace)
	var out io.Writer = m.logs
	if c.Echo != nil {
		out = io.MultiWriter(m.logs, c.Echo)
	}
	m.cmd.Stdout, m.cmd.Stderr = out, out
	if c.OwnGroup {
		m.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	}
	m.Started = time.Now()
	if err := m.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", c.Name, err)
	}
	go func() {
		m.err = m.cmd.Wait()
		close(m.done)
	}()
	go m.sampleMemory()
	return m, nil
}

// Prefixed writes each write of a process to w after prefix.
func Prefixed(w io.Writer, prefix string) io.Writer {
	return writerFunc(func(p []byte) (int, error) {
		_, err := w.Write(append([]byte(prefix), p...))
		return len(p), err
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// Pid is the process's id.
func (m *Manager) Pid() int { return m.cmd.Process.Pid }

// Logs is what the manager wrote to stdout and stderr so far.
func (m *Manager) Logs() string { return m.logs.String() }

// Done is closed when the process has exited.
func (m *Manager) Done() <-chan struct{} { return m.done }

// Err is how the process exited, once Done is closed.
func (m *Manager) Err() error { return m.err }

// Running tells whether the process has not exited.
func (m *Manager) Running() bool {
	select {
	case <-m.done:
		return false
	default:
		return true
	}
}

// ExitedUnasked tells whether the process exited without Kill or Stop.
func (m *Manager) ExitedUnasked() bool {
	return !m.Running() && !m.signalled.Load()
}

// sampleMemory keeps the highest VmHWM of the process until it exits: the
// kernel forgets it with the process.
func (m *Manager) sampleMemory() {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		m.PeakMiB()
		select {
		case <-m.done:
			return
		case <-tick.C:
		}
	}
}

// PeakMiB is the process's peak resident memory as sampled.
func (m *Manager) PeakMiB() float64 {
	if kib, err := PeakRSSKiB(m.Pid()); err == nil && kib > m.hwmKiB.Load() {
		m.hwmKiB.Store(kib)
	}
	return float64(m.hwmKiB.Load()) / 1024
}

// Signal sends sig (SIGSTOP, SIGCONT) to the process.
func (m *Manager) Signal(sig syscall.Signal) error {
	if err := m.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signalling %s with %v: %w", m.Name, sig, err)
	}
	return nil
}

// Kill ends the manager with SIGKILL, as the OOM killer or a lost node
// would: no shutdown, no last commit.
func (m *Manager) Kill() {
	m.PeakMiB()
	m.signalled.Store(true)
	_ = m.cmd.Process.Signal(syscall.SIGKILL)
	<-m.done
}

// Stop sends SIGTERM, as Kubernetes does, and waits for a clean exit; it
// returns why the exit was not clean. When the process has exited already,
// it returns nil without signalling: ExitedUnasked tells of such an exit.
func (m *Manager) Stop() error {
	if !m.Running() {
		return nil
	}
	m.PeakMiB()
	m.signalled.Store(true)
	// A stopped process takes SIGTERM only once continued.
	_ = m.cmd.Process.Signal(syscall.SIGCONT)
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
		// Killed by the signal itself: it came before the manager set up
		// its handler, just after it started.
		early := m.err != nil && strings.Contains(m.err.Error(), "signal: terminated") && time.Since(m.Started) < 5*time.Second
		if m.err != nil && !early {
			return fmt.Errorf("%s exited uncleanly after SIGTERM: %w\n%s", m.Name, m.err, Tail(m.Logs(), 40))
		}
		return nil
	case <-time.After(30 * time.Second):
		_ = m.cmd.Process.Kill()
		<-m.done
		return fmt.Errorf("%s did not stop within 30s of SIGTERM", m.Name)
	}
}

// LoggedFaults lists the first panic, the first data race and the first
// fatal error in the logs, each with the 60 lines that begin with it: the
// report of a data race, which does not stop the process, is followed by
// whatever the manager logged next.
func (m *Manager) LoggedFaults() []string {
	var faults []string
	logs := m.Logs()
	for _, bad := range []string{"panic:", "WARNING: DATA RACE", "fatal error:"} {
		if i := strings.Index(logs, bad); i >= 0 {
			faults = append(faults, fmt.Sprintf("%s logged %q:\n%s", m.Name, bad, strings.Join(Head(strings.Split(logs[i:], "\n"), 60), "\n")))
		}
	}
	return faults
}

var httpClient = &http.Client{Timeout: 5 * time.Second}

// HTTPGet fetches url and returns its status and body.
func HTTPGet(url string) (int, string, error) {
	resp, err := httpClient.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// Ready is nil when the manager's /readyz says it is ready, else why not.
func (m *Manager) Ready() error {
	code, _, err := HTTPGet("http://" + m.ProbeAddr + "/readyz")
	if err != nil {
		return err
	}
	if code == http.StatusOK {
		return nil
	}
	// /readyz withholds the reasons; each check tells its own.
	var why []string
	for _, check := range []string{"nats", "projection"} {
		if code, body, err := HTTPGet("http://" + m.ProbeAddr + "/readyz/" + check); err == nil && code != http.StatusOK {
			why = append(why, check+": "+strings.TrimSpace(body))
		}
	}
	return fmt.Errorf("not ready (%d): %s", code, strings.Join(why, "; "))
}

// Metrics reads every sample of the manager's plain-HTTP metrics, by series.
func (m *Manager) Metrics() (map[string]float64, error) {
	code, body, err := HTTPGet("http://" + m.MetricsAddr + "/metrics")
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, errors.New("metrics: " + strconv.Itoa(code))
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

// Sum adds every series of metric name, all label sets, in samples as
// Metrics reads them.
func Sum(samples map[string]float64, name string) float64 {
	var s float64
	for series, v := range samples {
		if series == name || strings.HasPrefix(series, name+"{") {
			s += v
		}
	}
	return s
}

// Leads is nil when m holds the Lease, as its metrics say.
func (m *Manager) Leads() error {
	if !m.Running() {
		return fmt.Errorf("%s exited: %v\n%s", m.Name, m.Err(), Tail(m.Logs(), 20))
	}
	all, err := m.Metrics()
	if err != nil {
		return err
	}
	for series, v := range all {
		if strings.HasPrefix(series, "leader_election_master_status") && v == 1 {
			return nil
		}
	}
	return fmt.Errorf("%s does not lead", m.Name)
}
