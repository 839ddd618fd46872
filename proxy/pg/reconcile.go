package pg

import (
	"github.com/tenantguard/tenantguard/policy"
	"github.com/tenantguard/tenantguard/proxy/clientend"
	wire "github.com/tenantguard/tenantguard/wire/pg"
)

// Following policy changes.
//
// The Store may be swapped at any time (a new policy pushed over xDS). A
// client reads its tenant's policy afresh at each transaction start
// (followPolicy), so permissions, the statement timeout, the tenant's share
// of the pool and constraint details follow the current snapshot, while a
// transaction in progress keeps the policy it started with. A tenant that
// is no longer in the snapshot (removed or suspended) has its connections
// ended at once by Reconcile, which whoever swapped the snapshot calls, and
// by the client itself should it see the new snapshot first.

// errTenantGone is the FATAL a client gets when its tenant leaves the policy.
func errTenantGone(id string) *wire.Error {
	return wire.Fatalf(wire.CodeInvalidAuthSpec, "tenantguard: tenant %s is suspended or no longer in the policy", id)
}

// Reconcile applies the snapshot now in the server's Store to the open
// client connections: each whose tenant the snapshot no longer has, or
// that logged in with a static credential the tenant no longer has, is
// ended at once (FATAL 28000, a transaction in progress aborted and its
// server connection closed). Other connections pick the new policy up at
// their next transaction. Call it after every swap; it does no client I/O,
// returns without waiting for any client, and is safe to call
// concurrently with traffic and with itself.
func (srv *Server) Reconcile() {
	snap := srv.policy.Load()
	srv.mu.Lock()
	var gone, revoked, moved, paused []*clientConn
	for _, s := range srv.clients {
		switch t, st := clientend.Check(snap, s.tenant, s.credential); st {
		case clientend.TenantGone:
			gone = append(gone, s)
		case clientend.CredentialGone:
			revoked = append(revoked, s)
		default:
			switch {
			case s.mode == PoolSession && s.routeChanged(snap):
				moved = append(moved, s)
			case s.mode == PoolSession && t.Paused:
				paused = append(paused, s)
			}
		}
	}
	srv.mu.Unlock()
	srv.applyPolicyPauses(snap)
	srv.applyLimits()
	for _, s := range moved {
		s.movedSession() // at its transaction boundary: session state cannot move
	}
	for _, s := range paused {
		s.pausedSession()
	}
	for _, s := range gone {
		s.tenantRemoved()
	}
	for _, s := range revoked {
		s.credentialRemoved()
	}
}

// credentialRemoved ends the client because the static credential it
// logged in with is no longer in the policy (a rotated password): at once,
// as for a removed tenant.
func (s *clientConn) credentialRemoved() {
	if s.removed.Swap(true) {
		return
	}
	s.srv.metrics.sessionsEnded.WithLabelValues("credential_removed").Inc()
	s.srv.log.Info("credential no longer in the policy; ending client connection", "tenant", s.tenant, "pid", s.key.pid)
	s.end(wire.Fatalf(wire.CodeInvalidAuthSpec, "tenantguard: the credential this connection logged in with was removed from the policy"), policy.SessionEndImmediate)
}

// tenantRemoved ends the client because its tenant left the policy. It
// does no I/O and may be called more than once (end keeps the first error).
func (s *clientConn) tenantRemoved() {
	if s.removed.Swap(true) {
		return
	}
	s.srv.metrics.sessionsEnded.WithLabelValues("tenant_removed").Inc()
	s.srv.log.Info("tenant no longer in the policy; ending client connection", "tenant", s.tenant, "pid", s.key.pid)
	s.end(errTenantGone(s.tenant), policy.SessionEndImmediate)
}

// followPolicy adopts snap, swapped in since the client last looked. The
// tenant's policy is re-read only between transactions; inside one the
// client keeps the policy the transaction started with and looks again at
// its next message. A tenant no longer in snap ends the client now.
func (s *clientConn) followPolicy(snap *policy.Snapshot) error {
	t, st := clientend.Check(snap, s.tenant, s.credential)
	switch st {
	case clientend.TenantGone:
		s.tenantRemoved()
		return s.terminate()
	case clientend.CredentialGone:
		s.credentialRemoved()
		return s.terminate()
	}
	if sc := s.sc.Load(); sc != nil {
		// A session-pooled connection stays attached between transactions;
		// its read loop reads s.t under sc.mu.
		sc.mu.Lock()
		attached := sc.owner == s
		boundary := !attached || sc.releasable()
		if boundary {
			s.t, s.snap = t, snap
		}
		sc.mu.Unlock()
		if boundary && s.routeChanged(snap) {
			if s.mode == PoolSession {
				// The tenant moved: nothing more runs on the old cluster.
				s.movedSession()
				return s.terminate()
			}
			if attached {
				// Pooled per transaction, the connection may still be
				// attached when the next transaction starts (the client read
				// the ReadyForQuery before the read loop gave the connection
				// back). Give it back now, so that the transaction attaches on
				// the tenant's new cluster rather than the old one.
				sc.release()
			}
		}
		return nil
	}
	s.t, s.snap = t, snap
	return nil
}
