package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/tenantguard/tenantguard/bench/internal/benchkit"
)

// The result cache benchmark (-cache): point selects on pgbench_accounts,
// direct and through tenantguard with row isolation, with the PostgreSQL
// result cache off and on (a rule opting pgbench_accounts in).
//
//   - hot: every client reads accounts 1..cacheHotRows, a set that fits the
//     tenant's budget: after the first reads nearly every select is a hit;
//   - miss: reads spread over all scale×100,000 accounts, so nearly every
//     select misses, is sent upstream and its result stored (evicting
//     others once the tenant's budget is full): the cache's cost when it
//     does not help.

// cacheHotRows is the hot workload's set of accounts.
const cacheHotRows = 1000

// cacheTTL is the rule's TTL (the bound on staleness; there are no writes).
const cacheTTL = 60 * time.Second

// cacheSection opts pgbench_accounts into the result cache.
var cacheSection = fmt.Sprintf("pg_cache:\n  rules:\n    - tables: [public.pgbench_accounts]\n      ttl: %s\n", cacheTTL)

// cacheScripts are the workloads' pgbench scripts.
var cacheScripts = []struct{ name, script string }{
	{"hot", fmt.Sprintf("\\set aid random(1, %d)\nSELECT abalance FROM pgbench_accounts WHERE aid = :aid;\n", cacheHotRows)},
	{"miss", fmt.Sprintf("\\set aid random(1, %d)\nSELECT abalance FROM pgbench_accounts WHERE aid = :aid;\n", scale*100000)},
}

// Targets of the cache benchmark, in a row's results.
const (
	cDirect = iota
	cOff
	cOn
)

// runCache runs the cache benchmark and reports it.
func runCache(ctx context.Context, o options) (err error) {
	if err := benchkit.EnsureBinary(ctx, o.Tenantguard); err != nil {
		return err
	}
	benchkit.Logf("starting PostgreSQL and loading pgbench tables (scale %d)", scale)
	pg, err := startPostgres(ctx, tenantID)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, pg.Close()) }()
	dir, err := os.MkdirTemp("", "bench-cache-")
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, os.RemoveAll(dir)) }()
	var wls []workload
	for _, s := range cacheScripts {
		path := filepath.Join(dir, s.name+".sql")
		if err := os.WriteFile(path, []byte(s.script), 0o644); err != nil {
			return err
		}
		wls = append(wls, workload{name: s.name, args: []string{"-f", path}})
	}
	acme := tgTenant{id: tenantID, password: tenantPass}
	// The cache-off sidecar first: its pg bootstrap (no cache rules) drops
	// the invalidation triggers, the cache-on one's installs them.
	off, err := startTenantguard(ctx, o.Tenantguard, pg, tgOptions{
		name: "tenantguard+iso", user: isoUser, password: isoPass, poolSize: poolSize, isolation: true,
		tenants: []tgTenant{acme, {id: otherID, password: otherPass}}, pprof: o.profile != "",
	})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, off.Stop()) }()
	on, err := startTenantguard(ctx, o.Tenantguard, pg, tgOptions{
		name: "tenantguard+iso+cache", user: isoUser, password: isoPass, poolSize: poolSize, isolation: true,
		tenants: []tgTenant{acme, {id: otherID, password: otherPass}}, pprof: o.profile != "", pgCache: cacheSection,
	})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, on.Stop()) }()
	for _, tg := range []*service{off, on} {
		if err := checkIsolation(ctx, pg, tg, tenantID, tenantPass, otherID, otherPass); err != nil {
			return err
		}
	}
	targets := []*target{
		cDirect: {name: "direct", port: pg.Port(), user: dbUser, password: dbPassword},
		cOff:    {name: "tenantguard+iso", port: off.port, user: tenantID, password: tenantPass, svc: off.Service, adminPort: off.adminPort},
		cOn:     {name: "tenantguard+iso+cache", port: on.port, user: tenantID, password: tenantPass, svc: on.Service, adminPort: on.adminPort},
	}
	var rows []cacheRow
	for _, w := range wls {
		for _, mode := range o.modes {
			r := cacheRow{row: row{workload: w.name, mode: mode}}
			for range targets {
				r.results = append(r.results, &result{})
			}
			for round := range o.Rounds {
				for i := range targets {
					k := (i + round) % len(targets)
					before, err := cacheCounts(ctx, targets[k])
					if err != nil {
						return err
					}
					if err := runOnce(ctx, o, targets[k], w, mode, r.results[k]); err != nil {
						return err
					}
					after, err := cacheCounts(ctx, targets[k])
					if err != nil {
						return err
					}
					r.hits += after.Hits - before.Hits
					r.misses += after.Misses - before.Misses
					benchkit.Logf("%-5s %-8s round %d/%d %-22s %10.0f tps", w.name, mode, round+1, o.Rounds, targets[k].name, r.results[k].tps[len(r.results[k].tps)-1])
				}
			}
			rows = append(rows, r)
		}
	}
	rep, err := newCacheReport(o, rows, off, on)
	if err != nil {
		return err
	}
	return rep.Write(o.Out)
}

// cacheRow is a row with the cache-on target's hits and misses.
type cacheRow struct {
	row
	hits, misses uint64
}

// cacheTotals are a sidecar's result cache counts.
type cacheTotals struct{ Hits, Misses uint64 }

// cacheCounts sums the cache counts of a tenantguard target from its admin
// listener's /cache/pg; zero for others.
func cacheCounts(ctx context.Context, t *target) (cacheTotals, error) {
	var tot cacheTotals
	if t.adminPort == 0 {
		return tot, nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/cache/pg", t.adminPort), nil)
	if err != nil {
		return tot, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return tot, fmt.Errorf("%s: /cache/pg: %w", t.name, err)
	}
	defer resp.Body.Close()
	var stats []struct {
		Hits   uint64 `json:"hits"`
		Misses uint64 `json:"misses"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&stats); err != nil {
		return tot, fmt.Errorf("%s: /cache/pg: %w", t.name, err)
	}
	for _, s := range stats {
		tot.Hits += s.Hits
		tot.Misses += s.Misses
	}
	return tot, nil
}

// newCacheReport computes the medians, ratios, hit rates and CPU.
func newCacheReport(o options, rows []cacheRow, off, on *service) (*benchkit.Report, error) {
	rep := &benchkit.Report{
		Setup: fmt.Sprintf("pgbench -c %d -j %d -T %d, scale %d, %d round(s) (median tps), pool size %d, %d CPUs; %s; "+
			"point selects on pgbench_accounts: hot = %d accounts, miss = all %d; cache rule on public.pgbench_accounts, TTL %s, default budgets",
			clients, jobs, int(o.duration.Seconds()), scale, o.Rounds, poolSize, runtime.NumCPU(), pgbenchVersion(),
			cacheHotRows, scale*100000, cacheTTL),
	}
	throughput := benchkit.Table{Left: 2, Header: []string{"workload", "mode", "direct tps", "tenantguard+iso tps",
		"tenantguard+iso+cache tps", "cache hit rate"}}
	ratios := benchkit.Table{Left: 2, Header: []string{"workload", "mode", "cache÷direct", "cache÷off", "off÷direct"}}
	resources := benchkit.Table{Left: 2, Header: []string{"workload", "mode", "off CPU ms/1k tx", "cache CPU ms/1k tx"}}
	hz := float64(benchkit.ClockTicks())
	for _, r := range rows {
		tps := make([]float64, len(r.results))
		for i, res := range r.results {
			tps[i] = benchkit.Median(res.tps)
		}
		rate := "n/a"
		if n := r.hits + r.misses; n > 0 {
			rate = fmt.Sprintf("%.1f%%", 100*float64(r.hits)/float64(n))
		}
		throughput.Rows = append(throughput.Rows, []string{r.workload, r.mode,
			benchkit.Num(tps[cDirect], "%.0f"), benchkit.Num(tps[cOff], "%.0f"), benchkit.Num(tps[cOn], "%.0f"), rate})
		ratios.Rows = append(ratios.Rows, []string{r.workload, r.mode,
			benchkit.Ratio(tps[cOn], tps[cDirect]), benchkit.Ratio(tps[cOn], tps[cOff]), benchkit.Ratio(tps[cOff], tps[cDirect])})
		cpu := func(res *result) string { return benchkit.Num(benchkit.MsPer1k(res.cpuTicks, res.txns, hz), "%.1f") }
		resources.Rows = append(resources.Rows, []string{r.workload, r.mode, cpu(r.results[cOff]), cpu(r.results[cOn])})
	}
	rep.Tables = []benchkit.Table{throughput, ratios, resources}
	rep.Notes = append(rep.Notes, "Goals (issue 15): hot cache÷direct ≥ 2; miss cache÷off ≥ 0.95.")
	rss, err := benchkit.RSSNote(off.Service, on.Service)
	if err != nil {
		return nil, err
	}
	rep.Notes = append(rep.Notes, rss)
	return rep, nil
}
