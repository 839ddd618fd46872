package rules

// kind is how Rewrite treats a command.
type kind uint8

const (
	kGeneric        kind = iota // prefix the keys keyspec locates
	kRefuse                     // refused under entry.rule
	kPlain                      // keyless and harmless: forwarded as is
	kSession                    // handled by the session
	kSelect                     // SELECT 0 only, answered locally
	kInfo                       // INFO: emulated per tenant
	kKeys                       // KEYS pattern
	kScan                       // SCAN with forced MATCH
	kFieldScan                  // HSCAN, SSCAN, ZSCAN: bounded MATCH and COUNT
	kSort                       // SORT, SORT_RO
	kCopy                       // COPY without DB n
	kEval                       // EVAL, EVAL_RO: AllowScripting, key count, keys, tenant's script
	kEvalSha                    // EVALSHA, EVALSHA_RO: AllowScripting, key count, keys
	kScriptLoad                 // SCRIPT LOAD: AllowScripting, tenant's script
	kScriptLocal                // SCRIPT EXISTS, FLUSH: AllowScripting, answered per tenant
	kScriptPlain                // SCRIPT HELP: AllowScripting
	kScriptShared               // SCRIPT KILL, DEBUG: AllowScripting, then refused
	kFunction                   // FUNCTION, FCALL: AllowScripting, then refused
	kRestore                    // RESTORE: AllowRestore, then keys
	kFlush                      // FLUSHDB, FLUSHALL: emulated or refused
	kDBSize                     // DBSIZE: emulated or refused
	kSetName                    // CLIENT SETNAME: emulated or forwarded
	kGetName                    // CLIENT GETNAME: emulated or forwarded
	kKeyslot                    // CLUSTER KEYSLOT key
	kChannels                   // (UN)SUBSCRIBE, S(UN)SUBSCRIBE channel...
	kPatterns                   // PSUBSCRIBE, PUNSUBSCRIBE pattern...
	kPublish                    // PUBLISH, SPUBLISH channel message
	kPubsubChannels             // PUBSUB CHANNELS/SHARDCHANNELS [pattern]
	kPubsubNumsub               // PUBSUB NUMSUB/SHARDNUMSUB channel...
)

// entry is the treatment of one command: its kind, the plan of its reply
// when forwarded, the rule of a refusal and, for kFlush, kDBSize and
// kSetName/kGetName, the Policy.Emulate name.
type entry struct {
	kind kind
	plan Plan
	rule string
	emul string
}

func refused(rule string) entry { return entry{kind: kRefuse, rule: rule} }

// table holds the commands Rewrite treats specially, by keyspec name. A
// container's entry ("config") covers its subcommands without their own.
// Commands not here are forwarded with their keys prefixed when they have
// complete key specs and are neither admin nor @dangerous (see Rewrite).
var table = map[string]entry{
	// Connection and session.
	"auth":         {kind: kSession, plan: ReplySession},
	"hello":        {kind: kSession, plan: ReplySession},
	"reset":        {kind: kSession, plan: ReplySession},
	"quit":         {kind: kSession, plan: ReplySession},
	"select":       {kind: kSelect},
	"ping":         {kind: kPlain},
	"echo":         {kind: kPlain},
	"time":         {kind: kPlain},
	"lolwut":       {kind: kPlain},
	"asking":       {kind: kPlain},
	"readonly":     {kind: kPlain},
	"readwrite":    {kind: kPlain},
	"wait":         {kind: kPlain},
	"command":      {kind: kPlain}, // COMMAND and all its subcommands
	"multi":        {kind: kPlain},
	"exec":         {kind: kPlain, plan: ReplyExec},
	"discard":      {kind: kPlain},
	"unwatch":      {kind: kPlain},
	"object|help":  {kind: kPlain},
	"xgroup|help":  {kind: kPlain},
	"xinfo|help":   {kind: kPlain},
	"memory|help":  {kind: kPlain},
	"pubsub|help":  {kind: kPlain},
	"memory|usage": {kind: kGeneric},

	// CLIENT: only the calling connection's own state.
	"client":              refused(RuleServerWide), // KILL, LIST, PAUSE, UNPAUSE, UNBLOCK, NO-EVICT
	"client|help":         {kind: kPlain},
	"client|id":           {kind: kPlain},
	"client|info":         {kind: kPlain},
	"client|caching":      {kind: kSession, plan: ReplyTrackingState},
	"client|getredir":     {kind: kSession, plan: ReplyTrackingState},
	"client|trackinginfo": {kind: kSession, plan: ReplyTrackingState},
	"client|setname":      {kind: kSetName, emul: EmulateClientSetName},
	"client|getname":      {kind: kGetName, emul: EmulateClientSetName},
	"client|reply":        refused(RuleClientReply),
	"client|tracking":     {kind: kSession, plan: ReplyTracking},

	// The whole server.
	"monitor":  refused(RuleServerWide),
	"config":   refused(RuleServerWide),
	"debug":    refused(RuleServerWide),
	"acl":      refused(RuleServerWide),
	"slowlog":  refused(RuleServerWide),
	"latency":  refused(RuleServerWide),
	"memory":   refused(RuleServerWide), // DOCTOR, STATS, MALLOC-STATS, PURGE
	"module":   refused(RuleServerWide),
	"shutdown": refused(RuleServerWide),
	"info":     {kind: kSession, plan: ReplyEmulateInfo},

	// Replication and persistence.
	"replicaof":    refused(RuleReplication),
	"slaveof":      refused(RuleReplication),
	"sync":         refused(RuleReplication),
	"psync":        refused(RuleReplication),
	"replconf":     refused(RuleReplication),
	"failover":     refused(RuleReplication),
	"save":         refused(RulePersistence),
	"bgsave":       refused(RulePersistence),
	"bgrewriteaof": refused(RulePersistence),
	"lastsave":     refused(RulePersistence),

	// Cluster.
	"cluster":         refused(RuleCluster),
	"cluster|keyslot": {kind: kKeyslot},

	// Other databases and instances.
	"swapdb":  refused(RuleCrossDB),
	"move":    refused(RuleCrossDB),
	"migrate": refused(RuleCrossDB),
	"copy":    {kind: kCopy},

	// The whole keyspace.
	"randomkey": refused(RuleWholeKeyspace),
	"flushdb":   {kind: kFlush, plan: ReplyEmulateFlush, emul: EmulateFlushDB},
	"flushall":  {kind: kFlush, plan: ReplyEmulateFlush, emul: EmulateFlushAll},
	"dbsize":    {kind: kDBSize, plan: ReplyEmulateDBSize, emul: EmulateDBSize},
	"keys":      {kind: kKeys, plan: ReplyStripKeys},
	"scan":      {kind: kScan, plan: ReplyStripScan},
	"hscan":     {kind: kFieldScan},
	"sscan":     {kind: kFieldScan},
	"zscan":     {kind: kFieldScan},
	"sort":      {kind: kSort},
	"sort_ro":   {kind: kSort},

	// Scripting and functions.
	"eval":           {kind: kEval, plan: ReplyScript},
	"eval_ro":        {kind: kEval, plan: ReplyScript},
	"evalsha":        {kind: kEvalSha, plan: ReplyScriptSha},
	"evalsha_ro":     {kind: kEvalSha, plan: ReplyScriptSha},
	"fcall":          {kind: kFunction},
	"fcall_ro":       {kind: kFunction},
	"script":         {kind: kScriptShared}, // KILL, DEBUG
	"script|load":    {kind: kScriptLoad, plan: ReplyScriptLoad},
	"script|exists":  {kind: kScriptLocal, plan: ReplyScriptExists},
	"script|flush":   {kind: kScriptLocal, plan: ReplyScriptFlush},
	"script|help":    {kind: kScriptPlain},
	"function":       {kind: kFunction}, // LOAD, DELETE, FLUSH, LIST, DUMP...
	"function|help":  {kind: kScriptPlain},
	"restore":        {kind: kRestore},
	"restore-asking": {kind: kRestore},

	// Replies that carry key names.
	"blpop":      {kind: kGeneric, plan: ReplyStripKeyAt0},
	"brpop":      {kind: kGeneric, plan: ReplyStripKeyAt0},
	"bzpopmin":   {kind: kGeneric, plan: ReplyStripKeyAt0},
	"bzpopmax":   {kind: kGeneric, plan: ReplyStripKeyAt0},
	"lmpop":      {kind: kGeneric, plan: ReplyStripKeyAt0},
	"blmpop":     {kind: kGeneric, plan: ReplyStripKeyAt0},
	"zmpop":      {kind: kGeneric, plan: ReplyStripKeyAt0},
	"bzmpop":     {kind: kGeneric, plan: ReplyStripKeyAt0},
	"xread":      {kind: kGeneric, plan: ReplyStripStreams},
	"xreadgroup": {kind: kGeneric, plan: ReplyStripStreams},

	// Pub/Sub.
	"subscribe":            {kind: kChannels, plan: ReplyPubSub},
	"unsubscribe":          {kind: kChannels, plan: ReplyPubSub},
	"ssubscribe":           {kind: kChannels, plan: ReplyPubSub},
	"sunsubscribe":         {kind: kChannels, plan: ReplyPubSub},
	"psubscribe":           {kind: kPatterns, plan: ReplyPubSub},
	"punsubscribe":         {kind: kPatterns, plan: ReplyPubSub},
	"publish":              {kind: kPublish},
	"spublish":             {kind: kPublish},
	"pubsub|channels":      {kind: kPubsubChannels, plan: ReplyStripChannels},
	"pubsub|shardchannels": {kind: kPubsubChannels, plan: ReplyStripChannels},
	"pubsub|numsub":        {kind: kPubsubNumsub, plan: ReplyStripNumSub},
	"pubsub|shardnumsub":   {kind: kPubsubNumsub, plan: ReplyStripNumSub},
	"pubsub|numpat":        refused(RuleWholeKeyspace),
}
