package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/internal/checkpoint"
	"cellos.dev/cellos-operator/internal/jetstream"
	"cellos.dev/cellos-operator/test/harness"
	"cellos.dev/cellos-operator/test/localenv"
)

const (
	operatorUser     = "cellos-operator"
	operatorPassword = "op-pa55w0rd"
	adminUser        = "admin"
	adminPassword    = "admin-pa55w0rd"
	streamCreate     = "$JS.API.STREAM.CREATE.CELLOS_EVENTS"
	bucketCreate     = "$JS.API.STREAM.CREATE.OBJ_" + checkpoint.DefaultBucket
)

// documentedPermissions are the permissions docs/operations.md grants the
// operator's NATS user, read from its server configuration block.
func documentedPermissions(t *testing.T) *server.Permissions {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join(localenv.RepoRoot(), "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(doc), "exactly these permissions")
	if !ok {
		t.Fatal("docs/operations.md has no block of the operator's NATS permissions")
	}
	_, after, _ = strings.Cut(after, "```\n")
	block, _, ok := strings.Cut(after, "```")
	if !ok {
		t.Fatal("docs/operations.md: the NATS permissions block does not end")
	}
	t.Setenv("CELLOS_OPERATOR_PASSWORD", operatorPassword)
	var opts server.Options
	if err := opts.ProcessConfigString(block); err != nil {
		t.Fatalf("docs/operations.md: the NATS configuration does not load: %v\n%s", err, block)
	}
	if len(opts.Users) != 1 || opts.Users[0].Username != operatorUser || opts.Users[0].Permissions == nil {
		t.Fatalf("docs/operations.md: want one user %s with permissions, got %+v", operatorUser, opts.Users)
	}
	return opts.Users[0].Permissions
}

// violations collects what the server logs about permissions it refused.
type violations struct {
	mu    sync.Mutex
	lines []string
}

func (v *violations) Noticef(string, ...any) {}
func (v *violations) Warnf(string, ...any)   {}
func (v *violations) Debugf(string, ...any)  {}
func (v *violations) Tracef(string, ...any)  {}
func (v *violations) Fatalf(format string, a ...any) {
	v.Errorf(format, a...)
}

func (v *violations) Errorf(format string, a ...any) {
	line := fmt.Sprintf(format, a...)
	if strings.Contains(line, "Violation") && !strings.Contains(line, "authentication error") {
		v.mu.Lock()
		v.lines = append(v.lines, line)
		v.mu.Unlock()
	}
}

func (v *violations) check(t *testing.T) {
	t.Helper()
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.lines) > 0 {
		t.Errorf("the operator needed more than the documented permissions:\n%s", strings.Join(v.lines, "\n"))
	}
}

// natsServer requires a user and password of everyone: the operator with
// perms, and an administrator that may do anything. With tls it also
// requires TLS with client certificates.
func natsServer(t *testing.T, perms *server.Permissions, tls *localenv.TLSFiles) (*localenv.JetStreamServer, *violations) {
	t.Helper()
	v := &violations{}
	srv := localenv.StartJetStreamWith(t, localenv.ServerConfig{Logger: v, Configure: func(o *server.Options) {
		o.Users = []*server.User{
			{Username: operatorUser, Password: operatorPassword, Permissions: perms},
			{Username: adminUser, Password: adminPassword},
		}
		if tls != nil {
			if err := tls.RequireTLS(o, true); err != nil {
				t.Error(err)
			}
		}
	}})
	return srv, v
}

func adminConnect(t *testing.T, srv *localenv.JetStreamServer, tls *localenv.TLSFiles) natsjs.JetStream {
	t.Helper()
	opts := []nats.Option{nats.UserInfo(adminUser, adminPassword)}
	if tls != nil {
		opts = append(opts, nats.RootCAs(tls.CA), nats.ClientCert(tls.ClientCert, tls.ClientKey))
	}
	nc, err := nats.Connect(srv.URL(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := natsjs.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// probe reads one of the manager's readiness checks: nil when it passes.
func (m *manager) probe(name string) error {
	code, body, err := harness.HTTPGet("http://" + m.ProbeAddr + "/readyz/" + name)
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("/readyz/%s %d: %s", name, code, body)
	}
	return nil
}

func writeSecret(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// A wrong password makes the operator unready, saying why; it stays up, and
// connects once the Secret's file holds the right one. No password is ever
// in its logs or probes.
func TestManagerWithWrongNATSPasswordStaysUpUnready(t *testing.T) {
	ns := newNamespace(t)
	srv, v := natsServer(t, documentedPermissions(t), nil)
	passwordFile := writeSecret(t, "wrong-"+operatorPassword+"\n")
	m := startManager(t, srv.URL(), ns, "--nats-user", operatorUser, "--nats-password-file", passwordFile)

	var refused error
	// The probe says only that NATS is not connected; the log says why.
	harness.Eventually(t, time.Minute, "/readyz/nats fails, and the log says the credentials were refused", func() error {
		refused = m.probe("nats")
		logs := m.Logs()
		if refused == nil || !strings.Contains(strings.ToLower(logs), "authorization violation") || !strings.Contains(logs, "--nats-password-file") {
			return fmt.Errorf("readiness: %v", refused)
		}
		return nil
	})
	for _, private := range []string{operatorUser, passwordFile} {
		if strings.Contains(refused.Error(), private) {
			t.Errorf("/readyz/nats answers %q, which holds %q", refused, private)
		}
	}
	if m.Ready() == nil {
		t.Fatal("/readyz passes with a wrong password")
	}
	// nats.go gives up after the same authentication error twice, unless told
	// otherwise; the operator must keep trying, and not exit.
	time.Sleep(5 * time.Second)
	select {
	case <-m.Done():
		t.Fatalf("the manager exited with a wrong password: %v\n%s", m.Err(), m.Logs())
	default:
	}
	if !strings.Contains(m.Logs(), "Cannot connect to NATS; retrying") {
		t.Errorf("the log does not say why the operator is not ready:\n%s", m.Logs())
	}

	if err := os.WriteFile(passwordFile, []byte(operatorPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, time.Minute, "ready once the password is right", m.Ready)
	js := adminConnect(t, srv, nil)
	if _, err := js.Stream(context.Background(), jetstream.DefaultStreamName); err != nil {
		t.Errorf("the operator did not create the stream: %v", err)
	}
	harness.Stop(t, m.Manager)
	for _, secret := range []string{operatorPassword, "wrong-" + operatorPassword} {
		if strings.Contains(m.Logs(), secret) || strings.Contains(refused.Error(), secret) {
			t.Errorf("a password is in the logs or the probe")
		}
	}
	v.check(t)
}

// A password in the URL works, but is never logged.
func TestManagerNeverLogsTheURLsPassword(t *testing.T) {
	ns := newNamespace(t)
	srv, _ := natsServer(t, documentedPermissions(t), nil)
	url := strings.Replace(srv.URL(), "nats://", "nats://"+operatorUser+":wrong-"+operatorPassword+"@", 1)
	m := startManager(t, url, ns)
	harness.Eventually(t, time.Minute, "/readyz/nats fails, and the log says the credentials were refused", func() error {
		if err := m.probe("nats"); err == nil || !strings.Contains(m.Logs(), "the URL's userinfo") {
			return fmt.Errorf("readiness: %v", err)
		}
		return nil
	})
	harness.Stop(t, m.Manager)
	if strings.Contains(m.Logs(), operatorPassword) {
		t.Errorf("the URL's password is in the logs:\n%s", m.Logs())
	}
	if !strings.Contains(m.Logs(), strings.TrimPrefix(srv.URL(), "nats://")) {
		t.Errorf("the logs do not name the server:\n%s", m.Logs())
	}
}

// The operator projects a stream and publishes declared Formations' events
// over TLS with client certificates, with a password, and with nothing but
// the documented permissions less the two STREAM.CREATE: with
// --create-stream=false it waits, unready, for someone else to create the
// stream, and uses the checkpoint bucket someone else created.
func TestManagerWithLeastNATSPermissionsAndTLS(t *testing.T) {
	ns := newNamespace(t)
	ctx := context.Background()
	tls, err := localenv.WriteTLSFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	perms := documentedPermissions(t)
	if !slices.Contains(perms.Publish.Allow, streamCreate) {
		t.Fatalf("docs/operations.md does not grant %s", streamCreate)
	}
	if !slices.Contains(perms.Publish.Allow, bucketCreate) {
		t.Fatalf("docs/operations.md does not grant %s", bucketCreate)
	}
	perms.Publish.Allow = slices.DeleteFunc(perms.Publish.Allow, func(s string) bool { return s == streamCreate || s == bucketCreate })
	srv, v := natsServer(t, perms, &tls)
	args := []string{"--flush-window=50ms", "--create-stream=false",
		"--nats-user", operatorUser, "--nats-password-file", writeSecret(t, operatorPassword),
		"--nats-tls-ca", tls.CA, "--nats-tls-cert", tls.ClientCert, "--nats-tls-key", tls.ClientKey}
	m := startManager(t, srv.URL(), ns, args...)

	harness.Eventually(t, time.Minute, "unready while the stream is missing, saying so", func() error {
		if err := m.probe("nats"); err != nil {
			return err
		}
		if err := m.probe("projection"); err == nil || !strings.Contains(m.Logs(), "--create-stream=false") {
			return fmt.Errorf("readiness: %v", err)
		}
		return nil
	})
	js := adminConnect(t, srv, &tls)
	time.Sleep(2 * time.Second)
	if _, err := js.Stream(ctx, jetstream.DefaultStreamName); err == nil {
		t.Fatal("the operator created the stream with --create-stream=false")
	}

	// Whoever operates NATS creates the stream and the checkpoint bucket;
	// the operator projects the stream.
	if _, err := js.CreateObjectStore(ctx, natsjs.ObjectStoreConfig{Bucket: checkpoint.DefaultBucket}); err != nil {
		t.Fatal(err)
	}
	publish(t, js, readSample(t))
	want := readExpected(t)
	harness.Eventually(t, 2*time.Minute, "the sample stream projected", func() error { return matchesExpected(ns, want) })
	harness.Eventually(t, time.Minute, "ready", m.Ready)

	// A declared Formation: its created event is published, and deleting it
	// publishes its cancelled event.
	c := controlPlane.Client
	declared := &cellosv1.Formation{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "declared"},
		Spec: &cellosv1.FormationSpec{Coordinator: "lead", Members: []cellosv1.FormationMember{
			{Name: "lead"}, {Name: "worker", AuthorizedBy: "lead"},
		}},
	}
	if err := c.Create(ctx, declared); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(declared)
	harness.Eventually(t, time.Minute, "the created event published", func() error {
		var f cellosv1.Formation
		if err := c.Get(ctx, key, &f); err != nil {
			return err
		}
		if !meta.IsStatusConditionTrue(f.Status.Conditions, cellosv1.PublishedCondition) || f.Status.Phase != cellosv1.FormationPending {
			return fmt.Errorf("phase %q, conditions %+v", f.Status.Phase, f.Status.Conditions)
		}
		return nil
	})
	if err := c.Delete(ctx, declared); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, time.Minute, "the cancelled event published, and the Formation gone", func() error {
		var f cellosv1.Formation
		if err := c.Get(ctx, key, &f); client.IgnoreNotFound(err) != nil || err == nil {
			return fmt.Errorf("still there (%v): phase %q", err, f.Status.Phase)
		}
		return nil
	})

	// The consumer's watchdog checks it every 15 seconds (CONSUMER.INFO).
	time.Sleep(20 * time.Second)
	if err := m.Ready(); err != nil {
		t.Errorf("unready after the watchdog's check: %v", err)
	}
	harness.Stop(t, m.Manager)

	// The stop wrote a checkpoint, which the next start reads.
	m = startManager(t, srv.URL(), ns, args...)
	harness.Eventually(t, time.Minute, "ready, the fold restored from its checkpoint", func() error {
		if !strings.Contains(m.Logs(), "Restored the fold from its checkpoint") {
			return errors.New("not restored yet")
		}
		return m.Ready()
	})
	harness.Stop(t, m.Manager)
	v.check(t)
}
