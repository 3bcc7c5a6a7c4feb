// Package testenv starts the real parts that integration tests run against: a
// kube-apiserver with etcd (envtest) that has the cellos CRDs installed, and an
// embedded NATS JetStream server.
package testenv

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
func StartControlPlane(t testing.TB) *ControlPlane {
	t.Helper()
	cp, stop, err := NewControlPlane()
	if err != nil {
		t.Fatalf("starting control plane: %v", err)
	}
	t.Cleanup(stop)
	return cp
}

// NewControlPlane is StartControlPlane for a TestMain, which has no testing.TB:
// it returns the function that stops it.
func NewControlPlane() (cp *ControlPlane, stop func(), err error) {
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		assets = filepath.Join(RepoRoot(), "bin")
	}
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join(RepoRoot(), "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: assets,
	}
	cfg, err := env.Start()
	if err != nil {
		return nil, nil, fmt.Errorf("starting kube-apiserver and etcd from %s: %w", assets, err)
	}
	dir, err := os.MkdirTemp("", "cellos-controlplane-")
	stop = func() {
		_ = env.Stop()
		_ = os.RemoveAll(dir)
	}
	defer func() {
		if err != nil {
			stop()
		}
	}()
	if err != nil {
		return nil, nil, err
	}

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
