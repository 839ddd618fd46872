package main

import (
	"context"
	"encoding/csv"
	"fmt"
	"net"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tenantguard/tenantguard/bench/internal/benchkit"
)

// target is one place redis-benchmark connects to.
type target struct {
	name           string
	addr           string
	user, password string            // AUTH; "" = none
	svc            *benchkit.Service // the proxy process; nil for direct redis-server
}

// tests are the redis-benchmark tests measured, in the order they run
// against each target (SET first, so GET finds the keys).
var tests = []string{"SET", "GET"}

// result is one target's runs for one test and pipeline depth.
type result struct {
	rps      []float64 // one per round
	requests int64     // requests over all rounds
	cpuTicks int64     // proxy CPU time over all rounds
	srvTicks int64     // redis-server's CPU time over all rounds
	client   clientUse // redis-benchmark's own
}

// clientUse adds up redis-benchmark's own CPU time (user and system, from
// wait4) and the wall time of its runs. redis-benchmark is one thread: at
// about one CPU per second of wall time it is what limits the rate, and
// nothing it talks to can be measured faster.
type clientUse struct{ cpu, wall time.Duration }

// share is redis-benchmark's CPU per second of wall time: 1.0 is a whole
// core.
func (u clientUse) share() float64 {
	if u.wall <= 0 {
		return 0
	}
	return u.cpu.Seconds() / u.wall.Seconds()
}

// row is one test and pipeline depth, with a result per target (same order).
type row struct {
	test     string
	pipeline int
	results  []*result
}

// runMatrix runs every pipeline × round × target × test. Within a round the
// targets run one after another, starting with a different one each round,
// so slow drift (memory growth, thermal) hits every target alike.
func runMatrix(ctx context.Context, o options, targets []*target) ([]row, error) {
	var rows []row
	for _, p := range o.pipelines {
		first := len(rows)
		for _, test := range tests {
			r := row{test: test, pipeline: p}
			for range targets {
				r.results = append(r.results, &result{})
			}
			rows = append(rows, r)
		}
		for round := range o.Rounds {
			for i := range targets {
				k := (i + round) % len(targets)
				t := targets[k]
				for j, test := range tests {
					res := rows[first+j].results[k]
					if err := runOnce(ctx, o, t, test, p, res); err != nil {
						return nil, err
					}
					benchkit.Logf("%-3s -P %-3d round %d/%d %-18s %12.0f rps", test, p, round+1, o.Rounds, t.name, res.rps[len(res.rps)-1])
				}
			}
		}
	}
	return rows, nil
}

// runOnce runs one redis-benchmark test against t and adds the outcome to
// res.
func runOnce(ctx context.Context, o options, t *target, test string, pipeline int, res *result) error {
	args := []string{"-t", strings.ToLower(test), "-c", strconv.Itoa(clients), "-n", strconv.Itoa(o.requests),
		"-P", strconv.Itoa(pipeline), "-r", strconv.Itoa(keyspace), "--csv"}
	what := fmt.Sprintf("redis-benchmark %s -P %d via %s", test, pipeline, t.name)
	var out []byte
	var srvTicks int64
	ticks, err := benchkit.CPUDuring(t.svc, func() (err error) {
		srvTicks, err = pidCPUDuring(o.serverPID, func() (err error) {
			out, err = runBenchmark(ctx, what, t, o.timeout, args, &res.client)
			return err
		})
		return err
	})
	if err != nil {
		return err
	}
	res.cpuTicks += ticks
	res.srvTicks += srvTicks
	rps, err := csvRPS(out, test)
	if err != nil {
		return fmt.Errorf("%s: %w:\n%s", what, err, out)
	}
	res.rps = append(res.rps, rps)
	res.requests += int64(o.requests)
	return nil
}

// pidCPUDuring runs f and returns the CPU ticks process pid used
// meanwhile; 0 and f's error when pid is 0.
func pidCPUDuring(pid int, f func() error) (int64, error) {
	if pid == 0 {
		return 0, f()
	}
	before, err := benchkit.CPUTicks(pid)
	if err != nil {
		return 0, fmt.Errorf("redis-server: %w", err)
	}
	if err := f(); err != nil {
		return 0, err
	}
	after, err := benchkit.CPUTicks(pid)
	if err != nil {
		return 0, fmt.Errorf("redis-server: %w", err)
	}
	return after - before, nil
}

// runDefaultSet runs redis-benchmark's whole default test set through tg
// with -P pipeline and fails on any error. It returns the tests that ran.
func runDefaultSet(ctx context.Context, o options, tg *benchkit.Service, pipeline int) ([]string, error) {
	t := &target{name: tg.Name, addr: tg.Addr, user: tenantID, password: tenantPass, svc: tg}
	args := []string{"-c", strconv.Itoa(clients), "-n", strconv.Itoa(defaultSetRequests),
		"-P", strconv.Itoa(pipeline), "-q"}
	what := fmt.Sprintf("redis-benchmark default test set -P %d via %s", pipeline, tg.Name)
	benchkit.Logf("running %s", what)
	out, err := runBenchmark(ctx, what, t, max(o.timeout, 2*time.Minute), args, nil)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, line := range outputLines(out) {
		if strings.Contains(line, "requests per second") {
			name, _, _ := strings.Cut(line, ":")
			names = append(names, name)
			benchkit.Logf("    %s", line)
		}
	}
	for _, want := range []string{"PING_INLINE", "SET", "GET", "LRANGE_600 (first 600 elements)", "MSET (10 keys)"} {
		if !slices.Contains(names, want) {
			return nil, fmt.Errorf("%s: test %s did not run:\n%s", what, want, out)
		}
	}
	return names, nil
}

// runBenchmark runs redis-benchmark with args against t. A non-zero exit,
// an error in its output, a proxy that died or a run that takes longer than
// timeout is an error carrying redis-benchmark's output and the proxy's
// log; what names the run in it. use, if not nil, gets redis-benchmark's
// CPU and wall time added.
func runBenchmark(ctx context.Context, what string, t *target, timeout time.Duration, args []string, use *clientUse) ([]byte, error) {
	host, port, _ := net.SplitHostPort(t.addr)
	args = append([]string{"-h", host, "-p", port}, args...)
	if t.user != "" {
		args = append(args, "--user", t.user, "-a", t.password)
	}
	tool := benchkit.Tool{
		What: what, Svc: t.svc, Timeout: timeout,
		Hung:   fmt.Sprintf("still running after %s, killed it (-timeout to allow longer)", timeout),
		Output: func(out []byte) string { return tail(out) + "\n" },
	}
	var cmd *exec.Cmd
	start := time.Now()
	out, err := tool.Run(ctx, func(ctx context.Context) *exec.Cmd {
		cmd = exec.CommandContext(ctx, "redis-benchmark", args...)
		cmd.WaitDelay = 5 * time.Second
		return cmd
	})
	if err != nil {
		return nil, err
	}
	if use != nil && cmd != nil && cmd.ProcessState != nil {
		use.cpu += cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
		use.wall += time.Since(start)
	}
	for _, line := range outputLines(out) {
		if strings.Contains(line, "ERR") || strings.Contains(strings.ToLower(line), "error") {
			return nil, fmt.Errorf("%s: error in output: %s\n%s\n%s", what, line, tail(out), t.svc.LogTail())
		}
	}
	return out, nil
}

// outputLines splits redis-benchmark's output into lines, also at the
// carriage returns of its progress display, dropping the progress lines.
func outputLines(out []byte) []string {
	var lines []string
	for _, l := range strings.FieldsFunc(string(out), func(r rune) bool { return r == '\n' || r == '\r' }) {
		if l = strings.TrimSpace(l); l != "" && !strings.Contains(l, "rps=") {
			lines = append(lines, l)
		}
	}
	return lines
}

// csvRPS returns the rps column of test's row in redis-benchmark --csv
// output.
func csvRPS(out []byte, test string) (float64, error) {
	for _, line := range outputLines(out) {
		if !strings.HasPrefix(line, `"`) {
			continue
		}
		rec, err := csv.NewReader(strings.NewReader(line)).Read()
		if err != nil || len(rec) < 2 || rec[0] != test {
			continue
		}
		rps, err := strconv.ParseFloat(rec[1], 64)
		if err != nil || rps <= 0 {
			return 0, fmt.Errorf("bad rps %q for %s", rec[1], test)
		}
		return rps, nil
	}
	return 0, fmt.Errorf("no %q row in the CSV output", test)
}

// tail is the last lines of a tool's output, progress lines dropped.
func tail(out []byte) string {
	lines := outputLines(out)
	return strings.Join(lines[max(0, len(lines)-30):], "\n")
}
