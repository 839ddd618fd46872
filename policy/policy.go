// Package policy holds the tenant policy model and the compiled, immutable
// snapshot the data plane reads. A Snapshot is never changed after Compile;
// a new policy is a new Snapshot swapped in through a Store.
package policy

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tenantguard/tenantguard/wire/scram"
)

// TenantSpec is one tenant as written in configuration.
type TenantSpec struct {
	// ID names the tenant; clients give it as their user name.
	ID string
	// Passwords are static credentials, each either a plaintext password
	// (hashed into a SCRAM verifier at compile time) or a "SCRAM-SHA-256$…" verifier.
	Passwords []string
	// Allow says which statement classes the tenant may run; nil means
	// read and write, no DDL.
	Allow *Permissions
	// Limits cap the tenant's share of the sidecar.
	Limits Limits
	// ShowConstraintDetail keeps the DETAIL of unique and foreign-key
	// violations, which can carry other tenants' values.
	ShowConstraintDetail bool
	// Placement names the clusters serving the tenant (placement.go);
	// empty names take the defaults.
	Placement Placement
	// Paused holds the tenant's new PostgreSQL transactions (they wait)
	// until a policy without it; a tenant move sets it for its switch.
	Paused bool
}

// Permissions are the statement classes a tenant may run.
type Permissions struct {
	Read, Write, DDL bool
}

// Limits are per-tenant caps; zero means no cap of the tenant's own.
type Limits struct {
	// MaxConnections caps the tenant's client connections (then 53300).
	MaxConnections int
	// MaxTransactions caps the upstream connections the tenant holds at once
	// in each pool; its further transactions queue.
	MaxTransactions int
	// StatementTimeout is set on every upstream transaction of the tenant.
	StatementTimeout time.Duration
	// CommandsPerSecond caps the tenant's Redis commands across its
	// connections to this sidecar (bursts up to one second's worth).
	CommandsPerSecond int
	// PgCacheBytes is the tenant's budget in the PostgreSQL result cache
	// of each sidecar, instead of PgCacheSpec.TenantBytes.
	PgCacheBytes int64
}

// TableSpec names a table the policy protects.
type TableSpec struct {
	// Name is schema-qualified, e.g. "public.orders".
	Name string
	// TenantColumn holds the tenant id; empty for a Shared table.
	TenantColumn string
	// Shared tables are readable by every tenant and writable by none.
	Shared bool
}

// Spec is a whole policy as written in configuration.
type Spec struct {
	Version string
	Tenants []TenantSpec
	Tables  []TableSpec
	// PgCache, when set, is the PostgreSQL result cache (pgcache.go).
	PgCache *PgCacheSpec
	// Clusters are the upstream clusters tenants are placed on
	// (placement.go); none: every tenant on the configured upstreams.
	Clusters []ClusterSpec
}

// Tenant is a compiled tenant.
type Tenant struct {
	ID                   string
	Allow                Permissions
	Limits               Limits
	ShowConstraintDetail bool
	// Placement is the tenant's clusters, defaults resolved: "" is the
	// sidecar's configured upstream.
	Placement Placement
	// Paused: the tenant's new PostgreSQL transactions wait (TenantSpec).
	Paused    bool
	verifiers []scram.Verifier
}

// Verifiers returns the tenant's SCRAM verifiers; any of them authenticates.
func (t *Tenant) Verifiers() []scram.Verifier { return t.verifiers }

// HasCredential reports whether the tenant still has the credential whose
// verifier has storedKey: a connection that logged in with a credential
// the policy no longer has is to be ended.
func (t *Tenant) HasCredential(storedKey []byte) bool {
	for _, v := range t.verifiers {
		if subtle.ConstantTimeCompare(v.StoredKey, storedKey) == 1 {
			return true
		}
	}
	return false
}

// Snapshot is a compiled, read-only policy.
type Snapshot struct {
	version string
	tenants map[string]*Tenant
	ids     []string
	tables  []TableSpec
	pgCache *PgCache

	clusters     map[string]*ClusterSpec
	clusterNames []string
}

// FieldError names the field of a policy that is wrong and why.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// MaxTenantIDLen bounds a tenant id.
const MaxTenantIDLen = 63

// ValidTenantID reports whether id can name a tenant: it matches
// ^[a-z0-9][a-z0-9_-]{0,62}$, so it fits a PostgreSQL identifier, a Redis
// key prefix and a session token unquoted. The one rule: the admin API,
// the policy codec, session tokens and the session store call it too.
// (A loop, not a regexp: ext_authz checks every token's tenant.)
func ValidTenantID(id string) bool {
	if len(id) == 0 || len(id) > MaxTenantIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case (c == '_' || c == '-') && i > 0:
		default:
			return false
		}
	}
	return true
}

// CheckTenantID is ValidTenantID with an error that says the rule.
func CheckTenantID(id string) error {
	if !ValidTenantID(id) {
		return fmt.Errorf("%q is not a valid tenant id (lower-case letters, digits, '-', '_'; at most 63; starts with a letter or digit)", id)
	}
	return nil
}

// VerifierPrefix starts every SCRAM-SHA-256 verifier (PostgreSQL's
// rolpassword form): a credential with it is a verifier, else a plaintext.
const VerifierPrefix = "SCRAM-SHA-256$"

// MinPasswordLen is the shortest plaintext password a policy accepts.
const MinPasswordLen = 8

// CheckPassword reports whether a plaintext password is acceptable. Its
// error never quotes the password.
func CheckPassword(p string) error {
	if len(p) < MinPasswordLen {
		return fmt.Errorf("password must have at least %d characters", MinPasswordLen)
	}
	return nil
}

// Compile validates spec and builds a Snapshot. Errors name the field
// (e.g. "tenants[1].id") as it appears in configuration.
func Compile(spec Spec) (*Snapshot, error) {
	s := &Snapshot{version: spec.Version, tenants: make(map[string]*Tenant, len(spec.Tenants))}
	defPG, defRedis, err := s.compileClusters(spec.Clusters)
	if err != nil {
		return nil, err
	}
	for i, ts := range spec.Tenants {
		field := fmt.Sprintf("tenants[%d]", i)
		if err := CheckTenantID(ts.ID); err != nil {
			return nil, &FieldError{field + ".id", err.Error()}
		}
		if _, dup := s.tenants[ts.ID]; dup {
			return nil, &FieldError{field + ".id", fmt.Sprintf("tenant %q is defined twice", ts.ID)}
		}
		if len(ts.Passwords) == 0 {
			return nil, &FieldError{field + ".passwords", "at least one credential is required"}
		}
		t := &Tenant{ID: ts.ID, Allow: Permissions{Read: true, Write: true}, Limits: ts.Limits, ShowConstraintDetail: ts.ShowConstraintDetail, Paused: ts.Paused}
		if ts.Allow != nil {
			t.Allow = *ts.Allow
		}
		if ts.Limits.MaxConnections < 0 {
			return nil, &FieldError{field + ".limits.max_connections", "must not be negative"}
		}
		if ts.Limits.MaxTransactions < 0 {
			return nil, &FieldError{field + ".limits.max_transactions", "must not be negative"}
		}
		if ts.Limits.CommandsPerSecond < 0 {
			return nil, &FieldError{field + ".limits.commands_per_second", "must not be negative"}
		}
		if ts.Limits.StatementTimeout < 0 {
			return nil, &FieldError{field + ".limits.statement_timeout", "must not be negative"}
		}
		if ts.Limits.PgCacheBytes < 0 {
			return nil, &FieldError{field + ".limits.pg_cache_bytes", "must not be negative"}
		}
		if t.Placement, err = s.resolvePlacement(ts.Placement, defPG, defRedis, field); err != nil {
			return nil, err
		}
		for j, p := range ts.Passwords {
			pf := fmt.Sprintf("%s.passwords[%d]", field, j)
			v, err := compileCredential(ts.ID, p)
			if err != nil {
				return nil, &FieldError{pf, err.Error()}
			}
			t.verifiers = append(t.verifiers, v)
		}
		s.tenants[ts.ID] = t
		s.ids = append(s.ids, ts.ID)
	}
	sort.Strings(s.ids)
	seen := map[string]bool{}
	for i, t := range spec.Tables {
		field := fmt.Sprintf("tables[%d]", i)
		if !qualifiedName().MatchString(t.Name) {
			return nil, &FieldError{field + ".name", fmt.Sprintf("%q is not a schema-qualified table name (schema.table, lower case)", t.Name)}
		}
		if seen[t.Name] {
			return nil, &FieldError{field + ".name", fmt.Sprintf("table %q is listed twice", t.Name)}
		}
		seen[t.Name] = true
		switch {
		case t.Shared && t.TenantColumn != "":
			return nil, &FieldError{field + ".tenant_column", "a shared table has no tenant column"}
		case !t.Shared && !identifier().MatchString(t.TenantColumn):
			return nil, &FieldError{field + ".tenant_column", fmt.Sprintf("%q is not a column name (lower case identifier)", t.TenantColumn)}
		}
		s.tables = append(s.tables, t)
	}
	pc, err := compilePgCache(spec.PgCache, s.tenants)
	if err != nil {
		return nil, err
	}
	s.pgCache = pc
	return s, nil
}

// lazyRegexp compiles expr on first use: {0,62} repeats its class 62
// times in the compiled program, and compiling these at package
// initialisation cost about 240 KB of heap in every process that links
// policy, most of which (ext_authz) never checks a table name.
func lazyRegexp(expr string) func() *regexp.Regexp {
	return sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(expr) })
}

var (
	identifier    = lazyRegexp(`^[a-z_][a-z0-9_]{0,62}$`)
	qualifiedName = lazyRegexp(`^[a-z_][a-z0-9_]{0,62}\.[a-z_][a-z0-9_]{0,62}$`)
)

// Tables lists the protected tables.
func (s *Snapshot) Tables() []TableSpec {
	if s == nil {
		return nil
	}
	return s.tables
}

// compileCredential turns a credential into a verifier. A plaintext one
// gets a salt derived from the tenant and the password, so compiling the
// same policy again yields the same verifier: connections that logged in
// with it are recognised as using a credential the policy still has (see
// Tenant.HasCredential). The plaintext is in the policy anyway.
func compileCredential(tenant, p string) (scram.Verifier, error) {
	if strings.HasPrefix(p, VerifierPrefix) {
		return scram.ParseVerifier(p)
	}
	if err := CheckPassword(p); err != nil {
		return scram.Verifier{}, err
	}
	salt := sha256.Sum256([]byte("tenantguard plaintext credential salt\x00" + tenant + "\x00" + p))
	return scram.DeriveVerifier(p, salt[:16])
}

// Version is the policy version the snapshot was compiled from.
func (s *Snapshot) Version() string {
	if s == nil {
		return ""
	}
	return s.version
}

// Tenant looks up a tenant by id. A nil Snapshot (no policy yet) has no
// tenants, so the data plane fails closed.
func (s *Snapshot) Tenant(id string) (*Tenant, bool) {
	if s == nil {
		return nil, false
	}
	t, ok := s.tenants[id]
	return t, ok
}

// TenantIDs lists the tenants, sorted.
func (s *Snapshot) TenantIDs() []string {
	if s == nil {
		return nil
	}
	return s.ids
}

// Store holds the current Snapshot. Readers Load it once per transaction or
// command and never lock; writers Swap in a whole new Snapshot, then have
// the data plane reconcile its open connections with it (the proxies'
// Reconcile). A nil Snapshot reads as a policy with no tenants.
type Store struct{ cur atomic.Pointer[Snapshot] }

// NewStore returns a Store holding s.
func NewStore(s *Snapshot) *Store {
	st := &Store{}
	st.cur.Store(s)
	return st
}

// Load returns the current snapshot.
func (st *Store) Load() *Snapshot { return st.cur.Load() }

// Swap installs s and returns the previous snapshot.
func (st *Store) Swap(s *Snapshot) *Snapshot { return st.cur.Swap(s) }
