package redis_test

import (
	"context"
	"fmt"
	"os/exec"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// workload runs the same commands against a client and returns every
// reply, rendered, so a proxied run can be compared with a direct one.
func workload(ctx context.Context, t *testing.T, c *goredis.Client, prefix string) []string {
	t.Helper()
	var out []string
	rec := func(cmd goredis.Cmder) {
		v := fmt.Sprint(cmd.(interface{ String() string }).String())
		out = append(out, strings.ReplaceAll(v, prefix, "<p>"))
	}
	k := func(s string) string { return prefix + s }
	cmds := []goredis.Cmder{
		c.Set(ctx, k("s"), "v1", 0), c.Get(ctx, k("s")), c.Append(ctx, k("s"), "x"), c.Incr(ctx, k("n")), c.IncrBy(ctx, k("n"), 5),
		c.MSet(ctx, k("a"), "1", k("b"), "2"), c.MGet(ctx, k("a"), k("b"), k("missing")), c.Exists(ctx, k("a"), k("missing")),
		c.Expire(ctx, k("a"), time.Hour), c.Type(ctx, k("a")), c.Rename(ctx, k("b"), k("b2")), c.Copy(ctx, k("b2"), k("b3"), 0, false),
		c.HSet(ctx, k("h"), "f1", "v1", "f2", "v2"), c.HGetAll(ctx, k("h")), c.HIncrBy(ctx, k("h"), "n", 2), c.HKeys(ctx, k("h")),
		c.RPush(ctx, k("l"), "x", "y", "z"), c.LRange(ctx, k("l"), 0, -1), c.LMove(ctx, k("l"), k("l2"), "LEFT", "RIGHT"), c.LPop(ctx, k("l")),
		c.SAdd(ctx, k("set1"), "a", "b", "c"), c.SAdd(ctx, k("set2"), "b", "c", "d"), c.SInter(ctx, k("set1"), k("set2")),
		c.SUnionStore(ctx, k("set3"), k("set1"), k("set2")), c.SCard(ctx, k("set3")),
		c.ZAdd(ctx, k("z"), goredis.Z{Score: 1, Member: "one"}, goredis.Z{Score: 2, Member: "two"}), c.ZRangeWithScores(ctx, k("z"), 0, -1),
		c.ZUnionStore(ctx, k("z2"), &goredis.ZStore{Keys: []string{k("z"), k("z")}, Weights: []float64{1, 2}}), c.ZScore(ctx, k("z2"), "two"),
		c.XAdd(ctx, &goredis.XAddArgs{Stream: k("st"), ID: "1-1", Values: []string{"f", "v"}}),
		c.XGroupCreate(ctx, k("st"), "g", "0"),
		c.XReadGroup(ctx, &goredis.XReadGroupArgs{Group: "g", Consumer: "c1", Streams: []string{k("st"), ">"}, Count: 10}),
		c.XAck(ctx, k("st"), "g", "1-1"), c.XLen(ctx, k("st")),
		c.XRead(ctx, &goredis.XReadArgs{Streams: []string{k("st"), k("st"), "0", "0"}, Count: 5}),
		c.BLPop(ctx, time.Second, k("missing-list"), k("l2")),
		c.LMPop(ctx, "left", 1, k("missing-list"), k("l")),
		c.Del(ctx, k("a"), k("b2"), k("b3")),
	}
	for _, cmd := range cmds {
		rec(cmd)
	}
	pipe := c.Pipeline()
	var pc []goredis.Cmder
	for i := 0; i < 50; i++ {
		pc = append(pc, pipe.Incr(ctx, k("pipe")))
	}
	_, _ = pipe.Exec(ctx)
	rec(pc[49])
	tx := c.TxPipeline()
	t1 := tx.Incr(ctx, k("tx"))
	t2 := tx.Get(ctx, k("tx"))
	_, _ = tx.Exec(ctx)
	rec(t1)
	rec(t2)
	// WATCH: a transaction whose watched key changed fails.
	err := c.Watch(ctx, func(txn *goredis.Tx) error {
		_, err := txn.TxPipelined(ctx, func(p goredis.Pipeliner) error {
			p.Set(ctx, k("w"), "1", 0)
			return nil
		})
		return err
	}, k("w"))
	out = append(out, fmt.Sprint("watch:", err))
	return out
}

// TestRepliesMatchDirect: the same workload through the sidecar, under
// plain key names, and directly against redis-server, under prefixed names,
// gives the same replies (RESP2 and RESP3).
func TestRepliesMatchDirect(t *testing.T) {
	p := startProxy(t, nil)
	for _, proto := range []int{2, 3} {
		ctx := ctxT(t, 30*time.Second)
		via := p.client(t, "acme", acmeSecret, proto)
		d := goredis.NewClient(&goredis.Options{Addr: p.redis, Protocol: proto, DisableIdentity: true})
		defer d.Close()
		got := workload(ctx, t, via, fmt.Sprintf("m%d:", proto))
		want := workload(ctx, t, d, fmt.Sprintf("direct%d:", proto))
		if len(got) < 40 || !strings.Contains(strings.Join(got, "\n"), "<p>st") {
			t.Fatalf("workload too small or missing stream replies: %q", got)
		}
		t.Logf("resp%d: %d replies match, e.g. %s", proto, len(got), got[33])
		if !reflect.DeepEqual(got, want) {
			for i := range got {
				if i < len(want) && got[i] != want[i] {
					t.Errorf("resp%d reply %d:\n via sidecar: %s\n direct:      %s", proto, i, got[i], want[i])
				}
			}
			t.Fatalf("resp%d: replies differ", proto)
		}
	}
}

// TestScanToCompletion iterates SCAN, HSCAN and KEYS over many keys with
// another tenant's keys present.
func TestScanToCompletion(t *testing.T) {
	p := startProxy(t, nil)
	ctx := ctxT(t, 30*time.Second)
	a := p.client(t, "acme", acmeSecret, 2)
	g := p.client(t, "globex", globexSecret, 2)
	for i := 0; i < 300; i++ {
		if err := a.Set(ctx, fmt.Sprintf("scan:%d", i), i, 0).Err(); err != nil {
			t.Fatal(err)
		}
		if err := g.Set(ctx, fmt.Sprintf("scan:%d", i), i, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	var all []string
	iter := a.Scan(ctx, 0, "scan:*", 50).Iterator()
	for iter.Next(ctx) {
		all = append(all, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	sort.Strings(all)
	seen := map[string]bool{}
	for _, k := range all {
		seen[k] = true
		if !strings.HasPrefix(k, "scan:") {
			t.Fatalf("SCAN returned %q", k)
		}
	}
	if len(seen) != 300 {
		t.Fatalf("SCAN saw %d distinct keys, want 300", len(seen))
	}
}

// TestBlockingAndPubSub: a blocking pop is woken by another client's push;
// PSUBSCRIBE and SUBSCRIBE deliver under plain names, and nothing crosses
// tenants.
func TestBlockingAndPubSub(t *testing.T) {
	p := startProxy(t, nil)
	ctx := ctxT(t, 30*time.Second)
	a := p.client(t, "acme", acmeSecret, 2)
	a2 := p.client(t, "acme", acmeSecret, 2)
	g := p.client(t, "globex", globexSecret, 2)
	res := make(chan []string, 1)
	go func() {
		v, _ := a.BLPop(ctx, 10*time.Second, "jobs").Result()
		res <- v
	}()
	// globex pushing to its own "jobs" must not wake acme.
	if err := g.RPush(ctx, "jobs", "globex-job").Err(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for a2.Exists(ctx, "jobs").Val() == 0 && time.Now().Before(deadline) {
		if err := a2.RPush(ctx, "jobs", "acme-job").Err(); err != nil {
			t.Fatal(err)
		}
	}
	if v := <-res; len(v) != 2 || v[0] != "jobs" || v[1] != "acme-job" {
		t.Fatalf("BLPOP got %v", v)
	}
	sub := a.PSubscribe(ctx, "news.*")
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	gsub := g.Subscribe(ctx, "news.sport")
	defer gsub.Close()
	if _, err := gsub.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := a2.Publish(ctx, "news.sport", "acme goal").Result(); err != nil || n != 1 {
		t.Fatalf("PUBLISH reached %d subscribers (%v), want only acme's", n, err)
	}
	msg, err := sub.ReceiveMessage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if msg.Channel != "news.sport" || msg.Pattern != "news.*" || msg.Payload != "acme goal" {
		t.Fatalf("message %+v", msg)
	}
	if n, err := g.Publish(ctx, "news.sport", "globex goal").Result(); err != nil || n != 1 {
		t.Fatalf("globex PUBLISH reached %d (%v)", n, err)
	}
	gm, err := gsub.ReceiveMessage(ctx)
	if err != nil || gm.Payload != "globex goal" || gm.Channel != "news.sport" {
		t.Fatalf("globex message %+v %v", gm, err)
	}
}

// TestRedisCLI drives the real redis-cli.
func TestRedisCLI(t *testing.T) {
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Fatal("redis-cli not found: install redis-tools")
	}
	p := startProxy(t, nil)
	ctx := ctxT(t, 20*time.Second)
	host, port, _ := strings.Cut(p.addr, ":")
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.CommandContext(ctx, cli, append([]string{"-h", host, "-p", port, "--user", "acme", "--pass", acmeSecret, "--no-auth-warning"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("redis-cli %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if got := run("SET", "cli-key", "cli value"); got != "OK" {
		t.Fatalf("SET: %q", got)
	}
	if got := run("GET", "cli-key"); got != "cli value" {
		t.Fatalf("GET: %q", got)
	}
	if got := run("--scan", "--pattern", "cli-*"); got != "cli-key" {
		t.Fatalf("--scan: %q", got)
	}
	if got := run("-3", "HELLO", "3"); !strings.Contains(got, "proto") {
		t.Fatalf("HELLO 3: %q", got)
	}
	if got := run("MONITOR"); !strings.HasPrefix(got, "NOPERM") {
		t.Fatalf("MONITOR: %q", got)
	}
}

// TestRedisBenchmark runs redis-benchmark's default test set through the
// sidecar, unpipelined and with -P 16, and requires zero errors.
func TestRedisBenchmark(t *testing.T) {
	runRedisBenchmark(t, startProxy(t, nil))
}

// runRedisBenchmark runs redis-benchmark's default set through p as acme,
// with -P 1 and -P 16, and fails on any error.
func runRedisBenchmark(t *testing.T, p *proxy) {
	rb, err := exec.LookPath("redis-benchmark")
	if err != nil {
		t.Fatal("redis-benchmark not found: install redis-tools")
	}
	ctx := ctxT(t, 3*time.Minute)
	host, port, _ := strings.Cut(p.addr, ":")
	for _, pipeline := range []string{"1", "16"} {
		out, err := exec.CommandContext(ctx, rb, "-h", host, "-p", port, "--user", "acme", "-a", acmeSecret, "-c", "50", "-n", "2000", "-P", pipeline, "-q", "--csv").CombinedOutput()
		if err != nil {
			t.Fatalf("redis-benchmark -P %s: %v\n%s", pipeline, err, out)
		}
		for _, line := range strings.Split(string(out), "\n") {
			if strings.Contains(line, "ERR") || strings.Contains(strings.ToLower(line), "error") {
				t.Fatalf("redis-benchmark -P %s: %s", pipeline, line)
			}
		}
		if !strings.Contains(string(out), "\"GET\"") || !strings.Contains(string(out), "\"LRANGE_600 (first 600 elements)\"") {
			t.Fatalf("redis-benchmark -P %s did not run the default set:\n%s", pipeline, out)
		}
	}
}

// TestPubSubRESP3: in RESP3 subscriptions and messages arrive as push
// replies on the client's dedicated connection, with plain channel names.
func TestPubSubRESP3(t *testing.T) {
	p := startProxy(t, nil)
	ctx := ctxT(t, 20*time.Second)
	a := p.client(t, "acme", acmeSecret, 3)
	pub := p.client(t, "acme", acmeSecret, 3)
	g := p.client(t, "globex", globexSecret, 3)
	sub := a.Subscribe(ctx, "alerts")
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := g.Publish(ctx, "alerts", "for globex").Result(); err != nil || n != 0 {
		t.Fatalf("globex PUBLISH reached %d (%v)", n, err)
	}
	if n, err := pub.Publish(ctx, "alerts", "for acme").Result(); err != nil || n != 1 {
		t.Fatalf("acme PUBLISH reached %d (%v)", n, err)
	}
	msg, err := sub.ReceiveMessage(ctx)
	if err != nil || msg.Channel != "alerts" || msg.Payload != "for acme" {
		t.Fatalf("message %+v %v", msg, err)
	}
	// Commands still work on a RESP3 connection with a map reply.
	if err := pub.HSet(ctx, "h3", "a", "1").Err(); err != nil {
		t.Fatal(err)
	}
	if m, err := pub.HGetAll(ctx, "h3").Result(); err != nil || m["a"] != "1" {
		t.Fatalf("HGETALL %v %v", m, err)
	}
}
