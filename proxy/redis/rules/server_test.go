package rules_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tenantguard/tenantguard/proxy/redis/namespace"
	"github.com/tenantguard/tenantguard/proxy/redis/rules"
	"github.com/tenantguard/tenantguard/test/harness"
)

// startRedis starts a redis-server of the test's own.
func startRedis(t *testing.T) *redis.Client { return harness.FreshRedis(t) }

// tenant runs commands of one tenant through a Rewriter on rdb.
type tenant struct {
	t   *testing.T
	rdb *redis.Client
	rw  *rules.Rewriter
}

// do rewrites and runs line (arguments separated by spaces); it fails t on
// a refusal or a Redis error and returns the reply, a nil reply as nil.
func (tn *tenant) do(line string) any {
	tn.t.Helper()
	return tn.doArgs(argv(line)...)
}

// doArgs is do with the arguments given one by one.
func (tn *tenant) doArgs(in ...[]byte) any {
	tn.t.Helper()
	line := join(in)
	out, plan, err := tn.rw.Rewrite(in)
	if err != nil || !plan.Forward() {
		tn.t.Fatalf("%s: %v %v", line, plan, err)
	}
	args := make([]any, len(out))
	for i, a := range out {
		args[i] = string(a)
	}
	v, err := tn.rdb.Do(context.Background(), args...).Result()
	if errors.Is(err, redis.Nil) {
		return nil
	}
	if err != nil {
		tn.t.Fatalf("%s (sent as %q): %v", line, join(out), err)
	}
	return v
}

// expect runs line and checks the reply's fmt.Sprint form.
func (tn *tenant) expect(line, want string) {
	tn.t.Helper()
	if got := fmt.Sprint(tn.do(line)); got != want {
		tn.t.Errorf("%s: got %s, want %s", line, got, want)
	}
}

// keys returns the tenant's keys, unprefixed, as SCAN through the Rewriter
// sees them.
func (tn *tenant) scanKeys() []string {
	tn.t.Helper()
	var keys []string
	cursor := "0"
	for {
		reply := tn.do("SCAN " + cursor + " COUNT 3").([]any)
		for _, k := range reply[1].([]any) {
			key, ok := tn.rw.Namespace().StripKey([]byte(k.(string)))
			if !ok {
				tn.t.Fatalf("SCAN returned foreign key %q", k)
			}
			keys = append(keys, string(key))
		}
		if cursor = reply[0].(string); cursor == "0" {
			break
		}
	}
	slices.Sort(keys)
	return keys
}

// TestRewrittenCommandsOnRedis runs rewritten commands of two tenants on a
// real redis-server: they are valid commands with the intended effect, a
// tenant's KEYS, SCAN, SORT and notifications see its own data only, and
// every key in the server ends up under one of the two prefixes.
func TestRewrittenCommandsOnRedis(t *testing.T) {
	rdb := startRedis(t)
	ctx := context.Background()
	a := &tenant{t, rdb, rules.NewRewriter(namespace.MustNew("acme", namespace.Spread), open)}
	b := &tenant{t, rdb, rules.NewRewriter(namespace.MustNew("beta", namespace.OneSlot), open)}
	if err := rdb.ConfigSet(ctx, "notify-keyspace-events", "KA").Err(); err != nil {
		t.Fatal(err)
	}
	sub := rdb.PSubscribe(ctx)
	defer sub.Close()
	for _, p := range []string{"__keyspace@0__:*", "news.*"} {
		out, _, err := a.rw.Rewrite(argv("PSUBSCRIBE " + p))
		if err != nil {
			t.Fatal(err)
		}
		if err := sub.PSubscribe(ctx, string(out[1])); err != nil {
			t.Fatal(err)
		}
	}

	// beta's secrets, which acme must never see.
	for _, line := range []string{"SET secret s3cr3t", "RPUSH l 9", "SET w_9 1", "HSET o_9 name s3cr3t",
		"XADD st 1-1 f s3cr3t", "SADD s s3cr3t", "SET x s3cr3t"} {
		b.do(line)
	}
	b.expect("PUBLISH news.b s3cr3t", "0")

	a.expect("SET k v", "OK")
	a.expect("MSET k1 v1 k2 v2", "OK")
	a.expect("MGET k k1 k2 secret", "[v v1 v2 <nil>]")
	a.expect("COPY k kc", "1")
	a.expect("COPY k kd DB 0", "1")
	a.expect("RENAME kd ke", "OK")
	a.expect("EXISTS k kc ke kd secret", "3")
	a.expect("RPUSH l 3 1 2", "3")
	a.expect("MSET w_1 3 w_2 2 w_3 1", "OK")
	a.expect("HSET o_1 name one", "1")
	a.expect("HSET o_2 name two", "1")
	a.expect("HSET o_3 name three", "1")
	a.expect("SORT l BY w_* GET # GET o_*->name", "[3 three 2 two 1 one]")
	a.expect("SORT l BY nosort", "[3 1 2]")
	a.expect("SORT l BY w_* GET o_*->name STORE sorted", "3")
	a.expect("LRANGE sorted 0 -1", "[three two one]")
	a.expect("SORT_RO l ALPHA DESC LIMIT 0 2", "[3 2]")
	a.expect("LMOVE l l2 LEFT RIGHT", "3")
	a.expect("BLPOP nothing l2 1", "[t:acme:l2 3]") // the session strips the key
	a.expect("LMPOP 2 nothing l LEFT COUNT 5", "[t:acme:l [1 2]]")
	a.expect("SADD s m", "1")
	a.expect("SUNIONSTORE su s s", "1")
	a.expect("ZADD z1 1 a 2 b", "2")
	a.expect("ZADD z2 1 b", "1")
	a.expect("ZUNIONSTORE zu 2 z1 z2 WEIGHTS 1 2", "2")
	a.expect("ZRANGE zu 0 -1 WITHSCORES", "[a 1 b 4]")
	a.expect("GEOADD g 13.361389 38.115556 Palermo", "1")
	a.expect("GEORADIUS g 15 37 200 km STORE gs", "1")
	a.expect("GEOSEARCHSTORE gs2 g FROMLONLAT 15 37 BYRADIUS 200 km", "1")
	a.expect("XADD st 1-1 f v", "1-1")
	a.expect("XREAD COUNT 1 STREAMS st nothing 0 0", "[[t:acme:st [[1-1 [f v]]]]]")
	a.expect("XGROUP CREATE st g 0", "OK")
	a.expect("XREADGROUP GROUP g c COUNT 1 STREAMS st >", "[[t:acme:st [[1-1 [f v]]]]]")
	if got := a.doArgs([]byte("EVAL"), []byte("return redis.call('GET', KEYS[1])"), []byte("1"), []byte("k")); got != "v" {
		t.Errorf("EVAL: got %v", got)
	}
	a.expect("OBJECT ENCODING k", "embstr")
	a.expect("TYPE st", "stream")
	a.expect("HSCAN o_1 0 MATCH n* COUNT 5000", "[0 [name one]]")
	a.expect("SINTERCARD 2 s su", "1")
	a.expect("DUMP nothing", "<nil>")
	a.expect("PUBLISH news.a hello", "1")
	a.expect("PUBSUB NUMSUB news.a", "[c:acme:news.a 0]")
	keys := a.do("KEYS *").([]any)
	var got []string
	for _, k := range keys {
		s, ok := a.rw.Namespace().StripKey([]byte(k.(string)))
		if !ok {
			t.Fatalf("KEYS returned foreign key %q", k)
		}
		got = append(got, string(s))
	}
	slices.Sort(got)
	if scanned := a.scanKeys(); !slices.Equal(got, scanned) || len(got) < 20 {
		t.Errorf("KEYS * = %q\nSCAN    %q", got, scanned)
	}
	if !slices.Contains(got, "sorted") || slices.Contains(got, "secret") {
		t.Errorf("KEYS * = %q", got)
	}

	// Notifications: acme hears of its own keys and channels only.
	deadline := time.After(2 * time.Second)
	seen := map[string]bool{}
	for !seen["__keyspace@0__:zu"] || !seen["news.a"] {
		select {
		case msg := <-sub.Channel():
			ch, ok := a.rw.Namespace().AppendStripChannel(nil, []byte(msg.Channel))
			if !ok || strings.Contains(msg.Payload, "s3cr3t") {
				t.Fatalf("acme received %q %q", msg.Channel, msg.Payload)
			}
			seen[string(ch)] = true
		case <-deadline:
			t.Fatalf("notifications missing; got %v", seen)
		}
	}

	all, err := rdb.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range all {
		if !strings.HasPrefix(k, "t:acme:") && !strings.HasPrefix(k, "{t:beta}:") {
			t.Errorf("key %q outside both namespaces", k)
		}
	}
}
