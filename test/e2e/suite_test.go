// Package e2e tests the operator as users meet it: the CRDs in a real
// kube-apiserver, kubectl against them, and the manager binary.
package e2e

import (
	"fmt"
	"os"
	"testing"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"cellos.dev/cellos-operator/test/harness"
	"cellos.dev/cellos-operator/test/localenv"
)

var (
	controlPlane *localenv.ControlPlane
	managerBin   string
	// binDir holds the binaries the suite builds; it goes when the suite ends.
	binDir string
)

func TestMain(m *testing.M) {
	os.Exit(runSuite(m))
}

func runSuite(m *testing.M) int {
	// The tests' clients log nothing worth reading; the manager logs its own.
	ctrllog.SetLogger(logr.Discard())
	dir, err := os.MkdirTemp("", "cellos-e2e-")
	binDir = dir
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	// With the race detector: a data race makes the manager exit with an
	// error, which fails the test that stops it.
	if managerBin, err = harness.BuildManager(dir, true); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}

	cp, stop, err := localenv.NewControlPlane("")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer stop()
	controlPlane = cp
	return m.Run()
}
