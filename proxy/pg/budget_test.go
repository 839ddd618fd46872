package pg_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantguard/tenantguard/policy"
	proxypg "github.com/tenantguard/tenantguard/proxy/pg"
	"github.com/tenantguard/tenantguard/test/harness"
)

// budgetSpec places every tenant on "main", the configured upstream under
// a name, with a fleet budget.
func budgetSpec() policy.Spec {
	return policy.Spec{
		Clusters: []policy.ClusterSpec{{Name: "main", Default: true, Postgres: &policy.PostgresCluster{MaxServerConnections: 100}}},
		Tenants: []policy.TenantSpec{
			{ID: "acme", Passwords: []string{acmeSecret}},
			{ID: "globex", Passwords: []string{globexSecret}},
		},
	}
}

func loadOf(t *testing.T, p *proxy, cluster string) proxypg.ClusterLoad {
	t.Helper()
	for _, l := range p.srv.ClusterLoads() {
		if l.Cluster == cluster {
			return l
		}
	}
	t.Fatalf("no load reported for %q: %+v", cluster, p.srv.ClusterLoads())
	return proxypg.ClusterLoad{}
}

// TestBudgetShare: with budgets on, a budgeted cluster gets no server
// connection before its first share; then at most its share, whatever
// pool.size says; a grown share serves the waiters at once; a shrunk one
// closes returning connections until the sidecar holds no more than it.
func TestBudgetShare(t *testing.T) {
	a := upstream(t)
	p := startProxyWith(t, a, budgetSpec(), func(c *proxypg.Config) { c.PoolWaitTimeout = 3 * time.Second })
	p.srv.EnableBudget()
	ctx := ctxT(t, 60*time.Second)

	if l := loadOf(t, p, "main"); l.Share != 0 || l.Held != 0 {
		t.Fatalf("before any share: %+v", l)
	}
	if _, err := pgx.Connect(ctx, p.acmeURL()); !isCode(err, "53300") {
		t.Fatalf("login with no share: %v, want 53300 (no server connection)", err)
	}

	p.srv.SetClusterShare("main", 2)
	var txs []pgx.Tx
	for i := range 2 {
		c := p.connect(t, p.acmeURL())
		tx, err := c.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "SELECT 1"); err != nil {
			t.Fatalf("transaction %d: %v", i, err)
		}
		txs = append(txs, tx)
	}
	third := p.connect(t, p.url("globex", globexSecret))
	if _, err := third.Exec(ctx, "SELECT 1"); !isCode(err, "53300") {
		t.Fatalf("a third transaction with a share of 2: %v, want 53300", err)
	}
	if l := loadOf(t, p, "main"); l.Held != 2 || l.Active != 2 {
		t.Fatalf("load at the share: %+v", l)
	}

	// A waiter is served as soon as the share grows.
	done := make(chan error, 1)
	go func() {
		tctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		_, err := third.Exec(tctx, "SELECT pg_sleep(0)")
		done <- err
	}()
	harness.Eventually(t, 5*time.Second, func() error {
		if l := loadOf(t, p, "main"); l.Waiting != 1 {
			return fmt.Errorf("load %+v, want one waiter", l)
		}
		return nil
	})
	p.srv.SetClusterShare("main", 3)
	if err := <-done; err != nil {
		t.Fatalf("the waiter after the share grew: %v", err)
	}

	// Shrink to 1: the returning connections close until one is left.
	p.srv.SetClusterShare("main", 1)
	for _, tx := range txs {
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	harness.Eventually(t, 10*time.Second, func() error {
		if l := loadOf(t, p, "main"); l.Held > 1 {
			return fmt.Errorf("load %+v after shrinking to 1", l)
		}
		return nil
	})
	if got := p.metric(t, "tenantguard_pg_cluster_share", map[string]string{"cluster": "main"}); got != 1 {
		t.Fatalf("share metric %v", got)
	}
	// Still serving within the share.
	if _, err := third.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
}
