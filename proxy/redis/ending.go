package redis

import (
	"errors"
	"time"

	"github.com/tenantguard/tenantguard/policy"
	"github.com/tenantguard/tenantguard/proxy/clientend"
)

// Clients authenticated with a token, and how they end.
//
// A connection that AUTHed with a session token holds a lease on the
// session. When the session is revoked or expires, the lease's onEnd (on
// the verifier's goroutine) ends the connection without writing anything:
// RESP2 has no out-of-band channel, and an unsolicited error would be read
// as the reply to the client's next command. In immediate mode the
// connection is closed at once. In boundary mode it is closed once no
// reply is owed and no MULTI is open; a command that would start after the
// end is not run; a subscribed connection is closed at once, having no
// boundary to wait for.

var errSessionEnded = errors.New("session ended")

// setLease makes lease (with its link) the session's, closing the one it
// replaces; nil just drops the current one.
func (s *clientConn) setLease(lease policy.SessionLease, link *clientend.Link) {
	old, oldLink := s.lease, s.link
	s.lease, s.link = lease, link
	if lease != nil {
		id := lease.ID()
		link.Attach(func(err error) { s.sessionEnded(id, err) })
	}
	if old != nil {
		oldLink.Detach()
		old.Close()
	}
}

// sessionEnded ends the connection whose token session ended. Called from
// the verifier's goroutine, with the link's mu held.
func (s *clientConn) sessionEnded(id string, err error) {
	reason := "revoked_or_expired"
	if errors.Is(err, policy.ErrSessionStoreLost) {
		reason = "store_unavailable"
	}
	s.srv.metrics.sessionsEnded.WithLabelValues(reason).Inc()
	s.srv.log.Info("session token ended; ending client connection",
		"tenant", s.tenantID, "session", id, "client", s.id, "reason", err, "mode", string(s.srv.SessionEnd()))
	s.end(s.srv.SessionEnd())
}

// end ends the client: now, or in boundary mode once nothing is owed and
// no MULTI is open. Safe from any goroutine, and after the client finished.
//
// Boundary mode waits, but not for ever: a client still inside MULTI (or
// still owed replies) Config.SessionEndGrace after the end is closed then.
func (s *clientConn) end(mode policy.SessionEndMode) {
	s.endPending.Store(true)
	s.qmu.Lock()
	if !s.ending || mode == policy.SessionEndImmediate {
		s.endMode = mode // an immediate end overrides a boundary one
	}
	s.ending = true
	now := mode == policy.SessionEndImmediate || s.pubsub || s.atBoundary()
	if !now && s.endTimer == nil && !s.finished {
		s.endTimer = time.AfterFunc(s.srv.cfg.SessionEndGrace, func() {
			s.srv.log.Info("client of an ended session still short of a boundary after the grace; closing it now", "tenant", s.tenantID, "client", s.id)
			s.kill()
		})
	}
	s.qmu.Unlock()
	if now {
		s.kill()
	}
}

// atBoundary reports whether the client is owed nothing, not even bytes
// not yet written, and has no MULTI open. qmu held.
func (s *clientConn) atBoundary() bool {
	return s.outq.len() == 0 && len(s.out) == 0 && !s.draining && !s.inMulti
}

// stopForEnd runs before a command once the client is ending: it reports
// whether the command must not run, in which case the connection has been
// closed, after every reply owed was delivered in boundary mode. Inside an
// open MULTI the commands of that transaction still run.
func (s *clientConn) stopForEnd() bool {
	s.qmu.Lock()
	mode := s.endMode
	s.qmu.Unlock()
	if mode == policy.SessionEndImmediate {
		s.kill()
		return true
	}
	if s.inMulti {
		return false
	}
	s.flushUpstream()
	s.waitDrained()
	s.flushClient()
	s.kill()
	return true
}

// commandFingerprint is the FNV-1a hash of a command's lower-case name,
// computed without allocating.
func commandFingerprint(name []byte) uint64 {
	h := uint64(14695981039346656037)
	for _, c := range name {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		h ^= uint64(c)
		h *= 1099511628211
	}
	return h
}
