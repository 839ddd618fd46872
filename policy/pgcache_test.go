package policy

import (
	"errors"
	"testing"
	"time"
)

func cacheSpec(c *PgCacheSpec) Spec {
	return Spec{
		Tenants: []TenantSpec{{ID: "acme", Passwords: []string{"acme-secret-1"}}, {ID: "globex", Passwords: []string{"globex-secret-1"}, Limits: Limits{PgCacheBytes: 1 << 10}}},
		PgCache: c,
	}
}

func TestPgCacheCompileErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		spec  PgCacheSpec
		field string
	}{
		{"no target", PgCacheSpec{Rules: []PgCacheRule{{TTL: time.Second}}}, "pg_cache.rules[0]"},
		{"no ttl", PgCacheSpec{Rules: []PgCacheRule{{Tables: []string{"public.orders"}}}}, "pg_cache.rules[0].ttl"},
		{"ttl too long", PgCacheSpec{Rules: []PgCacheRule{{Tables: []string{"public.orders"}, TTL: 25 * time.Hour}}}, "pg_cache.rules[0].ttl"},
		{"bad fingerprint", PgCacheSpec{Rules: []PgCacheRule{{Fingerprints: []string{"xyz"}, TTL: time.Second}}}, "pg_cache.rules[0].fingerprints[0]"},
		{"unqualified table", PgCacheSpec{Rules: []PgCacheRule{{Tables: []string{"orders"}, TTL: time.Second}}}, "pg_cache.rules[0].tables[0]"},
		{"unknown tenant", PgCacheSpec{Rules: []PgCacheRule{{Tables: []string{"public.orders"}, TTL: time.Second, Tenants: []string{"initech"}}}}, "pg_cache.rules[0].tenants[0]"},
		{"negative budget", PgCacheSpec{TenantBytes: -1}, "pg_cache.tenant_bytes"},
		{"entry over budget", PgCacheSpec{TenantBytes: 10, MaxEntryBytes: 11}, "pg_cache.max_entry_bytes"},
		{"bad function", PgCacheSpec{StableFunctions: []string{"Price Of"}}, "pg_cache.stable_functions[0]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Compile(cacheSpec(&tc.spec))
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field {
				t.Fatalf("error %v, want one for %s", err, tc.field)
			}
		})
	}
}

func TestPgCacheMatch(t *testing.T) {
	snap, err := Compile(cacheSpec(&PgCacheSpec{
		Rules: []PgCacheRule{
			{Fingerprints: []string{"00000000000000aB"}, TTL: time.Minute},
			{Tables: []string{"public.orders", "public.plans"}, TTL: 30 * time.Second},
			{Tables: []string{"public.plans"}, TTL: 10 * time.Second, Tenants: []string{"acme"}},
		},
		StableFunctions: []string{"app.price_of"},
	}))
	if err != nil {
		t.Fatal(err)
	}
	c := snap.PgCache()
	if !c.Enabled() {
		t.Fatal("not enabled")
	}
	for _, tc := range []struct {
		tenant string
		fp     uint64
		tables []string
		ttl    time.Duration
		ok     bool
	}{
		{"acme", 0xab, nil, time.Minute, true},
		{"acme", 0xab, []string{"public.orders"}, 30 * time.Second, true}, // the shortest of two rules
		{"acme", 1, []string{"public.orders", "public.plans"}, 30 * time.Second, true},
		{"acme", 1, []string{"public.plans"}, 10 * time.Second, true},
		{"globex", 1, []string{"public.plans"}, 30 * time.Second, true}, // the acme-only rule is not globex's
		{"acme", 1, []string{"public.orders", "public.lines"}, 0, false},
		{"acme", 1, nil, 0, false},
	} {
		ttl, ok := c.Match(tc.tenant, tc.fp, tc.tables)
		if ttl != tc.ttl || ok != tc.ok {
			t.Errorf("Match(%s, %x, %v) = %v %v, want %v %v", tc.tenant, tc.fp, tc.tables, ttl, ok, tc.ttl, tc.ok)
		}
	}
	if !c.Stable("app.price_of") || c.Stable("price_of") {
		t.Error("stable functions")
	}
	if got := c.Tables(); len(got) != 2 || got[0] != "public.orders" || got[1] != "public.plans" {
		t.Errorf("tables %v", got)
	}
	acme, _ := snap.Tenant("acme")
	globex, _ := snap.Tenant("globex")
	if c.TenantBytes(acme) != DefaultPgCacheTenantBytes || c.TenantBytes(globex) != 1<<10 {
		t.Errorf("budgets %d %d", c.TenantBytes(acme), c.TenantBytes(globex))
	}
	var none *PgCache
	if none.Enabled() {
		t.Error("nil cache enabled")
	}
	if _, ok := none.Match("acme", 0xab, nil); ok {
		t.Error("nil cache matched")
	}
	if fp, err := ParseFingerprint(FormatFingerprint(0xdeadbeef)); err != nil || fp != 0xdeadbeef {
		t.Errorf("fingerprint round trip %x %v", fp, err)
	}
}
