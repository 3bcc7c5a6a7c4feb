package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"cellos.dev/cellos-operator/test/localenv"
)

// docs/operations.md describes every flag `manager --help` lists, and no
// flag the manager does not have.
func TestOperationsDocDescribesEveryFlag(t *testing.T) {
	help, _ := exec.Command(managerBin, "--help").CombinedOutput()
	flags := regexp.MustCompile(`(?m)^  -([a-z0-9-]+)`).FindAllStringSubmatch(string(help), -1)
	if len(flags) < 10 {
		t.Fatalf("manager --help lists %d flags:\n%s", len(flags), help)
	}
	doc, err := os.ReadFile(filepath.Join(localenv.RepoRoot(), "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	has := map[string]bool{}
	for _, f := range flags {
		has[f[1]] = true
		if !strings.Contains(string(doc), "`--"+f[1]) {
			t.Errorf("docs/operations.md does not describe --%s", f[1])
		}
	}
	for _, f := range regexp.MustCompile("`--([a-z0-9-]+)").FindAllStringSubmatch(string(doc), -1) {
		if !has[f[1]] {
			t.Errorf("docs/operations.md describes --%s, which the manager does not have", f[1])
		}
	}
}
