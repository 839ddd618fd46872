package redis

import (
	"github.com/tenantguard/tenantguard/policy"
	"github.com/tenantguard/tenantguard/proxy/clientend"
)

// Following policy changes.
//
// The Store may be swapped at any time (a new policy pushed over xDS).
// Before each command a client compares the Store's snapshot pointer with
// the one it read its tenant from, and only when it changed looks the
// tenant up again (followPolicy): the command rate (the tenant's bucket is
// shared, the rate is the client's current view) and anything else read
// from the tenant follow the current snapshot at the next command, with no
// lock and no allocation on the hot path. A tenant that is no longer in the
// snapshot (removed or suspended) has its connections closed at once by
// Reconcile, which whoever swapped the snapshot calls, and by the client
// itself should it see the new snapshot first. Nothing is written to the
// client first: RESP2 has no out-of-band channel (see ending.go).

// Reconcile applies the snapshot now in the server's Store to the open
// client connections: each bound to a tenant the snapshot no longer has is
// closed at once, and the cache of verified static secrets is emptied. Call
// it after every swap; it returns without waiting for any client and is
// safe to call concurrently with traffic and with itself.
func (srv *Server) Reconcile() {
	snap := srv.policy.Load()
	srv.mu.Lock()
	// checkSecret would empty it at the next AUTH; the secrets the old
	// snapshot verified are not kept until then.
	srv.verSnap = snap
	clear(srv.verified)
	var gone, revoked, moved []*clientConn
	for s := range srv.clients {
		if s.tenantID == "" {
			continue // not authenticated yet: register checks the snapshot
		}
		switch _, st := clientend.Check(snap, s.tenantID, s.staticCredential()); st {
		case clientend.TenantGone:
			gone = append(gone, s)
		case clientend.CredentialGone:
			revoked = append(revoked, s)
		default:
			moved = append(moved, s)
		}
	}
	srv.mu.Unlock()
	for _, s := range gone {
		s.tenantRemoved()
	}
	for _, s := range revoked {
		s.credentialRemoved()
	}
	// A subscriber placed elsewhere now has no command boundary to move
	// at, and its subscriptions live on the old upstream: it is closed
	// (placement.go). Every other client moves before its next command.
	for _, s := range moved {
		if s.cannotMove(snap) {
			s.movedSubscriber()
		}
	}
	srv.dropScriptUsers()
	for _, be := range srv.liveBackends() {
		be.dropScriptUsers()
	}
}

// staticCredential is the StoredKey of the static secret the connection
// authenticated with, nil after a token.
func (s *clientConn) staticCredential() []byte {
	if p := s.credential.Load(); p != nil {
		return *p
	}
	return nil
}

// credentialRemoved closes the connection because the static secret it
// authenticated with is no longer in the policy (a rotated password), at
// once, as for a removed tenant. Safe from any goroutine, more than once.
func (s *clientConn) credentialRemoved() {
	if s.removed.Swap(true) {
		return
	}
	s.srv.metrics.sessionsEnded.WithLabelValues("credential_removed").Inc()
	s.srv.log.Info("credential no longer in the policy; closing client connection", "tenant", s.tenantID, "client", s.id)
	s.end(policy.SessionEndImmediate)
}

// tenantRemoved closes the connection because its tenant left the policy.
// Safe from any goroutine, more than once.
func (s *clientConn) tenantRemoved() {
	if s.removed.Swap(true) {
		return
	}
	s.srv.metrics.sessionsEnded.WithLabelValues("tenant_removed").Inc()
	s.srv.log.Info("tenant no longer in the policy; closing client connection", "tenant", s.tenantID, "client", s.id)
	s.end(policy.SessionEndImmediate)
}

// followPolicy adopts snap, swapped in since the client's last command,
// reporting false when the client's tenant is gone from it (the
// connection has been closed). Client goroutine only.
func (s *clientConn) followPolicy(snap *policy.Snapshot) bool {
	t, st := clientend.Check(snap, s.tenantID, s.staticCredential())
	switch st {
	case clientend.TenantGone:
		s.tenantRemoved()
		return false
	case clientend.CredentialGone:
		s.credentialRemoved()
		return false
	}
	s.tenant, s.snap = t, snap
	return true
}
