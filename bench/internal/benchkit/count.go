package benchkit

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Counting runs measure what depends much less than throughput and CPU
// time on how busy the machine is: a proxy's system calls (perf stat on
// the raw_syscalls:sys_enter tracepoint, attached to its process), its
// context switches (perf's context-switches event: each time one of its
// threads leaves the CPU, waiting or preempted) and
// tenantguard's heap allocations (go_memstats_mallocs_total from its
// /metrics). Counting a tracepoint costs time on every system call, so a
// counting run is separate from the timed ones.

// PerfUsable reports whether perf can count system calls here, and why not.
func PerfUsable() (bool, string) {
	out, err := exec.Command("perf", "stat", "-x,", "-e", "raw_syscalls:sys_enter", "--", "true").CombinedOutput()
	if err != nil {
		return false, fmt.Sprintf("perf stat -e raw_syscalls:sys_enter failed (%v: %s); install linux-perf and allow tracepoints (perf_event_paranoid, root)",
			err, strings.TrimSpace(string(out)))
	}
	return true, ""
}

// CountSyscalls runs f with perf stat attached to s and returns the
// system calls and context switches s made meanwhile; the counts go
// through a file in s.Dir.
func CountSyscalls(s *Service, f func() error) (syscalls, switches float64, err error) {
	out := filepath.Join(s.Dir, "perf-stat.csv")
	perf := exec.Command("perf", "stat", "-x,", "-e", "raw_syscalls:sys_enter,context-switches", "-p", strconv.Itoa(s.Pid()), "-o", out)
	if err := perf.Start(); err != nil {
		return 0, 0, fmt.Errorf("start perf stat: %w", err)
	}
	time.Sleep(200 * time.Millisecond) // let perf attach before the run starts
	runErr := f()
	_ = perf.Process.Signal(syscall.SIGINT)
	_ = perf.Wait()
	if runErr != nil {
		return 0, 0, runErr
	}
	if syscalls, err = perfCount(out, "raw_syscalls:sys_enter"); err != nil {
		return 0, 0, err
	}
	if switches, err = perfCount(out, "context-switches"); err != nil {
		return 0, 0, err
	}
	return syscalls, switches, nil
}

// perfCount reads one event's count from perf stat -x, output.
func perfCount(path, event string) (float64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ",")
		if len(fields) >= 3 && strings.Contains(fields[2], event) {
			return strconv.ParseFloat(fields[0], 64)
		}
	}
	return 0, fmt.Errorf("no %s count in %s", event, path)
}

// Mallocs reads go_memstats_mallocs_total from a Prometheus endpoint.
func Mallocs(ctx context.Context, url string) (float64, error) {
	return MetricValue(ctx, url, "go_memstats_mallocs_total")
}

// MetricValue reads one series (name with its labels, as exported) from a
// Prometheus endpoint.
func MetricValue(ctx context.Context, url, series string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", url, err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, errors.New("no " + series + " in " + url)
}

// OrNA formats v, or n/a for a figure not counted (negative).
func OrNA(v float64, format string) string {
	if v < 0 {
		return "n/a"
	}
	return fmt.Sprintf(format, v)
}

// Counts are a counting run's figures per unit (transaction, request);
// -1 for what it did not count.
type Counts struct {
	Syscalls, Switches, Allocs float64
}

// Count runs run, which returns how many units (transactions, requests)
// it did, and returns s's system calls and context switches per unit
// (with perf attached when perf is set) and heap allocations per unit
// (from metricsURL's go_memstats_mallocs_total when it is not "").
func Count(ctx context.Context, s *Service, metricsURL string, perf bool, run func() (units float64, err error)) (c Counts, err error) {
	c = Counts{-1, -1, -1}
	var m0 float64
	if metricsURL != "" {
		if m0, err = Mallocs(ctx, metricsURL); err != nil {
			return c, err
		}
	}
	var units, sys, sw float64
	f := func() (err error) {
		units, err = run()
		return err
	}
	if perf {
		sys, sw, err = CountSyscalls(s, f)
	} else {
		err = f()
	}
	if err != nil {
		return c, err
	}
	if units <= 0 {
		return c, fmt.Errorf("counting run via %s: nothing done", s.Name)
	}
	if perf {
		c.Syscalls, c.Switches = sys/units, sw/units
	}
	if metricsURL != "" {
		m1, err := Mallocs(ctx, metricsURL)
		if err != nil {
			return c, err
		}
		c.Allocs = (m1 - m0) / units
	}
	return c, nil
}
