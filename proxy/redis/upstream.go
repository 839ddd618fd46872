package redis

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tenantguard/tenantguard/internal/connbuf"
	"github.com/tenantguard/tenantguard/wire/resp"
)

// upConn is one upstream connection. Commands from one or many clients
// are written in order; its read loop hands each reply to the client whose
// command it answers, first in first out.
//
// Commands are appended to wbuf and written by flush, called by whoever
// sent them once its batch is done. Whoever finds no write in progress
// writes, and keeps writing until wbuf is empty: commands other clients
// append meanwhile go out in its next write. So many clients' commands
// share one write(2), with no goroutine to hand them to.
type upConn struct {
	srv       *Server
	conn      net.Conn
	rr        *resp.ReplyReader
	dedicated *clientConn // nil for a shared connection
	addr      string      // the node's host:port
	// confined is set on a tenant's script connection (scripts.go): it
	// runs as the tenant's ACL user, so a cluster redirection of its
	// command is never replayed on the proxy's own connections.
	confined bool

	mu       sync.Mutex
	wbuf     []byte            // commands not yet written
	spare    []byte            // the buffer being written, or the one last written, for reuse
	flushing bool              // a flush is writing; it writes what is appended meanwhile
	pending  fifo[*clientConn] // who each outstanding reply goes to
	closed   bool
	cause    error // why the connection was aborted, for the log

	// The loop reads shared connections (loop_linux.go): urd is what rr
	// reads from, loopSlot places it in the loop's table.
	sock      *sock
	urd       clientReader
	loopSlot  int32
	loopDirty bool // written to in the loop's current round; the loop's alone

	// A dedicated connection's reader is stopped to reset it for reuse
	// (pool.go): parking tells it the read error it gets is that, and
	// readerDone is closed when it has returned.
	parking    atomic.Bool
	readerDone chan struct{}

	// near and fills are set on the near cache's fill connection: the
	// fill each outstanding reply completes (nil for a write), in step
	// with pending (nearcache_conn.go).
	near  *nearCache
	fills *fifo[*fillToken]
}

// flushAt is the size of buffered commands that send writes at once, so a
// long pipeline is not buffered whole.
const flushAt = 64 << 10

var errUpstreamClosed = errors.New("upstream connection closed")

// dialUpstream connects and authenticates to redis-server through the
// breaker, as the proxy's own user.
func (srv *Server) dialUpstream(ctx context.Context, resp3 bool) (*upConn, error) {
	if srv.cluster != nil {
		// Server-wide work (a script user, say) on any master.
		addr, err := srv.cluster.anyMaster(ctx)
		if err != nil {
			return nil, err
		}
		return srv.cluster.dial(ctx, addr, resp3)
	}
	return srv.breaker.Execute(func() (*upConn, error) {
		return srv.dialAs(ctx, srv.cfg.Upstream, resp3, srv.upstreamUser(), srv.cfg.UpstreamPassword)
	})
}

// upstreamUser is the proxy's own upstream ACL user.
func (srv *Server) upstreamUser() string {
	if srv.cfg.UpstreamUser == "" {
		return "default"
	}
	return srv.cfg.UpstreamUser
}

// handshakeError is an error reply to the HELLO that opens a connection
// (WRONGPASS, say), as opposed to a failure to connect.
type handshakeError struct{ msg string }

func (e *handshakeError) Error() string { return "upstream handshake: " + e.msg }

// dialAs connects to the redis-server at addr and authenticates as user
// (no AUTH when password is empty), in RESP3 if asked.
func (srv *Server) dialAs(ctx context.Context, addr string, resp3 bool, user, password string) (*upConn, error) {
	ctx, cancel := context.WithTimeout(ctx, srv.cfg.ConnectTimeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c = connbuf.Raw(c) // reads and writes without a hand-off of the P (package rawio)
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if srv.cfg.UpstreamTLS != nil {
		tc, err := srv.upstreamTLS(ctx, c, addr)
		if err != nil {
			c.Close()
			return nil, err
		}
		c = tc // no sock: read by a readLoop, not the event loop (upstream_tls.go)
	}
	u := &upConn{srv: srv, conn: c, sock: newSock(c), addr: addr}
	u.urd = clientReader{conn: c, sock: u.sock}
	u.rr = resp.NewReplyReader(&u.urd, 16<<10)
	// HELLO sets the protocol and authenticates in one round trip.
	args := [][]byte{[]byte("HELLO"), []byte("2")}
	if resp3 {
		args[1] = []byte("3")
	}
	if password != "" {
		args = append(args, []byte("AUTH"), []byte(user), []byte(password))
	}
	if _, err := c.Write(resp.AppendCommand(nil, args)); err != nil {
		c.Close()
		return nil, err
	}
	rep, err := u.rr.ReadReply()
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("upstream handshake: %w", err)
	}
	if t := rep.Root().Type(); t == resp.TypeSimpleError {
		c.Close()
		return nil, &handshakeError{string(rep.Root().Bytes())}
	}
	_ = c.SetDeadline(time.Time{})
	return u, nil
}

// send buffers one command for s; its replies will be delivered to s.
// The caller flushes once its batch is done; send flushes a long one.
func (u *upConn) send(s *clientConn, cmd []byte, replies int) error {
	u.mu.Lock()
	if u.closed {
		u.mu.Unlock()
		return errUpstreamClosed
	}
	for i := 0; i < replies; i++ {
		u.pending.push(s)
	}
	u.wbuf = append(u.wbuf, cmd...)
	full := len(u.wbuf) >= flushAt
	u.mu.Unlock()
	if full {
		return u.flush()
	}
	return nil
}

// sendFill is send on the near cache's fill connection: t (nil for a
// write) is completed by the command's reply.
func (u *upConn) sendFill(s *clientConn, cmd []byte, t *fillToken) error {
	u.mu.Lock()
	if u.closed {
		u.mu.Unlock()
		return errUpstreamClosed
	}
	u.pending.push(s)
	u.fills.push(t)
	u.wbuf = append(u.wbuf, cmd...)
	full := len(u.wbuf) >= flushAt
	u.mu.Unlock()
	if full {
		return u.flush()
	}
	return nil
}

// flush writes what is buffered, unless a write is in progress already:
// that one writes it too. Only an error of this call's own write is
// returned (the connection is then closed, and its read loop fails every
// reply owed).
func (u *upConn) flush() error {
	u.mu.Lock()
	if u.flushing || len(u.wbuf) == 0 {
		u.mu.Unlock()
		return nil
	}
	u.flushing = true
	for len(u.wbuf) > 0 && !u.closed {
		buf := u.wbuf
		u.wbuf = u.spare[:0]
		u.spare = nil
		u.mu.Unlock()
		_, err := u.conn.Write(buf)
		u.mu.Lock()
		if cap(buf) <= 4*flushAt {
			u.spare = buf
		}
		if err != nil {
			u.flushing = false
			u.mu.Unlock()
			u.abort(err)
			return err
		}
	}
	u.flushing = false
	u.mu.Unlock()
	return nil
}

// readLoop delivers every reply until the connection ends. It reads the
// connections the loop does not (dedicated ones, and all of them where
// there is no loop).
func (u *upConn) readLoop() {
	defer close(u.readerDone)
	var touched []*clientConn
	for {
		rep, err := u.rr.ReadReply()
		if err != nil {
			if u.parking.Load() && isTimeout(err) {
				return // stopped for a reset; nothing failed
			}
			u.fail(err)
			return
		}
		s, err := u.route(rep)
		if err != nil {
			u.fail(err)
			return
		}
		if !contains(touched, s) {
			touched = append(touched, s)
		}
		if u.rr.Buffered() == 0 {
			for i, t := range touched {
				t.flushClient()
				touched[i] = nil
			}
			touched = touched[:0]
			// Between batches only: a run of large replies reuses the
			// grown buffer instead of growing it again for each.
			u.rr.Shrink()
		}
	}
}

// route delivers one reply to the client it belongs to and returns that
// client: a pub/sub message to the connection's own client, else the
// reply to the oldest command outstanding.
func (u *upConn) route(rep *resp.Reply) (*clientConn, error) {
	if u.dedicated != nil && u.dedicated.isPushMessage(rep) {
		u.dedicated.deliverPush(rep)
		return u.dedicated, nil
	}
	u.mu.Lock()
	if u.pending.len() == 0 {
		u.mu.Unlock()
		u.srv.log.Error("upstream sent a reply nobody asked for; closing it")
		return nil, errors.New("unexpected reply")
	}
	s := *u.pending.front()
	u.pending.pop()
	var fill *fillToken
	if u.fills != nil && u.fills.len() > 0 {
		fill = *u.fills.front()
		u.fills.pop()
	}
	u.mu.Unlock()
	if fill != nil {
		// Stored before the client has it: its next read may hit.
		u.near.finishFill(fill, rep.Raw())
	}
	if c := u.srv.cluster; c != nil {
		c.deliver(s, u, rep)
		return s, nil
	}
	s.deliver(rep)
	return s, nil
}

func contains(ss []*clientConn, s *clientConn) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// fail ends the connection: every client still owed a reply gets an
// error carrying one reference, logged with the cause for each of them.
func (u *upConn) fail(err error) {
	u.mu.Lock()
	closedByUs := u.closed && u.cause == nil // close(), not a failure
	u.closed = true
	owed := make([]*clientConn, u.pending.len())
	for i := range owed {
		owed[i] = *u.pending.at(i)
	}
	u.pending.clear()
	cause := u.cause
	u.mu.Unlock()
	if cause != nil {
		err = cause
	}
	_ = u.conn.Close()
	ref := newRef()
	msg := withRef(msgLostReplyOwed, ref)
	var told []*clientConn
	for _, s := range owed {
		if u.srv.cluster != nil {
			s.completeFor(u, nil, msg)
		} else {
			s.deliverError(msg)
		}
		if !contains(told, s) {
			told = append(told, s)
		}
	}
	for _, s := range told {
		s.flushClient()
		u.srv.log.Warn("redis upstream connection lost with replies owed", "tenant", s.tenantID, "client", s.id, "ref", ref, "error", err)
	}
	if closedByUs {
		err = net.ErrClosed
	}
	u.srv.upstreamLost(u, err, ref)
	if u.near != nil {
		u.near.lost(u, err)
	}
}

// abort ends the connection for err (a failed write); whoever reads it
// then fails every reply owed (fail), naming err as the cause.
func (u *upConn) abort(err error) {
	u.mu.Lock()
	if u.cause == nil {
		u.cause = err
	}
	u.mu.Unlock()
	u.kill()
}

// kill ends the connection from any goroutine: shut down, so that its
// reader (the loop or readLoop) sees it end and fails what is owed.
func (u *upConn) kill() {
	if u.sock == nil || !u.sock.shutdown() {
		_ = u.conn.Close()
	}
}

// close ends a connection that has a reader (the loop or readLoop): it
// is shut down, and the reader closes it once it sees the end. No command
// can be sent on it from now on.
func (u *upConn) close() {
	u.mu.Lock()
	u.closed = true
	u.mu.Unlock()
	u.kill()
}

// closeNoReader closes a connection nobody reads (not started, parked for
// a reset, pooled, or read synchronously).
func (u *upConn) closeNoReader() {
	u.mu.Lock()
	u.closed = true
	u.mu.Unlock()
	_ = u.conn.Close()
}
