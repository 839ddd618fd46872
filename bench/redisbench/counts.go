package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"

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
	switches []float64 // context switches, likewise
	allocs   []float64 // per request, one per proxy; -1 = not counted
}

// runCounts runs the counting runs against the proxies.
func runCounts(ctx context.Context, o options, proxies []*target) ([]count, string, error) {
	if o.counts == 0 {
		return nil, "", nil
	}
	usePerf, why := benchkit.PerfUsable()
	var out []count
	for _, p := range o.pipelines {
		for _, test := range tests {
			c := count{test: test, pipeline: p}
			for _, t := range proxies {
				n, err := countOnce(ctx, o, t, test, p, usePerf)
				if err != nil {
					return nil, "", err
				}
				c.syscalls = append(c.syscalls, n.Syscalls)
				c.switches = append(c.switches, n.Switches)
				c.allocs = append(c.allocs, n.Allocs)
				benchkit.Logf("%-3s -P %-3d counted %-18s %s syscalls/req, %s context switches/req, %s allocs/req", test, p, t.name,
					benchkit.OrNA(n.Syscalls, "%.2f"), benchkit.OrNA(n.Switches, "%.3f"), benchkit.OrNA(n.Allocs, "%.3f"))
			}
			out = append(out, c)
		}
	}
	return out, why, nil
}

// countOnce runs one counting run against t.
func countOnce(ctx context.Context, o options, t *target, test string, pipeline int, usePerf bool) (benchkit.Counts, error) {
	args := []string{"-t", strings.ToLower(test), "-c", strconv.Itoa(clients), "-n", strconv.Itoa(o.counts),
		"-P", strconv.Itoa(pipeline), "-r", strconv.Itoa(keyspace), "--csv"}
	return benchkit.Count(ctx, t.svc, metricsURL[t.svc], usePerf, func() (float64, error) {
		_, err := runBenchmark(ctx, fmt.Sprintf("counting run %s -P %d via %s", test, pipeline, t.name), t, o.timeout, args, nil)
		return float64(o.counts), err
	})
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
		tbl.Header = append(tbl.Header, t.name+" context switches/req")
	}
	for _, t := range proxies {
		if metricsURL[t.svc] != "" {
			tbl.Header = append(tbl.Header, t.name+" allocs/req")
		}
	}
	for _, c := range counted {
		cells := []string{c.test, "-P " + strconv.Itoa(c.pipeline)}
		for i := range proxies {
			cells = append(cells, benchkit.OrNA(c.syscalls[i], "%.2f"))
		}
		for i := range proxies {
			cells = append(cells, benchkit.OrNA(c.switches[i], "%.3f"))
		}
		for i, t := range proxies {
			if metricsURL[t.svc] != "" {
				cells = append(cells, benchkit.OrNA(c.allocs[i], "%.3f"))
			}
		}
		tbl.Rows = append(tbl.Rows, cells)
	}
	rep.Tables = append(rep.Tables, tbl)
	note := "System calls and allocations per request come from separate, untimed runs (redis-benchmark -n of -counts each): perf stat -e raw_syscalls:sys_enter,context-switches -p PID (a context switch is one of the process's threads leaving the CPU, waiting or preempted), and go_memstats_mallocs_total from tenantguard's /metrics before and after. They depend much less than rps and CPU on how busy the machine is (only through how many commands share an upstream write)."
	if why != "" {
		note += " System calls not counted: " + why + "."
	}
	rep.Notes = append(rep.Notes, note)
}
