// Command pgbench compares PostgreSQL throughput four ways in one run:
// direct, through tenantguard without and with row isolation, and through
// PgBouncer, all proxies in transaction pooling mode. With -noisy it instead
// measures how one tenant's flood of long transactions affects another
// tenant's latency through tenantguard with isolation on.
//
// It starts a throwaway PostgreSQL (internal/pgcluster), loads the standard
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
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
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
	tenantguard string
	duration    time.Duration
	rounds      int
	modes       []string
	out         string
	noisy       bool
}

func main() {
	o, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "pgbench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	if o.noisy {
		err = runNoisy(ctx, o)
	} else {
		err = run(ctx, o)
	}
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "pgbench: FAILED:", err)
		os.Exit(1)
	}
}

// parseFlags reads and checks the command line.
func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("pgbench", flag.ContinueOnError)
	fs.StringVar(&o.tenantguard, "tenantguard", "bin/tenantguard", "tenantguard binary (built with go build if missing)")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "length of each pgbench run (whole seconds)")
	fs.IntVar(&o.rounds, "rounds", 1, "times to run every target; the median tps is reported")
	modes := fs.String("modes", "simple,prepared", "comma-separated pgbench protocol modes (simple, extended, prepared)")
	fs.StringVar(&o.out, "out", "", "also write the results as markdown to this file")
	fs.BoolVar(&o.noisy, "noisy", false, "noisy-neighbour mode: a quiet tenant's latency while another floods the pool (uses -duration and -out only)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.duration < time.Second {
		return o, errors.New("-duration must be at least 1s")
	}
	if o.rounds < 1 {
		return o, errors.New("-rounds must be at least 1")
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

// run sets everything up, runs the benchmark matrix, reports and tears down.
func run(ctx context.Context, o options) (err error) {
	if err := ensureBinary(ctx, o.tenantguard); err != nil {
		return err
	}
	logf("starting PostgreSQL and loading pgbench tables (scale %d)", scale)
	pg, err := startPostgres(ctx, tenantID)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, pg.Close()) }()

	acme := tgTenant{id: tenantID, password: tenantPass}
	tg, err := startTenantguard(ctx, o.tenantguard, pg, tgOptions{
		name: "tenantguard", user: dbUser, password: dbPassword, poolSize: poolSize,
		tenants: []tgTenant{acme},
	})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, tg.stop()) }()
	iso, err := startTenantguard(ctx, o.tenantguard, pg, tgOptions{
		name: "tenantguard+iso", user: isoUser, password: isoPass, poolSize: poolSize, isolation: true,
		tenants: []tgTenant{acme, {id: otherID, password: otherPass}},
	})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, iso.stop()) }()
	if err := checkIsolation(ctx, pg, iso, tenantID, tenantPass, otherID, otherPass); err != nil {
		return err
	}
	pgb, err := startPgBouncer(ctx, pg.Port())
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, pgb.stop()) }()

	targets := []*target{
		iDirect:      {name: "direct", port: pg.Port(), user: dbUser, password: dbPassword},
		iTenantguard: {name: "tenantguard", port: tg.port, user: tenantID, password: tenantPass, svc: tg},
		iIso:         {name: "tenantguard+iso", port: iso.port, user: tenantID, password: tenantPass, svc: iso},
		iPgBouncer:   {name: "pgbouncer", port: pgb.port, user: tenantID, password: tenantPass, svc: pgb.service},
	}
	if !pgb.preparedOK {
		targets[iPgBouncer].skipModes = map[string]string{"prepared": "PgBouncer " + pgb.version +
			" has no max_prepared_statements (added in 1.21), so -M prepared cannot work in transaction mode"}
	}
	rows, err := runMatrix(ctx, o, targets)
	if err != nil {
		return err
	}
	rep, err := newReport(o, rows, tg, iso, pgb)
	if err != nil {
		return err
	}
	return rep.write(o.out)
}

// logf prints a progress line to stderr.
func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}
