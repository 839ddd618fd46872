package main

import (
	"fmt"
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
	cpuTicks int64 // user+system, clock ticks (/proc/PID/stat)
	syscalls int64 // read- and write-family system calls (/proc/PID/io syscr+syscw)
	ctxsw    int64 // voluntary+involuntary context switches over all threads
	selfCPU  int64 // this process's (the load generator's) user+system µs
}

func sampleProc(pid int) (procSample, error) {
	var s procSample
	var err error
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

// memory returns the service's VmRSS and VmHWM (peak RSS) in KiB.
func memory(pid int) (rss, peak int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for line := range strings.Lines(string(b)) {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			rss = n
		case "VmHWM":
			peak = n
		}
	}
	return rss, peak, nil
}
