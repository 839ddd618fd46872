package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/tenantguard/tenantguard/bench/internal/benchkit"
)

// procSample is what /proc says about the service at one moment: the
// counters whose differences over a run, divided by its Checks, show what
// one Check costs independent of how busy the machine was.
type procSample struct {
	mallocs  int64 // heap objects the service allocated (go_memstats_mallocs_total)
	allocB   int64 // bytes it allocated (go_memstats_alloc_bytes_total)
	cpuTicks int64 // user+system, clock ticks (/proc/PID/stat)
	syscalls int64 // read- and write-family system calls (/proc/PID/io syscr+syscw)
	ctxsw    int64 // voluntary+involuntary context switches over all threads
	selfCPU  int64 // this process's (the load generator's) user+system µs
}

func sampleProc(pid int, metricsURL string) (procSample, error) {
	var s procSample
	var err error
	if s.mallocs, s.allocB, err = goAllocs(metricsURL); err != nil {
		return s, err
	}
	if s.cpuTicks, err = benchkit.CPUTicks(pid); err != nil {
		return s, err
	}
	io, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return s, fmt.Errorf("read /proc io: %w", err)
	}
	for line := range strings.Lines(string(io)) {
		k, v, _ := strings.Cut(strings.TrimSpace(line), ": ")
		if k == "syscr" || k == "syscw" {
			n, _ := strconv.ParseInt(v, 10, 64)
			s.syscalls += n
		}
	}
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue // the thread exited meanwhile
		}
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.HasSuffix(k, "ctxt_switches") {
				n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				s.ctxsw += n
			}
		}
	}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil {
		s.selfCPU = ru.Utime.Nano()/1000 + ru.Stime.Nano()/1000
	}
	return s, nil
}

// memSample is the service's memory from /proc/PID/status, in KiB, and
// what its Go runtime says it holds (from /metrics), in bytes.
type memSample struct {
	rss, peak, anon int64 // VmRSS, VmHWM, RssAnon
	// heap: heap spans in use; stacks: goroutine stacks; free: heap memory
	// free but not yet returned to the operating system (heap_idle -
	// heap_released), resident until the runtime scavenges it.
	heap, stacks, free int64
}

func (m memSample) String() string {
	const mib = 1 << 20
	return fmt.Sprintf("RSS %.1f MiB (%.1f MiB of it anonymous, the rest pages of the binary), peak %.1f MiB; "+
		"Go heap in use %.1f MiB, stacks %.1f MiB, free heap not yet returned %.1f MiB",
		float64(m.rss)/1024, float64(m.anon)/1024, float64(m.peak)/1024,
		float64(m.heap)/mib, float64(m.stacks)/mib, float64(m.free)/mib)
}

func memory(pid int, metricsURL string) (memSample, error) {
	var m memSample
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return m, err
	}
	for line := range strings.Lines(string(b)) {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			m.rss = n
		case "VmHWM":
			m.peak = n
		case "RssAnon":
			m.anon = n
		}
	}
	g, err := goMetrics(metricsURL)
	if err != nil {
		return m, err
	}
	m.heap, m.stacks = int64(g["go_memstats_heap_inuse_bytes"]), int64(g["go_memstats_stack_inuse_bytes"])
	m.free = int64(g["go_memstats_heap_idle_bytes"] - g["go_memstats_heap_released_bytes"])
	return m, nil
}

// goAllocs reads the Go runtime's cumulative allocation counters from the
// service's Prometheus endpoint.
func goAllocs(url string) (mallocs, bytes int64, err error) {
	g, err := goMetrics(url)
	if err != nil {
		return 0, 0, err
	}
	if g["go_memstats_mallocs_total"] == 0 {
		return 0, 0, fmt.Errorf("no go_memstats_mallocs_total at %s", url)
	}
	return int64(g["go_memstats_mallocs_total"]), int64(g["go_memstats_alloc_bytes_total"]), nil
}

// goMetrics reads the service's go_memstats_* samples from its Prometheus
// endpoint.
func goMetrics(url string) (map[string]float64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, fmt.Errorf("read metrics: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("read metrics: %w", err)
	}
	out := map[string]float64{}
	for line := range strings.Lines(string(body)) {
		name, v, ok := strings.Cut(strings.TrimSpace(line), " ")
		if !ok || !strings.HasPrefix(name, "go_memstats_") {
			continue
		}
		out[name], _ = strconv.ParseFloat(v, 64)
	}
	return out, nil
}
