package pg

import (
	"errors"
	"net"
	"os"
	"time"
)

// Parking idle clients.
//
// A client that holds no server connection and has sent nothing for a
// while (Config.ParkIdleAfter) gives up its goroutine and buffers: the
// janitor asks it to park (parkAsked, then a past read deadline wakes its
// read), and the client hands its connection to the acceptor's parking
// loop (netserve.Acceptor.Park), which resumes it in a new goroutine once
// bytes arrive. What stays is the client's own state, so ten thousand idle
// clients cost a few KiB each. A session ending while parked (drain,
// revocation, removal) is resumed by wake to be told.

// errParked is returned by run when the client has parked.
var errParked = errors.New("parked")

// serve runs the client until it ends, or parks (it returns true then, and
// its connection is left to the acceptor).
func (s *clientConn) serve() bool {
	err := s.run()
	if errors.Is(err, errParked) {
		return true
	}
	s.finish()
	s.srv.log.Debug("client session ended", "tenant", s.tenant, "pid", s.key.pid, "error", err)
	return false
}

// resume continues a parked client, in a new goroutine.
func (s *clientConn) resume(net.Conn) bool {
	s.parked.Store(false)
	s.srv.metrics.parked.Dec()
	s.parkAsked.Store(false)
	// Cleared before looking at ending, so an end signalled now still
	// wakes the read that follows (end marks the client, then sets the
	// deadline).
	_ = s.conn.SetReadDeadline(time.Time{})
	if s.ending() {
		err := s.terminate()
		s.finish()
		s.srv.log.Debug("client session ended while parked", "tenant", s.tenant, "pid", s.key.pid, "error", err)
		return false
	}
	return s.serve()
}

// readInterrupted handles a read that returned err: a park the janitor
// asked for, which the client takes if it is idle. It reports whether the
// client parked; false means err is to be handled as usual, or (err nil)
// that the read should simply be retried.
func (s *clientConn) readInterrupted(err error) (parked bool, _ error) {
	if !s.parkAsked.Load() || !errors.Is(err, os.ErrDeadlineExceeded) || s.ending() {
		return false, err
	}
	s.parkAsked.Store(false)
	if s.sc.Load() != nil || !s.rd.Idle() || s.skipUntilSync {
		_ = s.conn.SetReadDeadline(time.Time{})
		return false, nil
	}
	s.parked.Store(true)
	s.srv.metrics.parked.Inc()
	if !s.srv.acc.Park(s.conn, s.resume) {
		s.parked.Store(false)
		s.srv.metrics.parked.Dec()
		s.unparkable.Store(true) // TLS: it keeps its goroutine; do not ask again
		_ = s.conn.SetReadDeadline(time.Time{})
		return false, nil
	}
	// Parked: the connection is the acceptor's now. An end signalled while
	// we were parking found nothing parked to wake: wake it now.
	if s.ending() {
		s.srv.acc.Wake(s.conn)
	}
	return true, nil
}

// askIdleToPark asks clients idle for ParkIdleAfter to park; the janitor
// calls it every tick. A client counts as idle when it read no message
// since the last tick.
func (srv *Server) askIdleToPark(tick time.Duration) {
	if srv.cfg.ParkIdleAfter <= 0 {
		return
	}
	need := int(srv.cfg.ParkIdleAfter / tick)
	srv.mu.Lock()
	defer srv.mu.Unlock()
	for _, s := range srv.clients {
		if s.parked.Load() || s.unparkable.Load() {
			continue
		}
		n := s.messages.Load()
		if n != s.seenMessages {
			s.seenMessages, s.idleTicks = n, 0
			continue
		}
		if s.idleTicks++; s.idleTicks >= need && !s.parkAsked.Swap(true) {
			_ = s.conn.SetReadDeadline(time.Unix(1, 0))
		}
	}
}
