package reliability

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/test/localenv"
)

// controlPlane is kube-apiserver and etcd from bin/, as test/localenv
// starts them, plus what this suite needs and localenv does not offer: the
// API server stopped and started again on the same port, certificates and
// etcd (localenv.NewControlPlane keeps its envtest.Environment to itself),
// an audit log, and users of their own for the replicas whose writes the
// audit log must tell apart.
type controlPlane struct {
	env            *envtest.Environment
	Config         *rest.Config
	Client         client.Client
	Scheme         *k8sruntime.Scheme
	KubeconfigPath string
	// AuditLog is the API server's audit log: every write by a member of
	// replicaGroup, with its request body.
	AuditLog string
	dir      string

	mu sync.Mutex
}

// replicaGroup is the group of the users the failover scenario gives each
// replica; the audit policy records their writes.
const replicaGroup = "cellos:replicas"

// auditPolicy records, at level Request (with the body, so that the written
// lastAppliedSequence can be read back), every write of a replica user to
// Formations, Cells and their status, ConfigMaps, Leases and Events; and
// nothing else, so that the log stays small.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted]
rules:
- level: Request
  userGroups: ["` + replicaGroup + `"]
  verbs: [create, update, patch, delete]
  resources:
  - group: cellos.dev
  - group: ""
    resources: [configmaps]
- level: Metadata
  userGroups: ["` + replicaGroup + `"]
  verbs: [create, update, patch, delete]
  resources:
  - group: coordination.k8s.io
  - group: ""
    resources: [events]
  - group: events.k8s.io
- level: None
`

// startControlPlane starts etcd and kube-apiserver with the CRDs and the
// audit log in dir.
func startControlPlane(dir string) (*controlPlane, func(), error) {
	cp := &controlPlane{dir: dir, AuditLog: filepath.Join(dir, "audit.log")}
	policy := filepath.Join(dir, "audit-policy.yaml")
	if err := os.WriteFile(policy, []byte(auditPolicy), 0o600); err != nil {
		return nil, nil, err
	}
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		assets = filepath.Join(localenv.RepoRoot(), "bin")
	}
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join(localenv.RepoRoot(), "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: assets,
	}
	api := env.ControlPlane.GetAPIServer()
	// A fixed folder keeps the serving certificates, the client CA and the
	// service account keys across a restart: clients need no new kubeconfig.
	api.CertDir = filepath.Join(dir, "apiserver")
	api.StartTimeout = 2 * time.Minute
	api.Configure().
		Set("audit-policy-file", policy).
		Set("audit-log-path", cp.AuditLog).
		Set("audit-log-maxsize", "0").
		Set("audit-log-format", "json")
	env.ControlPlane.Etcd = &envtest.Etcd{DataDir: filepath.Join(dir, "etcd")}
	for _, d := range []string{api.CertDir, env.ControlPlane.Etcd.DataDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, nil, err
		}
	}
	cfg, err := env.Start()
	if err != nil {
		return nil, nil, fmt.Errorf("starting kube-apiserver and etcd from %s: %w", assets, err)
	}
	stop := func() { _ = env.Stop() }
	cp.env, cp.Config = env, cfg
	cp.Scheme = k8sruntime.NewScheme()
	if err := clientgoscheme.AddToScheme(cp.Scheme); err != nil {
		stop()
		return nil, nil, err
	}
	if err := cellosv1.AddToScheme(cp.Scheme); err != nil {
		stop()
		return nil, nil, err
	}
	if cp.Client, err = client.New(cfg, client.Options{Scheme: cp.Scheme}); err != nil {
		stop()
		return nil, nil, err
	}
	cp.KubeconfigPath = filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(cp.KubeconfigPath, env.KubeConfig, 0o600); err != nil {
		stop()
		return nil, nil, err
	}
	return cp, stop, nil
}

// StopAPIServer stops kube-apiserver, leaving etcd up: SIGTERM, and
// SIGKILL when it has not exited 5 seconds later. It stops listening at
// once, but with clients connected its graceful shutdown can outlast that.
func (cp *controlPlane) StopAPIServer() error {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	api := cp.env.ControlPlane.APIServer
	api.StopTimeout = 5 * time.Second
	err := api.Stop()
	if err != nil && !strings.Contains(err.Error(), "timeout waiting for process") {
		return err
	}
	// Killed: wait until its port is free for the restart.
	addr := net.JoinHostPort(api.Address, api.Port)
	for range 100 {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err != nil {
			return nil
		}
		c.Close()
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("kube-apiserver still listens on %s", addr)
}

// StartAPIServer starts kube-apiserver again on the same port, with the
// same certificates, etcd and flags, and waits until it is healthy.
func (cp *controlPlane) StartAPIServer() error {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return cp.env.ControlPlane.APIServer.Start()
}

// userKubeconfig provisions a user in groups system:masters and
// replicaGroup, and writes a kubeconfig for it: the audit log names it.
func (cp *controlPlane) userKubeconfig(name string) (string, error) {
	u, err := cp.env.ControlPlane.AddUser(envtest.User{Name: name, Groups: []string{"system:masters", replicaGroup}}, nil)
	if err != nil {
		return "", err
	}
	b, err := u.KubeConfig()
	if err != nil {
		return "", err
	}
	path := filepath.Join(cp.dir, "kubeconfig-"+name)
	return path, os.WriteFile(path, b, 0o600)
}

// auditEvent is the part of an audit.k8s.io/v1 Event this suite reads.
type auditEvent struct {
	Stage string `json:"stage"`
	Verb  string `json:"verb"`
	User  struct {
		Username string `json:"username"`
	} `json:"user"`
	ObjectRef *struct {
		Resource    string `json:"resource"`
		Subresource string `json:"subresource"`
		Namespace   string `json:"namespace"`
		Name        string `json:"name"`
		APIGroup    string `json:"apiGroup"`
	} `json:"objectRef"`
	ResponseStatus *struct {
		Code int `json:"code"`
	} `json:"responseStatus"`
	RequestObject            json.RawMessage `json:"requestObject"`
	RequestReceivedTimestamp time.Time       `json:"requestReceivedTimestamp"`
}

// auditEvents reads the audit log's completed requests of user.
func (cp *controlPlane) auditEvents(user string) ([]auditEvent, error) {
	f, err := os.Open(cp.AuditLog)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []auditEvent
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var ev auditEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			continue // a line the API server is still writing
		}
		if ev.Stage == "ResponseComplete" && ev.User.Username == user {
			out = append(out, ev)
		}
	}
	return out, sc.Err()
}
