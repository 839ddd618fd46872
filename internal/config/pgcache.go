package config

import (
	"time"

	"github.com/tenantguard/tenantguard/policy"
)

// PgCacheFile is the sidecar file's pg_cache section: the PostgreSQL
// result cache's rules (policy.PgCacheSpec). A control plane's policy, once
// pushed, replaces it as it replaces the tenants.
type PgCacheFile struct {
	TenantBytes     int64    `yaml:"tenant_bytes"`
	MaxEntryBytes   int64    `yaml:"max_entry_bytes"`
	StableFunctions []string `yaml:"stable_functions"`
	Rules           []struct {
		Fingerprints []string `yaml:"fingerprints"`
		Tables       []string `yaml:"tables"`
		TTL          Duration `yaml:"ttl"`
		Tenants      []string `yaml:"tenants"`
	} `yaml:"rules"`
}

// pgCacheSpec converts the section; nil for none. policy.Compile validates
// it (errors name pg_cache.<field>).
func (f *PgCacheFile) pgCacheSpec() *policy.PgCacheSpec {
	if f == nil {
		return nil
	}
	spec := &policy.PgCacheSpec{TenantBytes: f.TenantBytes, MaxEntryBytes: f.MaxEntryBytes, StableFunctions: f.StableFunctions}
	for _, r := range f.Rules {
		spec.Rules = append(spec.Rules, policy.PgCacheRule{Fingerprints: r.Fingerprints, Tables: r.Tables,
			TTL: time.Duration(r.TTL), Tenants: r.Tenants})
	}
	return spec
}
