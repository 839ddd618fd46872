// Package childproc runs the throwaway server processes (postgres,
// redis-server) that tests and the demo start: they die with their parent,
// stay out of the terminal's process group, and stop gracefully first.
package childproc

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// StopTimeout is how long a graceful stop may take before SIGKILL.
const StopTimeout = 30 * time.Second

// Process is one running child.
type Process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once the child has exited
	err  error         // exit status, valid after done
}

// Start runs bin in dir with its output sent to logf, which it takes over
// and closes when the child exits. With cred set the child runs as that user.
func Start(bin string, args []string, dir string, logf *os.File, cred *syscall.Credential) (*Process, error) {
	cmd := exec.Command(bin, args...)
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true, Credential: cred}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	p := &Process{cmd: cmd, done: make(chan struct{})}
	go p.wait(logf)
	return p, nil
}

func (p *Process) wait(logf *os.File) {
	p.err = p.cmd.Wait()
	logf.Close()
	close(p.done)
}

// Done is closed once the child has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err is the child's exit status, valid once Done is closed.
func (p *Process) Err() error { return p.err }

// Stop sends sig, escalating to SIGKILL after StopTimeout, and waits for
// the child to exit. A child that had already exited reports why.
func (p *Process) Stop(sig syscall.Signal) error {
	select {
	case <-p.done:
		return p.err
	default:
	}
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal: %w", err)
	}
	select {
	case <-p.done:
		return p.err
	case <-time.After(StopTimeout):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("no exit %s after %v, killed", StopTimeout, sig)
	}
}

// Pid is the child's process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Kill ends the process and every process of its group (it leads one: see
// Start) with SIGKILL, as a crash or the OOM killer would, and waits for
// it to exit. A PostgreSQL postmaster's backends die with it, so a new
// server can start on the same data directory and port.
func (p *Process) Kill() error {
	select {
	case <-p.done:
		return nil
	default:
	}
	if err := syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill: %w", err)
	}
	<-p.done
	return nil
}
