package redis_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/tenantguard/tenantguard/internal/fixture/redisserver"
	proxyredis "github.com/tenantguard/tenantguard/proxy/redis"
	"github.com/tenantguard/tenantguard/proxy/redis/clustermap"
	"github.com/tenantguard/tenantguard/proxy/redis/namespace"
	"github.com/tenantguard/tenantguard/test/harness"
)

// startClusterProxy starts a listener whose upstream is the cluster.
func startClusterProxy(t *testing.T, rc *redisserver.Cluster, mode namespace.Mode) *proxy {
	t.Helper()
	return startProxy(t, func(c *proxyredis.Config) {
		c.Upstream, c.Cluster, c.Namespace = "", rc.Seeds(), mode
	})
}

// clusterDirect is a cluster client straight to the upstream (operator).
func clusterDirect(t *testing.T, rc *redisserver.Cluster) *goredis.ClusterClient {
	c := goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: rc.Seeds(), DisableIdentity: true})
	t.Cleanup(func() { c.Close() })
	return c
}

// keysOnMasters counts the keys with prefix on each master.
func keysOnMasters(t *testing.T, ctx context.Context, direct *goredis.ClusterClient, prefix string) map[string]int {
	t.Helper()
	out := map[string]int{}
	var mu sync.Mutex // ForEachMaster calls concurrently
	err := direct.ForEachMaster(ctx, func(ctx context.Context, c *goredis.Client) error {
		keys, err := c.Keys(ctx, prefix+"*").Result()
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		if len(keys) > 0 {
			out[c.Options().Addr] = len(keys)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

var clusterModes = []struct {
	name string
	mode namespace.Mode
}{{"spread", namespace.Spread}, {"one-slot", namespace.OneSlot}}

func TestClusterIsolation(t *testing.T) {
	rc := harness.RedisCluster(t)
	for _, m := range clusterModes {
		t.Run(m.name, func(t *testing.T) {
			ctx := ctxT(t, time.Minute)
			p := startClusterProxy(t, rc, m.mode)
			// Made after the proxy, so closed before its leak check.
			direct := clusterDirect(t, rc)
			acme := p.client(t, "acme", acmeSecret, 2)
			globex := p.client(t, "globex", globexSecret, 2)
			for _, c := range []*goredis.Client{acme, globex} {
				if err := c.FlushDB(ctx).Err(); err != nil {
					t.Fatal(err)
				}
			}
			const n = 200
			pipe := acme.Pipeline()
			for i := range n {
				pipe.Set(ctx, fmt.Sprintf("k%d", i), "acme"+fmt.Sprint(i), 0)
			}
			if _, err := pipe.Exec(ctx); err != nil {
				t.Fatalf("acme pipeline: %v", err)
			}
			if err := globex.Set(ctx, "k0", "globex", 0).Err(); err != nil {
				t.Fatal(err)
			}
			// The tenant's keys live where its mode puts them.
			ns := namespace.MustNew("acme", m.mode)
			spreadOver := keysOnMasters(t, ctx, direct, ns.KeyPrefix())
			switch {
			case m.mode == namespace.Spread && len(spreadOver) != 3:
				t.Errorf("spread: acme's keys on %v, want all 3 masters", spreadOver)
			case m.mode == namespace.OneSlot && len(spreadOver) != 1:
				t.Errorf("one-slot: acme's keys on %v, want one master", spreadOver)
			}
			// Read back through a pipeline split over the masters, in order.
			pipe = acme.Pipeline()
			gets := make([]*goredis.StringCmd, n)
			for i := range n {
				gets[i] = pipe.Get(ctx, fmt.Sprintf("k%d", i))
			}
			if _, err := pipe.Exec(ctx); err != nil {
				t.Fatal(err)
			}
			for i, g := range gets {
				if g.Val() != "acme"+fmt.Sprint(i) {
					t.Fatalf("GET k%d = %q, want acme%d (replies out of order?)", i, g.Val(), i)
				}
			}
			// globex sees only its own.
			if v := globex.Get(ctx, "k0").Val(); v != "globex" {
				t.Errorf("globex GET k0 = %q", v)
			}
			if err := globex.Get(ctx, "k1").Err(); !errors.Is(err, goredis.Nil) {
				t.Errorf("globex GET k1 (acme's) = %v, want nil", err)
			}
			if keys := globex.Keys(ctx, "*").Val(); !slices.Equal(keys, []string{"k0"}) {
				t.Errorf("globex KEYS * = %v", keys)
			}
			keys := acme.Keys(ctx, "*").Val()
			if len(keys) != n {
				t.Errorf("acme KEYS * gave %d keys, want %d", len(keys), n)
			}
			for _, k := range keys {
				if !strings.HasPrefix(k, "k") {
					t.Fatalf("acme KEYS returned %q", k)
				}
			}
			// SCAN walks every master, with the tenant's keys only.
			seen := map[string]bool{}
			for iter := acme.Scan(ctx, 0, "*", 50).Iterator(); iter.Next(ctx); {
				seen[iter.Val()] = true
			}
			if len(seen) != n {
				t.Errorf("acme SCAN saw %d keys, want %d", len(seen), n)
			}
			seen = map[string]bool{}
			for iter := globex.Scan(ctx, 0, "k*", 0).Iterator(); iter.Next(ctx); {
				seen[iter.Val()] = true
			}
			if len(seen) != 1 || !seen["k0"] {
				t.Errorf("globex SCAN saw %v", seen)
			}
			if got := acme.DBSize(ctx).Val(); got != n {
				t.Errorf("acme DBSIZE = %d, want %d", got, n)
			}
			// Writes and deletes stay in the tenant's namespace.
			if err := globex.Del(ctx, "k1", "k2").Err(); err != nil && !strings.HasPrefix(err.Error(), "CROSSSLOT") {
				t.Fatal(err)
			}
			if err := globex.FlushDB(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			if got := acme.DBSize(ctx).Val(); got != n {
				t.Errorf("after globex's FLUSHDB, acme DBSIZE = %d, want %d", got, n)
			}
			if err := acme.FlushDB(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			if left := keysOnMasters(t, ctx, direct, ns.KeyPrefix()); len(left) != 0 {
				t.Errorf("after FLUSHDB acme still has keys on %v", left)
			}
		})
	}
}

func TestClusterCrossSlot(t *testing.T) {
	rc := harness.RedisCluster(t)
	// Two names whose spread-mode keys hash to different slots.
	a, b := "a", "b"
	spread := namespace.MustNew("acme", namespace.Spread)
	if clustermap.KeySlot(spread.AppendKey(nil, []byte(a))) == clustermap.KeySlot(spread.AppendKey(nil, []byte(b))) {
		t.Fatal("test keys share a slot")
	}
	for _, m := range clusterModes {
		t.Run(m.name, func(t *testing.T) {
			ctx := ctxT(t, 30*time.Second)
			p := startClusterProxy(t, rc, m.mode)
			acme := p.client(t, "acme", acmeSecret, 2)
			err := acme.MSet(ctx, a, "1", b, "2").Err()
			if m.mode == namespace.Spread {
				if err == nil || !strings.HasPrefix(err.Error(), "CROSSSLOT ") {
					t.Fatalf("spread MSET over two slots: %v, want CROSSSLOT", err)
				}
				// The user's own hash tag keeps keys together.
				if err := acme.MSet(ctx, "{u}a", "1", "{u}b", "2").Err(); err != nil {
					t.Fatalf("MSET with a hash tag: %v", err)
				}
				spreadTransactions(t, ctx, rc, acme)
				return
			}
			if err != nil {
				t.Fatalf("one-slot MSET: %v", err)
			}
			if v := acme.MGet(ctx, a, b).Val(); len(v) != 2 || v[0] != "1" || v[1] != "2" {
				t.Fatalf("MGET = %v", v)
			}
			// Transactions and multi-key commands anywhere in the namespace.
			cmds, err := acme.TxPipelined(ctx, func(pipe goredis.Pipeliner) error {
				pipe.Incr(ctx, a)
				pipe.RPush(ctx, "list", "x")
				pipe.Rename(ctx, b, "c")
				return nil
			})
			if err != nil || cmds[0].(*goredis.IntCmd).Val() != 2 {
				t.Fatalf("MULTI/EXEC: %v %v", cmds, err)
			}
		})
	}
}

func TestClusterPubSubAndBlocking(t *testing.T) {
	rc := harness.RedisCluster(t)
	ctx := ctxT(t, 30*time.Second)
	p := startClusterProxy(t, rc, namespace.Spread)
	acme := p.client(t, "acme", acmeSecret, 2)
	globex := p.client(t, "globex", globexSecret, 2)
	gsub := globex.Subscribe(ctx, "news")
	defer gsub.Close()
	asub := acme.Subscribe(ctx, "news")
	defer asub.Close()
	for _, s := range []*goredis.PubSub{gsub, asub} {
		if _, err := s.Receive(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := acme.Publish(ctx, "news", "for acme").Err(); err != nil {
		t.Fatal(err)
	}
	msg, err := asub.ReceiveMessage(ctx)
	if err != nil || msg.Channel != "news" || msg.Payload != "for acme" {
		t.Fatalf("acme's subscriber got %v, %v", msg, err)
	}
	if err := globex.Publish(ctx, "news", "for globex").Err(); err != nil {
		t.Fatal(err)
	}
	// globex's first message is its own: acme's never reached it.
	msg, err = gsub.ReceiveMessage(ctx)
	if err != nil || msg.Payload != "for globex" {
		t.Fatalf("globex's subscriber got %v, %v, want only its own message", msg, err)
	}
	// Shard channels live on their slot's node.
	ssub := acme.SSubscribe(ctx, "orders")
	defer ssub.Close()
	gssub := globex.SSubscribe(ctx, "orders")
	defer gssub.Close()
	for _, s := range []*goredis.PubSub{ssub, gssub} {
		if _, err := s.Receive(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := acme.SPublish(ctx, "orders", "o1").Result(); err != nil || n != 1 {
		t.Fatalf("SPUBLISH reached %d, %v; want acme's one subscriber", n, err)
	}
	if msg, err := ssub.ReceiveMessage(ctx); err != nil || msg.Channel != "orders" || msg.Payload != "o1" {
		t.Fatalf("acme's shard subscriber got %v, %v", msg, err)
	}
	if n, err := globex.SPublish(ctx, "orders", "g1").Result(); err != nil || n != 1 {
		t.Fatalf("globex SPUBLISH reached %d, %v", n, err)
	}
	if msg, err := gssub.ReceiveMessage(ctx); err != nil || msg.Payload != "g1" {
		t.Fatalf("globex's shard subscriber got %v, %v, want only its own message", msg, err)
	}
	// Blocking commands on the key's node, woken by another client.
	done := make(chan []string, 1)
	go func() { done <- acme.BLPop(ctx, 10*time.Second, "queue").Val() }()
	// Whether BLPOP blocks before or after the push, it gets the job.
	if err := acme.LPush(ctx, "queue", "job").Err(); err != nil {
		t.Fatal(err)
	}
	if got := <-done; !slices.Equal(got, []string{"queue", "job"}) {
		t.Fatalf("BLPOP = %v", got)
	}
	// globex cannot pop acme's queue.
	if err := acme.RPush(ctx, "queue2", "secret").Err(); err != nil {
		t.Fatal(err)
	}
	if v, err := globex.BLPop(ctx, time.Second, "queue2").Result(); !errors.Is(err, goredis.Nil) {
		t.Fatalf("globex BLPOP of acme's queue = %v, %v", v, err)
	}
}

// spreadTransactions: in spread mode a transaction runs on the node of its
// first key, wherever the tenant's other keys are; one that spans nodes
// fails as a whole.
func spreadTransactions(t *testing.T, ctx context.Context, rc *redisserver.Cluster, acme *goredis.Client) {
	t.Helper()
	ns := namespace.MustNew("acme", namespace.Spread)
	home, _ := nodeOf(t, ctx, rc, clustermap.KeySlot([]byte(ns.KeyPrefix())))
	// Hash tags whose keys live on each master, the tenant's home first.
	tags := map[string]string{}
	for i := 0; len(tags) < 3 && i < 1000; i++ {
		tag := fmt.Sprintf("{h%d}", i)
		addr, _ := nodeOf(t, ctx, rc, clustermap.KeySlot(ns.AppendKey(nil, []byte(tag+"x"))))
		if _, ok := tags[addr]; !ok {
			tags[addr] = tag
		}
	}
	var away, other string
	for addr, tag := range tags {
		switch {
		case addr == home:
		case away == "":
			away = tag
		default:
			other = tag
		}
	}
	if away == "" || other == "" {
		t.Fatalf("no hash tags on two masters other than the tenant's home %s: %v", home, tags)
	}
	if err := acme.Del(ctx, away+"x", away+"y").Err(); err != nil {
		t.Fatal(err)
	}
	cmds, err := acme.TxPipelined(ctx, func(pipe goredis.Pipeliner) error {
		pipe.Incr(ctx, away+"x")
		pipe.IncrBy(ctx, away+"y", 5)
		pipe.MGet(ctx, away+"x", away+"y")
		return nil
	})
	if err != nil {
		t.Fatalf("transaction on a node other than the tenant's home: %v", err)
	}
	if v := cmds[2].(*goredis.SliceCmd).Val(); len(v) != 2 || v[0] != "1" || v[1] != "5" {
		t.Fatalf("MGET in the transaction = %v", v)
	}
	// Over two nodes: nothing runs.
	_, err = acme.TxPipelined(ctx, func(pipe goredis.Pipeliner) error {
		pipe.Incr(ctx, away+"x")
		pipe.Incr(ctx, other+"x")
		return nil
	})
	if err == nil {
		t.Fatal("a transaction over two nodes succeeded")
	}
	if v := acme.Get(ctx, away+"x").Val(); v != "1" {
		t.Fatalf("after the refused transaction %sx = %q, want 1", away, v)
	}
	// An empty transaction needs no node.
	if cmds, err := acme.TxPipelined(ctx, func(goredis.Pipeliner) error { return nil }); err != nil || len(cmds) != 0 {
		t.Fatalf("empty transaction: %v %v", cmds, err)
	}
	// WATCH pins the transaction to the watched key's node.
	err = acme.Watch(ctx, func(tx *goredis.Tx) error {
		n, err := tx.Get(ctx, away+"y").Int()
		if err != nil {
			return err
		}
		_, err = tx.TxPipelined(ctx, func(pipe goredis.Pipeliner) error {
			pipe.Set(ctx, away+"y", n*2, 0)
			return nil
		})
		return err
	}, away+"y")
	if err != nil {
		t.Fatalf("WATCH transaction: %v", err)
	}
	if v := acme.Get(ctx, away+"y").Val(); v != "10" {
		t.Fatalf("after WATCH transaction %sy = %q, want 10", away, v)
	}
}

// TestClusterRefusals: what a cluster upstream cannot do per tenant
// (client-side caching, see refusedOnCluster) is refused with NOPERM naming the rule, and the connection stays usable.
func TestClusterRefusals(t *testing.T) {
	rc := harness.RedisCluster(t)
	ctx := ctxT(t, 30*time.Second)
	p := startClusterProxy(t, rc, namespace.OneSlot)
	acme := p.client(t, "acme", acmeSecret, 2)
	for _, tc := range []struct {
		name, rule string
		args       []any
	}{
		{"CLIENT TRACKING", "cluster-upstream", []any{"CLIENT", "TRACKING", "on"}},
		{"CLUSTER NODES", "cluster", []any{"CLUSTER", "NODES"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := acme.Do(ctx, tc.args...).Err()
			if err == nil || !strings.HasPrefix(err.Error(), "NOPERM ") || !strings.Contains(err.Error(), "(rule "+tc.rule+")") {
				t.Fatalf("%v: %v, want NOPERM (rule %s)", tc.args, err, tc.rule)
			}
			if err := acme.Set(ctx, "still", "usable", 0).Err(); err != nil {
				t.Fatal(err)
			}
		})
	}
}
