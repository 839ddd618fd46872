package pg

import (
	"errors"
	"time"

	"github.com/tenantguard/tenantguard/policy"
	wire "github.com/tenantguard/tenantguard/wire/pg"
)

// Ending a client connection from outside its goroutine.
//
// A session ends early for two reasons: the proxy is draining (Shutdown),
// or the session token it logged in with was revoked or expired (its
// lease's onEnd). Both go through session.end, which only marks the
// client and never does I/O, so the verifier's goroutine is never held up
// by a slow client. Whoever then finds the client at its end sends the
// FATAL and closes the connection (clientConn.terminate): the client's own
// goroutine, woken from its read by a past read deadline, when it is
// between transactions or the end is immediate; or the server read loop
// that delivers the ReadyForQuery 'I' ending the transaction in progress.

// endWriteTimeout bounds the final write to a client that is not reading.
const endWriteTimeout = 2 * time.Second

// errShutdown is what clients are told when the proxy drains.
var errShutdown = wire.Fatalf(wire.CodeAdminShutdown, "terminating connection due to administrator command (tenantguard is shutting down)")

// end asks the client to end with e, a FATAL: at once in immediate mode,
// aborting a transaction in progress; in boundary mode once no transaction
// is in progress. From then on no new transaction starts. It does no I/O,
// may be called from any goroutine, more than once (the first e wins), and
// after the client has finished.
func (s *clientConn) end(e *wire.Error, mode policy.SessionEndMode) {
	s.mu.Lock()
	if s.endErr == nil {
		s.endErr = e
	}
	s.closing = true
	s.mu.Unlock()
	if mode == policy.SessionEndImmediate {
		s.abort.Store(true)
	} else if sc := s.sc.Load(); sc != nil && sc.busyFor(s) {
		// The connection's release ends the session when the server
		// reports the transaction over.
		return
	}
	if s.cancel != nil {
		s.cancel() // a pool wait or dial in progress gives up
	}
	s.wake()
}

// wake makes the client goroutine's read of the client return at once, so
// it sees the end. Reads are only interrupted where the client is ending
// anyway: a partly read message is never resumed.
func (s *clientConn) wake() {
	_ = s.conn.SetReadDeadline(time.Unix(1, 0))
	s.srv.acc.Wake(s.conn) // parked: resume it
}

// ending reports whether the client has been asked to end.
func (s *clientConn) ending() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// terminate sends the client's ending error, once, and closes the client
// connection. The caller has made sure no transaction is left to finish, or
// that it is to be aborted (the client's finish closes a server connection
// left mid-transaction, so it is never pooled dirty).
func (s *clientConn) terminate() error {
	s.mu.Lock()
	e := s.endErr
	s.mu.Unlock()
	if e == nil {
		e = errShutdown
	}
	// A client that stops reading must not keep the connection open.
	_ = s.conn.SetWriteDeadline(time.Now().Add(endWriteTimeout))
	s.wmu.Lock()
	if !s.ended {
		s.ended = true
		s.noteProxyError(e.Code)
		_, _ = s.bw.Write(e.AppendTo(nil))
		_ = s.bw.Flush()
	}
	s.wmu.Unlock()
	_ = s.conn.Close()
	return e
}

// sessionEnded ends a session whose token session was revoked, expired, or
// can no longer be checked (the lease link's target; it does no I/O).
func (s *clientConn) sessionEnded(err error) {
	reason, msg := "revoked_or_expired", "tenantguard: session "+s.lease.ID()+" has been revoked or has expired"
	if errors.Is(err, policy.ErrSessionStoreLost) {
		reason, msg = "store_unavailable", "tenantguard: session "+s.lease.ID()+" can no longer be verified: the session store is unreachable"
	}
	s.srv.metrics.sessionsEnded.WithLabelValues(reason).Inc()
	s.srv.log.Info("session token ended; ending client connection",
		"tenant", s.tenant, "session", s.lease.ID(), "pid", s.key.pid, "reason", err, "mode", string(s.srv.endMode.Get()))
	e := wire.Fatalf(wire.CodeInvalidAuthSpec, "%s", msg)
	mode := s.srv.endMode.Get()
	s.end(e, mode)
	if mode == policy.SessionEndBoundary {
		// Boundary mode waits for the transaction in progress, but not for
		// ever: one still open after the grace is ended at once.
		s.mu.Lock()
		if s.endTimer == nil {
			s.endTimer = time.AfterFunc(s.srv.cfg.SessionEndGrace, func() {
				s.srv.log.Info("transaction of an ended session still open after the grace; ending it now", "tenant", s.tenant, "pid", s.key.pid)
				s.end(e, policy.SessionEndImmediate)
			})
		}
		s.mu.Unlock()
	}
}
