// Command pgbench compares PostgreSQL throughput four ways in one run:
// direct, through tenantguard without and with row isolation, and through
// PgBouncer, all proxies in transaction pooling mode. With -noisy it instead
// measures how one tenant's flood of long transactions affects another
// tenant's latency through tenantguard with isolation on.
//
// It starts a throwaway PostgreSQL (internal/fixture/pgcluster), loads the standard
// pgbench tables, starts tenantguard and PgBouncer in front of it, runs the
// stock pgbench tool against each target in round-robin order and prints the
// median throughput, the ratios between targets and the proxies' CPU and
// memory use. See bench/README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tenantguard/tenantguard/bench/internal/benchkit"
)

// Fixed benchmark shape, shared by every target.
const (
	clients  = 16 // pgbench -c
	jobs     = 2  // pgbench -j
	scale    = 10 // pgbench -i -s
	poolSize = 20 // server connections per pool in all proxies

	dbName     = "bench"
	dbUser     = "benchuser" // upstream role of direct, tenantguard and PgBouncer: BYPASSRLS
	dbPassword = "benchpw"
	isoUser    = "benchiso" // upstream role of tenantguard+iso: subject to row-level security
	isoPass    = "benchisopw"
	tenantID   = "acme"
	tenantPass = "acme-bench-secret"
	otherID    = "globex" // a tenant that owns no rows, for the isolation check
	otherPass  = "globex-bench-secret"

	// bindingKey signs tenant bindings (text, 16 to 64 bytes, not hex).
	bindingKey = "bench-binding-key-not-for-production"
	// tenantColumn is added to every pgbench table and protected by RLS.
	tenantColumn = "tenant_id"
)

// isoTables are the pgbench tables that get a tenant column and row-level
// security.
var isoTables = []string{"pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history"}

// options are the command-line flags.
type options struct {
	benchkit.Options
	duration  time.Duration
	modes     []string
	noisy     bool
	cache     bool
	targets   map[string]bool // run only these targets (nil: all)
	workloads map[string]bool // run only these workloads (nil: all)
	profile   string          // directory for tenantguard's CPU profiles, one per run
	counts    time.Duration   // length of each counting run (counts.go); 0 skips them
	loop      bool            // also run bench/pgloop, the event-loop experiment
}

func main() {
	benchkit.Main("pgbench", parseFlags, func(ctx context.Context, o options) error {
		if o.noisy {
			return runNoisy(ctx, o)
		}
		if o.cache {
			return runCache(ctx, o)
		}
		return run(ctx, o)
	})
}

// parseFlags reads and checks the command line.
func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("pgbench", flag.ContinueOnError)
	o.Register(fs, "tps")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "length of each pgbench run (whole seconds)")
	modes := fs.String("modes", "simple,prepared", "comma-separated pgbench protocol modes (simple, extended, prepared)")
	fs.BoolVar(&o.noisy, "noisy", false, "noisy-neighbour mode: a quiet tenant's latency while another floods the pool (uses -duration and -out only)")
	fs.BoolVar(&o.cache, "cache", false, "result cache mode: cached point selects and a cache-miss workload, direct vs tenantguard+iso with the cache off and on (uses -duration, -rounds, -modes, -out)")
	targets := fs.String("targets", "", "comma-separated targets to run (direct, tenantguard, tenantguard+iso, pgbouncer; go-loop, go-goroutines with -loop); default all")
	wls := fs.String("workloads", "", "comma-separated workloads to run (select-only, tpcb-like); default all")
	fs.DurationVar(&o.counts, "counts", 5*time.Second, "length of the extra, untimed pgbench runs that count each proxy's system calls (perf stat) and tenantguard's heap allocations per transaction; 0 skips them")
	fs.BoolVar(&o.loop, "loop", false, "also run bench/pgloop, a minimal transaction-pooling forwarder on an epoll loop (an experiment: what an event loop costs in Go, beside the goroutine-per-connection data plane)")
	fs.StringVar(&o.profile, "profile", "", "write a CPU profile of tenantguard for each of its runs into this directory (pprof on its admin listener)")
	if err := o.Parse(fs, args); err != nil {
		return o, err
	}
	if o.duration < time.Second {
		return o, errors.New("-duration must be at least 1s")
	}
	if o.counts != 0 && o.counts < time.Second {
		return o, errors.New("-counts must be 0 or at least 1s")
	}
	if o.noisy && o.cache {
		return o, errors.New("-noisy and -cache are separate runs")
	}
	if o.noisy {
		var bad []string
		fs.Visit(func(f *flag.Flag) {
			if f.Name == "rounds" || f.Name == "modes" {
				bad = append(bad, "-"+f.Name)
			}
		})
		if len(bad) > 0 {
			return o, fmt.Errorf("-noisy does not use %s", strings.Join(bad, ", "))
		}
	}
	var err error
	if o.targets, err = subset("-targets", *targets, "direct", "tenantguard", "tenantguard+iso", "pgbouncer", "go-loop", "go-goroutines"); err != nil {
		return o, err
	}
	if o.workloads, err = subset("-workloads", *wls, "select-only", "tpcb-like"); err != nil {
		return o, err
	}
	for _, m := range strings.Split(*modes, ",") {
		switch m = strings.TrimSpace(m); m {
		case "simple", "extended", "prepared":
			o.modes = append(o.modes, m)
		case "":
		default:
			return o, fmt.Errorf("-modes: unknown protocol mode %q", m)
		}
	}
	if len(o.modes) == 0 {
		return o, errors.New("-modes: no protocol mode given")
	}
	return o, nil
}

// subset parses a comma-separated list of names from known; nil when empty.
func subset(flagName, list string, known ...string) (map[string]bool, error) {
	if strings.TrimSpace(list) == "" {
		return nil, nil
	}
	out := map[string]bool{}
	for _, n := range strings.Split(list, ",") {
		n = strings.TrimSpace(n)
		if !slices.Contains(known, n) {
			return nil, fmt.Errorf("%s: unknown name %q (known: %s)", flagName, n, strings.Join(known, ", "))
		}
		out[n] = true
	}
	return out, nil
}

// run sets everything up, runs the benchmark matrix, reports and tears down.
func run(ctx context.Context, o options) (err error) {
	if err := benchkit.EnsureBinary(ctx, o.Tenantguard); err != nil {
		return err
	}
	benchkit.Logf("starting PostgreSQL and loading pgbench tables (scale %d)", scale)
	pg, err := startPostgres(ctx, tenantID)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, pg.Close()) }()

	acme := tgTenant{id: tenantID, password: tenantPass}
	tg, err := startTenantguard(ctx, o.Tenantguard, pg, tgOptions{
		name: "tenantguard", user: dbUser, password: dbPassword, poolSize: poolSize,
		tenants: []tgTenant{acme}, pprof: o.profile != "",
	})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, tg.Stop()) }()
	iso, err := startTenantguard(ctx, o.Tenantguard, pg, tgOptions{
		name: "tenantguard+iso", user: isoUser, password: isoPass, poolSize: poolSize, isolation: true,
		tenants: []tgTenant{acme, {id: otherID, password: otherPass}}, pprof: o.profile != "",
	})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, iso.Stop()) }()
	if err := checkIsolation(ctx, pg, iso, tenantID, tenantPass, otherID, otherPass); err != nil {
		return err
	}
	pgb, err := startPgBouncer(ctx, pg.Port())
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, pgb.Stop()) }()

	targets := []*target{
		iDirect:      {name: "direct", port: pg.Port(), user: dbUser, password: dbPassword},
		iTenantguard: {name: "tenantguard", port: tg.port, user: tenantID, password: tenantPass, svc: tg.Service, adminPort: tg.adminPort},
		iIso:         {name: "tenantguard+iso", port: iso.port, user: tenantID, password: tenantPass, svc: iso.Service, adminPort: iso.adminPort},
		iPgBouncer:   {name: "pgbouncer", port: pgb.port, user: tenantID, password: tenantPass, svc: pgb.Service},
	}
	if o.loop {
		for _, mode := range []string{"loop", "goroutines"} {
			lp, lerr := startLoop(ctx, pg.Port(), mode)
			if lerr != nil {
				return lerr
			}
			defer func() { err = errors.Join(err, lp.Stop()) }()
			targets = append(targets, &target{name: "go-" + mode, port: lp.port, user: tenantID, password: tenantPass, svc: lp.Service,
				skipModes: map[string]string{"prepared": "bench/pgloop keeps no prepared statements across server connections"}})
		}
	}
	for _, t := range targets {
		if o.targets != nil && !o.targets[t.name] {
			t.skipAll = "not selected (-targets)"
		}
	}
	if !pgb.preparedOK {
		targets[iPgBouncer].skipModes = map[string]string{"prepared": "PgBouncer " + pgb.version +
			" has no max_prepared_statements (added in 1.21), so -M prepared cannot work in transaction mode"}
	}
	rows, err := runMatrix(ctx, o, targets)
	if err != nil {
		return err
	}
	counted, why, err := runCounts(ctx, o, targets, rows)
	if err != nil {
		return err
	}
	names := make([]string, len(targets))
	for i, t := range targets {
		names[i] = t.name
	}
	rep, err := newReport(o, rows, names, tg, iso, pgb)
	if err != nil {
		return err
	}
	addCounts(rep, o, rows, names, counted, why)
	return rep.Write(o.Out)
}
