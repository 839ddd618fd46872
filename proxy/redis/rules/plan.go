package rules

// Plan tells the session what to do with a command Rewrite accepted: to
// forward the rewritten arguments and how to fix the reply, or how to
// answer without forwarding. Inside MULTI the session records each queued
// command's plan and applies it to that command's element of EXEC's reply.
type Plan uint8

// The plans. Names in replies that do not carry the tenant's prefix must
// be dropped, never shown unstripped.
const (
	// ReplyPlain: forward; the reply holds no key or channel names.
	ReplyPlain Plan = iota
	// ReplyStripKeys: forward; the reply is an array of keys (KEYS), each
	// to strip with Namespace.StripKey.
	ReplyStripKeys
	// ReplyStripScan: forward; the reply is [cursor, [keys...]] (SCAN).
	ReplyStripScan
	// ReplyStripKeyAt0: forward; the reply is nil or an array whose first
	// element is a key: [key, value] (BLPOP, BRPOP), [key, member, score]
	// (BZPOPMIN, BZPOPMAX), [key, [elements...]] (LMPOP, BLMPOP, ZMPOP,
	// BZMPOP).
	ReplyStripKeyAt0
	// ReplyStripStreams: forward; the reply is nil, an array of [stream,
	// entries] pairs (RESP2) or a map stream -> entries (RESP3) (XREAD,
	// XREADGROUP).
	ReplyStripStreams
	// ReplyPubSub: forward; confirmations [kind, channel, count] of
	// (P|S)(UN)SUBSCRIBE and the messages that follow carry channel names
	// and patterns to strip with Namespace.AppendStripChannel.
	ReplyPubSub
	// ReplyStripChannels: forward; the reply is an array of channel names
	// (PUBSUB CHANNELS, PUBSUB SHARDCHANNELS).
	ReplyStripChannels
	// ReplyStripNumSub: forward; the reply is [channel, count, ...] (RESP2)
	// or a map channel -> count (RESP3) (PUBSUB NUMSUB, SHARDNUMSUB).
	ReplyStripNumSub
	// ReplyExec: forward; the reply is EXEC's array, whose elements take
	// the plans of the queued commands in order.
	ReplyExec
	// ReplyLocalOK: do not forward; reply +OK (SELECT 0).
	ReplyLocalOK
	// ReplyEmulateFlush: do not forward; delete the tenant's keys (SCAN
	// MATCH <prefix>* and UNLINK, honouring ASYNC/SYNC in args) and reply
	// +OK (FLUSHDB, FLUSHALL).
	ReplyEmulateFlush
	// ReplyEmulateDBSize: do not forward; reply the number of the tenant's
	// keys (DBSIZE).
	ReplyEmulateDBSize
	// ReplyEmulateSetName: do not forward; keep args[2] as the client's
	// name and reply +OK (CLIENT SETNAME).
	ReplyEmulateSetName
	// ReplyEmulateGetName: do not forward; reply the kept name, or nil
	// (CLIENT GETNAME).
	ReplyEmulateGetName
	// ReplySession: do not forward; the session implements the command
	// itself (AUTH, HELLO, RESET, QUIT).
	ReplySession
)

var planNames = [...]string{
	"ReplyPlain", "ReplyStripKeys", "ReplyStripScan", "ReplyStripKeyAt0",
	"ReplyStripStreams", "ReplyPubSub", "ReplyStripChannels",
	"ReplyStripNumSub", "ReplyExec", "ReplyLocalOK", "ReplyEmulateFlush",
	"ReplyEmulateDBSize", "ReplyEmulateSetName", "ReplyEmulateGetName",
	"ReplySession",
}

// String returns the plan's name.
func (p Plan) String() string {
	if int(p) < len(planNames) {
		return planNames[p]
	}
	return "Plan(?)"
}

// Forward reports whether the session sends the rewritten command to
// Redis; otherwise it answers the client itself.
func (p Plan) Forward() bool { return p < ReplyLocalOK }
