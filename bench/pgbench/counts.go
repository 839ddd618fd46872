package main

import (
	"context"
	"fmt"
	"strconv"

	"github.com/tenantguard/tenantguard/bench/internal/benchkit"
)

// Counting runs (-counts): after the timed runs, one more pgbench run per
// workload, mode and proxy with perf stat attached counts the proxy's
// system calls per transaction, and for tenantguard its heap allocations
// per transaction (go_memstats_mallocs_total before and after). These
// hardly depend on how busy the machine is, where tps and CPU time do.

// count is a row's counting runs: per target (same order as the row's
// results), system calls and allocations per transaction; -1 = not counted.
type count struct {
	syscalls, switches, allocs []float64
}

// runCounts runs the counting runs for every row.
func runCounts(ctx context.Context, o options, targets []*target, rows []row) ([]count, string, error) {
	if o.counts == 0 {
		return nil, "", nil
	}
	usePerf, why := benchkit.PerfUsable()
	w := map[string]workload{}
	for _, wl := range workloads {
		w[wl.name] = wl
	}
	out := make([]count, len(rows))
	for ri, r := range rows {
		c := count{syscalls: make([]float64, len(targets)), switches: make([]float64, len(targets)), allocs: make([]float64, len(targets))}
		for i, t := range targets {
			c.syscalls[i], c.switches[i], c.allocs[i] = -1, -1, -1
			if t.svc == nil || r.results[i].skipped != "" {
				continue
			}
			n, err := countOnce(ctx, o, t, w[r.workload], r.mode, usePerf)
			if err != nil {
				return nil, "", err
			}
			c.syscalls[i], c.switches[i], c.allocs[i] = n.Syscalls, n.Switches, n.Allocs
			benchkit.Logf("%-11s %-8s counted %-15s %s syscalls/tx, %s context switches/tx, %s allocs/tx", r.workload, r.mode, t.name,
				benchkit.OrNA(n.Syscalls, "%.2f"), benchkit.OrNA(n.Switches, "%.2f"), benchkit.OrNA(n.Allocs, "%.1f"))
		}
		out[ri] = c
	}
	return out, why, nil
}

// countOnce runs pgbench for o.counts against t, counting.
func countOnce(ctx context.Context, o options, t *target, w workload, mode string, usePerf bool) (benchkit.Counts, error) {
	url := ""
	if t.adminPort != 0 {
		url = fmt.Sprintf("http://127.0.0.1:%d/metrics", t.adminPort)
	}
	args := []string{"-n", "-c", strconv.Itoa(clients), "-j", strconv.Itoa(jobs),
		"-T", strconv.Itoa(int(o.counts.Seconds())), "-M", mode}
	args = append(args, w.args...)
	return benchkit.Count(ctx, t.svc, url, usePerf, func() (float64, error) {
		out, err := runPgbench(ctx, fmt.Sprintf("counting run pgbench %s -M %s via %s", w.name, mode, t.name), t, o.counts, args)
		return float64(out.txns), err
	})
}

// addCounts adds the counting runs' table to the report.
func addCounts(rep *benchkit.Report, o options, rows []row, names []string, counted []count, why string) {
	if len(counted) == 0 {
		return
	}
	tbl := benchkit.Table{Left: 2, Header: []string{"workload", "mode",
		"tenantguard syscalls/tx", "tenantguard+iso syscalls/tx", "pgbouncer syscalls/tx",
		"tenantguard allocs/tx", "tenantguard+iso allocs/tx"}}
	for _, n := range names[min(iLoop, len(names)):] {
		tbl.Header = append(tbl.Header, n+" syscalls/tx")
	}
	tbl.Header = append(tbl.Header, "tenantguard context switches/tx", "tenantguard+iso context switches/tx", "pgbouncer context switches/tx")
	for _, n := range names[min(iLoop, len(names)):] {
		tbl.Header = append(tbl.Header, n+" context switches/tx")
	}
	for ri, r := range rows {
		c := counted[ri]
		cells := []string{r.workload, r.mode,
			benchkit.OrNA(c.syscalls[iTenantguard], "%.2f"), benchkit.OrNA(c.syscalls[iIso], "%.2f"), benchkit.OrNA(c.syscalls[iPgBouncer], "%.2f"),
			benchkit.OrNA(c.allocs[iTenantguard], "%.1f"), benchkit.OrNA(c.allocs[iIso], "%.1f")}
		for i := iLoop; i < len(c.syscalls); i++ {
			cells = append(cells, benchkit.OrNA(c.syscalls[i], "%.2f"))
		}
		cells = append(cells, benchkit.OrNA(c.switches[iTenantguard], "%.2f"), benchkit.OrNA(c.switches[iIso], "%.2f"), benchkit.OrNA(c.switches[iPgBouncer], "%.2f"))
		for i := iLoop; i < len(c.switches); i++ {
			cells = append(cells, benchkit.OrNA(c.switches[i], "%.2f"))
		}
		tbl.Rows = append(tbl.Rows, cells)
	}
	rep.Tables = append(rep.Tables, tbl)
	note := fmt.Sprintf("System calls and allocations per transaction come from separate, untimed runs (pgbench -T %d each): perf stat -e raw_syscalls:sys_enter,context-switches -p PID on the proxy (a context switch is one of its threads leaving the CPU, waiting or preempted), and go_memstats_mallocs_total from tenantguard's /metrics before and after. Unlike tps and CPU time they hardly depend on how busy the machine is.", int(o.counts.Seconds()))
	if why != "" {
		note += " System calls not counted: " + why + "."
	}
	rep.Notes = append(rep.Notes, note)
}
