package fleet_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/tenantguard/tenantguard/controlplane/budget"
	"github.com/tenantguard/tenantguard/internal/fixture/pgcluster"
	"github.com/tenantguard/tenantguard/policy"
	"github.com/tenantguard/tenantguard/policy/policypb"
	"github.com/tenantguard/tenantguard/policy/xdsclient"
	proxypg "github.com/tenantguard/tenantguard/proxy/pg"
	"github.com/tenantguard/tenantguard/test/fleet"
	"github.com/tenantguard/tenantguard/test/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }

const (
	fleetRole     = "tg_fleet"
	fleetPassword = "fleet-pw"
	acmeSecret    = "acme-secret-1"
	cluster       = "main"
	budgetConns   = 24 // the cluster's max_server_connections
	poolSize      = 8  // each sidecar's pool.size, which the budget's share replaces
)

var setupOnce sync.Once

// fleetDB creates the role the sidecars log in as (so pg_stat_activity
// counts exactly their connections) and its database.
func fleetDB(t *testing.T, pg *pgcluster.Cluster) {
	t.Helper()
	setupOnce.Do(func() {
		for _, q := range []string{
			"CREATE ROLE " + fleetRole + " LOGIN PASSWORD '" + fleetPassword + "' NOSUPERUSER",
			"CREATE DATABASE fleet OWNER " + fleetRole,
		} {
			if err := pg.Exec(context.Background(), "postgres", q); err != nil {
				t.Fatalf("setup %q: %v", q, err)
			}
		}
	})
}

func fleetSpec() policy.Spec {
	return policy.Spec{
		Clusters: []policy.ClusterSpec{{Name: cluster, Default: true,
			Postgres: &policy.PostgresCluster{MaxServerConnections: budgetConns, MinPerSidecar: 1}}},
		Tenants: []policy.TenantSpec{{ID: "acme", Passwords: []string{acmeSecret}}},
	}
}

// serverConns counts the sidecars' server connections as PostgreSQL sees
// them.
func serverConns(ctx context.Context, admin *pgx.Conn) (int, error) {
	var n int
	err := admin.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE usename = $1", fleetRole).Scan(&n)
	return n, err
}

// client runs one-statement transactions through a sidecar until stopped,
// counting them; any error fails the test.
type client struct {
	done  atomic.Int64
	stop  context.CancelFunc
	ended chan struct{}
}

func startClient(t *testing.T, sc *fleet.Sidecar, errs chan<- error) *client {
	ctx, cancel := context.WithCancel(context.Background())
	c := &client{stop: cancel, ended: make(chan struct{})}
	go func() {
		defer close(c.ended)
		url := fmt.Sprintf("postgres://acme:%s@%s/fleet?sslmode=disable", acmeSecret, sc.Addr)
		cctx, ccancel := context.WithTimeout(ctx, 30*time.Second)
		conn, err := pgx.Connect(cctx, url)
		ccancel()
		if err != nil {
			errs <- fmt.Errorf("%s: connect: %w", sc.ID, err)
			return
		}
		defer conn.Close(context.Background())
		for ctx.Err() == nil {
			_, err := conn.Exec(ctx, "SELECT pg_sleep(0.002)", pgx.QueryExecModeSimpleProtocol)
			if err != nil {
				if ctx.Err() == nil {
					errs <- fmt.Errorf("%s: %w", sc.ID, err)
				}
				return
			}
			c.done.Add(1)
		}
	}()
	t.Cleanup(func() { c.stop(); <-c.ended })
	return c
}

// TestBudgetFleet: 20 simulated sidecars (real Postgres listeners with
// their own pools; without the budget their 40 clients would hold 40
// server connections) share a budget of 24 connections to one real
// PostgreSQL. While clients load every sidecar, pg_stat_activity never
// shows more than 24 of their connections. Sidecars joining get a share
// and are served within seconds; the shares of sidecars leaving go to the
// others; with the control plane gone, every sidecar keeps its last share
// and keeps serving.
func TestBudgetFleet(t *testing.T) {
	pg := harness.Postgres(t)
	fleetDB(t, pg)
	ignore := goleak.IgnoreCurrent()
	defer goleak.VerifyNone(t, ignore,
		goleak.IgnoreAnyFunction("github.com/tenantguard/tenantguard/internal/fixture/childproc.(*Process).wait"))

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	spec := fleetSpec()
	snap, err := policy.Compile(spec)
	if err != nil {
		t.Fatal(err)
	}
	pushed := policypb.FromSpec(spec)
	cp, err := fleet.StartControlPlane(budget.Options{ReclaimAfter: time.Second, Interval: 100 * time.Millisecond}, pushed)
	if err != nil {
		t.Fatal(err)
	}
	defer cp.Stop()

	// The watcher: PostgreSQL's own count of the fleet's connections,
	// polled as fast as it answers until the test ends.
	admin, err := pgx.Connect(ctx, pg.AdminURL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	var maxSeen, samples atomic.Int64
	watchCtx, stopWatch := context.WithCancel(ctx)
	watchErr := make(chan error, 1)
	go func() {
		for watchCtx.Err() == nil {
			n, err := serverConns(watchCtx, admin)
			if err != nil {
				if watchCtx.Err() == nil {
					watchErr <- err
				}
				break
			}
			samples.Add(1)
			if int64(n) > maxSeen.Load() {
				maxSeen.Store(int64(n))
			}
			if n > budgetConns {
				watchErr <- fmt.Errorf("pg_stat_activity: %d connections of the fleet, budget %d", n, budgetConns)
				break
			}
		}
		close(watchErr)
	}()
	defer func() {
		stopWatch()
		for err := range watchErr {
			t.Error(err)
		}
		t.Logf("pg_stat_activity: at most %d of the fleet's connections over %d samples", maxSeen.Load(), samples.Load())
	}()

	errs := make(chan error, 100)
	checkErrs := func() {
		t.Helper()
		select {
		case err := <-errs:
			t.Fatalf("client: %v", err)
		case err, ok := <-watchErr:
			if ok {
				t.Fatal(err)
			}
		default:
		}
	}
	sidecars := map[string]*fleet.Sidecar{}
	clients := map[string][]*client{}
	defer func() {
		for id, cs := range clients {
			for _, c := range cs {
				c.stop()
				<-c.ended
			}
			if err := sidecars[id].Leave(context.Background()); err != nil {
				t.Error(err)
			}
		}
	}()
	start := func(i int) *fleet.Sidecar {
		t.Helper()
		sc, err := fleet.StartSidecar(fleet.SidecarOptions{
			ID: fmt.Sprintf("sidecar-%02d", i), ControlPlane: cp.Addr, Policy: snap,
			ReportInterval: 100 * time.Millisecond,
			Backoff:        xdsclient.Backoff{Initial: 50 * time.Millisecond, Max: 200 * time.Millisecond},
			Config: proxypg.Config{
				Databases:       []proxypg.Database{{Name: "fleet", URL: fmt.Sprintf("postgres://%s:%s@127.0.0.1:%d/fleet?sslmode=disable", fleetRole, fleetPassword, pg.Port())}},
				PoolSize:        poolSize,
				PoolWaitTimeout: 30 * time.Second,
				StartupTimeout:  30 * time.Second,
				ConnectTimeout:  10 * time.Second,
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		sidecars[sc.ID] = sc
		return sc
	}
	load := func(sc *fleet.Sidecar) {
		clients[sc.ID] = []*client{startClient(t, sc, errs), startClient(t, sc, errs)}
	}
	// progress waits until every client of the named sidecars has run n
	// more transactions.
	progress := func(what string, n int64, ids ...string) {
		t.Helper()
		want := map[*client]int64{}
		for _, id := range ids {
			for _, c := range clients[id] {
				want[c] = c.done.Load() + n
			}
		}
		harness.Eventually(t, time.Minute, func() error {
			checkErrs()
			for c, w := range want {
				if c.done.Load() < w {
					return fmt.Errorf("%s: a client has run %d of %d transactions", what, c.done.Load(), w)
				}
			}
			return nil
		})
	}
	shared := func(what string, ids ...string) {
		t.Helper()
		harness.Eventually(t, 30*time.Second, func() error {
			checkErrs()
			for _, id := range ids {
				if l := sidecars[id].Load(cluster); l.Share < 1 {
					return fmt.Errorf("%s: %s has share %d", what, id, l.Share)
				}
			}
			return nil
		})
	}
	ids := func(from, to int) []string {
		var out []string
		for i := from; i < to; i++ {
			out = append(out, fmt.Sprintf("sidecar-%02d", i))
		}
		return out
	}

	// 14 sidecars, loaded.
	for i := range 14 {
		start(i)
	}
	first := ids(0, 14)
	shared("first 14", first...)
	for _, id := range first {
		load(sidecars[id])
	}
	progress("first 14 loaded", 20, first...)

	// 6 join: 20 in all; each gets a share and serves its clients.
	joined := time.Now()
	for i := 14; i < 20; i++ {
		start(i)
	}
	late := ids(14, 20)
	shared("6 joining", late...)
	t.Logf("6 sidecars joining 14 loaded ones had a share after %v", time.Since(joined).Round(time.Millisecond))
	for _, id := range late {
		load(sidecars[id])
	}
	all := ids(0, 20)
	progress("20 loaded", 20, all...)
	if sum, n := cp.Granted(cluster); sum > budgetConns || n != 20 {
		t.Fatalf("20 sidecars: %d granted to %d sidecars, budget %d", sum, n, budgetConns)
	}

	// 6 leave: the 14 others get the whole budget back.
	left := time.Now()
	for _, id := range ids(0, 6) {
		for _, c := range clients[id] {
			c.stop()
			<-c.ended
		}
		delete(clients, id)
		if err := sidecars[id].Leave(ctx); err != nil {
			t.Fatal(err)
		}
	}
	stay := ids(6, 20)
	harness.Eventually(t, 30*time.Second, func() error {
		checkErrs()
		inForce := 0
		for _, id := range stay {
			inForce += max(sidecars[id].Load(cluster).Share, 0)
		}
		if sum, n := cp.Granted(cluster); n != len(stay) || sum != budgetConns || inForce != budgetConns {
			return fmt.Errorf("after 6 left: %d granted to %d sidecars, %d in force, want %d to %d", sum, n, inForce, budgetConns, len(stay))
		}
		return nil
	})
	t.Logf("the shares of 6 sidecars leaving were back in force at the 14 others after %v", time.Since(left).Round(time.Millisecond))
	progress("14 after 6 left", 20, stay...)

	// The control plane goes: every share in force stays, and the load is
	// still served.
	// (Shares in flight when it stopped are applied within the first
	// transactions: the comparison starts after them.)
	cp.Stop()
	progress("control plane gone", 20, stay...)
	before, inForce := map[string]int{}, 0
	for _, id := range stay {
		before[id] = sidecars[id].Load(cluster).Share
		inForce += before[id]
		if before[id] < 1 {
			t.Errorf("%s: share %d with the control plane gone", id, before[id])
		}
	}
	if inForce > budgetConns {
		t.Errorf("shares in force with the control plane gone: %d, budget %d", inForce, budgetConns)
	}
	progress("control plane gone", 50, stay...)
	for _, id := range stay {
		if got := sidecars[id].Load(cluster).Share; got != before[id] {
			t.Errorf("%s: share %d with the control plane gone, was %d", id, got, before[id])
		}
	}
	checkErrs()
	if maxSeen.Load() < budgetConns/2 {
		t.Errorf("the fleet held at most %d connections under load: the check saw too little to mean anything", maxSeen.Load())
	}
}
