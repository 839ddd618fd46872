package pg

import (
	"bufio"
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	wire "github.com/tenantguard/tenantguard/wire/pg"
)

// Locks of the Postgres data plane, in the only order they may be nested
// (a lock on the right is never held while taking one on its left):
//
//	serverConn.mu → pool.mu
//	serverConn.mu → clientConn.mu
//
// Server.mu, clientConn.wmu, pool.mu and clientConn.mu are leaves: nothing else is
// taken while one is held. No function returns holding a lock it took, nor
// releases one its caller took. No lock is held across a socket read or
// write, so a slow peer stalls only its own connection.

// serverMaxMessage bounds what an upstream may send in one message. Rows
// over 1 GiB cannot exist in PostgreSQL; this keeps a broken upstream from
// making us allocate without bound.
const serverMaxMessage = 1 << 30

// connState is where a server connection is in its life, as pgconn's
// connStatus. Transitions, each made in one place, under serverConn.mu:
//
//	idle      → attached   clientConn.attach: a client's transaction starts
//	attached  → idle       serverConn.release: between transactions, clean
//	attached  → resetting  serverConn.release: the client left session state
//	resetting → idle       serverConn.finishReset: the reset succeeded
//	any       → closing    serverConn.closeSocket: failed, expired, abandoned
//	any       → closed     serverConn.readLoop, when it exits
//
// How the pool counts a connection (idle, or leased to a tenant) is the
// pool's own record, under pool.mu; it stops counting it exactly once, when
// the read loop exits (pool.forget).
type connState uint8

const (
	connIdle      connState = iota // in the pool, or being handed to a client
	connAttached                   // owned by one client, which alone writes to it
	connResetting                  // a reset query is in flight; back to the pool once it succeeds
	connClosing                    // the socket is being closed; no one may use it
	connClosed                     // the read loop has exited and the pool has forgotten it
)

var connStateNames = [...]string{"idle", "attached", "resetting", "closing", "closed"}

func (s connState) String() string { return connStateNames[s] }

// serverConn is one upstream connection. Its read loop runs for the
// connection's whole life, forwarding replies to whichever client owns
// it. The owning client's goroutine writes requests; mu guards what the
// two share.
type serverConn struct {
	pool    *pool
	conn    net.Conn
	rd      *wire.Reader
	bw      *bufio.Writer // written by the owner, or by release during a reset
	pid     uint32
	secret  []byte
	created time.Time

	// The pool's record of the connection, guarded by pool.mu.
	inIdle    bool      // on the pool's idle stack
	leased    bool      // counted against lease's share of the pool
	lease     string    // the tenant it is counted against
	idleSince time.Time // when it last went on the idle stack

	mu       sync.Mutex
	state    connState
	owner    *clientConn // the attached client; nil in every other state
	sending  bool        // a request batch is being written: not releasable until written
	unsynced bool        // extended-protocol messages sent since the last Sync
	tx       byte        // transaction status of the last ReadyForQuery
	cancels  int         // cancel requests in flight for this backend
	// cancelPending: a client's cancel arrived while the proxy's own
	// statements ran ahead of its request; the read loop sends it after.
	cancelPending bool
	replies       replyQueue
	// dirty: a client changed session state; reset before anyone else
	// uses the connection. discard: state a reset cannot undo without
	// losing shared prepared statements (SQL PREPARE): close instead.
	dirty, discard bool
	resetFailed    bool              // an injected statement failed: close instead of reusing
	params         map[string]string // every ParameterStatus the server sent
	settings       clientSettings    // the tracked settings it is known to have
	prepared       map[string]*preparedState
	useClock       uint64
	unnamedOwner   *clientConn // whose unnamed statement the server holds
	unnamedGen     uint64
	attachedAt     time.Time
	batchStart     time.Time
	boundTenant    string // tenant whose binding the connection carries
	boundAt        time.Time
	scratch        []byte // a re-encoded server message, valid until the next one
	copyTag        []byte // a COPY's CommandComplete held back (accountCopyLoad)
	copyHeld       bool
	// respArmed: a read deadline of Config.ResponseTimeout is set, since
	// respAt, because a reply is owed (armResponseTimeout).
	respArmed bool
	respAt    time.Time
	fill      *cacheFill // a result cache miss whose replies are being captured (cachefill.go)
}

// preparedState is how far a server-side statement has got.
type preparedState struct {
	ready bool   // ParseComplete seen
	used  uint64 // for least-recently-used eviction
}

// newServerConn wraps a hijacked connection; r is the reader pgconn read
// it through (see pool.dial).
func newServerConn(p *pool, hj *pgconn.HijackedConn, r io.Reader) *serverConn {
	if r == nil {
		r = hj.Conn
	}
	sc := &serverConn{
		pool:     p,
		conn:     hj.Conn,
		rd:       wire.NewReader(bufio.NewReaderSize(r, 32<<10), serverMaxMessage),
		bw:       bufio.NewWriterSize(hj.Conn, 32<<10),
		pid:      hj.PID,
		secret:   hj.SecretKey,
		created:  time.Now(),
		tx:       hj.TxStatus,
		params:   hj.ParameterStatuses,
		prepared: make(map[string]*preparedState),
		replies:  newReplyQueue(),
	}
	if sc.params == nil {
		sc.params = map[string]string{}
	}
	for i, p := range trackedParams {
		if v, ok := sc.params[p.name]; ok && p.reported {
			sc.settings.put(i, v)
		}
	}
	return sc
}

func (sc *serverConn) expired(now time.Time) bool {
	return now.Sub(sc.idleSince) > sc.pool.cfg.ServerIdleTime || now.Sub(sc.created) > sc.pool.cfg.ServerLifetime
}

// closeSocket takes the connection out of use and closes its socket; the
// read loop then exits and the pool forgets it. Any goroutine may call it,
// more than once. A client it is attached to is not told: the caller
// either is that client or tells it.
func (sc *serverConn) closeSocket() {
	sc.mu.Lock()
	if sc.state < connClosing {
		sc.state = connClosing
		sc.owner = nil
	}
	sc.mu.Unlock()
	_ = sc.conn.Close()
}

// retireWait bounds how long a connection the pool retires waits for the
// server to close its end after Terminate.
const retireWait = 2 * time.Second

// retire ends an idle connection the pool no longer wants (terminate).
func (sc *serverConn) retire() {
	sc.mu.Lock()
	if sc.state >= connClosing {
		sc.mu.Unlock()
		return
	}
	sc.state = connClosing
	sc.owner = nil
	sc.mu.Unlock()
	sc.terminate()
}

// terminate ends a connection the pool no longer wants, between
// transactions, as a client leaves: Terminate, then the read loop reads
// until the server closes its end. PostgreSQL closes the socket after the
// backend has left pg_stat_activity and given back its connection slot,
// and only then does the pool count the slot free (forget): so a slot
// given back to a connection budget is never held twice, by a backend
// still exiting and by the connection that takes its place. A server
// that has not closed within retireWait is cut off. The caller has set
// state to connClosing.
func (sc *serverConn) terminate() {
	_ = sc.conn.SetReadDeadline(time.Now().Add(retireWait))
	if _, err := sc.conn.Write(wire.TerminateMessage); err != nil {
		_ = sc.conn.Close()
	}
}

// readLoop reads every message the server sends, for the connection's
// life, and forwards each to the owner as the reply queue says.
func (sc *serverConn) readLoop() {
	var err error
	for {
		var typ byte
		var raw []byte
		typ, raw, err = sc.rd.Next()
		if err != nil {
			break
		}
		sc.mu.Lock()
		out := sc.account(typ, raw)
		cacheBarrier := sc.cacheObserve(typ, out)
		owner := sc.owner
		if sc.respArmed {
			sc.rearmResponseTimeout()
		}
		sc.mu.Unlock()
		if owner != nil && out.barrier {
			owner.notificationBarrier()
		}
		if cacheBarrier != nil {
			cacheBarrier.waitBarrierFor(owner)
		}
		if owner != nil && out.write != nil {
			owner.writeFromServer(out.prefix, out.write, typ == wire.MsgReadyForQuery || sc.rd.Buffered() == 0)
		}
		if typ == wire.MsgReadyForQuery {
			sc.afterReady()
		}
		if out.fatal && owner == nil {
			_ = sc.conn.Close() // a FATAL to no one: the server is closing the connection
		}
		if out.cancel {
			if err := sc.pool.cancel(sc, sc.pid, sc.secret); err != nil {
				sc.pool.log.Warn("cancel failed", "error", err)
			}
			sc.mu.Lock()
			sc.cancels--
			sc.mu.Unlock()
			sc.release()
		}
	}
	sc.exit(err)
}

// armResponseTimeout bounds the wait for the replies just requested
// (Config.ResponseTimeout): past it the read loop's read fails, and the
// connection and its client end as for a lost connection (08006). Called
// with mu held, after a request batch is written.
func (sc *serverConn) armResponseTimeout() {
	d := sc.pool.cfg.ResponseTimeout
	if d <= 0 || sc.respArmed || sc.replies.empty() {
		return
	}
	sc.respArmed, sc.respAt = true, time.Now()
	_ = sc.conn.SetReadDeadline(sc.respAt.Add(d))
}

// rearmResponseTimeout, after a message from the server, lifts the
// deadline once nothing is owed, or pushes it back while replies flow
// (every quarter of the timeout, not on every message). Called with mu held.
func (sc *serverConn) rearmResponseTimeout() {
	if sc.replies.empty() {
		sc.respArmed = false
		_ = sc.conn.SetReadDeadline(time.Time{})
		return
	}
	d := sc.pool.cfg.ResponseTimeout
	if now := time.Now(); now.Sub(sc.respAt) > d/4 {
		sc.respAt = now
		_ = sc.conn.SetReadDeadline(now.Add(d))
	}
}

// exit ends the connection once its read loop has stopped: the client
// that owned it is told, and the pool stops counting it.
func (sc *serverConn) exit(err error) {
	sc.mu.Lock()
	owner := sc.owner
	sc.owner = nil
	sc.state = connClosed
	sc.mu.Unlock()
	_ = sc.conn.Close()
	if owner != nil {
		if !errors.Is(err, net.ErrClosed) && !errors.Is(err, io.EOF) {
			sc.pool.log.Warn("server connection lost", "pid", sc.pid, "tenant", owner.tenant, "session", owner.key.pid, "error", err)
		}
		owner.serverLost()
	}
	sc.pool.forget(sc)
}

// afterReady runs after a ReadyForQuery: it finishes a reset, or gives the
// connection back if its owner is between transactions.
func (sc *serverConn) afterReady() {
	sc.mu.Lock()
	state := sc.state
	sc.mu.Unlock()
	switch state {
	case connResetting:
		sc.finishReset()
	case connAttached:
		sc.release()
	}
}

// releasable reports whether the connection is between transactions with
// nothing owed in either direction. Called with mu held.
func (sc *serverConn) releasable() bool {
	return sc.replies.empty() && !sc.sending && !sc.unsynced && sc.tx == wire.TxIdle && sc.cancels == 0
}

// busyFor reports whether s owns the connection and is in the middle of a
// transaction or a request.
func (sc *serverConn) busyFor(s *clientConn) bool {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return sc.owner == s && sc.state == connAttached && !sc.releasable()
}

// release gives the connection back to the pool if its owner is between
// transactions and pooled per transaction, or is ending; an owner that is
// ending is then terminated. Both the owner's goroutine (after writing) and
// the read loop (after a ReadyForQuery) call it; the one that finds the
// connection releasable does it.
func (sc *serverConn) release() {
	sc.mu.Lock()
	s := sc.owner
	if sc.state != connAttached || s == nil || !sc.releasable() {
		sc.mu.Unlock()
		return
	}
	ending := s.ending()
	if s.mode != PoolTransaction && !ending {
		sc.mu.Unlock() // session pooling: the client keeps it
		return
	}
	then := sc.detachLocked(s)
	sc.mu.Unlock()
	then()
	if ending {
		_ = s.terminate()
		return
	}
	s.flushNotifications() // what arrived during the transaction
}

// leave is an owner's last word as its client goes: a connection between
// transactions goes back to the pool (reset as needed); one in the middle
// of something (a transaction, a result not yet read, requests not yet
// answered) cannot be reused, and is closed.
func (sc *serverConn) leave(s *clientConn) {
	sc.mu.Lock()
	if sc.owner != s || sc.state != connAttached {
		sc.mu.Unlock()
		return
	}
	sc.sending = false // its writer has stopped
	if !sc.releasable() {
		s.detach(sc)
		sc.owner = nil
		sc.state = connClosing
		sc.mu.Unlock()
		_ = sc.conn.Close()
		return
	}
	then := sc.detachLocked(s)
	sc.mu.Unlock()
	then()
}

// detachLocked takes the connection from its owner s, between transactions,
// and starts it back to the pool: at once when clean; through a reset when s
// left session state behind (and always in session pooling); closed when s
// left state a reset cannot undo. It returns what remains to do once mu is
// released. Called with mu held.
func (sc *serverConn) detachLocked(s *clientConn) (then func()) {
	d := time.Since(sc.attachedAt)
	s.txDur.Observe(d.Seconds())
	sc.pool.xacts.Add(1)
	sc.pool.xactUs.Add(int64(d / time.Microsecond))
	s.detach(sc)
	sc.owner = nil
	sc.cancelPending = false // its request is over
	reset := ""
	if s.mode == PoolSession {
		reset = sessionResetQuery
	} else if sc.dirty {
		reset = transactionResetQuery
	}
	switch {
	case sc.discard:
		sc.state = connClosing
		return func() { _ = sc.conn.Close() }
	case reset != "":
		sc.beginReset(reset)
		return func() { sc.sendReset(reset) }
	}
	sc.state = connIdle
	sc.pool.put(sc)
	return func() {}
}

// transactionResetQuery undoes what a client may leave on a connection in
// transaction pooling, keeping protocol-level prepared statements (they are
// ours, shared by name). DISCARD ALL is this plus DEALLOCATE ALL and DISCARD PLANS.
const transactionResetQuery = "SET SESSION AUTHORIZATION DEFAULT; RESET ALL; CLOSE ALL; UNLISTEN *; SELECT pg_catalog.pg_advisory_unlock_all(); DISCARD TEMP; DISCARD SEQUENCES"

// sessionResetQuery is run when a session-pooled client leaves.
const sessionResetQuery = "DISCARD ALL"

// beginReset moves the connection to resetting and queues the reset's
// reply, to be swallowed. Called with mu held.
func (sc *serverConn) beginReset(query string) {
	sc.state = connResetting
	sc.dirty = false
	sc.resetFailed = false
	sc.forgetSession()
	if query == sessionResetQuery {
		sc.forgetStatements()
	}
	sc.replies.push(reply{kind: wire.MsgReadyForQuery, swallow: true})
	// No one else writes now: the owner is gone and the pool does not have
	// it yet. sending keeps finishReset from handing it out before the
	// write below has returned, even if the reply is quicker.
	sc.sending = true
}

// sendReset writes the reset query; beginReset has prepared for it.
func (sc *serverConn) sendReset(query string) {
	_, err := sc.bw.Write(wire.AppendQuery(nil, query))
	if err == nil {
		err = sc.bw.Flush()
	}
	sc.mu.Lock()
	sc.sending = false
	sc.mu.Unlock()
	if err != nil {
		sc.closeSocket()
		return
	}
	sc.finishReset() // in case the reply came while we were writing
}

// finishReset returns a connection whose reset has completed to the pool,
// or closes it if the reset failed. It does nothing while the reset is
// still in flight.
func (sc *serverConn) finishReset() {
	sc.mu.Lock()
	if sc.state != connResetting || !sc.replies.empty() || sc.sending {
		sc.mu.Unlock()
		return
	}
	if sc.resetFailed || sc.tx != wire.TxIdle {
		sc.mu.Unlock()
		sc.pool.log.Warn("server reset failed; closing connection", "pid", sc.pid)
		sc.closeSocket()
		return
	}
	sc.state = connIdle
	sc.pool.put(sc)
	sc.mu.Unlock()
}
