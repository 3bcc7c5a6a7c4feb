// Package harness runs the operator as its tests and tools meet it: the
// manager binary built once per process, started and stopped with its logs
// kept, its peak memory sampled, and its cursor read. It also holds the one
// oracle they judge it by (oracle.go): the fold of the stream, compared
// with every Formation and Cell.
//
// The helpers that fail a test take a TB, which *testing.T satisfies, so
// that callers without a *testing.T (tools such as hack/cellos-bench) can
// pass their own. The package still links "testing", through test/localenv.
package harness

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"sync"

	"cellos.dev/cellos-operator/test/localenv"
)

// build is one build of the manager, done at most once per process.
type build struct {
	once sync.Once
	path string
	err  error
}

var builds = map[bool]*build{false: {}, true: {}}

// BuildManager builds ./cmd/manager into dir, with the race detector when
// race is set, and returns the binary's path. Each flavour is built once per
// process: later calls return the first build, whatever their dir.
func BuildManager(dir string, race bool) (string, error) {
	b := builds[race]
	b.once.Do(func() {
		name := "manager"
		args := []string{"build"}
		if race {
			name += "-race"
			args = append(args, "-race")
		}
		b.path = filepath.Join(dir, name)
		cmd := exec.Command("go", append(args, "-o", b.path, "./cmd/manager")...)
		cmd.Dir = localenv.RepoRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("building the manager: %w\n%s", err, out)
		}
	})
	return b.path, b.err
}
