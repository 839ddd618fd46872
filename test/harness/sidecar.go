package harness

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/internal/fixture/pgcluster"
)

// BuildTenantguard builds cmd/tenantguard into dir and returns the
// binary's path; race builds it with the race detector.
func BuildTenantguard(dir string, race bool) (string, error) {
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	bin := filepath.Join(dir, "tenantguard")
	args := []string{"build", "-o", bin}
	if race {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, "./cmd/tenantguard")...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build tenantguard: %v\n%s", err, out)
	}
	return bin, nil
}

// FreeAddr returns a 127.0.0.1 address whose port was free a moment ago.
func FreeAddr(t testing.TB) string {
	t.Helper()
	port, err := pgcluster.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return "127.0.0.1:" + strconv.Itoa(port)
}

// Process is a child process with its output captured, killed when the
// test ends if it is still running.
type Process struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  strings.Builder
	done chan struct{} // closed once it has exited and its output is read
	err  error
}

// StartProcess runs name with args, capturing stdout and stderr.
func StartProcess(t testing.TB, name string, args ...string) *Process {
	t.Helper()
	p := &Process{cmd: exec.Command(name, args...), done: make(chan struct{})}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stdout, p.cmd.Stderr = w, w
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	_ = w.Close()
	go func() {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			if p.out.Len() < 8<<20 {
				p.out.WriteString(sc.Text() + "\n")
			}
			p.mu.Unlock()
		}
		_, _ = io.Copy(io.Discard, r)
		_ = r.Close()
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", filepath.Base(name), tail(p.Output(), 200))
		}
	})
	return p
}

func tail(s string, lines int) string {
	l := strings.Split(s, "\n")
	return strings.Join(l[max(0, len(l)-lines):], "\n")
}

// Pid is the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Output is what the process has written so far.
func (p *Process) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// Signal sends sig to the process.
func (p *Process) Signal(sig syscall.Signal) error { return p.cmd.Process.Signal(sig) }

// Done is closed once the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited returns an error describing the exit if the process has ended,
// else nil.
func (p *Process) Exited() error {
	select {
	case <-p.done:
		return fmt.Errorf("exited: %v", p.cmd.ProcessState)
	default:
		return nil
	}
}

// Wait waits up to d for the process to exit and returns its exit code
// (-1 when a signal ended it); it fails the test if it does not exit.
func (p *Process) Wait(t testing.TB, d time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(d):
		t.Fatalf("%s did not exit within %v", filepath.Base(p.cmd.Path), d)
		return -1
	}
}

// Sidecar is a `tenantguard sidecar` child process.
type Sidecar struct {
	*Process
	Admin string // the admin listener, for /readyz and /metrics
}

// SidecarOptions are how a sidecar process is started.
type SidecarOptions struct {
	// NoFile, when set, is the descriptor limit (ulimit -n) it runs under.
	NoFile int
	// LogLevel is passed as --log-level (default info).
	LogLevel string
}

// StartSidecar writes config (YAML, whose admin listener is admin) into
// the test's temp dir, runs `bin sidecar` on it and waits until it is
// ready.
func StartSidecar(t testing.TB, bin, admin, config string, opts SidecarOptions) *Sidecar {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sidecar.yaml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	level := opts.LogLevel
	if level == "" {
		level = "info"
	}
	args := []string{"sidecar", "--config", path, "--log-level", level}
	var p *Process
	if opts.NoFile > 0 {
		p = StartProcess(t, "/bin/sh", append([]string{"-c", fmt.Sprintf(`ulimit -n %d && exec "$0" "$@"`, opts.NoFile), bin}, args...)...)
	} else {
		p = StartProcess(t, bin, args...)
	}
	sc := &Sidecar{Process: p, Admin: admin}
	Eventually(t, 60*time.Second, func() error {
		if err := p.Exited(); err != nil {
			t.Fatalf("sidecar %v before it was ready:\n%s", err, p.Output())
		}
		return sc.Ready()
	})
	return sc
}

// Ready returns nil once /readyz answers 200.
func (sc *Sidecar) Ready() error {
	code, _, err := httpGet("http://" + sc.Admin + "/readyz")
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("readyz: %d", code)
	}
	return nil
}

// Metrics scrapes /metrics into a map from series (name with labels, as
// printed) to value.
func (sc *Sidecar) Metrics() (map[string]float64, error) {
	code, body, err := httpGet("http://" + sc.Admin + "/metrics")
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("metrics: %d", code)
	}
	out := map[string]float64{}
	for line := range strings.Lines(body) {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out, nil
}

// Metric is the sum of every series of the metric name whose labels
// contain each of match (e.g. `state="idle"`).
func Metric(m map[string]float64, name string, match ...string) float64 {
	var sum float64
	for series, v := range m {
		base, labels, _ := strings.Cut(series, "{")
		if base != name {
			continue
		}
		ok := true
		for _, want := range match {
			if !strings.Contains(labels, want) {
				ok = false
			}
		}
		if ok {
			sum += v
		}
	}
	return sum
}

func httpGet(url string) (int, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, "", errors.Join(err, errors.New("read body"))
	}
	return resp.StatusCode, string(b), nil
}
