// Command redisbench compares Redis throughput three ways in one run:
// direct to redis-server, through tenantguard's Redis listener and through
// twemproxy (nutcracker), the usual Redis proxy.
//
// It starts a throwaway redis-server (internal/fixture/redisserver), a throwaway
// PostgreSQL (internal/fixture/pgcluster; the sidecar always has a PostgreSQL
// listener too), tenantguard (`tenantguard sidecar`) and twemproxy in front
// of it, first runs redis-benchmark's whole default test set through
// tenantguard and requires zero errors, then runs redis-benchmark's SET and
// GET tests against each target in round-robin order and prints the median
// throughput, the ratios between targets and the proxies' CPU and memory
// use. See bench/README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tenantguard/tenantguard/bench/internal/benchkit"
)

// Fixed benchmark shape, shared by every target.
const (
	clients  = 50     // redis-benchmark -c
	keyspace = 100000 // redis-benchmark -r: random keys out of this many

	tenantID   = "acme"
	tenantPass = "acme-bench-secret"
	pgRole     = "bench_app" // tenantguard's upstream PostgreSQL role (the sidecar needs one)
	pgRolePass = "bench-app-pw"

	// defaultSetRequests is redis-benchmark -n for the default test set
	// check through tenantguard.
	defaultSetRequests = 10000
	// defaultSharedConns is tenantguard's own default for
	// redis.shared_connections.
	defaultSharedConns = 4
)

// defaultSetPipelines are the redis-benchmark -P values of the default
// test set check.
var defaultSetPipelines = []int{1, 16}

// options are the command-line flags.
type options struct {
	benchkit.Options
	requests  int
	pipelines []int
	shared    []int // redis.shared_connections, one tenantguard per value
	timeout   time.Duration
	counts    int  // requests of each counting run; 0 = none
	nearCache bool // the near-cache comparison instead (nearcache.go)
	hotKeys   int  // its key set
	serverPID int  // redis-server's, for its CPU time per request
}

func main() { benchkit.Main("redisbench", parseFlags, run) }

// parseFlags reads and checks the command line.
func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("redisbench", flag.ContinueOnError)
	o.Register(fs, "rps")
	fs.IntVar(&o.requests, "n", 1000000, "redis-benchmark -n: requests per test and run")
	pipelines := fs.String("pipelines", "1,16", "comma-separated redis-benchmark -P values")
	shared := fs.String("shared-connections", strconv.Itoa(defaultSharedConns),
		"comma-separated redis.shared_connections values; one tenantguard target per value")
	fs.DurationVar(&o.timeout, "timeout", 0, "longest one redis-benchmark run may take (0: 60s plus 1ms per 5 requests)")
	fs.BoolVar(&o.nearCache, "near-cache", false, "instead: GET on a hot key set direct, through tenantguard without a near cache, with one caching the keys, and with one caching other keys (the miss workload)")
	fs.IntVar(&o.hotKeys, "hot-keys", 1000, "with -near-cache: redis-benchmark -r, the hot key set")
	fs.IntVar(&o.counts, "counts", 200000, "requests of the extra, untimed runs that count each proxy's system calls (perf stat) and tenantguard's heap allocations per request; 0 skips them")
	if err := o.Parse(fs, args); err != nil {
		return o, err
	}
	if o.requests < 1000 {
		return o, errors.New("-n must be at least 1000")
	}
	var err error
	if o.pipelines, err = intList("-pipelines", *pipelines, 1, 10000); err != nil {
		return o, err
	}
	if o.shared, err = intList("-shared-connections", *shared, 1, 1024); err != nil {
		return o, err
	}
	if o.timeout == 0 {
		o.timeout = 60*time.Second + time.Duration(o.requests)*200*time.Microsecond
	}
	return o, nil
}

// intList parses a comma-separated list of distinct integers in [lo, hi].
func intList(flagName, s string, lo, hi int) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < lo || n > hi {
			return nil, fmt.Errorf("%s: %q is not a number from %d to %d", flagName, f, lo, hi)
		}
		if slices.Contains(out, n) {
			return nil, fmt.Errorf("%s: %d given twice", flagName, n)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no value given", flagName)
	}
	return out, nil
}

// run sets everything up, runs the checks and the benchmark matrix, reports
// and tears down.
func run(ctx context.Context, o options) (err error) {
	if err := benchkit.EnsureBinary(ctx, o.Tenantguard); err != nil {
		return err
	}
	// The sidecars run in their own directories.
	if o.Tenantguard, err = filepath.Abs(o.Tenantguard); err != nil {
		return err
	}
	rbVersion, err := toolVersion("redis-benchmark", "--version")
	if err != nil {
		return err
	}
	ncVersion, err := toolVersion(nutcrackerBin, "--version")
	if err != nil {
		return err
	}
	ncVersion = strings.TrimPrefix(ncVersion, "This is ") // "nutcracker-0.5.0"
	rs, err := startRedis(ctx)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, rs.Close()) }()
	benchkit.Logf("starting PostgreSQL (tenantguard's sidecar needs a PostgreSQL upstream too)")
	pg, err := startPostgres(ctx)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, pg.Close()) }()

	if o.nearCache {
		return runNearCache(ctx, o, rs.Addr(), pg.Port(), rbVersion)
	}
	var tgs []*benchkit.Service
	for _, n := range o.shared {
		tg, err := startTenantguard(ctx, o.Tenantguard, rs.Addr(), pg.Port(), n, len(o.shared) > 1)
		if err != nil {
			return err
		}
		defer func() { err = errors.Join(err, tg.Stop()) }()
		tgs = append(tgs, tg)
	}
	nc, err := startTwemproxy(ctx, rs.Addr())
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, nc.Stop()) }()

	// Evidence that stock clients work through the sidecar: the whole
	// default test set, unpipelined and pipelined, with zero errors.
	var checks []string
	for _, tg := range tgs {
		var ran []string
		for _, p := range defaultSetPipelines {
			names, err := runDefaultSet(ctx, o, tg, p)
			if err != nil {
				return err
			}
			if len(checks) == 0 && len(ran) == 0 {
				checks = append(checks, fmt.Sprintf("redis-benchmark default test set: %s.", strings.Join(names, ", ")))
			}
			ran = append(ran, fmt.Sprintf("-P %d: %d tests", p, len(names)))
		}
		checks = append(checks, fmt.Sprintf("Default test set (-c %d -n %d) via %s with zero errors (%s).",
			clients, defaultSetRequests, tg.Name, strings.Join(ran, "; ")))
	}
	// Start the measurements from an empty server.
	if err := flushAll(ctx, rs.Addr()); err != nil {
		return err
	}

	o.serverPID = rs.Pid()
	targets := []*target{{name: "direct", addr: rs.Addr()}}
	for _, tg := range tgs {
		targets = append(targets, &target{name: tg.Name, addr: tg.Addr, user: tenantID, password: tenantPass, svc: tg})
	}
	targets = append(targets, &target{name: nc.Name, addr: nc.Addr, svc: nc})
	rows, err := runMatrix(ctx, o, targets)
	if err != nil {
		return err
	}
	counted, countNote, err := runCounts(ctx, o, targets[1:])
	if err != nil {
		return err
	}
	rep, err := newReport(o, rows, targets, checks, rbVersion, ncVersion)
	if err != nil {
		return err
	}
	addCounts(rep, counted, targets[1:], countNote)
	return rep.Write(o.Out)
}
