package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/test/harness"
	"cellos.dev/cellos-operator/test/localenv"
)

// TestChartDeploymentRunsTheManager runs the manager as the chart's
// Deployment says, against a NATS that requires TLS with client
// certificates and a password: with the Deployment's own args, the Secrets
// its volumes name written where it mounts them (the kubelet's part), and
// the chart's ServiceAccount, impersonated, with the chart's RBAC. It
// projects the sample stream into the projection namespace the chart
// creates, and serves its metrics over HTTPS only to a client bound to the
// chart's metrics-reader ClusterRole, with the serving certificate from the
// Secret metrics.certSecret names.
func TestChartDeploymentRunsTheManager(t *testing.T) {
	ns := newNamespace(t)
	// A projection namespace of the test's own: stream ids are global.
	projection := ns + "-projection"
	emptyOnCleanup(t, projection)
	ctx := context.Background()
	c := controlPlane.Client
	certs, err := localenv.WriteTLSFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	const natsUser, natsPassword = "cellos-operator", "chart-test-password"
	srv := localenv.StartJetStreamWith(t, localenv.ServerConfig{Configure: func(o *server.Options) {
		o.Users = []*server.User{{Username: natsUser, Password: natsPassword}}
		if err := certs.RequireTLS(o, true); err != nil {
			t.Error(err)
		}
	}})

	// The Secrets the values name, as whoever installs the chart makes them.
	read := func(file string) []byte {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for name, data := range map[string]map[string][]byte{
		"nats-password": {"password": []byte(natsPassword)},
		"nats-ca":       {"ca.crt": read(certs.CA)},
		"nats-client":   {"tls.crt": read(certs.ClientCert), "tls.key": read(certs.ClientKey), "unused": []byte("x")},
		"metrics-tls":   {"tls.crt": read(certs.ServerCert), "tls.key": read(certs.ServerKey)},
	} {
		if err := c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Data: data}); err != nil {
			t.Fatal(err)
		}
	}
	const release = "tls"
	applyServerSide(t, render(t, release, ns,
		"--set", "nats.url="+srv.URL(),
		"--set", "nats.user.name="+natsUser, "--set", "nats.user.password.secret.name=nats-password",
		"--set", "nats.tls.enabled=true", "--set", "nats.tls.ca.secret.name=nats-ca",
		"--set", "nats.tls.clientCert.secret.name=nats-client",
		"--set", "metrics.certSecret=metrics-tls",
		"--set", "projectionNamespace="+projection))
	var projectionNS corev1.Namespace
	if err := c.Get(ctx, types.NamespacedName{Name: projection}, &projectionNS); err != nil {
		t.Fatalf("the chart did not create the projection namespace: %v", err)
	}
	if projectionNS.Annotations["helm.sh/resource-policy"] != "keep" {
		t.Errorf("the projection namespace is not kept on uninstall: annotations %v", projectionNS.Annotations)
	}

	var deploy appsv1.Deployment
	if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: release + "-cellos-operator-controller-manager"}, &deploy); err != nil {
		t.Fatal(err)
	}
	pod := deploy.Spec.Template.Spec
	container := pod.Containers[0]
	args := kubeletMounts(t, ns, pod, container)
	if env := container.Env; len(env) == 0 || env[0].Name != "POD_NAMESPACE" || env[0].ValueFrom == nil {
		t.Fatalf("the Deployment does not tell the manager its namespace: %v", env)
	}
	sa := "system:serviceaccount:" + ns + ":" + pod.ServiceAccountName
	kubeconfig := impersonatingKubeconfig(t, sa, []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"})
	// The harness gives loopback ports for the probes and metrics; the rest
	// as rendered.
	m := runManager(t, harness.Config{Namespace: ns, Args: append(args, "--kubeconfig="+kubeconfig)})
	harness.Eventually(t, time.Minute, "manager ready", m.Ready)

	nc, err := nats.Connect(srv.URL(), nats.UserInfo(natsUser, natsPassword), nats.RootCAs(certs.CA), nats.ClientCert(certs.ClientCert, certs.ClientKey))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := natsjs.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	want := readExpected(t)
	publish(t, js, readSample(t))
	harness.Eventually(t, time.Minute, "objects match the expected projection", func() error { return matchesExpected(projection, want) })
	waitForCursor(t, ns, want.LastSequence)
	var inRelease cellosv1.FormationList
	if err := c.List(ctx, &inRelease, client.InNamespace(ns)); err != nil || len(inRelease.Items) > 0 {
		t.Errorf("the release's namespace holds %d Formations (%v), want none", len(inRelease.Items), err)
	}

	// Metrics: HTTPS, to a client allowed by the metrics-reader ClusterRole.
	scraper := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "scraper"}}
	if err := c.Create(ctx, scraper); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: ns + "-scraper"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: release + "-cellos-operator-metrics-reader"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: scraper.Name}},
	}
	if err := c.Create(ctx, binding); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Delete(context.Background(), binding) })
	token := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](600)}}
	if err := c.SubResource("token").Create(ctx, scraper, token); err != nil {
		t.Fatal(err)
	}
	if code, _ := chartScrape(t, certs.CA, m.MetricsAddr, ""); code != http.StatusUnauthorized {
		t.Errorf("metrics without a token: HTTP %d, want 401", code)
	}
	harness.Eventually(t, 30*time.Second, "metrics served to the scraper", func() error {
		code, body := chartScrape(t, certs.CA, m.MetricsAddr, token.Status.Token)
		if code != http.StatusOK || !strings.Contains(body, "cellos_operator_cursor_sequence") {
			return fmt.Errorf("HTTP %d: %.200s", code, body)
		}
		return nil
	})

	harness.Stop(t, m.Manager)
	logs := m.Logs()
	if strings.Contains(logs, natsPassword) {
		t.Error("the manager logged the NATS password")
	}
	if strings.Contains(strings.ToLower(logs), "forbidden") {
		t.Errorf("the manager was refused something:\n%s", grepLines(logs, "forbidden"))
	}
}

// kubeletMounts does the kubelet's part for the container: it writes each
// Secret volume's items into a folder of the test's, and returns the
// container's args with every mount path replaced by that folder. It fails
// the test when an arg names a file under /etc that no mount provides.
func kubeletMounts(t *testing.T, ns string, pod corev1.PodSpec, container corev1.Container) []string {
	t.Helper()
	root := t.TempDir()
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
	}
	args := append([]string(nil), container.Args...)
	for _, vm := range container.VolumeMounts {
		v, ok := volumes[vm.Name]
		if !ok || v.Secret == nil {
			t.Fatalf("mount %s: no Secret volume %q", vm.MountPath, vm.Name)
		}
		var secret corev1.Secret
		if err := controlPlane.Client.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: v.Secret.SecretName}, &secret); err != nil {
			t.Fatalf("volume %s: %v", vm.Name, err)
		}
		dir := filepath.Join(root, vm.Name)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		for _, item := range v.Secret.Items {
			data, ok := secret.Data[item.Key]
			if !ok {
				t.Fatalf("volume %s: Secret %s has no key %q", vm.Name, secret.Name, item.Key)
			}
			if err := os.WriteFile(filepath.Join(dir, item.Path), data, 0o400); err != nil {
				t.Fatal(err)
			}
		}
		for i := range args {
			if strings.HasSuffix(args[i], "="+vm.MountPath) {
				args[i] = strings.TrimSuffix(args[i], vm.MountPath) + dir
			}
			args[i] = strings.ReplaceAll(args[i], "="+vm.MountPath+"/", "="+dir+"/")
		}
	}
	for _, a := range args {
		if strings.Contains(a, "=/etc/") {
			t.Fatalf("arg %s names a file no volume mounts", a)
		}
	}
	return args
}

// chartScrape GETs /metrics over HTTPS, trusting only the CA in caFile,
// with a bearer token unless it is empty.
func chartScrape(t *testing.T, caFile, addr, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "https://"+addr+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	pool := x509.NewCertPool()
	ca, err := os.ReadFile(caFile)
	if err != nil || !pool.AppendCertsFromPEM(ca) {
		t.Fatalf("reading CA %s: %v", caFile, err)
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
	}}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}
