package redis

import (
	"github.com/tenantguard/tenantguard/proxy/redis/rules"
	"github.com/tenantguard/tenantguard/wire/resp"
)

// transform appends rep to dst, with the tenant's namespace taken off every
// key and channel name in it, as sl's plan says.
func (s *clientConn) transform(dst []byte, rep *resp.Reply, sl slot) []byte {
	if sl.plan.reply == rules.ReplyScriptLoad {
		return s.scriptLoaded(dst, rep, sl)
	}
	root := rep.Root()
	if t := root.Type(); t == resp.TypeSimpleError || t == resp.TypeBlobError || root.IsNull() {
		return append(dst, rep.Raw()...)
	}
	var edits []resp.Edit
	switch sl.plan.reply {
	case rules.ReplyPlain:
		return append(dst, rep.Raw()...)
	case rules.ReplyStripKeys:
		edits = s.stripEach(edits, root)
	case rules.ReplyStripScan:
		if root.Len() == 2 {
			edits = s.stripEach(edits, root.Index(1))
		}
	case rules.ReplyStripKeyAt0:
		if root.IsAggregate() && root.Len() >= 1 {
			edits = s.stripKey(edits, root.Index(0))
		}
	case rules.ReplyStripStreams:
		edits = s.stripStreams(edits, root)
	case rules.ReplyPubSub:
		edits = s.stripPubSub(edits, root)
	case rules.ReplyStripChannels:
		for it := root.Iter(); it.Next(); {
			edits = s.stripChannel(edits, it.Value())
		}
	case rules.ReplyStripNumSub:
		for i := 0; i < root.Len(); i += 2 { // RESP2 [ch, n, …] and RESP3 maps alike
			edits = s.stripChannel(edits, root.Index(i))
		}
	case rules.ReplyExec:
		return s.transformExec(dst, rep, sl)
	}
	if len(edits) == 0 {
		return append(dst, rep.Raw()...)
	}
	out, err := rep.AppendEdited(dst, edits)
	if err != nil {
		return append(dst, s.upstreamFailure(msgRewriteFailed, err)...)
	}
	return out
}

// stripEach strips the namespace from every element of an array of keys.
func (s *clientConn) stripEach(edits []resp.Edit, v resp.Value) []resp.Edit {
	if !v.IsAggregate() {
		return edits
	}
	for it := v.Iter(); it.Next(); {
		edits = s.stripKey(edits, it.Value())
	}
	return edits
}

func (s *clientConn) stripKey(edits []resp.Edit, v resp.Value) []resp.Edit {
	if v.IsAggregate() || v.IsNull() {
		return edits
	}
	k, ok := s.ns.StripKey(v.Bytes())
	if !ok {
		// Not ours: never show another namespace's name.
		k = nil
	}
	return append(edits, resp.Edit{At: v, Data: k})
}

func (s *clientConn) stripChannel(edits []resp.Edit, v resp.Value) []resp.Edit {
	if v.IsAggregate() || v.IsNull() {
		return edits
	}
	// Keyspace-notification names keep their header and lose the key prefix.
	c, ok := s.ns.AppendStripChannel(nil, v.Bytes())
	if !ok {
		c = nil
	}
	return append(edits, resp.Edit{At: v, Data: c})
}

// stripStreams handles XREAD replies: RESP2 [[name, entries], …], RESP3 a
// map name → entries.
func (s *clientConn) stripStreams(edits []resp.Edit, root resp.Value) []resp.Edit {
	if root.Type() == resp.TypeMap {
		for i := 0; i < root.Len(); i += 2 {
			edits = s.stripKey(edits, root.Index(i))
		}
		return edits
	}
	for it := root.Iter(); it.Next(); {
		if e := it.Value(); e.IsAggregate() && e.Len() >= 1 {
			edits = s.stripKey(edits, e.Index(0))
		}
	}
	return edits
}

// stripPubSub rewrites subscribe confirmations and messages:
// [kind, channel, …] and [pmessage, pattern, channel, payload].
func (s *clientConn) stripPubSub(edits []resp.Edit, root resp.Value) []resp.Edit {
	if !root.IsAggregate() || root.Len() < 2 {
		return edits
	}
	kind := string(root.Index(0).Bytes())
	switch kind {
	case "pmessage":
		if root.Len() >= 3 {
			edits = s.stripChannel(edits, root.Index(1))
			edits = s.stripChannel(edits, root.Index(2))
		}
	case "message", "smessage", "subscribe", "unsubscribe", "ssubscribe", "sunsubscribe", "psubscribe", "punsubscribe":
		edits = s.stripChannel(edits, root.Index(1))
	}
	return edits
}

// isPushMessage reports whether a reply on a dedicated connection is an
// out-of-band pub/sub message rather than the answer to a command.
func (s *clientConn) isPushMessage(rep *resp.Reply) bool {
	return isPubSubMessage(rep) || isInvalidation(rep)
}

// deliverPush writes an out-of-band pub/sub message or tracking
// invalidation, in arrival order.
func (s *clientConn) deliverPush(rep *resp.Reply) {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	if !s.reserve(len(rep.Raw()) + 64) {
		return
	}
	if isInvalidation(rep) {
		s.out = s.appendInvalidation(s.out, rep)
		return
	}
	s.out = s.transform(s.out, rep, slot{plan: plan{reply: rules.ReplyPubSub}})
}

// transformExec rewrites EXEC's array element by element with the plans of
// the queued commands.
func (s *clientConn) transformExec(dst []byte, rep *resp.Reply, sl slot) []byte {
	root := rep.Root()
	if !root.IsAggregate() || root.Len() != len(sl.multi) {
		return append(dst, rep.Raw()...)
	}
	var edits []resp.Edit
	for i, p := range sl.multi {
		v := root.Index(i)
		switch p.reply {
		case rules.ReplyStripKeys:
			edits = s.stripEach(edits, v)
		case rules.ReplyStripScan:
			if v.IsAggregate() && v.Len() == 2 {
				edits = s.stripEach(edits, v.Index(1))
			}
		case rules.ReplyStripKeyAt0:
			if v.IsAggregate() && v.Len() >= 1 {
				edits = s.stripKey(edits, v.Index(0))
			}
		case rules.ReplyStripStreams:
			if v.IsAggregate() {
				edits = s.stripStreams(edits, v)
			}
		case rules.ReplyStripChannels:
			if v.IsAggregate() {
				for it := v.Iter(); it.Next(); {
					edits = s.stripChannel(edits, it.Value())
				}
			}
		}
	}
	if len(edits) == 0 {
		return append(dst, rep.Raw()...)
	}
	out, err := rep.AppendEdited(dst, edits)
	if err != nil {
		return append(dst, s.upstreamFailure(msgRewriteFailed, err)...)
	}
	return out
}
