package redis

import (
	"errors"
	"net"

	"github.com/tenantguard/tenantguard/proxy/redis/keyspec"
)

// Who serves a client: its own goroutine, or the loop.
//
// Every client has a goroutine (netserve runs one per connection), which
// reads and serves the client until it is authenticated and whenever its
// commands may have to wait: for a connection to be dialled, for replies
// to arrive (HELLO 3, RESET, MULTI and the rest of what needs a dedicated
// connection, emulated commands, QUIT, a session ending at a boundary), or
// for a secret to be checked. A client on the shared connections with
// nothing buffered is handed to the loop (loop_linux.go) instead of
// blocking in a read of its own; the goroutine waits on s.wake until the
// loop meets a command that may wait, and hands it back.

var (
	// errWouldBlock is a read that found nothing: wait for the socket.
	errWouldBlock = errors.New("socket not ready")
	// errNeedHome is handle's answer, on the loop, to a command that must
	// run on the client's goroutine; nothing of it has run.
	errNeedHome = errors.New("command must run on the session's goroutine")
	errNoLoop   = errors.New("no event loop on this platform")
)

// handoff is what the loop hands back with a client: a command to run
// first (its arguments point into the client's Reader), or the error
// that ends the client.
type handoff struct {
	args [][]byte
	err  error
}

// clientReader is what a client's resp.Reader (or a shared upstream
// connection's resp.ReplyReader) reads from: the connection, waiting for
// data, or, while the loop serves it, the socket without waiting, until a
// read comes back short. As twemproxy does, a read that does not fill the
// buffer is taken to have drained the socket: the next one waits for the
// next readiness event (level-triggered, so nothing is missed) rather
// than costing a read(2) that finds nothing.
type clientReader struct {
	conn   net.Conn
	sock   *sock
	loop   bool // served by the loop
	budget int  // reads left in this event; 0 after a short read
}

// readsPerEvent bounds the reads of one socket per readiness event, so a
// client sending without pause does not hold up the others.
const readsPerEvent = 16

func (r *clientReader) Read(p []byte) (int, error) {
	if !r.loop {
		return r.conn.Read(p)
	}
	if r.budget == 0 {
		return 0, errWouldBlock
	}
	n, err := r.sock.readNow(p)
	if n < len(p) {
		r.budget = 0
	} else {
		r.budget--
	}
	return n, err
}

// joinLoop hands the client to the loop when it may go there: bound to
// a tenant, on the shared connections, nothing buffered, not ending. It
// reports whether it did; the goroutine must then wait on s.wake.
func (s *clientConn) joinLoop() bool {
	if s.sock == nil || s.tenant == nil || s.dedicated || s.resp3 || s.rd.Buffered() > 0 ||
		s.endPending.Load() || s.gone.Load() {
		return false
	}
	l := s.be.loop()
	return l != nil && l.join(s)
}

// needsHome reports whether a command of an authenticated client must
// run on the client's goroutine rather than the loop: it may dial,
// wait for replies, check a secret, or move the client to a dedicated
// connection, or the client is owed as many replies as it may be.
func (s *clientConn) needsHome(name []byte, cmd *keyspec.Command) bool {
	switch string(name) {
	case "auth", "hello", "quit", "reset", "flushdb", "flushall", "dbsize":
		return true
	}
	if s.up == nil || s.dedicated || s.resp3 || s.via != s.up {
		return true
	}
	s.qmu.Lock()
	owed := s.outq.len()
	s.qmu.Unlock()
	if owed >= maxOwedShared-1 {
		return true
	}
	if owed == 0 && s.be.cluster == nil && s.be.openShared(s.lane()) == nil {
		return true // its lane's connection must be dialled (lane.go)
	}
	return cmd != nil && (needsOwnConn(cmd) || runsAtHome(cmd))
}

// runsAtHome reports whether a command may wait for a connection or for
// replies though it needs no connection state: scripts (the tenant's
// script connection), INFO (counts the tenant's keys), CLIENT TRACKING
// (moves the client to a dedicated connection).
func runsAtHome(cmd *keyspec.Command) bool {
	switch cmd.Name {
	case "eval", "evalsha", "eval_ro", "evalsha_ro", "script|load", "info", "client|tracking":
		return true
	}
	return false
}

// kill ends the connection from any goroutine: the socket is shut down,
// so whoever serves the client (its goroutine or the loop) reads EOF and
// ends it, and closes the connection. Without a descriptor it is closed.
func (s *clientConn) kill() {
	if s.sock == nil || !s.sock.shutdown() {
		_ = s.conn.Close()
	}
}
