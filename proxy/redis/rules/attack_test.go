package rules_test

import (
	"bytes"
	"testing"

	"github.com/tenantguard/tenantguard/proxy/redis/namespace"
	"github.com/tenantguard/tenantguard/proxy/redis/rules"
)

// attacks are commands of tenant "acme" that name tenant "beta"'s keys,
// patterns and channels in every position a key, pattern or channel can
// take. Values are kept innocuous ("v"): they are data, not names.
var attacks = []string{
	"GET t:beta:secret",
	"GET {t:beta}:secret",
	"MGET t:beta:secret t:beta:x",
	"SET t:beta:secret v",
	"DEL t:beta:secret",
	"RENAME t:beta:secret mine",
	"RENAME mine t:beta:secret",
	"COPY t:beta:secret mine",
	"COPY t:beta:secret mine DB 1",
	"MOVE t:beta:secret 1",
	"MIGRATE h 6379 t:beta:secret 0 5000",
	"MIGRATE h 6379 \"\" 0 5000 KEYS t:beta:secret",
	"SWAPDB 0 1",
	"SELECT 1",
	"RANDOMKEY",
	"DBSIZE",
	"FLUSHALL",
	"OBJECT ENCODING t:beta:secret",
	"MEMORY USAGE t:beta:secret",
	"DEBUG OBJECT t:beta:secret",
	"DUMP t:beta:secret",
	"RESTORE t:beta:secret 0 v",
	"WATCH t:beta:secret",
	"LCS t:beta:secret t:beta:x",
	"BITOP OR t:beta:x t:beta:secret",
	"LMOVE t:beta:l mine LEFT LEFT",
	"ZUNIONSTORE d 2 t:beta:a t:beta:b",
	"ZUNIONSTORE t:beta:d 1 mine",
	"GEORADIUS t:beta:g 0 0 1 km STORE t:beta:x",
	"GEORADIUS mine 0 0 1 km STORE x STORE t:beta:x",
	"GEOSEARCHSTORE t:beta:x t:beta:g FROMLONLAT 0 0 BYRADIUS 1 km",
	"XREAD STREAMS t:beta:s 0",
	"XREADGROUP GROUP g c STREAMS t:beta:s >",
	"BLPOP t:beta:l 0",
	"LMPOP 1 t:beta:l LEFT",
	"BLMPOP 0 1 t:beta:l LEFT",
	"EVAL s 1 t:beta:secret",
	"FCALL f 1 t:beta:secret",
	"SORT t:beta:l",
	"SORT mine BY t:beta:* GET t:beta:*->f GET # STORE t:beta:x",
	"SORT_RO mine BY t:beta:w* GET t:beta:o*",
	"KEYS *",
	"KEYS t:beta:*",
	"KEYS [t]:beta:*",
	`KEYS \t:beta:*`,
	"KEYS ?:beta:*",
	"KEYS *beta*",
	"KEYS {t:beta}:*",
	"KEYS [^x]:beta:secret",
	"SCAN 0",
	"SCAN 0 MATCH t:beta:* TYPE string",
	"SCAN 0 MATCH * COUNT 5",
	"SCAN 0 MATCH x MATCH *",
	"HSCAN t:beta:h 0 MATCH f*",
	"CLUSTER KEYSLOT t:beta:secret",
	"CLUSTER GETKEYSINSLOT 0 10",
	"SUBSCRIBE c:beta:news __keyspace@0__:t:beta:secret",
	"SSUBSCRIBE c:beta:news {c:beta}:news",
	"PSUBSCRIBE *",
	"PSUBSCRIBE c:beta:* __keyspace@0__:* __keyspace@0__:t:beta:*",
	"PSUBSCRIBE __keyevent@0__:*",
	"PSUBSCRIBE __key*",
	"PSUBSCRIBE [_][_]keyspace@0__:*",
	"PUBLISH c:beta:news v",
	"PUBLISH __keyspace@0__:t:beta:secret v",
	"SPUBLISH {c:beta}:news v",
	"PUBSUB CHANNELS",
	"PUBSUB CHANNELS *",
	"PUBSUB CHANNELS c:beta:*",
	"PUBSUB NUMSUB c:beta:news",
	"PUBSUB SHARDNUMSUB {c:beta}:news",
	"PUBSUB NUMPAT",
	"CLIENT LIST",
	"CLIENT KILL ID 1",
	"CLIENT TRACKING on REDIRECT 1 BCAST PREFIX t:beta:",
	"MONITOR",
	"CONFIG GET *",
	"INFO keyspace",
	"SCRIPT FLUSH",
	"FUNCTION LOAD code",
}

// betaNames are tenant beta's names, in both modes: keys (one named like
// an acme key), channels and keyspace notification channels.
func betaNames() [][]byte {
	var names [][]byte
	for _, mode := range []namespace.Mode{namespace.Spread, namespace.OneSlot} {
		beta := namespace.MustNew("beta", mode)
		for _, k := range []string{"secret", "", "x", "t:acme:x", "*", "l"} {
			key := beta.AppendKey(nil, []byte(k))
			ch, _ := beta.AppendChannel(nil, []byte(k))
			names = append(names, key, ch, append([]byte("__keyspace@0__:"), key...))
		}
	}
	return names
}

// TestAttacks rewrites each attack as acme under the most permissive
// Policy: each is refused, or no argument of the rewritten command equals
// or glob-matches (namespace.Match, Redis's matcher) any name of beta.
func TestAttacks(t *testing.T) {
	names := betaNames()
	refused := 0
	for _, pol := range []*rules.Policy{nil, open} {
		for _, mode := range []namespace.Mode{namespace.Spread, namespace.OneSlot} {
			rw := rules.NewRewriter(namespace.MustNew("acme", mode), pol)
			for _, line := range attacks {
				out, plan, err := rw.Rewrite(argv(line))
				if err != nil {
					refused++
					continue
				}
				if !plan.Forward() {
					continue
				}
				for _, arg := range out[1:] {
					for _, name := range names {
						if bytes.Equal(arg, name) || namespace.Match(arg, name) {
							t.Errorf("%v %s: %q reaches beta's %q (rewritten: %q)", mode, line, arg, name, join(out))
						}
					}
				}
			}
		}
	}
	if refused == 0 || refused == 4*len(attacks) {
		t.Errorf("%d of %d refused", refused, 4*len(attacks))
	}
}

// TestAttackNamesAreReachable checks the test itself: beta's names are
// matched by the unrewritten attacks, so the check above is not vacuous.
func TestAttackNamesAreReachable(t *testing.T) {
	names := betaNames()
	reached := 0
	for _, line := range attacks {
		for _, arg := range argv(line)[1:] {
			for _, name := range names {
				if bytes.Equal(arg, name) || namespace.Match(arg, name) {
					reached++
				}
			}
		}
	}
	if reached < len(attacks) {
		t.Errorf("only %d argument/name pairs match before rewriting", reached)
	}
}
