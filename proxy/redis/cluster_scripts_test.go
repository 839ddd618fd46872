package redis_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/tenantguard/tenantguard/proxy/redis/clustermap"
	"github.com/tenantguard/tenantguard/proxy/redis/namespace"
	"github.com/tenantguard/tenantguard/test/harness"
)

// incrBy is the kind of script redis-py's Lock and ioredis'
// defineCommand run: keys declared, then read and written.
const incrBy = "local v = redis.call('INCRBY', KEYS[1], ARGV[1]) redis.call('SET', KEYS[2], v) return v"

// TestClusterScripts runs scripts through a Redis Cluster upstream in
// both namespace modes: EVAL on keys of any slot goes to that slot's
// master, as the tenant's ACL user, which then exists on every master
// the tenant's scripts ran on, confined to its prefix; SCRIPT LOAD loads
// on every master, so go-redis' Script (EVALSHA, EVAL on NOSCRIPT) works
// over keys on every master; keys of two slots get Redis' CROSSSLOT. A
// script of acme that builds globex's key names fails on every master,
// globex's keys stay as they were, and globex's own scripts work.
func TestClusterScripts(t *testing.T) {
	rc := harness.RedisCluster(t)
	for _, m := range clusterModes {
		t.Run(m.name, func(t *testing.T) {
			ctx := ctxT(t, 2*time.Minute)
			p := startClusterProxy(t, rc, m.mode)
			direct := clusterDirect(t, rc)
			acme := p.client(t, "acme", acmeSecret, 2)
			globex := p.client(t, "globex", globexSecret, 2)
			for _, c := range []*goredis.Client{acme, globex} {
				if err := c.FlushDB(ctx).Err(); err != nil {
					t.Fatal(err)
				}
			}
			const n = 60
			gns := namespace.MustNew("globex", m.mode)
			for i := range n {
				if err := globex.Set(ctx, fmt.Sprintf("g%d", i), "globex's", 0).Err(); err != nil {
					t.Fatal(err)
				}
			}

			// EVAL, on keys spread over the masters (spread mode) or on
			// the tenant's slot (one-slot): {tag} keeps a pair in one slot.
			for i := range n {
				keys := []string{fmt.Sprintf("{c%d}n", i), fmt.Sprintf("{c%d}copy", i)}
				v, err := acme.Eval(ctx, incrBy, keys, 2).Int()
				if err != nil || v != 2 {
					t.Fatalf("EVAL on %v = %d, %v", keys, v, err)
				}
			}
			if v := acme.Get(ctx, "{c7}copy").Val(); v != "2" {
				t.Fatalf("{c7}copy = %q, want 2", v)
			}
			ns := namespace.MustNew("acme", m.mode)
			on := keysOnMasters(t, ctx, direct, ns.KeyPrefix())
			if m.mode == namespace.Spread && len(on) != 3 {
				t.Fatalf("spread: acme's script keys on %v, want all 3 masters", on)
			}

			// Keys of two slots: Redis' own CROSSSLOT (spread mode; in
			// one-slot mode every key of a tenant shares its slot).
			err := acme.Eval(ctx, incrBy, []string{"a", "b"}, 1).Err()
			switch {
			case m.mode == namespace.Spread && (err == nil || !strings.HasPrefix(err.Error(), "CROSSSLOT")):
				t.Fatalf("spread: EVAL over two slots: %v, want CROSSSLOT", err)
			case m.mode == namespace.OneSlot && err != nil:
				t.Fatalf("one-slot: EVAL over two keys: %v", err)
			}

			// SCRIPT LOAD then EVALSHA on keys of every master; and
			// go-redis' Script, which falls back to EVAL on NOSCRIPT.
			// (A text no EVAL has cached on any master.)
			loaded := incrBy + " -- loaded"
			sha, err := acme.ScriptLoad(ctx, loaded).Result()
			if err != nil || sha != sha1Hex(loaded) {
				t.Fatalf("SCRIPT LOAD = %q, %v; want the script's own SHA1", sha, err)
			}
			for i := range n {
				keys := []string{fmt.Sprintf("{c%d}n", i), fmt.Sprintf("{c%d}copy", i)}
				if v, err := acme.EvalSha(ctx, sha, keys, 3).Int(); err != nil || v != 5 {
					t.Fatalf("EVALSHA on %v = %d, %v", keys, v, err)
				}
			}
			script := goredis.NewScript("return redis.call('INCR', KEYS[1])")
			for i := range n {
				if v, err := script.Run(ctx, acme, []string{fmt.Sprintf("r%d", i)}).Int(); err != nil || v != 1 {
					t.Fatalf("Script.Run on r%d = %d, %v", i, v, err)
				}
			}
			// In RESP3 (a dedicated connection, and a script connection of
			// that protocol on each master).
			acme3 := p.client(t, "acme", acmeSecret, 3)
			for i := range 10 {
				keys := []string{fmt.Sprintf("{c%d}n", i), fmt.Sprintf("{c%d}copy", i)}
				if v, err := acme3.EvalSha(ctx, sha, keys, 1).Int(); err != nil || v != 6 {
					t.Fatalf("RESP3 EVALSHA on %v = %d, %v", keys, v, err)
				}
			}
			if err := acme.EvalSha(ctx, sha1Hex("return 'never sent'"), nil).Err(); err == nil || !strings.HasPrefix(err.Error(), "NOSCRIPT") {
				t.Fatalf("EVALSHA of an unknown script: %v, want NOSCRIPT", err)
			}

			// The script user exists on the masters, confined to acme's
			// namespace.
			var mu sync.Mutex
			users := 0
			if err := direct.ForEachMaster(ctx, func(ctx context.Context, c *goredis.Client) error {
				rules, err := c.Do(ctx, "ACL", "GETUSER", "tenantguard-script:"+string(namespace.AppendEncodedTenant(nil, "acme"))).Result()
				if err != nil {
					return err
				}
				s := fmt.Sprint(rules)
				if strings.Contains(s, "~*") || strings.Contains(s, "allkeys") {
					return fmt.Errorf("%s: script user %s", c.Options().Addr, s)
				}
				// (A master only the other mode's subtest ran scripts on
				// has that mode's prefix.)
				if strings.Contains(s, "keys:~"+ns.KeyPrefix()+"* ") {
					mu.Lock()
					users++
					mu.Unlock()
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if want := map[namespace.Mode]int{namespace.Spread: 3, namespace.OneSlot: 1}[m.mode]; users < want {
				t.Fatalf("acme's script user, confined to %s*, on %d masters, want %d", ns.KeyPrefix(), users, want)
			}

			// Across tenants: built key names of globex's, on every master
			// (spread: the g<i> keys hash all over), refused.
			for i := range n {
				gk := string(gns.AppendKey(nil, []byte(fmt.Sprintf("g%d", i))))
				for _, s := range []string{"return redis.call('GET', ARGV[1])", "return redis.call('SET', ARGV[1], 'acme was here')"} {
					v, err := acme.Eval(ctx, s, nil, gk).Result()
					if err == nil || errors.Is(err, goredis.Nil) || strings.Contains(fmt.Sprint(v), "globex") {
						t.Fatalf("acme script on %s = %v, %v; want refused", gk, v, err)
					}
				}
			}
			for i := range n {
				if v := globex.Get(ctx, fmt.Sprintf("g%d", i)).Val(); v != "globex's" {
					t.Fatalf("globex's g%d = %q after acme's attempts", i, v)
				}
			}
			if v, err := globex.Eval(ctx, incrBy, []string{"{x}n", "{x}copy"}, 5).Int(); err != nil || v != 5 {
				t.Fatalf("globex EVAL = %d, %v", v, err)
			}
			if err := acme.Set(ctx, "still", "usable", 0).Err(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestClusterInfo: INFO on a cluster upstream is the tenant's: its own
// key count summed over the masters, redis_mode standalone, nothing of
// another tenant's or of the nodes.
func TestClusterInfo(t *testing.T) {
	rc := harness.RedisCluster(t)
	for _, m := range clusterModes {
		t.Run(m.name, func(t *testing.T) {
			ctx := ctxT(t, time.Minute)
			p := startClusterProxy(t, rc, m.mode)
			acme := p.client(t, "acme", acmeSecret, 2)
			globex := p.client(t, "globex", globexSecret, 3)
			for _, c := range []*goredis.Client{acme, globex} {
				if err := c.FlushDB(ctx).Err(); err != nil {
					t.Fatal(err)
				}
			}
			for i := range 37 {
				if err := acme.Set(ctx, fmt.Sprintf("k%d", i), "v", 0).Err(); err != nil {
					t.Fatal(err)
				}
			}
			if err := acme.Set(ctx, "ttl", "v", time.Hour).Err(); err != nil {
				t.Fatal(err)
			}
			for i := range 5 {
				if err := globex.Set(ctx, fmt.Sprintf("k%d", i), "v", 0).Err(); err != nil {
					t.Fatal(err)
				}
			}
			info, err := acme.Info(ctx).Result()
			if err != nil {
				t.Fatalf("INFO: %v", err)
			}
			if got := infoField(info, "db0"); got != "keys=38,expires=1,avg_ttl=0" {
				t.Errorf("acme db0 = %q, want keys=38,expires=1", got)
			}
			if got := infoField(info, "redis_mode"); got != "standalone" {
				t.Errorf("redis_mode = %q", got)
			}
			for _, leak := range append([]string{"127.0.0.1", "cluster_enabled", "tcp_port"}, rc.Seeds()...) {
				if strings.Contains(info, leak) {
					t.Errorf("INFO shows %q:\n%s", leak, info)
				}
			}
			ks, err := globex.Info(ctx, "keyspace").Result()
			if err != nil {
				t.Fatalf("globex INFO keyspace (RESP3): %v", err)
			}
			if got := infoField(ks, "db0"); got != "keys=5,expires=0,avg_ttl=0" {
				t.Errorf("globex db0 = %q, want keys=5", got)
			}
			if err := acme.Do(ctx, "INFO", "persistence").Err(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestClusterScriptRedirectNotReplayed: a script whose declared key's
// slot is migrating gets -ASK from its master. The sidecar replays
// redirected commands of its shared connections on its own control
// connections, which run as its own (unconfined) user: a script replayed
// there could read any tenant's keys. So a script's redirection is not
// replayed: the client gets -TRYAGAIN, and globex's key, on the node the
// script would have been replayed on, stays unread.
func TestClusterScriptRedirectNotReplayed(t *testing.T) {
	rc := harness.RedisCluster(t)
	ctx := ctxT(t, time.Minute)
	p := startClusterProxy(t, rc, namespace.Spread)
	direct := clusterDirect(t, rc)
	acme := p.client(t, "acme", acmeSecret, 2)
	globex := p.client(t, "globex", globexSecret, 2)
	ans, gns := namespace.MustNew("acme", namespace.Spread), namespace.MustNew("globex", namespace.Spread)
	slots, err := direct.ClusterSlots(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	masterOf := func(key []byte) string {
		s := int(clustermap.KeySlot(key))
		for _, r := range slots {
			if r.Start <= s && s <= r.End {
				return r.Nodes[0].Addr
			}
		}
		t.Fatalf("no master for slot %d", s)
		return ""
	}
	acmeKey := "{s}absent"
	slot := clustermap.KeySlot(ans.AppendKey(nil, []byte(acmeKey)))
	src := masterOf(ans.AppendKey(nil, []byte(acmeKey)))
	// globex's key on another master: where the ASK points.
	var dst, globexKey string
	for i := 0; dst == ""; i++ {
		k := fmt.Sprintf("secret%d", i)
		if m := masterOf(gns.AppendKey(nil, []byte(k))); m != src {
			dst, globexKey = m, k
		}
	}
	if err := globex.Set(ctx, globexKey, "globex's secret", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := acme.Del(ctx, acmeKey).Err(); err != nil {
		t.Fatal(err)
	}
	// A script connection to src, as acme's user, before the migration.
	script := "return redis.call('GET', ARGV[1])"
	rawGlobex := string(gns.AppendKey(nil, []byte(globexKey)))
	if err := acme.Eval(ctx, "return 1", []string{acmeKey}).Err(); err != nil {
		t.Fatal(err)
	}
	id := func(addr string) string {
		out, err := rc.Do(ctx, addr, "CLUSTER", "MYID")
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(out)
	}
	srcID, dstID := id(src), id(dst)
	s := fmt.Sprint(slot)
	for _, c := range [][]string{{dst, "IMPORTING", srcID}, {src, "MIGRATING", dstID}} {
		if out, err := rc.Do(ctx, c[0], "CLUSTER", "SETSLOT", s, c[1], c[2]); err != nil || strings.HasPrefix(out, "ERR") {
			t.Fatalf("SETSLOT %s on %s: %s %v", c[1], c[0], out, err)
		}
	}
	t.Cleanup(func() {
		for _, addr := range []string{src, dst} {
			if out, err := rc.Do(context.Background(), addr, "CLUSTER", "SETSLOT", s, "STABLE"); err != nil || strings.HasPrefix(out, "ERR") {
				t.Errorf("SETSLOT STABLE on %s: %s %v", addr, out, err)
			}
		}
	})
	v, err := acme.Eval(ctx, script, []string{acmeKey}, rawGlobex).Result()
	if err == nil || strings.Contains(fmt.Sprint(v), "secret") {
		t.Fatalf("acme's script under ASK = %v, %v: replayed unconfined", v, err)
	}
	if !strings.HasPrefix(err.Error(), "TRYAGAIN") {
		t.Fatalf("acme's script under ASK: %v, want TRYAGAIN", err)
	}
	if got := p.metric(t, "tenantguard_redis_cluster_redirects_total", map[string]string{"kind": "ask", "outcome": "refused"}); got < 1 {
		t.Fatalf("redirects{ask,refused} = %v: the script was not redirected", got)
	}
	if v := globex.Get(ctx, globexKey).Val(); v != "globex's secret" {
		t.Fatalf("globex's key = %q", v)
	}
	if err := acme.Set(ctx, "still", "usable", 0).Err(); err != nil {
		t.Fatal(err)
	}
}
