package pg_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantguard/tenantguard/policy"
	proxypg "github.com/tenantguard/tenantguard/proxy/pg"
	"github.com/tenantguard/tenantguard/test/harness"
	"github.com/tenantguard/tenantguard/test/sessionfake"
)

// TestSessionEnd: when a token's session ends, its connection gets a FATAL
// 28000 and is closed: at once in immediate mode, aborting a transaction
// in progress and discarding its server connection; after the transaction
// in boundary mode. The other tenant's connection is untouched, and the
// lease is closed exactly once.
func TestSessionEnd(t *testing.T) {
	pg := upstream(t)
	ctx := ctxT(t, 60*time.Second)
	admin, err := pgx.Connect(ctx, pg.AdminURL("app"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)

	for _, tc := range []struct {
		name   string
		mode   policy.SessionEndMode
		pool   proxypg.PoolMode
		inTx   bool
		tls    bool
		reason error
	}{
		{"immediate idle", policy.SessionEndImmediate, proxypg.PoolTransaction, false, false, policy.ErrSessionEnded},
		{"boundary idle", policy.SessionEndBoundary, proxypg.PoolTransaction, false, true, policy.ErrSessionEnded},
		{"boundary idle session pooling", policy.SessionEndBoundary, proxypg.PoolSession, false, false, policy.ErrSessionStoreLost},
		{"immediate in transaction", policy.SessionEndImmediate, proxypg.PoolTransaction, true, true, policy.ErrSessionEnded},
		{"boundary in transaction", policy.SessionEndBoundary, proxypg.PoolTransaction, true, false, policy.ErrSessionEnded},
		{"boundary in transaction TLS", policy.SessionEndBoundary, proxypg.PoolTransaction, true, true, policy.ErrSessionEnded},
		{"boundary in transaction session pooling", policy.SessionEndBoundary, proxypg.PoolSession, true, false, policy.ErrSessionEnded},
		{"immediate in transaction session pooling", policy.SessionEndImmediate, proxypg.PoolSession, true, false, policy.ErrSessionEnded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := sessionfake.New()
			p := startTokenProxy(t, pg, fs, func(c *proxypg.Config) {
				c.SessionEnd, c.PoolMode, c.PoolSize = tc.mode, tc.pool, 4
			})
			tok := fs.Issue("acme", nil)
			sslmode := map[bool]string{true: "require", false: "disable"}[tc.tls]
			c := p.connect(t, p.url("acme", tok, "sslmode", sslmode))
			other := p.connect(t, p.url("globex", fs.Issue("globex", nil)))
			l := fs.Lease(t, tok, 0)
			item := fmt.Sprintf("end-%d", time.Now().UnixNano())
			t.Cleanup(func() { // other tests sum acme's quantities
				if _, err := admin.Exec(context.Background(), "DELETE FROM items WHERE name = $1", item); err != nil {
					t.Errorf("clean up: %v", err)
				}
			})

			var pid int
			if tc.inTx {
				if _, err := c.Exec(ctx, "BEGIN"); err != nil {
					t.Fatal(err)
				}
				if _, err := c.Exec(ctx, "INSERT INTO items (tenant, name) VALUES ('acme', $1)", item); err != nil {
					t.Fatal(err)
				}
				if err := c.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
					t.Fatal(err)
				}
			}
			l.End(tc.reason)
			mustWork(t, ctx, other)

			if tc.inTx && tc.mode == policy.SessionEndBoundary {
				// The transaction in progress goes on and commits.
				if _, err := c.Exec(ctx, "UPDATE items SET qty = 7 WHERE name = $1", item); err != nil {
					t.Fatal(err)
				}
				mustWork(t, ctx, other)
				if _, err := c.Exec(ctx, "COMMIT"); err != nil {
					t.Fatalf("COMMIT after the session ended: %v", err)
				}
			}
			// The FATAL is waiting for the client, which reads it without asking.
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			_, err := c.PgConn().ReceiveMessage(rctx)
			pe := assertSQLState(t, err, "28000")
			wantMsg := "tenantguard: session " + l.ID() + " has been revoked or has expired"
			if tc.reason == policy.ErrSessionStoreLost {
				wantMsg = "tenantguard: session " + l.ID() + " can no longer be verified"
			}
			if pe.Severity != "FATAL" || !strings.HasPrefix(pe.Message, wantMsg) {
				t.Fatalf("got %s %q, want FATAL %q", pe.Severity, pe.Message, wantMsg)
			}
			if !c.IsClosed() {
				t.Fatal("connection still open")
			}
			l.WaitClosed(t)
			mustWork(t, ctx, other)

			if tc.inTx {
				committed := tc.mode == policy.SessionEndBoundary
				if tc.mode == policy.SessionEndImmediate {
					// The server connection was closed, not pooled with its
					// transaction open: its backend goes away.
					harness.Eventually(t, 10*time.Second, func() error {
						var n int
						if err := admin.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid).Scan(&n); err != nil {
							return err
						}
						if n != 0 {
							return fmt.Errorf("backend %d still there", pid)
						}
						return nil
					})
				}
				var n int
				if err := admin.QueryRow(ctx, "SELECT count(*) FROM items WHERE name = $1 AND (qty = 7) = $2", item, committed).Scan(&n); err != nil {
					t.Fatal(err)
				}
				if want := map[bool]int{true: 1, false: 0}[committed]; n != want {
					t.Fatalf("%d rows named %s (committed %v)", n, item, committed)
				}
			}
			// A new login as the same tenant is served, on clean connections.
			again := p.connect(t, p.url("acme", fs.Issue("acme", nil)))
			for i := 0; i < 4; i++ {
				var xid *int64
				if err := again.QueryRow(ctx, "SELECT pg_catalog.txid_current_if_assigned()").Scan(&xid); err != nil {
					t.Fatal(err)
				}
				if xid != nil {
					t.Fatalf("a server connection came back inside transaction %d", *xid)
				}
			}
			if got := p.metric(t, "tenantguard_pg_sessions_ended_total", nil); got != 1 {
				t.Fatalf("sessions_ended_total = %v", got)
			}
		})
	}
}

func mustWork(t *testing.T, ctx context.Context, c *pgx.Conn) {
	t.Helper()
	var n int
	if err := c.QueryRow(ctx, "SELECT 41 + 1").Scan(&n); err != nil || n != 42 {
		t.Fatalf("other tenant: %d %v", n, err)
	}
}

// TestSessionEndRace ends sessions while their clients run transactions
// flat out: every client ends with the FATAL or a closed connection, never
// a hang, and every lease is closed exactly once.
func TestSessionEndRace(t *testing.T) {
	pg := upstream(t)
	ctx := ctxT(t, 60*time.Second)
	for _, mode := range []policy.SessionEndMode{policy.SessionEndImmediate, policy.SessionEndBoundary} {
		t.Run(string(mode), func(t *testing.T) {
			fs := sessionfake.New()
			p := startTokenProxy(t, pg, fs, func(c *proxypg.Config) { c.SessionEnd, c.PoolSize = mode, 4 })
			const clients = 8
			errs := make(chan error, clients)
			var tokens []string
			for i := 0; i < clients; i++ {
				tok := fs.Issue("acme", nil)
				c := p.connect(t, p.url("acme", tok))
				tokens = append(tokens, tok)
				go func() {
					for {
						tx, err := c.Begin(ctx)
						if err == nil {
							_, err = tx.Exec(ctx, "SELECT count(*) FROM items")
							if err == nil {
								err = tx.Commit(ctx)
							} else {
								_ = tx.Rollback(ctx)
							}
						}
						if err != nil {
							errs <- err
							return
						}
					}
				}()
			}
			for _, tok := range tokens {
				fs.Revoke(tok, policy.ErrSessionEnded)
			}
			for i := 0; i < clients; i++ {
				select {
				case err := <-errs:
					if strings.Contains(err.Error(), "SQLSTATE") && !strings.Contains(err.Error(), "28000") {
						t.Errorf("client ended with %v", err)
					}
				case <-ctx.Done():
					t.Fatal("a client was not ended")
				}
			}
			for _, tok := range tokens {
				fs.Lease(t, tok, 0).WaitClosed(t)
			}
		})
	}
}

// TestSessionEndDuringLogin: a session that ends while the login is still
// in progress ends the connection as soon as it is established.
func TestSessionEndDuringLogin(t *testing.T) {
	ctx := ctxT(t, 30*time.Second)
	fs := sessionfake.New()
	p := startTokenProxy(t, upstream(t), fs, nil)
	tok := fs.IssueEnding("acme", policy.ErrSessionEnded)
	c := p.connect(t, p.url("acme", tok))
	_, err := c.PgConn().ReceiveMessage(ctx)
	assertSQLState(t, err, "28000")
	fs.Lease(t, tok, 0).WaitClosed(t)
}

// TestSessionEndGrace: boundary mode waits for the transaction in progress,
// but not for ever: a client that keeps its transaction open past the
// grace gets its FATAL 28000 then, the transaction rolled back.
func TestSessionEndGrace(t *testing.T) {
	pg := upstream(t)
	ctx := ctxT(t, 30*time.Second)
	fs := sessionfake.New()
	p := startTokenProxy(t, pg, fs, func(c *proxypg.Config) {
		c.SessionEnd, c.SessionEndGrace = policy.SessionEndBoundary, 500*time.Millisecond
	})
	tok := fs.Issue("acme", nil)
	c := p.connect(t, p.url("acme", tok))
	other := p.connect(t, p.url("globex", fs.Issue("globex", nil)))
	l := fs.Lease(t, tok, 0)
	item := fmt.Sprintf("grace-%d", time.Now().UnixNano())
	if _, err := c.Exec(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, "INSERT INTO items (tenant, name) VALUES ('acme', $1)", item); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	l.End(policy.ErrSessionEnded)
	// The client sits in its transaction; the grace ends it.
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err := c.PgConn().ReceiveMessage(rctx)
	assertSQLState(t, err, "28000")
	if d := time.Since(start); d < 400*time.Millisecond {
		t.Fatalf("ended after %v, before the 500ms grace", d)
	}
	mustWork(t, ctx, other)
	admin, err := pgx.Connect(ctx, pg.AdminURL("app"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	harness.Eventually(t, 10*time.Second, func() error {
		var n int
		if err := admin.QueryRow(ctx, "SELECT count(*) FROM items WHERE name = $1", item).Scan(&n); err != nil {
			return err
		}
		if n != 0 {
			return fmt.Errorf("the transaction cut at the grace left %d rows", n)
		}
		return nil
	})
}
