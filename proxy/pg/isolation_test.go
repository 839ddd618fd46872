package pg_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/tenantguard/tenantguard/internal/fixture/pgcluster"
	"github.com/tenantguard/tenantguard/policy"
	proxypg "github.com/tenantguard/tenantguard/proxy/pg"
	"github.com/tenantguard/tenantguard/proxy/pg/rls"
	"github.com/tenantguard/tenantguard/test/harness"
)

const (
	isoRole     = "iso_app"
	isoPassword = "iso_app_pw"
)

var (
	isoOnce   sync.Once
	isoBinder *rls.Binder
)

// isolatedUpstream creates database "iso" with two tenants' orders and
// installs row-level isolation with pg bootstrap's code, once per package.
func isolatedUpstream(t *testing.T) *pgcluster.Cluster {
	t.Helper()
	pg := upstream(t)
	isoOnce.Do(func() {
		ctx := context.Background()
		var err error
		isoBinder, err = rls.NewBinder([]byte("0123456789abcdef0123456789abcdef"), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range []string{
			"CREATE DATABASE iso",
			"CREATE ROLE " + isoRole + " LOGIN PASSWORD '" + isoPassword + "' NOSUPERUSER NOBYPASSRLS",
		} {
			if err := pg.Exec(ctx, "postgres", q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		if err := pg.Exec(ctx, "iso", `
			CREATE TABLE public.orders (id bigserial PRIMARY KEY, tenant_id text NOT NULL, item text NOT NULL, amount numeric NOT NULL DEFAULT 0);
			CREATE UNIQUE INDEX orders_item_key ON public.orders (item);
			CREATE TABLE public.plans (name text PRIMARY KEY, price int);
			INSERT INTO public.plans VALUES ('basic', 10), ('pro', 50);
			INSERT INTO public.orders (tenant_id, item, amount) VALUES
				('acme', 'anvil', 120), ('acme', 'rocket skates', 75),
				('globex', 'hammock', 40), ('globex', 'doomsday device', 999);
			CREATE TABLE public.events (tenant_id text NOT NULL, at timestamptz NOT NULL, what text) PARTITION BY RANGE (at);
			CREATE TABLE public.events_2026 PARTITION OF public.events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
			INSERT INTO public.events VALUES ('acme', '2026-05-01', 'a'), ('globex', '2026-05-01', 'g');`); err != nil {
			t.Fatal(err)
		}
		c, err := pgx.Connect(ctx, pg.AdminURL("iso"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(ctx)
		if err := rls.Bootstrap(ctx, c, isoRole, isoPolicy(t), isoBinder); err != nil {
			t.Fatal(err)
		}
	})
	if isoBinder == nil {
		t.Fatal("isolated database setup failed earlier")
	}
	return pg
}

func isoPolicy(t *testing.T) *policy.Snapshot {
	snap, err := policy.Compile(isoSpec())
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

func isoSpec() policy.Spec {
	return policy.Spec{
		Tenants: []policy.TenantSpec{
			{ID: "acme", Passwords: []string{acmeSecret}, Limits: policy.Limits{MaxConnections: 6, StatementTimeout: 1500 * time.Millisecond}},
			{ID: "globex", Passwords: []string{globexSecret}},
			{ID: "reader", Passwords: []string{"reader-secret-1"}, Allow: &policy.Permissions{Read: true}},
		},
		Tables: []policy.TableSpec{
			{Name: "public.orders", TenantColumn: "tenant_id"},
			{Name: "public.events", TenantColumn: "tenant_id"},
			{Name: "public.plans", Shared: true},
		},
	}
}

// startIsolated starts a proxy with isolation on in front of database iso.
func startIsolated(t *testing.T, tweak func(*proxypgConfig)) *proxy {
	pg := isolatedUpstream(t)
	return startProxyWith(t, pg, isoSpec(), func(c *proxypgConfig) {
		c.Databases = []proxypgDatabase{{Name: "app", URL: fmt.Sprintf("postgres://%s:%s@127.0.0.1:%d/iso?sslmode=disable", isoRole, isoPassword, pg.Port())}}
		c.Binder = isoBinder
		if tweak != nil {
			tweak(c)
		}
	})
}

// tenantRows returns the tenants whose orders a connection can see.
func tenantRows(ctx context.Context, c *pgx.Conn) (map[string]int, error) {
	rows, err := c.Query(ctx, "SELECT tenant_id, count(*)::int FROM orders GROUP BY 1", pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	for rows.Next() {
		var t string
		var n int
		if err := rows.Scan(&t, &n); err != nil {
			return nil, err
		}
		out[t] = n
	}
	return out, rows.Err()
}

// globexState is globex's rows as the administrator sees them.
func globexState(ctx context.Context, pg *pgcluster.Cluster) (string, error) {
	c, err := pgx.Connect(ctx, pg.AdminURL("iso"))
	if err != nil {
		return "", err
	}
	defer c.Close(ctx)
	var s string
	err = c.QueryRow(ctx, "SELECT coalesce(string_agg(id || ':' || item || ':' || amount, ',' ORDER BY id), '') FROM orders WHERE tenant_id = 'globex'").Scan(&s)
	return s, err
}

func TestIsolationEachTenantSeesItsOwnRows(t *testing.T) {
	p := startIsolated(t, nil)
	ctx := ctxT(t, 30*time.Second)
	for _, tc := range []struct{ tenant, secret string }{{"acme", acmeSecret}, {"globex", globexSecret}} {
		for _, m := range execModes {
			cfg, err := pgx.ParseConfig(p.url(tc.tenant, tc.secret))
			if err != nil {
				t.Fatal(err)
			}
			cfg.DefaultQueryExecMode = m.mode
			c, err := pgx.ConnectConfig(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			var tenants []string
			rows, err := c.Query(ctx, "SELECT DISTINCT tenant_id FROM orders")
			if err != nil {
				t.Fatal(err)
			}
			tenants, err = pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				t.Fatal(err)
			}
			if len(tenants) != 1 || tenants[0] != tc.tenant {
				t.Fatalf("%s/%s sees tenants %v", tc.tenant, m.name, tenants)
			}
			var ev, plans int
			if err := c.QueryRow(ctx, "SELECT (SELECT count(*) FROM events_2026)::int, (SELECT count(*) FROM plans)::int").Scan(&ev, &plans); err != nil {
				t.Fatal(err)
			}
			if ev != 1 || plans != 2 {
				t.Fatalf("%s: partition rows %d, shared rows %d", tc.tenant, ev, plans)
			}
			c.Close(ctx)
		}
	}
}

// TestIsolationAttackSuite runs each attack as acme with globex's rows
// present, and checks acme saw and changed nothing of globex's, and that
// globex still works.
func TestIsolationAttackSuite(t *testing.T) {
	pg := isolatedUpstream(t)
	p := startIsolated(t, nil)
	ctx := ctxT(t, 2*time.Minute)
	before, err := globexState(ctx, pg)
	if err != nil || before == "" {
		t.Fatalf("globex state: %q %v", before, err)
	}
	simple := pgx.QueryExecModeSimpleProtocol
	ext := pgx.QueryExecModeCacheStatement
	type step struct {
		sql  string
		mode pgx.QueryExecMode
		code string // expected SQLSTATE; "" = must succeed; "*" = any error
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"select with other tenant's id", []step{{"SELECT * FROM orders WHERE tenant_id = 'globex'", simple, ""}}},
		{"set_config simple", []step{{"SELECT set_config('tenantguard.binding', 'globex', false)", simple, "42501"}}},
		{"set_config multi-statement", []step{{"SELECT 1; SELECT set_config('tenantguard.binding', 'globex', false); SELECT * FROM orders", simple, "42501"}}},
		{"set_config in CTE", []step{{"WITH x AS (SELECT set_config('tenantguard.binding', 'globex', false)) SELECT * FROM orders, x", simple, "42501"}}},
		{"set_config in subquery", []step{{"SELECT * FROM orders WHERE tenant_id = (SELECT set_config('tenantguard.binding', 'globex', true))", simple, "42501"}}},
		{"set_config extended protocol", []step{{"SELECT set_config($1, $2, false)", ext, "42501"}}},
		{"set_config in a transaction", []step{{"BEGIN", simple, ""}, {"SELECT set_config('tenantguard.binding', 'globex', true)", simple, "42501"}, {"SELECT 1", simple, "25P02"}, {"ROLLBACK", simple, ""}}},
		{"SET", []step{{"SET tenantguard.binding = 'globex'", simple, "42501"}}},
		{"SET LOCAL", []step{{"BEGIN; SET LOCAL tenantguard.binding = 'globex'; SELECT * FROM orders; COMMIT", simple, "42501"}}},
		{"RESET", []step{{"RESET tenantguard.binding", simple, "42501"}}},
		{"RESET ALL", []step{{"RESET ALL", simple, "42501"}}},
		{"DISCARD ALL", []step{{"DISCARD ALL", simple, "42501"}}},
		{"UPDATE pg_settings", []step{{"UPDATE pg_settings SET setting = 'globex' WHERE name = 'tenantguard.binding'", simple, "42501"}}},
		{"COMMIT then SELECT", []step{{"BEGIN; SELECT 1; COMMIT; SELECT * FROM orders WHERE tenant_id = 'globex'", simple, ""}}},
		{"ROLLBACK then SELECT", []step{{"BEGIN; ROLLBACK; SELECT * FROM orders WHERE tenant_id = 'globex'", simple, ""}}},
		{"SET ROLE", []step{{"SET ROLE postgres", simple, "42501"}}},
		{"SET SESSION AUTHORIZATION", []step{{"SET SESSION AUTHORIZATION postgres", simple, "42501"}}},
		{"DO block", []step{{"DO $$ BEGIN PERFORM set_config('tenantguard.binding', 'globex', false); END $$", simple, "42501"}}},
		{"create function", []step{{"CREATE FUNCTION f() RETURNS text LANGUAGE sql AS $$ SELECT set_config('tenantguard.binding','globex',false) $$", simple, "42501"}}},
		{"COPY TO STDOUT", []step{{"COPY orders TO STDOUT", simple, ""}}},
		{"UPDATE other tenant", []step{{"UPDATE orders SET amount = 0 WHERE tenant_id = 'globex'", simple, ""}}},
		{"UPDATE into other tenant", []step{{"UPDATE orders SET tenant_id = 'globex' WHERE tenant_id = 'acme'", simple, "42501"}}},
		{"DELETE other tenant", []step{{"DELETE FROM orders WHERE tenant_id = 'globex'", ext, ""}}},
		{"INSERT as other tenant", []step{{"INSERT INTO orders (tenant_id, item) VALUES ('globex', 'planted')", ext, "42501"}}},
		{"COPY FROM as other tenant", []step{{"COPY orders (tenant_id, item) FROM STDIN", simple, "*"}}},
		{"TRUNCATE", []step{{"TRUNCATE orders", simple, "42501"}}},
		{"DISABLE RLS", []step{{"ALTER TABLE orders DISABLE ROW LEVEL SECURITY", simple, "42501"}}},
		{"NO FORCE RLS", []step{{"ALTER TABLE orders NO FORCE ROW LEVEL SECURITY", simple, "42501"}}},
		{"terminate other backends", []step{{"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid()", simple, "42501"}}},
		{"read other sessions", []step{{"SELECT query FROM pg_stat_activity", simple, "42501"}}},
		{"binding key", []step{{"SELECT * FROM tenantguard.binding_key", simple, "42501"}}},
		{"call bind", []step{{"SELECT tenantguard.bind('globex', pg_backend_pid(), 1, 'x')", simple, "42501"}}},
		{"setval register", []step{{"SELECT setval('tenantguard.tenant_binding', 2)", simple, "42501"}}},
		{"nextval register", []step{{"SELECT nextval('tenantguard.binding_issued_at')", ext, "42501"}}},
		{"DISCARD SEQUENCES", []step{{"DISCARD SEQUENCES; SELECT * FROM orders WHERE tenant_id = 'globex'", simple, "55000"}, {"SELECT * FROM orders", simple, ""}}},
		{"partition directly", []step{{"SELECT * FROM events_2026 WHERE tenant_id = 'globex'", simple, ""}}},
		{"write shared table", []step{{"UPDATE plans SET price = 0", simple, "42501"}}},
		{"listening channels", []step{{"SELECT pg_listening_channels()", simple, "42501"}}},
		{"prepare transaction", []step{{"BEGIN; PREPARE TRANSACTION 'x'", simple, "42501"}}},
		{"explain analyze", []step{{"EXPLAIN ANALYZE DELETE FROM orders", simple, "42501"}}},
		{"large objects", []step{{"SELECT lo_import('/etc/passwd')", simple, "42501"}}},
		{"copy program", []step{{"COPY orders TO PROGRAM 'cat'", simple, "42501"}}},
		{"invalid utf8", []step{{"SELECT '\xc0\x27; SELECT set_config(1,2,3)'", simple, "*"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := p.connect(t, p.acmeURL())
			for _, st := range tc.steps {
				var err error
				if strings.HasPrefix(st.sql, "COPY orders (tenant_id, item) FROM STDIN") {
					_, err = c.PgConn().CopyFrom(ctx, strings.NewReader("globex\tplanted by acme\n"), st.sql)
				} else if st.mode == ext && strings.Contains(st.sql, "$1") {
					_, err = c.Exec(ctx, st.sql, "tenantguard.binding", "globex")
				} else {
					_, err = c.Exec(ctx, st.sql, st.mode)
				}
				switch st.code {
				case "":
					if err != nil {
						t.Fatalf("%s: %v", st.sql, err)
					}
				case "*":
					if err == nil {
						t.Fatalf("%s: succeeded", st.sql)
					}
				default:
					pe := assertSQLState(t, err, st.code)
					if st.code == "42501" && strings.Contains(pe.Message, "tenantguard refused") && !strings.Contains(pe.Message, "(rule ") {
						t.Fatalf("refusal does not name its rule: %s", pe.Message)
					}
				}
			}
			if c.PgConn().TxStatus() != 'I' {
				if _, err := c.Exec(ctx, "ROLLBACK", simple); err != nil {
					t.Fatal(err)
				}
			}
			// acme still sees only its own rows on this same session.
			seen, err := tenantRows(ctx, c)
			if err != nil {
				t.Fatalf("session unusable after attack: %v", err)
			}
			if _, leak := seen["globex"]; leak || seen["acme"] == 0 {
				t.Fatalf("acme sees %v after the attack", seen)
			}
			after, err := globexState(ctx, pg)
			if err != nil || after != before {
				t.Fatalf("globex's rows changed: %q -> %q (%v)", before, after, err)
			}
			g := p.connect(t, p.url("globex", globexSecret))
			seen, err = tenantRows(ctx, g)
			if err != nil || seen["globex"] != 2 || seen["acme"] != 0 {
				t.Fatalf("globex after the attack sees %v (%v)", seen, err)
			}
		})
	}
}

// TestIsolationStartupBinding: the binding cannot come in the startup packet.
func TestIsolationStartupBinding(t *testing.T) {
	p := startIsolated(t, nil)
	ctx := ctxT(t, 20*time.Second)
	for _, params := range []map[string]string{
		{"tenantguard.binding": "globex.1.00"},
		{"options": "-c tenantguard.binding=globex.1.00"},
		{"role": "postgres"},
	} {
		all := map[string]string{"user": "acme", "database": "app"}
		for k, v := range params {
			all[k] = v
		}
		e := rawStartup(t, ctx, p.addr, all, acmeSecret)
		if e == nil || e.Code != "42501" {
			t.Fatalf("%v: got %+v", params, e)
		}
	}
}

// TestIsolationHoldsWithoutProxy connects straight to PostgreSQL as the
// upstream role and plays with the binding: the schema alone still shows
// no tenant's rows.
func TestIsolationHoldsWithoutProxy(t *testing.T) {
	pg := isolatedUpstream(t)
	ctx := ctxT(t, 20*time.Second)
	c := directIso(t, pg)
	pid := c.PgConn().PID()
	// Never bound: no rows, whatever the settings say (and a forged
	// "bound" marker only turns that into an error).
	for _, v := range []string{"globex", "globex.1.00", strings.Join(bindArgs(isoBinder, "globex", pid, time.Now()), ".")} {
		for _, name := range []string{rls.Setting, "tenantguard.tenant"} {
			if _, err := c.Exec(ctx, "SELECT set_config($1, $2, false)", name, v); err != nil {
				t.Fatal(err)
			}
		}
		mustBeUnbound(t, ctx, c)
	}
	if _, err := c.Exec(ctx, "SET tenantguard.bound = 'on'"); err != nil {
		t.Fatal(err)
	}
	_, err := tenantRows(ctx, c)
	assertSQLState(t, err, "55000")
	if _, err := c.Exec(ctx, "RESET tenantguard.bound"); err != nil {
		t.Fatal(err)
	}
	// Rejected bindings leave the session bound to no tenant.
	now := time.Now()
	good := bindArgs(isoBinder, "globex", pid, now)
	for i, args := range [][]string{
		tampered(bindArgs(isoBinder, "globex", pid, now)),
		{"acme", good[1], good[2], good[3]},                         // another tenant with globex's signature
		bindArgs(isoBinderOther(t), "globex", pid, now),             // another key
		bindArgs(isoBinder, "globex", pid+1, now),                   // another backend
		bindArgs(isoBinder, "globex", pid, now.Add(-2*time.Hour)),   // expired
		bindArgs(isoBinder, "globex", pid, now.Add(10*time.Minute)), // from the future
		{"globex", good[1], good[2], ""},
		{"Globex", good[1], good[2], good[3]},
	} {
		t.Logf("forged binding %d", i)
		assertSQLState(t, bindDirect(ctx, c, args), "42501")
		mustBeUnbound(t, ctx, c)
		_, err := c.Exec(ctx, "INSERT INTO orders (tenant_id, item) VALUES ('globex', 'x'||random())")
		assertSQLState(t, err, "42501")
	}
	for _, q := range []string{
		"TRUNCATE orders", "ALTER TABLE orders DISABLE ROW LEVEL SECURITY", "SELECT * FROM tenantguard.binding_key", "CREATE TEMP TABLE x (a int)",
		"CREATE OR REPLACE FUNCTION tenantguard.current_tenant() RETURNS text LANGUAGE sql AS $$ SELECT 'globex' $$",
		"CREATE OR REPLACE FUNCTION tenantguard.bind(text, integer, bigint, text) RETURNS void LANGUAGE sql AS $$ SELECT $$",
		"SELECT setval('tenantguard.tenant_binding', 2)", "SELECT nextval('tenantguard.tenant_binding')",
		"SELECT setval('tenantguard.binding_issued_at', 0)", "ALTER SEQUENCE tenantguard.tenant_binding RESTART",
		"UPDATE tenantguard.tenant SET name = 'globex'", "INSERT INTO tenantguard.tenant (name) VALUES ('mallory')",
		"DELETE FROM tenantguard.tenant", "ALTER TABLE tenantguard.tenant DISABLE ROW LEVEL SECURITY",
	} {
		_, err := c.Exec(ctx, q)
		var pe *pgconn.PgError
		if !errors.As(err, &pe) {
			t.Fatalf("%s: %v", q, err)
		}
	}
	// The real signature does work, so the test above is not vacuous.
	if err := bindDirect(ctx, c, bindArgs(isoBinder, "globex", pid, time.Now())); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := c.QueryRow(ctx, "SELECT count(*)::int FROM orders").Scan(&n); err != nil || n != 2 {
		t.Fatalf("signed binding: %d rows, %v", n, err)
	}
	// The registry shows a session its own tenant only.
	rows, err := c.Query(ctx, "SELECT name FROM tenantguard.tenant")
	if err != nil {
		t.Fatal(err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || len(names) != 1 || names[0] != "globex" {
		t.Fatalf("registry as globex: %v (%v)", names, err)
	}
}

func isoBinderOther(t *testing.T) *rls.Binder {
	b, err := rls.NewBinder([]byte("another key, 32 bytes long......"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestIsolationPooledState: state one tenant leaves on a pooled connection
// is invisible to the next tenant served by it (one server connection).
func TestIsolationPooledState(t *testing.T) {
	for _, order := range [][2]string{{"globex", "acme"}, {"acme", "globex"}} {
		t.Run(order[0]+" then "+order[1], func(t *testing.T) {
			p := startIsolated(t, func(c *proxypgConfig) { c.PoolSize = 1 })
			ctx := ctxT(t, 30*time.Second)
			secrets := map[string]string{"acme": acmeSecret, "globex": globexSecret}
			leaver := p.connect(t, p.url(order[0], secrets[order[0]]))
			finder := p.connect(t, p.url(order[1], secrets[order[1]]))
			if _, err := leaver.Prepare(ctx, "left_behind", "SELECT 'secret of "+order[0]+"'"); err != nil {
				t.Fatal(err)
			}
			for _, q := range []struct{ sql, code string }{
				{"SET work_mem = '7777kB'", ""},
				{"SELECT pg_advisory_lock(99)", ""},
				{"CREATE TEMP TABLE scratch (x int)", "42501"},                      // no DDL, and no TEMP privilege
				{"DECLARE held CURSOR WITH HOLD FOR SELECT * FROM orders", "42501"}, // refused in transaction pooling
				{"LISTEN secrets", ""},                                              // answered by the proxy: nothing upstream
				{"PREPARE sqlprep AS SELECT * FROM orders", "42501"},                // refused in transaction pooling
			} {
				_, err := leaver.Exec(ctx, q.sql, pgx.QueryExecModeSimpleProtocol)
				if q.code == "" && err != nil {
					t.Fatalf("%s: %v", q.sql, err)
				}
				if q.code != "" {
					assertSQLState(t, err, q.code)
				}
			}
			var workMem string
			var locks, cursors, temps, prepared int
			err := finder.QueryRow(ctx, `SELECT current_setting('work_mem'),
				(SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid())::int,
				(SELECT count(*) FROM pg_cursors WHERE name = 'held')::int,
				(SELECT count(*) FROM pg_class WHERE relname = 'scratch')::int,
				(SELECT count(*) FROM pg_prepared_statements WHERE name = 'left_behind' OR name = 'sqlprep')::int`).Scan(&workMem, &locks, &cursors, &temps, &prepared)
			if err == nil {
				t.Fatal("pg_locks should be refused by the firewall")
			}
			// pg_locks is refused to tenants; read the rest, then locks directly upstream.
			err = finder.QueryRow(ctx, `SELECT current_setting('work_mem'),
				(SELECT count(*) FROM pg_cursors WHERE name = 'held')::int,
				(SELECT count(*) FROM pg_class WHERE relname = 'scratch')::int,
				(SELECT count(*) FROM pg_prepared_statements WHERE name IN ('left_behind', 'sqlprep'))::int`).Scan(&workMem, &cursors, &temps, &prepared)
			if err != nil {
				t.Fatal(err)
			}
			if workMem == "7777kB" || cursors != 0 || temps != 0 || prepared != 0 {
				t.Fatalf("left behind: work_mem=%s cursors=%d temps=%d prepared=%d", workMem, cursors, temps, prepared)
			}
			admin, err := pgx.Connect(ctx, harnessAdmin(t))
			if err != nil {
				t.Fatal(err)
			}
			defer admin.Close(ctx)
			if err := admin.QueryRow(ctx, "SELECT count(*)::int FROM pg_locks WHERE locktype = 'advisory' AND objid = 99").Scan(&locks); err != nil {
				t.Fatal(err)
			}
			if locks != 0 {
				t.Fatalf("advisory lock of %s still held after its transaction", order[0])
			}
			// The leaver's own statement still works for the leaver only.
			var got string
			if err := leaver.QueryRow(ctx, "left_behind").Scan(&got); err != nil || got != "secret of "+order[0] {
				t.Fatalf("leaver's statement: %q %v", got, err)
			}
			rr := finder.PgConn().ExecPrepared(ctx, "left_behind", nil, nil, nil).Read()
			assertSQLState(t, rr.Err, "26000")
			seen, err := tenantRows(ctx, finder)
			if err != nil || len(seen) != 1 || seen[order[1]] == 0 {
				t.Fatalf("%s sees %v (%v)", order[1], seen, err)
			}
		})
	}
}

func harnessAdmin(t *testing.T) string { return isolatedUpstream(t).AdminURL("iso") }

// TestIsolationErrorDetail: a unique violation's DETAIL, which quotes the
// conflicting key (another tenant's value here), is stripped.
func TestIsolationErrorDetail(t *testing.T) {
	p := startIsolated(t, nil)
	ctx := ctxT(t, 20*time.Second)
	c := p.connect(t, p.acmeURL())
	_, err := c.Exec(ctx, "INSERT INTO orders (tenant_id, item) VALUES ('acme', 'doomsday device')")
	pe := assertSQLState(t, err, "23505")
	if pe.Detail != "" || strings.Contains(pe.Message+pe.Detail, "doomsday") {
		t.Fatalf("detail leaked: %q / %q", pe.Message, pe.Detail)
	}
	// The session is usable afterwards.
	if _, err := tenantRows(ctx, c); err != nil {
		t.Fatal(err)
	}
}

// TestIsolationLimits: connection cap, statement timeout, and permissions.
func TestIsolationLimits(t *testing.T) {
	p := startIsolated(t, nil)
	ctx := ctxT(t, 30*time.Second)
	conns := make([]*pgx.Conn, 0, 6)
	for i := 0; i < 6; i++ {
		conns = append(conns, p.connect(t, p.acmeURL()))
	}
	_, err := pgx.Connect(ctx, p.acmeURL())
	pe := assertSQLState(t, err, "53300")
	if !strings.Contains(pe.Message, `tenant "acme"`) {
		t.Fatalf("message %q", pe.Message)
	}
	// Another tenant is not affected by acme's cap.
	g := p.connect(t, p.url("globex", globexSecret))
	var timeout string
	if err := g.QueryRow(ctx, "SHOW statement_timeout").Scan(&timeout); err != nil || timeout != "0" {
		t.Fatalf("globex statement_timeout %q %v", timeout, err)
	}
	// acme's statement timeout is applied and cannot be raised.
	if err := conns[0].QueryRow(ctx, "SHOW statement_timeout").Scan(&timeout); err != nil || timeout != "1500ms" {
		t.Fatalf("acme statement_timeout %q %v", timeout, err)
	}
	_, err = conns[0].Exec(ctx, "SELECT pg_sleep(5)")
	assertSQLState(t, err, "57014")
	_, err = conns[0].Exec(ctx, "SET statement_timeout = 0")
	assertSQLState(t, err, "42501")
	// A read-only tenant cannot write.
	r := p.connect(t, p.url("reader", "reader-secret-1"))
	_, err = r.Exec(ctx, "DELETE FROM orders")
	pe = assertSQLState(t, err, "42501")
	if !strings.Contains(pe.Message, "rule permissions") {
		t.Fatalf("message %q", pe.Message)
	}
	if got := p.metric(t, "tenantguard_pg_refusals_total", map[string]string{"tenant": "reader", "rule": "permissions"}); got != 1 {
		t.Fatalf("refusals_total{reader,permissions} = %v", got)
	}
}

// TestIsolationCheckFailsClosed: the start-up check refuses a superuser
// upstream role and a table without forced RLS.
func TestIsolationCheckFailsClosed(t *testing.T) {
	pg := isolatedUpstream(t)
	ctx := ctxT(t, 30*time.Second)
	p := startIsolated(t, nil)
	w, err := p.srv.CheckIsolation(ctx)
	if err != nil {
		t.Fatalf("bootstrapped database fails the check: %v (%v)", err, w)
	}
	if !strings.Contains(strings.Join(w, "\n"), "unique index orders_item_key on orders omits the tenant column") {
		t.Fatalf("no warning about the unique index without the tenant column: %q", w)
	}
	super := startProxyWith(t, pg, isoSpec(), func(c *proxypgConfig) {
		c.Databases = []proxypgDatabase{{Name: "app", URL: pg.AdminURL("iso")}}
		c.Binder = isoBinder
	})
	if _, err := super.srv.CheckIsolation(ctx); err == nil || !strings.Contains(err.Error(), "superuser") {
		t.Fatalf("superuser upstream: %v", err)
	}
	if err := pg.Exec(ctx, "iso", "ALTER TABLE public.orders NO FORCE ROW LEVEL SECURITY"); err != nil {
		t.Fatal(err)
	}
	defer pg.Exec(context.Background(), "iso", "ALTER TABLE public.orders FORCE ROW LEVEL SECURITY")
	if _, err := p.srv.CheckIsolation(ctx); err == nil || !strings.Contains(err.Error(), "FORCE ROW LEVEL SECURITY") {
		t.Fatalf("unforced table: %v", err)
	}
	if err := pg.Exec(ctx, "iso", "ALTER TABLE public.orders FORCE ROW LEVEL SECURITY; ALTER FUNCTION tenantguard.copy_finish(text, text[]) SECURITY DEFINER"); err != nil {
		t.Fatal(err)
	}
	defer pg.Exec(context.Background(), "iso", "ALTER FUNCTION tenantguard.copy_finish(text, text[]) SECURITY INVOKER")
	if _, err := p.srv.CheckIsolation(ctx); err == nil || !strings.Contains(err.Error(), "copy_finish is SECURITY DEFINER") {
		t.Fatalf("a COPY move that would bypass RLS: %v", err)
	}
}

// TestFairQueueing: a tenant at its share of upstream connections waits,
// and the connections it cannot take stay available to other tenants.
func TestFairQueueing(t *testing.T) {
	pg := isolatedUpstream(t)
	spec := isoSpec()
	spec.Tenants[0].Limits = policy.Limits{MaxTransactions: 2}
	p := startProxyWith(t, pg, spec, func(c *proxypgConfig) {
		c.Databases = []proxypgDatabase{{Name: "app", URL: fmt.Sprintf("postgres://%s:%s@127.0.0.1:%d/iso?sslmode=disable", isoRole, isoPassword, pg.Port())}}
		c.Binder = isoBinder
		c.PoolSize = 3
		c.PoolWaitTimeout = 10 * time.Second
	})
	ctx := ctxT(t, 30*time.Second)
	var holders []pgx.Tx
	for i := 0; i < 2; i++ {
		c := p.connect(t, p.acmeURL())
		tx, err := c.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "SELECT 1"); err != nil {
			t.Fatal(err)
		}
		holders = append(holders, tx)
	}
	// A third acme transaction queues behind acme's own cap…
	third := p.connect(t, p.acmeURL())
	thirdDone := make(chan error, 1)
	go func() {
		_, err := third.Exec(ctx, "SELECT 1")
		thirdDone <- err
	}()
	harness.Eventually(t, 5*time.Second, func() error {
		if p.metric(t, "tenantguard_pg_pool_waiting_clients", nil) != 1 {
			return errors.New("third acme transaction not queued yet")
		}
		return nil
	})
	// …while globex is served at once from the connection acme may not take.
	g := p.connect(t, p.url("globex", globexSecret))
	gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := g.Exec(gctx, "SELECT 1"); err != nil {
		t.Fatalf("globex starved by acme's flood: %v", err)
	}
	select {
	case err := <-thirdDone:
		t.Fatalf("acme exceeded its share of 2 connections (err %v)", err)
	default:
	}
	if err := holders[0].Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-thirdDone; err != nil {
		t.Fatalf("queued acme transaction: %v", err)
	}
	if err := holders[1].Commit(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestBootstrapIdempotent: running pg bootstrap again changes nothing and
// the check still passes.
func TestBootstrapIdempotent(t *testing.T) {
	pg := isolatedUpstream(t)
	ctx := ctxT(t, 30*time.Second)
	c, err := pgx.Connect(ctx, pg.AdminURL("iso"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	for i := 0; i < 2; i++ {
		if err := rls.Bootstrap(ctx, c, isoRole, isoPolicy(t), isoBinder); err != nil {
			t.Fatalf("bootstrap run %d: %v", i+2, err)
		}
	}
	var policies int
	if err := c.QueryRow(ctx, "SELECT count(*)::int FROM pg_policy WHERE polname = $1", rls.PolicyName).Scan(&policies); err != nil {
		t.Fatal(err)
	}
	if policies != 3 { // orders, events, events_2026
		t.Fatalf("%d isolation policies after repeated bootstrap, want 3", policies)
	}
	p := startIsolated(t, nil)
	if _, err := p.srv.CheckIsolation(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestIsolationFunctionCall: the FunctionCall message cannot reach
// set_config (or anything else) as a tenant.
func TestIsolationFunctionCall(t *testing.T) {
	pg := isolatedUpstream(t)
	p := startIsolated(t, nil)
	ctx := ctxT(t, 20*time.Second)
	before, err := globexState(ctx, pg)
	if err != nil {
		t.Fatal(err)
	}
	c := p.connect(t, p.acmeURL())
	fe := c.PgConn().Frontend()
	fe.Send(&pgproto3.FunctionCall{Function: 2078, // set_config(text, text, bool)
		ArgFormatCodes: []uint16{0}, Arguments: [][]byte{[]byte("tenantguard.binding"), []byte("globex"), []byte("f")}})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	var code string
	for {
		msg, err := fe.Receive()
		if err != nil {
			t.Fatal(err)
		}
		if e, ok := msg.(*pgproto3.ErrorResponse); ok {
			code = e.Code
		}
		if _, ok := msg.(*pgproto3.ReadyForQuery); ok {
			break
		}
	}
	if code != "0A000" {
		t.Fatalf("FunctionCall answered %q", code)
	}
	seen, err := tenantRows(ctx, c)
	if err != nil || len(seen) != 1 || seen["acme"] == 0 {
		t.Fatalf("after FunctionCall acme sees %v (%v)", seen, err)
	}
	if after, err := globexState(ctx, pg); err != nil || after != before {
		t.Fatalf("globex rows changed: %v", err)
	}
}

// TestBindingRefreshInSessionPooling: a session-pooled client keeps its
// server connection; its binding is re-signed before it ages out.
func TestBindingRefreshInSessionPooling(t *testing.T) {
	pg := isolatedUpstream(t)
	short, err := rls.NewBinder([]byte("0123456789abcdef0123456789abcdef"), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	p := startProxyWith(t, pg, isoSpec(), func(c *proxypgConfig) {
		c.Databases = []proxypgDatabase{{Name: "app", URL: fmt.Sprintf("postgres://%s:%s@127.0.0.1:%d/iso?sslmode=disable", isoRole, isoPassword, pg.Port())}}
		c.Binder = short
		c.PoolMode = proxypg.PoolSession
	})
	ctx := ctxT(t, 30*time.Second)
	c := p.connect(t, p.url("globex", globexSecret))
	// The binding's time, from the register only tenantguard.bind sets.
	const issued = "SELECT currval('tenantguard.binding_issued_at')"
	var first int64
	if err := c.QueryRow(ctx, issued).Scan(&first); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 10*time.Second, func() error {
		var now int64
		if err := c.QueryRow(ctx, issued).Scan(&now); err != nil {
			return err
		}
		if now == first {
			return errors.New("binding not refreshed yet")
		}
		seen, err := tenantRows(ctx, c)
		if err != nil || seen["globex"] != 2 {
			return fmt.Errorf("after refresh globex sees %v (%v)", seen, err)
		}
		return nil
	})
}

// TestListenNotify: LISTEN/NOTIFY through transaction pooling, namespaced
// per tenant: a tenant's listeners get its own NOTIFY and pg_notify on the
// channel names it uses (simple and extended protocol), never another
// tenant's on the same name, not even one that names the other's
// namespaced channel; notifications wait for the end of a transaction;
// UNLISTEN stops them; an idle, parked client still gets them.
func TestListenNotify(t *testing.T) {
	p := startIsolated(t, func(c *proxypgConfig) { c.PoolSize = 2; c.ParkIdleAfter = time.Second })
	ctx := ctxT(t, 60*time.Second)
	acmeListener := p.connect(t, p.acmeURL())
	globexListener := p.connect(t, p.url("globex", globexSecret))
	acme := p.connect(t, p.acmeURL())
	globex := p.connect(t, p.url("globex", globexSecret))
	exec := func(c *pgx.Conn, sql string, mode pgx.QueryExecMode) {
		t.Helper()
		if _, err := c.Exec(ctx, sql, mode); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	next := func(c *pgx.Conn) *pgconn.Notification {
		t.Helper()
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		n, err := c.WaitForNotification(wctx)
		if err != nil {
			t.Fatalf("waiting for a notification: %v", err)
		}
		return n
	}
	none := func(c *pgx.Conn) {
		t.Helper()
		wctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		if n, err := c.WaitForNotification(wctx); err == nil {
			t.Fatalf("unexpected notification %+v", n)
		}
	}
	exec(acmeListener, "LISTEN orders", pgx.QueryExecModeSimpleProtocol)
	exec(globexListener, "LISTEN orders", pgx.QueryExecModeCacheStatement) // through Parse

	exec(acme, "NOTIFY orders, 'a1'", pgx.QueryExecModeSimpleProtocol)
	exec(acme, "SELECT pg_notify('orders', 'a2')", pgx.QueryExecModeCacheStatement)
	exec(globex, "NOTIFY orders, 'g1'", pgx.QueryExecModeSimpleProtocol)
	// An attempt at globex's namespaced channel stays in acme's namespace.
	exec(acme, `NOTIFY "tg.globex.orders", 'sneaky'`, pgx.QueryExecModeSimpleProtocol)
	exec(acme, "SELECT pg_notify('tg.globex.orders', 'sneaky2')", pgx.QueryExecModeSimpleProtocol)

	for _, want := range []string{"a1", "a2"} {
		if n := next(acmeListener); n.Channel != "orders" || n.Payload != want {
			t.Fatalf("acme got %q on %q, want %q on orders", n.Payload, n.Channel, want)
		}
	}
	if n := next(globexListener); n.Channel != "orders" || n.Payload != "g1" {
		t.Fatalf("globex got %q on %q, want g1", n.Payload, n.Channel)
	}
	none(globexListener)
	none(acmeListener)

	// Inside a transaction the notification waits for its end.
	tx, err := acmeListener.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	exec(acme, "NOTIFY orders, 'after-commit'", pgx.QueryExecModeSimpleProtocol)
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if n := next(acmeListener); n.Payload != "after-commit" {
		t.Fatalf("after commit: %q", n.Payload)
	}

	// Parked while idle, still notified.
	harness.Eventually(t, 10*time.Second, func() error {
		if p.metric(t, "tenantguard_pg_parked_clients", nil) < 2 {
			return errors.New("listeners not parked yet")
		}
		return nil
	})
	exec(acme, "NOTIFY orders, 'to-a-parked-client'", pgx.QueryExecModeSimpleProtocol)
	if n := next(acmeListener); n.Payload != "to-a-parked-client" {
		t.Fatalf("parked: %q", n.Payload)
	}

	// A client's own notification arrives before its ReadyForQuery, as
	// PostgreSQL delivers it (psql prints it right after the NOTIFY).
	exec(acmeListener, "NOTIFY orders, 'self'", pgx.QueryExecModeSimpleProtocol)
	done, cancel := context.WithCancel(ctx)
	cancel()
	if n, err := acmeListener.WaitForNotification(done); err != nil || n.Payload != "self" {
		t.Fatalf("own notification not there when NOTIFY returned: %v %v", n, err)
	}
	exec(acmeListener, "UNLISTEN orders", pgx.QueryExecModeSimpleProtocol)
	exec(acme, "NOTIFY orders, 'gone'", pgx.QueryExecModeSimpleProtocol)
	none(acmeListener)
	// LISTEN with other statements in one query is refused, the session usable.
	if _, err := acmeListener.Exec(ctx, "LISTEN a; SELECT 1", pgx.QueryExecModeSimpleProtocol); err == nil {
		t.Fatal("LISTEN mixed with another statement accepted")
	}
	exec(acmeListener, "SELECT 1", pgx.QueryExecModeSimpleProtocol)
}
