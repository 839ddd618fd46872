package pg_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantguard/tenantguard/internal/pgcluster"
	"github.com/tenantguard/tenantguard/policy"
	"github.com/tenantguard/tenantguard/proxy/pg/firewall"
	"github.com/tenantguard/tenantguard/proxy/pg/rls"
	"github.com/tenantguard/tenantguard/test/harness"
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
	pg := cacheUpstream(t)
	p := startProxyWith(t, pg, cacheSpec(t, withCache, ttl), func(c *proxypgConfig) {
		c.Databases = []proxypgDatabase{{Name: "app", URL: fmt.Sprintf("postgres://%s:%s@127.0.0.1:%d/cachedb?sslmode=disable", cacheRole, cachePassword, pg.Port())}}
		c.Binder = cacheBinder
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
			sql := "SELECT id, item, amount FROM orders WHERE amount > $1 ORDER BY id"
			args := []any{int64(12)}
			if m.mode == pgx.QueryExecModeSimpleProtocol {
				sql = fmt.Sprintf("SELECT id, item, amount FROM orders WHERE amount > 12 AND '%s' <> '' ORDER BY id", m.name)
				args = nil
			} else {
				sql += " /* " + m.name + " */"
			}
			first, err := queryText(ctx, c, m.mode, sql, args...)
			if err != nil {
				t.Fatal(err)
			}
			if first == "" || strings.Count(first, "\n") != 3 {
				t.Fatalf("acme's rows over 12: %q", first)
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
				t.Fatalf("%v hits, want 3", got)
			}
		})
	}
}
