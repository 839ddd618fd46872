package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/tenantguard/tenantguard/bench/internal/benchkit"
)

// runGrace is how long pgbench may run past -T before it counts as hung.
const runGrace = 30 * time.Second

// result is one variant's runs in one protocol mode.
type result struct {
	tps      []float64 // one per round
	txns     int64     // over all rounds
	cpuTicks int64     // PostgreSQL's CPU time over all rounds
}

// runMatrix runs every mode × round × variant, variants one after another
// within a round, starting with a different one each round, so drift
// (caches, a neighbour's load) hits every variant alike. results[mode][i]
// belongs to vs[i].
func runMatrix(ctx context.Context, o options, s *server, vs []variant) (map[string][]*result, error) {
	dir, err := os.MkdirTemp("", "bench-rls-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	out := map[string][]*result{}
	for _, mode := range o.modes {
		res := make([]*result, len(vs))
		for i := range res {
			res[i] = &result{}
		}
		for round := range o.Rounds {
			for i := range vs {
				k := (i + round) % len(vs)
				if err := runOnce(ctx, o, s, dir, vs[k], mode, res[k]); err != nil {
					return nil, err
				}
				benchkit.Logf("%-8s round %d/%d %-20s %8.0f tps", mode, round+1, o.Rounds, vs[k].name, res[k].tps[len(res[k].tps)-1])
			}
		}
		out[mode] = res
	}
	return out, nil
}

// script is v's pgbench script: bind once per connection (pgbench keeps a
// client's variables across transactions), then the point select.
func script(v variant, rows int) string {
	var b strings.Builder
	if v.bind != nil {
		fmt.Fprintf(&b, "\\if :bound = 0\n%s\n\\set bound 1\n\\endif\n", v.bind(tenantID))
	}
	fmt.Fprintf(&b, "\\set aid random(1, %d)\nSELECT abalance FROM %s WHERE id = :aid;\n", rows, v.table())
	return b.String()
}

var (
	tpsRe    = regexp.MustCompile(`(?m)^tps = ([0-9.]+) \(without initial connection time\)`)
	failedRe = regexp.MustCompile(`(?m)^number of failed transactions: (\d+)`)
	txnsRe   = regexp.MustCompile(`(?m)^number of transactions actually processed: (\d+)`)
)

// runOnce runs pgbench once against v and adds the outcome to res.
func runOnce(ctx context.Context, o options, s *server, dir string, v variant, mode string, res *result) error {
	path := filepath.Join(dir, v.name+".sql")
	if err := os.WriteFile(path, []byte(script(v, o.rows)), 0o644); err != nil {
		return err
	}
	login := appRole
	if v.login != "" {
		login = v.login
	}
	what := fmt.Sprintf("pgbench -M %s on %s", mode, v.name)
	before, err := s.cpuTicks()
	if err != nil {
		return err
	}
	tool := benchkit.Tool{What: what, Timeout: o.duration + runGrace,
		Hung:   fmt.Sprintf("pgbench still running %s after its -T ended, killed it", runGrace),
		Output: func(out []byte) string { return string(out) }}
	out, err := tool.Run(ctx, func(ctx context.Context) *exec.Cmd {
		return exec.CommandContext(ctx, "pgbench", "-n", "-c", strconv.Itoa(o.clients), "-j", "2",
			"-T", strconv.Itoa(int(o.duration.Seconds())), "-M", mode, "-D", "bound=0", "-f", path,
			"-h", "127.0.0.1", "-p", strconv.Itoa(s.Port()), "-U", login, dbName)
	})
	if err != nil {
		return err
	}
	if err := s.waitBackendsGone(ctx, login); err != nil {
		return err
	}
	after, err := s.cpuTicks()
	if err != nil {
		return err
	}
	tps, err1 := match(tpsRe, out)
	failed, err2 := match(failedRe, out)
	txns, err3 := match(txnsRe, out)
	if err1 != nil || err2 != nil || err3 != nil {
		return fmt.Errorf("%s: cannot parse output:\n%s", what, out)
	}
	if failed != 0 {
		return fmt.Errorf("%s: %.0f failed transactions:\n%s", what, failed, out)
	}
	res.tps = append(res.tps, tps)
	res.txns += int64(txns)
	res.cpuTicks += after - before
	return nil
}

func match(re *regexp.Regexp, out []byte) (float64, error) {
	m := re.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("no match for %s", re)
	}
	return strconv.ParseFloat(string(m[1]), 64)
}

// cpuTicks is PostgreSQL's CPU time so far: the postmaster's own and its
// reaped children's (cutime, cstime), plus every live child's.
func (s *server) cpuTicks() (int64, error) {
	total, err := procTicks(s.postmaster, true)
	if err != nil {
		return 0, err
	}
	kids, err := s.children()
	if err != nil {
		return 0, err
	}
	for _, pid := range kids {
		n, err := procTicks(pid, false)
		if err != nil {
			continue // exited meanwhile: now in the postmaster's cutime
		}
		total += n
	}
	return total, nil
}

// children lists the postmaster's child processes.
func (s *server) children() ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		f, err := statFields(pid)
		if err != nil || len(f) < 2 {
			continue
		}
		if ppid, _ := strconv.Atoi(f[1]); ppid == s.postmaster {
			out = append(out, pid)
		}
	}
	return out, nil
}

// waitBackendsGone waits until no backend of role is left, so that their
// CPU time has reached the postmaster's cutime.
func (s *server) waitBackendsGone(ctx context.Context, role string) error {
	deadline := time.Now().Add(10 * time.Second)
	needle := "postgres: " + role + " " + dbName + " "
	for {
		kids, err := s.children()
		if err != nil {
			return err
		}
		left := 0
		for _, pid := range kids {
			if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && strings.HasPrefix(string(b), needle) {
				left++
			}
		}
		if left == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d backends of %s still there 10s after pgbench ended", left, role)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// statFields returns /proc/PID/stat's fields from the state (field 3) on.
func statFields(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	return strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:])), nil
}

// procTicks is utime+stime of pid, plus cutime+cstime with reaped.
func procTicks(pid int, reaped bool) (int64, error) {
	f, err := statFields(pid)
	if err != nil {
		return 0, err
	}
	if len(f) < 15 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	last := 12
	if reaped {
		last = 14
	}
	var n int64
	for i := 11; i <= last; i++ {
		v, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse /proc/%d/stat: %w", pid, err)
		}
		n += v
	}
	return n, nil
}

// loadAvg is /proc/loadavg's first three fields.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
