package pg

import (
	"context"
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sony/gobreaker/v2"
	"github.com/tenantguard/tenantguard/internal/connbuf"
	"github.com/tenantguard/tenantguard/internal/errref"
	"github.com/tenantguard/tenantguard/policy"
	"github.com/tenantguard/tenantguard/proxy/clientend"
	"github.com/tenantguard/tenantguard/proxy/pg/firewall"

	wire "github.com/tenantguard/tenantguard/wire/pg"
)

// clientConn is one client connection, bound to one tenant from authentication
// on. Its goroutine reads the client; replies arrive from whichever server
// connection's read loop the client owns at the time.
type clientConn struct {
	srv    *Server
	conn   net.Conn
	br     *connbuf.Reader
	rd     *wire.Reader
	tenant string
	dbName string // the database the client asked for
	// pool serves the client's transactions: that of route, its database
	// and its tenant's cluster (placement.go). Both change only in the
	// client's goroutine, between transactions.
	pool  *pool
	route routeKey
	tls   bool

	connectedAt  time.Time
	credential   []byte       // StoredKey of the static credential it logged in with; nil for a token
	lastRequest  atomic.Int64 // unix nanoseconds of the last transaction start, for the console
	waitingSince atomic.Int64 // unix nanoseconds since it waits for a server connection; 0 when not
	mode         PoolMode
	key          cancelKey

	// params are the client's values of tracked settings, replayed onto
	// whichever server connection serves it.
	pmu    sync.Mutex
	params clientSettings

	wmu    sync.Mutex // guards bw, ended and wdlSet: server read loops and the client write to the client
	bw     *connbuf.Writer
	ended  bool // the final FATAL has been written
	wdlSet bool // a write deadline bounds the batch of replies being written (writeFromServer)

	// LISTEN/NOTIFY (notify.go): listening is set once the client has
	// listened to a channel; notes are notifications waiting for the end
	// of its transaction.
	listening atomic.Bool
	notified  atomic.Bool // sent NOTIFY since its last transaction ended
	nmu       sync.Mutex
	notes     []note

	// sc is the attached server connection, if any: set by attach, cleared
	// by whoever takes the connection away (always under its mu).
	sc atomic.Pointer[serverConn]
	// broken: the attached server connection died; the client is being
	// disconnected and nothing more may be sent for it.
	broken atomic.Bool

	mu       sync.Mutex  // guards closing, endErr and endTimer for drain and session end
	closing  bool        // ending: no new transaction starts; end at the next boundary
	endTimer *time.Timer // ends it at once if the boundary takes too long
	endErr   *wire.Error // the FATAL the client gets when it ends
	abort    atomic.Bool // ending immediately, transaction or not
	removed  atomic.Bool // ended because its tenant left the policy
	// ctx lives as long as the client, across parking; cancel ends it
	// (a pool wait or dial in progress gives up).
	ctx    context.Context
	cancel context.CancelFunc

	// Parking (park.go): messages counts what the client sent, for the
	// janitor to tell idle clients; seenMessages and idleTicks are the
	// janitor's own.
	messages     atomic.Uint64
	seenMessages uint64
	idleTicks    int
	parkAsked    atomic.Bool // the janitor asked the client to park
	parked       atomic.Bool
	unparkable   atomic.Bool // its connection cannot be parked (TLS)

	// lease, when the client logged in with a session token, is its hold on
	// the session; link routes the lease's end to this session.
	lease policy.SessionLease
	link  *clientend.Link

	// t is the tenant's policy for the transaction in progress, or the next
	// one: re-read from the store at each transaction start (followPolicy).
	// While a server connection is attached it changes only under sc.mu, as
	// that connection's read loop reads it.
	t     *policy.Tenant
	snap  *policy.Snapshot // the snapshot t was read from
	label string           // the tenant's metrics label

	stmts         map[string]*clientStmt
	unnamedParse  []byte         // copy of the client's last unnamed Parse
	unnamedClass  firewall.Class // the firewall's class of unnamedParse
	unnamedGen    uint64
	skipUntilSync bool
	copyLoad      bool              // the Query being sent is a COPY through a stage (copy.go)
	out           []byte            // requests staged for the server ahead of the client's message
	msg           []byte            // scratch for a rewritten client message
	verdict       *firewall.Verdict // the firewall's verdict on the message being handled

	unnamedVerdict *firewall.Verdict // the firewall's verdict on unnamedParse
	cache          clientCache       // the client's side of the result cache (cacheclient.go)

	conns    prometheus.Gauge // the tenant's client connections
	queryDur prometheus.Observer
	txDur    prometheus.Observer
}

// cancelKey is the BackendKeyData the proxy gives a client.
type cancelKey struct {
	pid    uint32
	secret uint32
}

// run serves an authenticated client until it leaves, the proxy ends it,
// or it parks (errParked).
func (s *clientConn) run() error {
	ctx := s.ctx
	for {
		typ, raw, err := s.rd.Next()
		if err != nil {
			if s.ending() {
				// Woken to end, or the client left while the end was pending.
				return s.terminate()
			}
			parked, err := s.readInterrupted(err)
			if parked {
				return errParked
			}
			if err == nil {
				continue
			}
			if errors.Is(err, wire.ErrMessageTooLarge) || errors.Is(err, wire.ErrBadLength) {
				// As PostgreSQL answers a bad length: a FATAL, then close.
				return s.fatal(wire.Fatalf(wire.CodeProtocolViolation, "invalid message: %v", err))
			}
			return err
		}
		s.messages.Add(1)
		if s.abort.Load() || s.broken.Load() {
			return s.terminate()
		}
		switch typ {
		case wire.MsgTerminate:
			// Requests pipelined ahead of Terminate still reach the server,
			// as they would without a proxy.
			return s.flushPending()
		case wire.MsgFunctionCall:
			if err := s.refuseCall(wire.Errorf(wire.CodeFeatureNotSupported, "function call messages are not supported by tenantguard; use SELECT")); err != nil {
				return err
			}
			continue
		case wire.MsgPassword:
			return s.fatal(wire.Fatalf(wire.CodeProtocolViolation, "unexpected password message"))
		}
		if s.skipUntilSync {
			if typ == wire.MsgSync {
				s.skipUntilSync = false
				s.writeReady(wire.TxIdle)
			}
			continue
		}
		if err := s.handle(ctx, typ, raw); err != nil {
			return err
		}
	}
}

// handle screens one client message and forwards it to the server
// connection serving the client, attaching one first if needed.
func (s *clientConn) handle(ctx context.Context, typ byte, raw []byte) error {
	if snap := s.srv.policy.Load(); snap != s.snap {
		if err := s.followPolicy(snap); err != nil {
			return err
		}
	}
	if len(s.cache.held) > 0 {
		// An extended-protocol segment held for the result cache.
		if done, err := s.cacheContinue(ctx, typ, raw); done {
			return err
		}
	}
	raw, refused, err := s.screenMessage(typ, raw)
	if refused || err != nil {
		return err
	}
	if s.cache.enabled(s) {
		if done, err := s.cacheStart(typ, raw); done {
			return err
		}
	}
	err = s.forward(ctx, typ, raw)
	s.cache.fill = nil // armed for a statement that did not reach a server
	return err
}

// forward sends one screened client message to the server connection
// serving the client, attaching one first if needed.
func (s *clientConn) forward(ctx context.Context, typ byte, raw []byte) error {
	s.cacheNoteSend(typ, raw)
	for {
		sc := s.sc.Load()
		if sc == nil {
			if s.answerIdle(typ) {
				return nil
			}
			var err error
			if sc, err = s.attach(ctx); err != nil {
				return s.attachFailed(typ, err)
			}
		}
		msg, ok := s.stage(sc, typ, raw)
		if !ok {
			// Released between transactions since we looked, or lost.
			if s.broken.Load() {
				return s.terminate()
			}
			continue
		}
		return s.send(sc, msg)
	}
}

// answerIdle answers a message that needs no server connection while the
// client holds none; it reports whether it did.
func (s *clientConn) answerIdle(typ byte) bool {
	switch typ {
	case wire.MsgSync:
		// Nothing outstanding: answer without taking a server connection.
		s.writeReady(wire.TxIdle)
		return true
	case wire.MsgFlush:
		return true
	case wire.MsgCopyData, wire.MsgCopyDone, wire.MsgCopyFail:
		return true // COPY data after a failed COPY; PostgreSQL ignores it too
	}
	return false
}

// stage registers one client message on sc, the attached connection, and
// returns the bytes to send for it; statements that must precede it are in
// s.out. It reports false, registering nothing, when sc is no longer
// attached to s.
func (s *clientConn) stage(sc *serverConn, typ byte, raw []byte) ([]byte, bool) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.owner != s || sc.state != connAttached {
		return nil, false
	}
	if sc.replies.empty() && !sc.sending {
		sc.batchStart = time.Now()
		if s.mode == PoolSession && sc.tx == wire.TxIdle && !sc.unsynced {
			// A session-pooled client keeps its connection for hours:
			// refresh the binding at transaction boundaries before it ages out.
			s.syncSession(sc)
		}
	}
	sc.sending = true
	if s.cache.fill != nil {
		// The first message of a cache miss: its replies fill the cache.
		sc.fill, s.cache.fill = s.cache.fill, nil
	}
	return s.rewrite(sc, typ, raw), true
}

// send writes what stage returned, and flushes once the client has no
// more requests buffered: one write per batch of pipelined messages.
func (s *clientConn) send(sc *serverConn, msg []byte) error {
	if len(s.out) > 0 {
		if _, err := sc.bw.Write(s.out); err != nil {
			return s.serverWriteFailed(sc, err)
		}
		s.out = s.out[:0]
	}
	if _, err := sc.bw.Write(msg); err != nil {
		return s.serverWriteFailed(sc, err)
	}
	s.rd.Shrink(64 << 10)
	if s.rd.Buffered() == 0 && !s.cache.replaying {
		return s.flush(sc)
	}
	return nil
}

// flush sends the batch to the server and lets the connection go back to
// the pool if the client is between transactions.
func (s *clientConn) flush(sc *serverConn) error {
	if err := sc.bw.Flush(); err != nil {
		return s.serverWriteFailed(sc, err)
	}
	sc.mu.Lock()
	if sc.owner == s {
		sc.sending = false
	}
	sc.armResponseTimeout()
	sc.mu.Unlock()
	sc.release()
	return nil
}

// flushPending sends what is staged for the attached server connection,
// if anything.
func (s *clientConn) flushPending() error {
	sc := s.sc.Load()
	if sc == nil {
		return nil
	}
	// Ownership first: a connection released meanwhile is another
	// client's, and so is its write buffer.
	sc.mu.Lock()
	mine := sc.owner == s && sc.sending
	sc.mu.Unlock()
	if !mine || sc.bw.Buffered() == 0 {
		return nil
	}
	return s.flush(sc)
}

// attach takes a server connection from the pool and makes it the
// client's, with the client's settings pipelined ahead of its first
// message (no extra round trip). The connection stays unreleasable
// (sending) until that message is written.
func (s *clientConn) attach(ctx context.Context) (*serverConn, error) {
	for {
		if s.ending() {
			return nil, errDraining
		}
		now := time.Now()
		s.lastRequest.Store(now.UnixNano())
		s.waitingSince.Store(now.UnixNano())
		if gate := s.srv.pausedGate(s.tenant); gate != nil {
			select { // paused (pause.go): wait until it is let go
			case <-gate:
			case <-ctx.Done():
				s.waitingSince.Store(0)
				return nil, ctx.Err()
			}
			// The version that let the tenant go may have moved it (a
			// move's switch): follow it before choosing a pool.
			if snap := s.srv.policy.Load(); snap != s.snap {
				if err := s.followPolicy(snap); err != nil {
					s.waitingSince.Store(0)
					return nil, err
				}
			}
		}
		if err := s.followPlacement(ctx); err != nil {
			s.waitingSince.Store(0)
			return nil, err
		}
		sc, err := s.pool.acquire(ctx, s.tenant, s.t.Limits.MaxTransactions)
		s.waitingSince.Store(0)
		if err != nil {
			return nil, err
		}
		sc.mu.Lock()
		if sc.state != connIdle {
			sc.mu.Unlock() // died on the idle stack: its read loop gives the slot back
			continue
		}
		if s.srv.pausedGate(s.tenant) != nil {
			// Paused while the pool granted the connection: give it back
			// and wait at the gate. A pause that counted the tenant's
			// connections before this one was leased sees no transaction
			// of it start after that (pause.go).
			sc.pool.put(sc)
			sc.mu.Unlock()
			continue
		}
		sc.state, sc.owner = connAttached, s
		sc.attachedAt = time.Now()
		sc.batchStart = sc.attachedAt
		sc.sending = true
		s.sc.Store(sc)
		// An end signalled from now on sees the connection attached and is
		// left to the connection's release; one signalled before is seen here.
		if s.ending() {
			sc.sending = false
			sc.mu.Unlock()
			sc.release()
			return nil, errDraining
		}
		s.out = s.out[:0]
		s.syncSession(sc)
		sc.mu.Unlock()
		return sc, nil
	}
}

// detach forgets sc as the client's connection. Called with sc.mu held,
// by whoever takes the connection from the client. Whatever session state
// the client left on it is the connection's now (reset before reuse).
func (s *clientConn) detach(sc *serverConn) {
	s.sc.CompareAndSwap(sc, nil)
	s.cache.taintConn.Store(false)
}

var errDraining = errors.New("draining")

// attachFailed answers a message that could not get a server connection.
func (s *clientConn) attachFailed(typ byte, err error) error {
	if s.ending() {
		// Ending: the pool wait was cut short, or nothing new may start.
		return s.terminate()
	}
	var pe *wire.Error
	switch {
	case errors.Is(err, errDraining), errors.Is(err, errPoolClosed):
		return s.fatal(errShutdown)
	case errors.Is(err, errMoveListen):
		e := s.upstreamError(wire.CodeConnectionFailure, "could not move this connection's LISTEN registrations to its tenant's new cluster", err)
		e.Severity = "FATAL"
		return s.fatal(e)
	case errors.Is(err, errUnknownCredentials):
		pe = s.upstreamError(wire.CodeConnectionFailure, "the tenant's database cluster is not reachable from this sidecar", err)
	case errors.Is(err, errPoolTimeout):
		pe = wire.Errorf(wire.CodeTooManyConnections, "no server connection available for tenant %q within %s (the pool is at its limit of %d)",
			s.tenant, s.pool.cfg.PoolWaitTimeout, s.pool.cfg.PoolSize)
	case errors.Is(err, gobreaker.ErrOpenState), errors.Is(err, gobreaker.ErrTooManyRequests):
		pe = wire.Errorf(wire.CodeCannotConnectNow, "upstream database unavailable: circuit breaker is open after repeated failures; retry later")
	default:
		pe = s.upstreamError(wire.CodeConnectionFailure, "could not connect to the upstream database", err)
	}
	s.noteProxyError(pe.Code)
	s.writeError(pe)
	if typ == wire.MsgQuery {
		s.writeReady(wire.TxIdle)
	} else {
		s.skipUntilSync = true
	}
	return nil
}

// refuseCall answers a message that expects ErrorResponse and ReadyForQuery
// (a simple-protocol request) with an error. While a server is attached,
// replies may still be owed, so a Sync goes to the server and the error is
// delivered just before its ReadyForQuery, in order.
func (s *clientConn) refuseCall(e *wire.Error) error {
	s.noteProxyError(e.Code)
	if sc := s.sc.Load(); sc != nil && s.queue(sc, reply{kind: wire.MsgReadyForQuery, prefix: e.AppendTo(nil)}) {
		return s.send(sc, wire.SyncMessage)
	}
	s.writeError(e)
	s.writeReady(wire.TxIdle)
	return nil
}

// queue registers a reply the client's next message to sc will earn,
// as stage does; false when sc is no longer attached to s.
func (s *clientConn) queue(sc *serverConn, r reply) bool {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.owner != s || sc.state != connAttached {
		return false
	}
	sc.sending = true
	sc.replies.push(r)
	return true
}

func (s *clientConn) serverWriteFailed(sc *serverConn, err error) error {
	sc.closeSocket()
	e := s.upstreamError(wire.CodeConnectionFailure, "lost the connection to the upstream database", err)
	e.Severity = "FATAL"
	return s.fatal(e)
}

// finish runs when the session ends: the server connection goes back
// if it is clean, and is closed if the client left it mid-transaction.
func (s *clientConn) finish() {
	s.mu.Lock()
	if s.endTimer != nil {
		s.endTimer.Stop()
	}
	s.mu.Unlock()
	s.cancel()
	s.conns.Dec()
	s.srv.unregister(s)
	if s.lease != nil {
		s.link.Detach()
		s.lease.Close()
	}
	if sc := s.sc.Load(); sc != nil {
		sc.leave(s)
	}
	s.cacheFinish()
	if s.listening.Load() {
		s.pool.notifier.unlisten(s, "")
	}
	s.pool.drop()
}

// serverLost is called by the read loop of the client's server connection
// when it ends: the client's transaction is gone with it, so the client is
// told and disconnected (a later request must not silently run elsewhere).
func (s *clientConn) serverLost() {
	s.broken.Store(true)
	s.cacheFinish() // its last transaction may have committed
	e := wire.Fatalf(wire.CodeConnectionFailure, "server connection to the upstream database was lost")
	s.noteProxyError(e.Code)
	s.wmu.Lock()
	if !s.ended {
		s.ended = true
		_, _ = s.bw.Write(e.AppendTo(nil))
		_ = s.bw.Flush()
	}
	s.wmu.Unlock()
	_ = s.conn.Close()
}

// --- writing to the client ---

func (s *clientConn) writeFromServer(prefix, raw []byte, flush bool) {
	s.wmu.Lock()
	if s.ended {
		s.wmu.Unlock()
		return // nothing follows the final FATAL
	}
	// A client that does not read must not hold the server connection
	// (and its pool slot) for ever: each batch of replies, from its first
	// message to its flush, must be written within ClientWriteTimeout.
	if !s.wdlSet {
		s.wdlSet = true
		_ = s.conn.SetWriteDeadline(time.Now().Add(s.srv.cfg.ClientWriteTimeout))
	}
	if prefix != nil {
		_, _ = s.bw.Write(prefix)
	}
	_, err := s.bw.Write(raw)
	if err == nil && flush {
		err = s.bw.Flush()
		if err == nil {
			// Lifted between batches, so the proxy's own writes and the
			// next batch start from no deadline.
			s.wdlSet = false
			_ = s.conn.SetWriteDeadline(time.Time{})
		}
	}
	s.wmu.Unlock()
	if err != nil {
		if isTimeout(err) {
			s.srv.log.Warn("client does not read its replies; disconnecting it", "tenant", s.tenant, "session", s.key.pid,
				"write_timeout", s.srv.cfg.ClientWriteTimeout)
		}
		_ = s.conn.Close() // the client goroutine sees it and cleans up
	}
}

func isTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

func (s *clientConn) writeError(e *wire.Error) {
	s.wmu.Lock()
	_, _ = s.bw.Write(e.AppendTo(nil))
	_ = s.bw.Flush()
	s.wmu.Unlock()
}

func (s *clientConn) writeReady(status byte) {
	var b [6]byte
	s.wmu.Lock()
	_, _ = s.bw.Write(wire.AppendReadyForQuery(b[:0], status))
	_ = s.bw.Flush()
	s.wmu.Unlock()
}

func (s *clientConn) fatal(e *wire.Error) error {
	s.noteProxyError(e.Code)
	s.writeError(e)
	return e
}

// --- notes from the server read loop (called with sc.mu held) ---

func (s *clientConn) noteParameter(k, v string) {
	if i := trackedIndex(k); i >= 0 {
		s.pmu.Lock()
		s.params.put(i, v)
		s.pmu.Unlock()
	}
}

func (s *clientConn) noteError(body []byte) {
	code := wire.ErrorField(body, wire.FieldCode)
	if len(code) >= 2 {
		s.srv.metrics.errors.WithLabelValues(s.label, sqlstateClass(code[:2])).Inc()
	}
}

func (s *clientConn) noteProxyError(code string) {
	s.srv.metrics.errors.WithLabelValues(s.label, sqlstateClass([]byte(code[:2]))).Inc()
}

func (s *clientConn) noteReady(sc *serverConn) {
	now := time.Now()
	d := now.Sub(sc.batchStart)
	s.queryDur.Observe(d.Seconds())
	sc.pool.queries.Add(1)
	sc.pool.queryUs.Add(int64(d / time.Microsecond))
	sc.batchStart = now
}

// sqlstateClass keeps the label to the two-character class, and bounded.
func sqlstateClass(c []byte) string {
	for _, b := range c {
		if !(b >= '0' && b <= '9' || b >= 'A' && b <= 'Z') {
			return "invalid"
		}
	}
	return string(c)
}

// upstreamError is what a client is told of an upstream failure: msg and a
// reference, never the cause, which can show the upstream's address and
// role; the cause is logged under the same reference.
func (s *clientConn) upstreamError(code, msg string, cause error) *wire.Error {
	ref := errref.New()
	s.srv.log.Warn(msg, "ref", ref, "tenant", s.tenant, "session", s.key.pid, "error", cause)
	return wire.Errorf(code, "tenantguard: %s (ref %s)", msg, ref)
}
