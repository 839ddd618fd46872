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
func newReport(o options, rows []row, tg, iso *service, pgb *pgbouncer) (*benchkit.Report, error) {
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
		rep.Tables = append(rep.Tables, loopTable(rows, hz))
		rep.Notes = append(rep.Notes, "go-loop is bench/pgloop, an experiment and not the product: a transaction-pooling forwarder on one epoll loop that inspects nothing but message boundaries and ReadyForQuery (no firewall, binding, limits or metrics), to show what an event loop costs in Go.")
	}
	rss, err := benchkit.RSSNote(tg.Service, iso.Service, pgb.Service)
	if err != nil {
		return nil, err
	}
	rep.Notes = append(rep.Notes, rss)
	return rep, nil
}

// loopTable compares the pgloop experiment with tenantguard and PgBouncer.
func loopTable(rows []row, hz float64) benchkit.Table {
	t := benchkit.Table{Left: 2, Header: []string{"workload", "mode", "go-loop tps", "go-loop÷pgbouncer", "go-loop÷tenantguard",
		"go-loop CPU ms/1k tx", "go-loop÷pgbouncer CPU"}}
	for _, r := range rows {
		res := r.results[iLoop]
		if res.skipped != "" {
			continue
		}
		tps := benchkit.Median(res.tps)
		med := func(i int) float64 {
			if r.results[i].skipped != "" {
				return 0
			}
			return benchkit.Median(r.results[i].tps)
		}
		cpu := benchkit.MsPer1k(res.cpuTicks, res.txns, hz)
		pgb := r.results[iPgBouncer]
		pgbCPU := 0.0
		if pgb.skipped == "" {
			pgbCPU = benchkit.MsPer1k(pgb.cpuTicks, pgb.txns, hz)
		}
		t.Rows = append(t.Rows, []string{r.workload, r.mode, benchkit.Num(tps, "%.0f"), benchkit.Ratio(tps, med(iPgBouncer)),
			benchkit.Ratio(tps, med(iTenantguard)), benchkit.Num(cpu, "%.1f"), benchkit.Ratio(cpu, pgbCPU)})
	}
	return t
}

// pgbenchVersion is `pgbench --version`, trimmed.
func pgbenchVersion() string {
	out, _ := exec.Command("pgbench", "--version").Output()
	return strings.TrimSpace(string(out))
}
