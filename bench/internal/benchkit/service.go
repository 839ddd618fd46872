package benchkit

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

const (
	readyTimeout = 30 * time.Second // start-up until the readiness check passes
	stopTimeout  = 15 * time.Second // SIGINT until SIGKILL
)

// Service is a proxy child process with its own temporary directory, which
// holds its configuration and its logs.
type Service struct {
	Name string
	Dir  string
	Addr string   // host:port clients connect to, for the start-up log line
	Logs []string // files whose tails go into error messages
	// StopExit is an exit code that counts as a clean stop after SIGINT, as
	// 0 always does (twemproxy exits 1 on SIGINT).
	StopExit int
	Cred     *syscall.Credential // run as this user; nil = as this process
	Env      []string            // added to this process's environment

	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // its exit status, valid after done
}

// NewService creates the service's temporary directory, named after
// pattern as in os.MkdirTemp; Start runs it.
func NewService(name, pattern string) (*Service, error) {
	dir, err := os.MkdirTemp("", pattern)
	if err != nil {
		return nil, fmt.Errorf("%s: create temp dir: %w", name, err)
	}
	s := &Service{Name: name, Dir: dir, done: make(chan struct{})}
	s.Logs = []string{s.OutputPath()}
	return s, nil
}

// OutputPath is where the process's stdout and stderr go.
func (s *Service) OutputPath() string { return filepath.Join(s.Dir, "output.log") }

// Start runs bin in s.Dir and waits until ready passes. On error the
// service is stopped and its directory removed.
func (s *Service) Start(ctx context.Context, ready func(context.Context) error, bin string, args ...string) (err error) {
	defer func() {
		if err != nil {
			err = errors.Join(err, s.Stop())
		}
	}()
	logFile, err := os.Create(s.OutputPath())
	if err != nil {
		return fmt.Errorf("%s: create log: %w", s.Name, err)
	}
	defer logFile.Close() // the child holds its own copy
	s.cmd = exec.Command(bin, args...)
	s.cmd.Dir, s.cmd.Stdout, s.cmd.Stderr = s.Dir, logFile, logFile
	if len(s.Env) > 0 {
		s.cmd.Env = append(os.Environ(), s.Env...)
	}
	// Own process group (a terminal ^C reaches only us, and we stop children
	// in order); SIGKILL if we die without cleaning up.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, Credential: s.Cred}
	if err := s.cmd.Start(); err != nil {
		close(s.done)
		return fmt.Errorf("%s: start %s: %w", s.Name, bin, err)
	}
	go func() { s.err = s.cmd.Wait(); close(s.done) }()
	Logf("started %s (pid %d) on %s", s.Name, s.cmd.Process.Pid, s.Addr)
	return s.waitReady(ctx, ready)
}

// waitReady polls ready until it passes, the process exits, or
// readyTimeout passes.
func (s *Service) waitReady(ctx context.Context, ready func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		err := ready(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-s.done:
			return fmt.Errorf("%s exited during start-up: %v\n%s", s.Name, s.err, s.LogTail())
		case <-ctx.Done():
			return fmt.Errorf("%s not ready after %s: %w\n%s", s.Name, readyTimeout, err, s.LogTail())
		case <-tick.C:
		}
	}
}

// Stop sends SIGINT, escalates to SIGKILL after stopTimeout and removes the
// service's directory. It reports an unexpected exit status. Safe to call
// twice.
func (s *Service) Stop() error {
	var err error
	if s.cmd != nil && s.cmd.Process != nil {
		select {
		case <-s.done:
			err = s.exitErr("had already exited", -1)
		default:
			_ = s.cmd.Process.Signal(syscall.SIGINT)
			select {
			case <-s.done:
				err = s.exitErr("exited badly on SIGINT", s.StopExit)
			case <-time.After(stopTimeout):
				_ = s.cmd.Process.Kill()
				<-s.done
				err = fmt.Errorf("%s: no exit %s after SIGINT, killed\n%s", s.Name, stopTimeout, s.LogTail())
			}
		}
		s.cmd = nil
	}
	if rmErr := os.RemoveAll(s.Dir); rmErr != nil {
		err = errors.Join(err, fmt.Errorf("%s: remove temp dir: %w", s.Name, rmErr))
	}
	return err
}

// Discard stops a service that failed to start and returns err, with any
// error from stopping it added.
func (s *Service) Discard(err error) error {
	if stopErr := s.Stop(); stopErr != nil {
		return fmt.Errorf("%w (cleanup: %v)", err, stopErr)
	}
	return err
}

// exitErr describes a finished process's exit status, nil if it was zero
// or okCode (when positive).
func (s *Service) exitErr(what string, okCode int) error {
	var ee *exec.ExitError
	if s.err == nil || okCode > 0 && errors.As(s.err, &ee) && ee.ExitCode() == okCode {
		return nil
	}
	return fmt.Errorf("%s %s: %w\n%s", s.Name, what, s.err, s.LogTail())
}

// Alive reports an error if the process has exited.
func (s *Service) Alive() error {
	select {
	case <-s.done:
		return fmt.Errorf("%s died: %v\n%s", s.Name, s.err, s.LogTail())
	default:
		return nil
	}
}

// LogTail returns the last lines of the service's logs, for error
// messages; "" for a nil Service (a target without a proxy).
func (s *Service) LogTail() string {
	if s == nil {
		return ""
	}
	var b strings.Builder
	for _, path := range s.Logs {
		data, err := os.ReadFile(path)
		if err != nil || len(data) == 0 {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		fmt.Fprintf(&b, "--- %s %s tail ---\n%s\n", s.Name, filepath.Base(path),
			strings.Join(lines[max(0, len(lines)-30):], "\n"))
	}
	return b.String()
}
