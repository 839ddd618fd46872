package main

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

	"github.com/tenantguard/tenantguard/bench/internal/benchkit"
)

// Counting runs: after the timed runs, one more redis-benchmark run per
// proxy, test and pipeline depth, with `perf stat -e raw_syscalls:sys_enter
// -p PID` attached, counts the proxy's system calls per request, and for
// tenantguard go_memstats_mallocs_total from its /metrics before and after
// counts heap allocations per request. These depend much less than rps and
// CPU on how busy the machine is (only through how many commands share an
// upstream write). They are separate runs because counting
// a tracepoint costs time on every system call, which would slow the proxy
// that makes more of them.

// count is one proxy's figures for one test and pipeline depth.
type count struct {
	test     string
	pipeline int
	syscalls []float64 // per request, one per proxy; -1 = not counted
	allocs   []float64 // per request, one per proxy; -1 = not counted
}

// perfUsable reports whether perf can count system calls here, and why not.
func perfUsable() (bool, string) {
	out, err := exec.Command("perf", "stat", "-x,", "-e", "raw_syscalls:sys_enter", "--", "true").CombinedOutput()
	if err != nil {
		return false, fmt.Sprintf("perf stat -e raw_syscalls:sys_enter failed (%v: %s); install linux-perf and allow tracepoints (perf_event_paranoid, root)",
			err, strings.TrimSpace(string(out)))
	}
	return true, ""
}

// runCounts runs the counting runs against the proxies.
func runCounts(ctx context.Context, o options, proxies []*target) ([]count, string, error) {
	if o.counts == 0 {
		return nil, "", nil
	}
	usePerf, why := perfUsable()
	var out []count
	for _, p := range o.pipelines {
		for _, test := range tests {
			c := count{test: test, pipeline: p}
			for _, t := range proxies {
				sys, allocs, err := countOnce(ctx, o, t, test, p, usePerf)
				if err != nil {
					return nil, "", err
				}
				c.syscalls = append(c.syscalls, sys)
				c.allocs = append(c.allocs, allocs)
				benchkit.Logf("%-3s -P %-3d counted %-18s %s syscalls/req, %s allocs/req", test, p, t.name, orNA(sys, "%.2f"), orNA(allocs, "%.3f"))
			}
			out = append(out, c)
		}
	}
	return out, why, nil
}

// countOnce runs one counting run against t.
func countOnce(ctx context.Context, o options, t *target, test string, pipeline int, usePerf bool) (sysPerReq, allocsPerReq float64, err error) {
	sysPerReq, allocsPerReq = -1, -1
	url := metricsURL[t.svc]
	var m0 float64
	if url != "" {
		if m0, err = mallocs(ctx, url); err != nil {
			return 0, 0, err
		}
	}
	var perf *exec.Cmd
	perfOut := filepath.Join(t.svc.Dir, "perf-stat.csv")
	if usePerf {
		perf = exec.Command("perf", "stat", "-x,", "-e", "raw_syscalls:sys_enter", "-p", strconv.Itoa(t.svc.Pid()), "-o", perfOut)
		if err := perf.Start(); err != nil {
			return 0, 0, fmt.Errorf("start perf stat: %w", err)
		}
		time.Sleep(200 * time.Millisecond) // let perf attach before the run starts
	}
	args := []string{"-t", strings.ToLower(test), "-c", strconv.Itoa(clients), "-n", strconv.Itoa(o.counts),
		"-P", strconv.Itoa(pipeline), "-r", strconv.Itoa(keyspace), "--csv"}
	_, runErr := runBenchmark(ctx, fmt.Sprintf("counting run %s -P %d via %s", test, pipeline, t.name), t, o.timeout, args)
	if perf != nil {
		_ = perf.Process.Signal(syscall.SIGINT)
		_ = perf.Wait()
	}
	if runErr != nil {
		return 0, 0, runErr
	}
	if perf != nil {
		n, err := perfCount(perfOut)
		if err != nil {
			return 0, 0, err
		}
		sysPerReq = n / float64(o.counts)
	}
	if url != "" {
		m1, err := mallocs(ctx, url)
		if err != nil {
			return 0, 0, err
		}
		allocsPerReq = (m1 - m0) / float64(o.counts)
	}
	return sysPerReq, allocsPerReq, nil
}

// perfCount reads the event count from perf stat -x, output.
func perfCount(path string) (float64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ",")
		if len(fields) >= 3 && strings.Contains(fields[2], "raw_syscalls:sys_enter") {
			return strconv.ParseFloat(fields[0], 64)
		}
	}
	return 0, fmt.Errorf("no raw_syscalls:sys_enter count in %s", path)
}

// mallocs reads go_memstats_mallocs_total from a Prometheus endpoint.
func mallocs(ctx context.Context, url string) (float64, error) {
	return metricValue(ctx, url, "go_memstats_mallocs_total")
}

// metricValue reads one series (name with its labels, as exported) from a
// Prometheus endpoint.
func metricValue(ctx context.Context, url, series string) (float64, error) {
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

// addCounts adds the counting runs' table to the report.
func addCounts(rep *benchkit.Report, counted []count, proxies []*target, why string) {
	if len(counted) == 0 {
		return
	}
	tbl := benchkit.Table{Left: 2, Header: []string{"test", "pipeline"}}
	for _, t := range proxies {
		tbl.Header = append(tbl.Header, t.name+" syscalls/req")
	}
	for _, t := range proxies {
		if metricsURL[t.svc] != "" {
			tbl.Header = append(tbl.Header, t.name+" allocs/req")
		}
	}
	for _, c := range counted {
		cells := []string{c.test, "-P " + strconv.Itoa(c.pipeline)}
		for i := range proxies {
			cells = append(cells, orNA(c.syscalls[i], "%.2f"))
		}
		for i, t := range proxies {
			if metricsURL[t.svc] != "" {
				cells = append(cells, orNA(c.allocs[i], "%.3f"))
			}
		}
		tbl.Rows = append(tbl.Rows, cells)
	}
	rep.Tables = append(rep.Tables, tbl)
	note := "System calls and allocations per request come from separate, untimed runs (redis-benchmark -n of -counts each): perf stat -e raw_syscalls:sys_enter -p PID, and go_memstats_mallocs_total from tenantguard's /metrics before and after. They depend much less than rps and CPU on how busy the machine is (only through how many commands share an upstream write)."
	if why != "" {
		note += " System calls not counted: " + why + "."
	}
	rep.Notes = append(rep.Notes, note)
}

// orNA formats v, or n/a for a figure not counted (negative).
func orNA(v float64, format string) string {
	if v < 0 {
		return "n/a"
	}
	return fmt.Sprintf(format, v)
}
