package pg_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantguard/tenantguard/internal/fixture/pgcluster"
	"github.com/tenantguard/tenantguard/policy"
	proxypg "github.com/tenantguard/tenantguard/proxy/pg"
	"github.com/tenantguard/tenantguard/proxy/pg/firewall"
	"github.com/tenantguard/tenantguard/proxy/pg/rls"
	"github.com/tenantguard/tenantguard/test/harness"
	"github.com/tenantguard/tenantguard/wire/scram"
)

// The result cache against a real PostgreSQL: database "cachedb", row
// isolation and invalidation triggers installed by pg bootstrap's code.

const (
	cacheRole     = "cache_app"
	cachePassword = "cache_app_pw"
)

var (
	cacheOnce   sync.Once
	cacheBinder *rls.Binder
	// cacheTenants own distinct rows, so a result served to the wrong
	// tenant cannot equal the right one.
	cacheTenants = []string{"acme", "globex", "initech", "umbrella"}
)

// cacheSecret is a tenant's password in the cache tests' policy.
func cacheSecret(tenant string) string { return tenant + "-cache-secret" }

// fingerprintOf is the firewall's fingerprint of a statement, as a policy
// names it.
func fingerprintOf(t *testing.T, sql string) string {
	t.Helper()
	fw, err := firewall.New(firewall.Config{BindingSetting: rls.Setting, ProtectedSchema: rls.Schema})
	if err != nil {
		t.Fatal(err)
	}
	defer fw.Close()
	return policy.FormatFingerprint(fw.Check(sql).Fingerprint)
}

// Statements with no table, cached by fingerprint.
const (
	tzQuery   = "SELECT $1::timestamptz::text AS t"
	nowQuery  = "SELECT now()::text, $1::int AS n"
	tzLiteral = "SELECT '2026-03-01 12:00:00+00'::timestamptz::text AS t"
)

// cacheSpec is the cache tests' policy; withCache false leaves pg_cache out
// (the ground truth of the property test).
func cacheSpec(t *testing.T, withCache bool, ttl time.Duration) policy.Spec {
	spec := policy.Spec{
		Tables: []policy.TableSpec{
			{Name: "public.orders", TenantColumn: "tenant_id"},
			{Name: "public.plans", Shared: true},
			{Name: "public.parents", TenantColumn: "tenant_id"},
			{Name: "public.children", TenantColumn: "tenant_id"},
		},
	}
	for _, id := range cacheTenants {
		spec.Tenants = append(spec.Tenants, policy.TenantSpec{ID: id, Passwords: []string{cacheSecret(id)}})
	}
	if withCache {
		spec.PgCache = &policy.PgCacheSpec{
			Rules: []policy.PgCacheRule{
				{Tables: []string{"public.orders", "public.plans", "public.parents", "public.children"}, TTL: ttl},
				{Fingerprints: []string{fingerprintOf(t, tzQuery), fingerprintOf(t, nowQuery), fingerprintOf(t, tzLiteral)}, TTL: ttl},
			},
		}
	}
	return spec
}

// cacheUpstream creates database cachedb once per package.
func cacheUpstream(t *testing.T) *pgcluster.Cluster {
	t.Helper()
	pg := upstream(t)
	cacheOnce.Do(func() {
		ctx := context.Background()
		var err error
		if cacheBinder, err = rls.NewBinder([]byte("cache-test-binding-key-0123456789"), time.Hour); err != nil {
			t.Fatal(err)
		}
		for _, q := range []string{
			"CREATE DATABASE cachedb",
			"CREATE ROLE " + cacheRole + " LOGIN PASSWORD '" + cachePassword + "' NOSUPERUSER NOBYPASSRLS",
		} {
			if err := pg.Exec(ctx, "postgres", q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		var rows []string
		for i, id := range cacheTenants {
			for j := 1; j <= 5; j++ {
				rows = append(rows, fmt.Sprintf("('%s', '%s-item-%d', %d)", id, id, j, 10*(i+1)+j))
			}
		}
		if err := pg.Exec(ctx, "cachedb", `
			CREATE TABLE public.orders (id bigserial PRIMARY KEY, tenant_id text NOT NULL, item text NOT NULL,
				amount numeric NOT NULL DEFAULT 0, placed timestamptz NOT NULL DEFAULT '2026-01-01 12:00:00+00');
			CREATE TABLE public.plans (name text PRIMARY KEY, price int NOT NULL);
			CREATE TABLE public.parents (id int PRIMARY KEY, tenant_id text NOT NULL);
			CREATE TABLE public.children (id int PRIMARY KEY, tenant_id text NOT NULL, parent int REFERENCES public.parents ON DELETE CASCADE);
			CREATE TABLE public.untracked (tenant_id text, x int);
			INSERT INTO public.plans VALUES ('basic', 10), ('pro', 50);
			INSERT INTO public.untracked VALUES ('acme', 1);
			INSERT INTO public.orders (tenant_id, item, amount) VALUES `+strings.Join(rows, ", ")+`;
			GRANT SELECT ON public.untracked TO `+cacheRole); err != nil {
			t.Fatal(err)
		}
		c, err := pgx.Connect(ctx, pg.AdminURL("cachedb"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(ctx)
		snap, err := policy.Compile(cacheSpec(t, true, time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if err := rls.Bootstrap(ctx, c, cacheRole, snap, cacheBinder); err != nil {
			t.Fatal(err)
		}
	})
	if cacheBinder == nil {
		t.Fatal("cache database setup failed earlier")
	}
	return pg
}

// startCached starts a proxy with isolation on in front of cachedb, with
// the cache (withCache) or without, and waits for its cache's listener.
func startCached(t *testing.T, withCache bool, ttl time.Duration, tweak func(*proxypgConfig)) *proxy {
	t.Helper()
	return startCachedSpec(t, cacheSpec(t, withCache, ttl), tweak)
}

// startCachedSpec is startCached with a policy of the test's making.
func startCachedSpec(t *testing.T, spec policy.Spec, tweak func(*proxypgConfig)) *proxy {
	t.Helper()
	withCache := spec.PgCache != nil
	pg := cacheUpstream(t)
	p := startProxyWith(t, pg, spec, func(c *proxypgConfig) {
		c.Databases = []proxypgDatabase{{Name: "app", URL: fmt.Sprintf("postgres://%s:%s@127.0.0.1:%d/cachedb?sslmode=disable", cacheRole, cachePassword, pg.Port())}}
		c.Binder = cacheBinder
		// The tests count on a result stored at its first miss; the
		// doorkeeper has its own test (TestCacheDoorkeeper).
		c.CacheFillOnFirstMiss = true
		if tweak != nil {
			tweak(c)
		}
	})
	if withCache {
		waitListener(t, p)
	}
	return p
}

// waitListener has a client start the pool's cache and waits until its
// listener is up.
func waitListener(t *testing.T, p *proxy) {
	t.Helper()
	c := p.connect(t, p.url("acme", cacheSecret("acme")))
	if _, err := c.Exec(context.Background(), "SELECT 1", pgx.QueryExecModeSimpleProtocol); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 20*time.Second, func() error {
		if p.metric(t, "tenantguard_pg_cache_listener_up", nil) != 1 {
			return errors.New("cache listener not up")
		}
		return nil
	})
}

func (p *proxy) tenantURL(tenant string, params ...string) string {
	return p.url(tenant, cacheSecret(tenant), params...)
}

func (p *proxy) hits(t *testing.T, tenant string) float64 {
	return p.metric(t, "tenantguard_pg_cache_hits_total", map[string]string{"tenant": tenant})
}

// uncached is how many of tenant's statements bypassed the cache, for any
// reason.
func (p *proxy) uncached(t *testing.T, tenant string) float64 {
	t.Helper()
	mfs, err := p.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n float64
	for _, mf := range mfs {
		if mf.GetName() != "tenantguard_pg_cache_uncached_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if hasLabel(m, "tenant", tenant) {
				n += m.GetCounter().GetValue()
			}
		}
	}
	return n
}

// logCache logs the cache's metrics, to tell why a test saw no hit.
func (p *proxy) logCache(t *testing.T) {
	mfs, _ := p.reg.Gather()
	for _, mf := range mfs {
		if strings.Contains(mf.GetName(), "pg_cache") {
			t.Log(mf.String())
		}
	}
}

func (p *proxy) misses(t *testing.T, tenant string) float64 {
	return p.metric(t, "tenantguard_pg_cache_misses_total", map[string]string{"tenant": tenant})
}

// queryText runs sql in mode and returns its rows as text, one line each.
func queryText(ctx context.Context, c *pgx.Conn, mode pgx.QueryExecMode, sql string, args ...any) (string, error) {
	rows, err := c.Query(ctx, sql, append([]any{mode}, args...)...)
	if err != nil {
		return "", err
	}
	defer rows.Close()
	var b strings.Builder
	for rows.Next() {
		for i, v := range rows.RawValues() {
			if i > 0 {
				b.WriteByte('|')
			}
			if v == nil {
				b.WriteString("NULL")
			} else {
				fmt.Fprintf(&b, "%x", v)
			}
		}
		b.WriteByte('\n')
	}
	return b.String(), rows.Err()
}

// adminExec runs a statement on cachedb as the administrator.
func adminExec(t *testing.T, sql string) {
	t.Helper()
	if err := cacheUpstream(t).Exec(context.Background(), "cachedb", sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

var allModes = []struct {
	name string
	mode pgx.QueryExecMode
}{
	{"simple", pgx.QueryExecModeSimpleProtocol},
	{"prepared", pgx.QueryExecModeCacheStatement},
	{"describe", pgx.QueryExecModeCacheDescribe},
	{"exec", pgx.QueryExecModeExec},
	{"describe_exec", pgx.QueryExecModeDescribeExec},
}

// TestCacheHits: a repeated read is answered from the cache in every
// protocol mode pgx has, with the same rows, and counted.
func TestCacheHits(t *testing.T) {
	p := startCached(t, true, time.Hour, nil)
	ctx := ctxT(t, 60*time.Second)
	c := p.connect(t, p.tenantURL("acme"))
	for _, m := range allModes {
		t.Run(m.name, func(t *testing.T) {
			// By item: other tests change amounts.
			sql := "SELECT id, item, amount FROM orders WHERE item > $1 ORDER BY id"
			args := []any{"acme-item-2"}
			if m.mode == pgx.QueryExecModeSimpleProtocol {
				sql = fmt.Sprintf("SELECT id, item, amount FROM orders WHERE item > 'acme-item-2' AND '%s' <> '' ORDER BY id", m.name)
				args = nil
			} else {
				sql += " /* " + m.name + " */"
			}
			first, err := queryText(ctx, c, m.mode, sql, args...)
			if err != nil {
				t.Fatal(err)
			}
			if first == "" || strings.Count(first, "\n") != 3 {
				t.Fatalf("acme's items after 2: %q", first)
			}
			hits := p.hits(t, "acme")
			for i := 0; i < 3; i++ {
				again, err := queryText(ctx, c, m.mode, sql, args...)
				if err != nil {
					t.Fatal(err)
				}
				if again != first {
					t.Fatalf("cached rows differ:\n%s\nwant\n%s", again, first)
				}
			}
			if got := p.hits(t, "acme") - hits; got != 3 {
				p.logCache(t)
				t.Fatalf("%v hits, want 3", got)
			}
		})
	}
}

// TestCacheDoorkeeper: by default a result is stored at its second miss,
// not its first, in every protocol mode: the first run of a statement is
// counted as a first miss and stores nothing, the second stores it, the
// third is a hit with the same rows. Another tenant running the same text
// meanwhile neither admits nor reads acme's entry.
func TestCacheDoorkeeper(t *testing.T) {
	p := startCached(t, true, time.Hour, func(c *proxypgConfig) { c.CacheFillOnFirstMiss = false })
	ctx := ctxT(t, 60*time.Second)
	acme := p.connect(t, p.tenantURL("acme"))
	globex := p.connect(t, p.tenantURL("globex"))
	first := func(tenant string) float64 {
		return p.metric(t, "tenantguard_pg_cache_first_misses_total", map[string]string{"tenant": tenant})
	}
	for _, m := range allModes {
		t.Run(m.name, func(t *testing.T) {
			sql := "SELECT id, item FROM orders WHERE item > $1 ORDER BY id"
			args := []any{"x"}
			if m.mode == pgx.QueryExecModeSimpleProtocol {
				sql = fmt.Sprintf("SELECT id, item FROM orders WHERE item > '' AND '%s-door' <> '' ORDER BY id", m.name)
				args = nil
			} else {
				sql += " /* door " + m.name + " */"
				args = []any{""}
			}
			hits, firsts, gFirsts := p.hits(t, "acme"), first("acme"), first("globex")
			want, err := queryText(ctx, acme, m.mode, sql, args...)
			if err != nil {
				t.Fatal(err)
			}
			if got := first("acme") - firsts; got != 1 {
				t.Fatalf("first run: %v first misses, want 1", got)
			}
			// globex's first run of the same text is its own first miss.
			gRows, err := queryText(ctx, globex, m.mode, sql, args...)
			if err != nil {
				t.Fatal(err)
			}
			if got := first("globex") - gFirsts; got != 1 {
				t.Fatalf("globex's first run: %v first misses, want 1", got)
			}
			if strings.Contains(gRows, "acme") {
				t.Fatalf("globex sees acme's rows: %q", gRows)
			}
			for i := range 2 {
				got, err := queryText(ctx, acme, m.mode, sql, args...)
				if err != nil {
					t.Fatal(err)
				}
				if got != want {
					t.Fatalf("run %d: rows differ:\n%s\nwant\n%s", i+2, got, want)
				}
			}
			if got := first("acme") - firsts; got != 1 {
				t.Fatalf("after three runs: %v first misses, want 1 (the second run stores)", got)
			}
			if got := p.hits(t, "acme") - hits; got != 1 {
				p.logCache(t)
				t.Fatalf("%v hits after three runs, want 1 (the third)", got)
			}
		})
	}
}

// withoutTrigger disables table's invalidation trigger for the test, so
// that only the sidecar's own invalidation can evict; the cache's view,
// read before, still counts the table as covered.
func withoutTrigger(t *testing.T, table string) {
	t.Helper()
	adminExec(t, "ALTER TABLE "+table+" DISABLE TRIGGER "+rls.CacheTrigger)
	t.Cleanup(func() { adminExec(t, "ALTER TABLE "+table+" ENABLE TRIGGER "+rls.CacheTrigger) })
}

// amountOf reads one order's amount through c, in mode.
func amountOf(ctx context.Context, c *pgx.Conn, mode pgx.QueryExecMode, item string) (string, error) {
	var s string
	err := c.QueryRow(ctx, "SELECT amount::text FROM orders WHERE item = $1", mode, item).Scan(&s)
	return s, err
}

// TestCacheReadYourWrites: a write through the sidecar evicts what it
// changed before its client hears of the commit, so the next read (by any
// client of the sidecar) sees it; even with the database's notifications
// off, and in every protocol mode. Inside a transaction the write is
// invisible to other clients until COMMIT, as in PostgreSQL.
func TestCacheReadYourWrites(t *testing.T) {
	p := startCached(t, true, time.Hour, nil)
	withoutTrigger(t, "public.orders")
	withoutTrigger(t, "public.children")
	ctx := ctxT(t, 60*time.Second)
	reader := p.connect(t, p.tenantURL("acme"))
	writer := p.connect(t, p.tenantURL("acme"))
	for i, m := range allModes {
		t.Run(m.name, func(t *testing.T) {
			item := fmt.Sprintf("acme-item-%d", i+1)
			before, err := amountOf(ctx, reader, m.mode, item)
			if err != nil {
				t.Fatal(err)
			}
			hits := p.hits(t, "acme")
			if again, err := amountOf(ctx, reader, m.mode, item); err != nil || again != before {
				t.Fatalf("second read %q %v, want %q", again, err, before)
			}
			if p.hits(t, "acme") != hits+1 {
				p.logCache(t)
				t.Fatal("second read was not a hit")
			}
			if _, err := writer.Exec(ctx, "UPDATE orders SET amount = amount + 1000 WHERE item = $1", m.mode, item); err != nil {
				t.Fatal(err)
			}
			after, err := amountOf(ctx, reader, m.mode, item)
			if err != nil {
				t.Fatal(err)
			}
			if after == before {
				t.Fatalf("read after the write's commit still %s", after)
			}
		})
	}
	t.Run("transaction", func(t *testing.T) {
		before, err := amountOf(ctx, reader, pgx.QueryExecModeCacheStatement, "acme-item-5")
		if err != nil {
			t.Fatal(err)
		}
		tx, err := writer.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "UPDATE orders SET amount = amount + 1 WHERE item = 'acme-item-5'"); err != nil {
			t.Fatal(err)
		}
		if during, err := amountOf(ctx, reader, pgx.QueryExecModeCacheStatement, "acme-item-5"); err != nil || during != before {
			t.Fatalf("read during the writing transaction %q %v, want the committed %q", during, err, before)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if after, err := amountOf(ctx, reader, pgx.QueryExecModeCacheStatement, "acme-item-5"); err != nil || after == before {
			t.Fatalf("read after COMMIT %q %v", after, err)
		}
	})
	t.Run("cascade", func(t *testing.T) {
		if _, err := writer.Exec(ctx, "INSERT INTO parents (id) VALUES (1); INSERT INTO children (id, parent) VALUES (1, 1)", pgx.QueryExecModeSimpleProtocol); err != nil {
			t.Fatal(err)
		}
		count := func() string {
			s, err := queryText(ctx, reader, pgx.QueryExecModeCacheStatement, "SELECT count(*) FROM children")
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
		before := count()
		if count() != before {
			t.Fatal("unstable")
		}
		// The foreign key's cascade deletes the child: the firewall sees
		// only parents written.
		if _, err := writer.Exec(ctx, "DELETE FROM parents WHERE id = 1"); err != nil {
			t.Fatal(err)
		}
		if after := count(); after == before {
			t.Fatalf("children count after the cascade still %q", after)
		}
	})
}

// TestCacheWritesElsewhere: writes through another sidecar, and straight
// to the database, become visible once their notification arrives (the
// TTL is an hour); a write by one tenant to a row-isolated table evicts
// only that tenant's results, and an administrator's every tenant's.
func TestCacheWritesElsewhere(t *testing.T) {
	a := startCached(t, true, time.Hour, nil)
	b := startCached(t, true, time.Hour, nil)
	t.Cleanup(func() { b.shutdown(); a.shutdown() }) // before either checks for leaks
	ctx := ctxT(t, 90*time.Second)
	readers := map[string]*pgx.Conn{}
	for _, id := range []string{"acme", "globex"} {
		readers[id] = a.connect(t, a.tenantURL(id))
	}
	read := func(tenant, item string) string {
		t.Helper()
		s, err := amountOf(ctx, readers[tenant], pgx.QueryExecModeCacheStatement, item)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	// becomes waits until tenant's read of item differs from old, and
	// returns how many reads that took.
	becomes := func(tenant, item, old string) {
		t.Helper()
		harness.Eventually(t, 30*time.Second, func() error {
			if read(tenant, item) == old {
				return errors.New("still the old value")
			}
			return nil
		})
	}
	warm := func(tenant, item string) string {
		t.Helper()
		v := read(tenant, item)
		h := a.hits(t, tenant)
		if read(tenant, item) != v || a.hits(t, tenant) != h+1 {
			a.logCache(t)
			t.Fatal("not cached")
		}
		return v
	}

	t.Run("other_sidecar", func(t *testing.T) {
		acme, globex := warm("acme", "acme-item-2"), warm("globex", "globex-item-2")
		w := b.connect(t, b.tenantURL("acme"))
		if _, err := w.Exec(ctx, "UPDATE orders SET amount = amount + 7 WHERE item = 'acme-item-2'"); err != nil {
			t.Fatal(err)
		}
		becomes("acme", "acme-item-2", acme)
		// globex's result did not change and stays cached.
		h := a.hits(t, "globex")
		if read("globex", "globex-item-2") != globex || a.hits(t, "globex") != h+1 {
			t.Fatal("acme's write evicted globex's result")
		}
	})
	t.Run("direct", func(t *testing.T) {
		acme, globex := warm("acme", "acme-item-3"), warm("globex", "globex-item-3")
		adminExec(t, "UPDATE public.orders SET amount = amount + 5 WHERE item IN ('acme-item-3', 'globex-item-3')")
		becomes("acme", "acme-item-3", acme)
		becomes("globex", "globex-item-3", globex)
	})
	t.Run("shared_table", func(t *testing.T) {
		price := func(tenant string) string {
			s, err := queryText(ctx, readers[tenant], pgx.QueryExecModeCacheStatement, "SELECT price FROM plans WHERE name = 'pro'")
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
		old := price("globex")
		price("globex")
		adminExec(t, "UPDATE public.plans SET price = price + 1 WHERE name = 'pro'")
		harness.Eventually(t, 30*time.Second, func() error {
			if price("globex") == old {
				return errors.New("still the old price")
			}
			return nil
		})
	})
}

// TestCacheListenerDrop: when the listening connection drops, the cache is
// emptied, and nothing cached before is served after.
func TestCacheListenerDrop(t *testing.T) {
	p := startCached(t, true, time.Hour, nil)
	ctx := ctxT(t, 60*time.Second)
	c := p.connect(t, p.tenantURL("acme"))
	for i := 1; i <= 3; i++ {
		for j := 0; j < 2; j++ {
			if _, err := amountOf(ctx, c, pgx.QueryExecModeCacheStatement, fmt.Sprintf("acme-item-%d", i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	entries := func() int {
		n := 0
		for _, s := range p.srv.CacheStats() {
			n += s.Entries
		}
		return n
	}
	if entries() == 0 {
		t.Fatal("nothing cached")
	}
	flushes := p.metric(t, "tenantguard_pg_cache_flushes_total", map[string]string{"reason": "listener_down"})
	adminExec(t, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'tenantguard result cache' AND datname = 'cachedb'")
	harness.Eventually(t, 20*time.Second, func() error {
		if p.metric(t, "tenantguard_pg_cache_flushes_total", map[string]string{"reason": "listener_down"}) == flushes {
			return errors.New("drop not seen yet")
		}
		return nil
	})
	if n := entries(); n != 0 {
		t.Fatalf("%d entries left after the listener dropped", n)
	}
	hits := p.hits(t, "acme")
	for i := 1; i <= 3; i++ {
		if _, err := amountOf(ctx, c, pgx.QueryExecModeCacheStatement, fmt.Sprintf("acme-item-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if p.hits(t, "acme") != hits {
		t.Fatal("a result cached before the drop was served after it")
	}
	// The listener comes back and the cache works again.
	harness.Eventually(t, 20*time.Second, func() error {
		if p.metric(t, "tenantguard_pg_cache_listener_up", nil) != 1 {
			return errors.New("listener not back")
		}
		return nil
	})
	for j := 0; j < 2; j++ {
		if _, err := amountOf(ctx, c, pgx.QueryExecModeCacheStatement, "acme-item-1"); err != nil {
			t.Fatal(err)
		}
	}
	if p.hits(t, "acme") == hits {
		t.Fatal("no hit after the listener came back")
	}
}

// TestCacheVisibility: SHOW CACHE on the console and the admin handler
// show each tenant's entries, bytes, hits and misses, and the listener.
func TestCacheVisibility(t *testing.T) {
	v, err := scram.NewVerifier(consolePassword)
	if err != nil {
		t.Fatal(err)
	}
	p := startCached(t, true, time.Hour, func(c *proxypgConfig) {
		c.Console = &proxypg.Console{User: "tgadmin", Verifier: v, Version: "test"}
	})
	ctx := ctxT(t, 60*time.Second)
	for _, id := range []string{"acme", "globex"} {
		c := p.connect(t, p.tenantURL(id))
		for i := 0; i < 3; i++ {
			if _, err := amountOf(ctx, c, pgx.QueryExecModeCacheStatement, id+"-item-1"); err != nil {
				t.Fatal(err)
			}
		}
	}
	console := p.connect(t, strings.Replace(p.url("tgadmin", consolePassword), "/app?", "/tenantguard?", 1))
	rows := consoleQuery(t, console, "SHOW CACHE")
	byTenant := map[string]map[string]string{}
	for _, r := range rows {
		byTenant[r["tenant"]] = r
	}
	for _, id := range []string{"acme", "globex"} {
		r := byTenant[id]
		if r == nil || r["entries"] != "1" || r["hits"] != "2" || r["misses"] != "1" || r["listener"] != "up" || r["bytes"] == "0" {
			t.Fatalf("SHOW CACHE row for %s: %v (all: %v)", id, r, rows)
		}
	}
	rec := httptest.NewRecorder()
	p.srv.CacheHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/cache/pg", nil))
	var stats []proxypg.CacheStats
	if err := json.Unmarshal(rec.Body.Bytes(), &stats); err != nil {
		t.Fatalf("%v: %s", err, rec.Body.String())
	}
	seen := 0
	for _, s := range stats {
		if (s.Tenant == "acme" || s.Tenant == "globex") && s.Entries == 1 && s.Hits == 2 && s.Listener {
			seen++
		}
	}
	if seen != 2 {
		t.Fatalf("admin handler: %s", rec.Body.String())
	}
}

// TestCacheTenantBudget: a tenant whose working set is larger than its
// budget stays within it, evicting its own oldest results, and another
// tenant's results stay cached.
func TestCacheTenantBudget(t *testing.T) {
	const budget = 16 << 10
	spec := cacheSpec(t, true, time.Hour)
	for i := range spec.Tenants {
		if spec.Tenants[i].ID == "acme" {
			spec.Tenants[i].Limits.PgCacheBytes = budget
		}
	}
	p := startCachedSpec(t, spec, nil)
	ctx := ctxT(t, 90*time.Second)
	acme, globex := p.connect(t, p.tenantURL("acme")), p.connect(t, p.tenantURL("globex"))
	for i := 1; i <= 3; i++ {
		if _, err := amountOf(ctx, globex, pgx.QueryExecModeCacheStatement, fmt.Sprintf("globex-item-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	bytesOf := func(tenant string) int64 {
		for _, s := range p.srv.CacheStats() {
			if s.Tenant == tenant {
				return s.Bytes
			}
		}
		return 0
	}
	for i := 0; i < 300; i++ {
		ts := time.Date(2026, 1, 1, 0, 0, i, 0, time.UTC).Format("2006-01-02 15:04:05+00")
		if _, err := queryText(ctx, acme, pgx.QueryExecModeCacheStatement, tzQuery, ts); err != nil {
			t.Fatal(err)
		}
		if b := bytesOf("acme"); b > budget {
			t.Fatalf("acme holds %d bytes, over its budget %d", b, budget)
		}
	}
	if p.metric(t, "tenantguard_pg_cache_evictions_total", map[string]string{"tenant": "acme", "reason": "budget"}) == 0 {
		t.Fatal("no budget eviction: the working set fit, the test shows nothing")
	}
	hits := p.hits(t, "globex")
	for i := 1; i <= 3; i++ {
		if _, err := amountOf(ctx, globex, pgx.QueryExecModeCacheStatement, fmt.Sprintf("globex-item-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if got := p.hits(t, "globex") - hits; got != 3 {
		t.Fatalf("globex: %v hits of 3 after acme filled its budget", got)
	}
}
