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
	// ReplyScript: forward on the tenant's script connection (EVAL,
	// EVAL_RO): args[1] is the script as the client sent it, out[1] the
	// tenant's form of it (AppendScriptBody), whose SHA1 is what the
	// server's script cache knows it by. The reply is not rewritten: key
	// names a script returns come back as the server stores them.
	ReplyScript
	// ReplyScriptSha: forward on the tenant's script connection (EVALSHA,
	// EVALSHA_RO) once the session has replaced out[1], the client's SHA1,
	// by the SHA1 of the tenant's form of that script, or answer NOSCRIPT
	// when the tenant never sent it. The reply is not rewritten.
	ReplyScriptSha
	// ReplyScriptLoad: forward on the tenant's script connection (SCRIPT
	// LOAD, out[2] the tenant's form of args[2]); the reply, the SHA1 of
	// the tenant's form, is replaced by the SHA1 of args[2].
	ReplyScriptLoad
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
	// ReplyScriptExists: do not forward; answer from the scripts the tenant
	// has sent (SCRIPT EXISTS).
	ReplyScriptExists
	// ReplyScriptFlush: do not forward; forget the scripts the tenant has
	// sent, so that its EVALSHA answers NOSCRIPT until they are sent again,
	// and reply +OK (SCRIPT FLUSH). The server's cache is shared: it is
	// not flushed.
	ReplyScriptFlush
	// ReplyEmulateInfo: do not forward; answer INFO with the tenant's own
	// figures (server version, its clients, its keys).
	ReplyEmulateInfo
	// ReplyTracking: do not forward as is; the session turns CLIENT
	// TRACKING into tracking of the tenant's keys only (BCAST with the
	// tenant's prefixes) on the client's own upstream connection.
	ReplyTracking
	// ReplyTrackingState: do not forward; the session answers CLIENT
	// CACHING, CLIENT GETREDIR and CLIENT TRACKINGINFO from the tracking
	// state the client asked for.
	ReplyTrackingState
)

var planNames = [...]string{
	"ReplyPlain", "ReplyStripKeys", "ReplyStripScan", "ReplyStripKeyAt0",
	"ReplyStripStreams", "ReplyPubSub", "ReplyStripChannels",
	"ReplyStripNumSub", "ReplyExec", "ReplyScript", "ReplyScriptSha",
	"ReplyScriptLoad", "ReplyLocalOK", "ReplyEmulateFlush",
	"ReplyEmulateDBSize", "ReplyEmulateSetName", "ReplyEmulateGetName",
	"ReplySession", "ReplyScriptExists", "ReplyScriptFlush",
	"ReplyEmulateInfo", "ReplyTracking", "ReplyTrackingState",
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
