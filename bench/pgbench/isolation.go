package main

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantguard/tenantguard/bench/internal/benchkit"
	"github.com/tenantguard/tenantguard/internal/fixture/pgcluster"
)

// checkIsolation proves row isolation is really on through iso: the owner
// tenant counts every row of pgbench_accounts (as the superuser counts
// them), the other tenant counts none.
func checkIsolation(ctx context.Context, pg *pgcluster.Cluster, iso *service, owner, ownerPass, other, otherPass string) error {
	total, err := countAccounts(ctx, pg.AdminURL(dbName))
	if err != nil {
		return fmt.Errorf("isolation check: count as superuser: %w", err)
	}
	if total == 0 {
		return fmt.Errorf("isolation check: pgbench_accounts is empty")
	}
	for _, c := range []struct {
		tenant, password string
		want             int64
	}{{owner, ownerPass, total}, {other, otherPass, 0}} {
		got, err := countAccounts(ctx, iso.url(c.tenant, c.password))
		if err != nil {
			return fmt.Errorf("isolation check: SELECT count(*) FROM pgbench_accounts as tenant %s via %s: %w\n%s",
				c.tenant, iso.Name, err, iso.LogTail())
		}
		if got != c.want {
			return fmt.Errorf("isolation check FAILED: SELECT count(*) FROM pgbench_accounts as tenant %s via %s returned %d, want %d (the superuser sees %d): row isolation is not in effect",
				c.tenant, iso.Name, got, c.want, total)
		}
	}
	benchkit.Logf("isolation check via %s: tenant %s sees %d of %d pgbench_accounts rows, tenant %s sees 0",
		iso.Name, owner, total, total, other)
	return nil
}

// countAccounts runs SELECT count(*) FROM pgbench_accounts at url.
func countAccounts(ctx context.Context, url string) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var n int64
	err = conn.QueryRow(ctx, "SELECT count(*) FROM pgbench_accounts", pgx.QueryExecModeSimpleProtocol).Scan(&n)
	return n, err
}
