package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"cellos.dev/cellos-operator/test/harness"
	"cellos.dev/cellos-operator/test/localenv"
)

// scrape reads the secure metrics endpoint with token (none when empty).
func scrape(addr, token string) (int, string, error) {
	req, err := http.NewRequest(http.MethodGet, "https://"+addr+"/metrics", nil)
	if err != nil {
		return 0, "", err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	// The manager's certificate is self-signed: it is not what is tested.
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// serviceAccountToken creates a ServiceAccount in ns and returns a token of
// it from the TokenRequest API.
func serviceAccountToken(t *testing.T, ns, name string) string {
	t.Helper()
	ctx := context.Background()
	c := controlPlane.Client
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	if err := c.Create(ctx, sa); err != nil {
		t.Fatal(err)
	}
	expiry := int64(600)
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &expiry}}
	if err := c.SubResource("token").Create(ctx, sa, req); err != nil {
		t.Fatalf("requesting a token of %s: %v", name, err)
	}
	if req.Status.Token == "" {
		t.Fatalf("no token for %s", name)
	}
	return req.Status.Token
}

// By default the metrics are HTTPS, and only for clients the API server
// authenticates and authorizes: a ServiceAccount bound to the metrics-reader
// ClusterRole of config/rbac scrapes them, anyone else is refused.
func TestMetricsAreSecureByDefault(t *testing.T) {
	ns := newNamespace(t)
	ctx := context.Background()
	c := controlPlane.Client
	js := localenv.StartJetStream(t)
	m := startManager(t, js.URL(), ns, "--metrics-secure=true")
	harness.Eventually(t, time.Minute, "manager ready", m.Ready)

	b, err := os.ReadFile(filepath.Join(localenv.RepoRoot(), "config", "rbac", "metrics_reader_role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var role rbacv1.ClusterRole
	if err := yaml.UnmarshalStrict(b, &role); err != nil {
		t.Fatal(err)
	}
	role.Name = "metrics-reader-" + ns
	if err := c.Create(ctx, &role); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Delete(context.Background(), &role) })
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "metrics-reader-" + ns},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: "prometheus"}},
	}
	if err := c.Create(ctx, binding); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Delete(context.Background(), binding) })
	reader := serviceAccountToken(t, ns, "prometheus")
	stranger := serviceAccountToken(t, ns, "stranger")

	// The endpoint starts beside the probes, with a certificate made at start.
	harness.Eventually(t, time.Minute, "the metrics endpoint listens", func() error {
		_, _, err := scrape(m.MetricsAddr, "")
		return err
	})
	if code, _, err := harness.HTTPGet("http://" + m.MetricsAddr + "/metrics"); err == nil && code == http.StatusOK {
		t.Error("metrics served over plain HTTP")
	}
	for _, tc := range []struct {
		who, token string
		want       int
	}{
		{"no token", "", http.StatusUnauthorized},
		// controller-runtime's filter answers a token the TokenReview
		// rejects with an error: 500, "Authentication failed".
		{"an invalid token", "not-a-token", http.StatusInternalServerError},
		{"a ServiceAccount without the role", stranger, http.StatusForbidden},
	} {
		code, body, err := scrape(m.MetricsAddr, tc.token)
		if err != nil || code != tc.want || strings.Contains(body, "cellos_operator_") {
			t.Errorf("scrape with %s: code %d (want %d), err %v, metrics served: %v", tc.who, code, tc.want, err, strings.Contains(body, "cellos_operator_"))
		}
	}
	// RBAC changes take a moment to reach the authorizer's cache.
	harness.Eventually(t, time.Minute, "the metrics-reader scrapes", func() error {
		code, body, err := scrape(m.MetricsAddr, reader)
		if err != nil {
			return err
		}
		if code != http.StatusOK || !strings.Contains(body, "cellos_operator_cursor_sequence") {
			return fmt.Errorf("code %d: %.200s", code, body)
		}
		return nil
	})
}
