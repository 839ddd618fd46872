package pg_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantguard/tenantguard/policy"
	"github.com/tenantguard/tenantguard/test/harness"
)

// TestDisconnectMidResult: clients that stop reading a large result and
// then drop their connection must give their server connection back to the
// pool's accounting. They leaked it: the pool counted the connection as
// active forever, and after a few rounds the tenant reached its
// max_transactions and every query waited for a connection that would
// never come, until the sidecar restarted.
func TestDisconnectMidResult(t *testing.T) {
	pg := upstream(t)
	spec := policy.Spec{Tenants: []policy.TenantSpec{
		{ID: "acme", Passwords: []string{acmeSecret}, Limits: policy.Limits{MaxTransactions: 4}},
		{ID: "globex", Passwords: []string{globexSecret}},
	}}
	p := startProxyWith(t, pg, spec, func(c *proxypgConfig) {
		c.PoolSize = 8
		c.PoolWaitTimeout = 2 * time.Second
	})
	ctx := ctxT(t, 90*time.Second)
	const big = "SELECT repeat('x', 2000) FROM generate_series(1, 100000)" // 200 MB: far past the socket buffers
	for round := 0; round < 3; round++ {
		var wg sync.WaitGroup
		errs := make(chan error, 10)
		for i := 0; i < 10; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := pgx.Connect(ctx, p.acmeURL())
				if err != nil {
					errs <- err
					return
				}
				// Send the query, read nothing, and drop the socket once
				// the proxy is forwarding the result.
				_ = c.PgConn().Exec(ctx, big)
				deadline := time.Now().Add(10 * time.Second)
				for p.metric(t, "tenantguard_pg_server_connections", map[string]string{"state": "active"}) == 0 {
					if time.Now().After(deadline) {
						errs <- errors.New("query not started")
						break
					}
					time.Sleep(5 * time.Millisecond)
				}
				_ = c.PgConn().Conn().Close()
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("round %d: %v", round, err)
		}
		// Every server connection the clients held is given back (closed:
		// it was mid-result), and the accounting agrees with the server.
		harness.Eventually(t, 20*time.Second, func() error {
			if n := p.metric(t, "tenantguard_pg_server_connections", map[string]string{"state": "active"}); n != 0 {
				return fmt.Errorf("round %d: %v server connections still counted active", round, n)
			}
			return nil
		})
		var backends int
		admin, err := pgx.Connect(ctx, pg.AdminURL("app"))
		if err != nil {
			t.Fatal(err)
		}
		err = admin.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE usename = $1", appRole).Scan(&backends)
		admin.Close(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if idle := p.metric(t, "tenantguard_pg_server_connections", map[string]string{"state": "idle"}); float64(backends) < idle {
			t.Fatalf("round %d: pool counts %v idle connections, the server has %d backends", round, idle, backends)
		}
		// acme can hold its full share of 4 transactions at once.
		var txs []pgx.Tx
		for i := 0; i < 4; i++ {
			c := p.connect(t, p.acmeURL())
			tx, err := c.Begin(ctx)
			if err == nil {
				_, err = tx.Exec(ctx, "SELECT 1")
			}
			if err != nil {
				t.Fatalf("round %d: transaction %d of acme's 4: %v", round, i+1, err)
			}
			txs = append(txs, tx)
		}
		for _, tx := range txs {
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	// globex was never affected.
	g := p.connect(t, p.url("globex", globexSecret))
	var one int
	if err := g.QueryRow(context.Background(), "SELECT 1").Scan(&one); err != nil {
		t.Fatal(err)
	}
}
