// Package testenv runs real dependencies for tests in-process, so integration
// tests exercise the same code paths as production instead of fakes.
package testenv

import (
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// readyTimeout bounds how long a (re)started server may take to accept
// clients; generous because tests often run under -race on busy machines.
const readyTimeout = 30 * time.Second

// JetStreamServer is an embedded nats-server with JetStream enabled. It keeps
// its store directory and port across Restart so that clients reconnect on
// their own and stream data survives, which is what restart tests need.
type JetStreamServer struct {
	t    testing.TB
	opts *server.Options

	mu  sync.Mutex
	srv *server.Server // nil while stopped
}

// StartJetStream starts a JetStream server on 127.0.0.1 with a random free port
// and a store in t.TempDir(). It is shut down when the test ends.
func StartJetStream(t testing.TB) *JetStreamServer {
	t.Helper()
	return StartJetStreamIn(t, t.TempDir())
}

// StartJetStreamIn is StartJetStream with the store in storeDir, for tests that
// need to inspect or reuse the store.
func StartJetStreamIn(t testing.TB, storeDir string) *JetStreamServer {
	t.Helper()
	s := &JetStreamServer{
		t: t,
		opts: &server.Options{
			ServerName:         "testenv",
			Host:               "127.0.0.1",
			Port:               server.RANDOM_PORT,
			JetStream:          true,
			StoreDir:           storeDir,
			JetStreamMaxMemory: 256 << 20,
			JetStreamMaxStore:  1 << 30,
			NoLog:              true,
			NoSigs:             true,
		},
	}
	s.start()
	// The first start picked a free port; pin it so Restart reuses it.
	s.opts.Port = s.srv.Addr().(*net.TCPAddr).Port
	t.Cleanup(s.Stop)
	return s
}

// URL is the client URL; it stays the same across Restart.
func (s *JetStreamServer) URL() string {
	return fmt.Sprintf("nats://%s:%d", s.opts.Host, s.opts.Port)
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
	srv, err := server.NewServer(s.opts.Clone())
	if err != nil {
		s.t.Fatalf("create nats-server: %v", err)
	}
	if testing.Verbose() {
		srv.SetLoggerV2(&tbLogger{t: s.t}, false, false, false)
	}
	go srv.Start()
	if !srv.ReadyForConnections(readyTimeout) {
		srv.Shutdown()
		s.t.Fatalf("nats-server not ready for connections after %s", readyTimeout)
	}
	s.mu.Lock()
	s.srv = srv
	s.mu.Unlock()
}

// Connect opens a client connection that retries reconnects forever and
// quickly (so restart tests don't wait), and closes it when the test ends.
func (s *JetStreamServer) Connect(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(s.URL(),
		nats.Name(t.Name()),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(50*time.Millisecond),
		nats.ReconnectJitter(0, 0),
	)
	if err != nil {
		t.Fatalf("connect to nats-server: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("create JetStream context: %v", err)
	}
	return nc, js
}

// tbLogger forwards server notices, warnings and errors to the test log; it
// is only installed for verbose runs.
type tbLogger struct{ t testing.TB }

func (l *tbLogger) Noticef(format string, v ...any) { l.t.Logf("nats-server: "+format, v...) }
func (l *tbLogger) Warnf(format string, v ...any)   { l.t.Logf("nats-server: WARN "+format, v...) }
func (l *tbLogger) Fatalf(format string, v ...any)  { l.t.Logf("nats-server: FATAL "+format, v...) }
func (l *tbLogger) Errorf(format string, v ...any)  { l.t.Logf("nats-server: ERROR "+format, v...) }
func (l *tbLogger) Debugf(string, ...any)           {}
func (l *tbLogger) Tracef(string, ...any)           {}
