package pg

import (
	"encoding/binary"
	"time"

	"github.com/tenantguard/tenantguard/proxy/pg/rls"
)

// paramSpec is a setting the proxy keeps per client and replays onto
// whichever server connection serves it, as PgBouncer's track_extra_parameters.
type paramSpec struct {
	name     string
	reported bool // the server sends ParameterStatus when it changes (GUC_REPORT)
}

// trackedParams are the settings a client may give in its startup packet.
var trackedParams = []paramSpec{
	{"application_name", true},
	{"DateStyle", true},
	{"IntervalStyle", true},
	{"TimeZone", true},
	{"extra_float_digits", false},
}

func trackedParam(name string) *paramSpec {
	for i := range trackedParams {
		if trackedParams[i].name == name {
			return &trackedParams[i]
		}
	}
	return nil
}

// setConfigSQL sets one setting, or resets it to the server default when $2 is NULL.
const setConfigSQL = "SELECT pg_catalog.set_config($1, coalesce($2, (SELECT reset_val FROM pg_catalog.pg_settings WHERE name = $1)), false)"

// settingPair is one setting to apply on a server connection; set=false
// resets it to the server's default.
type settingPair struct {
	name, value string
	set         bool
}

// syncSession appends to s.out the statements that bring sc to this
// client: its tracked settings and, with isolation on, its tenant's
// statement timeout and the tenant binding. They are pipelined ahead of
// the client's first message, so they cost no round trip, and their
// replies are swallowed: the caller expects one ReadyForQuery for the
// batch, and a binding adds a second. Called with sc.mu held.
func (s *session) syncSession(sc *serverConn) {
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
	for _, p := range trackedParams {
		want, set := s.params[p.name]
		have, known := sc.params[p.name]
		if p.reported {
			if known && have == want {
				continue
			}
		} else if set == known && have == want {
			continue
		}
		pairs = append(pairs, settingPair{name: p.name, value: want, set: set || p.reported})
		if set || p.reported {
			sc.params[p.name] = want
		} else {
			delete(sc.params, p.name)
		}
	}
	s.pmu.Unlock()
	pairs = append(pairs, s.bindingPairs(sc)...)
	bind, switching := s.bindingArgs(sc, time.Now())
	if len(pairs) > 0 {
		s.out = appendParse(s.out, "", setConfigSQL)
		for _, p := range pairs {
			if p.set {
				v := p.value
				s.out = appendBind2(s.out, p.name, &v)
			} else {
				s.out = appendBind2(s.out, p.name, nil)
			}
			s.out = append(s.out, 'E', 0, 0, 0, 9, 0, 0, 0, 0, 0)
		}
		s.out = append(s.out, 'S', 0, 0, 0, 4)
		if bind != nil {
			sc.expect = append(sc.expect, expectation{kind: 'Z', swallow: true})
		}
	}
	if bind != nil {
		// A transaction of its own: a rejected binding raises an error,
		// which must not roll back the settings.
		if switching {
			// Unbind with a statement that needs no privilege and is not
			// undone by a rollback: should the bind not run at all (its
			// function dropped, EXECUTE revoked, the statement gone), the
			// backend is bound to no tenant, not to the previous one.
			// (A refresh for the same tenant skips it: it would also drop
			// a session-pooled client's own currval.)
			s.out = appendParse(s.out, "", unbindSQL)
			s.out = appendBindText(s.out, "", nil)
			s.out = append(s.out, 'E', 0, 0, 0, 9, 0, 0, 0, 0, 0)
		}
		// The statement is prepared once per server connection (parsing
		// it costs a third of a bind); the Close ahead of a Parse covers a
		// batch that failed after preparing it (closing a missing
		// statement is not an error).
		ps := sc.prepared[bindStatement]
		if ps == nil {
			s.out = appendClose(s.out, 'S', bindStatement)
			s.out = appendParse(s.out, bindStatement, rls.BindSQL)
			ps = &preparedState{ready: true}
			sc.prepared[bindStatement] = ps
		}
		sc.clock(ps)
		s.out = appendBindText(s.out, bindStatement, bind)
		s.out = append(s.out, 'E', 0, 0, 0, 9, 0, 0, 0, 0, 0)
		s.out = append(s.out, 'S', 0, 0, 0, 4)
	}
	if len(s.out) > 0 {
		sc.unnamedOwner = nil
	}
}

func appendParse(dst []byte, name, query string) []byte {
	dst = append(dst, 'P')
	dst = binary.BigEndian.AppendUint32(dst, uint32(4+len(name)+1+len(query)+1+2))
	dst = append(dst, name...)
	dst = append(dst, 0)
	dst = append(dst, query...)
	return append(dst, 0, 0, 0)
}

// appendBind2 binds the unnamed statement with two text parameters; a nil
// second parameter is NULL.
func appendBind2(dst []byte, p1 string, p2 *string) []byte {
	n := 4 + 1 + 1 + 2 + 2 + 4 + len(p1) + 4 + 2
	if p2 != nil {
		n += len(*p2)
	}
	dst = append(dst, 'B')
	dst = binary.BigEndian.AppendUint32(dst, uint32(n))
	dst = append(dst, 0, 0, 0, 0, 0, 2)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(p1)))
	dst = append(dst, p1...)
	if p2 == nil {
		dst = binary.BigEndian.AppendUint32(dst, 0xFFFFFFFF)
	} else {
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(*p2)))
		dst = append(dst, *p2...)
	}
	return append(dst, 0, 0)
}

// unbindSQL drops the session's sequence values, the tenant binding's
// register among them (see package rls).
const unbindSQL = "DISCARD SEQUENCES"

// bindStatement is the server-side name of rls.BindSQL. Clients cannot
// reach it: their statement names map to "_tg_<hash>" or to nothing.
const bindStatement = serverStmtPrefix + "bind"

// appendBindText binds the unnamed portal to statement stmt with text
// parameters.
func appendBindText(dst []byte, stmt string, params []string) []byte {
	n := 4 + 1 + len(stmt) + 1 + 2 + 2 + 2
	for _, p := range params {
		n += 4 + len(p)
	}
	dst = append(dst, 'B')
	dst = binary.BigEndian.AppendUint32(dst, uint32(n))
	dst = append(dst, 0)
	dst = append(dst, stmt...)
	dst = append(dst, 0, 0, 0)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(params)))
	for _, p := range params {
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(p)))
		dst = append(dst, p...)
	}
	return append(dst, 0, 0)
}
