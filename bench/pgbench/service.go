package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

const (
	readyTimeout = 30 * time.Second // start-up until a query goes through
	stopTimeout  = 15 * time.Second // SIGINT until SIGKILL
)

// service is a proxy child process with its own temporary directory, which
// holds its configuration and its log.
type service struct {
	name           string
	port           int
	adminPort      int    // tenantguard's metrics listener; 0 for PgBouncer
	user, password string // a client login, to check readiness
	dir            string
	cmd            *exec.Cmd
	done           chan struct{} // closed when the process has exited
	err            error         // its exit status, valid after done
}

// newService creates the service's temporary directory; start runs it.
func newService(name string) (*service, error) {
	dir, err := os.MkdirTemp("", "bench-"+name+"-")
	if err != nil {
		return nil, fmt.Errorf("%s: create temp dir: %w", name, err)
	}
	return &service{name: name, dir: dir, done: make(chan struct{})}, nil
}

// logPath is where the process's stdout and stderr go.
func (s *service) logPath() string { return filepath.Join(s.dir, "output.log") }

// start runs bin, optionally as another user, and waits until a client can
// log in as s.user and run a query on s.port. On error the service is
// stopped and its directory removed.
func (s *service) start(ctx context.Context, cred *syscall.Credential, bin string, args ...string) (err error) {
	defer func() {
		if err != nil {
			err = errors.Join(err, s.stop())
		}
	}()
	logFile, err := os.Create(s.logPath())
	if err != nil {
		return fmt.Errorf("%s: create log: %w", s.name, err)
	}
	defer logFile.Close() // the child holds its own copy
	s.cmd = exec.Command(bin, args...)
	s.cmd.Dir, s.cmd.Stdout, s.cmd.Stderr = s.dir, logFile, logFile
	// Own process group (a terminal ^C reaches only us, and we stop children
	// in order); SIGKILL if we die without cleaning up.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, Credential: cred}
	if err := s.cmd.Start(); err != nil {
		close(s.done)
		return fmt.Errorf("%s: start %s: %w", s.name, bin, err)
	}
	go func() { s.err = s.cmd.Wait(); close(s.done) }()
	logf("started %s (pid %d) on 127.0.0.1:%d", s.name, s.cmd.Process.Pid, s.port)
	return s.waitReady(ctx)
}

// waitReady polls until a query through the service succeeds, the process
// exits, or readyTimeout passes.
func (s *service) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	url := s.url(s.user, s.password)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		err := ping(ctx, url)
		if err == nil {
			return nil
		}
		select {
		case <-s.done:
			return fmt.Errorf("%s exited during start-up: %v\n%s", s.name, s.err, s.logTail())
		case <-ctx.Done():
			return fmt.Errorf("%s not ready after %s: %w\n%s", s.name, readyTimeout, err, s.logTail())
		case <-tick.C:
		}
	}
}

// url is a connection URL for database bench through the service.
func (s *service) url(user, password string) string {
	return fmt.Sprintf("postgres://%s:%s@127.0.0.1:%d/%s?sslmode=disable", user, password, s.port, dbName)
}

// ping connects to url and runs one query with the simple protocol.
func ping(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, "SELECT 1", pgx.QueryExecModeSimpleProtocol)
	return err
}

// stop sends SIGINT (a clean shutdown for both tenantguard and PgBouncer;
// PgBouncer exits 1 on SIGTERM), escalates to SIGKILL after stopTimeout and
// removes the service's directory. It reports a non-zero exit. Safe to call
// twice.
func (s *service) stop() error {
	var err error
	if s.cmd != nil && s.cmd.Process != nil {
		select {
		case <-s.done:
			err = s.exitErr("had already exited")
		default:
			_ = s.cmd.Process.Signal(syscall.SIGINT)
			select {
			case <-s.done:
				err = s.exitErr("exited badly on SIGINT")
			case <-time.After(stopTimeout):
				_ = s.cmd.Process.Kill()
				<-s.done
				err = fmt.Errorf("%s: no exit %s after SIGINT, killed\n%s", s.name, stopTimeout, s.logTail())
			}
		}
		s.cmd = nil
	}
	if rmErr := os.RemoveAll(s.dir); rmErr != nil {
		err = errors.Join(err, fmt.Errorf("%s: remove temp dir: %w", s.name, rmErr))
	}
	return err
}

// exitErr describes a finished process's exit status, nil if it was zero.
func (s *service) exitErr(what string) error {
	if s.err == nil {
		return nil
	}
	return fmt.Errorf("%s %s: %w\n%s", s.name, what, s.err, s.logTail())
}

// alive reports an error if the process has exited.
func (s *service) alive() error {
	select {
	case <-s.done:
		return fmt.Errorf("%s died: %v\n%s", s.name, s.err, s.logTail())
	default:
		return nil
	}
}

// logTail returns the last lines of the service's output, for error messages.
func (s *service) logTail() string {
	b, err := os.ReadFile(s.logPath())
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return "--- " + s.name + " log tail ---\n" + strings.Join(lines[max(0, len(lines)-30):], "\n")
}

// cpuTicks returns the process's user plus system CPU time in clock ticks,
// from fields 14 and 15 of /proc/PID/stat.
func (s *service) cpuTicks() (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.cmd.Process.Pid))
	if err != nil {
		return 0, fmt.Errorf("%s: read cpu time: %w", s.name, err)
	}
	// The command name (field 2) may hold spaces; fields after it start at state (3).
	rest := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(rest) < 13 {
		return 0, fmt.Errorf("%s: short /proc stat %q", s.name, b)
	}
	utime, err1 := strconv.ParseInt(rest[11], 10, 64)
	stime, err2 := strconv.ParseInt(rest[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("%s: parse cpu time: %w", s.name, err)
	}
	return utime + stime, nil
}

// rssKiB returns the process's resident set size (VmRSS) in KiB.
func (s *service) rssKiB() (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		return 0, fmt.Errorf("%s: read status: %w", s.name, err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%s: parse VmRSS %q: %w", s.name, v, err)
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("%s: no VmRSS in /proc status", s.name)
}

// clockTicks returns the kernel's clock ticks per second (getconf CLK_TCK),
// assuming the usual 100 if getconf fails.
func clockTicks() int64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err == nil {
		if n, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64); err == nil && n > 0 {
			return n
		}
	}
	return 100
}
