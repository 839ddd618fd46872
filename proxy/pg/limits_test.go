package pg_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tenantguard/tenantguard/policy"
	proxypg "github.com/tenantguard/tenantguard/proxy/pg"
	"github.com/tenantguard/tenantguard/test/harness"
	wirepg "github.com/tenantguard/tenantguard/wire/pg"
)

// TestMaxClientConnections: max_client_connections N admits exactly N
// client connections (it admitted N+1), refuses the next with 53300, and
// admits again once one leaves.
func TestMaxClientConnections(t *testing.T) {
	pg := upstream(t)
	p := startProxy(t, pg, func(c *proxypgConfig) { c.MaxClientConns = 3 })
	ctx := ctxT(t, 30*time.Second)
	var conns []*pgx.Conn
	for i := 0; i < 3; i++ {
		c, err := pgx.Connect(ctx, p.acmeURL())
		if err != nil {
			t.Fatalf("client %d of 3: %v", i+1, err)
		}
		conns = append(conns, c)
	}
	_, err := pgx.Connect(ctx, p.acmeURL())
	assertSQLState(t, err, "53300")
	conns[0].Close(ctx)
	harness.Eventually(t, 5*time.Second, func() error {
		c, err := pgx.Connect(ctx, p.acmeURL())
		if err != nil {
			return err
		}
		return c.Close(ctx)
	})
	for _, c := range conns[1:] {
		c.Close(ctx)
	}
}

// TestUpstreamURLForms: the README's upstream URL, with no sslmode (so
// libpq's default, prefer, with its fallback to the same server without
// TLS), starts and serves; a URL naming several hosts is refused at start.
func TestUpstreamURLForms(t *testing.T) {
	pg := upstream(t)
	p := startProxy(t, pg, func(c *proxypgConfig) {
		c.Databases[0].URL = fmt.Sprintf("postgres://%s:%s@127.0.0.1:%d/app", appRole, appPassword, pg.Port())
	})
	var one int
	if err := p.connect(t, p.acmeURL()).QueryRow(ctxT(t, 10*time.Second), "SELECT 1").Scan(&one); err != nil {
		t.Fatalf("upstream URL without sslmode: %v", err)
	}
	snap, err := policy.Compile(policy.Spec{Tenants: []policy.TenantSpec{{ID: "acme", Passwords: []string{acmeSecret}}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, url, wantErr string
	}{
		{"readme example", "postgres://tg_app:PASSWORD@10.0.0.5:5432/app", ""},
		{"sslmode allow", "postgres://tg_app:PASSWORD@10.0.0.5:5432/app?sslmode=allow", ""},
		{"two hosts", "postgres://tg_app:PASSWORD@10.0.0.5:5432,10.0.0.6:5432/app", "multiple hosts are not supported"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, err := proxypg.New(proxypg.Config{Databases: []proxypg.Database{{Name: "app", URL: tc.url}}},
				policy.NewStore(snap), prometheus.NewRegistry(), nil)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				_ = srv.Shutdown(context.Background())
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				_ = srv.Shutdown(context.Background())
				t.Fatalf("New: %v, want %q", err, tc.wantErr)
			}
		})
	}
}

// TestPipelinedTerminate: a statement pipelined ahead of Terminate in one
// write still runs, as it does against PostgreSQL.
func TestPipelinedTerminate(t *testing.T) {
	pg := upstream(t)
	p := startProxy(t, pg, nil)
	ctx := ctxT(t, 20*time.Second)
	pc, err := pgconn.Connect(ctx, p.acmeURL())
	if err != nil {
		t.Fatal(err)
	}
	hj, err := pc.Hijack()
	if err != nil {
		t.Fatal(err)
	}
	marker := fmt.Sprintf("terminate-%d", time.Now().UnixNano())
	msg := wirepg.AppendQuery(nil, "INSERT INTO items (tenant, name) VALUES ('acme', '"+marker+"')")
	msg = append(msg, wirepg.TerminateMessage...)
	if _, err := hj.Conn.Write(msg); err != nil {
		t.Fatal(err)
	}
	_ = hj.Conn.Close()
	admin, err := pgx.Connect(ctx, pg.AdminURL("app"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	harness.Eventually(t, 10*time.Second, func() error {
		var n int
		if err := admin.QueryRow(ctx, "SELECT count(*) FROM items WHERE name = $1", marker).Scan(&n); err != nil {
			return err
		}
		if n != 1 {
			return fmt.Errorf("%d rows for the statement sent ahead of Terminate", n)
		}
		return nil
	})
}

// TestParkIdleClients: a client idle past park_idle_clients_after gives up
// its goroutine (parked_clients counts it) and is served as before when it
// sends again; a parked client whose tenant is removed is told so, and a
// parked client still gets its 57P01 at a drain.
func TestParkIdleClients(t *testing.T) {
	pg := upstream(t)
	p := startProxy(t, pg, func(c *proxypgConfig) { c.ParkIdleAfter = time.Second })
	ctx := ctxT(t, 60*time.Second)
	acme := p.connect(t, p.acmeURL())
	globex := p.connect(t, p.url("globex", globexSecret))
	parked := func(n float64) func() error {
		return func() error {
			if got := p.metric(t, "tenantguard_pg_parked_clients", nil); got != n {
				return fmt.Errorf("%v parked clients, want %v", got, n)
			}
			return nil
		}
	}
	harness.Eventually(t, 10*time.Second, parked(2))
	var n int
	if err := acme.QueryRow(ctx, "SELECT count(*) FROM items WHERE tenant = 'acme'").Scan(&n); err != nil || n == 0 {
		t.Fatalf("query after parking: %d %v", n, err)
	}
	harness.Eventually(t, 10*time.Second, parked(2)) // parks again once idle
	// A transaction stays attached and is never parked mid-way.
	tx, err := acme.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 10*time.Second, parked(1))
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("commit after idling in a transaction: %v", err)
	}
	// Removing globex ends its parked connection with its FATAL.
	spec := policy.Spec{Tenants: []policy.TenantSpec{{ID: "acme", Passwords: []string{acmeSecret}}}}
	snap, err := policy.Compile(spec)
	if err != nil {
		t.Fatal(err)
	}
	p.store.Swap(snap)
	p.srv.Reconcile()
	harness.Eventually(t, 10*time.Second, func() error {
		if !globex.PgConn().IsClosed() {
			var one int
			err := globex.QueryRow(ctx, "SELECT 1").Scan(&one)
			var pe *pgconn.PgError
			if errors.As(err, &pe) && pe.Code == "28000" {
				return nil
			}
			return fmt.Errorf("parked client of a removed tenant: %v", err)
		}
		return nil
	})
	// A parked client is told at a drain.
	harness.Eventually(t, 10*time.Second, parked(1))
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := p.srv.Shutdown(sctx); err != nil {
		t.Fatalf("shutdown with a parked client: %v", err)
	}
	var one int
	err = acme.QueryRow(ctx, "SELECT 1").Scan(&one)
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "57P01" {
		t.Fatalf("parked client at a drain: %v, want 57P01", err)
	}
}
