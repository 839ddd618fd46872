package policypb_test

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/tenantguard/tenantguard/policy"
	"github.com/tenantguard/tenantguard/policy/policypb"
)

const pgCacheYAML = `
tenants:
  - id: acme
    credentials: ["SCRAM-SHA-256$4096:OLopLdLn2iIXV2xKEo1XcA==$//3M5CupSzKX1w6u8HiK635fFImcH0okPkDYYZHP8jQ=:ZiWR3X/MmfuYovCcz0sGV9woCQm3U1q95TjeelpKh+A="]
    limits: {pg_cache_bytes: 2048}
tables:
  - {name: public.orders, tenant_column: tenant_id}
pg_cache:
  tenant_bytes: 4096
  stable_functions: [app.price_of]
  rules:
    - {fingerprints: ["00000000000000ab"], ttl: 1m}
    - {tables: [public.orders], ttl: 5s, tenants: [acme]}
`

// TestPgCacheSection: the pg_cache section, written by hand, reaches the
// compiled snapshot and survives FromSpec.
func TestPgCacheSection(t *testing.T) {
	p, err := policypb.ParseYAML([]byte(pgCacheYAML))
	if err != nil {
		t.Fatal(err)
	}
	if err := policypb.Validate(p); err != nil {
		t.Fatal(err)
	}
	spec, err := policypb.ToSpec(p)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := policy.Compile(spec)
	if err != nil {
		t.Fatal(err)
	}
	c := snap.PgCache()
	if ttl, ok := c.Match("acme", 0xab, nil); !ok || ttl != time.Minute {
		t.Errorf("fingerprint rule: %v %v", ttl, ok)
	}
	if ttl, ok := c.Match("acme", 1, []string{"public.orders"}); !ok || ttl != 5*time.Second {
		t.Errorf("table rule: %v %v", ttl, ok)
	}
	acme, _ := snap.Tenant("acme")
	if c.TenantBytes(acme) != 2048 || !c.Stable("app.price_of") {
		t.Errorf("budget %d, stable %v", c.TenantBytes(acme), c.Stable("app.price_of"))
	}
	if back := policypb.FromSpec(spec); !proto.Equal(back.GetPgCache(), p.GetPgCache()) {
		t.Errorf("FromSpec: %v\nwant %v", back.GetPgCache(), p.GetPgCache())
	}
}

func TestPgCacheValidate(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"ttl missing", "pg_cache: {rules: [{tables: [public.orders]}]}", "pg_cache.rules[0].ttl: must be more than 0 and at most 24h0m0s"},
		{"ttl negative", "pg_cache: {rules: [{tables: [public.orders], ttl: -1s}]}", "pg_cache.rules[0].ttl: must not be negative"},
		{"fingerprint", "pg_cache: {rules: [{fingerprints: [abc], ttl: 1s}]}", `pg_cache.rules[0].fingerprints[0]: "abc" is not a statement fingerprint (16 hex digits)`},
		{"budget", "tenants: [{id: acme, credentials: []}]\npg_cache: {tenant_bytes: -5}", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := policypb.ParseYAML([]byte(tc.yaml))
			if err != nil {
				t.Fatal(err)
			}
			err = policypb.Validate(p)
			if err == nil {
				t.Fatal("valid")
			}
			if tc.want != "" && err.Error() != tc.want {
				t.Fatalf("error %q, want %q", err, tc.want)
			}
		})
	}
}
