package pg_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tenantguard/tenantguard/internal/fixture/pgcluster"
	"github.com/tenantguard/tenantguard/policy"
	proxypg "github.com/tenantguard/tenantguard/proxy/pg"
	"github.com/tenantguard/tenantguard/test/harness"
)

var secondOnce sync.Once

// secondCluster is a second real PostgreSQL with the same schema as the
// shared one (the app database, role tg_app, table items), holding no
// rows: the other cluster tenants are placed on. It lives for the package.
func secondCluster(t *testing.T) *pgcluster.Cluster {
	t.Helper()
	upstream(t)
	second := harness.PostgresNamed(t, "b")
	secondOnce.Do(func() {
		setupDatabase(t, second)
		if err := second.Exec(context.Background(), "app", "DELETE FROM items"); err != nil {
			t.Fatal(err)
		}
	})
	return second
}

// placementSpec places acme on the configured upstream and globex on
// cluster "b" (the second cluster, by host list) unless moved says so.
func placementSpec(b *pgcluster.Cluster, globexOn string) policy.Spec {
	return policy.Spec{
		Clusters: []policy.ClusterSpec{
			{Name: "b", Postgres: &policy.PostgresCluster{Hosts: []string{fmt.Sprintf("127.0.0.1:%d", b.Port())}}},
		},
		Tenants: []policy.TenantSpec{
			{ID: "acme", Passwords: []string{acmeSecret}},
			{ID: "globex", Passwords: []string{globexSecret}, Placement: policy.Placement{Postgres: globexOn}},
		},
	}
}

// serverPort is the port of the PostgreSQL server running the client's
// statement: which cluster it reached.
func serverPort(t *testing.T, ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}) int {
	t.Helper()
	var port string
	if err := q.QueryRow(ctx, "SELECT current_setting('port')").Scan(&port); err != nil {
		t.Fatalf("server port: %v", err)
	}
	n, _ := strconv.Atoi(port)
	return n
}

// countRows counts tenant's rows in items directly on a cluster.
func countRows(t *testing.T, pg *pgcluster.Cluster, tenant string) int {
	t.Helper()
	ctx := ctxT(t, 10*time.Second)
	c, err := pgx.Connect(ctx, pg.AdminURL("app"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var n int
	if err := c.QueryRow(ctx, "SELECT count(*) FROM items WHERE tenant = $1", tenant).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestPlacementRoutesAndMoves: each tenant's statements reach only its
// cluster, so its rows live only there and the other cluster's rows are
// out of its reach; moving globex sends its next transaction, not the one
// in flight, to the new cluster, while acme's transactions keep
// succeeding throughout.
func TestPlacementRoutesAndMoves(t *testing.T) {
	a := upstream(t)
	b := secondCluster(t)
	p := startProxyWith(t, a, placementSpec(b, "b"), func(c *proxypg.Config) { c.PoolRetireAfter = 100 * time.Millisecond })
	ctx := ctxT(t, 60*time.Second)

	acme := p.connect(t, p.acmeURL())
	globex := p.connect(t, p.url("globex", globexSecret))
	if got := serverPort(t, ctx, acme); got != a.Port() {
		t.Fatalf("acme reached port %d, want cluster a's %d", got, a.Port())
	}
	if got := serverPort(t, ctx, globex); got != b.Port() {
		t.Fatalf("globex reached port %d, want cluster b's %d", got, b.Port())
	}
	marker := fmt.Sprintf("placed-%d", time.Now().UnixNano())
	if _, err := globex.Exec(ctx, "INSERT INTO items (tenant, name) VALUES ('globex', $1)", marker); err != nil {
		t.Fatal(err)
	}
	if n := countRows(t, b, "globex"); n != 1 {
		t.Fatalf("cluster b holds %d globex rows, want 1", n)
	}
	if n := countRows(t, a, "globex"); n != 0 {
		t.Fatalf("cluster a holds %d globex rows, want 0: globex's write reached the wrong cluster", n)
	}
	// acme, on a, cannot see b's rows by any query: they are not on its cluster.
	var seen int
	if err := acme.QueryRow(ctx, "SELECT count(*) FROM items WHERE name = $1", marker).Scan(&seen); err != nil || seen != 0 {
		t.Fatalf("acme sees %d of globex's rows on b (err %v)", seen, err)
	}
	// Nor can a client pick the cluster: only configured database names exist.
	if _, err := pgx.Connect(ctx, strings.Replace(p.acmeURL(), "/app?", "/b?", 1)); !isCode(err, "3D000") {
		t.Fatalf("naming the cluster as database: %v, want 3D000", err)
	}

	// acme works without pause while globex moves.
	var acmeTx, acmeErr atomic.Int64
	var firstErr atomic.Pointer[error]
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			var port int
			err := acme.QueryRow(ctx, "SELECT current_setting('port')::int").Scan(&port)
			if err == nil && port != a.Port() {
				err = fmt.Errorf("acme's transaction reached port %d", port)
			}
			if err != nil {
				acmeErr.Add(1)
				firstErr.CompareAndSwap(nil, &err)
				return
			}
			acmeTx.Add(1)
		}
	}()

	// The data is copied first (the operator's job), then placement changes
	// while globex is inside a transaction on b.
	if err := a.Exec(ctx, "app", "INSERT INTO items (tenant, name) VALUES ('globex', '"+marker+"')"); err != nil {
		t.Fatal(err)
	}
	tx, err := globex.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := serverPort(t, ctx, tx); got != b.Port() {
		t.Fatalf("globex's transaction began on %d", got)
	}
	p.setPolicy(t, placementSpec(b, ""))
	if got := serverPort(t, ctx, tx); got != b.Port() {
		t.Fatalf("globex's transaction in flight moved to %d: a transaction spanned two clusters", got)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if got := serverPort(t, ctx, globex); got != a.Port() {
		t.Fatalf("globex's next transaction reached %d, want the new cluster a (%d)", got, a.Port())
	}
	if _, err := globex.Exec(ctx, "INSERT INTO items (tenant, name) VALUES ('globex', $1)", marker+"-after"); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 5*time.Second, func() error {
		if acmeTx.Load() < 20 && acmeErr.Load() == 0 {
			return errors.New("acme has not run enough transactions yet")
		}
		return nil
	})
	close(stop)
	wg.Wait()
	if e := firstErr.Load(); e != nil {
		t.Fatalf("acme failed during globex's move: %v", *e)
	}
	if n := countRows(t, b, "globex"); n != 1 {
		t.Fatalf("after the move cluster b got globex rows: %d", n)
	}
	if p.metric(t, "tenantguard_pg_client_moves_total", map[string]string{"outcome": "moved"}) != 1 {
		t.Fatal("the move was not counted")
	}
	// No client is routed to b any more: its pool retires, its connections close.
	harness.Eventually(t, 10*time.Second, func() error {
		if n := p.metric(t, "tenantguard_pg_cluster_pools", map[string]string{"cluster": "b"}); n != 0 {
			return fmt.Errorf("%v pools of b open", n)
		}
		if n := backends(t, b); n != 0 {
			return fmt.Errorf("%d server connections to b", n)
		}
		return nil
	})
	if p.metric(t, "tenantguard_pg_pools_retired_total", map[string]string{"cluster": "b"}) != 1 {
		t.Fatal("the retirement was not counted")
	}
	// Move back: a pool of b is opened again, lazily.
	p.setPolicy(t, placementSpec(b, "b"))
	if got := serverPort(t, ctx, globex); got != b.Port() {
		t.Fatalf("globex moved back reached %d", got)
	}
}

// TestPlacementSessionPoolingEndsAtBoundary: a session-pooled client holds
// its session state on one server connection, so a move ends it (57P01)
// at its transaction boundary; its transaction in flight completes on the
// old cluster, and a new connection lands on the new one.
func TestPlacementSessionPoolingEndsAtBoundary(t *testing.T) {
	a := upstream(t)
	b := secondCluster(t)
	p := startProxyWith(t, a, placementSpec(b, "b"), func(c *proxypg.Config) { c.PoolMode = proxypg.PoolSession })
	ctx := ctxT(t, 30*time.Second)
	globex := p.connect(t, p.url("globex", globexSecret))
	tx, err := globex.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := serverPort(t, ctx, tx); got != b.Port() {
		t.Fatalf("globex began on %d", got)
	}
	p.setPolicy(t, placementSpec(b, ""))
	if got := serverPort(t, ctx, tx); got != b.Port() {
		t.Fatalf("the transaction in flight moved to %d", got)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("the transaction in flight could not finish: %v", err)
	}
	_, err = globex.Exec(ctx, "SELECT 1")
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "57P01" || !strings.Contains(pe.Message, "moved") {
		t.Fatalf("after the boundary: %v, want FATAL 57P01 saying the tenant moved", err)
	}
	again := p.connect(t, p.url("globex", globexSecret))
	if got := serverPort(t, ctx, again); got != a.Port() {
		t.Fatalf("a new connection reached %d, want the new cluster", got)
	}
}

// TestPlacementUnknownCredentials: a cluster naming credentials this
// sidecar lacks is refused by CheckPlacement, and a login routed there
// anyway gets a clear error, not another cluster.
func TestPlacementUnknownCredentials(t *testing.T) {
	a := upstream(t)
	spec := policy.Spec{
		Clusters: []policy.ClusterSpec{{Name: "c", Postgres: &policy.PostgresCluster{Hosts: []string{"127.0.0.1:1"}, Credentials: "nowhere"}}},
		Tenants: []policy.TenantSpec{
			{ID: "acme", Passwords: []string{acmeSecret}},
			{ID: "globex", Passwords: []string{globexSecret}, Placement: policy.Placement{Postgres: "c"}},
		},
	}
	p := startProxyWith(t, a, spec, nil)
	if err := p.srv.CheckPlacement(mustCompile(t, spec)); err == nil || !strings.Contains(err.Error(), `"nowhere"`) {
		t.Fatalf("CheckPlacement = %v", err)
	}
	ctx := ctxT(t, 10*time.Second)
	_, err := pgx.Connect(ctx, p.url("globex", globexSecret))
	if !isCode(err, "08006") {
		t.Fatalf("globex's login: %v, want 08006", err)
	}
	acme := p.connect(t, p.acmeURL())
	if got := serverPort(t, ctx, acme); got != a.Port() {
		t.Fatalf("acme reached %d", got)
	}
}

// backends counts tg_app's server connections on a cluster.
func backends(t *testing.T, pg *pgcluster.Cluster) int {
	t.Helper()
	ctx := ctxT(t, 10*time.Second)
	c, err := pgx.Connect(ctx, pg.AdminURL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var n int
	if err := c.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND backend_type = 'client backend'", appRole).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func isCode(err error, code string) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == code
}
