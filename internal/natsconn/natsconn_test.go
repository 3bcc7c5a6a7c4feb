package natsconn

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-logr/logr"
)

func TestRedactStripsUserinfo(t *testing.T) {
	for in, want := range map[string]string{
		"nats://user:s3cret@nats.example:4222":            "nats://nats.example:4222",
		"nats://user:s3cret@nats.example":                 "nats://nats.example:4222",
		"nats://t0ken@nats.example":                       "nats://nats.example:4222",
		"tls://nats.example:4443":                         "tls://nats.example:4443",
		"127.0.0.1:4222":                                  "nats://127.0.0.1:4222",
		"nats://a:p1@one:4222, nats://a:p2@two:4222":      "nats://one:4222,nats://two:4222",
		"nats://user:s3cret@[::1]":                        "nats://[::1]:4222",
		"nats://user:s3cret@nats.example:port":            "<unparsable URL>",
		"wss://user:s3cret@nats.example/path":             "wss://nats.example/path",
		"":                                                "<unparsable URL>",
		"nats://user:pa%zzss@nats.example:4222":           "<unparsable URL>",
		"nats://user:pass@nats.example:4222?x=y#fragment": "nats://nats.example:4222?x=y#fragment",
	} {
		got := Redact(in)
		if got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
		for _, secret := range []string{"s3cret", "t0ken", "p1", "p2", "pa%zzss"} {
			if strings.Contains(got, secret) {
				t.Errorf("Redact(%q) = %q leaks %q", in, got, secret)
			}
		}
	}
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

func TestAuthMode(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
		want string // mode, or a part of the error
	}{
		{"none", Options{}, AuthNone},
		{"creds", Options{CredsFile: "c"}, AuthCreds},
		{"nkey", Options{NkeySeedFile: "s"}, AuthNkey},
		{"password file", Options{User: "u", PasswordFile: "p"}, AuthPassword},
		{"password env", Options{User: "u", Getenv: env(map[string]string{EnvPassword: "p"})}, AuthPassword},
		{"token file", Options{TokenFile: "t"}, AuthToken},
		{"token env", Options{Getenv: env(map[string]string{EnvToken: "t"})}, AuthToken},
		{"url userinfo", Options{URL: "nats://u:p@h"}, AuthURL},
		{"url from env with userinfo", Options{Getenv: env(map[string]string{EnvURL: "nats://u:p@h"})}, AuthURL},
		{"user without password", Options{User: "u"}, "needs a password"},
		{"password without user", Options{PasswordFile: "p"}, "without --nats-user"},
		{"env password without user", Options{Getenv: env(map[string]string{EnvPassword: "p"})}, "without --nats-user"},
		{"creds and nkey", Options{CredsFile: "c", NkeySeedFile: "s"}, "--nats-creds and --nats-nkey-seed are set"},
		{"user and env token", Options{User: "u", PasswordFile: "p", Getenv: env(map[string]string{EnvToken: "t"})}, "--nats-user and $NATS_TOKEN are set"},
		{"url userinfo and user", Options{URL: "nats://u:p@h", User: "u", PasswordFile: "p"}, "credentials in the URL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.opts.Getenv == nil {
				tc.opts.Getenv = env(nil)
			}
			mode, err := tc.opts.AuthMode()
			switch {
			case err != nil && !strings.Contains(err.Error(), tc.want):
				t.Fatalf("error %q, want %q", err, tc.want)
			case err == nil && mode != tc.want:
				t.Fatalf("mode %q, want %q", mode, tc.want)
			}
		})
	}
}

func TestNATSOptionsRejectBadFiles(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing")
	garbage := writeFile(t, "garbage", "not a key\n")
	empty := writeFile(t, "empty", "\n")
	for _, tc := range []struct {
		name string
		opts Options
		want string
	}{
		{"missing password file", Options{User: "u", PasswordFile: missing}, "--nats-password-file"},
		{"empty password file", Options{User: "u", PasswordFile: empty}, "is empty"},
		{"missing token file", Options{TokenFile: missing}, "--nats-token-file"},
		{"missing creds", Options{CredsFile: missing}, "--nats-creds"},
		{"malformed creds", Options{CredsFile: garbage}, "--nats-creds"},
		{"malformed seed", Options{NkeySeedFile: garbage}, "--nats-nkey-seed"},
		{"missing CA", Options{TLSCAFile: missing}, "--nats-tls-ca"},
		{"malformed CA", Options{TLSCAFile: garbage}, "--nats-tls-ca"},
		{"cert without key", Options{TLSCertFile: garbage}, "go together"},
		{"malformed cert", Options{TLSCertFile: garbage, TLSKeyFile: garbage}, "--nats-tls-cert"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Getenv = env(nil)
			_, err := tc.opts.NATSOptions()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one naming %q", err, tc.want)
			}
		})
	}
}

func TestFlagsNameFilesNotSecrets(t *testing.T) {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	var o Options
	o.BindFlags(fs)
	fs.VisitAll(func(f *flag.Flag) {
		for _, word := range []string{"password", "token", "seed", "creds", "key"} {
			if strings.Contains(f.Name, word) && !strings.Contains(f.Usage, "File") {
				t.Errorf("flag --%s carries a secret in its value: %q", f.Name, f.Usage)
			}
		}
	})
	if f := fs.Lookup("nats-url"); f.DefValue != "" {
		t.Errorf("--nats-url defaults to %q: --help would print $NATS_URL, and any password in it", f.DefValue)
	}
}

// A URL that does not parse is refused without a word of it: a reserved
// character in a password would otherwise put part of the password in the
// parse error ("invalid port").
func TestInvalidURLErrorHoldsNoPartOfIt(t *testing.T) {
	const user, password = "0p3r4t0r", "s3cr/et#?x"
	for _, o := range []Options{
		{URL: "nats://" + user + ":" + password + "@127.0.0.1:4222"},
		{Getenv: env(map[string]string{EnvURL: "nats://" + user + ":" + password + "@127.0.0.1:4222"})},
	} {
		source := "--nats-url"
		if o.URL == "" {
			source = "$" + EnvURL
		}
		_, err := Connect(&o, t.Name(), logr.Discard())
		if err == nil {
			t.Fatalf("Connect with a %s that does not parse: got nil, want an error", source)
		}
		if !strings.Contains(err.Error(), source+" is not a valid URL") {
			t.Errorf("error %q does not name %s", err, source)
		}
		// No run of three characters of the user name or password.
		for _, secret := range []string{user, password} {
			for i := 0; i+3 <= len(secret); i++ {
				if piece := secret[i : i+3]; strings.Contains(err.Error(), piece) {
					t.Errorf("error %q holds %q, a piece of %q", err, piece, secret)
				}
			}
		}
	}
}
