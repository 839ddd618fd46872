// Package policy holds the tenant policy model and the compiled, immutable
// snapshot the data plane reads. A Snapshot is never changed after Compile;
// a new policy is a new Snapshot swapped in through a Store.
package policy

import (
	"fmt"
	"regexp"
	"sort"
	"sync/atomic"

	"github.com/tenantguard/tenantguard/wire/pg"
)

// TenantSpec is one tenant as written in configuration.
type TenantSpec struct {
	// ID names the tenant; clients give it as their user name.
	ID string
	// Passwords are static credentials, each either a plaintext password
	// (hashed into a SCRAM verifier at compile time) or a "SCRAM-SHA-256$…" verifier.
	Passwords []string
}

// Spec is a whole policy as written in configuration.
type Spec struct {
	Version string
	Tenants []TenantSpec
}

// Tenant is a compiled tenant.
type Tenant struct {
	ID        string
	verifiers []pg.Verifier
}

// Verifiers returns the tenant's SCRAM verifiers; any of them authenticates.
func (t *Tenant) Verifiers() []pg.Verifier { return t.verifiers }

// Snapshot is a compiled, read-only policy.
type Snapshot struct {
	version string
	tenants map[string]*Tenant
	ids     []string
}

// FieldError names the field of a policy that is wrong and why.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

var tenantIDPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// Compile validates spec and builds a Snapshot. Errors name the field
// (e.g. "tenants[1].id") as it appears in configuration.
func Compile(spec Spec) (*Snapshot, error) {
	s := &Snapshot{version: spec.Version, tenants: make(map[string]*Tenant, len(spec.Tenants))}
	for i, ts := range spec.Tenants {
		field := fmt.Sprintf("tenants[%d]", i)
		if !tenantIDPattern.MatchString(ts.ID) {
			return nil, &FieldError{field + ".id", fmt.Sprintf("%q is not a valid tenant id (lower-case letters, digits, '-', '_'; at most 63; starts with a letter or digit)", ts.ID)}
		}
		if _, dup := s.tenants[ts.ID]; dup {
			return nil, &FieldError{field + ".id", fmt.Sprintf("tenant %q is defined twice", ts.ID)}
		}
		if len(ts.Passwords) == 0 {
			return nil, &FieldError{field + ".passwords", "at least one credential is required"}
		}
		t := &Tenant{ID: ts.ID}
		for j, p := range ts.Passwords {
			pf := fmt.Sprintf("%s.passwords[%d]", field, j)
			v, err := compileCredential(p)
			if err != nil {
				return nil, &FieldError{pf, err.Error()}
			}
			t.verifiers = append(t.verifiers, v)
		}
		s.tenants[ts.ID] = t
		s.ids = append(s.ids, ts.ID)
	}
	sort.Strings(s.ids)
	return s, nil
}

func compileCredential(p string) (pg.Verifier, error) {
	if len(p) >= len("SCRAM-SHA-256$") && p[:len("SCRAM-SHA-256$")] == "SCRAM-SHA-256$" {
		return pg.ParseVerifier(p)
	}
	if len(p) < 8 {
		return pg.Verifier{}, fmt.Errorf("password must have at least 8 characters")
	}
	return pg.NewVerifier(p)
}

// Version is the policy version the snapshot was compiled from.
func (s *Snapshot) Version() string { return s.version }

// Tenant looks up a tenant by id.
func (s *Snapshot) Tenant(id string) (*Tenant, bool) {
	t, ok := s.tenants[id]
	return t, ok
}

// TenantIDs lists the tenants, sorted.
func (s *Snapshot) TenantIDs() []string { return s.ids }

// Store holds the current Snapshot. Readers Load it once per transaction or
// command and never lock; writers Swap in a whole new Snapshot.
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
