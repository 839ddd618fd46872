// Command redisbench compares Redis throughput three ways in one run:
// direct to redis-server, through tenantguard's Redis listener and through
// twemproxy (nutcracker), the usual Redis proxy.
//
// It starts a throwaway redis-server (internal/redisserver), a throwaway
// PostgreSQL (internal/pgcluster; the sidecar always has a PostgreSQL
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
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
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
	tenantguard string
	requests    int
	rounds      int
	pipelines   []int
	shared      []int // redis.shared_connections, one tenantguard per value
	timeout     time.Duration
	out         string
}

func main() {
	o, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "redisbench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err = run(ctx, o)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "redisbench: FAILED:", err)
		os.Exit(1)
	}
}

// parseFlags reads and checks the command line.
func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("redisbench", flag.ContinueOnError)
	fs.StringVar(&o.tenantguard, "tenantguard", "bin/tenantguard", "tenantguard binary (built with go build if missing)")
	fs.IntVar(&o.requests, "n", 1000000, "redis-benchmark -n: requests per test and run")
	fs.IntVar(&o.rounds, "rounds", 1, "times to run every target; the median rps is reported")
	pipelines := fs.String("pipelines", "1,16", "comma-separated redis-benchmark -P values")
	shared := fs.String("shared-connections", strconv.Itoa(defaultSharedConns),
		"comma-separated redis.shared_connections values; one tenantguard target per value")
	fs.DurationVar(&o.timeout, "timeout", 0, "longest one redis-benchmark run may take (0: 60s plus 1ms per 5 requests)")
	fs.StringVar(&o.out, "out", "", "also write the results as markdown to this file")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.requests < 1000 {
		return o, errors.New("-n must be at least 1000")
	}
	if o.rounds < 1 {
		return o, errors.New("-rounds must be at least 1")
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
	if err := ensureBinary(ctx, o.tenantguard); err != nil {
		return err
	}
	// The sidecars run in their own directories.
	if o.tenantguard, err = filepath.Abs(o.tenantguard); err != nil {
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
	logf("starting PostgreSQL (tenantguard's sidecar needs a PostgreSQL upstream too)")
	pg, err := startPostgres(ctx)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, pg.Close()) }()

	var tgs []*service
	for _, n := range o.shared {
		tg, err := startTenantguard(ctx, o.tenantguard, rs.Addr(), pg.Port(), n, len(o.shared) > 1)
		if err != nil {
			return err
		}
		defer func() { err = errors.Join(err, tg.stop()) }()
		tgs = append(tgs, tg)
	}
	nc, err := startTwemproxy(ctx, rs.Addr())
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, nc.stop()) }()

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
			clients, defaultSetRequests, tg.name, strings.Join(ran, "; ")))
	}
	// Start the measurements from an empty server.
	if err := flushAll(ctx, rs.Addr()); err != nil {
		return err
	}

	targets := []*target{{name: "direct", addr: rs.Addr()}}
	for _, tg := range tgs {
		targets = append(targets, &target{name: tg.name, addr: tg.addr, user: tenantID, password: tenantPass, svc: tg})
	}
	targets = append(targets, &target{name: nc.name, addr: nc.addr, svc: nc})
	rows, err := runMatrix(ctx, o, targets)
	if err != nil {
		return err
	}
	rep, err := newReport(o, rows, targets, checks, rbVersion, ncVersion)
	if err != nil {
		return err
	}
	return rep.write(o.out)
}

// logf prints a progress line to stderr.
func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}
