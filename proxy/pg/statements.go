package pg

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"

	"github.com/tenantguard/tenantguard/proxy/pg/firewall"
	wire "github.com/tenantguard/tenantguard/wire/pg"
)

// Protocol-level prepared statements in transaction pooling.
//
// A client's named statements live in the client, not on any one server
// connection. Each is prepared on a server under a name derived from its
// text and parameter types ("_tg_<hash>"), so clients of one pool that
// prepare the same statement share it. Every statement name in a client
// message is looked up in that client's own map, so a client can reach only
// the statements it prepared. When a transaction lands on a connection that
// lacks a statement, the proxy pipelines a Parse ahead of the client's Bind or
// Describe and swallows its ParseComplete.

// serverStmtPrefix starts every server-side statement name the proxy makes.
const serverStmtPrefix = "_tg_"

// clientStmt is one statement a client prepared.
type clientStmt struct {
	serverName string
	parse      []byte            // the Parse message under serverName, ready to inject
	dirties    bool              // running it leaves session state behind
	class      firewall.Class    // the firewall's class, re-checked at every Bind
	verdict    *firewall.Verdict // the firewall's verdict (nil without isolation), for the result cache
	clock      clockScan         // whether its text mentions the clock (result cache)
}

// newClientStmt makes the statement a client prepares with rest (a Parse
// body after its name: the text and parameter types).
func newClientStmt(rest []byte, dirties bool, v *firewall.Verdict) *clientStmt {
	var class firewall.Class
	if v != nil {
		class = v.Class
	}
	sum := sha256.Sum256(rest)
	st := &clientStmt{serverName: serverStmtPrefix + hex.EncodeToString(sum[:12]), dirties: dirties, class: class, verdict: v}
	st.parse = wire.AppendNamed(nil, wire.MsgParse, nil, st.serverName, rest)
	return st
}

// rewrite registers one client message on sc (the replies it earns, the
// statements it needs) and returns the bytes to send for it; injected
// messages that must precede it are appended to s.out. Called with sc.mu
// held.
func (s *clientConn) rewrite(sc *serverConn, typ byte, raw []byte) []byte {
	body := raw[5:]
	switch typ {
	case wire.MsgParse, wire.MsgBind, wire.MsgDescribe, wire.MsgExecute, wire.MsgClose, wire.MsgFlush:
		// Until the Sync, the server owes this client replies.
		sc.unsynced = true
	}
	switch typ {
	case wire.MsgQuery:
		if s.leavesState(body) {
			sc.dirty = true
		}
		sc.replies.push(reply{kind: wire.MsgReadyForQuery, copyLoad: s.copyLoad})
		s.copyLoad = false
	case wire.MsgSync:
		sc.unsynced = false
		sc.replies.push(reply{kind: wire.MsgReadyForQuery})
	case wire.MsgParse:
		return s.rewriteParse(sc, raw)
	case wire.MsgBind:
		name, rest, ok := wire.CString(body)
		if !ok {
			return raw
		}
		stmt, rest2, ok := wire.CString(rest)
		if !ok {
			return raw
		}
		server := s.statementOn(sc, stmt)
		if st := s.stmts[string(stmt)]; st != nil && st.dirties {
			sc.dirty = true
		}
		return s.rebuild(wire.MsgBind, body[:len(name)+1], server, rest2) // portal name with its NUL
	case wire.MsgDescribe:
		if len(body) > 0 && body[0] == wire.TargetStatement {
			stmt, _, ok := wire.CString(body[1:])
			if ok {
				return s.rebuild(wire.MsgDescribe, body[:1], s.statementOn(sc, stmt), nil)
			}
		}
	case wire.MsgClose:
		sc.replies.push(reply{kind: wire.MsgCloseComplete})
		if len(body) > 0 && body[0] == wire.TargetStatement {
			stmt, _, ok := wire.CString(body[1:])
			if ok && len(stmt) > 0 {
				delete(s.stmts, string(stmt))
				// Closing a name that does not exist is not an error, and the
				// shared server statement stays for others: close nothing.
				return s.rebuild(wire.MsgClose, body[:1], serverStmtPrefix+"closed", nil)
			}
		}
	}
	return raw
}

// rewriteParse handles a client Parse.
func (s *clientConn) rewriteParse(sc *serverConn, raw []byte) []byte {
	body := raw[5:]
	name, rest, ok := wire.CString(body)
	if !ok {
		sc.replies.push(reply{kind: wire.MsgParseComplete})
		return raw // malformed: let the server say so
	}
	dirties := s.leavesState(rest)
	if dirties {
		// Marked now: it may run in this very batch.
		sc.dirty = true
	}
	var class firewall.Class
	if s.verdict != nil {
		class = s.verdict.Class
	}
	if len(name) == 0 {
		s.unnamedClass, s.unnamedVerdict = class, s.verdict
		s.unnamedParse = append(s.unnamedParse[:0], raw...)
		s.unnamedGen++
		sc.unnamedOwner, sc.unnamedGen = s, s.unnamedGen
		sc.replies.push(reply{kind: wire.MsgParseComplete})
		return raw
	}
	if st, dup := s.stmts[string(name)]; dup {
		// PostgreSQL answers 42P05; make sure the server has it so it does.
		s.ensurePrepared(sc, st)
		sc.replies.push(reply{kind: wire.MsgParseComplete})
		return st.parse
	}
	st := newClientStmt(rest, dirties, s.verdict)
	if s.stmts == nil {
		s.stmts = map[string]*clientStmt{}
	}
	s.stmts[string(name)] = st
	if ps := sc.prepared[st.serverName]; ps != nil {
		// Already there: the client still needs its ParseComplete, in order.
		// An empty unnamed Parse is the cheapest request that yields one.
		sc.clock(ps)
		sc.unnamedOwner = nil
		sc.replies.push(reply{kind: wire.MsgParseComplete})
		return wire.EmptyParse
	}
	s.evictFor(sc)
	sc.prepared[st.serverName] = &preparedState{used: sc.nextClock()}
	sc.replies.push(reply{kind: wire.MsgParseComplete, name: st.serverName})
	return st.parse
}

// statementOn returns the server-side name for a client statement name,
// preparing it on sc first if needed.
func (s *clientConn) statementOn(sc *serverConn, name []byte) string {
	if len(name) == 0 {
		if s.unnamedParse != nil && (sc.unnamedOwner != s || sc.unnamedGen != s.unnamedGen) {
			s.out = append(s.out, s.unnamedParse...)
			sc.unnamedOwner, sc.unnamedGen = s, s.unnamedGen
			sc.replies.push(reply{kind: wire.MsgParseComplete, swallow: true})
		}
		return ""
	}
	st, ok := s.stmts[string(name)]
	if !ok {
		if bytes.HasPrefix(name, []byte(serverStmtPrefix)) {
			return serverStmtPrefix + "missing"
		}
		return string(name) // the server reports it does not exist
	}
	s.ensurePrepared(sc, st)
	return st.serverName
}

func (s *clientConn) ensurePrepared(sc *serverConn, st *clientStmt) {
	if ps := sc.prepared[st.serverName]; ps != nil {
		sc.clock(ps)
		return
	}
	s.evictFor(sc)
	s.out = append(s.out, st.parse...)
	sc.prepared[st.serverName] = &preparedState{used: sc.nextClock()}
	sc.replies.push(reply{kind: wire.MsgParseComplete, swallow: true, name: st.serverName})
}

// evictFor closes the least recently used ready statement when sc is full.
func (s *clientConn) evictFor(sc *serverConn) {
	if len(sc.prepared) < s.pool.cfg.MaxPrepared {
		return
	}
	var victim string
	var oldest uint64 = ^uint64(0)
	for n, ps := range sc.prepared {
		if ps.ready && ps.used < oldest {
			victim, oldest = n, ps.used
		}
	}
	if victim == "" {
		return
	}
	delete(sc.prepared, victim)
	s.out = wire.AppendClose(s.out, wire.TargetStatement, victim)
	sc.replies.push(reply{kind: wire.MsgCloseComplete, swallow: true})
}

func (sc *serverConn) nextClock() uint64 { sc.useClock++; return sc.useClock }

func (sc *serverConn) clock(ps *preparedState) { ps.used = sc.nextClock() }

// rebuild writes a client message with its statement name replaced into
// the client's scratch message, valid until the next one.
func (s *clientConn) rebuild(typ byte, head []byte, name string, tail []byte) []byte {
	s.msg = wire.AppendNamed(s.msg[:0], typ, head, name, tail)
	return s.msg
}

// leavesState reports whether the message being handled leaves client
// state behind: the firewall's verdict when isolation is on, else a scan of
// the query text.
func (s *clientConn) leavesState(q []byte) bool {
	if s.verdict != nil {
		return s.verdict.SessionState
	}
	return leavesSessionState(q)
}

// leavesSessionState reports whether query text calls functions that leave
// session state no command tag reveals: session advisory locks and
// set_config(…, false). It errs on the side of a reset, which is cheap; the
// statement classifier on the PostgreSQL parser replaces it for policy.
func leavesSessionState(q []byte) bool {
	return containsFold(q, "advisory_lock") || containsFold(q, "set_config")
}

// containsFold is an ASCII case-insensitive bytes.Contains for a lower-case
// needle, without allocating.
func containsFold(s []byte, lower string) bool {
	n := len(lower)
	for i := 0; i+n <= len(s); i++ {
		j := 0
		for ; j < n; j++ {
			c := s[i+j]
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			if c != lower[j] {
				break
			}
		}
		if j == n {
			return true
		}
	}
	return false
}
