package pg_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantguard/tenantguard/internal/pgcluster"
	"github.com/tenantguard/tenantguard/policy"
	proxypg "github.com/tenantguard/tenantguard/proxy/pg"
	"github.com/tenantguard/tenantguard/proxy/pg/rls"
	"github.com/tenantguard/tenantguard/test/harness"
)

// directIso connects straight to database iso as the upstream role, as a
// sidecar's server connection does.
func directIso(t *testing.T, pg *pgcluster.Cluster) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, fmt.Sprintf("postgres://%s:%s@127.0.0.1:%d/iso?sslmode=disable", isoRole, isoPassword, pg.Port()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// bindArgs are rls.BindSQL's parameters binding backend pid to tenant at at.
func bindArgs(b *rls.Binder, tenant string, pid uint32, at time.Time) []string {
	_, args := b.Statement(tenant, pid, at)
	return args
}

// tampered returns args with the signature's last hex digit changed.
func tampered(args []string) []string {
	out := append([]string(nil), args...)
	sig := out[3]
	last := "0"
	if sig[len(sig)-1] == '0' {
		last = "1"
	}
	out[3] = sig[:len(sig)-1] + last
	return out
}

func anySlice(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// bindDirect runs the bind statement on c.
func bindDirect(ctx context.Context, c *pgx.Conn, args []string) error {
	_, err := c.Exec(ctx, rls.BindSQL, append([]any{pgx.QueryExecModeExec}, anySlice(args)...)...)
	return err
}

// mustBeUnbound fails unless c is bound to no tenant: it sees no rows and
// tenantguard.current_tenant() is NULL, or (after a rejected binding) its
// statements on tenant tables fail with 55000, currval of sequence
// "tenant_binding" is not yet defined in this session.
func mustBeUnbound(t *testing.T, ctx context.Context, c *pgx.Conn) {
	t.Helper()
	seen, err := tenantRows(ctx, c)
	if err != nil {
		assertSQLState(t, err, "55000")
	} else if len(seen) != 0 {
		t.Fatalf("unbound session sees %v", seen)
	}
	var cur *string
	err = c.QueryRow(ctx, "SELECT tenantguard.current_tenant()", pgx.QueryExecModeSimpleProtocol).Scan(&cur)
	if err != nil {
		assertSQLState(t, err, "55000")
	} else if cur != nil {
		t.Fatalf("unbound session is bound to %q", *cur)
	}
}

// boundView is what a session bound (or not) sees: its orders' tenants and
// tenantguard.current_tenant() ("" for NULL).
func boundView(ctx context.Context, c *pgx.Conn) (map[string]int, string, error) {
	seen, err := tenantRows(ctx, c)
	if err != nil {
		return nil, "", err
	}
	var cur *string
	if err := c.QueryRow(ctx, "SELECT tenantguard.current_tenant()", pgx.QueryExecModeSimpleProtocol).Scan(&cur); err != nil {
		return nil, "", err
	}
	if cur == nil {
		return seen, "", nil
	}
	return seen, *cur, nil
}

// mustSee fails unless c sees exactly want's rows and is bound to tenant
// ("" for none).
func mustSee(t *testing.T, ctx context.Context, c *pgx.Conn, tenant string, want map[string]int) {
	t.Helper()
	seen, cur, err := boundView(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if cur != tenant || fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Fatalf("bound to %q seeing %v; want %q seeing %v", cur, seen, tenant, want)
	}
}

// TestBindingRejectedUnbinds: a binding the database rejects leaves the
// session bound to no tenant, not to the one it had.
func TestBindingRejectedUnbinds(t *testing.T) {
	pg := isolatedUpstream(t)
	ctx := ctxT(t, 20*time.Second)
	c := directIso(t, pg)
	pid := c.PgConn().PID()
	if err := bindDirect(ctx, c, bindArgs(isoBinder, "acme", pid, time.Now())); err != nil {
		t.Fatal(err)
	}
	mustSee(t, ctx, c, "acme", map[string]int{"acme": 2})
	err := bindDirect(ctx, c, tampered(bindArgs(isoBinder, "globex", pid, time.Now().Add(time.Millisecond))))
	assertSQLState(t, err, "42501")
	mustBeUnbound(t, ctx, c)
}

// TestBindingReplay: a signed binding works once, on the backend it names,
// and only if it is newer than everything that backend accepted before.
func TestBindingReplay(t *testing.T) {
	pg := isolatedUpstream(t)
	ctx := ctxT(t, 30*time.Second)
	t.Run("on another backend", func(t *testing.T) {
		a, b := directIso(t, pg), directIso(t, pg)
		forA := bindArgs(isoBinder, "globex", a.PgConn().PID(), time.Now())
		assertSQLState(t, bindDirect(ctx, b, forA), "42501")
		if err := bindDirect(ctx, a, forA); err != nil { // it is good where it belongs
			t.Fatal(err)
		}
		mustSee(t, ctx, a, "globex", map[string]int{"globex": 2})
	})
	t.Run("an older binding of this backend", func(t *testing.T) {
		c := directIso(t, pg)
		pid, t0 := c.PgConn().PID(), time.Now()
		globex := bindArgs(isoBinder, "globex", pid, t0)
		if err := bindDirect(ctx, c, globex); err != nil {
			t.Fatal(err)
		}
		if err := bindDirect(ctx, c, bindArgs(isoBinder, "acme", pid, t0.Add(time.Microsecond))); err != nil {
			t.Fatal(err)
		}
		mustSee(t, ctx, c, "acme", map[string]int{"acme": 2})
		assertSQLState(t, bindDirect(ctx, c, globex), "42501")
		mustBeUnbound(t, ctx, c)
	})
	t.Run("the same binding twice", func(t *testing.T) {
		c := directIso(t, pg)
		acme := bindArgs(isoBinder, "acme", c.PgConn().PID(), time.Now())
		if err := bindDirect(ctx, c, acme); err != nil {
			t.Fatal(err)
		}
		assertSQLState(t, bindDirect(ctx, c, acme), "42501")
	})
	t.Run("issued before the session began", func(t *testing.T) {
		// As a binding issued to an earlier backend that had this pid
		// would be: still within binding_max_age, but older than this
		// session (less the clock skew allowed).
		c := directIso(t, pg)
		var started time.Time
		if err := c.QueryRow(ctx, "SELECT backend_start FROM pg_stat_get_activity(pg_backend_pid())").Scan(&started); err != nil {
			t.Fatal(err)
		}
		pid := c.PgConn().PID()
		assertSQLState(t, bindDirect(ctx, c, bindArgs(isoBinder, "globex", pid, started.Add(-10*time.Minute))), "42501")
		mustBeUnbound(t, ctx, c)
		if err := bindDirect(ctx, c, bindArgs(isoBinder, "globex", pid, time.Now())); err != nil {
			t.Fatal(err)
		}
	})
}

// TestBindingPidReuse: a backend that gets the pid of one bound to globex
// starts bound to no tenant. Linux gives the next process the pid after
// /proc/sys/kernel/ns_last_pid, which root may set; elsewhere the test is
// skipped.
func TestBindingPidReuse(t *testing.T) {
	pg := isolatedUpstream(t)
	ctx := ctxT(t, 60*time.Second)
	first := directIso(t, pg)
	pid := first.PgConn().PID()
	if err := bindDirect(ctx, first, bindArgs(isoBinder, "globex", pid, time.Now())); err != nil {
		t.Fatal(err)
	}
	mustSee(t, ctx, first, "globex", map[string]int{"globex": 2})
	if err := first.Close(ctx); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 10*time.Second, func() error {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			return fmt.Errorf("backend %d still running", pid)
		}
		return nil
	})
	var reused *pgx.Conn
	for i := 0; i < 50 && reused == nil; i++ {
		if err := os.WriteFile("/proc/sys/kernel/ns_last_pid", []byte(strconv.Itoa(int(pid)-1)), 0); err != nil {
			t.Skipf("cannot choose the next pid: %v", err)
		}
		c := directIso(t, pg)
		if c.PgConn().PID() == pid {
			reused = c
		} else {
			c.Close(ctx)
		}
	}
	if reused == nil {
		t.Skip("no backend got the reused pid in 50 tries (other processes forked first)")
	}
	mustBeUnbound(t, ctx, reused)
}

// TestBindingCancelledMidSwitch: a bind that is cancelled half-way (here
// while it waits to register a new tenant) leaves the session bound to no
// tenant, not to the previous one.
func TestBindingCancelledMidSwitch(t *testing.T) {
	pg := isolatedUpstream(t)
	ctx := ctxT(t, 30*time.Second)
	admin, err := pgx.Connect(ctx, pg.AdminURL("iso"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	c := directIso(t, pg)
	pid := c.PgConn().PID()
	if err := bindDirect(ctx, c, bindArgs(isoBinder, "acme", pid, time.Now())); err != nil {
		t.Fatal(err)
	}
	mustSee(t, ctx, c, "acme", map[string]int{"acme": 2})
	// An uncommitted registration of the same new tenant makes the bind wait.
	tx, err := admin.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(ctx, "INSERT INTO tenantguard.tenant (name) VALUES ('newco')"); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- bindDirect(ctx, c, bindArgs(isoBinder, "newco", pid, time.Now())) }()
	harness.Eventually(t, 10*time.Second, func() error {
		var waiting bool
		if err := admin.QueryRow(ctx, "SELECT wait_event_type IS NOT DISTINCT FROM 'Lock' FROM pg_stat_activity WHERE pid = $1", pid).Scan(&waiting); err != nil {
			return err
		}
		if !waiting {
			return errors.New("bind not waiting yet")
		}
		return nil
	})
	if _, err := admin.Exec(ctx, "SELECT pg_cancel_backend($1)", pid); err != nil {
		t.Fatal(err)
	}
	assertSQLState(t, <-done, "57014")
	// Cancelled after it unbound: no tenant (the register is 0, which no
	// registered tenant has).
	mustSee(t, ctx, c, "", map[string]int{})
}

// TestBindingDroppedMidSwitch: a server connection dropped between its
// binding and its first statement takes the binding with it; the next
// transaction, on another connection, is bound afresh.
func TestBindingDroppedMidSwitch(t *testing.T) {
	pg := isolatedUpstream(t)
	ctx := ctxT(t, 30*time.Second)
	// The sidecar's batch, cut after the binding: bind, Sync, then the
	// socket closes without a Terminate.
	c := directIso(t, pg)
	pid := c.PgConn().PID()
	if err := bindDirect(ctx, c, bindArgs(isoBinder, "globex", pid, time.Now())); err != nil {
		t.Fatal(err)
	}
	hj, err := c.PgConn().Hijack()
	if err != nil {
		t.Fatal(err)
	}
	hj.Conn.Close()
	admin, err := pgx.Connect(ctx, pg.AdminURL("iso"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	harness.Eventually(t, 10*time.Second, func() error {
		var n int
		if err := admin.QueryRow(ctx, "SELECT count(*)::int FROM pg_stat_activity WHERE pid = $1", pid).Scan(&n); err != nil || n != 0 {
			return fmt.Errorf("backend %d still there (%v)", pid, err)
		}
		return nil
	})
	// Through the sidecar: a pool of one, its connection killed after a
	// transaction bound it to acme; globex and acme are bound afresh.
	p := startIsolated(t, func(c *proxypgConfig) { c.PoolSize = 1 })
	a := p.connect(t, p.acmeURL())
	mustSee(t, ctx, a, "acme", map[string]int{"acme": 2})
	if _, err := admin.Exec(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1 AND datname = 'iso'", isoRole); err != nil {
		t.Fatal(err)
	}
	// A transaction that met the dead connection may fail (the upstream
	// died under it); the next one gets a new connection, bound afresh.
	harness.Eventually(t, 10*time.Second, func() error {
		g, err := pgx.Connect(ctx, p.url("globex", globexSecret))
		if err != nil {
			return err
		}
		defer g.Close(context.Background())
		seen, cur, err := boundView(ctx, g)
		if err != nil {
			return err
		}
		if cur != "globex" || fmt.Sprint(seen) != fmt.Sprint(map[string]int{"globex": 2}) {
			t.Fatalf("globex after a lost server connection: bound to %q seeing %v", cur, seen)
		}
		return nil
	})
	a = p.connect(t, p.acmeURL())
	mustSee(t, ctx, a, "acme", map[string]int{"acme": 2})
}

// TestBindingResets: RESET ALL, DISCARD ALL and DISCARD SEQUENCES leave a
// session bound to no tenant (never to another), and the sidecar binds
// again after its own resets.
func TestBindingResets(t *testing.T) {
	pg := isolatedUpstream(t)
	ctx := ctxT(t, 60*time.Second)
	t.Run("direct", func(t *testing.T) {
		c := directIso(t, pg)
		pid := c.PgConn().PID()
		at := time.Now()
		for _, q := range []string{"RESET ALL", "DISCARD ALL", "DISCARD SEQUENCES", "RESET tenantguard.bound"} {
			at = at.Add(time.Millisecond)
			if err := bindDirect(ctx, c, bindArgs(isoBinder, "acme", pid, at)); err != nil {
				t.Fatalf("bind before %s: %v", q, err)
			}
			mustSee(t, ctx, c, "acme", map[string]int{"acme": 2})
			if _, err := c.Exec(ctx, q, pgx.QueryExecModeSimpleProtocol); err != nil {
				t.Fatal(err)
			}
			mustBeUnbound(t, ctx, c)
		}
	})
	t.Run("transaction pooling reset", func(t *testing.T) {
		// A session SET makes the sidecar reset the connection
		// (… RESET ALL; … DISCARD SEQUENCES) before reuse.
		p := startIsolated(t, func(c *proxypgConfig) { c.PoolSize = 1 })
		a := p.connect(t, p.acmeURL())
		if _, err := a.Exec(ctx, "SET work_mem = '7777kB'", pgx.QueryExecModeSimpleProtocol); err != nil {
			t.Fatal(err)
		}
		mustSee(t, ctx, a, "acme", map[string]int{"acme": 2})
		g := p.connect(t, p.url("globex", globexSecret))
		mustSee(t, ctx, g, "globex", map[string]int{"globex": 2})
	})
	t.Run("session pooling DISCARD ALL", func(t *testing.T) {
		p := startIsolated(t, func(c *proxypgConfig) { c.PoolSize = 1; c.PoolMode = proxypg.PoolSession })
		for _, tc := range []struct{ tenant, secret string }{{"acme", acmeSecret}, {"globex", globexSecret}, {"acme", acmeSecret}} {
			c, err := pgx.Connect(ctx, p.url(tc.tenant, tc.secret))
			if err != nil {
				t.Fatal(err)
			}
			mustSee(t, ctx, c, tc.tenant, map[string]int{tc.tenant: 2})
			c.Close(ctx)
		}
	})
}

// TestDefaultTenantColumn: an INSERT that leaves the tenant column out
// stores the bound tenant; one that names another tenant fails the
// policy's WITH CHECK.
func TestDefaultTenantColumn(t *testing.T) {
	pg := isolatedUpstream(t)
	p := startIsolated(t, nil)
	ctx := ctxT(t, 30*time.Second)
	before, err := globexState(ctx, pg)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := pgx.Connect(ctx, pg.AdminURL("iso"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	for _, m := range execModes {
		t.Run(m.name, func(t *testing.T) {
			cfg, err := pgx.ParseConfig(p.acmeURL())
			if err != nil {
				t.Fatal(err)
			}
			cfg.DefaultQueryExecMode = m.mode
			c, err := pgx.ConnectConfig(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close(context.Background())
			item := "default-" + m.name
			defer func() {
				admin.Exec(context.Background(), "DELETE FROM orders WHERE item = $1", item)
				admin.Exec(context.Background(), "DELETE FROM events WHERE what = $1", item)
			}()
			if _, err := c.Exec(ctx, "INSERT INTO orders (item) VALUES ($1)", item); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Exec(ctx, "INSERT INTO events (at, what) VALUES ('2026-06-01', $1)", item); err != nil {
				t.Fatal(err)
			}
			var owner, evOwner string
			if err := admin.QueryRow(ctx, "SELECT (SELECT tenant_id FROM orders WHERE item = $1), (SELECT tenant_id FROM events WHERE what = $1)", item).Scan(&owner, &evOwner); err != nil {
				t.Fatal(err)
			}
			if owner != "acme" || evOwner != "acme" {
				t.Fatalf("stored tenant %q (orders), %q (events), want acme", owner, evOwner)
			}
			_, err = c.Exec(ctx, "INSERT INTO orders (tenant_id, item) VALUES ('globex', $1)", item+"-planted")
			pe := assertSQLState(t, err, "42501")
			if !strings.Contains(pe.Message, "row-level security") {
				t.Fatalf("refused by %q, want the row-level security policy", pe.Message)
			}
		})
	}
	if after, err := globexState(ctx, pg); err != nil || after != before {
		t.Fatalf("globex's rows changed: %q -> %q (%v)", before, after, err)
	}
	// Another role's session, never bound, gets NULL from the default: the
	// NOT NULL violation it got before bootstrap, not a permission error.
	_, err = admin.Exec(ctx, "INSERT INTO orders (item) VALUES ('by the administrator')")
	assertSQLState(t, err, "23502")
	// A default the administrator set is kept, with a warning.
	if err := pg.Exec(ctx, "iso", "ALTER TABLE orders ALTER COLUMN tenant_id SET DEFAULT 'acme'"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		pg.Exec(context.Background(), "iso", "ALTER TABLE orders ALTER COLUMN tenant_id SET DEFAULT tenantguard.current_tenant()")
	})
	if err := rls.Bootstrap(ctx, admin, isoRole, isoPolicy(t), isoBinder); err != nil {
		t.Fatal(err)
	}
	var def string
	if err := admin.QueryRow(ctx, "SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef WHERE adrelid = 'orders'::regclass AND adnum = (SELECT attnum FROM pg_attribute WHERE attrelid = 'orders'::regclass AND attname = 'tenant_id')").Scan(&def); err != nil {
		t.Fatal(err)
	}
	if def != "'acme'::text" {
		t.Fatalf("bootstrap replaced the administrator's default with %s", def)
	}
	w, err := p.srv.CheckIsolation(ctx)
	if err != nil || !strings.Contains(strings.Join(w, "\n"), "tenant column tenant_id of orders defaults to 'acme'::text") {
		t.Fatalf("check: %v, warnings %q", err, w)
	}
}

// TestBindingConcurrentSwitches: many server connections switching
// tenants at once, through the sidecar and straight to the database
// (registering new tenants as they go), each see only their own tenant.
func TestBindingConcurrentSwitches(t *testing.T) {
	pg := isolatedUpstream(t)
	ctx := ctxT(t, 2*time.Minute)
	t.Run("through the sidecar", func(t *testing.T) {
		p := startIsolated(t, func(c *proxypgConfig) { c.PoolSize = 3 })
		var wg sync.WaitGroup
		errs := make(chan error, 12)
		for i := 0; i < 12; i++ {
			tenant, secret := "acme", acmeSecret
			if i%2 == 1 {
				tenant, secret = "globex", globexSecret
			}
			c := p.connect(t, p.url(tenant, secret))
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := 0; j < 40; j++ {
					seen, cur, err := boundView(ctx, c)
					if err != nil || cur != tenant || len(seen) != 1 || seen[tenant] != 2 {
						errs <- fmt.Errorf("%s, transaction %d: bound to %q seeing %v (%v)", tenant, j, cur, seen, err)
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
	t.Run("through the sidecar, statements evicted", func(t *testing.T) {
		// Two server-side statements per connection: three new statements
		// of one tenant evict the binding's own, which the next switch
		// prepares again.
		p := startIsolated(t, func(c *proxypgConfig) { c.PoolSize = 1; c.MaxPrepared = 2 })
		a, g := p.connect(t, p.acmeURL()), p.connect(t, p.url("globex", globexSecret))
		for j := 0; j < 5; j++ {
			for _, c := range []struct {
				conn   *pgx.Conn
				tenant string
			}{{a, "acme"}, {g, "globex"}} {
				for k := 0; k < 3; k++ {
					var n int
					q := fmt.Sprintf("SELECT count(*)::int + %d - %d FROM orders WHERE tenant_id = $1", j, k) // a new statement each time
					if err := c.conn.QueryRow(ctx, q, c.tenant).Scan(&n); err != nil || n != 2+j-k {
						t.Fatalf("%s, round %d: %d (%v)", c.tenant, j, n, err)
					}
				}
				mustSee(t, ctx, c.conn, c.tenant, map[string]int{c.tenant: 2})
			}
		}
	})
	t.Run("straight to the database", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan error, 16)
		for i := 0; i < 16; i++ {
			c := directIso(t, pg)
			wg.Add(1)
			go func() {
				defer wg.Done()
				pid, at := c.PgConn().PID(), time.Now()
				for j := 0; j < 30; j++ {
					tenant, want := []string{"acme", "globex", fmt.Sprintf("concurrent-%d", j%5)}[j%3], 2
					if j%3 == 2 {
						want = 0
					}
					at = at.Add(time.Microsecond)
					if err := bindDirect(ctx, c, bindArgs(isoBinder, tenant, pid, at)); err != nil {
						errs <- fmt.Errorf("bind %s: %w", tenant, err)
						return
					}
					seen, cur, err := boundView(ctx, c)
					if err != nil || cur != tenant || seen[tenant] != want || len(seen) > 1 {
						errs <- fmt.Errorf("bound to %s: current_tenant %q, sees %v (%v)", tenant, cur, seen, err)
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
}

// TestCheckAuditsBindingObjects: the start-up check fails closed when the
// upstream role could write what the policies trust, or when the binding
// function lost what makes it safe; each case is undone afterwards.
func TestCheckAuditsBindingObjects(t *testing.T) {
	pg := isolatedUpstream(t)
	p := startIsolated(t, nil)
	ctx := ctxT(t, 60*time.Second)
	const bind = "tenantguard.bind(text, integer, bigint, text)"
	for _, tc := range []struct {
		name, breakSQL, undoSQL, want string
	}{
		{"setval on the register", "GRANT UPDATE ON SEQUENCE tenantguard.tenant_binding TO " + isoRole,
			"REVOKE UPDATE ON SEQUENCE tenantguard.tenant_binding FROM " + isoRole, "USAGE or UPDATE on tenantguard.tenant_binding"},
		{"nextval on the issue time", "GRANT USAGE ON SEQUENCE tenantguard.binding_issued_at TO " + isoRole,
			"REVOKE USAGE ON SEQUENCE tenantguard.binding_issued_at FROM " + isoRole, "USAGE or UPDATE on tenantguard.binding_issued_at"},
		{"register owned by the role", "ALTER SEQUENCE tenantguard.tenant_binding OWNER TO " + isoRole,
			"ALTER SEQUENCE tenantguard.tenant_binding OWNER TO postgres", "owns (or is a member of the owner of) tenantguard.tenant_binding"},
		{"registry writable", "GRANT UPDATE ON tenantguard.tenant TO " + isoRole,
			"REVOKE UPDATE ON tenantguard.tenant FROM " + isoRole, "may write tenantguard.tenant"},
		{"registry without RLS", "ALTER TABLE tenantguard.tenant DISABLE ROW LEVEL SECURITY",
			"ALTER TABLE tenantguard.tenant ENABLE ROW LEVEL SECURITY", "tenantguard.tenant lacks row-level security"},
		{"registry with an open policy", "CREATE POLICY open ON tenantguard.tenant USING (true)",
			"DROP POLICY open ON tenantguard.tenant", "another permissive policy"},
		{"bind not SECURITY DEFINER", "ALTER FUNCTION " + bind + " SECURITY INVOKER",
			"ALTER FUNCTION " + bind + " SECURITY DEFINER", "is not SECURITY DEFINER"},
		{"bind without search_path", "ALTER FUNCTION " + bind + " RESET search_path",
			"ALTER FUNCTION " + bind + " SET search_path = pg_catalog, pg_temp", "without a fixed search_path"},
		{"bind owned by the role", "ALTER FUNCTION " + bind + " OWNER TO " + isoRole,
			"ALTER FUNCTION " + bind + " OWNER TO postgres", "owns (or is a member of the owner of) " + bind},
		{"key readable", "GRANT SELECT ON tenantguard.binding_key TO " + isoRole,
			"REVOKE SELECT ON tenantguard.binding_key FROM " + isoRole, "can read or change tenantguard.binding_key"},
		{"another key", "UPDATE tenantguard.binding_key SET ipad = sha256(ipad) || sha256(opad)",
			"", "does not accept this sidecar's binding"},
		{"bind missing", "ALTER FUNCTION " + bind + " RENAME TO bind_moved",
			"ALTER FUNCTION tenantguard.bind_moved(text, integer, bigint, text) RENAME TO bind", "function " + bind + " is missing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := p.srv.CheckIsolation(ctx); err != nil {
				t.Fatalf("before: %v", err)
			}
			if err := pg.Exec(ctx, "iso", tc.breakSQL); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if tc.undoSQL != "" {
					if err := pg.Exec(context.Background(), "iso", tc.undoSQL); err != nil {
						t.Fatal(err)
					}
				}
				// Bootstrap puts back the key and the grants an owner change dropped.
				c, err := pgx.Connect(context.Background(), pg.AdminURL("iso"))
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close(context.Background())
				if err := rls.Bootstrap(context.Background(), c, isoRole, isoPolicy(t), isoBinder); err != nil {
					t.Fatal(err)
				}
			})
			_, err := p.srv.CheckIsolation(ctx)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("check after %q: %v, want a problem containing %q", tc.breakSQL, err, tc.want)
			}
		})
	}
	if _, err := p.srv.CheckIsolation(ctx); err != nil {
		t.Fatalf("after: %v", err)
	}
}

// oldInstallSQL is what pg bootstrap installed before issue #10: a
// PL/pgSQL SECURITY DEFINER current_tenant() verifying a signed setting,
// called by every policy.
const oldInstallSQL = `
CREATE SCHEMA tenantguard;
REVOKE ALL ON SCHEMA tenantguard FROM PUBLIC;
GRANT USAGE ON SCHEMA tenantguard TO ` + isoRole + `;
CREATE TABLE tenantguard.binding_key (id int PRIMARY KEY CHECK (id = 1), ipad bytea NOT NULL, opad bytea NOT NULL, max_age interval NOT NULL);
INSERT INTO tenantguard.binding_key VALUES (1, '\x00', '\x00', '1 hour');
CREATE FUNCTION tenantguard.current_tenant() RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$ BEGIN RETURN NULL; END $fn$;
CREATE TABLE public.orders (id bigserial PRIMARY KEY, tenant_id text NOT NULL, item text NOT NULL);
INSERT INTO public.orders (tenant_id, item) VALUES ('acme', 'a'), ('globex', 'g');
ALTER TABLE public.orders ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.orders FORCE ROW LEVEL SECURITY;
CREATE POLICY tenantguard_isolation ON public.orders AS PERMISSIVE FOR ALL TO PUBLIC
	USING (tenant_id = (SELECT tenantguard.current_tenant())) WITH CHECK (tenant_id = (SELECT tenantguard.current_tenant()));`

// TestBootstrapUpgradesOldInstall: pg bootstrap over an installation of
// the per-statement binding replaces it, and the check then passes
// without the warnings an old installation gets.
func TestBootstrapUpgradesOldInstall(t *testing.T) {
	pg := isolatedUpstream(t)
	ctx := ctxT(t, 60*time.Second)
	if err := pg.Exec(ctx, "postgres", "CREATE DATABASE iso_upgrade"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pg.Exec(context.Background(), "postgres", "DROP DATABASE iso_upgrade WITH (FORCE)") })
	if err := pg.Exec(ctx, "iso_upgrade", oldInstallSQL); err != nil {
		t.Fatal(err)
	}
	snap := isoPolicy(t)
	spec := isoSpec()
	spec.Tables = spec.Tables[:1] // orders only
	upstream := fmt.Sprintf("postgres://%s:%s@127.0.0.1:%d/iso_upgrade?sslmode=disable", isoRole, isoPassword, pg.Port())
	p := startProxyWith(t, pg, spec, func(c *proxypgConfig) {
		c.Databases = []proxypgDatabase{{Name: "app", URL: upstream}}
		c.Binder = isoBinder
	})
	admin, err := pgx.Connect(ctx, pg.AdminURL("iso_upgrade"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	if err := rls.Bootstrap(ctx, admin, isoRole, snap, isoBinder); err == nil {
		t.Fatal("bootstrap with a table the database lacks succeeded") // events is not here
	}
	// The old installation fails the check: nothing can bind.
	if _, err := p.srv.CheckIsolation(ctx); err == nil || !strings.Contains(err.Error(), "tenantguard.bind(text, integer, bigint, text) is missing") {
		t.Fatalf("check of the old installation: %v", err)
	}
	only, err := policy.Compile(spec)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := rls.Bootstrap(ctx, admin, isoRole, only, isoBinder); err != nil {
			t.Fatalf("bootstrap over the old installation, run %d: %v", i+1, err)
		}
	}
	var src string
	var secdef bool
	if err := admin.QueryRow(ctx, `SELECT prosrc, prosecdef FROM pg_proc WHERE oid = 'tenantguard.current_tenant()'::regprocedure`).Scan(&src, &secdef); err != nil {
		t.Fatal(err)
	}
	if secdef || !strings.Contains(src, "tenant_binding") {
		t.Fatalf("current_tenant() not replaced: SECURITY DEFINER %v, body %s", secdef, src)
	}
	w, err := p.srv.CheckIsolation(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s := strings.Join(w, "\n"); strings.Contains(s, "older tenantguard") || strings.Contains(s, "does not default") {
		t.Fatalf("warnings after the upgrade: %s", s)
	}
	c := p.connect(t, p.acmeURL())
	mustSee(t, ctx, c, "acme", map[string]int{"acme": 1})
}

// TestBindingRejectedThenRecovered: when the database rejects the
// sidecar's binding (here: the key in the database changed under it), the
// client's statements fail rather than run under another tenant, and the
// sidecar binds the connection again for the next transaction.
func TestBindingRejectedThenRecovered(t *testing.T) {
	pg := isolatedUpstream(t)
	p := startIsolated(t, func(c *proxypgConfig) { c.PoolSize = 1 })
	ctx := ctxT(t, 30*time.Second)
	rebootstrap := func() {
		c, err := pgx.Connect(context.Background(), pg.AdminURL("iso"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(context.Background())
		if err := rls.Bootstrap(context.Background(), c, isoRole, isoPolicy(t), isoBinder); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(rebootstrap)
	a := p.connect(t, p.acmeURL())
	mustSee(t, ctx, a, "acme", map[string]int{"acme": 2})
	if err := pg.Exec(ctx, "iso", "UPDATE tenantguard.binding_key SET ipad = sha256(ipad) || sha256(opad)"); err != nil {
		t.Fatal(err)
	}
	g := p.connect(t, p.url("globex", globexSecret))
	_, err := tenantRows(ctx, g)
	assertSQLState(t, err, "55000") // not bound: neither globex nor still acme
	rebootstrap()
	mustSee(t, ctx, g, "globex", map[string]int{"globex": 2})
	mustSee(t, ctx, a, "acme", map[string]int{"acme": 2})
}

// TestBindingCannotRun: when the bind cannot run at all (here EXECUTE on
// it was revoked while the sidecar serves), the next tenant's statements
// fail; they never run under the tenant the connection served before.
func TestBindingCannotRun(t *testing.T) {
	pg := isolatedUpstream(t)
	p := startIsolated(t, func(c *proxypgConfig) { c.PoolSize = 1 })
	ctx := ctxT(t, 30*time.Second)
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), pg.AdminURL("iso"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(context.Background())
		if err := rls.Bootstrap(context.Background(), c, isoRole, isoPolicy(t), isoBinder); err != nil {
			t.Fatal(err)
		}
	})
	a := p.connect(t, p.acmeURL())
	mustSee(t, ctx, a, "acme", map[string]int{"acme": 2})
	if err := pg.Exec(ctx, "iso", "REVOKE EXECUTE ON FUNCTION tenantguard.bind(text, integer, bigint, text) FROM "+isoRole); err != nil {
		t.Fatal(err)
	}
	g := p.connect(t, p.url("globex", globexSecret))
	seen, err := tenantRows(ctx, g)
	if err == nil {
		t.Fatalf("globex on a connection whose bind could not run sees %v", seen)
	}
	assertSQLState(t, err, "55000")
}
