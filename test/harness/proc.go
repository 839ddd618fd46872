package harness

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// ProcSample is what /proc says of a process at one moment.
type ProcSample struct {
	RSSKiB   int64 // VmRSS
	CPUTicks int64 // user + system CPU time, in clock ticks (usually 1/100 s)
	FDs      int   // open file descriptors
	Threads  int
}

// SampleProc reads pid's resident set, CPU time, descriptors and threads
// from /proc (Linux).
func SampleProc(pid int) (ProcSample, error) {
	var s ProcSample
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	// The command name (field 2) may hold spaces; the fields after it
	// start with the state (field 3).
	rest := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	if len(rest) < 18 {
		return s, fmt.Errorf("short /proc/%d/stat", pid)
	}
	utime, err1 := strconv.ParseInt(rest[11], 10, 64)
	stime, err2 := strconv.ParseInt(rest[12], 10, 64)
	threads, err3 := strconv.Atoi(rest[17])
	if err := errors.Join(err1, err2, err3); err != nil {
		return s, fmt.Errorf("parse /proc/%d/stat: %w", pid, err)
	}
	s.CPUTicks, s.Threads = utime+stime, threads
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	for line := range strings.Lines(string(status)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			s.RSSKiB, err = strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return s, fmt.Errorf("parse VmRSS %q: %w", v, err)
			}
		}
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return s, err
	}
	s.FDs = len(fds)
	return s, nil
}
