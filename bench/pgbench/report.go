package main

import (
	"fmt"
	"os/exec"
	"runtime"
	"strings"
	"text/tabwriter"
)

// Target indexes in a row's results, as built in run.
const (
	iDirect = iota
	iTenantguard
	iPgBouncer
)

// table is a header and rows of cells.
type table struct {
	header []string
	rows   [][]string
}

// report is everything printed at the end.
type report struct {
	setup      string
	throughput table
	resources  table
	notes      []string
}

// newReport computes the medians, ratios and resource figures.
func newReport(o options, rows []row, tg *service, pgb *pgbouncer) (*report, error) {
	pgbenchVersion, _ := exec.Command("pgbench", "--version").Output()
	rep := &report{
		setup: fmt.Sprintf("pgbench -c %d -j %d -T %d, scale %d, %d round(s) (median tps), pool size %d, %d CPUs; %s; PgBouncer %s",
			clients, jobs, int(o.duration.Seconds()), scale, o.rounds, poolSize, runtime.NumCPU(),
			strings.TrimSpace(string(pgbenchVersion)), pgb.version),
		throughput: table{header: []string{"workload", "mode", "direct tps", "tenantguard tps", "pgbouncer tps",
			"tenantguard÷direct", "pgbouncer÷direct", "tenantguard÷pgbouncer"}},
		resources: table{header: []string{"workload", "mode", "tenantguard CPU ms/1k tx",
			"pgbouncer CPU ms/1k tx", "tenantguard÷pgbouncer"}},
	}
	hz := float64(clockTicks())
	notes := map[string]bool{}
	for _, r := range rows {
		tps := make([]float64, len(r.results))
		for i, res := range r.results {
			if res.skipped == "" {
				tps[i] = median(res.tps)
			} else if !notes[res.skipped] {
				notes[res.skipped] = true
				rep.notes = append(rep.notes, "n/a: "+res.skipped+".")
			}
		}
		rep.throughput.rows = append(rep.throughput.rows, []string{r.workload, r.mode,
			num(tps[iDirect], "%.0f"), num(tps[iTenantguard], "%.0f"), num(tps[iPgBouncer], "%.0f"),
			ratio(tps[iTenantguard], tps[iDirect]), ratio(tps[iPgBouncer], tps[iDirect]),
			ratio(tps[iTenantguard], tps[iPgBouncer])})
		cpu := func(res *result) float64 { // ms of CPU per 1,000 transactions
			if res.skipped != "" || res.txns == 0 {
				return 0
			}
			return float64(res.cpuTicks) / hz * 1000 / float64(res.txns) * 1000
		}
		tgCPU, pgbCPU := cpu(r.results[iTenantguard]), cpu(r.results[iPgBouncer])
		rep.resources.rows = append(rep.resources.rows, []string{r.workload, r.mode,
			num(tgCPU, "%.1f"), num(pgbCPU, "%.1f"), ratio(tgCPU, pgbCPU)})
	}
	tgRSS, err := tg.rssKiB()
	if err != nil {
		return nil, err
	}
	pgbRSS, err := pgb.rssKiB()
	if err != nil {
		return nil, err
	}
	rep.notes = append(rep.notes, fmt.Sprintf("RSS after the runs: tenantguard %.1f MiB, pgbouncer %.1f MiB.",
		float64(tgRSS)/1024, float64(pgbRSS)/1024))
	return rep, nil
}

// num formats v, or "n/a" for zero (not measured).
func num(v float64, format string) string {
	if v == 0 {
		return "n/a"
	}
	return fmt.Sprintf(format, v)
}

// ratio formats a/b, or "n/a" if either is missing.
func ratio(a, b float64) string {
	if a == 0 || b == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", a/b)
}

// text renders the report as aligned plain text.
func (rep *report) text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n%s\n\n", rep.setup)
	for _, t := range []table{rep.throughput, rep.resources} {
		w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
		for _, cells := range append([][]string{t.header}, t.rows...) {
			fmt.Fprintln(w, strings.Join(cells, "\t")+"\t")
		}
		w.Flush()
		b.WriteString("\n")
	}
	for _, n := range rep.notes {
		fmt.Fprintln(&b, n)
	}
	return b.String()
}

// markdown renders the report as GitHub-flavoured markdown.
func (rep *report) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n\n", rep.setup)
	for _, t := range []table{rep.throughput, rep.resources} {
		// Workload and mode left-aligned, numbers right-aligned.
		fmt.Fprintf(&b, "| %s |\n| :--- | :--- |%s\n", strings.Join(t.header, " | "), strings.Repeat(" ---: |", len(t.header)-2))
		for _, cells := range t.rows {
			fmt.Fprintf(&b, "| %s |\n", strings.Join(cells, " | "))
		}
		b.WriteString("\n")
	}
	for _, n := range rep.notes {
		fmt.Fprintf(&b, "%s\n\n", n)
	}
	return b.String()
}
