package pg

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	wire "github.com/tenantguard/tenantguard/wire/pg"
)

// serverMaxMessage bounds what an upstream may send in one message. Rows
// over 1 GiB cannot exist in PostgreSQL; this keeps a broken upstream from
// making us allocate without bound.
const serverMaxMessage = 1 << 30

// expectation is one response the proxy is waiting for from the server, in
// order: a ParseComplete ('1'), a CloseComplete ('3'), or the ReadyForQuery
// ('Z') that ends a Sync or simple Query.
type expectation struct {
	kind    byte
	swallow bool   // the proxy injected the request: the client must not see the reply
	name    string // for '1': the server statement name being prepared
	prefix  []byte // for 'Z': a reply of the proxy's own, delivered just before the ReadyForQuery
}

// preparedState is how far a server-side statement has got.
type preparedState struct {
	ready bool   // ParseComplete seen
	used  uint64 // for least-recently-used eviction
}

// serverConn is one upstream connection. Its read loop runs for its whole
// life, forwarding replies to whichever session owns it; mu guards all state
// shared between that loop and the owning session's goroutine.
type serverConn struct {
	pool    *pool
	conn    net.Conn
	rd      *wire.Reader
	bw      *bufio.Writer
	pid     uint32
	secret  []byte
	created time.Time

	idleSince time.Time // guarded by pool.mu
	lease     string    // tenant holding it, for the pool's per-tenant count; guarded by pool.mu

	mu           sync.Mutex
	owner        *session // nil while idle or being reset
	resetting    bool     // a reset query is in flight; put back on success
	resetFailed  bool
	closed       bool
	writing      bool // the owner is writing a batch; do not release
	unsynced     bool // extended-protocol messages sent since the last Sync
	tx           byte // last ReadyForQuery status
	dirty        bool // session state changed: reset before reuse
	discardOnRel bool // state we cannot reset without losing our statements: close instead
	cancels      int  // cancel requests in flight for this backend
	expect       []expectation
	expectBuf    []expectation // the queue's backing array, reused
	params       map[string]string
	prepared     map[string]*preparedState
	useClock     uint64
	unnamedOwner *session // whose unnamed statement the server holds
	unnamedGen   uint64
	attachedAt   time.Time
	batchStart   time.Time
	boundTenant  string // tenant whose binding the connection carries
	boundAt      time.Time
	stmtTimeout  string // statement_timeout the proxy set, in ms; "" = server default
	scratch      []byte
}

// newServerConn wraps a hijacked connection; r is the reader pgconn read
// it through (see pool.dial).
func newServerConn(p *pool, hj *pgconn.HijackedConn, r io.Reader) *serverConn {
	if r == nil {
		r = hj.Conn
	}
	sc := &serverConn{
		pool:      p,
		conn:      hj.Conn,
		rd:        wire.NewReader(bufio.NewReaderSize(r, 32<<10), serverMaxMessage),
		bw:        bufio.NewWriterSize(hj.Conn, 32<<10),
		pid:       hj.PID,
		secret:    hj.SecretKey,
		created:   time.Now(),
		tx:        hj.TxStatus,
		params:    hj.ParameterStatuses,
		prepared:  make(map[string]*preparedState),
		expectBuf: make([]expectation, 0, 16),
	}
	sc.expect = sc.expectBuf[:0]
	if sc.params == nil {
		sc.params = map[string]string{}
	}
	return sc
}

// popExpect drops the first expectation. An emptied queue starts again at
// the front of its array, so steady traffic does not reallocate it.
func (sc *serverConn) popExpect() {
	clear(sc.expect[:1])
	sc.expect = sc.expect[1:]
	if len(sc.expect) == 0 {
		sc.expect = sc.expect[:0:0]
		if cap(sc.expectBuf) > 0 {
			sc.expect = sc.expectBuf[:0]
		}
	}
}

func (sc *serverConn) expired(now time.Time) bool {
	return now.Sub(sc.idleSince) > sc.pool.cfg.ServerIdleTime || now.Sub(sc.created) > sc.pool.cfg.ServerLifetime
}

// close closes the socket; the read loop then exits and discards the connection.
func (sc *serverConn) close() {
	sc.mu.Lock()
	sc.closed = true
	sc.mu.Unlock()
	_ = sc.conn.Close()
}

// readLoop reads every message the server sends for the connection's life.
func (sc *serverConn) readLoop() {
	for {
		typ, raw, err := sc.rd.Next()
		if err != nil {
			sc.fail(err)
			return
		}
		sc.mu.Lock()
		prefix, forward, fatal := sc.account(typ, raw)
		owner := sc.owner
		sc.mu.Unlock()
		if owner != nil {
			flush := typ == 'Z' || sc.rd.Buffered() == 0
			if forward {
				owner.writeFromServer(prefix, raw, flush)
			} else if prefix != nil {
				owner.writeFromServer(nil, prefix, flush) // a replacement for raw
			}
		}
		if typ == 'Z' {
			sc.afterReady()
		}
		if fatal && owner == nil {
			_ = sc.conn.Close() // FATAL on an idle connection: the server is closing it
		}
	}
}

// account updates the connection's state for one server message and says
// whether the owner should see it. Called with mu held.
//
// It returns what to write: raw (forward) preceded by prefix, or, when
// forward is false and prefix is not nil, prefix in place of raw.
func (sc *serverConn) account(typ byte, raw []byte) (prefix []byte, forward, fatal bool) {
	body := raw[5:]
	if typ == 'S' {
		if k, v, ok := parseParameterStatus(body); ok {
			sc.params[k] = v
			if sc.owner != nil && (len(sc.expect) == 0 || !sc.expect[0].swallow || sc.expect[0].kind != 'Z') {
				sc.owner.noteParameter(k, v)
			}
		}
	}
	if typ == 'E' && isFatal(body) {
		fatal = true
	}
	// Inside an injected query everything up to its ReadyForQuery is ours.
	if len(sc.expect) > 0 && sc.expect[0].kind == 'Z' && sc.expect[0].swallow {
		switch typ {
		case 'E':
			sc.resetFailed = true
			sc.pool.log.Warn("injected statement failed", "pid", sc.pid, "error", errorMessage(body))
		case 'Z':
			sc.popExpect()
			if len(body) > 0 {
				sc.tx = body[0]
			}
		}
		return nil, false, fatal
	}
	switch typ {
	case '1', '3':
		if len(sc.expect) == 0 || sc.expect[0].kind != typ {
			// Desynchronised: we cannot know whose reply this is.
			sc.pool.log.Error("unexpected server reply", "type", string(typ), "pid", sc.pid)
			_ = sc.conn.Close()
			return nil, false, true
		}
		e := sc.expect[0]
		sc.popExpect()
		if typ == '1' && e.name != "" {
			if ps := sc.prepared[e.name]; ps != nil {
				ps.ready = true
			}
		}
		return nil, !e.swallow, fatal
	case 'E':
		var replaced []byte
		if len(sc.expect) > 0 && sc.expect[0].kind == 'E' {
			// The failure we provoked for a refused statement: our error instead.
			replaced = sc.expect[0].prefix
			sc.popExpect()
		}
		// The server skips to the next Sync: replies queued before it will not come.
		for len(sc.expect) > 0 && sc.expect[0].kind != 'Z' {
			if e := sc.expect[0]; e.kind == '1' && e.name != "" {
				if ps := sc.prepared[e.name]; ps != nil && !ps.ready {
					delete(sc.prepared, e.name)
				}
			}
			sc.popExpect()
		}
		if replaced != nil {
			return replaced, false, fatal
		}
		if sc.owner != nil {
			sc.owner.noteError(body)
			if !sc.owner.t.ShowConstraintDetail && hidesDetail(body) {
				sc.scratch = stripDetail(sc.scratch[:0], raw)
				return sc.scratch, false, fatal
			}
		}
		return nil, true, fatal
	case 'Z':
		if len(sc.expect) > 0 && sc.expect[0].kind == 'Z' {
			prefix = sc.expect[0].prefix
			sc.popExpect()
		}
		if len(body) > 0 {
			sc.tx = body[0]
		}
		if sc.owner != nil {
			sc.owner.noteReady(sc)
		}
		return prefix, true, fatal
	case 'C':
		sc.noteCommand(body)
	}
	return nil, true, fatal
}

// noteCommand tracks session-level state a command left on the connection,
// from its CommandComplete tag.
func (sc *serverConn) noteCommand(body []byte) {
	tag := body
	if i := bytes.IndexByte(tag, 0); i >= 0 {
		tag = tag[:i]
	}
	switch {
	case bytes.Equal(tag, []byte("SET")), bytes.Equal(tag, []byte("RESET")),
		bytes.Equal(tag, []byte("LISTEN")), bytes.Equal(tag, []byte("DECLARE CURSOR")),
		bytes.Equal(tag, []byte("CREATE TABLE")), bytes.Equal(tag, []byte("SET CONSTRAINTS")),
		bytes.HasPrefix(tag, []byte("DISCARD")):
		sc.dirty = true
		if bytes.Equal(tag, []byte("DISCARD ALL")) {
			sc.forgetStatements()
		}
	case bytes.Equal(tag, []byte("DEALLOCATE ALL")):
		sc.forgetStatements()
	case bytes.Equal(tag, []byte("PREPARE")), bytes.Equal(tag, []byte("DEALLOCATE")):
		// SQL-level statements share the namespace with ours; a fresh
		// connection is the only clean state we can guarantee.
		sc.discardOnRel = true
	}
}

func (sc *serverConn) forgetStatements() {
	clear(sc.prepared)
	sc.unnamedOwner = nil
	sc.forgetSession()
}

// forgetSession notes that the connection's settings went back to the
// server defaults (RESET ALL, DISCARD ALL): the binding is gone.
func (sc *serverConn) forgetSession() {
	sc.boundTenant, sc.stmtTimeout = "", ""
	for _, k := range trackedParams {
		if !k.reported {
			delete(sc.params, k.name)
		}
	}
}

// afterReady runs after a ReadyForQuery was forwarded: it finishes a reset
// or gives the connection back if its owner is between transactions.
func (sc *serverConn) afterReady() {
	sc.mu.Lock()
	if sc.owner == nil {
		if sc.resetting && len(sc.expect) == 0 && !sc.writing {
			sc.finishReset() // unlocks
			return
		}
		// Still flushing the reset: detach finishes it.
		sc.mu.Unlock()
		return
	}
	sc.owner.tryRelease(sc) // unlocks
}

// finishReset returns a connection whose reset completed to the pool, or
// closes it if the reset failed. Called with mu held; unlocks it.
func (sc *serverConn) finishReset() {
	sc.resetting = false
	ok := !sc.resetFailed && sc.tx == 'I' && !sc.closed
	sc.mu.Unlock()
	if ok {
		sc.pool.put(sc)
		return
	}
	sc.pool.log.Warn("server reset failed; closing connection", "pid", sc.pid)
	_ = sc.conn.Close()
}

// releasable reports whether the owner may give the connection back now.
// Called with mu held.
func (sc *serverConn) releasable() bool {
	return len(sc.expect) == 0 && !sc.writing && !sc.unsynced && sc.tx == 'I' && sc.cancels == 0 && !sc.closed
}

// detach takes the connection from its owner and returns it to the pool,
// resetting it first if the owner left session state behind. Called with mu
// held; unlocks it.
func (sc *serverConn) detach(resetQuery string) {
	sc.owner = nil
	if sc.discardOnRel || sc.closed {
		sc.mu.Unlock()
		_ = sc.conn.Close()
		return
	}
	if resetQuery == "" && sc.dirty {
		resetQuery = transactionResetQuery
	}
	if resetQuery == "" {
		sc.mu.Unlock()
		sc.pool.put(sc)
		return
	}
	sc.dirty = false
	sc.forgetSession()
	if resetQuery == sessionResetQuery {
		sc.forgetStatements()
	}
	sc.resetting = true
	sc.resetFailed = false
	sc.expect = append(sc.expect, expectation{kind: 'Z', swallow: true})
	// No one else writes: the owner is gone and the pool does not have it
	// yet. writing keeps it that way until Flush has returned, even if the
	// reset's reply arrives first.
	sc.writing = true
	sc.mu.Unlock()
	msg := appendQuery(nil, resetQuery)
	_, err := sc.bw.Write(msg)
	if err == nil {
		err = sc.bw.Flush()
	}
	sc.mu.Lock()
	sc.writing = false
	if err != nil {
		sc.mu.Unlock()
		_ = sc.conn.Close()
		return
	}
	if sc.resetting && len(sc.expect) == 0 {
		sc.finishReset() // the reply came while we were flushing
		return
	}
	sc.mu.Unlock()
}

// transactionResetQuery undoes what a client may leave on a connection in
// transaction pooling, keeping protocol-level prepared statements (they are
// ours, shared by name). DISCARD ALL is this plus DEALLOCATE ALL and DISCARD PLANS.
const transactionResetQuery = "SET SESSION AUTHORIZATION DEFAULT; RESET ALL; CLOSE ALL; UNLISTEN *; SELECT pg_catalog.pg_advisory_unlock_all(); DISCARD TEMP; DISCARD SEQUENCES"

// sessionResetQuery is run when a session-pooled client leaves.
const sessionResetQuery = "DISCARD ALL"

// fail handles the end of the connection: read error, EOF or close.
func (sc *serverConn) fail(err error) {
	sc.mu.Lock()
	owner := sc.owner
	wasIdle := owner == nil && !sc.resetting
	sc.owner = nil
	sc.resetting = false
	sc.closed = true
	sc.mu.Unlock()
	_ = sc.conn.Close()
	if owner != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, io.EOF) {
		sc.pool.log.Warn("server connection lost", "pid", sc.pid, "error", err)
	}
	if owner != nil {
		owner.serverLost(sc)
	}
	sc.pool.discard(sc, wasIdle)
}

// --- small message helpers ---

func parseParameterStatus(body []byte) (string, string, bool) {
	i := bytes.IndexByte(body, 0)
	if i < 0 {
		return "", "", false
	}
	j := bytes.IndexByte(body[i+1:], 0)
	if j < 0 {
		return "", "", false
	}
	return string(body[:i]), string(body[i+1 : i+1+j]), true
}

// errorField returns the value of one field of an ErrorResponse/NoticeResponse body.
func errorField(body []byte, field byte) []byte {
	for len(body) > 0 && body[0] != 0 {
		f := body[0]
		end := bytes.IndexByte(body[1:], 0)
		if end < 0 {
			return nil
		}
		if f == field {
			return body[1 : 1+end]
		}
		body = body[2+end:]
	}
	return nil
}

func isFatal(body []byte) bool {
	sev := errorField(body, 'V')
	if sev == nil {
		sev = errorField(body, 'S')
	}
	return bytes.Equal(sev, []byte("FATAL")) || bytes.Equal(sev, []byte("PANIC"))
}

func errorMessage(body []byte) string { return string(errorField(body, 'M')) }

func appendQuery(dst []byte, q string) []byte {
	dst = append(dst, 'Q')
	dst = binary.BigEndian.AppendUint32(dst, uint32(4+len(q)+1))
	dst = append(dst, q...)
	return append(dst, 0)
}

// hidesDetail reports whether an error's DETAIL can carry other tenants'
// values: unique and foreign-key violations quote the conflicting key.
func hidesDetail(body []byte) bool {
	c := errorField(body, 'C')
	return bytes.Equal(c, []byte("23505")) || bytes.Equal(c, []byte("23503"))
}

// stripDetail re-encodes an ErrorResponse without its DETAIL field.
func stripDetail(dst, raw []byte) []byte {
	dst = append(dst, raw[0], 0, 0, 0, 0)
	body := raw[5:]
	for len(body) > 0 && body[0] != 0 {
		end := bytes.IndexByte(body[1:], 0)
		if end < 0 {
			break
		}
		if body[0] != 'D' {
			dst = append(dst, body[:2+end]...)
		}
		body = body[2+end:]
	}
	dst = append(dst, 0)
	binary.BigEndian.PutUint32(dst[1:5], uint32(len(dst)-1))
	return dst
}
