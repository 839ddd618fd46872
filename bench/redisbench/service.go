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
)

const (
	readyTimeout = 30 * time.Second // start-up until PING goes through
	stopTimeout  = 15 * time.Second // SIGINT until SIGKILL
)

// service is a proxy child process with its own temporary directory, which
// holds its configuration and its logs.
type service struct {
	name           string
	addr           string // 127.0.0.1:port clients connect to
	user, password string // AUTH for the readiness check; "" = none
	// stopExit is the exit code that counts as a clean stop after SIGINT
	// (twemproxy exits 1 on SIGINT).
	stopExit int
	dir      string
	logs     []string // files whose tails go into error messages
	cmd      *exec.Cmd
	done     chan struct{} // closed when the process has exited
	err      error         // its exit status, valid after done
}

// newService creates the service's temporary directory; start runs it.
func newService(name string) (*service, error) {
	dir, err := os.MkdirTemp("", "redisbench-"+strings.ReplaceAll(name, " ", "-")+"-")
	if err != nil {
		return nil, fmt.Errorf("%s: create temp dir: %w", name, err)
	}
	s := &service{name: name, dir: dir, done: make(chan struct{})}
	s.logs = []string{s.outputPath()}
	return s, nil
}

// outputPath is where the process's stdout and stderr go.
func (s *service) outputPath() string { return filepath.Join(s.dir, "output.log") }

// start runs bin and waits until a client can (log in and) PING s.addr. On
// error the service is stopped and its directory removed.
func (s *service) start(ctx context.Context, bin string, args ...string) (err error) {
	defer func() {
		if err != nil {
			err = errors.Join(err, s.stop())
		}
	}()
	logFile, err := os.Create(s.outputPath())
	if err != nil {
		return fmt.Errorf("%s: create log: %w", s.name, err)
	}
	defer logFile.Close() // the child holds its own copy
	s.cmd = exec.Command(bin, args...)
	s.cmd.Dir, s.cmd.Stdout, s.cmd.Stderr = s.dir, logFile, logFile
	// Own process group (a terminal ^C reaches only us, and we stop children
	// in order); SIGKILL if we die without cleaning up.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		close(s.done)
		return fmt.Errorf("%s: start %s: %w", s.name, bin, err)
	}
	go func() { s.err = s.cmd.Wait(); close(s.done) }()
	logf("started %s (pid %d) on %s", s.name, s.cmd.Process.Pid, s.addr)
	return s.waitReady(ctx)
}

// waitReady polls until PING through the service succeeds, the process
// exits, or readyTimeout passes.
func (s *service) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		err := ping(ctx, s.addr, s.user, s.password)
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

// stop sends SIGINT, escalates to SIGKILL after stopTimeout and removes the
// service's directory. It reports an unexpected exit status. Safe to call
// twice.
func (s *service) stop() error {
	var err error
	if s.cmd != nil && s.cmd.Process != nil {
		select {
		case <-s.done:
			err = s.exitErr("had already exited", -1)
		default:
			_ = s.cmd.Process.Signal(syscall.SIGINT)
			select {
			case <-s.done:
				err = s.exitErr("exited badly on SIGINT", s.stopExit)
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

// exitErr describes a finished process's exit status, nil if it was zero
// or okCode.
func (s *service) exitErr(what string, okCode int) error {
	var ee *exec.ExitError
	if s.err == nil || okCode > 0 && errors.As(s.err, &ee) && ee.ExitCode() == okCode {
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

// logTail returns the last lines of the service's logs, for error messages.
func (s *service) logTail() string {
	var b strings.Builder
	for _, path := range s.logs {
		data, err := os.ReadFile(path)
		if err != nil || len(data) == 0 {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		fmt.Fprintf(&b, "--- %s %s tail ---\n%s\n", s.name, filepath.Base(path),
			strings.Join(lines[max(0, len(lines)-30):], "\n"))
	}
	return b.String()
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
