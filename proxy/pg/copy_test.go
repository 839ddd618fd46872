package pg_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestCopyIntoIsolatedTable: COPY FROM STDIN into a row-isolated table,
// which PostgreSQL itself refuses under RLS, works through the proxy in
// binary (pgx CopyFrom), text and CSV, with PostgreSQL's row count and
// errors; a row naming another tenant fails the whole COPY; a COPY inside
// a transaction rolls back with it; the rows are the tenant's alone and
// globex keeps working throughout.
func TestCopyIntoIsolatedTable(t *testing.T) {
	p := startIsolated(t, nil)
	ctx := ctxT(t, 60*time.Second)
	acme := p.connect(t, p.acmeURL())
	globex := p.connect(t, p.url("globex", globexSecret))
	stamp := fmt.Sprint(time.Now().UnixNano())
	count := func(c *pgx.Conn, like string) int {
		t.Helper()
		var n int
		if err := c.QueryRow(ctx, "SELECT count(*) FROM orders WHERE item LIKE $1", like).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	t.Cleanup(func() {
		admin, err := pgx.Connect(context.Background(), harnessAdmin(t))
		if err == nil {
			_, _ = admin.Exec(context.Background(), "DELETE FROM orders WHERE item LIKE $1", "copy-"+stamp+"%")
			admin.Close(context.Background())
		}
	})

	// Binary, as pgx sends it.
	rows := [][]any{
		{"acme", "copy-" + stamp + "-bin-1", 10},
		{"acme", "copy-" + stamp + "-bin-2", 20},
		{"acme", "copy-" + stamp + "-bin-3", 30},
	}
	n, err := acme.CopyFrom(ctx, pgx.Identifier{"orders"}, []string{"tenant_id", "item", "amount"}, pgx.CopyFromRows(rows))
	if err != nil || n != 3 {
		t.Fatalf("pgx CopyFrom: %d %v", n, err)
	}
	mustWork(t, ctx, globex)

	// Text and CSV, as psql's \copy and psycopg send them.
	for _, tc := range []struct{ name, sql, data, tag string }{
		{"text", "COPY public.orders (tenant_id, item, amount) FROM STDIN",
			"acme\tcopy-" + stamp + "-txt-1\t1\nacme\tcopy-" + stamp + "-txt-2\t2\n", "COPY 2"},
		{"csv with header", "COPY orders (tenant_id, item, amount) FROM STDIN WITH (FORMAT csv, HEADER true)",
			"tenant_id,item,amount\nacme,\"copy-" + stamp + "-csv,1\",5\n", "COPY 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tag, err := acme.PgConn().CopyFrom(ctx, strings.NewReader(tc.data), tc.sql)
			if err != nil || tag.String() != tc.tag {
				t.Fatalf("%s: %q %v", tc.sql, tag, err)
			}
		})
	}
	if got := count(acme, "copy-"+stamp+"%"); got != 6 {
		t.Fatalf("acme sees %d copied rows, want 6", got)
	}
	if got := count(globex, "copy-"+stamp+"%"); got != 0 {
		t.Fatalf("globex sees %d of acme's copied rows", got)
	}

	// A row naming globex fails the whole COPY, as a direct INSERT would.
	_, err = acme.PgConn().CopyFrom(ctx, strings.NewReader("acme\tcopy-"+stamp+"-x-1\t1\nglobex\tcopy-"+stamp+"-x-2\t2\n"),
		"COPY orders (tenant_id, item, amount) FROM STDIN")
	pe := assertSQLState(t, err, "42501")
	if !strings.Contains(pe.Message, "row-level security") {
		t.Fatalf("cross-tenant COPY: %s", pe.Message)
	}
	if got := count(acme, "copy-"+stamp+"-x-%"); got != 0 {
		t.Fatalf("%d rows of the refused COPY stayed", got)
	}
	// A bad value: PostgreSQL's own error, with the line.
	_, err = acme.PgConn().CopyFrom(ctx, strings.NewReader("acme\tcopy-"+stamp+"-y-1\t1\nacme\tcopy-"+stamp+"-y-2\tlots\n"),
		"COPY orders (tenant_id, item, amount) FROM STDIN")
	pe = assertSQLState(t, err, "22P02")
	if !strings.Contains(pe.Where, "line 2") {
		t.Fatalf("bad value: where %q", pe.Where)
	}
	// Inside a transaction the COPY is the transaction's.
	tx, err := acme.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Conn().PgConn().CopyFrom(ctx, strings.NewReader("acme\tcopy-"+stamp+"-tx\t1\n"), "COPY orders (tenant_id, item, amount) FROM STDIN"); err != nil {
		t.Fatal(err)
	}
	if got := count(tx.Conn(), "copy-"+stamp+"-tx"); got != 1 {
		t.Fatalf("inside the transaction: %d", got)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if got := count(acme, "copy-"+stamp+"-tx"); got != 0 {
		t.Fatalf("after rollback: %d", got)
	}
	// The stage itself is out of reach.
	_, err = acme.Exec(ctx, `SELECT * FROM tenantguard_copy."public.orders"`)
	assertSQLState(t, err, "42501")
	mustWork(t, ctx, acme)
	mustWork(t, ctx, globex)
}
