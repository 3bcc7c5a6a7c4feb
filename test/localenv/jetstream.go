package localenv

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"
)

// readyTimeout bounds how long a (re)started server may take to accept
// clients; generous because tests often run under -race on busy machines.
const readyTimeout = 30 * time.Second

// RunJetStream starts an embedded nats-server with JetStream on 127.0.0.1 and
// waits until it accepts clients. Port 0 picks a free port; the store lives
// in storeDir. A nil logger keeps the server quiet.
func RunJetStream(storeDir string, port int, logger server.Logger) (*server.Server, error) {
	return runJetStream(storeDir, port, logger, nil)
}

// runJetStream is RunJetStream with configure, when not nil, changing the
// options before the server starts.
func runJetStream(storeDir string, port int, logger server.Logger, configure func(*server.Options)) (*server.Server, error) {
	if port == 0 {
		port = server.RANDOM_PORT
	}
	opts := &server.Options{
		ServerName:         "cellos",
		Host:               "127.0.0.1",
		Port:               port,
		JetStream:          true,
		StoreDir:           storeDir,
		JetStreamMaxMemory: 256 << 20,
		JetStreamMaxStore:  1 << 30,
		NoLog:              logger == nil,
		NoSigs:             true,
	}
	if configure != nil {
		configure(opts)
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("configuring nats-server: %w", err)
	}
	if logger != nil {
		srv.SetLoggerV2(logger, false, false, false)
	}
	go srv.Start()
	if !srv.ReadyForConnections(readyTimeout) {
		srv.Shutdown()
		return nil, fmt.Errorf("nats-server not ready for connections on port %d after %s (is the port in use?)", port, readyTimeout)
	}
	return srv, nil
}

// JetStreamServer is an embedded nats-server with JetStream enabled. It keeps
// its store directory and port across Restart so that clients reconnect on
// their own and stream data survives, which is what restart tests need.
type JetStreamServer struct {
	t        testing.TB
	storeDir string
	port     int
	config   ServerConfig

	mu  sync.Mutex
	srv *server.Server // nil while stopped
}

// StartJetStream starts a JetStream server on 127.0.0.1 with a random free port
// and a store in t.TempDir(). It is shut down when the test ends.
func StartJetStream(tb testing.TB) *JetStreamServer {
	tb.Helper()
	return StartJetStreamWith(tb, ServerConfig{})
}

// ServerConfig changes what StartJetStreamWith starts.
type ServerConfig struct {
	// Configure changes the server's options before each start: to require
	// authentication or TLS, say.
	Configure func(*server.Options)
	// Logger receives the server's log; nil forwards its warnings and errors
	// to the test log in verbose runs, and drops it otherwise.
	Logger server.Logger
}

// StartJetStreamWith is StartJetStream with the server changed by cfg.
func StartJetStreamWith(tb testing.TB, cfg ServerConfig) *JetStreamServer {
	tb.Helper()
	// A port of its own, which no one takes while the server is stopped,
	// so that Restart can bind it again.
	port, err := freePort()
	if err != nil {
		tb.Fatal(err)
	}
	s := &JetStreamServer{t: tb, storeDir: tb.TempDir(), config: cfg, port: port}
	s.start()
	tb.Cleanup(s.Stop)
	return s
}

// URL is the client URL; it stays the same across Restart.
func (s *JetStreamServer) URL() string {
	return fmt.Sprintf("nats://127.0.0.1:%d", s.port)
}

// Stop shuts the server down and waits until it is gone. Stopping a stopped
// server is a no-op.
func (s *JetStreamServer) Stop() {
	s.mu.Lock()
	srv := s.srv
	s.srv = nil
	s.mu.Unlock()
	if srv == nil {
		return
	}
	srv.Shutdown()
	srv.WaitForShutdown()
}

// Restart stops the server if it runs and starts it again on the same store
// directory and port.
func (s *JetStreamServer) Restart() {
	s.t.Helper()
	s.Stop()
	s.start()
}

func (s *JetStreamServer) start() {
	s.t.Helper()
	logger := s.config.Logger
	if logger == nil && testing.Verbose() {
		logger = &tbLogger{t: s.t}
	}
	srv, err := runJetStream(s.storeDir, s.port, logger, s.config.Configure)
	if err != nil {
		s.t.Fatal(err)
	}
	s.mu.Lock()
	s.srv = srv
	s.mu.Unlock()
}

// Connect opens a client connection that retries reconnects forever and
// quickly (so restart tests don't wait), and closes it when the test ends.
func (s *JetStreamServer) Connect(tb testing.TB) (*nats.Conn, natsjs.JetStream) {
	tb.Helper()
	nc, err := nats.Connect(s.URL(),
		nats.Name(tb.Name()),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(50*time.Millisecond),
		nats.ReconnectJitter(0, 0),
	)
	if err != nil {
		tb.Fatalf("connect to nats-server: %v", err)
	}
	tb.Cleanup(nc.Close)
	js, err := natsjs.New(nc)
	if err != nil {
		tb.Fatalf("create JetStream context: %v", err)
	}
	return nc, js
}

// tbLogger forwards server warnings and errors to the test log; it is only
// installed for verbose runs. Notices (startup banners) are dropped.
type tbLogger struct{ t testing.TB }

func (l *tbLogger) Noticef(string, ...any)         {}
func (l *tbLogger) Warnf(format string, v ...any)  { l.t.Logf("nats-server: WARN "+format, v...) }
func (l *tbLogger) Fatalf(format string, v ...any) { l.t.Logf("nats-server: FATAL "+format, v...) }
func (l *tbLogger) Errorf(format string, v ...any) { l.t.Logf("nats-server: ERROR "+format, v...) }
func (l *tbLogger) Debugf(string, ...any)          {}
func (l *tbLogger) Tracef(string, ...any)          {}
