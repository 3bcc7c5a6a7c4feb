// Package localenv starts the real parts that the tests and the playground run
// against: a kube-apiserver with etcd (envtest) that has the cellos CRDs
// installed, and an embedded NATS JetStream server.
package localenv

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
)

// ControlPlane is a running kube-apiserver and etcd with the CRDs installed.
type ControlPlane struct {
	// Config reaches the API server as an administrator.
	Config *rest.Config
	// Client is a client for Config with the operator's scheme.
	Client client.Client
	// Scheme knows the built-in kinds and cellos.dev/v1.
	Scheme *k8sruntime.Scheme
	// KubeconfigPath is a kubeconfig file for Config, for kubectl and the manager binary.
	KubeconfigPath string
}

// RepoRoot is the root of this repository, found from this source file so
// that tests work from any package directory.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Binary is the path of a tool built into the repository's bin/ folder.
func Binary(name string) string {
	return filepath.Join(RepoRoot(), "bin", name)
}

// StartControlPlane starts kube-apiserver and etcd from bin/ (or from
// KUBEBUILDER_ASSETS), installs the CRDs from config/crd/bases, and stops it
// all when the test ends. `make test` builds the binaries first.
func StartControlPlane(tb testing.TB) *ControlPlane {
	tb.Helper()
	cp, stop, err := NewControlPlane("")
	if err != nil {
		tb.Fatalf("starting control plane: %v", err)
	}
	tb.Cleanup(stop)
	return cp
}

// NewControlPlane is StartControlPlane for callers without a testing.TB (a
// TestMain, the playground): it returns the function that stops it. The
// certificates, etcd's data and the kubeconfig go in dir, or in a temporary
// folder removed on stop when dir is empty.
func NewControlPlane(dir string) (cp *ControlPlane, stop func(), err error) {
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		assets = filepath.Join(RepoRoot(), "bin")
	}
	cleanup := func() {}
	if dir == "" {
		if dir, err = os.MkdirTemp("", "cellos-controlplane-"); err != nil {
			return nil, nil, err
		}
		cleanup = func() { _ = os.RemoveAll(dir) }
	}
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join(RepoRoot(), "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: assets,
	}
	env.ControlPlane.GetAPIServer().CertDir = filepath.Join(dir, "apiserver")
	env.ControlPlane.Etcd = &envtest.Etcd{DataDir: filepath.Join(dir, "etcd")}
	for _, d := range []string{env.ControlPlane.APIServer.CertDir, env.ControlPlane.Etcd.DataDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			cleanup()
			return nil, nil, err
		}
	}
	cfg, err := env.Start()
	if err != nil {
		cleanup()
		return nil, nil, fmt.Errorf("starting kube-apiserver and etcd from %s: %w", assets, err)
	}
	stop = func() {
		_ = env.Stop()
		cleanup()
	}
	defer func() {
		if err != nil {
			stop()
		}
	}()

	scheme := k8sruntime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, nil, err
	}
	if err := cellosv1.AddToScheme(scheme); err != nil {
		return nil, nil, err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, nil, err
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, env.KubeConfig, 0o600); err != nil {
		return nil, nil, err
	}
	return &ControlPlane{Config: cfg, Client: c, Scheme: scheme, KubeconfigPath: kubeconfig}, stop, nil
}
