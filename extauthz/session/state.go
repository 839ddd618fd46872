package session

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/tenantguard/tenantguard/extauthz/token"
)

// sessionState is what a Verifier knows of one session: whether it has
// heard it revoked, the leases watching it and its unflushed analytics.
// Cached verdicts point at it, so marking it revoked kills them all at
// once. It stays in Verifier.states while anything refers to it (see
// prunable); a revoked one is taken out at once and never comes back.
type sessionState struct {
	id     token.SessionID
	idHex  string
	tenant string // "" for a state only Verifier.Record has seen

	revoked     atomic.Bool
	refs        atomic.Int32 // lookups in flight; changed under Verifier.mu
	cachedUntil atomic.Int64 // unix ns: latest expiry of a verdict cached for it

	mu     sync.Mutex
	leases map[*lease]struct{}

	scheduled time.Time // earliest watcher entry pending; guarded by Verifier.watchMu

	stats    sessionStats
	counters atomic.Pointer[tenantCounter] // the tenant's request counters; unknownTenant's while tenant is ""
}

// acquire returns the state of session id, creating it, and holds it
// (refs) so it is not pruned before release. Taking it before asking Redis
// matters: a revocation that arrives after the question finds this state
// and marks it, so the answer cannot be cached as good afterwards.
func (v *Verifier) acquire(id token.SessionID, tenant string) *sessionState {
	v.mu.Lock()
	defer v.mu.Unlock()
	st := v.states[id]
	switch {
	case st == nil:
		st = &sessionState{id: id, idHex: id.String(), tenant: tenant}
		st.counters.Store(v.m.tenants.forTenant(tenant))
		v.states[id] = st
	case st.tenant == "" && tenant != "" && st.counters.Load().tenant == unknownTenant:
		// First seen by Record; now a token names its tenant.
		st.counters.Store(v.m.tenants.forTenant(tenant))
	}
	st.refs.Add(1)
	return st
}

// release undoes acquire.
func (v *Verifier) release(st *sessionState) { st.refs.Add(-1) }

// noteCached records that a verdict valid until exp points at st.
func (st *sessionState) noteCached(exp time.Time) {
	for {
		cur := st.cachedUntil.Load()
		if exp.UnixNano() <= cur || st.cachedUntil.CompareAndSwap(cur, exp.UnixNano()) {
			return
		}
	}
}

// revokeLocal acts on the revocation of session id: it marks the state
// revoked (so its cached verdicts fail), drops it, and ends its leases
// with err. It reports whether this verifier knew the session.
func (v *Verifier) revokeLocal(id token.SessionID, err error) bool {
	v.mu.Lock()
	st := v.states[id]
	delete(v.states, id)
	v.mu.Unlock()
	if st == nil {
		return false
	}
	st.revoked.Store(true) // before st.mu: see Verifier.addLease
	st.mu.Lock()
	ended := make([]*lease, 0, len(st.leases))
	for l := range st.leases {
		ended = append(ended, l)
	}
	clear(st.leases)
	st.mu.Unlock()
	for _, l := range ended {
		l.end(err)
	}
	if len(ended) > 0 {
		v.log.Info("session ended", "session", st.idHex, "tenant", st.tenant, "leases", len(ended), "reason", err.Error())
	}
	return true
}

// prunable reports whether nothing refers to st any more: no lookup in
// flight, no lease, no cached verdict that could still be used, no
// analytics to write. Called with Verifier.mu held.
func (st *sessionState) prunable(now time.Time) bool {
	if st.refs.Load() != 0 || st.cachedUntil.Load() > now.UnixNano() {
		return false
	}
	st.mu.Lock()
	n := len(st.leases)
	st.mu.Unlock()
	if n != 0 {
		return false
	}
	return st.stats.idle()
}

// prune drops the states nothing refers to any more.
func (v *Verifier) prune(now time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for id, st := range v.states {
		if st.prunable(now) {
			delete(v.states, id)
		}
	}
}

// watched returns the states that have open leases.
func (v *Verifier) watched() []*sessionState {
	v.mu.Lock()
	defer v.mu.Unlock()
	var out []*sessionState
	for _, st := range v.states {
		st.mu.Lock()
		if len(st.leases) > 0 {
			out = append(out, st)
		}
		st.mu.Unlock()
	}
	return out
}
