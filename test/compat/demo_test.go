package compat

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// demo is the package's one running `tenantguard demo`.
type demo struct {
	cmd  *exec.Cmd
	dir  string
	out  lockedBuffer
	done chan struct{} // closed when the process has exited
	env  map[string]string
}

var (
	demoOnce sync.Once
	theDemo  *demo
	demoErr  error
)

// demoEnv returns the running demo's env file as a map, starting the demo
// on first use; it fails the test when the demo cannot start.
func demoEnv(t testing.TB) map[string]string {
	t.Helper()
	demoOnce.Do(func() { theDemo, demoErr = startDemo() })
	if demoErr != nil {
		t.Fatalf("tenantguard demo: %v", demoErr)
	}
	return theDemo.env
}

func startDemo() (*demo, error) {
	dir, err := os.MkdirTemp("", "tenantguard-compat-demo-")
	if err != nil {
		return nil, err
	}
	d := &demo{dir: dir, done: make(chan struct{})}
	envFile := filepath.Join(dir, "demo.env")
	d.cmd = exec.Command(binary, "demo", "--env-file", envFile)
	d.cmd.Stdout, d.cmd.Stderr = &d.out, &d.out
	if err := d.cmd.Start(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	go func() { _ = d.cmd.Wait(); close(d.done) }()
	// The demo writes the env file (temp file, then rename) once every
	// listener is ready; a slow machine may need a minute for initdb.
	deadline := time.NewTimer(2 * time.Minute)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if b, err := os.ReadFile(envFile); err == nil {
			d.env, err = parseEnv(b)
			if err != nil {
				d.stop()
				return nil, err
			}
			return d, nil
		}
		select {
		case <-d.done:
			_ = os.RemoveAll(dir)
			return nil, fmt.Errorf("exited before writing its env file:\n%s", d.out.String())
		case <-deadline.C:
			d.stop()
			return nil, fmt.Errorf("no env file after 2 minutes:\n%s", d.out.String())
		case <-tick.C:
		}
	}
}

// parseEnv reads dotenv KEY=value lines.
func parseEnv(b []byte) (map[string]string, error) {
	env := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("env file: malformed line %q", line)
		}
		env[k] = v
	}
	for _, k := range []string{"TG_PG_URL_ACME", "TG_PG_URL_GLOBEX", "TG_REDIS_URL_ACME", "TG_REDIS_URL_GLOBEX"} {
		if env[k] == "" {
			return nil, fmt.Errorf("env file lacks %s", k)
		}
	}
	return env, nil
}

// stop interrupts the demo, which stops its servers and removes its temp
// directories, and waits for it.
func (d *demo) stop() error {
	defer os.RemoveAll(d.dir)
	_ = d.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-d.done:
	case <-time.After(time.Minute):
		_ = d.cmd.Process.Kill()
		<-d.done
		return errors.New("did not exit within a minute of SIGINT")
	}
	if code := d.cmd.ProcessState.ExitCode(); code != 0 {
		return fmt.Errorf("exit code %d:\n%s", code, d.out.String())
	}
	return nil
}

// stopDemo stops the demo if a test started it.
func stopDemo() error {
	if theDemo == nil {
		return nil
	}
	return theDemo.stop()
}

// lockedBuffer collects a process's output from its copying goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
