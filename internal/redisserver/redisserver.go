// Package redisserver starts throwaway redis-server processes for tests and
// demos, listening on 127.0.0.1 with persistence disabled.
package redisserver

import (
	"context"
	"errors"
	"fmt"
	"github.com/tenantguard/tenantguard/internal/childproc"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"

	"github.com/tenantguard/tenantguard/internal/pgcluster"
)

// Options configures Start. The zero value is ready to use.
type Options struct {
	// Port is the TCP port to listen on; 0 picks a free one.
	Port int
	// Dir is the server's working directory and holds its log; "" creates a
	// temporary directory. Close removes Dir.
	Dir string
	// Logger receives lifecycle messages; nil discards them.
	Logger *slog.Logger
	// TLS, if set, serves TLS only (rediss://) on Port.
	TLS *TLS
}

// TLS are a TLS-only server's files, PEM.
type TLS struct {
	CertFile, KeyFile string
	// CAFile verifies client certificates, and the server's own when
	// Start checks that it is up.
	CAFile string
	// RequireClientCert refuses clients without a certificate CAFile
	// verifies; otherwise they may present one.
	RequireClientCert bool
}

// Server is a running (or stopped) throwaway redis-server.
type Server struct {
	log     *slog.Logger
	bin     string
	dir     string
	port    int
	tls     *TLS
	mu      sync.Mutex
	proc    *childproc.Process
	removed bool
}

// Start starts a redis-server and returns once it answers PING or ctx ends.
func Start(ctx context.Context, opts Options) (*Server, error) {
	s := &Server{log: opts.Logger, dir: opts.Dir, port: opts.Port, tls: opts.TLS}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	var err error
	if s.bin, err = exec.LookPath("redis-server"); err != nil {
		if s.bin, err = exec.LookPath("/usr/bin/redis-server"); err != nil {
			return nil, fmt.Errorf("redisserver: redis-server not found; install redis-server: %w", err)
		}
	}
	if s.port == 0 {
		if s.port, err = pgcluster.FreePort(); err != nil {
			return nil, fmt.Errorf("redisserver: %w", err)
		}
	}
	if s.dir == "" {
		if s.dir, err = os.MkdirTemp("", "redisserver-"); err != nil {
			return nil, fmt.Errorf("redisserver: create temp dir: %w", err)
		}
	} else if err = os.MkdirAll(s.dir, 0o700); err != nil {
		return nil, fmt.Errorf("redisserver: create dir %s: %w", s.dir, err)
	}
	if s.dir, err = filepath.Abs(s.dir); err != nil {
		return nil, fmt.Errorf("redisserver: absolute dir: %w", err)
	}
	if err := s.Start(ctx); err != nil {
		return nil, errors.Join(err, os.RemoveAll(s.dir))
	}
	return s, nil
}

// Addr returns the server's "127.0.0.1:port" address.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Dir returns the server's working directory, which holds redis.log.
func (s *Server) Dir() string { return s.dir }

// Start starts the server again on the same port and directory and waits
// until it answers PING.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		return fmt.Errorf("redisserver: server on %s already running", s.Addr())
	}
	args := []string{"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1", "--save", "",
		"--appendonly", "no", "--dir", s.dir, "--daemonize", "no"}
	if t := s.tls; t != nil {
		auth := "optional"
		if t.RequireClientCert {
			auth = "yes"
		}
		args[1] = "0" // no plaintext port
		args = append(args, "--tls-port", strconv.Itoa(s.port), "--tls-cert-file", t.CertFile,
			"--tls-key-file", t.KeyFile, "--tls-ca-cert-file", t.CAFile, "--tls-auth-clients", auth)
	}
	logf, err := os.OpenFile(filepath.Join(s.dir, "redis.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("redisserver: open log: %w", err)
	}
	p, err := childproc.Start(s.bin, args, s.dir, logf, nil)
	if err != nil {
		return fmt.Errorf("redisserver: start: %w", err)
	}
	s.log.Info("redisserver: started", "addr", s.Addr(), "pid", p.Pid(), "dir", s.dir)
	if err := waitReady(ctx, s.Addr(), s.tls, p); err != nil {
		return errors.Join(fmt.Errorf("redisserver: %w", err), p.Stop(syscall.SIGTERM))
	}
	s.proc = p
	return nil
}

// Stop shuts the server down and waits for it to exit.
func (s *Server) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return nil
	}
	err := s.proc.Stop(syscall.SIGTERM)
	s.proc = nil
	s.log.Info("redisserver: stopped", "addr", s.Addr())
	if err != nil {
		return fmt.Errorf("redisserver: stop %s: %w", s.Addr(), err)
	}
	return nil
}

// Close stops the server and removes its directory. It is safe to call twice.
func (s *Server) Close() error {
	err := s.Stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.removed {
		return err
	}
	s.removed = true
	if rmErr := os.RemoveAll(s.dir); rmErr != nil {
		err = errors.Join(err, fmt.Errorf("redisserver: remove %s: %w", s.dir, rmErr))
	}
	return err
}
