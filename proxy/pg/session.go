package pg

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sony/gobreaker/v2"
	"github.com/tenantguard/tenantguard/policy"
	"github.com/tenantguard/tenantguard/proxy/pg/firewall"

	wire "github.com/tenantguard/tenantguard/wire/pg"
)

// session is one client connection, bound to one tenant from authentication
// on. Its goroutine reads the client; replies arrive from whichever server
// connection's read loop the session owns at the time.
type session struct {
	srv    *Server
	conn   net.Conn
	br     *bufio.Reader
	rd     *wire.Reader
	tenant string
	pool   *pool
	mode   PoolMode
	key    cancelKey

	// params are the client's values of tracked settings, replayed onto
	// whichever server connection serves it.
	pmu    sync.Mutex
	params map[string]string

	wmu   sync.Mutex // guards bw and ended: server read loops and the session write to the client
	bw    *bufio.Writer
	ended bool // the final FATAL has been written

	mu      sync.Mutex // guards sc, closing and endErr for cancel, drain and session end
	sc      *serverConn
	closing bool        // ending: no new transaction starts; end at the next boundary
	endErr  *wire.Error // the FATAL the client gets when it ends
	abort   atomic.Bool // ending immediately, transaction or not
	removed atomic.Bool // ended because its tenant left the policy
	cancel  context.CancelFunc

	// lease, when the client logged in with a session token, is its hold on
	// the session; link routes the lease's end to this session.
	lease policy.SessionLease
	link  *leaseLink

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
	out           []byte            // injected messages staged while holding sc.mu
	msg           []byte            // scratch for a rewritten client message
	verdict       *firewall.Verdict // the firewall's verdict on the message being handled

	queryDur prometheus.Observer
	txDur    prometheus.Observer
	errs     *prometheus.CounterVec
}

// cancelKey is the BackendKeyData the proxy gives a client.
type cancelKey struct {
	pid    uint32
	secret uint32
}

// run serves an authenticated client until it leaves or the proxy ends it.
func (s *session) run(ctx context.Context) error {
	defer s.finish()
	for {
		typ, raw, err := s.rd.Next()
		if err != nil {
			if s.ending() {
				// Woken to end, or the client left while the end was pending.
				return s.terminate()
			}
			return err
		}
		if s.abort.Load() {
			return s.terminate()
		}
		switch typ {
		case 'X':
			return nil
		case 'F':
			if err := s.refuseCall(wire.Errorf(wire.CodeFeatureNotSupported, "function call messages are not supported by tenantguard; use SELECT")); err != nil {
				return err
			}
			continue
		case 'p':
			return s.fatal(wire.Fatalf(wire.CodeProtocolViolation, "unexpected password message"))
		}
		if s.skipUntilSync {
			if typ == 'S' {
				s.skipUntilSync = false
				s.writeReady('I')
			}
			continue
		}
		if err := s.handle(ctx, typ, raw); err != nil {
			return err
		}
	}
}

// handle forwards one client message, attaching a server connection first if needed.
func (s *session) handle(ctx context.Context, typ byte, raw []byte) error {
	if snap := s.srv.policy.Load(); snap != s.snap {
		if err := s.followPolicy(snap); err != nil {
			return err
		}
	}
	s.verdict = nil
	if typ == 'Q' || typ == 'P' {
		var v *firewall.Verdict
		var refused *wire.Error
		rule := ""
		if s.srv.fw != nil {
			v, rule, refused = s.screen(typ, raw)
		}
		if s.lease != nil {
			var fp uint64
			if v != nil {
				fp = v.Fingerprint
			}
			s.lease.Record(fp, rule)
		}
		if refused != nil {
			return s.refuseStatement(typ, refused)
		}
		s.verdict = v
	} else if typ == 'B' && s.srv.fw != nil {
		if rule, refused := s.screenBind(raw); refused != nil {
			if s.lease != nil {
				s.lease.Record(0, rule)
			}
			return s.refuseStatement(typ, refused)
		}
	}
	sc := s.attached()
	if sc != nil && sc.releasable() && s.ending() {
		// Between transactions on a session-pooled connection: the
		// next transaction must not start.
		sc.mu.Unlock()
		return s.terminate()
	}
	if sc == nil {
		if typ == 'S' || typ == 'H' {
			// Nothing outstanding: answer without taking a server connection.
			if typ == 'S' {
				s.writeReady('I')
			}
			return nil
		}
		if typ == 'c' || typ == 'f' || typ == 'd' {
			return nil // COPY data after a failed COPY; PostgreSQL ignores it too
		}
		var err error
		if sc, err = s.acquire(ctx); err != nil {
			return s.acquireFailed(typ, err)
		}
	}
	// sc.mu is held here.
	s.out = s.out[:0]
	if len(sc.expect) == 0 {
		sc.batchStart = time.Now()
		if s.mode == PoolSession && sc.tx == 'I' && !sc.unsynced {
			// A session-pooled client keeps its connection for hours:
			// refresh the binding at transaction boundaries before it ages out.
			s.syncSession(sc)
			if len(s.out) > 0 {
				sc.expect = append(sc.expect, expectation{kind: 'Z', swallow: true})
			}
		}
	}
	sc.writing = true
	msg := s.rewrite(sc, typ, raw)
	sc.mu.Unlock()
	if len(s.out) > 0 {
		if _, err := sc.bw.Write(s.out); err != nil {
			return s.serverWriteFailed(sc, err)
		}
	}
	if _, err := sc.bw.Write(msg); err != nil {
		return s.serverWriteFailed(sc, err)
	}
	s.rd.Shrink(64 << 10)
	if s.rd.Buffered() == 0 {
		return s.flushServer(sc)
	}
	return nil
}

// attached returns the session's server connection with its mu held, or nil.
func (s *session) attached() *serverConn {
	s.mu.Lock()
	sc := s.sc
	s.mu.Unlock()
	if sc == nil {
		return nil
	}
	sc.mu.Lock()
	if sc.owner == s {
		return sc
	}
	sc.mu.Unlock()
	s.mu.Lock()
	if s.sc == sc {
		s.sc = nil
	}
	s.mu.Unlock()
	return nil
}

// acquire takes a server connection from the pool and makes it ours,
// replaying the client's settings onto it. Returns with sc.mu held.
func (s *session) acquire(ctx context.Context) (*serverConn, error) {
	s.mu.Lock()
	closing := s.closing
	s.mu.Unlock()
	if closing {
		return nil, errDraining
	}
	sc, err := s.pool.acquire(ctx, s.tenant, s.t.Limits.MaxTransactions)
	if err != nil {
		return nil, err
	}
	sc.mu.Lock()
	// Checked again with the connection published under s.mu: an end
	// signalled meanwhile either sees it attached or is seen here.
	s.mu.Lock()
	closing = s.closing
	if !closing {
		s.sc = sc
	}
	s.mu.Unlock()
	if closing {
		sc.detach("") // unlocks; back to the pool untouched
		return nil, errDraining
	}
	sc.owner = s
	sc.attachedAt = time.Now()
	sc.batchStart = sc.attachedAt
	s.out = s.out[:0]
	s.syncSession(sc)
	if len(s.out) > 0 {
		// Pipelined ahead of the client's first message: no extra round trip.
		sc.expect = append(sc.expect, expectation{kind: 'Z', swallow: true})
		sc.writing = true
		sc.mu.Unlock()
		if _, err := sc.bw.Write(s.out); err != nil {
			_ = sc.conn.Close()
			return nil, fmt.Errorf("write to server: %w", err)
		}
		sc.mu.Lock()
	}
	return sc, nil
}

var errDraining = errors.New("draining")

// acquireFailed answers a message that could not get a server connection.
func (s *session) acquireFailed(typ byte, err error) error {
	if s.ending() {
		// Ending: the pool wait was cut short, or nothing new may start.
		return s.terminate()
	}
	var pe *wire.Error
	switch {
	case errors.Is(err, errDraining), errors.Is(err, errPoolClosed):
		return s.fatal(errShutdown)
	case errors.Is(err, errPoolTimeout):
		pe = wire.Errorf(wire.CodeTooManyConnections, fmt.Sprintf("no server connection available for tenant %q within %s (pool %s is at its limit of %d)",
			s.tenant, s.pool.cfg.PoolWaitTimeout, s.pool.key, s.pool.cfg.PoolSize))
	case errors.Is(err, gobreaker.ErrOpenState), errors.Is(err, gobreaker.ErrTooManyRequests):
		pe = wire.Errorf(wire.CodeCannotConnectNow, "upstream database unavailable: circuit breaker is open after repeated failures; retry later")
	default:
		pe = wire.Errorf(wire.CodeConnectionFailure, "could not connect to upstream database: "+err.Error())
	}
	s.noteProxyError(pe.Code)
	s.writeError(pe)
	if typ == 'Q' {
		s.writeReady('I')
	} else {
		s.skipUntilSync = true
	}
	return nil
}

// refuseCall answers a message that expects ErrorResponse and ReadyForQuery
// (a simple-protocol request) with an error. While a server is attached,
// replies may still be owed, so a Sync goes to the server and the error is
// delivered just before its ReadyForQuery, in order.
func (s *session) refuseCall(e *wire.Error) error {
	s.noteProxyError(e.Code)
	sc := s.attached()
	if sc == nil {
		s.writeError(e)
		s.writeReady('I')
		return nil
	}
	sc.expect = append(sc.expect, expectation{kind: 'Z', prefix: e.AppendTo(nil)})
	sc.writing = true
	sc.mu.Unlock()
	if _, err := sc.bw.Write([]byte{'S', 0, 0, 0, 4}); err != nil {
		return s.serverWriteFailed(sc, err)
	}
	return s.flushServer(sc)
}

// flushServer flushes the batch to the server and lets the connection go
// back to the pool if the client is between transactions.
func (s *session) flushServer(sc *serverConn) error {
	if err := sc.bw.Flush(); err != nil {
		return s.serverWriteFailed(sc, err)
	}
	sc.mu.Lock()
	sc.writing = false
	if sc.owner == s {
		s.tryRelease(sc) // unlocks
	} else {
		sc.mu.Unlock()
	}
	return nil
}

func (s *session) serverWriteFailed(sc *serverConn, err error) error {
	_ = sc.conn.Close()
	return s.fatal(wire.Fatalf(wire.CodeConnectionFailure, "lost connection to upstream database: "+err.Error()))
}

// tryRelease gives the server connection back when the client is between
// transactions in transaction pooling. Called with sc.mu held; unlocks it.
func (s *session) tryRelease(sc *serverConn) {
	if s.mode != PoolTransaction || !sc.releasable() {
		s.mu.Lock()
		closing := s.closing && sc.releasable()
		s.mu.Unlock()
		if !closing {
			sc.mu.Unlock()
			return
		}
		// Draining: the transaction is over, end the session.
		s.txDur.Observe(time.Since(sc.attachedAt).Seconds())
		reset := ""
		if s.mode == PoolSession {
			reset = sessionResetQuery
		}
		sc.detach(reset)
		_ = s.terminate()
		return
	}
	s.txDur.Observe(time.Since(sc.attachedAt).Seconds())
	sc.detach("")
	s.mu.Lock()
	closing := s.closing
	s.mu.Unlock()
	if closing {
		_ = s.terminate()
	}
}

// finish runs when the client goroutine ends: the server connection goes back
// if it is clean, and is closed if the client left it mid-transaction.
func (s *session) finish() {
	s.srv.unregister(s)
	if s.lease != nil {
		s.link.detach()
		s.lease.Close()
	}
	sc := s.attached()
	if sc == nil {
		return
	}
	sc.writing = false
	if !sc.releasable() {
		sc.owner = nil
		sc.mu.Unlock()
		_ = sc.conn.Close()
		return
	}
	reset := ""
	if s.mode == PoolSession {
		reset = sessionResetQuery
	}
	s.txDur.Observe(time.Since(sc.attachedAt).Seconds())
	sc.detach(reset)
}

// serverLost is called by a server read loop whose connection died while we owned it.
func (s *session) serverLost(sc *serverConn) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	e := wire.Fatalf(wire.CodeConnectionFailure, "server connection to the upstream database was lost")
	s.noteProxyError(e.Code)
	_, _ = s.bw.Write(e.AppendTo(nil))
	_ = s.bw.Flush()
	_ = s.conn.Close()
}

// --- writing to the client ---

func (s *session) writeFromServer(prefix, raw []byte, flush bool) {
	s.wmu.Lock()
	if s.ended {
		s.wmu.Unlock()
		return // nothing follows the final FATAL
	}
	if prefix != nil {
		_, _ = s.bw.Write(prefix)
	}
	_, err := s.bw.Write(raw)
	if err == nil && flush {
		err = s.bw.Flush()
	}
	s.wmu.Unlock()
	if err != nil {
		_ = s.conn.Close() // the client goroutine sees it and cleans up
	}
}

func (s *session) writeError(e *wire.Error) {
	s.wmu.Lock()
	_, _ = s.bw.Write(e.AppendTo(nil))
	_ = s.bw.Flush()
	s.wmu.Unlock()
}

func (s *session) writeReady(status byte) {
	s.wmu.Lock()
	_, _ = s.bw.Write([]byte{'Z', 0, 0, 0, 5, status})
	_ = s.bw.Flush()
	s.wmu.Unlock()
}

func (s *session) fatal(e *wire.Error) error {
	s.noteProxyError(e.Code)
	s.writeError(e)
	return e
}

// --- notes from the server read loop (called with sc.mu held) ---

func (s *session) noteParameter(k, v string) {
	if tp := trackedParam(k); tp != nil {
		s.pmu.Lock()
		s.params[k] = v
		s.pmu.Unlock()
	}
}

func (s *session) noteError(body []byte) {
	code := errorField(body, 'C')
	if len(code) >= 2 {
		s.errs.WithLabelValues(sqlstateClass(code[:2])).Inc()
	}
}

func (s *session) noteProxyError(code string) {
	s.errs.WithLabelValues(sqlstateClass([]byte(code[:2]))).Inc()
}

func (s *session) noteReady(sc *serverConn) {
	now := time.Now()
	s.queryDur.Observe(now.Sub(sc.batchStart).Seconds())
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
