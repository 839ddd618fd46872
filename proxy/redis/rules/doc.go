// Package rules is the command policy of the tenantguard Redis sidecar: it
// decides, for one client command (argv, args[0] being the command name),
// whether it may reach the shared Redis, rewrites every key, pattern and
// channel into the tenant's namespace (package namespace), and tells the
// session what to do with the reply. It touches no socket.
//
//	rw := rules.NewRewriter(ns, &rules.Policy{Emulate: map[string]bool{"flushdb": true}})
//	out, plan, err := rw.Rewrite(args) // err: send "-" + err.Error()
//	if plan.Forward() { send(out); reply := read(); fix(reply, plan) } else { emulate(plan, args) }
//
// Refusals are *Error values whose text starts with "NOPERM " and names the
// rule ("NOPERM tenantguard: MONITOR is not allowed (rule server-wide)");
// unknown commands and wrong argument counts give keyspec's "ERR ..."
// messages, worded as redis-server words them.
//
// # Deny by default
//
// Every command is looked up in keyspec's table (generated from
// redis-server 7.0.15). Commands this package names get their own
// treatment; any other command is forwarded only when it has key specs
// that locate all of its keys and is neither flagged admin nor in the
// @dangerous category; everything else, keyless commands included, is
// refused. The decisions, by class:
//
//   - keys: every key keyspec locates is prefixed; specs that are
//     incomplete (SORT is parsed here instead, MIGRATE is refused) or a
//     begin_search keyword given twice (GEORADIUS ... STORE a STORE b)
//     are refused, rule key-specs.
//   - KEYS p becomes KEYS <prefix>p; SCAN always gets MATCH <prefix>p (or
//     <prefix>* when the client gave none) and its COUNT is capped at
//     MaxScanCount; HSCAN, SSCAN and ZSCAN keep their (field) MATCH but it
//     is bounded too, as are every KEYS, SCAN, PSUBSCRIBE and PUBSUB
//     pattern (CheckPattern: the pattern CPU-exhaustion class).
//   - SORT and SORT_RO are parsed like redis-server's sortCommandGeneric:
//     BY and GET patterns name keys and are prefixed (GET # is kept), as is
//     STORE's destination.
//   - whole-server commands are refused: MONITOR, CONFIG, DEBUG, ACL,
//     SLOWLOG, LATENCY, MODULE, SHUTDOWN, MEMORY DOCTOR/STATS/MALLOC-STATS/
//     PURGE (MEMORY USAGE key is rewritten), CLIENT KILL/LIST/PAUSE/
//     UNPAUSE/UNBLOCK/NO-EVICT, replication (REPLICAOF, SLAVEOF, SYNC,
//     PSYNC, REPLCONF, FAILOVER), persistence (SAVE, BGSAVE, BGREWRITEAOF,
//     LASTSAVE), CLUSTER except KEYSLOT. INFO is answered by the session
//     with the tenant's own figures (ReplyEmulateInfo).
//   - CLIENT REPLY is refused (the session must see one reply per
//     command); CLIENT TRACKING, CACHING, GETREDIR and TRACKINGINFO go to
//     the session (ReplyTracking, ReplyTrackingState), which tracks the
//     tenant's prefixes only and rewrites the invalidations.
//   - other databases: SELECT n (n != 0), SWAPDB, MOVE, COPY ... DB n
//     (n != 0) and MIGRATE are refused; SELECT 0 is answered +OK locally.
//   - whole-keyspace commands: RANDOMKEY and PUBSUB NUMPAT are refused;
//     FLUSHDB, FLUSHALL and DBSIZE are refused unless the policy emulates
//     them (the session then works on the tenant's keys only).
//   - CLUSTER KEYSLOT key answers for the prefixed key: the slot the key
//     really lives in on the shared cluster.
//   - scripting (scripts.go): without AllowScripting every script command
//     is refused (rule scripting). With it, EVAL, EVALSHA and their _RO
//     forms get redis-server's key count errors and their declared keys
//     prefixed, and EVAL and SCRIPT LOAD send the tenant's form of the
//     script (AppendScriptBody); the session runs them as the tenant's ACL
//     user (ScriptCommands) and answers SCRIPT EXISTS and FLUSH per
//     tenant. SCRIPT KILL and DEBUG act on any tenant's running script
//     (rule shared-scripts); FUNCTION (but HELP), FCALL and FCALL_RO
//     register and call server-wide names (rule functions): refused.
//   - RESTORE and RESTORE-ASKING are refused unless AllowRestore (a
//     crafted payload is a known attack surface); DUMP is allowed.
//   - Pub/Sub: channels are prefixed (namespace.AppendChannel), patterns
//     too after bounding; keyspace-notification channels and patterns are
//     scoped to the tenant's keys; keyevent channels are refused (rule
//     keyevent). PUBSUB CHANNELS/SHARDCHANNELS get a scoped pattern
//     (<channel prefix>* when none), NUMSUB/SHARDNUMSUB scoped channels.
//   - AUTH, HELLO, RESET and QUIT belong to the session and are never
//     forwarded (ReplySession).
package rules
