package harness

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// A manager is given the ports of its probes and metrics before it binds
// them. A port that was merely free a moment ago, as a listen on port 0
// finds, is in the kernel's ephemeral range: before the manager binds it,
// any outgoing connection or other listen on port 0 on the machine may take
// it (envtest, NATS, kube-apiserver and the other test packages all do), and
// the manager then exits at start with "address already in use". So the
// harness hands out ports from below the ephemeral range, which the kernel
// never hands out by itself, and claims each with a lock file that every
// harness process on the machine honours, held until the process ends.

// portsBelowEphemeral is how many ports under the ephemeral range the
// harness hands out.
const portsBelowEphemeral = 8192

// claimedPorts holds the lock files of the ports this process claimed, open
// until it ends, when the kernel releases their locks.
var claimedPorts struct {
	sync.Mutex
	files []*os.File
}

// FreePort returns a loopback address with a port no other harness has
// claimed, that nothing listens on, and that no listen on port 0 or
// outgoing connection will take: it stays this process's.
func FreePort() (string, error) {
	low, err := ephemeralLow()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(os.TempDir(), "cellos-harness-ports")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return "", err
	}
	first := low - portsBelowEphemeral
	start := rand.IntN(portsBelowEphemeral)
	for i := range portsBelowEphemeral {
		port := first + (start+i)%portsBelowEphemeral
		lock, ok, err := claimPort(dir, port)
		if err != nil {
			return "", err
		}
		if !ok {
			continue
		}
		// Kept claimed even when something outside the harness listens on
		// it, so that this process does not try it again.
		claimedPorts.Lock()
		claimedPorts.files = append(claimedPorts.files, lock)
		claimedPorts.Unlock()
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if l, err := net.Listen("tcp", addr); err == nil {
			_ = l.Close()
			return addr, nil
		}
	}
	return "", fmt.Errorf("no free port among the %d below %d", portsBelowEphemeral, low)
}

// claimPort takes the lock of port in dir without waiting: ok is false when
// another claimant holds it.
func claimPort(dir string, port int) (lock *os.File, ok bool, err error) {
	lock, err = os.OpenFile(filepath.Join(dir, strconv.Itoa(port)), os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return nil, false, err
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = lock.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("claiming port %d: %w", port, err)
	}
	return lock, true, nil
}

// ephemeralLow is the first port of the kernel's ephemeral range.
func ephemeralLow() (int, error) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, fmt.Errorf("reading the ephemeral port range: %w", err)
	}
	fields := strings.Fields(string(b))
	if len(fields) != 2 {
		return 0, fmt.Errorf("the ephemeral port range %q is not two ports", b)
	}
	low, err := strconv.Atoi(fields[0])
	if err != nil || low <= portsBelowEphemeral+1024 {
		return 0, fmt.Errorf("the ephemeral port range %q leaves no %d ports below it", b, portsBelowEphemeral)
	}
	return low, nil
}
