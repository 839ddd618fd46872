package config

import (
	"strings"
	"testing"
	"time"
)

// TestPgCacheSection: the pg_cache section reaches the policy, and its
// errors name the field.
func TestPgCacheSection(t *testing.T) {
	text := valid + `
pg_cache:
  tenant_bytes: 1048576
  rules:
    - tables: [public.orders]
      ttl: 30s
      tenants: [acme]
`
	sc, err := Parse("sidecar.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	pc := sc.Policy.PgCache()
	if !pc.Enabled() {
		t.Fatal("pg_cache not enabled")
	}
	if ttl, ok := pc.Match("acme", 0, []string{"public.orders"}); !ok || ttl != 30*time.Second {
		t.Fatalf("acme on public.orders: %v %v", ttl, ok)
	}
	if _, ok := pc.Match("globex", 0, []string{"public.orders"}); ok {
		t.Fatal("the rule is acme's only")
	}
	acme, _ := sc.Policy.Tenant("acme")
	if pc.TenantBytes(acme) != 1<<20 {
		t.Fatalf("tenant bytes %d", pc.TenantBytes(acme))
	}
	_, err = Parse("sidecar.yaml", []byte(strings.Replace(text, "ttl: 30s", "ttl: 48h", 1)))
	if err == nil || !strings.Contains(err.Error(), "pg_cache.rules[0]") {
		t.Fatalf("ttl over the bound: %v", err)
	}
}
