// Command budget measures how fast the fleet's connection budget
// converges when many sidecars join at once: a control plane's Budget
// service (controlplane/budget, past its start-up hold, default intervals)
// and, in each round, N simulated sidecars (test/fleet: real Postgres
// listeners with budgets on and their load reporters, in this process)
// started together. It reports the time until every sidecar has a first
// share in force, and until the split has converged: every sidecar's
// share in force is its fair part of the budget (budget/N, give or take
// one) and they add up to the budget. By default 20 incumbent sidecars
// already share the whole budget, so the newcomers' shares wait for the
// incumbents' shrinks to be reported. The sidecars are idle (no client):
// what is measured is the allocator and the report round trips, not
// PostgreSQL. See bench/README.md.
//
//	go run ./bench/budget -sidecars 20 -budget 100 -rounds 5
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/tenantguard/tenantguard/bench/internal/benchkit"
	"github.com/tenantguard/tenantguard/controlplane/budget"
	"github.com/tenantguard/tenantguard/policy"
	"github.com/tenantguard/tenantguard/policy/policypb"
	"github.com/tenantguard/tenantguard/policy/xdsclient"
	proxypg "github.com/tenantguard/tenantguard/proxy/pg"
	"github.com/tenantguard/tenantguard/test/fleet"
)

const cluster = "main"

// roundTimeout bounds one round's convergence.
const roundTimeout = time.Minute

type options struct {
	sidecars, incumbents, budget, rounds int
	out                                  string
}

func main() { benchkit.Main("budgetbench", parseFlags, run) }

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("budgetbench", flag.ContinueOnError)
	fs.IntVar(&o.sidecars, "sidecars", 20, "sidecars joining at once in each round")
	fs.IntVar(&o.incumbents, "incumbents", 20, "sidecars already running, sharing the whole budget, when the others join")
	fs.IntVar(&o.budget, "budget", 100, "the cluster's max_server_connections")
	fs.IntVar(&o.rounds, "rounds", 5, "rounds; the median is reported")
	fs.StringVar(&o.out, "out", "", "also write the results as markdown to this file")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.sidecars < 1 || o.rounds < 1 || o.incumbents < 0 || o.budget < o.sidecars+o.incumbents {
		return o, errors.New("-sidecars and -rounds must be at least 1, -budget at least -sidecars plus -incumbents")
	}
	return o, nil
}

type roundResult struct {
	firstShare time.Duration // the last sidecar's first share in force
	converged  time.Duration // the fair split in force everywhere
}

func run(ctx context.Context, o options) error {
	spec := policy.Spec{
		Clusters: []policy.ClusterSpec{{Name: cluster, Default: true,
			Postgres: &policy.PostgresCluster{MaxServerConnections: o.budget, MinPerSidecar: 1}}},
		Tenants: []policy.TenantSpec{{ID: "acme", Passwords: []string{"unused-password"}}},
	}
	snap, err := policy.Compile(spec)
	if err != nil {
		return err
	}
	cp, err := fleet.StartControlPlane(budget.Options{}, policypb.FromSpec(spec))
	if err != nil {
		return err
	}
	defer cp.Stop()
	// A control plane that has just started grants no growth while the
	// fleet reconnects (budget.Options.ReclaimAfter): measure a running one.
	benchkit.Logf("waiting %v for the control plane's start-up hold", budget.DefaultReclaimAfter)
	select {
	case <-time.After(budget.DefaultReclaimAfter):
	case <-ctx.Done():
		return ctx.Err()
	}
	var incumbents []*fleet.Sidecar
	defer func() {
		for _, sc := range incumbents {
			_ = sc.Leave(context.Background())
		}
	}()
	for i := range o.incumbents {
		sc, err := fleet.StartSidecar(sidecarOptions(o, cp, snap, fmt.Sprintf("incumbent%03d", i)))
		if err != nil {
			return err
		}
		incumbents = append(incumbents, sc)
	}
	if err := waitFor(ctx, func() bool { return converged(incumbents, o.budget) }); err != nil {
		return fmt.Errorf("incumbents: %w", err)
	}
	var results []roundResult
	for r := range o.rounds {
		res, err := round(ctx, o, cp, snap, incumbents, r)
		if err != nil {
			return fmt.Errorf("round %d: %w", r+1, err)
		}
		benchkit.Logf("round %d: first shares after %v, converged after %v", r+1, res.firstShare, res.converged)
		results = append(results, res)
	}
	return report(o, results).Write(o.out)
}

// round starts o.sidecars sidecars together, times their convergence,
// then stops them and waits until the control plane has dropped them.
func round(ctx context.Context, o options, cp *fleet.ControlPlane, snap *policy.Snapshot, incumbents []*fleet.Sidecar, r int) (res roundResult, err error) {
	scs := make([]*fleet.Sidecar, o.sidecars)
	errs := make([]error, o.sidecars)
	defer func() {
		for _, sc := range scs {
			if sc != nil {
				if lerr := sc.Leave(context.Background()); lerr != nil && err == nil {
					err = lerr
				}
			}
		}
		if err == nil {
			err = waitFor(ctx, func() bool {
				_, n := cp.Granted(cluster)
				return n == len(incumbents) && converged(incumbents, o.budget)
			})
		}
	}()
	start := time.Now()
	var wg sync.WaitGroup
	for i := range scs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			scs[i], errs[i] = fleet.StartSidecar(sidecarOptions(o, cp, snap, fmt.Sprintf("round%d-sidecar%03d", r, i)))
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return res, err
	}
	all := append(slices.Clone(incumbents), scs...)
	err = waitFor(ctx, func() bool {
		if res.firstShare == 0 && !slices.ContainsFunc(scs, func(sc *fleet.Sidecar) bool { return sc.Load(cluster).Share < 1 }) {
			res.firstShare = time.Since(start)
		}
		return converged(all, o.budget)
	})
	res.converged = time.Since(start)
	return res, err
}

func sidecarOptions(o options, cp *fleet.ControlPlane, snap *policy.Snapshot, id string) fleet.SidecarOptions {
	return fleet.SidecarOptions{
		ID: id, ControlPlane: cp.Addr, Policy: snap,
		// Never dialled: the sidecars have no client.
		Config: proxypg.Config{Databases: []proxypg.Database{{Name: "app", URL: "postgres://app@127.0.0.1:1/app?sslmode=disable"}}, PoolSize: o.budget},
	}
}

// converged reports whether every sidecar's share in force is its fair
// part of total (total/N, give or take one) and they add up to total.
func converged(scs []*fleet.Sidecar, total int) bool {
	fair, sum := total/len(scs), 0
	for _, sc := range scs {
		s := sc.Load(cluster).Share
		if s < fair || s > fair+1 {
			return false
		}
		sum += s
	}
	return sum == total
}

// waitFor polls cond every millisecond until it holds or roundTimeout.
func waitFor(ctx context.Context, cond func() bool) error {
	deadline := time.Now().Add(roundTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			return errors.New("no convergence within " + roundTimeout.String())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
	return nil
}

func report(o options, rs []roundResult) *benchkit.Report {
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	var first, conv []float64
	t := benchkit.Table{Left: 1, Header: []string{"round", "all have a share (ms)", "fair split in force (ms)"}}
	for i, r := range rs {
		first, conv = append(first, ms(r.firstShare)), append(conv, ms(r.converged))
		t.Rows = append(t.Rows, []string{fmt.Sprint(i + 1), benchkit.Num(ms(r.firstShare), "%.0f"), benchkit.Num(ms(r.converged), "%.0f")})
	}
	t.Rows = append(t.Rows, []string{"median", benchkit.Num(benchkit.Median(first), "%.0f"), benchkit.Num(benchkit.Median(conv), "%.0f")})
	return &benchkit.Report{
		Setup: fmt.Sprintf("%d idle sidecars join a running control plane at once, next to %d that share the whole budget of %d connections (min 1 each); default report interval (%v) and recompute interval (%v); %d rounds.",
			o.sidecars, o.incumbents, o.budget, xdsclient.DefaultReportInterval, budget.DefaultInterval, o.rounds),
		Tables: []benchkit.Table{t},
		Notes: []string{"Converged: every sidecar's share in force (the newcomers' and the incumbents') is budget/N (give or take one) and they add up to the budget; " +
			"the newcomers' shares grow only as the incumbents report their shrinks done. " +
			"Each round's newcomers leave before the next, and the incumbents get the budget back first."},
	}
}
