package session

import (
	"sync"
	"time"

	"github.com/tenantguard/tenantguard/policy"
)

var _ policy.SessionLease = (*lease)(nil)

// leaseState is where a lease is in its life; it only moves forward.
type leaseState uint8

const (
	leaseOpen   leaseState = iota
	leaseEnded             // onEnd has been called
	leaseClosed            // Close has been called
)

// lease is one data-plane connection's hold on a session: it is ended
// (onEnd called once) when the session is revoked, its token expires, or
// the store stays unreachable past the grace period.
type lease struct {
	v     *Verifier
	st    *sessionState
	user  string
	exp   time.Time // the token's expiry
	onEnd func(error)

	mu    sync.Mutex
	state leaseState
}

// ID returns the session id.
func (l *lease) ID() string { return l.st.idHex }

// User returns the user the session was issued to.
func (l *lease) User() string { return l.user }

// Record counts one request of the connection for the session's analytics.
func (l *lease) Record(fingerprint uint64, refusedRule string) {
	l.v.record(l.st, fingerprint, refusedRule)
}

// Close ends the watch. onEnd is not called once Close has returned (it
// may be running if it began before), and onEnd may call Close.
func (l *lease) Close() {
	l.mu.Lock()
	was := l.state
	l.state = leaseClosed
	l.mu.Unlock()
	if was != leaseOpen {
		return
	}
	l.st.mu.Lock()
	delete(l.st.leases, l)
	l.st.mu.Unlock()
	l.v.m.leases.Dec()
}

// end calls onEnd(err) unless the lease was already ended or closed. The
// caller has taken l out of its session's leases.
func (l *lease) end(err error) {
	l.mu.Lock()
	if l.state != leaseOpen {
		l.mu.Unlock()
		return
	}
	l.state = leaseEnded
	l.mu.Unlock()
	l.v.m.leases.Dec()
	l.onEnd(err)
}

// addLease registers l with its session unless the session has been
// revoked. revokeLocal sets revoked before it takes st.mu, so either it
// sees l here or this sees revoked: a lease can't slip past a revocation.
func (v *Verifier) addLease(l *lease) bool {
	st := l.st
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.revoked.Load() {
		return false
	}
	if st.leases == nil {
		st.leases = make(map[*lease]struct{})
	}
	st.leases[l] = struct{}{}
	v.m.leases.Inc()
	v.schedule(st, l.exp) // takes watchMu inside st.mu: that is the lock order
	return true
}
