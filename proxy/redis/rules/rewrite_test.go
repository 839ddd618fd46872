package rules_test

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/tenantguard/tenantguard/proxy/redis/keyspec"
	"github.com/tenantguard/tenantguard/proxy/redis/namespace"
	"github.com/tenantguard/tenantguard/proxy/redis/rules"
)

var (
	acme = namespace.MustNew("acme", namespace.Spread)
	// open allows and emulates everything a Policy can.
	open = &rules.Policy{AllowScripting: true, AllowRestore: true, Emulate: map[string]bool{
		rules.EmulateFlushDB: true, rules.EmulateFlushAll: true, rules.EmulateDBSize: true, rules.EmulateClientSetName: true,
	}}
)

func argv(line string) [][]byte {
	var out [][]byte
	for f := range strings.SplitSeq(line, " ") {
		out = append(out, []byte(f))
	}
	return out
}

func join(args [][]byte) string { return string(bytes.Join(args, []byte(" "))) }

type rwCase struct {
	pol  *rules.Policy // nil: the zero Policy
	in   string
	want string // the rewritten command, or for errors:
	plan rules.Plan
	rule string // the refusal's rule, or the start of another error
}

var rewriteCases = []rwCase{
	// Keys located by key specs.
	{in: "GET k", want: "GET t:acme:k"},
	{in: "set k v EX 10", want: "set t:acme:k v EX 10"},
	{in: "SET k v GET", want: "SET t:acme:k v GET"},
	{in: "GETEX k PERSIST", want: "GETEX t:acme:k PERSIST"},
	{in: "MSET k1 v1 k2 v2", want: "MSET t:acme:k1 v1 t:acme:k2 v2"},
	{in: "MSETNX k1 v1 k2 v2", want: "MSETNX t:acme:k1 v1 t:acme:k2 v2"},
	{in: "MGET a b c", want: "MGET t:acme:a t:acme:b t:acme:c"},
	{in: "DEL k1 k2", want: "DEL t:acme:k1 t:acme:k2"},
	{in: "UNLINK a b", want: "UNLINK t:acme:a t:acme:b"},
	{in: "EXISTS a a", want: "EXISTS t:acme:a t:acme:a"},
	{in: "TOUCH a", want: "TOUCH t:acme:a"},
	{in: "RENAME a b", want: "RENAME t:acme:a t:acme:b"},
	{in: "RENAMENX a b", want: "RENAMENX t:acme:a t:acme:b"},
	{in: "COPY src dst", want: "COPY t:acme:src t:acme:dst"},
	{in: "COPY src dst DB 0 REPLACE", want: "COPY t:acme:src t:acme:dst DB 0 REPLACE"},
	{in: "LMOVE src dst LEFT RIGHT", want: "LMOVE t:acme:src t:acme:dst LEFT RIGHT"},
	{in: "BLMOVE src dst LEFT RIGHT 0", want: "BLMOVE t:acme:src t:acme:dst LEFT RIGHT 0"},
	{in: "RPOPLPUSH a b", want: "RPOPLPUSH t:acme:a t:acme:b"},
	{in: "SMOVE a b m", want: "SMOVE t:acme:a t:acme:b m"},
	{in: "SUNIONSTORE d a b", want: "SUNIONSTORE t:acme:d t:acme:a t:acme:b"},
	{in: "SINTERCARD 2 a b LIMIT 5", want: "SINTERCARD 2 t:acme:a t:acme:b LIMIT 5"},
	{in: "ZUNIONSTORE dest 2 a b WEIGHTS 1 2", want: "ZUNIONSTORE t:acme:dest 2 t:acme:a t:acme:b WEIGHTS 1 2"},
	{in: "ZINTER 2 a b WITHSCORES", want: "ZINTER 2 t:acme:a t:acme:b WITHSCORES"},
	{in: "ZDIFFSTORE d 1 a", want: "ZDIFFSTORE t:acme:d 1 t:acme:a"},
	{in: "ZRANGESTORE d s 0 -1", want: "ZRANGESTORE t:acme:d t:acme:s 0 -1"},
	{in: "GEORADIUS k 0 0 1 km STORE d", want: "GEORADIUS t:acme:k 0 0 1 km STORE t:acme:d"},
	{in: "GEORADIUS k 0 0 1 km WITHDIST", want: "GEORADIUS t:acme:k 0 0 1 km WITHDIST"},
	{in: "GEORADIUSBYMEMBER k m 1 km STOREDIST d", want: "GEORADIUSBYMEMBER t:acme:k m 1 km STOREDIST t:acme:d"},
	{in: "GEOSEARCHSTORE d s FROMLONLAT 0 0 BYRADIUS 1 km", want: "GEOSEARCHSTORE t:acme:d t:acme:s FROMLONLAT 0 0 BYRADIUS 1 km"},
	{in: "XADD s * f v", want: "XADD t:acme:s * f v"},
	{in: "XGROUP CREATE s g $ MKSTREAM", want: "XGROUP CREATE t:acme:s g $ MKSTREAM"},
	{in: "XINFO STREAM s FULL", want: "XINFO STREAM t:acme:s FULL"},
	{in: "XAUTOCLAIM s g c 0 0", want: "XAUTOCLAIM t:acme:s g c 0 0"},
	{in: "OBJECT ENCODING k", want: "OBJECT ENCODING t:acme:k"},
	{in: "OBJECT FREQ k", want: "OBJECT FREQ t:acme:k"},
	{in: "OBJECT HELP", want: "OBJECT HELP"},
	{in: "MEMORY USAGE k SAMPLES 5", want: "MEMORY USAGE t:acme:k SAMPLES 5"},
	{in: "DUMP k", want: "DUMP t:acme:k"},
	{in: "TYPE k", want: "TYPE t:acme:k"},
	{in: "EXPIRE k 10 NX", want: "EXPIRE t:acme:k 10 NX"},
	{in: "WATCH a b", want: "WATCH t:acme:a t:acme:b"},
	{in: "BITOP AND d a b", want: "BITOP AND t:acme:d t:acme:a t:acme:b"},
	{in: "PFMERGE d a b", want: "PFMERGE t:acme:d t:acme:a t:acme:b"},
	{in: "LCS a b LEN", want: "LCS t:acme:a t:acme:b LEN"},
	{in: "HSET h f v", want: "HSET t:acme:h f v"},

	// Replies that carry keys.
	{in: "XREAD COUNT 1 STREAMS s1 s2 0 0", want: "XREAD COUNT 1 STREAMS t:acme:s1 t:acme:s2 0 0", plan: rules.ReplyStripStreams},
	{in: "XREADGROUP GROUP g c STREAMS s >", want: "XREADGROUP GROUP g c STREAMS t:acme:s >", plan: rules.ReplyStripStreams},
	{in: "BLPOP a b 0", want: "BLPOP t:acme:a t:acme:b 0", plan: rules.ReplyStripKeyAt0},
	{in: "BZPOPMIN z 1.5", want: "BZPOPMIN t:acme:z 1.5", plan: rules.ReplyStripKeyAt0},
	{in: "LMPOP 2 a b LEFT COUNT 2", want: "LMPOP 2 t:acme:a t:acme:b LEFT COUNT 2", plan: rules.ReplyStripKeyAt0},
	{in: "BZMPOP 0 1 z MIN", want: "BZMPOP 0 1 t:acme:z MIN", plan: rules.ReplyStripKeyAt0},

	// Patterns and scans.
	{in: "KEYS user:*", want: "KEYS t:acme:user:*", plan: rules.ReplyStripKeys},
	{in: "KEYS *", want: "KEYS t:acme:*", plan: rules.ReplyStripKeys},
	{in: "SCAN 0", want: "SCAN 0 MATCH t:acme:*", plan: rules.ReplyStripScan},
	{in: "SCAN 42 MATCH u* COUNT 5000 TYPE string", want: "SCAN 42 MATCH t:acme:u* COUNT 1000 TYPE string", plan: rules.ReplyStripScan},
	{in: "scan 0 count 10", want: "scan 0 count 10 MATCH t:acme:*", plan: rules.ReplyStripScan},
	{in: "SCAN 0 MATCH a MATCH b COUNT x", want: "SCAN 0 MATCH t:acme:a MATCH t:acme:b COUNT x", plan: rules.ReplyStripScan},
	{in: "HSCAN h 0 MATCH f* COUNT 5000", want: "HSCAN t:acme:h 0 MATCH f* COUNT 1000"},
	{in: "SSCAN s 0", want: "SSCAN t:acme:s 0"},
	{in: "ZSCAN z 0 COUNT 10", want: "ZSCAN t:acme:z 0 COUNT 10"},
	{pol: &rules.Policy{MaxScanCount: -1}, in: "SCAN 0 COUNT 99999", want: "SCAN 0 COUNT 99999 MATCH t:acme:*", plan: rules.ReplyStripScan},
	{in: "SCAN 0 MATCH", rule: "ERR syntax error"},
	{in: "SCAN 0 BOGUS x", rule: "ERR syntax error"},
	{in: "HSCAN h 0 TYPE string", rule: "ERR syntax error"},
	{in: "KEYS " + strings.Repeat("a", 257), rule: rules.RulePatternBounds},
	{in: "KEYS *a*a*a*a*a*a*a*a*", rule: rules.RulePatternBounds},
	{pol: &rules.Policy{MaxPatternWildcards: -1}, in: "KEYS *a*a*a*a*a*a*a*a*", want: "KEYS t:acme:*a*a*a*a*a*a*a*a*", plan: rules.ReplyStripKeys},
	{in: "SCAN 0 MATCH ?????????", rule: rules.RulePatternBounds},
	{in: "HSCAN h 0 MATCH [a][b][c][d][e][f][g][h][i]", rule: rules.RulePatternBounds},

	// SORT, parsed here.
	{in: "SORT list", want: "SORT t:acme:list"},
	{in: "SORT list BY weight_* GET # GET obj_*->name LIMIT 0 10 DESC ALPHA STORE out",
		want: "SORT t:acme:list BY t:acme:weight_* GET # GET t:acme:obj_*->name LIMIT 0 10 DESC ALPHA STORE t:acme:out"},
	{in: "SORT list BY nosort", want: "SORT t:acme:list BY t:acme:nosort"},
	{in: "SORT list LIMIT BY x", want: "SORT t:acme:list LIMIT BY x"}, // LIMIT takes BY and x
	{in: "sort_ro list by w_* get # get #x", want: "sort_ro t:acme:list by t:acme:w_* get # get t:acme:#x"},
	{in: "SORT_RO list STORE d", rule: "ERR syntax error"},
	{in: "SORT list BY", rule: "ERR syntax error"},

	// Connection, transactions, server.
	{in: "SELECT 0", want: "SELECT 0", plan: rules.ReplyLocalOK},
	{in: "PING", want: "PING"},
	{in: "ECHO hi", want: "ECHO hi"},
	{in: "TIME", want: "TIME"},
	{in: "WAIT 1 0", want: "WAIT 1 0"},
	{in: "MULTI", want: "MULTI"},
	{in: "EXEC", want: "EXEC", plan: rules.ReplyExec},
	{in: "COMMAND GETKEYS GET k", want: "COMMAND GETKEYS GET k"},
	{in: "COMMAND", want: "COMMAND"},
	{in: "CLIENT SETNAME app", want: "CLIENT SETNAME app"},
	{pol: open, in: "CLIENT SETNAME app", want: "CLIENT SETNAME app", plan: rules.ReplyEmulateSetName},
	{pol: open, in: "client getname", want: "client getname", plan: rules.ReplyEmulateGetName},
	{in: "CLIENT ID", want: "CLIENT ID"},
	{in: "CLUSTER KEYSLOT k", want: "CLUSTER KEYSLOT t:acme:k"},
	{in: "INFO", want: "INFO", plan: rules.ReplyEmulateInfo},
	{in: "INFO keyspace server", want: "INFO keyspace server", plan: rules.ReplyEmulateInfo},
	{in: "info everything", want: "info everything", plan: rules.ReplyEmulateInfo},
	{in: "CLIENT TRACKING on BCAST PREFIX a", want: "CLIENT TRACKING on BCAST PREFIX a", plan: rules.ReplyTracking},
	{in: "CLIENT CACHING yes", want: "CLIENT CACHING yes", plan: rules.ReplyTrackingState},
	{in: "CLIENT GETREDIR", want: "CLIENT GETREDIR", plan: rules.ReplyTrackingState},
	{in: "CLIENT TRACKINGINFO", want: "CLIENT TRACKINGINFO", plan: rules.ReplyTrackingState},
	{in: "AUTH user pw", want: "AUTH user pw", plan: rules.ReplySession},
	{in: "HELLO 3", want: "HELLO 3", plan: rules.ReplySession},
	{in: "RESET", want: "RESET", plan: rules.ReplySession},
	{in: "QUIT", want: "QUIT", plan: rules.ReplySession},
	{pol: open, in: "FLUSHDB", want: "FLUSHDB", plan: rules.ReplyEmulateFlush},
	{pol: open, in: "FLUSHALL ASYNC", want: "FLUSHALL ASYNC", plan: rules.ReplyEmulateFlush},
	{pol: open, in: "DBSIZE", want: "DBSIZE", plan: rules.ReplyEmulateDBSize},

	// Pub/Sub.
	{in: "SUBSCRIBE a b", want: "SUBSCRIBE c:acme:a c:acme:b", plan: rules.ReplyPubSub},
	{in: "UNSUBSCRIBE", want: "UNSUBSCRIBE", plan: rules.ReplyPubSub},
	{in: "SSUBSCRIBE a b", want: "SSUBSCRIBE c:acme:a c:acme:b", plan: rules.ReplyPubSub},
	{in: "SUNSUBSCRIBE a", want: "SUNSUBSCRIBE c:acme:a", plan: rules.ReplyPubSub},
	{in: "PSUBSCRIBE news.* *", want: "PSUBSCRIBE c:acme:news.* c:acme:*", plan: rules.ReplyPubSub},
	{in: "PUNSUBSCRIBE news.*", want: "PUNSUBSCRIBE c:acme:news.*", plan: rules.ReplyPubSub},
	{in: "PSUBSCRIBE __keyspace@0__:user:*", want: "PSUBSCRIBE __keyspace@0__:t:acme:user:*", plan: rules.ReplyPubSub},
	{in: "SUBSCRIBE __keyspace@0__:k", want: "SUBSCRIBE __keyspace@0__:t:acme:k", plan: rules.ReplyPubSub},
	{in: "PUBLISH ch msg", want: "PUBLISH c:acme:ch msg"},
	{in: "SPUBLISH ch msg", want: "SPUBLISH c:acme:ch msg"},
	{in: "PUBSUB CHANNELS", want: "PUBSUB CHANNELS c:acme:*", plan: rules.ReplyStripChannels},
	{in: "PUBSUB CHANNELS n* extra", want: "PUBSUB CHANNELS c:acme:n*", plan: rules.ReplyStripChannels},
	{in: "PUBSUB SHARDCHANNELS", want: "PUBSUB SHARDCHANNELS c:acme:*", plan: rules.ReplyStripChannels},
	{in: "PUBSUB NUMSUB a b", want: "PUBSUB NUMSUB c:acme:a c:acme:b", plan: rules.ReplyStripNumSub},
	{in: "PUBSUB SHARDNUMSUB a", want: "PUBSUB SHARDNUMSUB c:acme:a", plan: rules.ReplyStripNumSub},
	{in: "PUBSUB NUMPAT", rule: rules.RuleWholeKeyspace},
	{in: "PSUBSCRIBE __keyevent@0__:*", rule: rules.RuleKeyevent},
	{in: "SUBSCRIBE a __keyevent@0__:set", rule: rules.RuleKeyevent},
	{in: "PUBLISH __keyspace@x__:k m", rule: rules.RuleKeyevent},
	{in: "PSUBSCRIBE *a*a*a*a*a*a*a*a*a", rule: rules.RulePatternBounds},
	{in: "PUBSUB CHANNELS " + strings.Repeat("?", 9), rule: rules.RulePatternBounds},

	// Scripting.
	{in: "EVAL return 0", rule: rules.RuleScripting},
	{in: "EVALSHA abc 0", rule: rules.RuleScripting},
	{in: "EVAL_RO s 0", rule: rules.RuleScripting},
	{in: "FCALL f 0", rule: rules.RuleScripting},
	{in: "FCALL_RO f 0", rule: rules.RuleScripting},
	{in: "SCRIPT LOAD s", rule: rules.RuleScripting},
	{in: "FUNCTION LIST", rule: rules.RuleScripting},
	{in: "SCRIPT FLUSH", rule: rules.RuleScripting},
	{in: "SCRIPT EXISTS a", rule: rules.RuleScripting},
	{pol: open, in: "EVAL s 2 k1 k2 a1", want: "EVAL --[[tenantguard t:acme:]]s 2 t:acme:k1 t:acme:k2 a1", plan: rules.ReplyScript},
	{pol: open, in: "eval_ro #!lua\nreturn 0", want: "eval_ro #!lua\n--[[tenantguard t:acme:]]return 0", plan: rules.ReplyScript},
	{pol: open, in: "EVALSHA sha 0 a", want: "EVALSHA sha 0 a", plan: rules.ReplyScriptSha},
	{pol: open, in: "EVALSHA_RO sha 1 k", want: "EVALSHA_RO sha 1 t:acme:k", plan: rules.ReplyScriptSha},
	{pol: open, in: "SCRIPT LOAD s", want: "SCRIPT LOAD --[[tenantguard t:acme:]]s", plan: rules.ReplyScriptLoad},
	{pol: open, in: "SCRIPT EXISTS a b", want: "SCRIPT EXISTS a b", plan: rules.ReplyScriptExists},
	{pol: open, in: "SCRIPT FLUSH", want: "SCRIPT FLUSH", plan: rules.ReplyScriptFlush},
	{pol: open, in: "SCRIPT FLUSH async", want: "SCRIPT FLUSH async", plan: rules.ReplyScriptFlush},
	{pol: open, in: "SCRIPT FLUSH later", rule: "ERR SCRIPT FLUSH only support SYNC|ASYNC option"},
	{pol: open, in: "SCRIPT HELP", want: "SCRIPT HELP"},
	{pol: open, in: "SCRIPT KILL", rule: rules.RuleSharedScripts},
	{pol: open, in: "SCRIPT DEBUG yes", rule: rules.RuleSharedScripts},
	{pol: open, in: "FCALL f 1 k a", rule: rules.RuleFunctions},
	{pol: open, in: "FCALL_RO f 0", rule: rules.RuleFunctions},
	{pol: open, in: "FUNCTION LOAD code", rule: rules.RuleFunctions},
	{pol: open, in: "FUNCTION FLUSH", rule: rules.RuleFunctions},
	{pol: open, in: "FUNCTION LIST", rule: rules.RuleFunctions},
	{pol: open, in: "FUNCTION HELP", want: "FUNCTION HELP"},
	// A bad key count gets redis-server's own errors.
	{pol: open, in: "EVAL s 3 k", rule: "ERR Number of keys can't be greater than number of args"},
	{pol: open, in: "EVAL s -1 k", rule: "ERR Number of keys can't be negative"},
	{pol: open, in: "EVALSHA s x", rule: "ERR value is not an integer or out of range"},
	{pol: open, in: "EVAL s 01 k", rule: "ERR value is not an integer or out of range"},
	{pol: open, in: "EVAL s 99999999999999999999", rule: "ERR value is not an integer or out of range"},

	// RESTORE.
	{in: "RESTORE k 0 payload", rule: rules.RuleRestore},
	{in: "RESTORE-ASKING k 0 payload", rule: rules.RuleRestore},
	{pol: open, in: "RESTORE k 0 payload REPLACE", want: "RESTORE t:acme:k 0 payload REPLACE"},

	// The whole server.
	{in: "MONITOR", rule: rules.RuleServerWide},
	{in: "CONFIG GET *", rule: rules.RuleServerWide},
	{in: "CONFIG HELP", rule: rules.RuleServerWide},
	{in: "DEBUG OBJECT k", rule: rules.RuleServerWide},
	{in: "ACL WHOAMI", rule: rules.RuleServerWide},
	{in: "CLIENT KILL ID 1", rule: rules.RuleServerWide},
	{in: "CLIENT PAUSE 10", rule: rules.RuleServerWide},
	{in: "CLIENT UNPAUSE", rule: rules.RuleServerWide},
	{in: "CLIENT LIST", rule: rules.RuleServerWide},
	{in: "CLIENT NO-EVICT on", rule: rules.RuleServerWide},
	{in: "CLIENT UNBLOCK 7", rule: rules.RuleServerWide},
	{in: "CLIENT REPLY OFF", rule: rules.RuleClientReply},
	{in: "SLOWLOG GET", rule: rules.RuleServerWide},
	{in: "LATENCY LATEST", rule: rules.RuleServerWide},
	{in: "MEMORY DOCTOR", rule: rules.RuleServerWide},
	{in: "MEMORY STATS", rule: rules.RuleServerWide},
	{in: "MEMORY MALLOC-STATS", rule: rules.RuleServerWide},
	{in: "MEMORY PURGE", rule: rules.RuleServerWide},
	{in: "MODULE LIST", rule: rules.RuleServerWide},
	{in: "SHUTDOWN NOSAVE", rule: rules.RuleServerWide},
	{in: "REPLICAOF h 6379", rule: rules.RuleReplication},
	{in: "SLAVEOF NO ONE", rule: rules.RuleReplication},
	{in: "SYNC", rule: rules.RuleReplication},
	{in: "PSYNC ? -1", rule: rules.RuleReplication},
	{in: "FAILOVER", rule: rules.RuleReplication},
	{in: "SAVE", rule: rules.RulePersistence},
	{in: "BGSAVE", rule: rules.RulePersistence},
	{in: "BGREWRITEAOF", rule: rules.RulePersistence},
	{in: "LASTSAVE", rule: rules.RulePersistence},
	{in: "CLUSTER NODES", rule: rules.RuleCluster},
	{in: "CLUSTER GETKEYSINSLOT 0 10", rule: rules.RuleCluster},
	{in: "CLUSTER COUNTKEYSINSLOT 0", rule: rules.RuleCluster},
	{in: "PFDEBUG GETREG k", rule: rules.RuleAdmin},
	{in: "PFSELFTEST", rule: rules.RuleAdmin},
	{in: "ROLE", rule: rules.RuleDangerous},

	// Other databases, the whole keyspace.
	{in: "SELECT 1", rule: rules.RuleCrossDB},
	{in: "SELECT 00", rule: rules.RuleCrossDB},
	{in: "SWAPDB 0 1", rule: rules.RuleCrossDB},
	{in: "MOVE k 1", rule: rules.RuleCrossDB},
	{in: "COPY a b DB 1", rule: rules.RuleCrossDB},
	{in: "COPY a b REPLACE db 01", rule: rules.RuleCrossDB},
	{in: "MIGRATE h 6379 k 0 5000", rule: rules.RuleCrossDB},
	{in: "RANDOMKEY", rule: rules.RuleWholeKeyspace},
	{in: "DBSIZE", rule: rules.RuleWholeKeyspace},
	{in: "FLUSHDB", rule: rules.RuleWholeKeyspace},
	{in: "FLUSHALL", rule: rules.RuleWholeKeyspace},

	// Keys that cannot be located.
	{in: "GEORADIUS k 0 0 1 km STORE a STORE b", rule: rules.RuleKeySpecs},
	{in: "XREAD STREAMS STREAMS 0", rule: rules.RuleKeySpecs},

	// Errors redis-server would give.
	{in: "FOO bar", rule: "ERR unknown command 'FOO'"},
	{in: "CLIENT BOGUS", rule: "ERR unknown subcommand 'BOGUS'"},
	{in: "GET", rule: "ERR wrong number of arguments for 'get' command"},
	{in: "CONFIG", rule: "ERR wrong number of arguments for 'config' command"},
	{in: "SELECT", rule: "ERR wrong number of arguments"},
}

func TestRewrite(t *testing.T) {
	for _, tc := range rewriteCases {
		args := argv(tc.in)
		orig := join(args)
		rw := rules.NewRewriter(acme, tc.pol)
		out, plan, err := rw.Rewrite(args)
		if join(args) != orig {
			t.Errorf("%q: input modified to %q", tc.in, join(args))
		}
		if tc.rule != "" {
			checkRefusal(t, tc.in, err, tc.rule)
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if got := join(out); got != tc.want || plan != tc.plan {
			t.Errorf("%q:\n got %q %v\nwant %q %v", tc.in, got, plan, tc.want, tc.plan)
		}
	}
}

// checkRefusal checks that err is a NOPERM *rules.Error of the given rule,
// or another error whose message starts with rule.
func checkRefusal(t *testing.T, in string, err error, rule string) {
	t.Helper()
	if err == nil {
		t.Errorf("%q: accepted, want %s", in, rule)
		return
	}
	msg := err.Error()
	if strings.ContainsAny(msg, "\r\n") {
		t.Errorf("%q: multi-line error %q", in, msg)
	}
	var re *rules.Error
	if strings.HasPrefix(rule, "ERR") {
		if errors.As(err, &re) || !strings.HasPrefix(msg, rule) {
			t.Errorf("%q: error %q, want %q...", in, msg, rule)
		}
		return
	}
	if !errors.As(err, &re) || re.Rule != rule || !strings.HasPrefix(msg, "NOPERM tenantguard: ") ||
		!strings.HasSuffix(msg, "(rule "+rule+")") {
		t.Errorf("%q: error %q, want rule %s", in, msg, rule)
	}
}

func TestRefusalMessage(t *testing.T) {
	_, _, err := rules.NewRewriter(acme, nil).Rewrite(argv("monitor"))
	if want := "NOPERM tenantguard: MONITOR is not allowed (rule server-wide)"; err == nil || err.Error() != want {
		t.Errorf("got %v, want %q", err, want)
	}
	_, _, err = rules.NewRewriter(acme, nil).Rewrite(argv("client kill id 1"))
	var re *rules.Error
	if !errors.As(err, &re) || re.Command != "CLIENT KILL" {
		t.Errorf("got %#v", err)
	}
	_, _, err = rules.NewRewriter(acme, nil).Rewrite(argv("GET"))
	if !errors.Is(err, keyspec.ErrArity) {
		t.Errorf("GET: %v is not keyspec.ErrArity", err)
	}
}

func TestRewriteCaseCount(t *testing.T) {
	names := map[string]bool{}
	for _, tc := range rewriteCases {
		if cmd, err := keyspec.Lookup(argv(tc.in)); err == nil {
			names[cmd.Name] = true
		}
	}
	t.Logf("%d cases cover %d commands", len(rewriteCases), len(names))
	if len(names) < 80 {
		t.Errorf("the table covers %d commands, want at least 80", len(names))
	}
}

func TestOneSlot(t *testing.T) {
	rw := rules.NewRewriter(namespace.MustNew("acme", namespace.OneSlot), nil)
	for in, want := range map[string]string{
		"MSET {u}a 1 {u}b 2":          "MSET {t:acme}:{u}a 1 {t:acme}:{u}b 2",
		"SCAN 0":                      "SCAN 0 MATCH {t:acme}:*",
		"SSUBSCRIBE a":                "SSUBSCRIBE {c:acme}:a",
		"PSUBSCRIBE __keyspace@0__:*": "PSUBSCRIBE __keyspace@0__:{t:acme}:*",
	} {
		out, _, err := rw.Rewrite(argv(in))
		if err != nil || join(out) != want {
			t.Errorf("%q: %q, %v; want %q", in, join(out), err, want)
		}
	}
}

func TestPlanNames(t *testing.T) {
	for p := rules.ReplyPlain; p <= rules.ReplyTrackingState; p++ {
		if strings.HasPrefix(p.String(), "Plan(") {
			t.Errorf("plan %d has no name", p)
		}
		if p.Forward() != (p < rules.ReplyLocalOK) {
			t.Errorf("%v.Forward() = %v", p, p.Forward())
		}
	}
	if rules.Plan(200).String() != "Plan(?)" {
		t.Error("unknown plan name")
	}
}

// TestScriptCommands: what a tenant's scripts may call holds the data
// commands clients' scripts use, and none of the commands that reach
// beyond the tenant's keys and channels without naming them.
func TestScriptCommands(t *testing.T) {
	got := rules.ScriptCommands()
	for _, want := range []string{"get", "set", "incrby", "del", "pexpire", "hset", "zadd", "xadd", "lpush",
		"lmpop", "object|encoding", "memory|usage", "publish", "spublish", "sort", "sort_ro", "hscan", "exists"} {
		if !slices.Contains(got, want) {
			t.Errorf("scripts may not call %s", want)
		}
	}
	for _, never := range []string{"keys", "scan", "randomkey", "dbsize", "flushall", "flushdb", "info",
		"client|list", "config|get", "pubsub|channels", "select", "swapdb", "move", "copy", "restore",
		"migrate", "cluster|keyslot", "eval", "evalsha", "script|load", "function|load", "fcall",
		"acl|setuser", "debug", "object|help", "subscribe", "multi", "wait", "monitor", "keys"} {
		if slices.Contains(got, never) {
			t.Errorf("scripts may call %s", never)
		}
	}
	if !slices.IsSorted(got) {
		t.Error("not sorted")
	}
}

// TestAppendScriptBody: the tenant's form keeps a shebang line first and
// the code's line numbers, and differs between tenants.
func TestAppendScriptBody(t *testing.T) {
	globex := namespace.MustNew("globex", namespace.OneSlot)
	for _, tc := range []struct {
		ns         *namespace.Namespace
		body, want string
	}{
		{acme, "return 1", "--[[tenantguard t:acme:]]return 1"},
		{globex, "return 1", "--[[tenantguard {t:globex}:]]return 1"},
		{acme, "#!lua flags=no-writes\nreturn 1\n", "#!lua flags=no-writes\n--[[tenantguard t:acme:]]return 1\n"},
		{acme, "#!lua", "#!lua\n--[[tenantguard t:acme:]]"},
		{acme, "", "--[[tenantguard t:acme:]]"},
		{acme, "#", "--[[tenantguard t:acme:]]#"},
	} {
		if got := string(rules.AppendScriptBody(nil, tc.ns, []byte(tc.body))); got != tc.want {
			t.Errorf("%q: %q, want %q", tc.body, got, tc.want)
		}
	}
}
