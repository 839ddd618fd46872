// Package clientend holds what both data planes need to end client
// connections from outside their goroutines: the session-end mode in force
// (configured, or pushed with a policy), the link that routes a token
// session's end to the connection holding its lease, and the metric label
// of a token that fails. The proxies decide what ending means for their
// protocol (a FATAL for PostgreSQL; for Redis, which has no out-of-band
// channel, closing the connection).
package clientend

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/tenantguard/tenantguard/policy"
)

// Mode is the session-end mode a listener applies: the configured one
// until Set changes it (a pushed policy's sessions.end_mode).
type Mode struct {
	configured policy.SessionEndMode
	pushed     atomic.Pointer[policy.SessionEndMode]
}

// NewMode returns a Mode that applies configured until Set.
func NewMode(configured policy.SessionEndMode) *Mode { return &Mode{configured: configured} }

// Set changes the mode from the next session end on.
func (m *Mode) Set(mode policy.SessionEndMode) error {
	switch mode {
	case policy.SessionEndImmediate, policy.SessionEndBoundary:
	default:
		return fmt.Errorf("session end mode %q: want %q or %q", mode, policy.SessionEndImmediate, policy.SessionEndBoundary)
	}
	m.pushed.Store(&mode)
	return nil
}

// Get is the mode in force.
func (m *Mode) Get() policy.SessionEndMode {
	if p := m.pushed.Load(); p != nil {
		return *p
	}
	return m.configured
}

// TokenFailureReason maps a SessionVerifier error to its metrics label.
func TokenFailureReason(err error) string {
	switch {
	case errors.Is(err, policy.ErrSessionExpired):
		return "token_expired"
	case errors.Is(err, policy.ErrSessionRevoked):
		return "token_revoked"
	case errors.Is(err, policy.ErrSessionUnavailable):
		return "store_unavailable"
	}
	return "token_invalid"
}

// Link routes one lease's end (its onEnd, called on the verifier's
// goroutine) to the connection holding the lease. The lease is opened
// during authentication, before the connection is ready to be ended: an
// end reported before Attach is kept and applied by Attach. After Detach,
// OnEnd does nothing. The target it calls must not block.
type Link struct {
	mu       sync.Mutex
	target   func(error)
	early    error
	fired    bool
	detached bool
}

// OnEnd is the lease's callback.
func (l *Link) OnEnd(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.detached || l.fired {
		return
	}
	if l.target == nil {
		if l.early == nil {
			l.early = err
		}
		return
	}
	l.fired = true
	l.target(err)
}

// Attach makes target the one the lease's end goes to (called with the
// link's lock held, once).
func (l *Link) Attach(target func(error)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.target = target
	if l.early != nil && !l.detached {
		l.fired = true
		target(l.early)
	}
}

// Detach stops OnEnd from reaching the target: the lease is about to close.
func (l *Link) Detach() {
	l.mu.Lock()
	l.detached, l.target = true, nil
	l.mu.Unlock()
}

// Standing is what a swapped-in policy snapshot means for an open client
// connection.
type Standing int

const (
	// Stands: the connection stays; it follows the new snapshot from its
	// next transaction or command.
	Stands Standing = iota
	// TenantGone: the tenant was removed or suspended; end the connection
	// at once.
	TenantGone
	// CredentialGone: the static credential the connection logged in with
	// was removed (a rotated password); end the connection at once.
	CredentialGone
)

// Check says whether a connection bound to tenant, logged in with the
// static credential whose SCRAM StoredKey is credential (nil when it logged
// in with a session token), stands under snap, and returns the tenant's
// policy when it does.
func Check(snap *policy.Snapshot, tenant string, credential []byte) (*policy.Tenant, Standing) {
	t, ok := snap.Tenant(tenant)
	switch {
	case !ok:
		return nil, TenantGone
	case credential != nil && !t.HasCredential(credential):
		return nil, CredentialGone
	}
	return t, Stands
}
