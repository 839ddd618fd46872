// Package pgcluster starts throwaway PostgreSQL servers for tests and demos.
//
// A Cluster is a private data directory initialised with initdb and served by
// a postgres child process on 127.0.0.1. Authentication is "trust" for the
// superuser "postgres", so it must never be used for real data.
package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"github.com/tenantguard/tenantguard/internal/childproc"
	"log/slog"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"syscall"
)

// Options configures Start. The zero value is ready to use.
type Options struct {
	// Port is the TCP port to listen on; 0 picks a free one.
	Port int
	// Dir holds the data directory, socket and log; "" creates a temporary
	// directory. When running as root, every ancestor of Dir must be
	// searchable by the unprivileged server user. Close removes Dir.
	Dir string
	// Logger receives lifecycle messages; nil discards them.
	Logger *slog.Logger
	// ExtraConf adds or overrides server settings, passed as "-c key=value".
	ExtraConf map[string]string
	// SSLCertFile and SSLKeyFile, if set, turn ssl on with this
	// certificate and key (PEM), copied into Dir (the server insists on
	// owning its key file). Clients may still connect without TLS.
	SSLCertFile, SSLKeyFile string
}

// Cluster is a running (or stopped) throwaway PostgreSQL server.
type Cluster struct {
	log     *slog.Logger
	binDir  string
	dir     string
	port    int
	cred    *syscall.Credential
	extra   map[string]string
	mu      sync.Mutex
	proc    *childproc.Process
	removed bool
}

// Start initialises a new cluster and starts its server, returning once it
// accepts connections or ctx ends.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	c := &Cluster{log: opts.Logger, dir: opts.Dir, port: opts.Port, extra: maps.Clone(opts.ExtraConf)}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	var err error
	if c.binDir, err = findBinDir(); err != nil {
		return nil, err
	}
	if c.cred, err = serverCredential(); err != nil {
		return nil, err
	}
	if c.port == 0 {
		if c.port, err = FreePort(); err != nil {
			return nil, err
		}
	}
	if err := c.prepareDir(); err != nil {
		return nil, err
	}
	if opts.SSLCertFile != "" {
		if err := c.installSSL(opts.SSLCertFile, opts.SSLKeyFile); err != nil {
			return nil, errors.Join(err, os.RemoveAll(c.dir))
		}
	}
	if err := c.initdb(ctx); err != nil {
		return nil, errors.Join(err, os.RemoveAll(c.dir))
	}
	if err := c.Start(ctx); err != nil {
		return nil, errors.Join(err, os.RemoveAll(c.dir))
	}
	return c, nil
}

// prepareDir creates the cluster directory and its socket subdirectory and,
// when running as root, hands them to the server user.
func (c *Cluster) prepareDir() error {
	var err error
	if c.dir == "" {
		if c.dir, err = os.MkdirTemp("", "pgcluster-"); err != nil {
			return fmt.Errorf("pgcluster: create temp dir: %w", err)
		}
	} else if err = os.MkdirAll(c.dir, 0o700); err != nil {
		return fmt.Errorf("pgcluster: create dir %s: %w", c.dir, err)
	}
	if c.dir, err = filepath.Abs(c.dir); err != nil {
		return fmt.Errorf("pgcluster: absolute dir: %w", err)
	}
	if err := os.MkdirAll(c.sockDir(), 0o700); err != nil {
		return fmt.Errorf("pgcluster: create socket dir: %w", err)
	}
	if c.cred == nil {
		return nil
	}
	for _, p := range []string{c.dir, c.sockDir()} {
		if err := os.Chown(p, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
			return fmt.Errorf("pgcluster: chown %s to server user: %w", p, err)
		}
	}
	return nil
}

// installSSL copies the certificate and key into the cluster directory,
// owned by the server user, and turns ssl on.
func (c *Cluster) installSSL(certFile, keyFile string) error {
	if c.extra == nil {
		c.extra = map[string]string{}
	}
	for _, f := range []struct{ from, name, setting string }{
		{certFile, "server.crt", "ssl_cert_file"}, {keyFile, "server.key", "ssl_key_file"},
	} {
		data, err := os.ReadFile(f.from)
		if err != nil {
			return fmt.Errorf("pgcluster: ssl: %w", err)
		}
		to := filepath.Join(c.dir, f.name)
		if err := os.WriteFile(to, data, 0o600); err != nil {
			return fmt.Errorf("pgcluster: ssl: %w", err)
		}
		if c.cred != nil {
			if err := os.Chown(to, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
				return fmt.Errorf("pgcluster: ssl: chown %s: %w", to, err)
			}
		}
		c.extra[f.setting] = to
	}
	c.extra["ssl"] = "on"
	return nil
}

func (c *Cluster) dataDir() string { return filepath.Join(c.dir, "data") }
func (c *Cluster) sockDir() string { return filepath.Join(c.dir, "sock") }
func (c *Cluster) logPath() string { return filepath.Join(c.dir, "postgres.log") }

// Host returns the address the server listens on: always "127.0.0.1".
func (c *Cluster) Host() string { return "127.0.0.1" }

// Port returns the server's TCP port.
func (c *Cluster) Port() int { return c.port }

// Dir returns the directory holding the data directory, socket and log.
func (c *Cluster) Dir() string { return c.dir }

// AdminURL returns a superuser connection URL for database db.
func (c *Cluster) AdminURL(db string) string {
	return fmt.Sprintf("postgres://postgres@%s:%d/%s?sslmode=disable", c.Host(), c.port, url.PathEscape(db))
}

// Close stops the server and removes its directory. It is safe to call twice.
func (c *Cluster) Close() error {
	err := c.Stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.removed {
		return err
	}
	c.removed = true
	if rmErr := os.RemoveAll(c.dir); rmErr != nil {
		err = errors.Join(err, fmt.Errorf("pgcluster: remove %s: %w", c.dir, rmErr))
	}
	return err
}
