package natsconn

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/nats-io/nats.go"
)

// DefaultReportInterval is how often Conn.Start logs a change of the
// connection's state.
const DefaultReportInterval = 2 * time.Second

// Conn is the operator's NATS connection, and why it is not connected.
type Conn struct {
	// NC is the connection. It reconnects forever.
	NC *nats.Conn
	// ReportInterval is how often Start looks for a change of state to log
	// (DefaultReportInterval when 0).
	ReportInterval time.Duration

	opts *Options
	url  string // redacted
	log  logr.Logger

	mu sync.Mutex
	// lastErr is the last connection error the callbacks saw; nats.go clears
	// its own on some paths.
	lastErr error
}

// Connect opens the connection named name with o and then extra options. It
// fails only for a configuration that cannot work (conflicting flags, a
// missing or malformed file): whatever the server says, including that it
// refuses the credentials, the connection keeps trying in the background,
// and Healthy says why it is not connected.
func Connect(o *Options, name string, log logr.Logger, extra ...nats.Option) (*Conn, error) {
	c := &Conn{opts: o, url: Redact(o.ServerURL()), log: log}
	auth, err := o.NATSOptions()
	if err != nil {
		return nil, err
	}
	opts := []nats.Option{
		nats.Name(name),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		// Without it, nats.go closes the connection for good after the same
		// authentication error twice in a row, and the operator could only
		// recover by a restart. With it, a corrected Secret is picked up on
		// the next attempt.
		nats.IgnoreAuthErrorAbort(),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) { c.record(err) }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { c.record(err) }),
		nats.ConnectHandler(func(*nats.Conn) { c.record(nil) }),
		nats.ReconnectHandler(func(*nats.Conn) { c.record(nil) }),
		nats.ErrorHandler(c.asyncError),
	}
	opts = append(opts, auth...)
	opts = append(opts, extra...)
	nc, err := nats.Connect(o.ServerURL(), opts...)
	if err != nil {
		// A URL parse error quotes the URL, or the piece of it that broke
		// the parse: with a reserved character in a password, that is part
		// of the password.
		if ue := (*url.Error)(nil); errors.As(err, &ue) {
			return nil, o.invalidURL()
		}
		return nil, fmt.Errorf("connecting to NATS at %s: %w", c.url, err)
	}
	c.NC = nc
	return c, nil
}

// URL is the server URL, redacted for logs.
func (c *Conn) URL() string { return c.url }

// Close closes the connection.
func (c *Conn) Close() { c.NC.Close() }

func (c *Conn) record(err error) {
	c.mu.Lock()
	c.lastErr = err
	c.mu.Unlock()
}

// asyncError logs what the server reports outside a request, such as a
// permissions violation: the request it refused then times out, and this
// line says why.
func (c *Conn) asyncError(_ *nats.Conn, sub *nats.Subscription, err error) {
	if sub != nil {
		c.log.Error(err, "NATS reported an error", "subject", sub.Subject)
		return
	}
	c.log.Error(err, "NATS reported an error")
}

// Healthy is nil while connected, else an error that says why not: the
// server's answer, or the network error, and what to check.
func (c *Conn) Healthy() error {
	if c.NC.IsConnected() {
		return nil
	}
	status := c.NC.Status()
	cause := c.NC.LastError()
	if cause == nil {
		c.mu.Lock()
		cause = c.lastErr
		c.mu.Unlock()
	}
	if cause == nil {
		return fmt.Errorf("not connected to NATS at %s (%s)", c.url, status)
	}
	// The server's refusal comes back as its own words or as nats.go's,
	// which differ in case: one reason, one message, one log line.
	for _, known := range []error{nats.ErrAuthorization, nats.ErrAuthExpired, nats.ErrAuthRevoked, nats.ErrAccountAuthExpired} {
		if errors.Is(cause, known) {
			cause = known
			break
		}
	}
	if hint := c.opts.Hint(cause); hint != "" {
		return fmt.Errorf("not connected to NATS at %s (%s): %w; %s", c.url, status, cause, hint)
	}
	return fmt.Errorf("not connected to NATS at %s (%s): %w", c.url, status, cause)
}

// NeedLeaderElection is false: every replica connects, and logs why it
// cannot.
func (c *Conn) NeedLeaderElection() bool { return false }

// Start logs each change of the connection's state, until ctx ends: once
// when it connects, and once for each new reason it cannot (a state without
// a reason yet is not logged).
func (c *Conn) Start(ctx context.Context) error {
	interval := c.ReportInterval
	if interval <= 0 {
		interval = DefaultReportInterval
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	last := "-"
	for {
		err := c.Healthy()
		state := ""
		if err != nil {
			state = err.Error()
		}
		// Not connected, and no reason known yet: the first attempt is
		// under way, and its error is worth the log line.
		unknown := err != nil && errors.Unwrap(err) == nil
		if state != last && !unknown {
			last = state
			if err == nil {
				server := c.NC.ConnectedUrl()
				if server != "" {
					server = Redact(server)
				}
				c.log.Info("Connected to NATS", "natsURL", c.url, "server", server)
			} else {
				c.log.Error(err, "Cannot connect to NATS; retrying")
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}
