package redis

import (
	"errors"
	"net"
	"os"
	"time"
)

// Replies to the client.
//
// Replies are written by whoever has them: an upstream connection's read
// loop (shared by many clients of many tenants), or the client itself for
// the proxy's own replies. None of them may wait for a client to read: a
// shared connection's reader that waited on one client's socket would hold
// back every reply behind it, for every tenant on that connection. So
// replies are appended to the client's output buffer and written with one
// write(2) that does not wait (sock.writeNow). What the socket does not take is
// left to a drainer goroutine, started for that backlog and gone once it
// is written, which alone writes to the client meanwhile (so bytes stay in
// order) and waits for the client with Config.ClientWriteTimeout.
//
// The backlog is bounded, as redis-server bounds client output buffers
// (client-output-buffer-limit), except that the "normal" class it leaves
// unbounded is bounded here too: a client is disconnected when a reply
// arrives for it while more than Config.ClientOutputLimit bytes are still
// waiting to be written, or when a write of its backlog makes no progress
// within Config.ClientWriteTimeout. Either way its replies are dropped from
// then on and its connection is closed, as redis-server closes a client
// over its limit. So a client holds at most the limit plus one reply.

// maxIdleOut is the largest output buffer kept for reuse once written;
// backlogChunk the size of the chunks a backlog is kept in, so a growing
// backlog is copied once, not again at each growth of one buffer.
const (
	maxIdleOut   = 64 << 10
	backlogChunk = 64 << 10
)

// writeNow writes as much of b to the client as its socket takes now.
func (s *clientConn) writeNow(b []byte) (int, error) {
	if s.sock == nil {
		return 0, nil // no descriptor: the drainer writes
	}
	return s.sock.writeNow(b)
}

// reserve makes room for n more bytes of output (s.out then takes them by
// append), or reports false when the client is cut off, cutting it if its
// unwritten backlog is over the limit. qmu held.
func (s *clientConn) reserve(n int) bool {
	if s.cut {
		return false
	}
	if !s.draining {
		return true
	}
	if len(s.out)+s.backlogN+s.inflight > s.srv.cfg.ClientOutputLimit {
		s.cutLocked("output_limit")
		return false
	}
	if cap(s.out)-len(s.out) < n {
		if len(s.out) > 0 {
			s.backlog = append(s.backlog, s.out)
			s.backlogN += len(s.out)
		}
		s.out = make([]byte, 0, max(backlogChunk, n))
	}
	return true
}

// appendOut adds a reply to the client's output. qmu held.
func (s *clientConn) appendOut(b []byte) {
	if s.reserve(len(b)) {
		s.out = append(s.out, b...)
	}
}

// flushLocked writes the client's output without waiting; what is left
// goes to a drainer. qmu held.
func (s *clientConn) flushLocked() {
	if s.draining || s.cut || len(s.out) == 0 {
		return
	}
	n, err := s.writeNow(s.out)
	switch {
	case err != nil:
		s.cutLocked("") // the client is gone
	case n == len(s.out):
		s.out = s.out[:0]
		if cap(s.out) > maxIdleOut {
			s.out = nil
		}
		s.cond.Broadcast()
		s.closeIfDoneLocked()
	default:
		s.out = s.out[:copy(s.out, s.out[n:])]
		s.draining = true
		go s.drain()
	}
}

// drain writes the client's backlog, waiting for the client to read it,
// until nothing is left. It is the only writer to the client meanwhile;
// replies arriving meanwhile are added to the backlog.
func (s *clientConn) drain() {
	var bufs net.Buffers
	for {
		s.qmu.Lock()
		s.inflight = 0
		if len(s.out) == 0 && len(s.backlog) == 0 || s.cut {
			s.draining = false
			s.closeIfDoneLocked()
			s.cond.Broadcast()
			s.qmu.Unlock()
			return
		}
		bufs = append(bufs[:0], s.backlog...)
		bufs = append(bufs, s.out)
		s.inflight = s.backlogN + len(s.out)
		clear(s.backlog)
		s.backlog, s.backlogN, s.out = s.backlog[:0], 0, nil
		s.qmu.Unlock()
		_ = s.conn.SetWriteDeadline(time.Now().Add(s.srv.cfg.ClientWriteTimeout))
		if _, err := bufs.WriteTo(s.conn); err != nil {
			s.qmu.Lock()
			if !s.cut {
				reason := ""
				if isTimeout(err) {
					reason = "write_timeout"
				}
				s.cutLocked(reason)
			}
			s.qmu.Unlock()
		}
	}
}

// cutLocked disconnects a client that does not read its replies (reason
// says which limit it broke) or that is gone (reason ""). Its output is
// dropped; replies still owed to it are dropped as they arrive. qmu held.
func (s *clientConn) cutLocked(reason string) {
	if reason != "" {
		s.srv.metrics.sessionsEnded.WithLabelValues(reason).Inc()
		s.srv.log.Warn("redis client does not read its replies; disconnecting it",
			"tenant", s.tenantID, "client", s.id, "reason", reason,
			"backlog_bytes", len(s.out)+s.backlogN+s.inflight, "limit_bytes", s.srv.cfg.ClientOutputLimit,
			"write_timeout", s.srv.cfg.ClientWriteTimeout)
	}
	s.cut = true
	s.gone.Store(true)
	s.out, s.backlog, s.backlogN = nil, nil, 0
	s.kill()
	s.cond.Broadcast()
}

// flushedLocked reports whether the client has been sent everything it is
// owed, or been cut off. qmu held.
func (s *clientConn) flushedLocked() bool {
	return s.cut || s.outq.len() == 0 && len(s.out) == 0 && !s.draining
}

// waitFlushed blocks until the client has been sent every reply it is
// owed (bounded by the drainer's write timeout), or been cut off.
func (s *clientConn) waitFlushed() {
	s.qmu.Lock()
	for !s.flushedLocked() {
		s.cond.Wait()
	}
	s.qmu.Unlock()
}

func isTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }
