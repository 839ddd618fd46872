package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantguard/tenantguard/internal/fixture/pgcluster"
	"github.com/tenantguard/tenantguard/test/harness"
)

const (
	placeRole     = "place_app"
	placePassword = "place_pw"
	placeAcme     = "acme-secret-1"
	placeGlobex   = "globex-secret-1"
)

// failedTx finds pgbench's count of failed transactions (PostgreSQL 15+).
var failedTx = regexp.MustCompile(`number of failed transactions: (\d+)`)

// serverPortOf is the port of the PostgreSQL server that runs q's
// statements: which cluster a tenant's transaction reached.
func serverPortOf(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}) (int, error) {
	var port string
	if err := q.QueryRow(ctx, "SELECT current_setting('port')").Scan(&port); err != nil {
		return 0, err
	}
	return strconv.Atoi(port)
}

// rowsOn counts tenant's rows of orders directly on a cluster, as its
// superuser (no row-level security).
func rowsOn(t *testing.T, ctx context.Context, pg *pgcluster.Cluster, tenant string) int {
	t.Helper()
	c, err := pgx.Connect(ctx, pg.AdminURL("shop"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var n int
	if err := c.QueryRow(ctx, "SELECT count(*) FROM orders WHERE tenant_id = $1", tenant).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestPlacementEndToEnd is the placement's "done means": the control
// plane and a sidecar as processes, two real PostgreSQL clusters, acme
// placed on "a" and globex on "b". pg bootstrap and pg check cover both
// clusters from the policy; each tenant's rows live only on its cluster.
// Then, while globex runs pgbench on "b", the test copies acme's rows to
// "b" and moves acme there with PUT /v1/tenants/acme/placement: acme's
// open transaction finishes on "a", its next ones run on "b", and
// globex's pgbench sees no error.
func TestPlacementEndToEnd(t *testing.T) {
	if _, err := exec.LookPath("pgbench"); err != nil {
		t.Skip("pgbench not installed")
	}
	a, b := harness.Postgres(t), harness.PostgresNamed(t, "placement-b")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	for _, pg := range []*pgcluster.Cluster{a, b} {
		for _, q := range []string{
			"CREATE ROLE " + placeRole + " LOGIN PASSWORD '" + placePassword + "'",
			"CREATE DATABASE shop",
		} {
			if err := pg.Exec(ctx, "postgres", q); err != nil && !strings.Contains(err.Error(), "42710") && !strings.Contains(err.Error(), "42P04") {
				t.Fatal(err)
			}
		}
		for _, q := range []string{
			"DROP TABLE IF EXISTS orders",
			"CREATE TABLE orders (id bigserial PRIMARY KEY, tenant_id text NOT NULL, item text NOT NULL)",
			"GRANT SELECT, INSERT, UPDATE, DELETE ON orders TO " + placeRole,
			"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO " + placeRole,
		} {
			if err := pg.Exec(ctx, "shop", q); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := a.Exec(ctx, "postgres", "CREATE DATABASE place_cp"); err != nil && !strings.Contains(err.Error(), "42P04") {
		t.Fatal(err)
	}
	if err := a.Exec(ctx, "place_cp", "DROP SCHEMA IF EXISTS tenantguard_cp CASCADE"); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	seed := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(seed, []byte(fmt.Sprintf(`name: default
clusters:
  - name: a
    default: true
    postgres: {hosts: ["127.0.0.1:%d"]}
  - name: b
    postgres: {hosts: ["127.0.0.1:%d"]}
tables:
  - name: public.orders
    tenant_column: tenant_id
tenants:
  - id: acme
    credentials: [%q]
    placement: {postgres: a}
  - id: globex
    credentials: [%q]
    placement: {postgres: b}
`, a.Port(), b.Port(), placeAcme, placeGlobex)), 0o600); err != nil {
		t.Fatal(err)
	}
	xdsAddr, cpAdmin := freeAddr(t), freeAddr(t)
	cpCfg := filepath.Join(dir, "controlplane.yaml")
	if err := os.WriteFile(cpCfg, []byte(fmt.Sprintf("listen:\n  xds: %q\n  admin: %q\ndatabase: %q\nadmin_token: %s\nseed: policy.yaml\n",
		xdsAddr, cpAdmin, a.AdminURL("place_cp"), e2eAdminToken)), 0o600); err != nil {
		t.Fatal(err)
	}
	listen, admin := freeAddr(t), freeAddr(t)
	scCfg := filepath.Join(dir, "sidecar.yaml")
	if err := os.WriteFile(scCfg, []byte(fmt.Sprintf(`listen:
  postgres: %q
  admin: %q
postgres:
  databases:
    - name: shop
      url: "postgres://%s:%s@127.0.0.1:%d/shop?sslmode=disable"
isolation:
  enabled: true
  binding_key: 00112233445566778899aabbccddeeff
controlplane:
  address: %q
  node_id: placement-sidecar
drain_timeout: 5s
`, listen, admin, placeRole, placePassword, a.Port(), xdsAddr)), 0o600); err != nil {
		t.Fatal(err)
	}

	// pg bootstrap and pg check reach both clusters through the policy.
	out := string(run(t, nil, nil, "pg", "bootstrap", "--config", scCfg, "--policy", seed, "--admin-url", a.AdminURL("postgres")))
	for _, want := range []string{
		fmt.Sprintf("(127.0.0.1:%d): bootstrapped database shop", a.Port()),
		fmt.Sprintf("cluster b (127.0.0.1:%d): bootstrapped database shop", b.Port()),
	} {
		if !strings.Contains(out, want) {
			t.Fatalf("pg bootstrap output lacks %q:\n%s", want, out)
		}
	}
	out = string(run(t, nil, nil, "pg", "check", "--config", scCfg, "--policy", seed))
	if !strings.Contains(out, "b/shop: ok") {
		t.Fatalf("pg check output lacks cluster b:\n%s", out)
	}

	cp := start(t, "controlplane", "--config", cpCfg)
	sc := start(t, "sidecar", "--config", scCfg)
	for name, p := range map[string]struct {
		proc *process
		addr string
	}{"controlplane": {cp, cpAdmin}, "sidecar": {sc, admin}} {
		harness.Eventually(t, 60*time.Second, func() error {
			if err := p.proc.exited(); err != nil {
				t.Fatalf("%s exited: %v\n%s", name, err, p.proc.output())
			}
			code, _, err := httpGet(ctx, "http://"+p.addr+"/readyz")
			if err != nil || code != 200 {
				return fmt.Errorf("%s readyz %d %v", name, code, err)
			}
			return nil
		})
	}
	tenantURL := func(tenant, secret string) string {
		return fmt.Sprintf("postgres://%s:%s@%s/shop?sslmode=disable", tenant, secret, listen)
	}
	connect := func(tenant, secret string) *pgx.Conn {
		t.Helper()
		c, err := pgx.Connect(ctx, tenantURL(tenant, secret))
		if err != nil {
			t.Fatalf("%s: connect through the sidecar: %v", tenant, err)
		}
		t.Cleanup(func() { c.Close(context.Background()) })
		return c
	}

	// Each tenant's rows live only on its cluster.
	acme, globex := connect("acme", placeAcme), connect("globex", placeGlobex)
	for _, tc := range []struct {
		tenant string
		c      *pgx.Conn
		home   *pgcluster.Cluster
		other  *pgcluster.Cluster
	}{{"acme", acme, a, b}, {"globex", globex, b, a}} {
		for i := range 3 {
			if _, err := tc.c.Exec(ctx, "INSERT INTO orders (item) VALUES ($1)", fmt.Sprintf("%s-%d", tc.tenant, i)); err != nil {
				t.Fatalf("%s: insert: %v", tc.tenant, err)
			}
		}
		if port, err := serverPortOf(ctx, tc.c); err != nil || port != tc.home.Port() {
			t.Fatalf("%s runs on port %d (%v), want its cluster's %d", tc.tenant, port, err, tc.home.Port())
		}
		if n := rowsOn(t, ctx, tc.home, tc.tenant); n != 3 {
			t.Errorf("%s: %d rows on its cluster, want 3", tc.tenant, n)
		}
		if n := rowsOn(t, ctx, tc.other, tc.tenant); n != 0 {
			t.Errorf("%s: %d rows on the other cluster, want none", tc.tenant, n)
		}
		var seen int
		if err := tc.c.QueryRow(ctx, "SELECT count(*) FROM orders").Scan(&seen); err != nil || seen != 3 {
			t.Errorf("%s sees %d rows (%v), want its own 3", tc.tenant, seen, err)
		}
	}

	// globex's pgbench on "b", for long enough to span the move.
	script := filepath.Join(dir, "globex.sql")
	if err := os.WriteFile(script, []byte("BEGIN;\nINSERT INTO orders (item) VALUES ('bench');\nSELECT count(*) FROM orders;\nEND;\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bench := exec.CommandContext(ctx, "pgbench", "-n", "-c", "4", "-j", "2", "-T", "30", "-f", script, tenantURL("globex", placeGlobex))
	var benchOut strings.Builder
	bench.Stdout, bench.Stderr = &benchOut, &benchOut
	if err := bench.Start(); err != nil {
		t.Fatal(err)
	}
	benchDone := make(chan error, 1)
	go func() { benchDone <- bench.Wait() }()
	defer func() {
		if bench.ProcessState == nil {
			_ = bench.Process.Kill()
			<-benchDone
		}
	}()
	harness.Eventually(t, 60*time.Second, func() error {
		select {
		case err := <-benchDone:
			t.Fatalf("pgbench ended before the move: %v\n%s", err, benchOut.String())
		default:
		}
		if n := rowsOn(t, ctx, b, "globex"); n < 3+20 {
			return fmt.Errorf("globex's pgbench has written %d rows", n-3)
		}
		return nil
	})

	// acme has a transaction open on "a" when the move comes.
	tx, err := acme.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if port, err := serverPortOf(ctx, tx); err != nil || port != a.Port() {
		t.Fatalf("acme's open transaction on port %d (%v), want a's %d", port, err, a.Port())
	}
	// The operator copies acme's rows to "b" first, then moves it.
	if err := b.Exec(ctx, "shop", fmt.Sprintf("INSERT INTO orders (tenant_id, item) VALUES %s",
		"('acme', 'acme-0'), ('acme', 'acme-1'), ('acme', 'acme-2')")); err != nil {
		t.Fatal(err)
	}
	var moved map[string]any
	if st := callJSON(t, "http://"+cpAdmin, e2eAdminToken, "PUT", "/v1/tenants/acme/placement", `{"postgres": "b"}`, &moved); st != http.StatusOK || moved["changed"] != true {
		t.Fatalf("PUT placement: %d %v", st, moved)
	}
	// A new acme connection lands on "b" once the sidecar has the version.
	harness.Eventually(t, 30*time.Second, func() error {
		c, err := pgx.Connect(ctx, tenantURL("acme", placeAcme))
		if err != nil {
			return err
		}
		defer c.Close(ctx)
		if port, err := serverPortOf(ctx, c); err != nil || port != b.Port() {
			return fmt.Errorf("acme's new transaction on port %d (%v), want b's %d", port, err, b.Port())
		}
		return nil
	})
	select {
	case err := <-benchDone:
		t.Fatalf("pgbench ended before the move was confirmed (raise -T): %v\n%s", err, benchOut.String())
	default:
	}
	// The open transaction finishes where it started; the next runs on "b"
	// and sees the copied rows.
	if port, err := serverPortOf(ctx, tx); err != nil || port != a.Port() {
		t.Fatalf("acme's open transaction moved: port %d (%v), want a's %d", port, err, a.Port())
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("commit of the transaction open during the move: %v", err)
	}
	if port, err := serverPortOf(ctx, acme); err != nil || port != b.Port() {
		t.Fatalf("acme's next transaction on port %d (%v), want b's %d", port, err, b.Port())
	}
	if _, err := acme.Exec(ctx, "INSERT INTO orders (item) VALUES ('after-move')"); err != nil {
		t.Fatal(err)
	}
	var seen int
	if err := acme.QueryRow(ctx, "SELECT count(*) FROM orders").Scan(&seen); err != nil || seen != 4 {
		t.Errorf("acme on b sees %d rows (%v), want the 3 copied and 1 new", seen, err)
	}
	if n := rowsOn(t, ctx, a, "acme"); n != 3 {
		t.Errorf("acme: %d rows left on a, want the 3 from before the move (nothing new)", n)
	}

	// globex's pgbench ran through the move without an error.
	select {
	case err := <-benchDone:
		if err != nil {
			t.Fatalf("globex's pgbench: %v\n%s", err, benchOut.String())
		}
	case <-ctx.Done():
		t.Fatal("pgbench did not finish")
	}
	res := benchOut.String()
	if strings.Contains(res, "aborted") || strings.Contains(res, "error") || !strings.Contains(res, "number of transactions actually processed") {
		t.Fatalf("globex's pgbench:\n%s", res)
	}
	if m := failedTx.FindStringSubmatch(res); m != nil && m[1] != "0" {
		t.Fatalf("globex's pgbench had failed transactions:\n%s", res)
	}
	if n := rowsOn(t, ctx, a, "globex"); n != 0 {
		t.Errorf("globex: %d rows on a, want none", n)
	}
	t.Logf("globex's pgbench through the move:\n%s", res)
}
