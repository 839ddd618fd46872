package redis

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/tenantguard/tenantguard/wire/resp"
)

// upConn is one upstream connection. Commands from one or many sessions
// are written in order; its read loop hands each reply to the session whose
// command it answers, first in first out.
type upConn struct {
	srv       *Server
	conn      net.Conn
	rr        *resp.ReplyReader
	dedicated *session // nil for a shared connection

	wmu sync.Mutex // guards bw and the order of pending with it
	bw  *bufio.Writer

	pmu     sync.Mutex
	pending []*session // who each outstanding reply goes to
	closed  bool
	cause   error // why the connection was aborted, for the log
	done    chan struct{}

	// kick asks the flusher to send what sessions have buffered. Many
	// sessions share a connection: one write carries all their commands.
	kick    chan struct{}
	flushed chan struct{} // closed when the flusher exits
}

var errUpstreamClosed = errors.New("upstream connection closed")

// dialUpstream connects and authenticates to redis-server through the breaker.
func (srv *Server) dialUpstream(ctx context.Context, resp3 bool) (*upConn, error) {
	return srv.breaker.Execute(func() (*upConn, error) {
		ctx, cancel := context.WithTimeout(ctx, srv.cfg.ConnectTimeout)
		defer cancel()
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", srv.cfg.Upstream)
		if err != nil {
			return nil, err
		}
		if dl, ok := ctx.Deadline(); ok {
			_ = c.SetDeadline(dl)
		}
		u := &upConn{srv: srv, conn: c, rr: resp.NewReplyReader(c, 16<<10), bw: bufio.NewWriterSize(c, 16<<10),
			done: make(chan struct{}), kick: make(chan struct{}, 1), flushed: make(chan struct{})}
		// HELLO sets the protocol and authenticates in one round trip.
		args := [][]byte{[]byte("HELLO"), []byte("2")}
		if resp3 {
			args[1] = []byte("3")
		}
		if srv.cfg.UpstreamPassword != "" {
			user := srv.cfg.UpstreamUser
			if user == "" {
				user = "default"
			}
			args = append(args, []byte("AUTH"), []byte(user), []byte(srv.cfg.UpstreamPassword))
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
			return nil, fmt.Errorf("upstream handshake: %s", rep.Root().Bytes())
		}
		_ = c.SetDeadline(time.Time{})
		return u, nil
	})
}

// send writes one command for s; the reply will be delivered to s.
func (u *upConn) send(s *session, cmd []byte, replies int) error {
	u.wmu.Lock()
	defer u.wmu.Unlock()
	u.pmu.Lock()
	if u.closed {
		u.pmu.Unlock()
		return errUpstreamClosed
	}
	for i := 0; i < replies; i++ {
		u.pending = append(u.pending, s)
	}
	u.pmu.Unlock()
	_, err := u.bw.Write(cmd)
	return err
}

// flush sends what is buffered, now.
func (u *upConn) flush() error {
	u.wmu.Lock()
	defer u.wmu.Unlock()
	return u.bw.Flush()
}

// flushSoon asks the flusher to send what is buffered, coalescing the
// batches of every session that writes meanwhile into one write.
func (u *upConn) flushSoon() {
	select {
	case u.kick <- struct{}{}:
	default: // a flush is already due
	}
}

// flusher runs for the connection's life, owned by its read loop.
func (u *upConn) flusher() {
	defer close(u.flushed)
	for {
		select {
		case <-u.done:
			return
		case <-u.kick:
		}
		u.wmu.Lock()
		err := u.bw.Flush()
		u.wmu.Unlock()
		if err != nil {
			u.abort(err) // the read loop sees it and fails the pending replies
		}
	}
}

// readLoop delivers every reply until the connection ends; it starts and
// stops the connection's flusher.
func (u *upConn) readLoop() {
	go u.flusher()
	defer func() { <-u.flushed }()
	defer close(u.done)
	var touched []*session
	for {
		rep, err := u.rr.ReadReply()
		if err != nil {
			u.fail(err)
			return
		}
		var s *session
		if u.dedicated != nil && u.dedicated.isPushMessage(rep) {
			s = u.dedicated
			s.deliverPush(rep)
		} else {
			u.pmu.Lock()
			if len(u.pending) == 0 {
				u.pmu.Unlock()
				u.srv.log.Error("upstream sent a reply nobody asked for; closing it")
				u.fail(errors.New("unexpected reply"))
				return
			}
			s = u.pending[0]
			u.pending[0] = nil
			u.pending = u.pending[1:]
			if len(u.pending) == 0 {
				u.pending = u.pending[:0:0]
			}
			u.pmu.Unlock()
			s.deliver(rep)
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

func contains(ss []*session, s *session) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// fail ends the connection: every session still owed a reply gets an
// error carrying one reference, logged with the cause for each of them.
func (u *upConn) fail(err error) {
	u.pmu.Lock()
	u.closed = true
	owed := u.pending
	u.pending = nil
	cause := u.cause
	u.pmu.Unlock()
	if cause != nil {
		err = cause
	}
	_ = u.conn.Close()
	ref := newRef()
	msg := withRef(msgLostReplyOwed, ref)
	var told []*session
	for _, s := range owed {
		s.deliverError(msg)
		if !contains(told, s) {
			told = append(told, s)
		}
	}
	for _, s := range told {
		s.flushClient()
		u.srv.log.Warn("redis upstream connection lost with replies owed", "tenant", s.tenantID, "client", s.id, "ref", ref, "error", err)
	}
	u.srv.upstreamLost(u, err, ref)
}

// abort closes the connection for err (a failed write); the read loop then
// fails every reply owed (fail), naming err as the cause.
func (u *upConn) abort(err error) {
	u.pmu.Lock()
	if u.cause == nil {
		u.cause = err
	}
	u.pmu.Unlock()
	_ = u.conn.Close()
}

func (u *upConn) close() {
	u.pmu.Lock()
	u.closed = true
	u.pmu.Unlock()
	_ = u.conn.Close()
}
