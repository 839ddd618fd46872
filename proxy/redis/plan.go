package redis

import (
	"errors"

	"github.com/tenantguard/tenantguard/proxy/redis/keyspec"
	"github.com/tenantguard/tenantguard/proxy/redis/rules"
	"github.com/tenantguard/tenantguard/wire/resp"
)

// plan is what the client must do with one forwarded command.
type plan struct {
	reply     rules.Plan // how to rewrite the reply
	replies   int        // replies it produces (pub/sub: one per channel)
	dedicated bool       // needs connection state: run on the client's own upstream connection
	multi     bool       // MULTI: queue plans until EXEC
	discard   bool       // DISCARD: forget the queued plans
	script    bool       // run on the tenant's script connection (scripts.go)
	sha       [20]byte   // SCRIPT LOAD: the SHA1 the client knows the script by
	near      *upConn    // run on the near cache's fill connection (nearcache_client.go)
	fill      *fillToken // there, the cache miss its reply completes
	slot      int32      // cluster upstream: the slot of the keys, or noSlot
	watch     int8       // watchOn (WATCH), watchOff (EXEC, DISCARD, UNWATCH): a cluster keeps the node, placement the upstream
	drop      bool       // cluster upstream: a held MULTI's reply, answered already
}

const (
	watchOn  = 1
	watchOff = -1
)

// refusal is a command answered with an error instead of being forwarded.
type refusal struct {
	msg    string // RESP error text without '-'
	rule   string // metrics label
	noperm bool   // refused by a rule (-NOPERM), not an error of the command
}

// prepare runs a command through the tenant's rules and returns the bytes
// to send upstream and the plan, or the refusal. cmd and lerr are what
// keyspec.Lookup(args) returned.
func (s *clientConn) prepare(args [][]byte, cmd *keyspec.Command, lerr error) ([]byte, plan, rules.Plan, *refusal) {
	// One atomic load per command: rebuild the rewriter only when
	// SetCommandRules swapped the rules since the last command.
	if pol := s.srv.rulesPolicy.Load(); pol != s.rwPol {
		s.rwPol = pol
		s.rw = rules.NewRewriter(s.ns, pol)
	}
	var (
		out [][]byte
		rp  rules.Plan
		err = lerr
	)
	if err == nil {
		out, rp, err = s.rw.RewriteCommand(cmd, args)
	}
	if err != nil {
		var re *rules.Error
		var ke *keyspec.Error
		var ae rules.ArgError
		switch {
		case errors.As(err, &re):
			return nil, plan{}, 0, &refusal{msg: re.Error(), rule: re.Rule, noperm: true}
		case errors.As(err, &ke):
			return nil, plan{}, 0, &refusal{msg: ke.Error(), rule: "invalid"}
		case errors.As(err, &ae):
			return nil, plan{}, 0, &refusal{msg: ae.Error(), rule: "invalid"}
		default:
			return nil, plan{}, 0, &refusal{msg: "ERR syntax error", rule: "syntax"}
		}
	}
	if !rp.Forward() {
		s.clusterOut = out
		return nil, plan{}, rp, nil
	}
	p := plan{reply: rp, replies: 1}
	switch rp {
	case rules.ReplyScript, rules.ReplyScriptSha, rules.ReplyScriptLoad:
		var ref *refusal
		if out, ref = s.prepareScript(args, out, &p); ref != nil {
			return nil, plan{}, 0, ref
		}
	}
	p.dedicated = needsOwnConn(cmd)
	if s.be.cluster != nil {
		slot, ok := s.clusterSlot(cmd, out)
		if !ok {
			return nil, plan{}, 0, &refusal{msg: msgCrossSlot, rule: "crossslot"}
		}
		p.slot = slot
		s.clusterOut = out
	}
	switch cmd.Name {
	case "watch":
		p.watch = watchOn
	case "unwatch", "exec", "discard":
		p.watch = watchOff
	}
	switch cmd.Name {
	case "multi":
		p.multi = true
	case "discard":
		p.discard = true
	case "subscribe", "psubscribe", "ssubscribe":
		p.replies = len(args) - 1
		s.subscribed(cmd.Name, len(args)-1)
	case "unsubscribe", "punsubscribe", "sunsubscribe":
		p.replies = s.unsubscribed(cmd.Name, len(args)-1)
	}
	s.cmdBuf = resp.AppendCommand(s.cmdBuf[:0], out)
	return s.cmdBuf, p, rp, nil
}

// needsOwnConn reports whether a command needs connection state, and so a
// dedicated upstream connection: transactions, pub/sub, blocking commands.
func needsOwnConn(cmd *keyspec.Command) bool {
	switch cmd.Name {
	case "multi", "watch", "unwatch", "exec", "discard",
		"subscribe", "psubscribe", "ssubscribe", "unsubscribe", "punsubscribe", "sunsubscribe":
		return true
	}
	return cmd.Flags.Has(keyspec.FlagBlocking)
}

// subKind groups (un)subscribe commands by what they subscribe to.
func subKind(name string) string {
	switch name {
	case "psubscribe", "punsubscribe":
		return "pattern"
	case "ssubscribe", "sunsubscribe":
		return "shard"
	}
	return "channel"
}

// subscribed counts subscriptions, to know how many confirmations a later
// argument-less UNSUBSCRIBE produces.
func (s *clientConn) subscribed(name string, n int) {
	if s.subs == nil {
		s.subs = map[string]int{}
	}
	s.subs[subKind(name)] += n
}

// subscribedAny reports whether any subscription is left.
func subscribedAny(subs map[string]int) bool {
	for _, n := range subs {
		if n > 0 {
			return true
		}
	}
	return false
}

// unsubscribed returns how many confirmations an unsubscribe of n names
// (0: all) produces: one per name, or one per subscription, at least one.
func (s *clientConn) unsubscribed(name string, n int) int {
	k := subKind(name)
	if n == 0 {
		n = max(s.subs[k], 1)
		delete(s.subs, k)
		return n
	}
	if s.subs != nil {
		s.subs[k] = max(s.subs[k]-n, 0)
	}
	return n
}
