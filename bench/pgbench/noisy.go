package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tenantguard/tenantguard/bench/internal/benchkit"
	"github.com/tenantguard/tenantguard/internal/fixture/pgcluster"
)

// Noisy-neighbour shape: tenant quiet runs pgbench's select-only script
// while tenant noisy floods the pool with transactions that hold a server
// connection for noisySleep each.
const (
	noisyPoolSize = 8  // server connections in tenantguard+iso's pool
	noisyCap      = 4  // noisy's max_transactions when capped
	quietClients  = 4  // quiet's pgbench -c
	noisyClients  = 32 // noisy's pgbench -c
	noisyJobs     = 2  // pgbench -j, both tenants
	noisySleep    = 0.5

	quietID   = "quiet"
	quietPass = "quiet-bench-secret"
	noisyID   = "noisy"
	noisyPass = "noisy-bench-secret"

	// noisyWait is the pool's wait_timeout: long enough that none of
	// noisy's queued clients time out (32 clients through 4 connections
	// at 0.5 s each wait about 4 s).
	noisyWait = 60 * time.Second
	// noisyRamp is how long noisy may take to fill its share of the pool
	// before quiet starts; noisySlack is how long noisy keeps going after
	// quiet's run should have ended.
	noisyRamp  = 5 * time.Second
	noisySlack = 3 * time.Second
)

// noisyScript is noisy's pgbench script: one transaction that holds its
// server connection for noisySleep seconds.
var noisyScript = fmt.Sprintf("BEGIN;\nSELECT pg_sleep(%g);\nCOMMIT;\n", noisySleep)

// scenario is one measurement of quiet's latency.
type scenario struct {
	name     string
	noisyCap string // noisy's max_transactions, "" when noisy is idle
	quiet    pgbenchOut
	lat      []float64 // quiet's per-transaction latencies, ms, sorted
	noisy    *pgbenchOut
}

// runNoisy runs quiet alone, then quiet against noisy capped at noisyCap,
// then against noisy uncapped, each through tenantguard+iso, and reports
// quiet's latency percentiles.
func runNoisy(ctx context.Context, o options) (err error) {
	if err := benchkit.EnsureBinary(ctx, o.Tenantguard); err != nil {
		return err
	}
	benchkit.Logf("starting PostgreSQL and loading pgbench tables (scale %d), rows owned by tenant %s", scale, quietID)
	pg, err := startPostgres(ctx, quietID)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, pg.Close()) }()
	dir, err := os.MkdirTemp("", "bench-noisy-")
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, os.RemoveAll(dir)) }()
	script := filepath.Join(dir, "noisy.sql")
	if err := os.WriteFile(script, []byte(noisyScript), 0o644); err != nil {
		return err
	}

	var scenarios []*scenario
	for _, capped := range []bool{true, false} {
		opts := noisyTenantguard(capped)
		err := withTenantguard(ctx, o.Tenantguard, pg, opts, func(tg *service) error {
			if capped {
				if err := checkIsolation(ctx, pg, tg, quietID, quietPass, noisyID, noisyPass); err != nil {
					return err
				}
				sc, err := quietRun(ctx, o, tg, dir, "quiet alone")
				if err != nil {
					return err
				}
				scenarios = append(scenarios, sc)
			}
			sc, err := contendedRun(ctx, o, tg, dir, script, opts.tenants[1].maxTransactions)
			if err != nil {
				return err
			}
			scenarios = append(scenarios, sc)
			return nil
		})
		if err != nil {
			return err
		}
	}
	return newNoisyReport(o, scenarios).Write(o.Out)
}

// noisyTenantguard is the tenantguard+iso configuration for the noisy
// scenarios: tenants quiet (no cap) and noisy (capped or not).
func noisyTenantguard(capped bool) tgOptions {
	name, limit := "tenantguard+iso (noisy uncapped)", 0
	if capped {
		name, limit = "tenantguard+iso (noisy capped)", noisyCap
	}
	return tgOptions{
		name: name, user: isoUser, password: isoPass, poolSize: noisyPoolSize, waitTimeout: noisyWait, isolation: true,
		tenants: []tgTenant{
			{id: quietID, password: quietPass, statementTimeout: 30 * time.Second},
			{id: noisyID, password: noisyPass, maxTransactions: limit, statementTimeout: 30 * time.Second},
		},
	}
}

// withTenantguard starts tenantguard, runs f with it and stops it.
func withTenantguard(ctx context.Context, bin string, pg *pgcluster.Cluster, opts tgOptions, f func(*service) error) (err error) {
	tg, err := startTenantguard(ctx, bin, pg, opts)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, tg.Stop()) }()
	return f(tg)
}

// quietRun runs quiet's workload once with per-transaction logs in dir.
func quietRun(ctx context.Context, o options, tg *service, dir, name string) (*scenario, error) {
	prefix := filepath.Join(dir, strings.ReplaceAll(name, " ", "-"))
	t := &target{name: tg.Name, port: tg.port, user: quietID, password: quietPass, svc: tg.Service}
	args := []string{"-n", "-S", "-c", strconv.Itoa(quietClients), "-j", strconv.Itoa(noisyJobs),
		"-T", strconv.Itoa(int(o.duration.Seconds())), "-l", "--log-prefix", prefix}
	out, err := runPgbench(ctx, "pgbench select-only as "+quietID+" ("+name+") via "+tg.Name, t, o.duration, args)
	if err != nil {
		return nil, err
	}
	lat, err := readLatencies(prefix)
	if err != nil {
		return nil, err
	}
	if len(lat) == 0 {
		return nil, fmt.Errorf("%s: no transactions in pgbench's logs %s.*", name, prefix)
	}
	sc := &scenario{name: name, quiet: out, lat: lat}
	benchkit.Logf("%-34s quiet %6.0f tps, p50 %.2f ms, p99 %.2f ms", name, out.tps, percentile(lat, 0.50), percentile(lat, 0.99))
	return sc, nil
}

// contendedRun starts noisy's flood, waits until it holds its share of
// the pool with clients queued behind it, runs quiet's workload, checks
// noisy was still flooding at the end, and waits for noisy to finish.
func contendedRun(ctx context.Context, o options, tg *service, dir, script string, limit int) (*scenario, error) {
	name, capLabel, want := "contended, noisy uncapped", "none", noisyPoolSize
	if limit > 0 {
		name, capLabel, want = "contended, noisy capped", strconv.Itoa(limit), min(limit, noisyPoolSize)
	}
	noisyT := &target{name: tg.Name, port: tg.port, user: noisyID, password: noisyPass, svc: tg.Service}
	noisyDur := noisyRamp + o.duration + noisySlack
	args := []string{"-n", "-f", script, "-c", strconv.Itoa(noisyClients), "-j", strconv.Itoa(noisyJobs),
		"-T", strconv.Itoa(int(noisyDur.Seconds()))}
	nctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type noisyResult struct {
		out pgbenchOut
		err error
	}
	done := make(chan noisyResult, 1)
	start := time.Now()
	go func() {
		out, err := runPgbench(nctx, "pgbench pg_sleep flood as "+noisyID+" ("+name+") via "+tg.Name, noisyT, noisyDur, args)
		done <- noisyResult{out, err}
	}()
	// stopNoisy ends the flood early and returns err, plus noisy's own error
	// if it had already failed.
	stopNoisy := func(err error) error {
		cancel()
		if r := <-done; r.err != nil && !errors.Is(r.err, context.Canceled) && ctx.Err() == nil {
			return errors.Join(err, r.err)
		}
		return err
	}
	active, waiting, err := waitFlood(ctx, tg, want, start.Add(noisyRamp))
	if err != nil {
		return nil, stopNoisy(fmt.Errorf("%s: %w", name, err))
	}
	benchkit.Logf("%s: noisy holds %d of %d server connections with %d clients queued; starting quiet", name, active, noisyPoolSize, waiting)
	sc, err := quietRun(ctx, o, tg, dir, name)
	if err != nil {
		return nil, stopNoisy(err)
	}
	active, waiting, err = poolGauges(ctx, tg)
	if err != nil {
		return nil, stopNoisy(err)
	}
	if active < want || waiting == 0 {
		return nil, stopNoisy(fmt.Errorf("%s: noisy stopped flooding before quiet finished (%d server connections active, %d clients waiting)",
			name, active, waiting))
	}
	r := <-done
	if r.err != nil {
		return nil, r.err
	}
	sc.noisyCap, sc.noisy = capLabel, &r.out
	benchkit.Logf("%-34s noisy %6.1f tps (%d transactions)", name, r.out.tps, r.out.txns)
	return sc, nil
}

// waitFlood polls tenantguard's metrics until at least want server
// connections are active and clients are waiting for more, which with
// only noisy running means noisy holds all it may and queues the rest.
func waitFlood(ctx context.Context, tg *service, want int, deadline time.Time) (active, waiting int, err error) {
	for {
		active, waiting, err = poolGauges(ctx, tg)
		if err != nil {
			return 0, 0, err
		}
		if active >= want && waiting > 0 {
			return active, waiting, nil
		}
		if time.Now().After(deadline) {
			return 0, 0, fmt.Errorf("noisy did not fill the pool within %s (%d of %d server connections active, %d clients waiting)",
				noisyRamp, active, want, waiting)
		}
		select {
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// poolGauges reads tenantguard's active server connections and waiting
// clients, summed over pools, from its metrics endpoint.
func poolGauges(ctx context.Context, tg *service) (active, waiting int, err error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	url := fmt.Sprintf("http://127.0.0.1:%d/metrics", tg.adminPort)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, 0, fmt.Errorf("%s: read metrics: %w", tg.Name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("%s: GET %s: %s", tg.Name, url, resp.Status)
	}
	var a, w float64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		var sum *float64
		switch {
		case strings.HasPrefix(line, "tenantguard_pg_server_connections{") && strings.Contains(line, `state="active"`):
			sum = &a
		case strings.HasPrefix(line, "tenantguard_pg_pool_waiting_clients{"):
			sum = &w
		default:
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			return 0, 0, fmt.Errorf("%s: metrics line %q: %w", tg.Name, line, err)
		}
		*sum += v
	}
	if err := sc.Err(); err != nil {
		return 0, 0, fmt.Errorf("%s: read metrics: %w", tg.Name, err)
	}
	return int(a), int(w), nil
}

// readLatencies reads the per-transaction logs pgbench -l wrote as
// prefix.PID and prefix.PID.THREAD and returns the latencies in ms, sorted.
// Each line is "client_id transaction_no time script_no time_epoch time_us
// ...", time being the transaction's latency in microseconds.
func readLatencies(prefix string) ([]float64, error) {
	files, err := filepath.Glob(prefix + ".*")
	if err != nil || len(files) == 0 {
		return nil, fmt.Errorf("no pgbench logs %s.* (%v)", prefix, err)
	}
	var lat []float64
	for _, path := range files {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		lat, err = appendLatencies(lat, f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	slices.Sort(lat)
	return lat, nil
}

// appendLatencies parses one pgbench log.
func appendLatencies(lat []float64, r io.Reader) ([]float64, error) {
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 {
			return nil, fmt.Errorf("line %d: %q is not a pgbench transaction log line", n, sc.Text())
		}
		us, err := strconv.ParseInt(fields[2], 10, 64)
		if err != nil {
			// "failed" or "skipped": runPgbench already fails on those.
			return nil, fmt.Errorf("line %d: transaction not completed: %q", n, sc.Text())
		}
		lat = append(lat, float64(us)/1000)
	}
	return lat, sc.Err()
}

// percentile of sorted values, nearest rank.
func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// newNoisyReport tabulates quiet's latency per scenario against quiet alone
// (the first scenario).
func newNoisyReport(o options, scenarios []*scenario) *benchkit.Report {
	rep := &benchkit.Report{Setup: fmt.Sprintf("tenantguard+iso, pool size %d, wait_timeout %s, scale %d, %d CPUs; %s\n"+
		"quiet: pgbench -n -S -c %d -j %d -T %d as tenant %s (no max_transactions)\n"+
		"noisy: pgbench -n -c %d -j %d with BEGIN; SELECT pg_sleep(%g); COMMIT as tenant %s, running from before quiet starts until after it ends",
		noisyPoolSize, noisyWait, scale, runtime.NumCPU(), pgbenchVersion(),
		quietClients, noisyJobs, int(o.duration.Seconds()), quietID,
		noisyClients, noisyJobs, noisySleep, noisyID)}
	t := benchkit.Table{Left: 1, Header: []string{"scenario", "noisy max_transactions", "quiet tps", "quiet tx",
		"quiet p50 ms", "quiet p99 ms", "p50÷alone", "p99÷alone", "noisy tps"}}
	base := scenarios[0]
	bp50, bp99 := percentile(base.lat, 0.50), percentile(base.lat, 0.99)
	for _, sc := range scenarios {
		p50, p99 := percentile(sc.lat, 0.50), percentile(sc.lat, 0.99)
		capLabel, noisyTPS := "-", "-"
		if sc.noisy != nil {
			capLabel, noisyTPS = sc.noisyCap, fmt.Sprintf("%.1f", sc.noisy.tps)
		}
		t.Rows = append(t.Rows, []string{sc.name, capLabel, fmt.Sprintf("%.0f", sc.quiet.tps), strconv.Itoa(len(sc.lat)),
			fmt.Sprintf("%.2f", p50), fmt.Sprintf("%.2f", p99), benchkit.Ratio(p50, bp50), benchkit.Ratio(p99, bp99), noisyTPS})
		if sc.noisy != nil && sc.noisyCap != "none" {
			verdict := "met"
			if p99 > 2*bp99 {
				verdict = "NOT met"
			}
			rep.Notes = append(rep.Notes, fmt.Sprintf("Goal (noisy capped at %s: quiet p99 within 2× of quiet alone): %s, %.2f ms vs %.2f ms alone (%.2f×).",
				sc.noisyCap, verdict, p99, bp99, p99/bp99))
		}
	}
	rep.Tables = []benchkit.Table{t}
	return rep
}
