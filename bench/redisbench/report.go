package main

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
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

// newReport computes the medians, ratios and resource figures. targets are
// direct, then the tenantguards, then twemproxy, as built in run.
func newReport(o options, rows []row, targets []*target, checks []string, rbVersion, ncVersion string) (*report, error) {
	shared := make([]string, len(o.shared))
	for i, n := range o.shared {
		shared[i] = strconv.Itoa(n)
	}
	rep := &report{
		setup: fmt.Sprintf("redis-benchmark -c %d -n %d -r %d --csv, SET then GET (one run each), %d round(s) (median rps), %d CPUs; %s; %s (1 server connection); tenantguard redis.shared_connections %s",
			clients, o.requests, keyspace, o.rounds, runtime.NumCPU(), rbVersion, ncVersion, strings.Join(shared, ", ")),
	}
	direct, nc := 0, len(targets)-1
	tgs := make([]int, 0, len(targets)-2)
	for i := 1; i < nc; i++ {
		tgs = append(tgs, i)
	}
	proxies := append(slices.Clone(tgs), nc)
	short := func(i int) string { // "tg", "tg sc=4"
		return strings.Replace(targets[i].name, "tenantguard", "tg", 1)
	}

	throughput := table{left: 2, header: []string{"test", "pipeline", "direct rps"}}
	for _, i := range tgs {
		throughput.header = append(throughput.header, targets[i].name+" rps")
	}
	throughput.header = append(throughput.header, "twemproxy rps")
	for _, i := range tgs {
		throughput.header = append(throughput.header, short(i)+"÷direct")
	}
	throughput.header = append(throughput.header, "twemproxy÷direct")
	for _, i := range tgs {
		throughput.header = append(throughput.header, short(i)+"÷twemproxy")
	}

	resources := table{left: 2, header: []string{"test", "pipeline"}}
	for _, i := range proxies {
		resources.header = append(resources.header, targets[i].name+" CPU ms/1k req")
	}
	for _, i := range tgs {
		resources.header = append(resources.header, short(i)+"÷twemproxy")
	}

	hz := float64(clockTicks())
	for _, r := range rows {
		label := []string{r.test, "-P " + strconv.Itoa(r.pipeline)}
		rps := make([]float64, len(r.results))
		cpu := make([]float64, len(r.results)) // ms of CPU per 1,000 requests
		for i, res := range r.results {
			rps[i] = median(res.rps)
			if res.requests > 0 {
				cpu[i] = float64(res.cpuTicks) / hz * 1000 / float64(res.requests) * 1000
			}
		}
		cells := append([]string{}, label...)
		cells = append(cells, num(rps[direct], "%.0f"))
		for _, i := range proxies {
			cells = append(cells, num(rps[i], "%.0f"))
		}
		for _, i := range proxies {
			cells = append(cells, ratio(rps[i], rps[direct]))
		}
		for _, i := range tgs {
			cells = append(cells, ratio(rps[i], rps[nc]))
		}
		throughput.rows = append(throughput.rows, cells)

		cells = append([]string{}, label...)
		for _, i := range proxies {
			cells = append(cells, cpuCell(cpu[i], r.results[i].cpuTicks))
		}
		for _, i := range tgs {
			cells = append(cells, ratio(cpu[i], cpu[nc]))
		}
		resources.rows = append(resources.rows, cells)
	}
	rep.tables = []table{throughput, resources}

	var rss []string
	for _, i := range proxies {
		kib, err := targets[i].svc.rssKiB()
		if err != nil {
			return nil, err
		}
		rss = append(rss, fmt.Sprintf("%s %.1f MiB", targets[i].name, float64(kib)/1024))
	}
	rep.notes = append(rep.notes,
		"RSS after the runs: "+strings.Join(rss, ", ")+".",
		fmt.Sprintf("CPU is user+system time from /proc/PID/stat (%.0f ticks/s) around each run; 0 ticks shows as n/a, so use a larger -n for small figures.", hz))
	rep.notes = append(rep.notes, checks...)
	return rep, nil
}

// cpuCell formats a CPU figure, or "n/a" if the run used less than one
// clock tick in all.
func cpuCell(v float64, ticks int64) string {
	if ticks == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", v)
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
	fmt.Fprintf(&b, "%s\n\n", rep.setup)
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
