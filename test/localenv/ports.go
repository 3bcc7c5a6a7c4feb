package localenv

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

// Some ports are chosen before they are bound: a manager is given the ports
// of its probes and metrics on its command line, and a JetStream server
// that a test stops is started again on the port its clients know. A port
// that was merely free a moment ago, as a listen on port 0 finds, is in the
// kernel's ephemeral range: before it is bound again, any outgoing
// connection or other listen on port 0 on the machine may take it (envtest,
// NATS, kube-apiserver and the other test packages all do), and the manager
// then exits at start with "address already in use", or the server does not
// come back. So FreePort hands out ports from below the ephemeral range,
// which the kernel never hands out by itself, and claims each with a lock
// file that every test process on the machine honours, held until the
// process ends.

// portsBelowEphemeral is how many ports under the ephemeral range FreePort
// hands out.
const portsBelowEphemeral = 8192

// claimedPorts holds the lock files of the ports this process claimed, open
// until it ends, when the kernel releases their locks.
var claimedPorts struct {
	sync.Mutex
	files []*os.File
}

// FreePort returns a loopback address with a port no other test process has
// claimed, that nothing listens on, and that no listen on port 0 or
// outgoing connection will take: it stays this process's.
func FreePort() (string, error) {
	port, err := freePort()
	if err != nil {
		return "", err
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), nil
}

// freePort is FreePort's port.
func freePort() (int, error) {
	low, err := ephemeralLow()
	if err != nil {
		return 0, err
	}
	dir := filepath.Join(os.TempDir(), "cellos-test-ports")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return 0, err
	}
	first := low - portsBelowEphemeral
	start := rand.IntN(portsBelowEphemeral)
	for i := range portsBelowEphemeral {
		port := first + (start+i)%portsBelowEphemeral
		lock, ok, err := claimPort(dir, port)
		if err != nil {
			return 0, err
		}
		if !ok {
			continue
		}
		// Kept claimed even when something outside the tests listens on
		// it, so that this process does not try it again.
		claimedPorts.Lock()
		claimedPorts.files = append(claimedPorts.files, lock)
		claimedPorts.Unlock()
		if l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port))); err == nil {
			_ = l.Close()
			return port, nil
		}
	}
	return 0, fmt.Errorf("no free port among the %d below %d", portsBelowEphemeral, low)
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
