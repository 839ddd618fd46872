// Command rls measures what row-level security costs PostgreSQL under each
// way of binding a tenant that issue #10 considered, in one run on one
// machine: a point select by primary key on a 200,000-row table, 8 clients,
// a role that does not own the table, RLS forced.
//
// It starts a throwaway PostgreSQL (internal/fixture/pgcluster), gives every
// variant its own copy of the table with its policy (see variants.go),
// checks each variant really isolates (the other tenant's rows stay
// invisible), and runs the stock pgbench tool with a custom script against
// each variant in turn, starting with a different variant each round. It
// prints the median tps per variant next to the no-RLS and plain-variable
// figures and the ratios, and PostgreSQL's CPU time per transaction, which
// a busy machine disturbs much less than tps. A second table measures the
// switch: every transaction binds another tenant first, pipelined as the
// sidecar does (see switch.go). See bench/README.md.
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

// Fixed benchmark shape.
const (
	dbName    = "bench"
	appRole   = "bench_app" // the upstream role: not the owner, no BYPASSRLS
	tenantID  = "acme"      // owns every row pgbench selects
	otherID   = "globex"    // owns otherRows rows pgbench never selects
	otherRows = 1000

	// bindingKey signs tenant bindings in every signed variant.
	bindingKey = "bench-binding-key-not-for-production"
)

// options are the command-line flags.
type options struct {
	benchkit.Options
	duration time.Duration
	clients  int
	rows     int
	modes    []string
	only     []string // variant names; empty = all
	switchOn bool
	loop     int // statements per in-server loop; 0 = no loops
	loopReps int
}

func main() {
	benchkit.Main("rls", parseFlags, run)
}

// parseFlags reads and checks the command line.
func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("rls", flag.ContinueOnError)
	o.Register(fs, "tps")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "length of each pgbench run (whole seconds)")
	fs.IntVar(&o.clients, "clients", 8, "pgbench -c")
	fs.IntVar(&o.rows, "rows", 200000, "rows of the accounts table")
	modes := fs.String("modes", "simple,prepared", "comma-separated pgbench protocol modes (simple, extended, prepared)")
	only := fs.String("variants", "", "comma-separated variants to run (default all): "+variantNames())
	fs.BoolVar(&o.switchOn, "switch", true, "also measure a tenant switch on every transaction")
	fs.IntVar(&o.loop, "loop", 20000, "statements per in-server loop (0: no loops)")
	fs.IntVar(&o.loopReps, "loop-reps", 5, "repetitions of every in-server loop (the fastest is reported)")
	if err := o.Parse(fs, args); err != nil {
		return o, err
	}
	if o.duration < time.Second {
		return o, errors.New("-duration must be at least 1s")
	}
	if o.clients < 1 || o.rows < 1 || o.loop < 0 || o.loopReps < 1 {
		return o, errors.New("-clients, -rows and -loop-reps must be positive, -loop not negative")
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
	for _, v := range strings.Split(*only, ",") {
		if v = strings.TrimSpace(v); v == "" {
			continue
		}
		if _, ok := variantByName(v); !ok {
			return o, fmt.Errorf("-variants: unknown variant %q (have %s)", v, variantNames())
		}
		o.only = append(o.only, v)
	}
	return o, nil
}

func variantNames() string {
	var names []string
	for _, v := range variants {
		names = append(names, v.name)
	}
	return strings.Join(names, ", ")
}

func variantByName(name string) (variant, bool) {
	for _, v := range variants {
		if v.name == name {
			return v, true
		}
	}
	return variant{}, false
}

// chosen returns the variants to run: the references none and guc always,
// then the selected ones (all by default).
func (o options) chosen() []variant {
	if len(o.only) == 0 {
		return variants
	}
	var out []variant
	for _, v := range variants {
		if v.name == "none" || v.name == "guc" || slices.Contains(o.only, v.name) {
			out = append(out, v)
		}
	}
	return out
}

// run sets everything up, runs the benchmark, reports and tears down.
func run(ctx context.Context, o options) (err error) {
	vs := o.chosen()
	benchkit.Logf("starting PostgreSQL and loading %d tables of %d rows", len(vs), o.rows+otherRows)
	pg, err := startPostgres(ctx, o.rows, vs)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, pg.Close()) }()
	for _, v := range vs {
		if err := checkIsolation(ctx, pg, v, o.rows); err != nil {
			return err
		}
	}
	load := loadAvg()
	var loops map[string][]*loopResult
	if o.loop > 0 {
		if loops, err = runLoops(ctx, o, pg, vs); err != nil {
			return err
		}
	}
	results, err := runMatrix(ctx, o, pg, vs)
	if err != nil {
		return err
	}
	var sw []switchResult
	if o.switchOn {
		if sw, err = runSwitch(ctx, o, pg, vs); err != nil {
			return err
		}
	}
	rep := newReport(o, vs, results, loops, sw, load, loadAvg())
	return rep.Write(o.Out)
}
