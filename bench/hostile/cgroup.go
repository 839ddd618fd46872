package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// cpuCap is a cgroup that holds the attacker's process to a share of one
// core, standing in for a client on another machine: the attack's cost to
// the sidecar and the upstreams stays, the attacker's own CPU mostly goes.
type cpuCap struct {
	dir   string // the cgroup's directory
	procs string // the file a pid is written to, to move the process in
}

// newCPUCap creates a cgroup limited to percent of one core: cgroup v2's
// cpu.max where the unified hierarchy has the cpu controller, else the
// cgroup v1 cpu controller's CFS quota.
func newCPUCap(percent int) (*cpuCap, error) {
	const period = 100000 // µs
	quota := period * percent / 100
	name := fmt.Sprintf("tg-hostile-attacker-%d", os.Getpid())
	for _, root := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		ctrl, err := os.ReadFile(filepath.Join(root, "cgroup.controllers"))
		if err != nil || !hasWord(string(ctrl), "cpu") {
			continue
		}
		// The controller must be enabled for the children of root.
		_ = os.WriteFile(filepath.Join(root, "cgroup.subtree_control"), []byte("+cpu"), 0o644)
		dir := filepath.Join(root, name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, "cpu.max"), []byte(fmt.Sprintf("%d %d", quota, period)), 0o644); err != nil {
			_ = os.Remove(dir)
			continue
		}
		return &cpuCap{dir: dir, procs: filepath.Join(dir, "cgroup.procs")}, nil
	}
	v1 := "/sys/fs/cgroup/cpu"
	if _, err := os.Stat(filepath.Join(v1, "cpu.cfs_quota_us")); err != nil {
		return nil, errors.New("no writable cgroup cpu controller (v2 cpu.max or v1 cpu.cfs_quota_us); run as root, or without -attacker-cpu")
	}
	dir := filepath.Join(v1, name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, fmt.Errorf("cgroup: %w", err)
	}
	for file, v := range map[string]int{"cpu.cfs_period_us": period, "cpu.cfs_quota_us": quota} {
		if err := os.WriteFile(filepath.Join(dir, file), []byte(strconv.Itoa(v)), 0o644); err != nil {
			_ = os.Remove(dir)
			return nil, fmt.Errorf("cgroup %s: %w", file, err)
		}
	}
	return &cpuCap{dir: dir, procs: filepath.Join(dir, "cgroup.procs")}, nil
}

// add moves process pid, with all its threads, into the cgroup.
func (c *cpuCap) add(pid int) error {
	return os.WriteFile(c.procs, []byte(strconv.Itoa(pid)), 0o644)
}

// remove deletes the cgroup; it must hold no process by then.
func (c *cpuCap) remove() error { return os.Remove(c.dir) }

func hasWord(s, w string) bool { return slices.Contains(strings.Fields(s), w) }
