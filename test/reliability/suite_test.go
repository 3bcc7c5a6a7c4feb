// Package reliability is the operator's reliability suite: crashes, broker
// and API server outages, poison input, stream gaps, leader failover and
// overload, each against a real kube-apiserver with etcd (envtest) and a
// real JetStream server, with the operator running as a process of the
// manager binary, which harness.BuildManager builds into a temporary folder
// when the suite starts, where a crash is the point.
//
// After every scenario one oracle decides: every Formation and Cell in the
// operator's namespace equals the pure fold (internal/fold) of the messages
// the stream holds, none missing and none extra, and a watch recorded during
// the run saw no object's lastAppliedSequence and no cursor decrease within
// one stream.
//
// `go test ./test/reliability` (and so `make test`) runs small versions of
// every scenario; RELIABILITY_SCALE=full (`make test-reliability`) runs the
// full ones, and prints the table of docs/reliability.md.
package reliability

import (
	"fmt"
	"os"
	"testing"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"cellos.dev/cellos-operator/test/harness"
)

var (
	cp         *controlPlane
	managerBin string
)

func TestMain(m *testing.M) {
	os.Exit(runSuite(m))
}

func runSuite(m *testing.M) int {
	// The tests' clients log nothing worth reading; the manager logs its own.
	ctrllog.SetLogger(logr.Discard())
	dir, err := os.MkdirTemp("", "cellos-reliability-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	// The manager gets the race detector when the tests have it (make test):
	// a data race then makes it exit with an error, which the scenario
	// reports. make test-reliability runs without it, so that the memory
	// figures are the operator's own.
	if managerBin, err = harness.BuildManager(dir, raceEnabled); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}

	plane, stop, err := startControlPlane(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer stop()
	cp = plane
	code := m.Run()
	results.print(os.Stdout)
	if path := os.Getenv("RELIABILITY_REPORT"); path != "" {
		if err := results.write(path); err != nil {
			fmt.Fprintln(os.Stderr, "writing the report:", err)
			return 1
		}
	}
	return code
}
