// Package rls installs and audits row-level security for tenant-scoped
// tables, and signs the tenant bindings the sidecar sends upstream.
//
// The binding. Each upstream session carries the tenant it serves in two
// places only administrator-owned code can write: the session's currval()
// of two UNLOGGED sequences, tenantguard.tenant_binding (the tenant's
// number in the registry table tenantguard.tenant) and
// tenantguard.binding_issued_at. currval is private to the session, is not
// a setting (SET, RESET ALL and set_config cannot touch it), and only
// nextval and setval change it, which need privileges on the sequence the
// upstream role does not have. The one function that calls setval,
// tenantguard.bind(tenant, backend_pid, issued_at, signature), is SECURITY
// DEFINER and sets the registers only for a binding whose HMAC-SHA256
// (with the binding key, stored where the upstream role cannot read it)
// verifies, that names this backend's pid, that is not older than the
// last binding this session accepted nor than the session itself (so a
// binding cannot be replayed, on this backend or on a later one that
// reuses its pid), and that is within the key's maximum age. Before
// checking anything it sets the register to 0, and setval is not undone by
// a rollback: a rejected, failed or cancelled bind leaves the session bound
// to no tenant, never to the previous one.
//
// Row-level security policies compare the tenant column with
// (SELECT tenantguard.current_tenant()), evaluated once per statement as an
// InitPlan: a PL/pgSQL function (not SECURITY DEFINER) whose one query, a
// primary-key probe of the registry with the session's currval, is planned
// once per session. No signature is checked per statement. A session that
// was never bound (tenantguard.bound, set by bind, is not 'on') gets NULL
// and sees no rows; one whose last binding was rejected gets an error
// (currval of sequence "tenant_binding" is not yet defined in this
// session); one whose bind was interrupted sees no rows. The setting is
// only a hint of whether to look: whatever its value, the tenant comes
// from the register.
//
// The signature is checked once per bind, which the sidecar sends only
// when a server connection changes tenant, after a reset, or when the
// binding is half its maximum age, pipelined ahead of the client's first
// message with its reply swallowed: no extra round trip. Ahead of a
// switch's bind it sends DISCARD SEQUENCES, which needs no privilege, so a
// bind that cannot run at all leaves no tenant either. A bind costs about
// what the old per-statement check cost (an HMAC in PL/pgSQL, a key
// lookup) plus two setval on UNLOGGED sequences: no WAL, no transaction id,
// nothing to vacuum. bench/rls measures it against the alternatives.
package rls

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"time"
)

// Setting is the custom setting that carried the binding before the
// binding moved into sequence registers. Nothing reads it any more; the
// firewall still refuses writes to it and to every tenantguard.* setting.
const Setting = "tenantguard.binding"

// Schema holds the binding function, the registry, the registers and the key.
const Schema = "tenantguard"

// BindSQL is the statement that binds an upstream session to a tenant. Its
// four text parameters come from (*Binder).Statement. It returns one row
// (void) when the binding was accepted and fails with SQLSTATE 42501,
// leaving the session bound to no tenant, when it was not.
const BindSQL = "SELECT tenantguard.bind($1, $2, $3, $4)"

// Binder signs tenant bindings.
type Binder struct {
	key    []byte
	maxAge time.Duration
}

// NewBinder returns a Binder for key (16 to 64 bytes) whose bindings are
// valid for maxAge.
func NewBinder(key []byte, maxAge time.Duration) (*Binder, error) {
	if len(key) < 16 || len(key) > 64 {
		return nil, errors.New("binding key must be 16 to 64 bytes")
	}
	if maxAge <= 0 {
		maxAge = time.Hour
	}
	return &Binder{key: append([]byte(nil), key...), maxAge: maxAge}, nil
}

// MaxAge is how long a binding stays valid.
func (b *Binder) MaxAge() time.Duration { return b.maxAge }

// Statement returns BindSQL and its parameters, in text format, binding
// the backend whose process id is backendPID to tenant, issued at at.
// Bindings sent to one backend must have strictly increasing times (to the
// microsecond): the database refuses one that is not newer than the last
// it accepted.
func (b *Binder) Statement(tenant string, backendPID uint32, at time.Time) (sql string, args []string) {
	pid := strconv.FormatUint(uint64(backendPID), 10)
	issued := strconv.FormatInt(at.UnixMicro(), 10)
	return BindSQL, []string{tenant, pid, issued, b.sign(tenant, pid, issued)}
}

// sign is the hex HMAC-SHA256 of "<tenant>.<pid>.<issued>". Tenant ids
// contain no dots, so the message is unambiguous.
func (b *Binder) sign(tenant, pid, issued string) string {
	m := hmac.New(sha256.New, b.key)
	m.Write([]byte(tenant + "." + pid + "." + issued))
	return hex.EncodeToString(m.Sum(nil))
}

// pads returns HMAC's inner and outer padded keys, which the database needs
// to compute the same HMAC with sha256() alone.
func (b *Binder) pads() (ipad, opad []byte) {
	k := make([]byte, sha256.BlockSize)
	copy(k, b.key)
	ipad = make([]byte, len(k))
	opad = make([]byte, len(k))
	for i, c := range k {
		ipad[i] = c ^ 0x36
		opad[i] = c ^ 0x5c
	}
	return ipad, opad
}
