package natsconn

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"cellos.dev/cellos-operator/test/localenv"
)

// The secrets of the tests: none may appear in a log line or an error.
const (
	password = "pa55-w0rd"
	token    = "t0ken-s3cret"
)

// fast makes a test's connection retry without waiting.
var fast = []nats.Option{nats.ReconnectWait(20 * time.Millisecond), nats.ReconnectJitter(0, 0)}

// logBuffer collects log lines, for checks that no secret is in them.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) logger() logr.Logger {
	return funcr.New(func(prefix, args string) {
		b.mu.Lock()
		defer b.mu.Unlock()
		b.buf.WriteString(prefix + " " + args + "\n")
	}, funcr.Options{})
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// connect connects with o, logging into logs, and closes when the test ends.
func connect(t *testing.T, o *Options, logs *logBuffer) *Conn {
	t.Helper()
	if o.Getenv == nil {
		o.Getenv = env(nil)
	}
	c, err := Connect(o, t.Name(), logs.logger(), fast...)
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	t.Cleanup(c.Close)
	ctx, cancel := context.WithCancel(context.Background())
	c.ReportInterval = 20 * time.Millisecond
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = c.Start(ctx)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return c
}

// waitConnected fails the test unless c connects and can use JetStream.
func waitConnected(t *testing.T, c *Conn) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for c.Healthy() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("not connected: %v", c.Healthy())
		}
		time.Sleep(20 * time.Millisecond)
	}
	js, err := natsjs.New(c.NC)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateOrUpdateStream(ctx, natsjs.StreamConfig{Name: "S", Subjects: []string{"s.>"}}); err != nil {
		t.Fatalf("JetStream over the connection: %v", err)
	}
	if _, err := js.Publish(ctx, "s.1", []byte("x")); err != nil {
		t.Fatalf("publishing over the connection: %v", err)
	}
}

// waitRefused fails the test unless c reports an error that wraps want, or
// contains it when want is a string, and keeps retrying: the connection is
// not closed after many attempts.
func waitRefused(t *testing.T, c *Conn, want any) error {
	t.Helper()
	matches := func(err error) bool {
		switch w := want.(type) {
		case error:
			return errors.Is(err, w)
		case string:
			return strings.Contains(err.Error(), w)
		}
		return false
	}
	deadline := time.Now().Add(10 * time.Second)
	var err error
	for err = c.Healthy(); err == nil || !matches(err); err = c.Healthy() {
		if time.Now().After(deadline) {
			t.Fatalf("readiness says %v, want an error about %v", err, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// At 20ms between attempts, this is dozens of refusals; nats.go gives up
	// after two unless told otherwise.
	time.Sleep(500 * time.Millisecond)
	if status := c.NC.Status(); status == nats.CLOSED {
		t.Fatalf("the connection gave up (%s): %v", status, c.NC.LastError())
	}
	if c.Healthy() == nil {
		t.Fatal("connected with wrong credentials")
	}
	return err
}

func startServer(t *testing.T, configure func(*server.Options)) *localenv.JetStreamServer {
	t.Helper()
	return localenv.StartJetStreamWith(t, localenv.ServerConfig{Configure: configure})
}

func checkNoSecret(t *testing.T, logs *logBuffer, errs ...error) {
	t.Helper()
	text := logs.String()
	for _, err := range errs {
		if err != nil {
			text += err.Error()
		}
	}
	for _, secret := range []string{password, token, "wrong-" + password, "wrong-" + token} {
		if strings.Contains(text, secret) {
			t.Errorf("a secret is in the logs or an error:\n%s", text)
		}
	}
}

func TestUserAndPassword(t *testing.T) {
	srv := startServer(t, func(o *server.Options) { o.Username, o.Password = "operator", password })
	passwordFile := writeFile(t, "password", password+"\n")

	t.Run("from a file", func(t *testing.T) {
		var logs logBuffer
		waitConnected(t, connect(t, &Options{URL: srv.URL(), User: "operator", PasswordFile: passwordFile}, &logs))
		checkNoSecret(t, &logs)
	})
	t.Run("from the environment", func(t *testing.T) {
		var logs logBuffer
		o := &Options{URL: srv.URL(), User: "operator", Getenv: env(map[string]string{EnvPassword: password})}
		waitConnected(t, connect(t, o, &logs))
	})
	t.Run("wrong password: unready with the reason, retrying, then a corrected file connects", func(t *testing.T) {
		var logs logBuffer
		file := writeFile(t, "password", "wrong-"+password)
		c := connect(t, &Options{URL: srv.URL(), User: "operator", PasswordFile: file}, &logs)
		err := waitRefused(t, c, nats.ErrAuthorization)
		if !strings.Contains(strings.ToLower(err.Error()), "authorization violation") || !strings.Contains(err.Error(), `the server refused the credentials of --nats-user "operator" and --nats-password-file`) {
			t.Errorf("the reason is not clear: %v", err)
		}
		if !strings.Contains(logs.String(), "Cannot connect to NATS; retrying") || !strings.Contains(strings.ToLower(logs.String()), "authorization violation") {
			t.Errorf("the log does not say why:\n%s", logs.String())
		}
		if n := strings.Count(logs.String(), "Cannot connect to NATS"); n != 1 {
			t.Errorf("%d log lines for one reason, want 1:\n%s", n, logs.String())
		}
		// The Secret is corrected: the next attempt reads it again.
		if err := os.WriteFile(file, []byte(password), 0o600); err != nil {
			t.Fatal(err)
		}
		waitConnected(t, c)
		// The status listener logs the connection on its own goroutine, a
		// moment after the connection reports it.
		for deadline := time.Now().Add(time.Minute); !strings.Contains(logs.String(), "Connected to NATS"); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("the log does not say it connected:\n%s", logs.String())
			}
		}
		checkNoSecret(t, &logs, err)
	})
	t.Run("no credentials", func(t *testing.T) {
		var logs logBuffer
		err := waitRefused(t, connect(t, &Options{URL: srv.URL()}, &logs), nats.ErrAuthorization)
		if !strings.Contains(err.Error(), "no credentials: the server requires some") {
			t.Errorf("the reason is not clear: %v", err)
		}
	})
	t.Run("password in the URL is never logged", func(t *testing.T) {
		var logs logBuffer
		u := strings.Replace(srv.URL(), "nats://", "nats://operator:wrong-"+password+"@", 1)
		c := connect(t, &Options{URL: u}, &logs)
		err := waitRefused(t, c, nats.ErrAuthorization)
		checkNoSecret(t, &logs, err)
		if !strings.Contains(err.Error(), "nats://127.0.0.1:") {
			t.Errorf("the error does not name the server: %v", err)
		}
	})
}

func TestToken(t *testing.T) {
	srv := startServer(t, func(o *server.Options) { o.Authorization = token })
	t.Run("from a file", func(t *testing.T) {
		var logs logBuffer
		waitConnected(t, connect(t, &Options{URL: srv.URL(), TokenFile: writeFile(t, "token", token+"\n")}, &logs))
		checkNoSecret(t, &logs)
	})
	t.Run("from the environment", func(t *testing.T) {
		var logs logBuffer
		waitConnected(t, connect(t, &Options{URL: srv.URL(), Getenv: env(map[string]string{EnvToken: token})}, &logs))
	})
	t.Run("wrong token", func(t *testing.T) {
		var logs logBuffer
		c := connect(t, &Options{URL: srv.URL(), TokenFile: writeFile(t, "token", "wrong-"+token)}, &logs)
		err := waitRefused(t, c, nats.ErrAuthorization)
		if !strings.Contains(err.Error(), "the server refused the credentials of --nats-token-file") {
			t.Errorf("the reason is not clear: %v", err)
		}
		checkNoSecret(t, &logs, err)
	})
}

func TestNkey(t *testing.T) {
	user, _ := nkeys.CreateUser()
	pub, _ := user.PublicKey()
	seed, _ := user.Seed()
	other, _ := nkeys.CreateUser()
	otherSeed, _ := other.Seed()
	srv := startServer(t, func(o *server.Options) { o.Nkeys = []*server.NkeyUser{{Nkey: pub}} })

	var logs logBuffer
	waitConnected(t, connect(t, &Options{URL: srv.URL(), NkeySeedFile: writeFile(t, "seed", string(seed))}, &logs))
	checkNoSecret(t, &logs)
	if strings.Contains(logs.String(), string(seed)) {
		t.Error("the seed is in the logs")
	}

	c := connect(t, &Options{URL: srv.URL(), NkeySeedFile: writeFile(t, "other", string(otherSeed))}, &logs)
	err := waitRefused(t, c, nats.ErrAuthorization)
	if !strings.Contains(err.Error(), "the server refused the credentials of --nats-nkey-seed") {
		t.Errorf("the reason is not clear: %v", err)
	}
}

// operatorMode makes a server trust one operator, with a system account and
// one account that may use JetStream. It returns a creds file of a user of
// that account, and one of a user of an account the server does not know.
func operatorMode(t *testing.T) (configure func(*server.Options), creds, strangerCreds string) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	operator, err := nkeys.CreateOperator()
	must(err)
	operatorPub, err := operator.PublicKey()
	must(err)
	operatorJWT, err := jwt.NewOperatorClaims(operatorPub).Encode(operator)
	must(err)
	trusted, err := jwt.DecodeOperatorClaims(operatorJWT)
	must(err)

	resolver := &server.MemAccResolver{}
	// account creates an account signed by the operator, known to the
	// server when register is set.
	account := func(jetStream, register bool) (nkeys.KeyPair, string) {
		kp, err := nkeys.CreateAccount()
		must(err)
		pub, err := kp.PublicKey()
		must(err)
		claims := jwt.NewAccountClaims(pub)
		if jetStream {
			claims.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
		}
		token, err := claims.Encode(operator)
		must(err)
		if register {
			must(resolver.Store(pub, token))
		}
		return kp, pub
	}
	userCreds := func(name string, account nkeys.KeyPair) string {
		user, err := nkeys.CreateUser()
		must(err)
		pub, err := user.PublicKey()
		must(err)
		seed, err := user.Seed()
		must(err)
		token, err := jwt.NewUserClaims(pub).Encode(account)
		must(err)
		creds, err := jwt.FormatUserConfig(token, seed)
		must(err)
		return writeFile(t, name+".creds", string(creds))
	}
	_, systemPub := account(false, true)
	known, _ := account(true, true)
	unknown, _ := account(true, false)
	configure = func(o *server.Options) {
		o.TrustedOperators = []*jwt.OperatorClaims{trusted}
		o.AccountResolver = resolver
		o.SystemAccount = systemPub
	}
	return configure, userCreds("operator", known), userCreds("stranger", unknown)
}

func TestCredsFile(t *testing.T) {
	configure, creds, stranger := operatorMode(t)
	srv := startServer(t, configure)

	var logs logBuffer
	waitConnected(t, connect(t, &Options{URL: srv.URL(), CredsFile: creds}, &logs))

	c := connect(t, &Options{URL: srv.URL(), CredsFile: stranger}, &logs)
	err := waitRefused(t, c, nats.ErrAuthorization)
	if !strings.Contains(err.Error(), "the server refused the credentials of --nats-creds") {
		t.Errorf("the reason is not clear: %v", err)
	}
	b, _ := os.ReadFile(creds)
	if seed, err := nkeys.ParseDecoratedNKey(b); err == nil {
		s, _ := seed.Seed()
		if strings.Contains(logs.String(), string(s)) {
			t.Error("the seed is in the logs")
		}
	}
}

func TestTLS(t *testing.T) {
	files, err := localenv.WriteTLSFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	srv := startServer(t, func(o *server.Options) {
		if err := files.RequireTLS(o, true); err != nil {
			t.Error(err)
		}
	})

	t.Run("CA and client certificate", func(t *testing.T) {
		var logs logBuffer
		o := &Options{URL: srv.URL(), TLSCAFile: files.CA, TLSCertFile: files.ClientCert, TLSKeyFile: files.ClientKey}
		waitConnected(t, connect(t, o, &logs))
	})
	t.Run("tls URL", func(t *testing.T) {
		var logs logBuffer
		o := &Options{URL: strings.Replace(srv.URL(), "nats://", "tls://", 1), TLSCAFile: files.CA, TLSCertFile: files.ClientCert, TLSKeyFile: files.ClientKey}
		waitConnected(t, connect(t, o, &logs))
	})
	t.Run("no client certificate", func(t *testing.T) {
		var logs logBuffer
		c := connect(t, &Options{URL: srv.URL(), TLSCAFile: files.CA}, &logs)
		err := waitRefused(t, c, "the TLS handshake failed")
		t.Log(err)
	})
	t.Run("a CA that did not sign the server's certificate", func(t *testing.T) {
		var logs logBuffer
		c := connect(t, &Options{URL: srv.URL(), TLSCAFile: files.OtherCA, TLSCertFile: files.ClientCert, TLSKeyFile: files.ClientKey}, &logs)
		err := waitRefused(t, c, "set --nats-tls-ca")
		t.Log(err)
	})
	t.Run("no TLS configured", func(t *testing.T) {
		var logs logBuffer
		c := connect(t, &Options{URL: srv.URL()}, &logs)
		err := waitRefused(t, c, "set --nats-tls-ca")
		t.Log(err)
	})
}

func TestTLSHandshakeFirst(t *testing.T) {
	files, err := localenv.WriteTLSFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	srv := startServer(t, func(o *server.Options) {
		if err := files.RequireTLS(o, false); err != nil {
			t.Error(err)
		}
		o.TLSHandshakeFirst = true
	})
	var logs logBuffer
	waitConnected(t, connect(t, &Options{URL: srv.URL(), TLSCAFile: files.CA, TLSFirst: true}, &logs))

	c := connect(t, &Options{URL: srv.URL(), TLSCAFile: files.CA}, &logs)
	err = waitRefused(t, c, "set --nats-tls-first")
	t.Log(err)

	// The other way round: the client shakes hands first, the server sends
	// its INFO first.
	plain := startServer(t, func(o *server.Options) {
		if err := files.RequireTLS(o, false); err != nil {
			t.Error(err)
		}
	})
	c = connect(t, &Options{URL: plain.URL(), TLSCAFile: files.CA, TLSFirst: true}, &logs)
	err = waitRefused(t, c, "first record does not look like a TLS handshake")
	t.Log(err)
}

func TestCredentialsAndTLSTogether(t *testing.T) {
	files, err := localenv.WriteTLSFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	srv := startServer(t, func(o *server.Options) {
		if err := files.RequireTLS(o, true); err != nil {
			t.Error(err)
		}
		o.Username, o.Password = "operator", password
	})
	var logs logBuffer
	o := &Options{
		URL: srv.URL(), User: "operator", PasswordFile: writeFile(t, "password", password),
		TLSCAFile: files.CA, TLSCertFile: files.ClientCert, TLSKeyFile: files.ClientKey,
	}
	waitConnected(t, connect(t, o, &logs))
	checkNoSecret(t, &logs)
}

func TestServerDownSaysWhy(t *testing.T) {
	srv := startServer(t, nil)
	var logs logBuffer
	c := connect(t, &Options{URL: srv.URL()}, &logs)
	waitConnected(t, c)
	srv.Stop()
	err := waitRefused(t, c, "connection refused")
	t.Log(err)
	srv.Restart()
	waitConnected(t, c)
}

// A permission the user lacks is logged: the request it refused times out,
// and the log says why.
func TestPermissionViolationIsLogged(t *testing.T) {
	srv := startServer(t, func(o *server.Options) {
		o.Users = []*server.User{{Username: "operator", Password: password, Permissions: &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: []string{"allowed.>"}},
			Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>"}},
		}}}
	})
	var logs logBuffer
	c := connect(t, &Options{URL: srv.URL(), User: "operator", PasswordFile: writeFile(t, "password", password)}, &logs)
	deadline := time.Now().Add(10 * time.Second)
	for c.Healthy() != nil && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if err := c.NC.Publish("forbidden.x", nil); err != nil {
		t.Fatal(err)
	}
	for !strings.Contains(logs.String(), `permissions violation: Permissions Violation for Publish to \"forbidden.x\"`) {
		if time.Now().After(deadline) {
			t.Fatalf("the violation is not logged:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
