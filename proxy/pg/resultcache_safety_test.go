package pg_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// The result cache's protections: what it must never serve.

// TestCacheNeverCrossesTenants runs random statements with random
// parameters, in random protocol modes, as random tenants, through a
// sidecar with the cache and, as ground truth, one without, with writes
// through the cached one in between: every result must equal the ground
// truth's. The statements are the same text for every tenant (row-level
// security tells them apart), and half the parameters name another
// tenant's rows, so a result keyed without its tenant, or served across
// tenants, shows.
func TestCacheNeverCrossesTenants(t *testing.T) {
	cached := startCached(t, true, time.Hour, nil)
	truth := startCached(t, false, time.Hour, nil)
	t.Cleanup(func() { truth.shutdown(); cached.shutdown() })
	ctx := ctxT(t, 3*time.Minute)
	type pair struct{ cached, truth *pgx.Conn }
	conns := map[string]pair{}
	for _, id := range cacheTenants {
		conns[id] = pair{cached.connect(t, cached.tenantURL(id)), truth.connect(t, truth.tenantURL(id))}
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, seed))
	item := func() string {
		return fmt.Sprintf("%s-item-%d", cacheTenants[rng.IntN(len(cacheTenants))], 1+rng.IntN(5))
	}
	type stmt struct {
		sql  string
		args func() []any
	}
	none := func() []any { return nil }
	stmts := []stmt{
		{"SELECT item, amount FROM orders WHERE item = $1", func() []any { return []any{item()} }},
		{"SELECT item FROM orders WHERE amount > $1 ORDER BY item", func() []any { return []any{int64(rng.IntN(60))} }},
		{"SELECT count(*), sum(amount) FROM orders", none},
		{"SELECT o.item, p.price FROM orders o JOIN plans p ON p.price < o.amount WHERE o.item = $1 ORDER BY p.price", func() []any { return []any{item()} }},
		{"SELECT price FROM plans WHERE name = $1", func() []any { return []any{[]string{"basic", "pro"}[rng.IntN(2)]} }},
		{"SELECT tenant_id, item FROM orders ORDER BY id LIMIT 2", none},
	}
	// literal makes a simple-protocol text of a statement: the parameter
	// as a constant.
	literal := func(sql string, args []any) string {
		for i, a := range args {
			var lit string
			switch v := a.(type) {
			case string:
				lit = "'" + v + "'"
			default:
				lit = fmt.Sprint(v)
			}
			sql = strings.Replace(sql, fmt.Sprintf("$%d", i+1), lit, 1)
		}
		return sql
	}
	for i := 0; i < 400; i++ {
		tenant := cacheTenants[rng.IntN(len(cacheTenants))]
		c := conns[tenant]
		if rng.IntN(10) == 0 {
			// A write through the cached sidecar, as this tenant, to a row
			// that may be another tenant's (row-level security keeps it
			// to the tenant's own).
			if _, err := c.cached.Exec(ctx, "UPDATE orders SET amount = amount + 1 WHERE item = $1", item()); err != nil {
				t.Fatal(err)
			}
			continue
		}
		st := stmts[rng.IntN(len(stmts))]
		m := allModes[rng.IntN(len(allModes))]
		sql, args := st.sql, st.args()
		if m.mode == pgx.QueryExecModeSimpleProtocol {
			sql, args = literal(sql, args), nil
		}
		got, err := queryText(ctx, c.cached, m.mode, sql, args...)
		if err != nil {
			t.Fatalf("%s %s %v through the cache: %v", tenant, sql, args, err)
		}
		want, err := queryText(ctx, c.truth, m.mode, sql, args...)
		if err != nil {
			t.Fatalf("%s %s %v: %v", tenant, sql, args, err)
		}
		if got != want {
			t.Fatalf("step %d: %s in %s mode %s %v got\n%s\nwant\n%s", i, tenant, m.name, sql, args, got, want)
		}
	}
	for _, id := range cacheTenants {
		if cached.hits(t, id) == 0 {
			t.Errorf("no hit for %s: the test did not exercise the cache", id)
		}
	}
}

// TestCacheVolatileNeverCached: statements whose result depends on more
// than their tables, constants and parameters are never served from the
// cache, even when a rule opts their tables or shape in; a stable one next
// to them is (the test's control).
func TestCacheVolatileNeverCached(t *testing.T) {
	p := startCached(t, true, time.Hour, nil)
	ctx := ctxT(t, 60*time.Second)
	c := p.connect(t, p.tenantURL("acme"))
	cases := []struct {
		name string
		sql  string
		args []any
	}{
		{"now", nowQuery, []any{int32(1)}},
		{"random", "SELECT item, random() FROM orders WHERE item = $1", []any{"acme-item-1"}},
		{"clock_timestamp", "SELECT item, clock_timestamp()::text FROM orders WHERE item = $1", []any{"acme-item-1"}},
		{"now_in_where", "SELECT item FROM orders WHERE placed < now() AND item = $1", []any{"acme-item-1"}},
		{"nextval", "SELECT item, nextval('orders_id_seq') FROM orders WHERE item = $1", []any{"acme-item-1"}},
		{"txid", "SELECT item, txid_current() FROM orders WHERE item = $1", []any{"acme-item-1"}},
		{"now_literal", "SELECT 'now'::timestamptz::text AS t", nil},
		{"today_literal", "SELECT item FROM orders WHERE placed < 'today' AND item = $1", []any{"acme-item-1"}},
		{"now_parameter", tzQuery, []any{"now"}},
		{"tomorrow_parameter", "SELECT item FROM orders WHERE placed < $1::timestamptz AND item = $2", []any{"tomorrow", "acme-item-1"}},
	}
	for _, tc := range cases {
		for _, m := range allModes {
			t.Run(tc.name+"/"+m.name, func(t *testing.T) {
				sql, args := tc.sql, tc.args
				if m.mode == pgx.QueryExecModeSimpleProtocol && len(args) > 0 {
					return // the parameter cases need parameters; the literal ones cover simple
				}
				hits, uncached := p.hits(t, "acme"), p.uncached(t, "acme")
				for i := 0; i < 3; i++ {
					if _, err := queryText(ctx, c, m.mode, sql, args...); err != nil {
						var pe *pgconn.PgError
						if !errors.As(err, &pe) {
							t.Fatal(err)
						}
						// nextval: the role may not use the sequence; what
						// matters is that the answer is never a cached one.
					}
				}
				if h := p.hits(t, "acme"); h != hits {
					t.Fatalf("%v hits for a volatile statement", h-hits)
				}
				if p.uncached(t, "acme") == uncached {
					t.Fatal("not counted as uncached")
				}
			})
		}
	}
	t.Run("control", func(t *testing.T) {
		hits := p.hits(t, "acme")
		for i := 0; i < 3; i++ {
			if _, err := queryText(ctx, c, pgx.QueryExecModeCacheStatement, tzQuery, "2026-03-01 12:00:00+00"); err != nil {
				t.Fatal(err)
			}
		}
		if p.hits(t, "acme") != hits+2 {
			t.Fatal("a fixed timestamp parameter was not cached")
		}
	})
}

// TestCacheSettingsInKey: a result that depends on a session setting is
// served only to a session with the same setting: TimeZone and DateStyle
// (set at startup or with SET), search_path (at startup); and the upstream
// role cannot be changed at all.
func TestCacheSettingsInKey(t *testing.T) {
	p := startCached(t, true, time.Hour, nil)
	ctx := ctxT(t, 60*time.Second)
	const ts = "2026-03-01 12:00:00+00"
	one := func(c *pgx.Conn, m pgx.QueryExecMode, sql string, args ...any) string {
		t.Helper()
		var s string
		if err := c.QueryRow(ctx, sql, append([]any{m}, args...)...).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	// Each twice, so the second may be a hit.
	twice := func(c *pgx.Conn, m pgx.QueryExecMode, sql string, args ...any) string {
		t.Helper()
		first := one(c, m, sql, args...)
		if again := one(c, m, sql, args...); again != first {
			t.Fatalf("%q then %q", first, again)
		}
		return first
	}
	for _, m := range allModes {
		t.Run("TimeZone/"+m.name, func(t *testing.T) {
			utc := p.connect(t, p.tenantURL("acme", "timezone", "UTC"))
			tokyo := p.connect(t, p.tenantURL("acme", "timezone", "Asia/Tokyo"))
			sql, args := tzQuery, []any{ts}
			if m.mode == pgx.QueryExecModeSimpleProtocol {
				sql, args = tzLiteral, nil
			}
			if got := twice(utc, m.mode, sql, args...); got != "2026-03-01 12:00:00+00" {
				t.Fatalf("UTC: %q", got)
			}
			if got := twice(tokyo, m.mode, sql, args...); got != "2026-03-01 21:00:00+09" {
				t.Fatalf("Tokyo after UTC's was cached: %q", got)
			}
			if _, err := utc.Exec(ctx, "SET TimeZone = 'America/New_York'", pgx.QueryExecModeSimpleProtocol); err != nil {
				t.Fatal(err)
			}
			if got := twice(utc, m.mode, sql, args...); got != "2026-03-01 07:00:00-05" {
				t.Fatalf("after SET TimeZone: %q", got)
			}
		})
		t.Run("DateStyle/"+m.name, func(t *testing.T) {
			c := p.connect(t, p.tenantURL("acme", "timezone", "UTC"))
			other := p.connect(t, p.tenantURL("acme", "timezone", "UTC", "datestyle", "SQL, DMY"))
			sql, args := "SELECT placed::text FROM orders WHERE item = $1", []any{"acme-item-1"}
			if m.mode == pgx.QueryExecModeSimpleProtocol {
				sql, args = "SELECT placed::text FROM orders WHERE item = 'acme-item-1'", nil
			}
			if got := twice(c, m.mode, sql, args...); got != "2026-01-01 12:00:00+00" {
				t.Fatalf("ISO: %q", got)
			}
			if got := twice(other, m.mode, sql, args...); got != "01/01/2026 12:00:00 UTC" {
				t.Fatalf("SQL, DMY after ISO's was cached: %q", got)
			}
			if _, err := c.Exec(ctx, "SET DateStyle = 'German'", pgx.QueryExecModeSimpleProtocol); err != nil {
				t.Fatal(err)
			}
			if got := twice(c, m.mode, sql, args...); got != "01.01.2026 12:00:00 UTC" {
				t.Fatalf("after SET DateStyle: %q", got)
			}
		})
	}
	t.Run("search_path", func(t *testing.T) {
		// With no schema to look in, "orders" names nothing: the result
		// cached under the default search_path must not answer. (In the
		// modes that prepare first, the Parse fails before any lookup.)
		c := p.connect(t, p.tenantURL("acme"))
		empty := p.connect(t, p.tenantURL("acme", "search_path", "nonexistent"))
		for _, m := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec} {
			twice(c, m, "SELECT item FROM orders WHERE item = 'acme-item-2'")
			var s string
			err := empty.QueryRow(ctx, "SELECT item FROM orders WHERE item = 'acme-item-2'", m).Scan(&s)
			var pe *pgconn.PgError
			if !errors.As(err, &pe) || pe.Code != "42P01" {
				t.Fatalf("mode %v with search_path nonexistent: %q, %v; want 42P01", m, s, err)
			}
		}
	})
	t.Run("role", func(t *testing.T) {
		c := p.connect(t, p.tenantURL("acme"))
		_, err := c.Exec(ctx, "SET ROLE postgres", pgx.QueryExecModeSimpleProtocol)
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "42501" {
			t.Fatalf("SET ROLE: %v; want 42501", err)
		}
	})
}

// TestCacheWriteTransactions: inside a transaction that may write, nothing
// is served from the cache (the transaction may see its own uncommitted
// writes) and nothing is stored (other clients must not see them); a READ
// ONLY transaction at READ COMMITTED is served.
func TestCacheWriteTransactions(t *testing.T) {
	p := startCached(t, true, time.Hour, nil)
	ctx := ctxT(t, 60*time.Second)
	reader := p.connect(t, p.tenantURL("acme"))
	writer := p.connect(t, p.tenantURL("acme"))
	for _, m := range allModes {
		t.Run(m.name, func(t *testing.T) {
			const item = "acme-item-4"
			committed, err := amountOf(ctx, reader, m.mode, item)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := amountOf(ctx, writer, m.mode, item); err != nil { // cached now
				t.Fatal(err)
			}
			tx, err := writer.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(ctx)
			hits := p.hits(t, "acme")
			// Before its write: a read-write transaction is not answered.
			if s, err := amountOf(ctx, writer, m.mode, item); err != nil || s != committed {
				t.Fatalf("%q %v", s, err)
			}
			if _, err := tx.Exec(ctx, "UPDATE orders SET amount = amount + 100 WHERE item = $1", item); err != nil {
				t.Fatal(err)
			}
			var uncommitted string
			for i := 0; i < 2; i++ {
				s, err := amountOf(ctx, writer, m.mode, item)
				if err != nil {
					t.Fatal(err)
				}
				if s == committed {
					t.Fatal("the writing transaction was served the cached result, not its own write")
				}
				uncommitted = s
			}
			if h := p.hits(t, "acme"); h != hits {
				t.Fatalf("%v hits inside a read-write transaction", h-hits)
			}
			// Another client still sees the committed value, never the
			// uncommitted one (nothing was stored from the transaction).
			for i := 0; i < 2; i++ {
				if s, err := amountOf(ctx, reader, m.mode, item); err != nil || s != committed {
					t.Fatalf("another client read %q %v during the transaction, want %q (uncommitted %q)", s, err, committed, uncommitted)
				}
			}
			if err := tx.Rollback(ctx); err != nil {
				t.Fatal(err)
			}
			for _, c := range []*pgx.Conn{reader, writer} {
				if s, err := amountOf(ctx, c, m.mode, item); err != nil || s != committed {
					t.Fatalf("after ROLLBACK %q %v, want %q", s, err, committed)
				}
			}
		})
	}
	t.Run("read_only", func(t *testing.T) {
		const item = "acme-item-4"
		if _, err := amountOf(ctx, writer, pgx.QueryExecModeCacheStatement, item); err != nil {
			t.Fatal(err)
		}
		tx, err := writer.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly, IsoLevel: pgx.ReadCommitted})
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		hits := p.hits(t, "acme")
		if _, err := amountOf(ctx, writer, pgx.QueryExecModeCacheStatement, item); err != nil {
			t.Fatal(err)
		}
		if p.hits(t, "acme") != hits+1 {
			t.Fatal("a READ ONLY, READ COMMITTED transaction was not served")
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("read_only_repeatable_read", func(t *testing.T) {
		// Its snapshot is the transaction's first statement's: an earlier
		// result may be newer than what it must see, and is not served.
		const item = "acme-item-4"
		if _, err := amountOf(ctx, writer, pgx.QueryExecModeCacheStatement, item); err != nil {
			t.Fatal(err)
		}
		tx, err := writer.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly, IsoLevel: pgx.RepeatableRead})
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		hits := p.hits(t, "acme")
		for i := 0; i < 2; i++ {
			if _, err := amountOf(ctx, writer, pgx.QueryExecModeCacheStatement, item); err != nil {
				t.Fatal(err)
			}
		}
		if h := p.hits(t, "acme"); h != hits {
			t.Fatalf("%v hits inside a REPEATABLE READ transaction", h-hits)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	})
}
