package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"text/tabwriter"
)

// Target indexes in a row's results, as built in run.
const (
	iDirect = iota
	iTenantguard
	iIso
	iPgBouncer
)

// table is a header and rows of cells; the first left columns are labels
// (left-aligned in markdown), the rest numbers.
type table struct {
	left   int
	header []string
	rows   [][]string
}

// report is everything printed at the end.
type report struct {
	setup  string
	tables []table
	notes  []string
}

// newReport computes the medians, ratios and resource figures.
func newReport(o options, rows []row, tg, iso *service, pgb *pgbouncer) (*report, error) {
	rep := &report{
		setup: fmt.Sprintf("pgbench -c %d -j %d -T %d, scale %d, %d round(s) (median tps), pool size %d, %d CPUs; %s; PgBouncer %s",
			clients, jobs, int(o.duration.Seconds()), scale, o.rounds, poolSize, runtime.NumCPU(),
			pgbenchVersion(), pgb.version),
	}
	throughput := table{left: 2, header: []string{"workload", "mode", "direct tps", "tenantguard tps",
		"tenantguard+iso tps", "pgbouncer tps"}}
	ratios := table{left: 2, header: []string{"workload", "mode", "tenantguard÷direct", "pgbouncer÷direct",
		"tenantguard÷pgbouncer", "iso÷direct", "iso÷tenantguard", "iso÷pgbouncer"}}
	resources := table{left: 2, header: []string{"workload", "mode", "tenantguard CPU ms/1k tx",
		"tenantguard+iso CPU ms/1k tx", "pgbouncer CPU ms/1k tx", "tenantguard÷pgbouncer", "iso÷tenantguard"}}
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
		throughput.rows = append(throughput.rows, []string{r.workload, r.mode,
			num(tps[iDirect], "%.0f"), num(tps[iTenantguard], "%.0f"), num(tps[iIso], "%.0f"), num(tps[iPgBouncer], "%.0f")})
		ratios.rows = append(ratios.rows, []string{r.workload, r.mode,
			ratio(tps[iTenantguard], tps[iDirect]), ratio(tps[iPgBouncer], tps[iDirect]), ratio(tps[iTenantguard], tps[iPgBouncer]),
			ratio(tps[iIso], tps[iDirect]), ratio(tps[iIso], tps[iTenantguard]), ratio(tps[iIso], tps[iPgBouncer])})
		cpu := func(res *result) float64 { // ms of CPU per 1,000 transactions
			if res.skipped != "" || res.txns == 0 {
				return 0
			}
			return float64(res.cpuTicks) / hz * 1000 / float64(res.txns) * 1000
		}
		tgCPU, isoCPU, pgbCPU := cpu(r.results[iTenantguard]), cpu(r.results[iIso]), cpu(r.results[iPgBouncer])
		resources.rows = append(resources.rows, []string{r.workload, r.mode,
			num(tgCPU, "%.1f"), num(isoCPU, "%.1f"), num(pgbCPU, "%.1f"), ratio(tgCPU, pgbCPU), ratio(isoCPU, tgCPU)})
	}
	rep.tables = []table{throughput, ratios, resources}
	var rss []string
	for _, s := range []*service{tg, iso, pgb.service} {
		kib, err := s.rssKiB()
		if err != nil {
			return nil, err
		}
		rss = append(rss, fmt.Sprintf("%s %.1f MiB", s.name, float64(kib)/1024))
	}
	rep.notes = append(rep.notes, "RSS after the runs: "+strings.Join(rss, ", ")+".")
	return rep, nil
}

// pgbenchVersion is `pgbench --version`, trimmed.
func pgbenchVersion() string {
	out, _ := exec.Command("pgbench", "--version").Output()
	return strings.TrimSpace(string(out))
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

// write prints the report and, if path is set, also writes it as markdown.
func (rep *report) write(path string) error {
	fmt.Print(rep.text())
	if path == "" {
		return nil
	}
	if err := os.WriteFile(path, []byte(rep.markdown()), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	logf("wrote %s", path)
	return nil
}

// text renders the report as aligned plain text.
func (rep *report) text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n%s\n\n", rep.setup)
	for _, t := range rep.tables {
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
	fmt.Fprintf(&b, "%s\n\n", strings.ReplaceAll(rep.setup, "\n", "\n\n"))
	for _, t := range rep.tables {
		// Labels left-aligned, numbers right-aligned.
		fmt.Fprintf(&b, "| %s |\n|%s%s\n", strings.Join(t.header, " | "),
			strings.Repeat(" :--- |", t.left), strings.Repeat(" ---: |", len(t.header)-t.left))
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
