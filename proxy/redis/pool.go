package redis

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/tenantguard/tenantguard/wire/resp"
)

// Reusing dedicated connections.
//
// A client that needs connection state (MULTI/WATCH, blocking commands,
// pub/sub, RESP3) has an upstream connection of its own. When it is done
// with it (the client leaves, or sends RESET) the connection is reset and
// kept for the next client that needs one, of any tenant, instead of
// being closed:
//
//   - Only a connection owed no reply is reset. One with a command in
//     flight (a blocking command whose client vanished, say) is closed, as
//     before: redis-server then frees the blocked client, where a RESET
//     would wait behind it and the command, once unblocked, could still
//     pop an element nobody receives.
//   - RESET (redis-server >= 6.2) discards MULTI, unwatches, unsubscribes
//     from every channel, pattern and shard channel, turns CLIENT TRACKING
//     off, selects db 0, clears the name, returns to RESP2 and
//     deauthenticates to the default user. So the proxy's own upstream
//     credentials are sent again (AUTH), and CLIENT INFO, pipelined in the
//     same round trip, checks the result: no flags, db 0, no name, no
//     subscriptions, no MULTI, nothing watched, RESP2, no tracking
//     redirection, the proxy's user. Fields an older server does not
//     report (ssub, watch) are not required. Pub/sub messages and tracking
//     invalidations that arrive before RESET's reply are dropped.
//   - A connection whose reset or check fails, or that does not answer
//     within Config.ConnectTimeout, is closed.
//   - Idle connections wait, newest first, up to Config.MaxIdleDedicated,
//     each at most Config.DedicatedIdleTimeout. A client taking one that
//     needs RESP3 sends HELLO 3 first.

// idleConn is a reset dedicated connection waiting for a client.
type idleConn struct {
	u     *upConn
	id    int64 // its CLIENT ID upstream
	since time.Time
}

// releaseDedicated returns the session's dedicated connection: reset into
// the pool when it may be, else closed. The client has been told every
// reply it will get, or has left.
func (srv *Server) releaseDedicated(u *upConn) {
	srv.mu.Lock()
	srv.dedicated--
	keep := srv.cfg.MaxIdleDedicated > 0 && !srv.acc.Draining()
	srv.mu.Unlock()
	result := "closed_owed"
	if keep {
		var err error
		if result, err = srv.resetDedicated(u); err != nil {
			srv.log.Warn("redis dedicated connection failed its reset; closing it", "error", err)
		}
	} else {
		u.close()
		result = "closed"
	}
	srv.metrics.dedicatedReleases.WithLabelValues(result).Inc()
}

// resetDedicated stops u's reader, resets u and pools it, reporting what
// happened (a dedicatedReleases result).
func (srv *Server) resetDedicated(u *upConn) (string, error) {
	u.mu.Lock()
	owed, closed := u.pending.len(), u.closed
	u.mu.Unlock()
	if owed > 0 || closed {
		u.close()
		return "closed_owed", nil
	}
	// Stop the reader: a read deadline in the past ends its read, and it
	// sees that it was parked (u.parking) rather than failed.
	u.parking.Store(true)
	_ = u.conn.SetReadDeadline(time.Unix(1, 0))
	<-u.readerDone
	u.parking.Store(false)
	u.mu.Lock()
	closed = u.closed
	u.mu.Unlock()
	if closed {
		return "closed_owed", nil // it failed meanwhile
	}
	u.dedicated = nil
	id, err := srv.resetConn(u)
	if err != nil {
		u.closeNoReader()
		return "reset_failed", err
	}
	srv.mu.Lock()
	if srv.acc.Draining() || len(srv.idle) >= srv.cfg.MaxIdleDedicated {
		srv.mu.Unlock()
		u.closeNoReader()
		return "closed", nil
	}
	srv.idle = append(srv.idle, idleConn{u: u, id: id, since: time.Now()})
	srv.reportIdleLocked()
	if srv.sweeper == nil {
		srv.sweeper = time.AfterFunc(srv.cfg.DedicatedIdleTimeout, srv.sweepIdle)
	}
	srv.mu.Unlock()
	return "pooled", nil
}

// resetConn sends RESET, the proxy's credentials and CLIENT INFO in one
// round trip and checks the outcome (see above); it returns the
// connection's CLIENT ID. u has no reader meanwhile.
func (srv *Server) resetConn(u *upConn) (int64, error) {
	_ = u.conn.SetDeadline(time.Now().Add(srv.cfg.ConnectTimeout))
	defer func() { _ = u.conn.SetDeadline(time.Time{}) }()
	user := srv.cfg.UpstreamUser
	if user == "" {
		user = "default"
	}
	cmds := resp.AppendCommand(nil, [][]byte{[]byte("RESET")})
	if srv.cfg.UpstreamPassword != "" {
		cmds = resp.AppendCommand(cmds, [][]byte{[]byte("AUTH"), []byte(user), []byte(srv.cfg.UpstreamPassword)})
	}
	cmds = resp.AppendCommand(cmds, [][]byte{[]byte("CLIENT"), []byte("INFO")})
	if _, err := u.conn.Write(cmds); err != nil {
		return 0, fmt.Errorf("write RESET: %w", err)
	}
	// Messages of the old subscriptions may come before RESET's reply.
	for {
		rep, err := u.rr.ReadReply()
		if err != nil {
			return 0, fmt.Errorf("read RESET reply: %w", err)
		}
		if isPubSubMessage(rep) || isInvalidation(rep) {
			continue
		}
		if got := rep.Raw(); !bytes.Equal(got, []byte("+RESET\r\n")) {
			return 0, fmt.Errorf("RESET answered %q", clipReply(got))
		}
		break
	}
	if srv.cfg.UpstreamPassword != "" {
		rep, err := u.rr.ReadReply()
		if err != nil {
			return 0, fmt.Errorf("read AUTH reply: %w", err)
		}
		if got := rep.Raw(); !bytes.Equal(got, []byte("+OK\r\n")) {
			return 0, fmt.Errorf("AUTH after RESET answered %q", clipReply(got))
		}
	}
	rep, err := u.rr.ReadReply()
	if err != nil {
		return 0, fmt.Errorf("read CLIENT INFO reply: %w", err)
	}
	if rep.Root().Type() != resp.TypeBulkString && rep.Root().Type() != resp.TypeVerbatim {
		return 0, fmt.Errorf("CLIENT INFO answered %q", clipReply(rep.Raw()))
	}
	return checkClientInfo(string(rep.Root().Bytes()), user)
}

// checkClientInfo checks CLIENT INFO's line for a connection just reset
// and returns its id.
func checkClientInfo(info, user string) (int64, error) {
	fields := map[string]string{}
	for _, f := range bytes.Fields([]byte(info)) {
		k, v, ok := bytes.Cut(f, []byte("="))
		if ok {
			fields[string(k)] = string(v)
		}
	}
	want := []struct {
		field, value string
		optional     bool
	}{
		{"flags", "N", false}, {"db", "0", false}, {"name", "", false},
		{"sub", "0", false}, {"psub", "0", false}, {"ssub", "0", true},
		{"multi", "-1", false}, {"watch", "0", true},
		{"resp", "2", false}, {"redir", "-1", false}, {"user", user, false},
	}
	for _, w := range want {
		got, ok := fields[w.field]
		switch {
		case !ok && w.optional:
		case !ok:
			return 0, fmt.Errorf("CLIENT INFO after RESET has no %s: %q", w.field, info)
		case got != w.value:
			return 0, fmt.Errorf("CLIENT INFO after RESET has %s=%s, want %q", w.field, got, w.value)
		}
	}
	id, err := strconv.ParseInt(fields["id"], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("CLIENT INFO after RESET has no id: %q", info)
	}
	return id, nil
}

// takeIdle returns a pooled connection to addr ready for s (in s's
// protocol), with its reader running, or nil.
func (srv *Server) takeIdle(ctx context.Context, s *clientConn, addr string) *upConn {
	for {
		srv.mu.Lock()
		n := len(srv.idle) - 1
		for n >= 0 && srv.idle[n].u.addr != addr {
			n-- // another cluster node's
		}
		if n < 0 {
			srv.mu.Unlock()
			return nil
		}
		ic := srv.idle[n]
		srv.idle = slices.Delete(srv.idle, n, n+1)
		srv.reportIdleLocked()
		srv.mu.Unlock()
		if time.Since(ic.since) > srv.cfg.DedicatedIdleTimeout {
			ic.u.closeNoReader()
			continue
		}
		if s.resp3 {
			if err := srv.hello3(ctx, ic.u); err != nil {
				srv.log.Warn("redis pooled connection refused HELLO 3; closing it", "error", err)
				ic.u.closeNoReader()
				continue
			}
		}
		ic.u.dedicated = s
		srv.startReader(ic.u)
		srv.log.Debug("redis dedicated connection reused", "tenant", s.tenantID, "client", s.id, "upstream_client_id", ic.id)
		return ic.u
	}
}

// hello3 switches a pooled connection (RESP2 after RESET) to RESP3.
func (srv *Server) hello3(ctx context.Context, u *upConn) error {
	dl := time.Now().Add(srv.cfg.ConnectTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(dl) {
		dl = d
	}
	_ = u.conn.SetDeadline(dl)
	defer func() { _ = u.conn.SetDeadline(time.Time{}) }()
	if _, err := u.conn.Write(resp.AppendCommand(nil, [][]byte{[]byte("HELLO"), []byte("3")})); err != nil {
		return err
	}
	rep, err := u.rr.ReadReply()
	if err != nil {
		return err
	}
	if t := rep.Root().Type(); t != resp.TypeMap {
		return fmt.Errorf("HELLO 3 answered %q", clipReply(rep.Raw()))
	}
	return nil
}

// sweepIdle closes the pooled connections idle for too long.
func (srv *Server) sweepIdle() {
	srv.mu.Lock()
	var expired []*upConn
	kept := srv.idle[:0]
	for _, ic := range srv.idle {
		if time.Since(ic.since) > srv.cfg.DedicatedIdleTimeout {
			expired = append(expired, ic.u)
		} else {
			kept = append(kept, ic)
		}
	}
	clear(srv.idle[len(kept):])
	srv.idle = kept
	srv.reportIdleLocked()
	srv.sweeper = nil
	if len(srv.idle) > 0 && !srv.acc.Draining() {
		srv.sweeper = time.AfterFunc(srv.cfg.DedicatedIdleTimeout, srv.sweepIdle)
	}
	srv.mu.Unlock()
	for _, u := range expired {
		u.closeNoReader()
	}
}

// closeIdle closes every pooled connection (shutdown).
func (srv *Server) closeIdle() {
	srv.mu.Lock()
	idle := srv.idle
	srv.idle = nil
	if srv.sweeper != nil {
		srv.sweeper.Stop()
		srv.sweeper = nil
	}
	srv.reportIdleLocked()
	srv.mu.Unlock()
	for _, ic := range idle {
		ic.u.closeNoReader()
	}
}

// isPubSubMessage reports whether rep is a pub/sub message (RESP2 array
// or RESP3 push) rather than the reply to a command.
func isPubSubMessage(rep *resp.Reply) bool {
	root := rep.Root()
	if t := root.Type(); (t != resp.TypeArray && t != resp.TypePush) || root.Len() < 3 {
		return false
	}
	switch string(root.Index(0).Bytes()) {
	case "message", "pmessage", "smessage":
		return true
	}
	return false
}

func clipReply(b []byte) []byte {
	if len(b) > 120 {
		return b[:120]
	}
	return b
}

// reportIdleLocked brings the idle-connection gauge, the sum over the
// listener's upstreams (placement.go), up to date with srv's pool. srv.mu
// held.
func (srv *Server) reportIdleLocked() {
	srv.metrics.dedicatedIdle.Add(float64(len(srv.idle) - srv.idleReported))
	srv.idleReported = len(srv.idle)
}
