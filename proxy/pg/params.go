package pg

import (
	"time"

	wire "github.com/tenantguard/tenantguard/wire/pg"
)

// paramSpec is a setting the proxy keeps per client and replays onto
// whichever server connection serves it, as PgBouncer's track_extra_parameters.
type paramSpec struct {
	name     string
	reported bool // the server sends ParameterStatus when it changes (GUC_REPORT)
}

// trackedParams are the settings a client may give in its startup packet.
var trackedParams = [...]paramSpec{
	{"application_name", true},
	{"DateStyle", true},
	{"IntervalStyle", true},
	{"TimeZone", true},
	{"extra_float_digits", false},
}

// trackedIndex is the position of a tracked setting in trackedParams, or -1.
func trackedIndex(name string) int {
	for i := range trackedParams {
		if trackedParams[i].name == name {
			return i
		}
	}
	return -1
}

// clientSettings are a client's values of the tracked settings, by
// position in trackedParams (a fixed array: no map per client).
type clientSettings struct {
	val [len(trackedParams)]string
	set [len(trackedParams)]bool
}

func (c *clientSettings) get(i int) (string, bool) { return c.val[i], c.set[i] }

func (c *clientSettings) put(i int, v string) { c.val[i], c.set[i] = v, true }

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
