package pg

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantguard/tenantguard/policy"
	"github.com/tenantguard/tenantguard/proxy/pg/firewall"
	"github.com/tenantguard/tenantguard/proxy/pg/rls"
	wire "github.com/tenantguard/tenantguard/wire/pg"
)

// refusedSQL fails at parse analysis with no side effect. The proxy sends it
// in place of a refused statement while a server connection is attached, so
// the server aborts the transaction and skips to the next Sync exactly as it
// would for a real error; the error it returns is replaced by the proxy's.
const refusedSQL = "SELECT tenantguard_statement_refused"

// screenMessage runs a Query or Parse through the firewall and the
// tenant's permissions, and re-checks a Bind's permissions. It returns the
// message to go on with (raw, or raw with its notification channels
// namespaced), and reports whether the client has been answered instead
// (a refusal, or a LISTEN the proxy ran).
func (s *clientConn) screenMessage(typ byte, raw []byte) ([]byte, bool, error) {
	s.verdict = nil
	switch {
	case typ == wire.MsgQuery || typ == wire.MsgParse:
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
			return raw, true, s.refuseStatement(typ, refused)
		}
		s.verdict = v
		if v != nil && (v.Listen || v.Notify) {
			return s.listenOrNotify(typ, raw, v)
		}
		if v != nil && v.CopyFrom {
			return s.copyFrom(typ, raw)
		}
	case typ == wire.MsgBind && s.srv.fw != nil:
		if rule, refused := s.screenBind(raw); refused != nil {
			if s.lease != nil {
				s.lease.Record(0, rule)
			}
			return raw, true, s.refuseStatement(typ, refused)
		}
	}
	return raw, false, nil
}

// listenOrNotify handles LISTEN, UNLISTEN and NOTIFY (see notify.go): a
// simple-protocol LISTEN is answered here; in a Parse it runs here and a
// no-op takes its place upstream; NOTIFY and pg_notify are rewritten onto
// the tenant's namespaced channel.
func (s *clientConn) listenOrNotify(typ byte, raw []byte, v *firewall.Verdict) ([]byte, bool, error) {
	body := raw[wire.HeaderLen:]
	var name []byte
	if typ == wire.MsgParse {
		name, body, _ = wire.CString(body)
	}
	text, tail, _ := wire.CString(body)
	if v.Listen {
		if typ == wire.MsgQuery {
			return raw, true, s.answerListen(raw)
		}
		if out := s.applyListen(string(text), false); len(out) > 0 {
			return raw, true, s.refuseStatement(typ, &wire.Error{Severity: "ERROR", Code: wire.ErrorCode(out), Message: wire.ErrorMessage(out)})
		}
		s.msg = wire.AppendNamed(s.msg[:0], wire.MsgParse, nil, string(name), append([]byte(listenNoop+"\x00"), tail...))
		return s.msg, false, nil
	}
	s.notified.Store(true)
	sql, err := firewall.NamespaceNotify(string(text), channelPrefix(s.tenant))
	if err != nil {
		return raw, true, s.refuseStatement(typ, wire.Errorf(wire.CodeSyntaxError, "%v", err))
	}
	if typ == wire.MsgQuery {
		s.msg = wire.AppendQuery(s.msg[:0], sql)
	} else {
		s.msg = wire.AppendNamed(s.msg[:0], wire.MsgParse, nil, string(name), append([]byte(sql+"\x00"), tail...))
	}
	return s.msg, false, nil
}

// screen runs a Query's or Parse's text through the firewall and the
// tenant's permissions. It returns the verdict (nil if the message could not
// be read) and, for a refused statement, the refusing rule and the error to
// send.
func (s *clientConn) screen(typ byte, raw []byte) (*firewall.Verdict, string, *wire.Error) {
	body := raw[wire.HeaderLen:]
	if typ == wire.MsgParse {
		_, rest, ok := wire.CString(body)
		if !ok {
			return nil, "", wire.Errorf(wire.CodeProtocolViolation, "malformed Parse message")
		}
		body = rest
	}
	text, _, ok := wire.CString(body)
	if !ok {
		return nil, "", wire.Errorf(wire.CodeProtocolViolation, "malformed query message")
	}
	v := s.srv.fw.Check(string(text))
	if v.Syntax {
		return v, "", wire.Errorf(wire.CodeSyntaxError, "%s", v.Reason)
	}
	if v.Refused() {
		s.srv.metrics.refusals.WithLabelValues(s.label, v.Rule).Inc()
		return v, v.Rule, refusal(v.Rule, v.Reason)
	}
	rule, reason := "", ""
	switch {
	case !s.permits(v.Class):
		rule, reason = "permissions", s.notPermitted(v.Class)
	case s.mode == PoolTransaction && v.SQLPrepare:
		rule, reason = "transaction-pooling", "SQL PREPARE is not supported in transaction pooling: its statement would outlive the transaction; use protocol-level prepared statements (your driver's Prepare)"
	case s.mode == PoolTransaction && v.HoldCursor:
		rule, reason = "transaction-pooling", "DECLARE … WITH HOLD is not supported in transaction pooling: the cursor would outlive the transaction"
	case v.SetsStatementTimeout && s.t.Limits.StatementTimeout > 0:
		rule, reason = "statement-timeout", fmt.Sprintf("statement_timeout is fixed at %s for tenant %q", s.t.Limits.StatementTimeout, s.tenant)
	default:
		return v, "", nil
	}
	s.srv.metrics.refusals.WithLabelValues(s.label, rule).Inc()
	return v, rule, refusal(rule, reason)
}

// permits reports whether the tenant's current permissions allow a
// statement of class c.
func (s *clientConn) permits(c firewall.Class) bool {
	a := s.t.Allow
	return !(c&firewall.Read != 0 && !a.Read || c&firewall.Write != 0 && !a.Write || c&firewall.DDL != 0 && !a.DDL)
}

func (s *clientConn) notPermitted(c firewall.Class) string {
	return fmt.Sprintf("tenant %q may not run %s statements", s.tenant, c)
}

// screenBind re-checks, at Bind, the permissions of the statement being
// bound: a statement prepared under a policy that allowed it must not run
// after a push that no longer does. The firewall's other rules do not
// depend on the policy, so the class is all that needs checking.
func (s *clientConn) screenBind(raw []byte) (string, *wire.Error) {
	_, rest, ok := wire.CString(raw[wire.HeaderLen:])
	if !ok {
		return "", nil // the server reports the malformed Bind
	}
	name, _, ok := wire.CString(rest)
	if !ok {
		return "", nil
	}
	class := s.unnamedClass
	if len(name) > 0 {
		st := s.stmts[string(name)]
		if st == nil {
			return "", nil // the server reports the unknown statement
		}
		class = st.class
	}
	if s.permits(class) {
		return "", nil
	}
	s.srv.metrics.refusals.WithLabelValues(s.label, "permissions").Inc()
	return "permissions", refusal("permissions", s.notPermitted(class))
}

func refusal(rule, reason string) *wire.Error {
	return &wire.Error{Severity: "ERROR", Code: wire.CodeInsufficientPrivilege,
		Message: "tenantguard refused the statement (rule " + rule + "): " + reason}
}

// refuseStatement answers a refused Query or Parse. Without a server
// connection the reply is immediate; with one, replies may be owed, so a
// statement that fails is sent in its place and its error replaced by ours,
// keeping order and the transaction's state exactly as PostgreSQL would.
func (s *clientConn) refuseStatement(typ byte, e *wire.Error) error {
	s.noteProxyError(e.Code)
	if sc := s.sc.Load(); sc != nil && s.queue(sc, reply{kind: wire.MsgErrorResponse, prefix: e.AppendTo(nil)}) {
		sc.mu.Lock()
		if typ == wire.MsgQuery {
			s.msg = wire.AppendQuery(s.msg[:0], refusedSQL)
			sc.replies.push(reply{kind: wire.MsgReadyForQuery})
		} else {
			s.msg = wire.AppendParse(s.msg[:0], "", refusedSQL)
			sc.unnamedOwner = nil
			sc.unsynced = true
		}
		sc.mu.Unlock()
		return s.send(sc, s.msg)
	}
	s.writeError(e)
	if typ == wire.MsgQuery {
		s.writeReady(wire.TxIdle)
	} else {
		s.skipUntilSync = true
	}
	return nil
}

// bindingArgs returns the parameters of rls.BindSQL that bind sc's backend
// to the client's tenant when sc is not bound to it (switching is then
// true), or its binding is half its maximum age; nil when sc is bound.
// Successive bindings of one backend are at least a microsecond apart: the
// database refuses one that is not newer than the last. Called with sc.mu
// held.
func (s *clientConn) bindingArgs(sc *serverConn, now time.Time) (args []string, switching bool) {
	b := s.srv.cfg.Binder
	if b == nil || sc.boundTenant == s.tenant && now.Sub(sc.boundAt) < b.MaxAge()/2 {
		return nil, false
	}
	switching = sc.boundTenant != s.tenant
	if now.UnixMicro() <= sc.boundAt.UnixMicro() {
		now = time.UnixMicro(sc.boundAt.UnixMicro() + 1)
	}
	sc.boundTenant, sc.boundAt = s.tenant, now
	_, args = b.Statement(s.tenant, sc.pid, now)
	return args, switching
}

// CheckIsolation audits every upstream as its pool's role sees it. The
// sidecar refuses to serve when it reports problems.
func (srv *Server) CheckIsolation(ctx context.Context) ([]string, error) {
	return srv.CheckPolicy(ctx, srv.policy.Load())
}

// CheckPolicy audits every upstream against snap, a policy not yet in
// force: before a pushed policy is swapped in, its tables must be
// row-isolated upstream (nil, nil when isolation is off), on the
// configured upstream and on every PostgreSQL cluster snap names.
func (srv *Server) CheckPolicy(ctx context.Context, snap *policy.Snapshot) ([]string, error) {
	if srv.cfg.Binder == nil {
		return nil, nil
	}
	ups, err := srv.upstreamsOf(snap)
	if err != nil {
		return nil, err
	}
	var warnings []string
	for _, p := range ups {
		cc, err := pgx.ParseConfig("")
		if err != nil {
			return nil, err
		}
		cc.Config = *p.conf.Copy()
		c, err := pgx.ConnectConfig(ctx, cc)
		if err != nil {
			return nil, fmt.Errorf("isolation check: connect %s: %w", p.key, err)
		}
		rep, err := rls.Check(ctx, c, snap, srv.cfg.Binder)
		c.Close(ctx)
		if err != nil {
			return nil, fmt.Errorf("isolation check on %s: %w", p.key, err)
		}
		for _, w := range rep.Warnings {
			warnings = append(warnings, p.key+": "+w)
		}
		if !rep.OK() {
			return warnings, fmt.Errorf("%s: %w", p.key, rep)
		}
	}
	return warnings, nil
}
