package pg

import (
	"time"

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
// client: its tracked settings and, with isolation on, its tenant binding.
// They run as one pipelined batch ahead of the client's first message, so
// they cost no round trip; the batch's replies are queued to be swallowed.
// Called with sc.mu held.
func (s *session) syncSession(sc *serverConn) {
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
	pairs = append(pairs, s.bindingPairs(sc, time.Now())...)
	if len(pairs) == 0 {
		return
	}
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
	sc.unnamedOwner = nil
	// Its replies are ours, up to and including the Sync's ReadyForQuery.
	sc.replies.push(reply{kind: wire.MsgReadyForQuery, swallow: true})
}
