package policy

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// PgCacheSpec is the PostgreSQL result cache as written in a policy: which
// read-only statements a sidecar may answer from memory, for how long, and
// how much memory each tenant's results may take there. Nil, or no rules,
// caches nothing.
type PgCacheSpec struct {
	// Rules opt statements in; a statement matching several gets the
	// shortest TTL.
	Rules []PgCacheRule
	// TenantBytes is each tenant's budget on each sidecar (0: 8 MiB); a
	// tenant's Limits.PgCacheBytes overrides it.
	TenantBytes int64
	// MaxEntryBytes bounds one cached result (0: 1 MiB); larger results are
	// not cached.
	MaxEntryBytes int64
	// StableFunctions are user functions ("name" or "schema.name", lower
	// case) the cache may treat as deterministic: their result follows from
	// their arguments and the tables they read, and they write nothing.
	// Any other user function keeps a statement out of the cache.
	StableFunctions []string
}

// PgCacheRule opts statements into the result cache.
type PgCacheRule struct {
	// Fingerprints are statement fingerprints as the firewall computes them
	// (16 hex digits; `tenantguard pg fingerprint` prints a statement's).
	Fingerprints []string
	// Tables are schema-qualified tables: a statement that reads only
	// these tables is cached.
	Tables []string
	// TTL bounds how long a result is served, notifications or not.
	TTL time.Duration
	// Tenants limits the rule to these tenants; empty means every tenant.
	Tenants []string
}

// PgCache is a compiled PgCacheSpec, read by the Postgres data plane.
type PgCache struct {
	rules         []pgCacheRule
	byFingerprint map[uint64][]int // rules naming the fingerprint
	tableRules    []int            // rules naming tables
	tables        []string         // every rule's tables, sorted
	stable        map[string]bool
	tenantBytes   int64
	maxEntryBytes int64
}

type pgCacheRule struct {
	ttl     time.Duration
	tables  map[string]bool
	tenants map[string]bool // nil: every tenant
}

// Defaults of PgCacheSpec.
const (
	DefaultPgCacheTenantBytes   = 8 << 20
	DefaultPgCacheMaxEntryBytes = 1 << 20
	// MaxPgCacheTTL bounds a rule's TTL: the longest a result can be
	// served when an invalidation is lost.
	MaxPgCacheTTL = 24 * time.Hour
)

var (
	fingerprintHex = lazyRegexp(`^[0-9a-fA-F]{16}$`)
	functionName   = lazyRegexp(`^([a-z_][a-z0-9_]{0,62}\.)?[a-z_][a-z0-9_]{0,62}$`)
)

// compilePgCache validates spec against the policy's tenants (ids).
func compilePgCache(spec *PgCacheSpec, tenants map[string]*Tenant) (*PgCache, error) {
	if spec == nil || len(spec.Rules) == 0 && spec.TenantBytes == 0 && spec.MaxEntryBytes == 0 && len(spec.StableFunctions) == 0 {
		return nil, nil
	}
	c := &PgCache{byFingerprint: map[uint64][]int{}, stable: map[string]bool{},
		tenantBytes: spec.TenantBytes, maxEntryBytes: spec.MaxEntryBytes}
	switch {
	case spec.TenantBytes < 0:
		return nil, &FieldError{"pg_cache.tenant_bytes", "must not be negative"}
	case spec.MaxEntryBytes < 0:
		return nil, &FieldError{"pg_cache.max_entry_bytes", "must not be negative"}
	}
	if c.tenantBytes == 0 {
		c.tenantBytes = DefaultPgCacheTenantBytes
	}
	if c.maxEntryBytes == 0 {
		c.maxEntryBytes = min(DefaultPgCacheMaxEntryBytes, c.tenantBytes)
	}
	if c.maxEntryBytes > c.tenantBytes {
		return nil, &FieldError{"pg_cache.max_entry_bytes", fmt.Sprintf("%d is more than tenant_bytes (%d)", c.maxEntryBytes, c.tenantBytes)}
	}
	for i, f := range spec.StableFunctions {
		if !functionName().MatchString(f) {
			return nil, &FieldError{fmt.Sprintf("pg_cache.stable_functions[%d]", i), fmt.Sprintf("%q is not a function name (name or schema.name, lower case)", f)}
		}
		c.stable[f] = true
	}
	all := map[string]bool{}
	for i, rs := range spec.Rules {
		field := fmt.Sprintf("pg_cache.rules[%d]", i)
		if len(rs.Fingerprints) == 0 && len(rs.Tables) == 0 {
			return nil, &FieldError{field, "names no fingerprint and no table"}
		}
		if rs.TTL <= 0 || rs.TTL > MaxPgCacheTTL {
			return nil, &FieldError{field + ".ttl", fmt.Sprintf("must be more than 0 and at most %s", MaxPgCacheTTL)}
		}
		r := pgCacheRule{ttl: rs.TTL}
		for j, fp := range rs.Fingerprints {
			if !fingerprintHex().MatchString(fp) {
				return nil, &FieldError{fmt.Sprintf("%s.fingerprints[%d]", field, j), fmt.Sprintf("%q is not a statement fingerprint (16 hex digits)", fp)}
			}
			v, _ := strconv.ParseUint(fp, 16, 64)
			c.byFingerprint[v] = append(c.byFingerprint[v], i)
		}
		if len(rs.Tables) > 0 {
			r.tables = map[string]bool{}
			c.tableRules = append(c.tableRules, i)
		}
		for j, t := range rs.Tables {
			if !qualifiedName().MatchString(t) {
				return nil, &FieldError{fmt.Sprintf("%s.tables[%d]", field, j), fmt.Sprintf("%q is not a schema-qualified table name (schema.table, lower case)", t)}
			}
			r.tables[t] = true
			all[t] = true
		}
		for j, id := range rs.Tenants {
			if _, ok := tenants[id]; !ok {
				return nil, &FieldError{fmt.Sprintf("%s.tenants[%d]", field, j), fmt.Sprintf("no tenant %q in the policy", id)}
			}
			if r.tenants == nil {
				r.tenants = map[string]bool{}
			}
			r.tenants[id] = true
		}
		c.rules = append(c.rules, r)
	}
	for t := range all {
		c.tables = append(c.tables, t)
	}
	slices.Sort(c.tables)
	return c, nil
}

// PgCache returns the compiled result cache rules; nil caches nothing.
func (s *Snapshot) PgCache() *PgCache {
	if s == nil {
		return nil
	}
	return s.pgCache
}

// Enabled reports whether any statement may be cached.
func (c *PgCache) Enabled() bool { return c != nil && len(c.rules) > 0 }

// Match returns the TTL for a statement of tenant with fingerprint fp that
// reads tables (schema-qualified names), or ok false when no rule opts it
// in. A table rule matches a statement that reads at least one table and
// only tables of the rule.
func (c *PgCache) Match(tenant string, fp uint64, tables []string) (ttl time.Duration, ok bool) {
	if c == nil {
		return 0, false
	}
	take := func(i int) {
		r := &c.rules[i]
		if r.tenants != nil && !r.tenants[tenant] {
			return
		}
		if !ok || r.ttl < ttl {
			ttl, ok = r.ttl, true
		}
	}
	for _, i := range c.byFingerprint[fp] {
		take(i)
	}
	if len(tables) == 0 {
		return ttl, ok
	}
next:
	for _, i := range c.tableRules {
		for _, t := range tables {
			if !c.rules[i].tables[t] {
				continue next
			}
		}
		take(i)
	}
	return ttl, ok
}

// Stable reports whether the policy declares function name ("name" or
// "schema.name", lower case) stable.
func (c *PgCache) Stable(name string) bool { return c != nil && c.stable[name] }

// Tables lists the tables the rules name, sorted: pg bootstrap installs
// invalidation triggers on them beside the protected tables.
func (c *PgCache) Tables() []string {
	if c == nil {
		return nil
	}
	return c.tables
}

// TenantBytes is tenant t's budget on each sidecar.
func (c *PgCache) TenantBytes(t *Tenant) int64 {
	if t != nil && t.Limits.PgCacheBytes > 0 {
		return t.Limits.PgCacheBytes
	}
	if c == nil {
		return DefaultPgCacheTenantBytes
	}
	return c.tenantBytes
}

// MaxEntryBytes bounds one cached result.
func (c *PgCache) MaxEntryBytes() int64 {
	if c == nil {
		return DefaultPgCacheMaxEntryBytes
	}
	return c.maxEntryBytes
}

// ParseFingerprint reads a fingerprint as written in a policy.
func ParseFingerprint(s string) (uint64, error) {
	if !fingerprintHex().MatchString(s) {
		return 0, fmt.Errorf("%q is not a statement fingerprint (16 hex digits)", s)
	}
	return strconv.ParseUint(strings.ToLower(s), 16, 64)
}

// FormatFingerprint writes a fingerprint as a policy names it.
func FormatFingerprint(fp uint64) string { return fmt.Sprintf("%016x", fp) }
