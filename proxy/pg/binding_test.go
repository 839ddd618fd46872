package pg_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantguard/tenantguard/internal/fixture/pgcluster"
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
