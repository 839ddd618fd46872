package lifecycle

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantguard/tenantguard/internal/lifecycletest"
	"github.com/tenantguard/tenantguard/test/harness"
)

// TestSumTenant: move's verify checksum is the same for the same rows in
// two databases whatever their physical order, differs when one column
// of one row differs, and covers only the tenant's rows.
func TestSumTenant(t *testing.T) {
	pg := harness.Postgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	suffix := time.Now().UnixNano()
	a := lifecycletest.Setup(t, pg, fmt.Sprintf("sum_a_%d", suffix))
	b := lifecycletest.Setup(t, pg, fmt.Sprintf("sum_b_%d", suffix))
	a.SeedRows(t, "acme", 30)
	a.SeedRows(t, "globex", 10)
	b.SeedRows(t, "acme", 30)
	connect := func(u *lifecycletest.Upstream) *pgx.Conn {
		c, err := pgx.Connect(ctx, u.AdminURL)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close(context.Background()) })
		return c
	}
	ca, cb := connect(a), connect(b)
	// b's rows in another physical order: the even customers rewritten,
	// so they come after the odd ones in a scan.
	if _, err := cb.Exec(ctx, `UPDATE public.customers SET name = name WHERE tenant_id = 'acme' AND id % 2 = 0`); err != nil {
		t.Fatal(err)
	}
	tables := func(c *pgx.Conn) []*table {
		ts, err := resolveTables(ctx, c, lifecycletest.Tables)
		if err != nil {
			t.Fatal(err)
		}
		return ts
	}
	sum := func(c *pgx.Conn) map[string]tableSum {
		s, err := sumTenant(ctx, c, tables(c), "acme")
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	sa, sb := sum(ca), sum(cb)
	if len(sa) != 3 {
		t.Fatalf("sums of %d tables, want 3: %v", len(sa), sa)
	}
	for name, s := range sa {
		if s.Rows == 0 || s != sb[name] {
			t.Errorf("%s: %+v in a, %+v in b (same rows, another order)", name, s, sb[name])
		}
	}
	// One column of one row differs.
	if _, err := cb.Exec(ctx, `UPDATE public.invoices SET total = total + 0.01 WHERE tenant_id = 'acme' AND id = (SELECT min(id) FROM public.invoices WHERE tenant_id = 'acme')`); err != nil {
		t.Fatal(err)
	}
	sb = sum(cb)
	if sa["public.invoices"].Rows != sb["public.invoices"].Rows || sa["public.invoices"].Checksum == sb["public.invoices"].Checksum {
		t.Errorf("an invoice's total changed and the checksums agree: %+v and %+v", sa["public.invoices"], sb["public.invoices"])
	}
	if sa["public.customers"] != sb["public.customers"] {
		t.Errorf("customers untouched and the sums differ")
	}
}
