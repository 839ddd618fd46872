package main

import (
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"github.com/tenantguard/tenantguard/bench/internal/benchkit"
)

// newReport computes the medians, ratios and resource figures. targets are
// direct, then the tenantguards, then twemproxy, as built in run.
func newReport(o options, rows []row, targets []*target, checks []string, rbVersion, ncVersion string) (*benchkit.Report, error) {
	shared := make([]string, len(o.shared))
	for i, n := range o.shared {
		shared[i] = strconv.Itoa(n)
	}
	rep := &benchkit.Report{
		Setup: fmt.Sprintf("redis-benchmark -c %d -n %d -r %d --csv, SET then GET (one run each), %d round(s) (median rps), %d CPUs; %s; %s (1 server connection); tenantguard redis.shared_connections %s (one tenant, so all of its clients on the first, its light lane: README, \"Which shared connection\")",
			clients, o.requests, keyspace, o.Rounds, runtime.NumCPU(), rbVersion, ncVersion, strings.Join(shared, ", ")),
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

	throughput := benchkit.Table{Left: 2, Header: []string{"test", "pipeline", "direct rps"}}
	for _, i := range tgs {
		throughput.Header = append(throughput.Header, targets[i].name+" rps")
	}
	throughput.Header = append(throughput.Header, "twemproxy rps")
	for _, i := range tgs {
		throughput.Header = append(throughput.Header, short(i)+"÷direct")
	}
	throughput.Header = append(throughput.Header, "twemproxy÷direct")
	for _, i := range tgs {
		throughput.Header = append(throughput.Header, short(i)+"÷twemproxy")
	}

	resources := benchkit.Table{Left: 2, Header: []string{"test", "pipeline"}}
	for _, i := range proxies {
		resources.Header = append(resources.Header, targets[i].name+" CPU ms/1k req")
	}
	for _, i := range tgs {
		resources.Header = append(resources.Header, short(i)+"÷twemproxy")
	}
	for i := range targets {
		resources.Header = append(resources.Header, "redis-server CPU ms/1k req via "+short(i))
	}

	hz := float64(benchkit.ClockTicks())
	for _, r := range rows {
		label := []string{r.test, "-P " + strconv.Itoa(r.pipeline)}
		rps := make([]float64, len(r.results))
		cpu := make([]float64, len(r.results)) // ms of CPU per 1,000 requests
		for i, res := range r.results {
			rps[i] = benchkit.Median(res.rps)
			cpu[i] = benchkit.MsPer1k(res.cpuTicks, res.requests, hz)
		}
		cells := append([]string{}, label...)
		cells = append(cells, benchkit.Num(rps[direct], "%.0f"))
		for _, i := range proxies {
			cells = append(cells, benchkit.Num(rps[i], "%.0f"))
		}
		for _, i := range proxies {
			cells = append(cells, benchkit.Ratio(rps[i], rps[direct]))
		}
		for _, i := range tgs {
			cells = append(cells, benchkit.Ratio(rps[i], rps[nc]))
		}
		throughput.Rows = append(throughput.Rows, cells)

		cells = append([]string{}, label...)
		for _, i := range proxies {
			cells = append(cells, cpuCell(cpu[i], r.results[i].cpuTicks))
		}
		for _, i := range tgs {
			cells = append(cells, benchkit.Ratio(cpu[i], cpu[nc]))
		}
		for _, res := range r.results {
			cells = append(cells, cpuCell(benchkit.MsPer1k(res.srvTicks, res.requests, hz), res.srvTicks))
		}
		resources.Rows = append(resources.Rows, cells)
	}
	client := benchkit.Table{Left: 2, Header: []string{"test", "pipeline"}}
	for i := range targets {
		client.Header = append(client.Header, "redis-benchmark CPU÷wall via "+short(i))
	}
	for _, r := range rows {
		cells := []string{r.test, "-P " + strconv.Itoa(r.pipeline)}
		for _, res := range r.results {
			cells = append(cells, benchkit.Num(res.client.share(), "%.2f"))
		}
		client.Rows = append(client.Rows, cells)
	}
	rep.Tables = []benchkit.Table{throughput, resources, client}

	var svcs []*benchkit.Service
	for _, i := range proxies {
		svcs = append(svcs, targets[i].svc)
	}
	rss, err := benchkit.RSSNote(svcs...)
	if err != nil {
		return nil, err
	}
	rep.Notes = append(rep.Notes, rss,
		fmt.Sprintf("CPU is user+system time from /proc/PID/stat (%.0f ticks/s) around each run; 0 ticks shows as n/a, so use a larger -n for small figures.", hz))
	rep.Notes = append(rep.Notes, clientNote)
	rep.Notes = append(rep.Notes, checks...)
	return rep, nil
}

// clientNote explains the redis-benchmark CPU table.
const clientNote = "redis-benchmark CPU÷wall is the client's own user+system time (wait4) per second of its runs' wall time. " +
	"redis-benchmark is one thread: at 1.00 it is what limits the rate, so no server or proxy behind it can show more requests per second than that run did."

// cpuCell formats a CPU figure, or "n/a" if the run used less than one
// clock tick in all.
func cpuCell(v float64, ticks int64) string {
	if ticks == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", v)
}
