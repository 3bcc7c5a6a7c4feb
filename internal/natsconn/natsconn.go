// Package natsconn opens the operator's NATS connection: the URL,
// authentication (a creds file, an nkey seed, a user and password, or a
// token) and TLS (a CA, a client certificate, the handshake first), from
// flags that name files and from the environment, never from a secret in a
// flag's value.
//
// The connection retries forever, whatever the reason it cannot connect, so
// that a wrong credential makes the operator unready, with the reason, rather
// than exit into a crash loop; files are read again on every attempt, so a
// rotated or corrected Secret is picked up without a restart. No secret is
// ever logged: URLs are logged with their userinfo stripped (Redact).
package natsconn

import (
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// Environment variables the connection reads.
const (
	// EnvURL is the server URL when --nats-url is not given.
	EnvURL = "NATS_URL"
	// EnvPassword is the password of --nats-user when --nats-password-file
	// is not given.
	EnvPassword = "NATS_PASSWORD"
	// EnvToken is the token when --nats-token-file is not given.
	EnvToken = "NATS_TOKEN"
)

// Authentication modes, as Options.AuthMode names them.
const (
	AuthNone     = "none"
	AuthCreds    = "creds"
	AuthNkey     = "nkey"
	AuthPassword = "user-password"
	AuthToken    = "token"
	AuthURL      = "url-userinfo"
)

// Options are the connection settings. Every secret is named by a file or
// comes from the environment.
type Options struct {
	// URL is the server URL, or a comma-separated list of them; empty means
	// $NATS_URL, else nats.DefaultURL.
	URL string
	// CredsFile is a creds file: a user JWT and its nkey seed.
	CredsFile string
	// NkeySeedFile holds a user nkey seed.
	NkeySeedFile string
	// User is the user name; its password is in PasswordFile, else in
	// $NATS_PASSWORD.
	User, PasswordFile string
	// TokenFile holds a token; without it, $NATS_TOKEN is the token.
	TokenFile string
	// TLSCAFile holds the CA certificates that sign the server's
	// certificate; empty trusts the system's.
	TLSCAFile string
	// TLSCertFile and TLSKeyFile are a client certificate and its key, for
	// servers that verify clients.
	TLSCertFile, TLSKeyFile string
	// TLSFirst performs the TLS handshake before the server's INFO, for
	// servers configured with handshake_first.
	TLSFirst bool

	// Getenv reads the environment; nil means os.Getenv.
	Getenv func(string) string
}

// BindFlags registers the connection's flags on fs.
func (o *Options) BindFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.URL, "nats-url", "", "URL of the NATS server with JetStream, or a comma-separated list (default $"+EnvURL+", else "+nats.DefaultURL+"). Put no credentials in it: see --nats-creds, --nats-nkey-seed, --nats-user and --nats-token-file.")
	fs.StringVar(&o.CredsFile, "nats-creds", "", "File with the NATS user's credentials: a user JWT and its nkey seed, as nsc writes them.")
	fs.StringVar(&o.NkeySeedFile, "nats-nkey-seed", "", "File with a NATS user nkey seed (SU...).")
	fs.StringVar(&o.User, "nats-user", "", "NATS user name; its password comes from --nats-password-file, else $"+EnvPassword+".")
	fs.StringVar(&o.PasswordFile, "nats-password-file", "", "File with the password of --nats-user (default $"+EnvPassword+").")
	fs.StringVar(&o.TokenFile, "nats-token-file", "", "File with a NATS authentication token (default $"+EnvToken+").")
	fs.StringVar(&o.TLSCAFile, "nats-tls-ca", "", "File with the CA certificates that sign the NATS server's certificate (default: the system's). Turns TLS on.")
	fs.StringVar(&o.TLSCertFile, "nats-tls-cert", "", "File with the client certificate presented to NATS, with --nats-tls-key. Turns TLS on.")
	fs.StringVar(&o.TLSKeyFile, "nats-tls-key", "", "File with the key of --nats-tls-cert.")
	fs.BoolVar(&o.TLSFirst, "nats-tls-first", false, "Perform the TLS handshake before the NATS server's INFO, for servers with handshake_first. Turns TLS on.")
}

func (o *Options) getenv(key string) string {
	if o.Getenv != nil {
		return o.Getenv(key)
	}
	return os.Getenv(key)
}

// ServerURL is the URL to connect to: URL, else $NATS_URL, else the NATS
// default.
func (o *Options) ServerURL() string {
	if o.URL != "" {
		return o.URL
	}
	if u := o.getenv(EnvURL); u != "" {
		return u
	}
	return nats.DefaultURL
}

// AuthMode names the authentication the options configure, or an error when
// they configure more than one, or half of one.
func (o *Options) AuthMode() (string, error) {
	var modes []string
	if o.CredsFile != "" {
		modes = append(modes, "--nats-creds")
	}
	if o.NkeySeedFile != "" {
		modes = append(modes, "--nats-nkey-seed")
	}
	if o.User != "" {
		modes = append(modes, "--nats-user")
	}
	if o.TokenFile != "" {
		modes = append(modes, "--nats-token-file")
	} else if o.getenv(EnvToken) != "" {
		modes = append(modes, "$"+EnvToken)
	}
	if urlHasUserinfo(o.ServerURL()) {
		modes = append(modes, "credentials in the URL")
	}
	if len(modes) > 1 {
		return "", fmt.Errorf("NATS authentication: %s are set, but only one way to authenticate may be: choose one", strings.Join(modes, " and "))
	}
	hasPassword := o.PasswordFile != "" || o.getenv(EnvPassword) != ""
	if o.User == "" && hasPassword {
		return "", fmt.Errorf("NATS authentication: a password (--nats-password-file or $%s) is set without --nats-user", EnvPassword)
	}
	switch {
	case o.CredsFile != "":
		return AuthCreds, nil
	case o.NkeySeedFile != "":
		return AuthNkey, nil
	case o.User != "":
		if !hasPassword {
			return "", fmt.Errorf("NATS authentication: --nats-user %q needs a password: --nats-password-file or $%s", o.User, EnvPassword)
		}
		return AuthPassword, nil
	case o.TokenFile != "" || o.getenv(EnvToken) != "":
		return AuthToken, nil
	case urlHasUserinfo(o.ServerURL()):
		return AuthURL, nil
	}
	return AuthNone, nil
}

// TLS tells whether the options turn TLS on; a tls:// URL, or a server
// that requires TLS, turns it on too.
func (o *Options) TLS() bool {
	return o.TLSCAFile != "" || o.TLSCertFile != "" || o.TLSFirst
}

// NATSOptions turns the options into nats.Option values: authentication and
// TLS. Every file is read now, so that a missing or malformed one is a clear
// error at start, and again on every connection attempt, so that a rotated
// Secret is picked up on the next one.
func (o *Options) NATSOptions() ([]nats.Option, error) {
	mode, err := o.AuthMode()
	if err != nil {
		return nil, err
	}
	var opts []nats.Option
	switch mode {
	case AuthCreds:
		if err := checkCreds(o.CredsFile); err != nil {
			return nil, err
		}
		opts = append(opts, nats.UserCredentials(o.CredsFile))
	case AuthNkey:
		opt, err := nats.NkeyOptionFromSeed(o.NkeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("--nats-nkey-seed %s: %w", o.NkeySeedFile, err)
		}
		opts = append(opts, opt)
	case AuthPassword:
		password, err := o.secret("--nats-password-file", o.PasswordFile, EnvPassword)
		if err != nil {
			return nil, err
		}
		user := o.User
		opts = append(opts, nats.UserInfoHandler(func() (string, string) { return user, password.get() }))
	case AuthToken:
		token, err := o.secret("--nats-token-file", o.TokenFile, EnvToken)
		if err != nil {
			return nil, err
		}
		opts = append(opts, nats.TokenHandler(token.get))
	}

	if (o.TLSCertFile == "") != (o.TLSKeyFile == "") {
		return nil, errors.New("NATS TLS: --nats-tls-cert and --nats-tls-key go together")
	}
	if o.TLSCAFile != "" {
		opts = append(opts, nats.RootCAs(o.TLSCAFile))
	}
	if o.TLSCertFile != "" {
		opts = append(opts, nats.ClientCert(o.TLSCertFile, o.TLSKeyFile))
	}
	if o.TLSFirst {
		opts = append(opts, nats.TLSHandshakeFirst())
	}
	// The nats.go TLS options load their files when applied: check them here,
	// so that a bad file is reported with its flag.
	probe := nats.GetDefaultOptions()
	for _, opt := range opts {
		if err := opt(&probe); err != nil {
			return nil, fmt.Errorf("NATS TLS (--nats-tls-ca %q, --nats-tls-cert %q, --nats-tls-key %q): %w", o.TLSCAFile, o.TLSCertFile, o.TLSKeyFile, err)
		}
	}
	return opts, nil
}

// secret reads the secret in file, else in the environment variable env. A
// file is read again on each connection attempt; when it cannot be read, the
// last value read is used.
func (o *Options) secret(flagName, file, env string) (*secret, error) {
	if file == "" {
		v := o.getenv(env)
		return &secret{value: v}, nil
	}
	v, err := readSecret(file)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flagName, err)
	}
	return &secret{file: file, value: v}, nil
}

// secret is a password or token, from a file read again on each use, or from
// the environment.
type secret struct {
	file string
	mu   sync.Mutex
	// value is the last value read.
	value string
}

func (s *secret) get() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.file != "" {
		if v, err := readSecret(s.file); err == nil {
			s.value = v
		}
	}
	return s.value
}

// readSecret reads a secret from a file, without the line break an editor or
// `echo` leaves at its end.
func readSecret(file string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", err
	}
	v := strings.TrimRight(string(b), "\r\n")
	if v == "" {
		return "", fmt.Errorf("%s is empty", file)
	}
	return v, nil
}

// checkCreds reads a creds file as nats.go will, so that a malformed one is
// a clear error at start rather than at each connection attempt.
func checkCreds(file string) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("--nats-creds: %w", err)
	}
	defer clear(b)
	if _, err := nkeys.ParseDecoratedJWT(b); err != nil {
		return fmt.Errorf("--nats-creds %s: no user JWT in it: %w", file, err)
	}
	kp, err := nkeys.ParseDecoratedNKey(b)
	if err != nil {
		return fmt.Errorf("--nats-creds %s: no nkey seed in it: %w", file, err)
	}
	kp.Wipe()
	return nil
}

// urlHasUserinfo tells whether one of the URLs carries a user or password.
func urlHasUserinfo(urls string) bool {
	for _, s := range strings.Split(urls, ",") {
		u, err := parseURL(s)
		if err != nil {
			if strings.Contains(s, "@") {
				return true
			}
			continue
		}
		if u.User != nil {
			return true
		}
	}
	return false
}

// parseURL parses one NATS URL as nats.go does: the scheme defaults to nats.
func parseURL(s string) (*url.URL, error) {
	s = strings.TrimSpace(s)
	if !strings.Contains(s, "://") {
		s = "nats://" + s
	}
	return url.Parse(s)
}

// invalidURL says which setting holds a URL that does not parse, and what
// to check, without a word of the URL, which may hold a password.
func (o *Options) invalidURL() error {
	source := "--nats-url"
	if o.URL == "" {
		source = "$" + EnvURL
	}
	return fmt.Errorf("%s is not a valid URL (not repeated here, as it may hold a password): "+
		"check its scheme, host and port, and percent-encode reserved characters (such as / # ? @ :) in a user name or password", source)
}

// Redact is the URL, or comma-separated URLs, fit for a log: without user
// or password, and with the default port when it has none. A URL that
// cannot be parsed is replaced by a placeholder, as it may hold a secret.
func Redact(urls string) string {
	parts := strings.Split(urls, ",")
	for i, s := range parts {
		u, err := parseURL(s)
		if err != nil || u.Host == "" {
			parts[i] = "<unparsable URL>"
			continue
		}
		u.User = nil
		if u.Port() == "" && u.Scheme != "ws" && u.Scheme != "wss" {
			u.Host = net.JoinHostPort(u.Hostname(), "4222")
		}
		parts[i] = u.String()
	}
	return strings.Join(parts, ",")
}

// Hint says what to check for a connection error that a misconfiguration
// gives, or "" for other errors.
func (o *Options) Hint(err error) string {
	var unknownCA x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	switch {
	case err == nil:
		return ""
	case errors.Is(err, nats.ErrAuthorization):
		return "the server refused the credentials of " + o.authSource()
	case errors.Is(err, nats.ErrAuthExpired), errors.Is(err, nats.ErrAuthRevoked), errors.Is(err, nats.ErrAccountAuthExpired):
		return "renew the credentials of " + o.authSource()
	case errors.As(err, &unknownCA):
		return "the server's certificate is not signed by a CA the operator trusts: set --nats-tls-ca"
	case errors.As(err, &hostname):
		return "the server's certificate does not name the host of the URL"
	case errors.As(err, &invalid):
		return "the server's certificate is not valid"
	case errors.Is(err, nats.ErrSecureConnRequired):
		return "the server requires TLS: use a tls:// URL or --nats-tls-ca"
	case errors.Is(err, nats.ErrSecureConnWanted):
		return "TLS is configured but the server does not offer it"
	case strings.Contains(err.Error(), "tls: "), strings.Contains(err.Error(), "remote error"):
		return "the TLS handshake failed: check --nats-tls-ca, --nats-tls-cert, --nats-tls-key and --nats-tls-first against the server's tls block"
	}
	var timeout net.Error
	if errors.As(err, &timeout) && timeout.Timeout() && !o.TLSFirst {
		return "the server did not answer: check the network, and set --nats-tls-first if the server performs the TLS handshake first (handshake_first)"
	}
	return ""
}

// authSource says where the credentials come from, for an error message.
func (o *Options) authSource() string {
	mode, _ := o.AuthMode()
	switch mode {
	case AuthCreds:
		return "--nats-creds " + o.CredsFile
	case AuthNkey:
		return "--nats-nkey-seed " + o.NkeySeedFile
	case AuthPassword:
		if o.PasswordFile != "" {
			return fmt.Sprintf("--nats-user %q and --nats-password-file %s", o.User, o.PasswordFile)
		}
		return fmt.Sprintf("--nats-user %q and $%s", o.User, EnvPassword)
	case AuthToken:
		if o.TokenFile != "" {
			return "--nats-token-file " + o.TokenFile
		}
		return "$" + EnvToken
	case AuthURL:
		return "the URL's userinfo"
	}
	return "no credentials: the server requires some (--nats-creds, --nats-nkey-seed, --nats-user or --nats-token-file)"
}
