package main

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"

	"github.com/tenantguard/tenantguard/bench/internal/benchkit"
)

// runNearCache compares redis-benchmark GET on a hot key set (-r
// o.hotKeys, keys "key:…") four ways: direct; through tenantguard with no
// near cache; through one whose near cache holds key:* (every GET after
// the first of each key is a hit); and through one whose near cache holds
// only keys no GET names (every GET passes the cache's checks and goes
// upstream: the cost of the cache on a miss workload).
func runNearCache(ctx context.Context, o options, redisAddr string, pgPort int, rbVersion string) (err error) {
	sc := o.shared[0]
	const cacheAll = "  near_cache:\n    - {tenant: " + tenantID + ", keys: [\"key:*\"], max_ttl: 60s, max_bytes: 67108864}\n"
	const cacheNone = "  near_cache:\n    - {tenant: " + tenantID + ", keys: [\"nothing-named-so:*\"], max_ttl: 60s}\n"
	var targets []*target
	targets = append(targets, &target{name: "direct", addr: redisAddr})
	for _, v := range []struct{ name, nc string }{
		{"tenantguard", ""}, {"tenantguard cache hits", cacheAll}, {"tenantguard cache misses", cacheNone},
	} {
		tg, err := startTenantguardNamed(ctx, v.name, o.Tenantguard, redisAddr, pgPort, sc, v.nc)
		if err != nil {
			return err
		}
		defer func() { err = errors.Join(err, tg.Stop()) }()
		targets = append(targets, &target{name: v.name, addr: tg.Addr, user: tenantID, password: tenantPass, svc: tg})
	}
	// The hot keys, direct and the tenant's (all tenantguards share them).
	for _, t := range targets[:2] {
		args := []string{"-t", "set", "-c", strconv.Itoa(clients), "-n", strconv.Itoa(o.hotKeys * 20),
			"-r", strconv.Itoa(o.hotKeys), "-q"}
		if _, err := runBenchmark(ctx, "redis-benchmark SET (hot keys) via "+t.name, t, o.timeout, args, nil); err != nil {
			return err
		}
	}
	type cell struct {
		rps    []float64
		ticks  int64
		reqs   int64
		client clientUse
	}
	res := make([][]*cell, len(o.pipelines))
	for pi, p := range o.pipelines {
		res[pi] = make([]*cell, len(targets))
		for i := range targets {
			res[pi][i] = &cell{}
		}
		for round := range o.Rounds {
			for i := range targets {
				k := (i + round) % len(targets)
				t := targets[k]
				args := []string{"-t", "get", "-c", strconv.Itoa(clients), "-n", strconv.Itoa(o.requests),
					"-P", strconv.Itoa(p), "-r", strconv.Itoa(o.hotKeys), "--csv"}
				what := fmt.Sprintf("redis-benchmark GET -P %d (hot keys) via %s", p, t.name)
				var out []byte
				c := res[pi][k]
				ticks, err := benchkit.CPUDuring(t.svc, func() (err error) {
					out, err = runBenchmark(ctx, what, t, o.timeout, args, &c.client)
					return err
				})
				if err != nil {
					return err
				}
				rps, err := csvRPS(out, "GET")
				if err != nil {
					return fmt.Errorf("%s: %w:\n%s", what, err, out)
				}
				c.rps, c.ticks, c.reqs = append(c.rps, rps), c.ticks+ticks, c.reqs+int64(o.requests)
				benchkit.Logf("GET -P %-3d round %d/%d %-26s %12.0f rps", p, round+1, o.Rounds, t.name, rps)
			}
		}
	}
	// Evidence that the runs measured what they say: the caching sidecar
	// hit, the other never did.
	var seen []string
	for _, t := range targets[2:] {
		var v [2]float64
		for i, m := range []string{"hits", "misses"} {
			if v[i], err = benchkit.MetricValue(ctx, metricsURL[t.svc], "tenantguard_redis_near_cache_"+m+`_total{tenant="`+tenantID+`"}`); err != nil {
				return err
			}
		}
		seen = append(seen, fmt.Sprintf("%s: %.0f hits, %.0f misses", t.name, v[0], v[1]))
		if hits := t == targets[2]; hits != (v[0] > 0) || !hits && v[1] > 0 {
			return fmt.Errorf("%s: %.0f near cache hits and %.0f misses, not what the run is for", t.name, v[0], v[1])
		}
	}
	hz := float64(benchkit.ClockTicks())
	tput := benchkit.Table{Left: 2, Header: []string{"test", "pipeline", "direct rps", "tg rps", "tg cache hits rps", "tg cache misses rps",
		"hits÷direct", "hits÷tg", "misses÷tg", "tg CPU ms/1k", "hits CPU ms/1k", "misses CPU ms/1k"}}
	for pi, p := range o.pipelines {
		m := make([]float64, len(targets))
		for i, c := range res[pi] {
			m[i] = benchkit.Median(c.rps)
		}
		cells := []string{"GET", "-P " + strconv.Itoa(p)}
		for _, v := range m {
			cells = append(cells, benchkit.Num(v, "%.0f"))
		}
		cells = append(cells, benchkit.Ratio(m[2], m[0]), benchkit.Ratio(m[2], m[1]), benchkit.Ratio(m[3], m[1]))
		for _, c := range res[pi][1:] {
			cells = append(cells, cpuCell(benchkit.MsPer1k(c.ticks, c.reqs, hz), c.ticks))
		}
		tput.Rows = append(tput.Rows, cells)
	}
	client := benchkit.Table{Left: 2, Header: []string{"test", "pipeline"}}
	for _, t := range targets {
		client.Header = append(client.Header, "redis-benchmark CPU÷wall via "+strings.Replace(t.name, "tenantguard", "tg", 1))
	}
	for pi, p := range o.pipelines {
		cells := []string{"GET", "-P " + strconv.Itoa(p)}
		for _, c := range res[pi] {
			cells = append(cells, benchkit.Num(c.client.share(), "%.2f"))
		}
		client.Rows = append(client.Rows, cells)
	}
	rep := &benchkit.Report{
		Setup: fmt.Sprintf("redis-benchmark -t get -c %d -n %d -r %d --csv on a hot key set, %d round(s) (median rps), %d CPUs; %s; tenantguard redis.shared_connections %d; near cache: key:* (hits) or keys no GET names (misses)",
			clients, o.requests, o.hotKeys, o.Rounds, runtime.NumCPU(), rbVersion, sc),
		Tables: []benchkit.Table{tput, client},
		Notes: []string{strings.Join([]string{
			"hits÷direct is the near cache against redis-server itself;",
			"misses÷tg is the near cache's cost on a workload it cannot serve (goal: 0.95 or more).",
		}, " "), clientNote, "Near cache counters after the runs: " + strings.Join(seen, "; ") + "."},
	}
	return rep.Write(o.Out)
}
