package pg

import (
	"bytes"

	wire "github.com/tenantguard/tenantguard/wire/pg"
)

// reply is one response the proxy waits for from the server, in order: a
// ParseComplete, a CloseComplete, the ReadyForQuery that ends a Sync or a
// simple Query, or the ErrorResponse a refused statement provokes.
type reply struct {
	kind    byte   // wire.MsgParseComplete, MsgCloseComplete, MsgReadyForQuery or MsgErrorResponse
	swallow bool   // the proxy made the request: the client must not see the reply
	name    string // for ParseComplete: the server statement being prepared
	// prefix, for ReadyForQuery: a reply of the proxy's own, delivered just
	// before it; for ErrorResponse: the error the client sees instead.
	prefix []byte
	// copyLoad, for ReadyForQuery: the query is a COPY into a row-isolated
	// table's stage followed by the move of its rows (see copy.go): the
	// client sees the COPY's replies, not the move's.
	copyLoad bool
}

// replyQueue is a FIFO of replies owed, on a reused array: steady traffic
// queues and pops without allocating.
type replyQueue struct {
	q   []reply
	buf []reply
}

func newReplyQueue() replyQueue {
	buf := make([]reply, 0, 16)
	return replyQueue{q: buf, buf: buf}
}

func (r *replyQueue) push(e reply) { r.q = append(r.q, e) }

func (r *replyQueue) empty() bool { return len(r.q) == 0 }

func (r *replyQueue) len() int { return len(r.q) }

// front is the next reply owed; ok is false when none is.
func (r *replyQueue) front() (e reply, ok bool) {
	if len(r.q) == 0 {
		return reply{}, false
	}
	return r.q[0], true
}

// frontIs reports whether the next reply owed is of kind.
func (r *replyQueue) frontIs(kind byte) bool { return len(r.q) > 0 && r.q[0].kind == kind }

// pop drops the next reply. An emptied queue starts again at the front of
// its array.
func (r *replyQueue) pop() {
	clear(r.q[:1])
	r.q = r.q[1:]
	if len(r.q) == 0 {
		r.q = r.buf[:0]
	}
}

// forward is what the read loop does with one server message: write it to
// the owner (write, preceded by prefix) or drop it (write nil).
type forward struct {
	prefix []byte
	write  []byte
	fatal  bool // a FATAL error: the server is closing the connection
	cancel bool // deliver the cancel held back for the proxy's own statements
	// barrier: before this ReadyForQuery, deliver the client's own
	// notifications of the transaction it ends (see notify.go).
	barrier bool
}

// account updates the connection's state for one server message and says
// what the owner sees of it. Called with mu held.
func (sc *serverConn) account(typ byte, raw []byte) forward {
	body := raw[wire.HeaderLen:]
	out := forward{write: raw}
	switch typ {
	case wire.MsgParameterStatus:
		sc.noteParameter(body)
	case wire.MsgErrorResponse:
		out.fatal = wire.IsFatal(body)
	}
	// Inside an injected query everything up to its ReadyForQuery is ours.
	if e, ok := sc.replies.front(); ok && e.kind == wire.MsgReadyForQuery && e.swallow {
		switch typ {
		case wire.MsgErrorResponse:
			sc.resetFailed = true
			sc.pool.log.Warn("injected statement failed", "pid", sc.pid, "error", string(wire.ErrorField(body, wire.FieldMessage)))
		case wire.MsgReadyForQuery:
			sc.replies.pop()
			sc.noteReady(body)
			if sc.cancelPending && !sc.replies.empty() {
				if e, _ := sc.replies.front(); !(e.kind == wire.MsgReadyForQuery && e.swallow) {
					// The client's own request is next: now the cancel may go.
					sc.cancelPending = false
					sc.cancels++
					out.cancel = true
				}
			}
		}
		out.write = nil
		return out
	}
	if e, ok := sc.replies.front(); ok && e.kind == wire.MsgReadyForQuery && e.copyLoad {
		return sc.accountCopyLoad(typ, raw, out)
	}
	switch typ {
	case wire.MsgParseComplete, wire.MsgCloseComplete:
		e, ok := sc.replies.front()
		if !ok || e.kind != typ {
			// Desynchronised: we cannot know whose reply this is.
			sc.pool.log.Error("unexpected server reply", "type", string(typ), "pid", sc.pid)
			_ = sc.conn.Close()
			return forward{fatal: true}
		}
		sc.replies.pop()
		if typ == wire.MsgParseComplete && e.name != "" {
			if ps := sc.prepared[e.name]; ps != nil {
				ps.ready = true
			}
		}
		if e.swallow {
			out.write = nil
		}
	case wire.MsgErrorResponse:
		return sc.accountError(raw, out)
	case wire.MsgReadyForQuery:
		if e, ok := sc.replies.front(); ok && e.kind == wire.MsgReadyForQuery {
			out.prefix = e.prefix
			sc.replies.pop()
		}
		sc.noteReady(body)
		if s := sc.owner; s != nil {
			s.noteReady(sc)
			out.barrier = sc.tx == wire.TxIdle && s.notified.Load() && s.listening.Load()
		}
	case wire.MsgCommandComplete:
		sc.noteCommand(wire.CommandTag(body))
	}
	return out
}

// accountError handles an ErrorResponse outside injected queries.
func (sc *serverConn) accountError(raw []byte, out forward) forward {
	body := raw[wire.HeaderLen:]
	var replaced []byte
	if sc.replies.frontIs(wire.MsgErrorResponse) {
		// The failure provoked for a refused statement: our error instead.
		e, _ := sc.replies.front()
		replaced = e.prefix
		sc.replies.pop()
	}
	// The server skips to the next Sync: replies queued before it will not come.
	for {
		e, ok := sc.replies.front()
		if !ok || e.kind == wire.MsgReadyForQuery {
			break
		}
		if e.kind == wire.MsgParseComplete && e.name != "" {
			if ps := sc.prepared[e.name]; ps != nil && !ps.ready {
				delete(sc.prepared, e.name)
			}
		}
		sc.replies.pop()
	}
	if replaced != nil {
		out.write = replaced
		return out
	}
	if s := sc.owner; s != nil {
		s.noteError(body)
		if !s.t.ShowConstraintDetail && hidesDetail(body) {
			sc.scratch = wire.AppendWithoutField(sc.scratch[:0], raw, wire.FieldDetail)
			out.write = sc.scratch
		}
	}
	return out
}

func (sc *serverConn) noteReady(body []byte) {
	if len(body) > 0 {
		sc.tx = body[0]
	}
}

// noteParameter records a ParameterStatus, and passes it to the owner's
// tracked settings unless it comes from a query the proxy injected.
func (sc *serverConn) noteParameter(body []byte) {
	k, v, ok := wire.ParseParameterStatus(body)
	if !ok {
		return
	}
	sc.params[string(k)] = string(v)
	if i := trackedIndex(string(k)); i >= 0 {
		sc.settings.put(i, string(v))
	}
	if e, ok := sc.replies.front(); sc.owner != nil && (!ok || !e.swallow || e.kind != wire.MsgReadyForQuery) {
		sc.owner.noteParameter(string(k), string(v))
	}
}

// noteCommand tracks session-level state a command left on the connection,
// from its CommandComplete tag.
func (sc *serverConn) noteCommand(tag []byte) {
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
		sc.discard = true
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
	sc.boundTenant = ""
	for i, k := range trackedParams {
		if !k.reported {
			sc.settings.unset(i)
		}
	}
}

// hidesDetail reports whether an error's DETAIL can carry other tenants'
// values: unique and foreign-key violations quote the conflicting key.
func hidesDetail(body []byte) bool {
	c := wire.ErrorField(body, wire.FieldCode)
	return bytes.Equal(c, []byte(wire.CodeUniqueViolation)) || bytes.Equal(c, []byte(wire.CodeForeignKeyViolation))
}

// accountCopyLoad handles the replies to a COPY into a stage and the move
// that follows it in the same query: the COPY's CopyInResponse goes to the
// client, its CommandComplete waits to be delivered with the query's
// ReadyForQuery (so a failed move replaces it with its error), and the
// move's own rows and tag are the proxy's.
func (sc *serverConn) accountCopyLoad(typ byte, raw []byte, out forward) forward {
	switch typ {
	case wire.MsgCommandComplete:
		if !sc.copyHeld && bytes.HasPrefix(raw[wire.HeaderLen:], []byte("COPY ")) {
			sc.copyTag = append(sc.copyTag[:0], raw...)
			sc.copyHeld = true
		}
		out.write = nil
	case wire.MsgRowDescription, wire.MsgDataRow:
		out.write = nil
	case wire.MsgErrorResponse:
		sc.copyHeld = false
		return sc.accountError(raw, out)
	case wire.MsgReadyForQuery:
		sc.replies.pop()
		sc.noteReady(raw[wire.HeaderLen:])
		if sc.copyHeld {
			out.prefix = sc.copyTag
			sc.copyHeld = false
		}
		if sc.owner != nil {
			sc.owner.noteReady(sc)
		}
	}
	return out
}
