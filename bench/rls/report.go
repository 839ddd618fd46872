package main

import (
	"fmt"
	"os/exec"
	"runtime"
	"strings"

	"github.com/tenantguard/tenantguard/bench/internal/benchkit"
)

// newReport computes the medians and ratios. Within one mode every ratio is
// against the no-RLS (none) and plain-variable (guc) variants of the same
// run.
func newReport(o options, vs []variant, results map[string][]*result, loops map[string][]*loopResult, sw []switchResult, loadBefore, loadAfter string) *benchkit.Report {
	rep := &benchkit.Report{
		Setup: fmt.Sprintf("point select by primary key on a %d-row table (%d more rows of another tenant), pgbench -c %d -j 2 -T %d, %d round(s) (median tps), %d CPUs; %s; load average before %s, after %s",
			o.rows, otherRows, o.clients, int(o.duration.Seconds()), o.Rounds, runtime.NumCPU(), pgbenchVersion(), loadBefore, loadAfter),
	}
	tps := benchkit.Table{Left: 3, Header: []string{"variant", "forgeable", "mode", "tps", "÷none", "÷guc",
		"server CPU µs/tx", "CPU ÷none", "CPU ÷guc"}}
	hz := float64(benchkit.ClockTicks())
	for _, mode := range o.modes {
		res := results[mode]
		med := make([]float64, len(vs))
		cpu := make([]float64, len(vs))
		for i, r := range res {
			med[i] = benchkit.Median(r.tps)
			cpu[i] = benchkit.MsPer1k(r.cpuTicks, r.txns, hz) // ms per 1k tx = µs per tx
		}
		none, guc := indexOf(vs, "none"), indexOf(vs, "guc")
		for i, v := range vs {
			forge := "no"
			if v.forgeable {
				forge = "yes"
			}
			if !v.rls {
				forge = "—"
			}
			tps.Rows = append(tps.Rows, []string{v.name, forge, mode,
				benchkit.Num(med[i], "%.0f"), benchkit.Ratio(med[i], med[none]), benchkit.Ratio(med[i], med[guc]),
				benchkit.Num(cpu[i], "%.1f"), benchkit.Ratio(cpu[i], cpu[none]), benchkit.Ratio(cpu[i], cpu[guc])})
		}
	}
	rep.Tables = append(rep.Tables, tps)
	if loops != nil {
		rep.Tables = append(rep.Tables, loopTable(vs, loops))
	}
	if len(sw) > 0 {
		rep.Tables = append(rep.Tables, switchTable(sw, hz))
	}
	for _, v := range vs {
		rep.Notes = append(rep.Notes, fmt.Sprintf("%s: %s.", v.name, v.what))
	}
	rep.Notes = append(rep.Notes,
		"First table: pgbench, bound once per connection. tps depends on everything else the machine runs; server CPU µs/tx (all of PostgreSQL's user+system time over the run, from /proc, divided by transactions) much less.",
		fmt.Sprintf("In-server loop: %d point selects in one DO block per repetition (%d repetitions, the least disturbed reported), CPU time of that one backend from /proc/PID/schedstat; planned = EXECUTE (parsed and planned each time, as the simple protocol), cached = static PL/pgSQL SQL (a cached plan, as prepared statements). The column −none is what the binding adds to a statement. The most repeatable figure here.", o.loop, o.loopReps),
		"Switch table: Go clients (-clients) send what the sidecar sends, one round trip per transaction: [bind, Sync] then [the prepared select, Sync]; \"bound once\" binds acme at the first transaction, \"switch every tx\" alternates acme and globex, the worst case of a pool shared by many tenants.",
		"Compare ratios within one run; this machine may be shared (load averages above).")
	return rep
}

func indexOf(vs []variant, name string) int {
	for i, v := range vs {
		if v.name == name {
			return i
		}
	}
	return -1
}

// pgbenchVersion is `pgbench --version`, trimmed.
func pgbenchVersion() string {
	out, _ := exec.Command("pgbench", "--version").Output()
	return strings.TrimSpace(string(out))
}
