package localenv

import (
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// A port handed to a manager must still be free when the manager binds it,
// however busy the machine: no listen on port 0 may take it meanwhile (an
// envtest, a NATS server, another test package), nor may an outgoing
// connection. When FreePort gave a port that was free a moment ago, one of
// the first 700 listens on port 0 took it, in each of 3 runs.
func TestFreePortIsNotTakenByAListenOnPortZero(t *testing.T) {
	handed := handOut(t, 4)
	for i := range 10_000 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		_ = l.Close()
		if handed[addr] {
			t.Fatalf("listen %d on port 0 took %s, a port FreePort had handed out", i, addr)
		}
	}
}

// envHandOutPorts makes the test binary a second test process, which
// prints the ports FreePort hands it.
const envHandOutPorts = "CELLOS_TEST_HAND_OUT_PORTS"

// Two test processes, such as test/e2e and test/reliability run side by side
// by go test, never get the same port while both hold it.
func TestFreePortIsNotHandedToAnotherProcess(t *testing.T) {
	if os.Getenv(envHandOutPorts) != "" {
		for addr := range handOut(t, 300) {
			os.Stdout.WriteString(addr + "\n")
		}
		return
	}
	mine := handOut(t, 300)
	child := exec.Command(os.Args[0], "-test.run=^TestFreePortIsNotHandedToAnotherProcess$", "-test.count=1")
	child.Env = append(os.Environ(), envHandOutPorts+"=1")
	out, err := child.Output()
	if err != nil {
		t.Fatalf("the second process: %v\n%s", err, out)
	}
	var theirs int
	for _, addr := range strings.Fields(string(out)) {
		if !strings.HasPrefix(addr, "127.0.0.1:") {
			continue
		}
		theirs++
		if mine[addr] {
			t.Errorf("both processes were handed %s", addr)
		}
	}
	if theirs != 300 {
		t.Fatalf("the second process printed %d ports, want 300:\n%s", theirs, out)
	}
}

// handOut is n addresses from FreePort.
func handOut(t *testing.T, n int) map[string]bool {
	t.Helper()
	handed := map[string]bool{}
	for range n {
		addr, err := FreePort()
		if err != nil {
			t.Fatal(err)
		}
		handed[addr] = true
	}
	return handed
}
