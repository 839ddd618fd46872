package pg_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantguard/tenantguard/policy"
	proxypg "github.com/tenantguard/tenantguard/proxy/pg"
	"github.com/tenantguard/tenantguard/test/harness"
)

// setPolicy compiles spec and makes it the proxy's policy, as the
// sidecar's SetPolicy does: swap, then reconcile.
func (p *proxy) setPolicy(t *testing.T, spec policy.Spec) {
	t.Helper()
	p.swap(mustCompile(t, spec))
}

func (p *proxy) swap(snap *policy.Snapshot) {
	p.store.Swap(snap)
	p.srv.Reconcile()
}

func mustCompile(t *testing.T, spec policy.Spec) *policy.Snapshot {
	t.Helper()
	snap, err := policy.Compile(spec)
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// isoSpecWith is isoSpec with acme's entry changed by change, or without
// acme when change is nil.
func isoSpecWith(change func(*policy.TenantSpec)) policy.Spec {
	spec := isoSpec()
	var tenants []policy.TenantSpec
	for _, ts := range spec.Tenants {
		if ts.ID == "acme" {
			if change == nil {
				continue
			}
			change(&ts)
		}
		tenants = append(tenants, ts)
	}
	spec.Tenants = tenants
	return spec
}

// TestPolicyRemovesTenant: a snapshot without acme ends acme's connections
// at once (FATAL 28000), aborting its open transaction on a server
// connection that is closed, not pooled; acme's new logins are refused as
// an unknown user's; globex's idle connection and its transaction in
// progress go on and commit. With acme back, acme logs in again.
func TestPolicyRemovesTenant(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	admin, err := pgx.Connect(ctx, harnessAdmin(t))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	for _, mode := range []proxypg.PoolMode{proxypg.PoolTransaction, proxypg.PoolSession} {
		t.Run(string(mode), func(t *testing.T) {
			p := startIsolated(t, func(c *proxypgConfig) { c.PoolMode = mode })
			acmeIdle := p.connect(t, p.acmeURL())
			acmeTx := p.connect(t, p.acmeURL())
			globexIdle := p.connect(t, p.url("globex", globexSecret))
			globexTx := p.connect(t, p.url("globex", globexSecret))
			mustWork(t, ctx, acmeIdle)

			stamp := time.Now().UnixNano()
			acmeItem, globexItem := fmt.Sprintf("removed-acme-%d", stamp), fmt.Sprintf("removed-globex-%d", stamp)
			t.Cleanup(func() { // other tests count each tenant's orders
				if _, err := admin.Exec(context.Background(), "DELETE FROM orders WHERE item IN ($1, $2)", acmeItem, globexItem); err != nil {
					t.Errorf("clean up: %v", err)
				}
			})
			var pid int
			for _, q := range []struct {
				c   *pgx.Conn
				sql string
			}{
				{acmeTx, "BEGIN"},
				{acmeTx, "INSERT INTO orders (tenant_id, item) VALUES ('acme', '" + acmeItem + "')"},
				{globexTx, "BEGIN"},
				{globexTx, "INSERT INTO orders (tenant_id, item) VALUES ('globex', '" + globexItem + "')"},
			} {
				if _, err := q.c.Exec(ctx, q.sql); err != nil {
					t.Fatalf("%s: %v", q.sql, err)
				}
			}
			if err := acmeTx.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
				t.Fatal(err)
			}

			p.setPolicy(t, isoSpecWith(nil))

			// acme's connections have their FATAL waiting, unasked.
			for _, c := range []*pgx.Conn{acmeIdle, acmeTx} {
				rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				_, err := c.PgConn().ReceiveMessage(rctx)
				cancel()
				pe := assertSQLState(t, err, "28000")
				if want := "tenantguard: tenant acme is suspended or no longer in the policy"; pe.Severity != "FATAL" || pe.Message != want {
					t.Fatalf("got %s %q, want FATAL %q", pe.Severity, pe.Message, want)
				}
				if !c.IsClosed() {
					t.Fatal("acme's connection still open")
				}
			}
			// Its transaction's server connection was closed, not pooled.
			harness.Eventually(t, 5*time.Second, func() error {
				var n int
				if err := admin.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid).Scan(&n); err != nil {
					return err
				}
				if n != 0 {
					return fmt.Errorf("backend %d of acme's transaction still there", pid)
				}
				return nil
			})
			// New logins: the same answer as for a tenant never heard of.
			_, err := pgx.Connect(ctx, p.acmeURL())
			pe := assertSQLState(t, err, "28P01")
			if pe.Message != `password authentication failed for user "acme"` {
				t.Fatalf("acme login after removal: %q", pe.Message)
			}
			// globex saw nothing: its idle connection works, its
			// transaction goes on and commits.
			mustWork(t, ctx, globexIdle)
			if _, err := globexTx.Exec(ctx, "UPDATE orders SET amount = 7 WHERE item = $1", globexItem); err != nil {
				t.Fatalf("globex's transaction after the swap: %v", err)
			}
			if _, err := globexTx.Exec(ctx, "COMMIT"); err != nil {
				t.Fatalf("globex's COMMIT after the swap: %v", err)
			}
			var rows []string
			if err := func() error {
				r, err := admin.Query(ctx, "SELECT tenant_id || ':' || amount FROM orders WHERE item IN ($1, $2)", acmeItem, globexItem)
				if err != nil {
					return err
				}
				rows, err = pgx.CollectRows(r, pgx.RowTo[string])
				return err
			}(); err != nil {
				t.Fatal(err)
			}
			if len(rows) != 1 || rows[0] != "globex:7" {
				t.Fatalf("rows after the swap: %q, want only globex's committed one", rows)
			}
			if got := p.metric(t, "tenantguard_pg_sessions_ended_total", map[string]string{"reason": "tenant_removed"}); got != 2 {
				t.Fatalf("sessions_ended_total{tenant_removed} = %v, want 2", got)
			}

			// acme back: it logs in and sees its own rows only.
			p.setPolicy(t, isoSpec())
			again := p.connect(t, p.acmeURL())
			seen, err := tenantRows(ctx, again)
			if err != nil || seen["acme"] == 0 || len(seen) != 1 {
				t.Fatalf("acme after coming back sees %v (%v)", seen, err)
			}
		})
	}
}

// TestPolicyFollowedPerTransaction: a change to a tenant's policy applies
// on its open connection from the next transaction, with no reconnect:
// permissions and statement timeout. A transaction in
// progress keeps the policy it started with.
func TestPolicyFollowedPerTransaction(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	readOnly := func(ts *policy.TenantSpec) { ts.Allow = &policy.Permissions{Read: true} }
	const insert = "INSERT INTO orders (tenant_id, item) VALUES ('acme', 'per-transaction')"
	for _, mode := range []proxypg.PoolMode{proxypg.PoolTransaction, proxypg.PoolSession} {
		t.Run(string(mode), func(t *testing.T) {
			p := startIsolated(t, func(c *proxypgConfig) { c.PoolMode = mode })
			c := p.connect(t, p.acmeURL())
			other := p.connect(t, p.url("globex", globexSecret))

			// Changed inside a transaction: that transaction keeps its policy.
			tx, err := c.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, "SELECT 1"); err != nil {
				t.Fatal(err)
			}
			p.setPolicy(t, isoSpecWith(readOnly))
			if _, err := tx.Exec(ctx, insert); err != nil {
				t.Fatalf("INSERT in the transaction that began before the change: %v", err)
			}
			if err := tx.Rollback(ctx); err != nil {
				t.Fatal(err)
			}

			for _, tc := range []struct {
				name   string
				acme   func(*policy.TenantSpec)
				sql    string
				code   string // SQLSTATE wanted; "" = served
				value  string // for a query returning one text value
				detail string // wanted in the error's DETAIL; "" = none
			}{
				{"write revoked: INSERT refused", readOnly, insert, "42501", "", ""},
				{"write revoked: SELECT served", readOnly, "SELECT 'read'", "", "read", ""},
				{"write restored", func(*policy.TenantSpec) {}, insert, "", "", ""},
				{"statement timeout lowered", func(ts *policy.TenantSpec) { ts.Limits.StatementTimeout = 300 * time.Millisecond }, "SHOW statement_timeout", "", "300ms", ""},
				{"statement timeout enforced", func(ts *policy.TenantSpec) { ts.Limits.StatementTimeout = 300 * time.Millisecond }, "SELECT pg_sleep(1)::text", "57014", "", ""},
				{"statement timeout removed", func(ts *policy.TenantSpec) { ts.Limits.StatementTimeout = 0 }, "SHOW statement_timeout", "", "0", ""},
				{"statement timeout back", func(*policy.TenantSpec) {}, "SHOW statement_timeout", "", "1500ms", ""},
			} {
				t.Run(tc.name, func(t *testing.T) {
					p.setPolicy(t, isoSpecWith(tc.acme))
					// The next transaction on the same connection; rolled
					// back, so nothing is left for other tests.
					tx, err := c.Begin(ctx)
					if err != nil {
						t.Fatal(err)
					}
					defer tx.Rollback(ctx)
					var got string
					if tc.value != "" {
						err = tx.QueryRow(ctx, tc.sql).Scan(&got)
					} else {
						_, err = tx.Exec(ctx, tc.sql)
					}
					switch {
					case tc.code != "":
						pe := assertSQLState(t, err, tc.code)
						if tc.code == "42501" && !strings.Contains(pe.Message, "rule permissions") {
							t.Fatalf("message %q", pe.Message)
						}
						if !strings.Contains(pe.Detail, tc.detail) || tc.detail == "" && pe.Detail != "" {
							t.Fatalf("detail %q, want %q", pe.Detail, tc.detail)
						}
					case err != nil:
						t.Fatal(err)
					case got != tc.value:
						t.Fatalf("got %q, want %q", got, tc.value)
					}
					mustWork(t, ctx, other)
				})
			}
		})
	}
}

// TestPolicyConstraintDetailFollows: whether a tenant sees the DETAIL of
// a unique violation follows the policy from the next transaction. (Under
// row-level security PostgreSQL leaves the DETAIL out itself, so this runs
// against a table without it.)
func TestPolicyConstraintDetailFollows(t *testing.T) {
	spec := func(show bool) policy.Spec {
		return policy.Spec{Tenants: []policy.TenantSpec{
			{ID: "acme", Passwords: []string{acmeSecret}, ShowConstraintDetail: show},
			{ID: "globex", Passwords: []string{globexSecret}},
		}}
	}
	p := startProxyWith(t, upstream(t), spec(false), nil)
	ctx := ctxT(t, 30*time.Second)
	c := p.connect(t, p.acmeURL())
	for _, tc := range []struct {
		name   string
		show   bool
		detail string
	}{
		{"hidden", false, ""},
		{"shown", true, "Key (id)=(1) already exists."},
		{"hidden again", false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p.setPolicy(t, spec(tc.show))
			_, err := c.Exec(ctx, "INSERT INTO items (id, tenant, name) VALUES (1, 'acme', 'duplicate')")
			if pe := assertSQLState(t, err, "23505"); pe.Detail != tc.detail {
				t.Fatalf("detail %q, want %q", pe.Detail, tc.detail)
			}
		})
	}
}

// TestPolicyMaxTransactionsFollows: a tenant's share of the pool follows
// the policy from its next transaction.
func TestPolicyMaxTransactionsFollows(t *testing.T) {
	p := startIsolated(t, nil)
	ctx := ctxT(t, 30*time.Second)
	holder, second := p.connect(t, p.acmeURL()), p.connect(t, p.acmeURL())
	for _, tc := range []struct {
		name   string
		limit  int
		queues bool
	}{
		{"capped at one", 1, true},
		{"uncapped", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p.setPolicy(t, isoSpecWith(func(ts *policy.TenantSpec) { ts.Limits.MaxTransactions = tc.limit }))
			tx, err := holder.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, "SELECT 1"); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() {
				_, err := second.Exec(ctx, "SELECT 1")
				done <- err
			}()
			if tc.queues {
				harness.Eventually(t, 5*time.Second, func() error {
					if p.metric(t, "tenantguard_pg_pool_waiting_clients", nil) != 1 {
						return errors.New("acme's second transaction not queued")
					}
					return nil
				})
				select {
				case err := <-done:
					t.Fatalf("acme's second transaction ran past its cap of 1 (%v)", err)
				default:
				}
			} else if err := <-done; err != nil {
				t.Fatalf("uncapped second transaction: %v", err)
			}
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			if tc.queues {
				if err := <-done; err != nil {
					t.Fatalf("queued transaction: %v", err)
				}
			}
		})
	}
}

// TestPolicySwapsUnderLoad: globex's clients run transactions flat out
// while the policy changes 50 times (acme removed and back, globex's own
// statement timeout changed, acme's permissions changed): globex sees no
// error at all, and acme's connection is ended.
func TestPolicySwapsUnderLoad(t *testing.T) {
	p := startIsolated(t, nil)
	ctx := ctxT(t, 60*time.Second)
	snaps := []*policy.Snapshot{
		mustCompile(t, isoSpecWith(nil)),
		mustCompile(t, isoSpec()),
		mustCompile(t, func() policy.Spec {
			spec := isoSpecWith(func(ts *policy.TenantSpec) { ts.Allow = &policy.Permissions{Read: true} })
			for i := range spec.Tenants {
				if spec.Tenants[i].ID == "globex" {
					spec.Tenants[i].Limits.StatementTimeout = 10 * time.Second
				}
			}
			return spec
		}()),
	}
	acme := p.connect(t, p.acmeURL())
	mustWork(t, ctx, acme)

	const workers = 4
	var done atomic.Int64
	errs := make(chan error, workers)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < workers; i++ {
		c := p.connect(t, p.url("globex", globexSecret))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				err := pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
					var n int
					if err := tx.QueryRow(ctx, "SELECT count(*) FROM orders").Scan(&n); err != nil {
						return err
					}
					if n < 2 {
						return fmt.Errorf("globex sees %d orders", n)
					}
					_, err := tx.Exec(ctx, "UPDATE orders SET amount = amount WHERE item = 'hammock'")
					return err
				})
				if err != nil {
					errs <- err
					return
				}
				done.Add(1)
			}
		}()
	}
	for i := 0; i < 50; i++ {
		before := done.Load()
		p.swap(snaps[i%len(snaps)])
		// Let globex's clients through a few transactions under this policy.
		harness.Eventually(t, 10*time.Second, func() error {
			select {
			case err := <-errs:
				t.Fatalf("globex client failed after %d swaps: %v", i, err)
			default:
			}
			if done.Load() < before+workers {
				return errors.New("globex clients not progressing")
			}
			return nil
		})
	}
	close(stop)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatalf("globex client failed: %v", err)
	default:
	}
	t.Logf("%d globex transactions across 50 swaps", done.Load())
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := acme.PgConn().ReceiveMessage(rctx)
	assertSQLState(t, err, "28000")
}

// TestPolicyRecheckedAtBind: a statement prepared while the tenant could
// write (pgx caches it and later sends only Bind/Execute) is refused at its
// next Bind once the policy revokes writes, named or unnamed, and works
// again once writes are restored.
func TestPolicyRecheckedAtBind(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	readOnly := func(ts *policy.TenantSpec) { ts.Allow = &policy.Permissions{Read: true} }
	const insert = "INSERT INTO orders (tenant_id, item) VALUES ($1, 'bind-recheck')"
	p := startIsolated(t, nil)
	c := p.connect(t, p.acmeURL())
	other := p.connect(t, p.url("globex", globexSecret))
	run := func() error {
		tx, err := c.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		_, err = tx.Exec(ctx, insert, "acme") // cached: Parse once, then Bind only
		return err
	}
	runUnnamed := func() error {
		pc := c.PgConn()
		if _, err := pc.Prepare(ctx, "", insert, nil); err != nil {
			return err
		}
		defer pc.Exec(ctx, "ROLLBACK").Close()
		if err := pc.Exec(ctx, "BEGIN").Close(); err != nil {
			t.Fatal(err)
		}
		_, err := pc.ExecPrepared(ctx, "", [][]byte{[]byte("acme")}, nil, nil).Close()
		return err
	}
	if err := run(); err != nil {
		t.Fatal(err)
	}
	p.setPolicy(t, isoSpecWith(readOnly))
	for i := range 2 { // the statement stays refused, and the connection usable
		pe := assertSQLState(t, run(), "42501")
		if !strings.Contains(pe.Message, "rule permissions") {
			t.Fatalf("run %d: %q", i, pe.Message)
		}
	}
	mustWork(t, ctx, c)
	mustWork(t, ctx, other)
	p.setPolicy(t, isoSpecWith(func(*policy.TenantSpec) {}))
	if err := run(); err != nil {
		t.Fatalf("after writes are restored: %v", err)
	}
	// The unnamed statement: parsed while allowed, bound after the change.
	pc := c.PgConn()
	if _, err := pc.Prepare(ctx, "", insert, nil); err != nil {
		t.Fatal(err)
	}
	p.setPolicy(t, isoSpecWith(readOnly))
	if err := pc.Exec(ctx, "BEGIN").Close(); err != nil {
		t.Fatal(err)
	}
	_, err := pc.ExecPrepared(ctx, "", [][]byte{[]byte("acme")}, nil, nil).Close()
	_ = pc.Exec(ctx, "ROLLBACK").Close()
	assertSQLState(t, err, "42501")
	assertSQLState(t, runUnnamed(), "42501")
	mustWork(t, ctx, c)
}

// TestPolicyRemovesCredential: a static credential removed from the policy
// (a rotated password) ends the connections that logged in with it, at
// once; compiling the same plaintext credential again does not; globex is
// untouched, and acme logs in with the new credential.
func TestPolicyRemovesCredential(t *testing.T) {
	pg := upstream(t)
	spec := func(acmePassword string) policy.Spec {
		return policy.Spec{Tenants: []policy.TenantSpec{
			{ID: "acme", Passwords: []string{acmePassword}},
			{ID: "globex", Passwords: []string{globexSecret}},
		}}
	}
	p := startProxyWith(t, pg, spec(acmeSecret), nil)
	ctx := ctxT(t, 30*time.Second)
	acme := p.connect(t, p.acmeURL())
	globex := p.connect(t, p.url("globex", globexSecret))
	mustWork(t, ctx, acme)

	// The same policy compiled again (its plaintext hashed again): nothing ends.
	p.setPolicy(t, spec(acmeSecret))
	mustWork(t, ctx, acme)

	p.setPolicy(t, spec("acme-rotated-2"))
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := acme.PgConn().ReceiveMessage(rctx)
	pe := assertSQLState(t, err, "28000")
	if !strings.Contains(pe.Message, "credential this connection logged in with was removed") {
		t.Fatalf("message %q", pe.Message)
	}
	mustWork(t, ctx, globex)
	_, err = pgx.Connect(ctx, p.acmeURL())
	assertSQLState(t, err, "28P01")
	mustWork(t, ctx, p.connect(t, p.url("acme", "acme-rotated-2")))
	if got := p.metric(t, "tenantguard_pg_sessions_ended_total", map[string]string{"reason": "credential_removed"}); got != 1 {
		t.Fatalf("sessions_ended_total{credential_removed} = %v", got)
	}
}
