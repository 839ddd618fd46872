package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"github.com/tenantguard/tenantguard/internal/childproc"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// readyTimeout bounds start-up when the caller's context has no deadline.
const readyTimeout = 60 * time.Second

// initdb creates the data directory.
func (c *Cluster) initdb(ctx context.Context) error {
	args := []string{"-D", c.dataDir(), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync"}
	c.log.Info("pgcluster: initdb", "dir", c.dataDir())
	cmd := exec.CommandContext(ctx, filepath.Join(c.binDir, "initdb"), args...)
	logf, err := c.openLog()
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd.Dir, cmd.Stdout, cmd.Stderr = c.dir, logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true, Credential: c.cred}
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("pgcluster: initdb: %w\n%s", err, logTail(c.logPath()))
	}
	return nil
}

// Start starts the server again on the same port and data directory and
// waits until it accepts connections.
func (c *Cluster) Start(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc != nil {
		return fmt.Errorf("pgcluster: server on port %d already running", c.port)
	}
	conf := map[string]string{
		"listen_addresses": "127.0.0.1", "fsync": "off", "synchronous_commit": "off",
		"full_page_writes": "off", "max_connections": "200", "shared_buffers": "64MB",
	}
	maps.Copy(conf, c.extra)
	args := []string{"-D", c.dataDir(), "-p", strconv.Itoa(c.port), "-k", c.sockDir()}
	for _, k := range slices.Sorted(maps.Keys(conf)) {
		args = append(args, "-c", k+"="+conf[k])
	}
	logf, err := c.openLog()
	if err != nil {
		return err
	}
	p, err := childproc.Start(filepath.Join(c.binDir, "postgres"), args, c.dir, logf, c.cred)
	if err != nil {
		return fmt.Errorf("pgcluster: start postgres: %w", err)
	}
	c.log.Info("pgcluster: started", "port", c.port, "pid", p.Pid(), "dir", c.dir)
	if err := c.waitReady(ctx, p); err != nil {
		return errors.Join(err, p.Stop(syscall.SIGINT))
	}
	c.proc = p
	return nil
}

// Stop shuts the server down (fast shutdown) and waits for it to exit. The
// data directory is kept, so Start can bring the server back.
func (c *Cluster) Stop() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc == nil {
		return nil
	}
	err := c.proc.Stop(syscall.SIGINT)
	c.proc = nil
	c.log.Info("pgcluster: stopped", "port", c.port)
	if err != nil {
		return fmt.Errorf("pgcluster: stop server on port %d: %w", c.port, err)
	}
	return nil
}

// waitReady polls with a superuser connection until the server answers.
// Kill ends the server and its backends with SIGKILL, as a crash would:
// no shutdown, no checkpoint, clients' connections reset. Start brings it
// back on the same port (after crash recovery).
func (c *Cluster) Kill() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc == nil {
		return nil
	}
	err := c.proc.Kill()
	c.proc = nil
	c.log.Info("pgcluster: killed", "port", c.port)
	if err != nil {
		return fmt.Errorf("pgcluster: kill server on port %d: %w", c.port, err)
	}
	return nil
}

// Pid is the postmaster's process id, 0 when the server is not running.
func (c *Cluster) Pid() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc == nil {
		return 0
	}
	return c.proc.Pid()
}

func (c *Cluster) waitReady(ctx context.Context, p *childproc.Process) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, readyTimeout)
		defer cancel()
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		err := c.ping(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-p.Done():
			return fmt.Errorf("pgcluster: postgres exited during start-up: %w\n%s", p.Err(), logTail(c.logPath()))
		case <-ctx.Done():
			return fmt.Errorf("pgcluster: waiting for postgres on port %d: %w (last error: %v)\n%s",
				c.port, ctx.Err(), err, logTail(c.logPath()))
		case <-tick.C:
		}
	}
}

// ping opens and closes one superuser connection.
func (c *Cluster) ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.AdminURL("postgres"))
	if err != nil {
		return err
	}
	return conn.Close(ctx)
}

// Exec runs sql as the superuser in database db using the simple protocol,
// so it may hold several statements.
func (c *Cluster) Exec(ctx context.Context, db, sql string) error {
	conn, err := pgx.Connect(ctx, c.AdminURL(db))
	if err != nil {
		return fmt.Errorf("pgcluster: connect to %q: %w", db, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, sql, pgx.QueryExecModeSimpleProtocol); err != nil {
		return fmt.Errorf("pgcluster: exec in %q: %w", db, err)
	}
	return nil
}

// CreateDatabase creates database name, owned by the superuser.
func (c *Cluster) CreateDatabase(ctx context.Context, name string) error {
	return c.Exec(ctx, "postgres", "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
}

// openLog opens the server log for appending.
func (c *Cluster) openLog() (*os.File, error) {
	f, err := os.OpenFile(c.logPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("pgcluster: open log: %w", err)
	}
	return f, nil
}

// logTail returns the last few lines of the log at path, for error messages.
func logTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-20):], "\n")
}
