package policypb

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/tenantguard/tenantguard/policy"
)

// ToSpec converts p into the policy.Spec that policy.Compile builds a data
// plane snapshot from. It does not validate (call Validate first); it fails
// only on what has no Spec form: a nil tenant or table, an invalid duration.
//
// policy.Spec has no notion of suspension, so suspended tenants are left
// out: a data plane compiling the Spec refuses them as unknown tenants. The
// sections the Spec lacks (Redis rules, session settings) are read from p
// directly: p.GetRedis(), p.GetSessions() and their helpers (ConfigName,
// EndMode, EmulateSet, StripsAuthorization).
func ToSpec(p *Policy) (policy.Spec, error) {
	return toSpec(p, false)
}

// toSpec converts p, keeping suspended tenants when withSuspended is set, so
// that Spec indices match p's (Validate maps Compile's field paths back).
func toSpec(p *Policy, withSuspended bool) (policy.Spec, error) {
	if p == nil {
		return policy.Spec{}, errors.New("policy is nil")
	}
	spec := policy.Spec{Version: p.GetVersion()}
	for i, t := range p.GetTenants() {
		field := fmt.Sprintf("tenants[%d]", i)
		if t == nil {
			return policy.Spec{}, &policy.FieldError{Field: field, Msg: "missing"}
		}
		if t.GetSuspended() && !withSuspended {
			continue
		}
		timeout, err := duration(t.GetLimits().GetStatementTimeout(), field+".limits.statement_timeout")
		if err != nil {
			return policy.Spec{}, err
		}
		ts := policy.TenantSpec{
			ID:        t.GetId(),
			Passwords: slices.Clone(t.GetCredentials()),
			Limits: policy.Limits{
				MaxConnections:    int(t.GetLimits().GetMaxConnections()),
				MaxTransactions:   int(t.GetLimits().GetMaxTransactions()),
				StatementTimeout:  timeout,
				CommandsPerSecond: int(t.GetLimits().GetCommandsPerSecond()),
				PgCacheBytes:      t.GetLimits().GetPgCacheBytes(),
			},
			ShowConstraintDetail: t.GetShowConstraintDetail(),
			Placement:            policy.Placement{Postgres: t.GetPlacement().GetPostgres(), Redis: t.GetPlacement().GetRedis()},
			Paused:               t.GetPaused(),
		}
		if a := t.GetAllow(); a != nil {
			ts.Allow = &policy.Permissions{Read: a.GetRead(), Write: a.GetWrite(), DDL: a.GetDdl()}
		}
		spec.Tenants = append(spec.Tenants, ts)
	}
	for i, t := range p.GetTables() {
		if t == nil {
			return policy.Spec{}, &policy.FieldError{Field: fmt.Sprintf("tables[%d]", i), Msg: "missing"}
		}
		spec.Tables = append(spec.Tables, policy.TableSpec{Name: t.GetName(), TenantColumn: t.GetTenantColumn(), Shared: t.GetShared()})
	}
	for i, c := range p.GetClusters() {
		if c == nil {
			return policy.Spec{}, &policy.FieldError{Field: fmt.Sprintf("clusters[%d]", i), Msg: "missing"}
		}
		spec.Clusters = append(spec.Clusters, clusterSpec(c))
	}
	pc, err := pgCacheSpec(p.GetPgCache())
	if err != nil {
		return policy.Spec{}, err
	}
	spec.PgCache = pc
	return spec, nil
}

// clusterSpec converts one cluster.
func clusterSpec(c *Cluster) policy.ClusterSpec {
	cs := policy.ClusterSpec{Name: c.GetName(), Default: c.GetDefault()}
	if pg := c.GetPostgres(); pg != nil {
		cs.Postgres = &policy.PostgresCluster{
			Hosts: slices.Clone(pg.GetHosts()), Database: pg.GetDatabase(), User: pg.GetUser(),
			Credentials:          pg.GetCredentials(),
			MaxServerConnections: int(pg.GetMaxServerConnections()),
			MinPerSidecar:        int(pg.GetMinPerSidecar()),
		}
	}
	if r := c.GetRedis(); r != nil {
		cs.Redis = &policy.RedisCluster{Address: r.GetAddress(), Seeds: slices.Clone(r.GetClusterSeeds()), Credentials: r.GetCredentials()}
	}
	return cs
}

// pgCacheSpec converts the pg_cache section; nil for none.
func pgCacheSpec(c *PgCache) (*policy.PgCacheSpec, error) {
	if c == nil {
		return nil, nil
	}
	out := &policy.PgCacheSpec{
		TenantBytes:     c.GetTenantBytes(),
		MaxEntryBytes:   c.GetMaxEntryBytes(),
		StableFunctions: slices.Clone(c.GetStableFunctions()),
	}
	for i, r := range c.GetRules() {
		field := fmt.Sprintf("pg_cache.rules[%d]", i)
		if r == nil {
			return nil, &policy.FieldError{Field: field, Msg: "missing"}
		}
		ttl, err := duration(r.GetTtl(), field+".ttl")
		if err != nil {
			return nil, err
		}
		out.Rules = append(out.Rules, policy.PgCacheRule{
			Fingerprints: slices.Clone(r.GetFingerprints()),
			Tables:       slices.Clone(r.GetTables()),
			TTL:          ttl,
			Tenants:      slices.Clone(r.GetTenants()),
		})
	}
	return out, nil
}

// duration converts an optional Duration; nil is zero.
func duration(d *durationpb.Duration, field string) (time.Duration, error) {
	if d == nil {
		return 0, nil
	}
	if err := d.CheckValid(); err != nil {
		return 0, &policy.FieldError{Field: field, Msg: "not a valid duration"}
	}
	if d.GetSeconds() < 0 || d.GetNanos() < 0 {
		return 0, &policy.FieldError{Field: field, Msg: "must not be negative"}
	}
	// CheckValid allows up to 10,000 years, beyond time.Duration's ~292.
	if d.GetSeconds() >= math.MaxInt64/int64(time.Second) {
		return 0, &policy.FieldError{Field: field, Msg: "too long (at most 292 years)"}
	}
	return d.AsDuration(), nil
}

// FromSpec converts a policy.Spec (as a sidecar configuration file or a
// test builds it) into a Policy with no Redis or session sections. Passwords
// are copied as they are: if any is plaintext, run HashCredentials before
// Validate.
func FromSpec(spec policy.Spec) *Policy {
	p := &Policy{Version: spec.Version}
	for _, ts := range spec.Tenants {
		t := &Tenant{
			Id:                   ts.ID,
			Credentials:          slices.Clone(ts.Passwords),
			ShowConstraintDetail: ts.ShowConstraintDetail,
			Paused:               ts.Paused,
		}
		if ts.Allow != nil {
			t.Allow = &Permissions{Read: ts.Allow.Read, Write: ts.Allow.Write, Ddl: ts.Allow.DDL}
		}
		if l := ts.Limits; l != (policy.Limits{}) {
			t.Limits = &Limits{
				MaxConnections:    clampInt32(l.MaxConnections),
				MaxTransactions:   clampInt32(l.MaxTransactions),
				CommandsPerSecond: clampInt32(l.CommandsPerSecond),
				PgCacheBytes:      l.PgCacheBytes,
			}
			if l.StatementTimeout != 0 {
				t.Limits.StatementTimeout = durationpb.New(l.StatementTimeout)
			}
		}
		if ts.Placement != (policy.Placement{}) {
			t.Placement = &Placement{Postgres: ts.Placement.Postgres, Redis: ts.Placement.Redis}
		}
		p.Tenants = append(p.Tenants, t)
	}
	for _, ts := range spec.Tables {
		p.Tables = append(p.Tables, &Table{Name: ts.Name, TenantColumn: ts.TenantColumn, Shared: ts.Shared})
	}
	if c := spec.PgCache; c != nil {
		p.PgCache = &PgCache{TenantBytes: c.TenantBytes, MaxEntryBytes: c.MaxEntryBytes, StableFunctions: slices.Clone(c.StableFunctions)}
		for _, r := range c.Rules {
			p.PgCache.Rules = append(p.PgCache.Rules, &PgCacheRule{
				Fingerprints: slices.Clone(r.Fingerprints),
				Tables:       slices.Clone(r.Tables),
				Ttl:          durationpb.New(r.TTL),
				Tenants:      slices.Clone(r.Tenants),
			})
		}
	}
	for _, cs := range spec.Clusters {
		c := &Cluster{Name: cs.Name, Default: cs.Default}
		if pg := cs.Postgres; pg != nil {
			c.Postgres = &PostgresCluster{
				Hosts: slices.Clone(pg.Hosts), Database: pg.Database, User: pg.User, Credentials: pg.Credentials,
				MaxServerConnections: clampInt32(pg.MaxServerConnections), MinPerSidecar: clampInt32(pg.MinPerSidecar),
			}
		}
		if r := cs.Redis; r != nil {
			c.Redis = &RedisCluster{Address: r.Address, ClusterSeeds: slices.Clone(r.Seeds), Credentials: r.Credentials}
		}
		p.Clusters = append(p.Clusters, c)
	}
	return p
}

// clampInt32 keeps a limit's sign when it does not fit the message's int32,
// so that an invalid (negative) Spec value stays invalid.
func clampInt32(v int) int32 {
	return int32(min(max(v, math.MinInt32), math.MaxInt32))
}

// ConfigName is the mode's name in the sidecar configuration's
// redis.namespace: "spread" (also for UNSPECIFIED, the default) or
// "one-slot"; "" for a value outside the enum.
func (m NamespaceMode) ConfigName() string {
	switch m {
	case NamespaceMode_NAMESPACE_MODE_UNSPECIFIED, NamespaceMode_NAMESPACE_MODE_SPREAD:
		return "spread"
	case NamespaceMode_NAMESPACE_MODE_ONE_SLOT:
		return "one-slot"
	}
	return ""
}

// ScriptingAllowed reports whether the rules allow scripts: true unless
// allow_scripting is set to false (nil rules: true).
func (r *RedisRules) ScriptingAllowed() bool {
	return r == nil || r.AllowScripting == nil || *r.AllowScripting
}

// EmulateSet returns the emulated commands as the set the Redis data plane
// is configured with (its Config.Emulate); empty for nil rules.
func (r *RedisRules) EmulateSet() map[string]bool {
	set := make(map[string]bool, len(r.GetEmulate()))
	for _, name := range r.GetEmulate() {
		set[name] = true
	}
	return set
}

// EndMode is the mode as package policy names it. UNSPECIFIED is the
// default, policy.SessionEndBoundary (as in the sidecar configuration); a
// value outside the enum, which Validate refuses, fails closed as
// policy.SessionEndImmediate.
func (m SessionEndMode) EndMode() policy.SessionEndMode {
	switch m {
	case SessionEndMode_SESSION_END_MODE_UNSPECIFIED, SessionEndMode_SESSION_END_MODE_BOUNDARY:
		return policy.SessionEndBoundary
	}
	return policy.SessionEndImmediate
}

// StripsAuthorization reports whether ext_authz removes the Authorization
// header: true unless strip_authorization is explicitly false (also for nil
// settings), unlike the generated GetStripAuthorization.
func (s *SessionSettings) StripsAuthorization() bool {
	return s == nil || s.StripAuthorization == nil || *s.StripAuthorization
}
