// Package memlimit chooses the Go runtime's soft memory limit
// (debug.SetMemoryLimit) for a long-running service: the GOMEMLIMIT
// environment variable if set, else the configuration's, else a share of
// the container's memory limit, so that the garbage collector works harder
// as the process nears the limit instead of the OOM killer ending it.
//
// A soft limit costs nothing while the heap goal (about twice the live
// heap with GOGC=100) stays under it, and CPU once it does not: the
// collector then runs as often as it must to stay under it. It is a
// ceiling, not a way to make a process small.
package memlimit

import (
	"fmt"
	"math"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// ContainerShare is the part of the container's memory limit the default
// soft limit takes: the rest is for what the Go runtime does not count
// (the binary's mapped pages, C memory, the kernel's socket buffers
// charged to the cgroup).
const ContainerShare = 0.9

// Unlimited is a configured limit of "none": no soft limit even in a
// container that has one.
const Unlimited = -1

// Source says where a limit came from.
type Source string

// The sources of a limit.
const (
	SourceEnv       Source = "GOMEMLIMIT"
	SourceConfig    Source = "config"
	SourceContainer Source = "container"
	SourceNone      Source = "none"
)

// cgroupFiles are where the container's limit is read: cgroup v2, then v1.
var cgroupFiles = []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}

// Choose returns the soft limit to apply and where it came from, without
// applying it: configured is the configuration's (0: not set; Unlimited:
// none). A limit of 0 means none.
func Choose(configured int64) (int64, Source) {
	switch {
	case os.Getenv("GOMEMLIMIT") != "":
		// The runtime read it at start; keep it.
		return debug.SetMemoryLimit(-1), SourceEnv
	case configured == Unlimited:
		return 0, SourceNone
	case configured > 0:
		return configured, SourceConfig
	}
	if c := containerLimit(cgroupFiles); c > 0 {
		return int64(float64(c) * ContainerShare), SourceContainer
	}
	return 0, SourceNone
}

// Apply sets the limit Choose returns (unless it came from GOMEMLIMIT,
// which the runtime already applies) and returns it.
func Apply(configured int64) (int64, Source) {
	limit, src := Choose(configured)
	if limit > 0 && src != SourceEnv {
		debug.SetMemoryLimit(limit)
	}
	return limit, src
}

// containerLimit is the first of files that holds a memory limit, in
// bytes; 0 if none does ("max" in cgroup v2, a huge number in v1).
func containerLimit(files []string) int64 {
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		s := strings.TrimSpace(string(b))
		if s == "max" {
			return 0
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n <= 0 || n >= math.MaxInt64/2 {
			return 0 // v1's "no limit" is a page-rounded MaxInt64
		}
		return n
	}
	return 0
}

// Parse reads a limit as a configuration file writes it: a number of bytes
// with an optional unit (B, KiB, MiB, GiB, as GOMEMLIMIT takes them), or
// "none". "" is 0: not set.
func Parse(s string) (int64, error) {
	s = strings.TrimSpace(s)
	switch s {
	case "":
		return 0, nil
	case "none":
		return Unlimited, nil
	}
	in, mult := s, int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"B", 1}} {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = strings.TrimSpace(num), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("%q is not a memory size (e.g. 256MiB, 1GiB, or none)", in)
	}
	return n * mult, nil
}
