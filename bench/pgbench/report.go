package main

import (
	"fmt"
	"os/exec"
	"runtime"
	"strings"

	"github.com/tenantguard/tenantguard/bench/internal/benchkit"
)

// Target indexes in a row's results, as built in run.
const (
	iDirect = iota
	iTenantguard
	iIso
	iPgBouncer
	iLoop // bench/pgloop, with -loop only
)

// newReport computes the medians, ratios and resource figures.
func newReport(o options, rows []row, names []string, tg, iso *service, pgb *pgbouncer) (*benchkit.Report, error) {
	rep := &benchkit.Report{
		Setup: fmt.Sprintf("pgbench -c %d -j %d -T %d, scale %d, %d round(s) (median tps), pool size %d, %d CPUs; %s; PgBouncer %s",
			clients, jobs, int(o.duration.Seconds()), scale, o.Rounds, poolSize, runtime.NumCPU(),
			pgbenchVersion(), pgb.version),
	}
	throughput := benchkit.Table{Left: 2, Header: []string{"workload", "mode", "direct tps", "tenantguard tps",
		"tenantguard+iso tps", "pgbouncer tps"}}
	ratios := benchkit.Table{Left: 2, Header: []string{"workload", "mode", "tenantguard÷direct", "pgbouncer÷direct",
		"tenantguard÷pgbouncer", "iso÷direct", "iso÷tenantguard", "iso÷pgbouncer"}}
	resources := benchkit.Table{Left: 2, Header: []string{"workload", "mode", "tenantguard CPU ms/1k tx",
		"tenantguard+iso CPU ms/1k tx", "pgbouncer CPU ms/1k tx", "tenantguard÷pgbouncer", "iso÷tenantguard"}}
	hz := float64(benchkit.ClockTicks())
	notes := map[string]bool{}
	for _, r := range rows {
		tps := make([]float64, len(r.results))
		for i, res := range r.results {
			if res.skipped == "" {
				tps[i] = benchkit.Median(res.tps)
			} else if !notes[res.skipped] {
				notes[res.skipped] = true
				rep.Notes = append(rep.Notes, "n/a: "+res.skipped+".")
			}
		}
		throughput.Rows = append(throughput.Rows, []string{r.workload, r.mode,
			benchkit.Num(tps[iDirect], "%.0f"), benchkit.Num(tps[iTenantguard], "%.0f"), benchkit.Num(tps[iIso], "%.0f"), benchkit.Num(tps[iPgBouncer], "%.0f")})
		ratios.Rows = append(ratios.Rows, []string{r.workload, r.mode,
			benchkit.Ratio(tps[iTenantguard], tps[iDirect]), benchkit.Ratio(tps[iPgBouncer], tps[iDirect]), benchkit.Ratio(tps[iTenantguard], tps[iPgBouncer]),
			benchkit.Ratio(tps[iIso], tps[iDirect]), benchkit.Ratio(tps[iIso], tps[iTenantguard]), benchkit.Ratio(tps[iIso], tps[iPgBouncer])})
		cpu := func(res *result) float64 { // ms of CPU per 1,000 transactions
			if res.skipped != "" {
				return 0
			}
			return benchkit.MsPer1k(res.cpuTicks, res.txns, hz)
		}
		tgCPU, isoCPU, pgbCPU := cpu(r.results[iTenantguard]), cpu(r.results[iIso]), cpu(r.results[iPgBouncer])
		resources.Rows = append(resources.Rows, []string{r.workload, r.mode,
			benchkit.Num(tgCPU, "%.1f"), benchkit.Num(isoCPU, "%.1f"), benchkit.Num(pgbCPU, "%.1f"), benchkit.Ratio(tgCPU, pgbCPU), benchkit.Ratio(isoCPU, tgCPU)})
	}
	rep.Tables = []benchkit.Table{throughput, ratios, resources}
	if o.loop {
		rep.Tables = append(rep.Tables, loopTable(rows, names, hz))
		rep.Notes = append(rep.Notes, "go-loop and go-goroutines are bench/pgloop, an experiment and not the product: a transaction-pooling forwarder that inspects nothing but message boundaries and ReadyForQuery (no firewall, binding, limits or metrics). go-loop serves every socket from one goroutine on an epoll set of its own; go-goroutines has the data plane's design, a goroutine per client and per server connection on Go's netpoller. Between them is what the design costs, between go-goroutines and tenantguard what its features cost.")
	}
	rss, err := benchkit.RSSNote(tg.Service, iso.Service, pgb.Service)
	if err != nil {
		return nil, err
	}
	rep.Notes = append(rep.Notes, rss)
	return rep, nil
}

// loopTable compares the pgloop experiments (targets from iLoop on) with
// tenantguard and PgBouncer.
func loopTable(rows []row, targets []string, hz float64) benchkit.Table {
	t := benchkit.Table{Left: 3, Header: []string{"workload", "mode", "forwarder", "tps", "÷pgbouncer", "÷tenantguard",
		"CPU ms/1k tx", "CPU ÷pgbouncer", "CPU ÷tenantguard"}}
	for _, r := range rows {
		med := func(i int) float64 {
			if r.results[i].skipped != "" {
				return 0
			}
			return benchkit.Median(r.results[i].tps)
		}
		cpu := func(i int) float64 {
			if r.results[i].skipped != "" {
				return 0
			}
			return benchkit.MsPer1k(r.results[i].cpuTicks, r.results[i].txns, hz)
		}
		for i := iLoop; i < len(r.results); i++ {
			if r.results[i].skipped != "" {
				continue
			}
			t.Rows = append(t.Rows, []string{r.workload, r.mode, targets[i], benchkit.Num(med(i), "%.0f"),
				benchkit.Ratio(med(i), med(iPgBouncer)), benchkit.Ratio(med(i), med(iTenantguard)),
				benchkit.Num(cpu(i), "%.1f"), benchkit.Ratio(cpu(i), cpu(iPgBouncer)), benchkit.Ratio(cpu(i), cpu(iTenantguard))})
		}
	}
	return t
}

// pgbenchVersion is `pgbench --version`, trimmed.
func pgbenchVersion() string {
	out, _ := exec.Command("pgbench", "--version").Output()
	return strings.TrimSpace(string(out))
}
