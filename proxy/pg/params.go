package pg

import (
	"time"

	"github.com/tenantguard/tenantguard/proxy/pg/rls"
	wire "github.com/tenantguard/tenantguard/wire/pg"
)

// clientSettings are values of the tracked settings, by position in
// trackedParams (a fixed array: no map per client): a client's, or what a
// server connection is known to have.
type clientSettings struct {
	val [len(trackedParams)]string
	set [len(trackedParams)]bool
}

func (c *clientSettings) get(i int) (string, bool) { return c.val[i], c.set[i] }

func (c *clientSettings) put(i int, v string) { c.val[i], c.set[i] = v, true }

func (c *clientSettings) unset(i int) { c.val[i], c.set[i] = "", false }

// setConfigSQL sets one setting, or resets it to the server default when $2 is NULL.
const setConfigSQL = "SELECT pg_catalog.set_config($1, coalesce($2, (SELECT reset_val FROM pg_catalog.pg_settings WHERE name = $1)), false)"

// settingPair is one setting to apply on a server connection; set=false
// resets it to the server's default.
type settingPair struct {
	name, value string
	set         bool
}

// syncSession appends to s.out the statements that bring sc to this
// client: its tracked settings (the tenant's statement_timeout cap among
// them) and, with isolation on, the tenant binding. They are pipelined
// ahead of the client's first message, so they cost no round trip, and
// their replies are swallowed: each segment's ReadyForQuery is queued here
// as the proxy's. Called with sc.mu held.
func (s *clientConn) syncSession(sc *serverConn) {
	if sc.resetFailed {
		// A statement the proxy injected failed since the last reset: a
		// binding the database rejected or that was cancelled (which left
		// the backend bound to no tenant), or settings rolled back. Send
		// everything again.
		sc.resetFailed = false
		sc.forgetSession()
		delete(sc.prepared, bindStatement)
	}
	var pairs []settingPair
	s.pmu.Lock()
	for i, p := range trackedParams {
		want, set := s.params.get(i)
		if i == statementTimeout {
			want = cappedTimeout(want, set, s.t.Limits.StatementTimeout)
			set = want != ""
		}
		have, known := sc.settings.get(i)
		if p.reported {
			if known && have == want {
				continue
			}
			set = true // reported settings always have a value: the client's, or the default it was told
		} else if set == known && have == want {
			continue
		}
		pairs = append(pairs, settingPair{name: p.name, value: want, set: set})
		if set {
			sc.settings.put(i, want)
		} else {
			sc.settings.unset(i)
		}
	}
	s.pmu.Unlock()
	if len(pairs) > 0 {
		s.out = wire.AppendParse(s.out, "", setConfigSQL)
		for _, p := range pairs {
			name := p.name
			if p.set {
				v := p.value
				s.out = wire.AppendBindText(s.out, "", &name, &v)
			} else {
				s.out = wire.AppendBindText(s.out, "", &name, nil)
			}
			s.out = wire.AppendExecute(s.out)
		}
		s.out = append(s.out, wire.SyncMessage...)
		sc.replies.push(reply{kind: wire.MsgReadyForQuery, swallow: true})
	}
	if bind, switching := s.bindingArgs(sc, time.Now()); bind != nil {
		// A transaction of its own: a rejected binding raises an error,
		// which must not roll back the settings.
		if switching {
			// Unbind with a statement that needs no privilege and is not
			// undone by a rollback: should the bind not run at all (its
			// function dropped, EXECUTE revoked, the statement gone), the
			// backend is bound to no tenant, not to the previous one.
			// (A refresh for the same tenant skips it: it would also drop
			// a session-pooled client's own currval.)
			s.out = wire.AppendParse(s.out, "", unbindSQL)
			s.out = wire.AppendBindText(s.out, "")
			s.out = wire.AppendExecute(s.out)
		}
		// The statement is prepared once per server connection (parsing
		// it costs a third of a bind); the Close ahead of a Parse covers a
		// batch that failed after preparing it (closing a missing
		// statement is not an error).
		ps := sc.prepared[bindStatement]
		if ps == nil {
			s.out = wire.AppendClose(s.out, wire.TargetStatement, bindStatement)
			s.out = wire.AppendParse(s.out, bindStatement, rls.BindSQL)
			ps = &preparedState{ready: true}
			sc.prepared[bindStatement] = ps
		}
		sc.clock(ps)
		s.out = appendBindArgs(s.out, bindStatement, bind)
		s.out = wire.AppendExecute(s.out)
		s.out = append(s.out, wire.SyncMessage...)
		sc.replies.push(reply{kind: wire.MsgReadyForQuery, swallow: true})
	}
	if len(s.out) > 0 {
		sc.unnamedOwner = nil
	}
}

// unbindSQL drops the client's sequence values, the tenant binding's
// register among them (see package rls).
const unbindSQL = "DISCARD SEQUENCES"

// bindStatement is the server-side name of rls.BindSQL. Clients cannot
// reach it: their statement names map to "_tg_<hash>" or to nothing.
const bindStatement = serverStmtPrefix + "bind"

// appendBindArgs binds the unnamed portal to statement stmt with text
// parameters.
func appendBindArgs(dst []byte, stmt string, params []string) []byte {
	ptrs := make([]*string, len(params))
	for i := range params {
		ptrs[i] = &params[i]
	}
	return wire.AppendBindText(dst, stmt, ptrs...)
}
