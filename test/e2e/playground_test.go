package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/test/harness"
	"cellos.dev/cellos-operator/test/localenv"
)

// TestPlayground runs `make dev`'s entry point as a user would, waits for the
// projection to show, presses Ctrl-C and checks that nothing is left running.
func TestPlayground(t *testing.T) {
	dir := t.TempDir()
	devBin := filepath.Join(dir, "cellos-dev")
	build := exec.Command("go", "build", "-o", devBin, "./hack/cellos-dev")
	build.Dir = localenv.RepoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building cellos-dev: %v\n%s", err, out)
	}
	state := filepath.Join(dir, "state")
	cmd := exec.Command(devBin, "--state-dir", state, "--nats-port", "0", "--rate", "50",
		"--manager", managerBin, "--kubectl", localenv.Binary("kubectl"), "--seed", "7")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if testing.Verbose() {
		cmd.Stderr = os.Stderr
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
		}
	})

	natsURL := waitForLine(t, lines, regexp.MustCompile(`JetStream up at (nats://\S+)`))
	waitForLine(t, lines, regexp.MustCompile(`Operator ready`))
	watch := waitForLine(t, lines, regexp.MustCompile(`(\S+kubectl --kubeconfig \S+ get formations,cells -w)`))
	if !strings.Contains(watch, filepath.Join(state, "kubeconfig")) {
		t.Errorf("the playground suggests %q, not its kubeconfig", watch)
	}

	kubeconfig := filepath.Join(state, "kubeconfig")
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: controlPlane.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 2*time.Minute, "Formations and Cells appear and a Formation ends", func() error {
		var formations cellosv1.FormationList
		var cells cellosv1.CellList
		if err := c.List(context.Background(), &formations); err != nil {
			return err
		}
		if err := c.List(context.Background(), &cells); err != nil {
			return err
		}
		for _, f := range formations.Items {
			if (f.Status.Phase == cellosv1.FormationSucceeded || f.Status.Phase == cellosv1.FormationFailed) && len(cells.Items) > 0 {
				return nil
			}
		}
		return fmt.Errorf("%d Formations, %d Cells, none ended", len(formations.Items), len(cells.Items))
	})

	// What must be gone after Ctrl-C: every process that works in the state
	// folder (kube-apiserver, etcd, the operator) and every port.
	pids := processesMentioning(t, state)
	if len(pids) < 3 {
		t.Fatalf("expected kube-apiserver, etcd and the operator to run in %s, found %d processes", state, len(pids))
	}
	apiserver, err := url.Parse(cfg.Host)
	if err != nil {
		t.Fatal(err)
	}
	natsAddr, err := url.Parse(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	ports := []string{apiserver.Host, natsAddr.Host}

	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	for range lines {
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("the playground exited with %v after Ctrl-C", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the playground did not stop within a minute of Ctrl-C")
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); err == nil {
			t.Errorf("process %d is still running after Ctrl-C", pid)
		}
	}
	if left := processesMentioning(t, state); len(left) > 0 {
		t.Errorf("processes left behind: %v", left)
	}
	for _, addr := range ports {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Errorf("port %s is still taken after Ctrl-C: %v", addr, err)
			continue
		}
		_ = l.Close()
	}
}

// waitForLine reads the playground's output until a line matches re, and
// returns the first submatch.
func waitForLine(t *testing.T, lines <-chan string, re *regexp.Regexp) string {
	t.Helper()
	timeout := time.After(2 * time.Minute)
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("the playground ended before printing %q", re)
			}
			if m := re.FindStringSubmatch(line); m != nil {
				return m[len(m)-1]
			}
		case <-timeout:
			t.Fatalf("the playground did not print %q within 2 minutes", re)
		}
	}
}

// processesMentioning lists the live processes whose command line holds s.
func processesMentioning(t *testing.T, s string) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !strings.Contains(string(cmdline), s) {
			continue
		}
		if stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); err == nil && strings.Contains(string(stat), ") Z ") {
			continue // a zombie has exited; its parent has yet to reap it
		}
		pids = append(pids, pid)
	}
	return pids
}
