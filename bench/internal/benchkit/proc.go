package benchkit

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"

	"github.com/tenantguard/tenantguard/internal/fixture/pgcluster"
)

// CPUTicks returns process pid's user plus system CPU time in clock ticks,
// from fields 14 and 15 of /proc/PID/stat.
func CPUTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read cpu time: %w", err)
	}
	// The command name (field 2) may hold spaces; fields after it start at state (3).
	rest := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(rest) < 13 {
		return 0, fmt.Errorf("short /proc stat %q", b)
	}
	utime, err1 := strconv.ParseInt(rest[11], 10, 64)
	stime, err2 := strconv.ParseInt(rest[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("parse cpu time: %w", err)
	}
	return utime + stime, nil
}

// RSSKiB returns process pid's resident set size (VmRSS) in KiB.
func RSSKiB(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read status: %w", err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parse VmRSS %q: %w", v, err)
			}
			return n, nil
		}
	}
	return 0, errors.New("no VmRSS in /proc status")
}

// ClockTicks returns the kernel's clock ticks per second (getconf CLK_TCK),
// assuming the usual 100 if getconf fails.
func ClockTicks() int64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err == nil {
		if n, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64); err == nil && n > 0 {
			return n
		}
	}
	return 100
}

// FreePorts returns n distinct ports on 127.0.0.1 that were free a moment
// ago.
func FreePorts(n int) ([]int, error) {
	var ports []int
	for len(ports) < n {
		p, err := pgcluster.FreePort()
		if err != nil {
			return nil, err
		}
		if !slices.Contains(ports, p) {
			ports = append(ports, p)
		}
	}
	return ports, nil
}

// LocalAddr is 127.0.0.1:port.
func LocalAddr(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }
