package redis_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/tenantguard/tenantguard/policy"
	proxyredis "github.com/tenantguard/tenantguard/proxy/redis"
	"github.com/tenantguard/tenantguard/proxy/redis/namespace"
	"github.com/tenantguard/tenantguard/test/harness"
)

// placedSpec is the fixture's two tenants with a Redis upstream "second"
// at addr, acme placed on acmeOn ("" for the configured upstream).
func placedSpec(addr, acmeOn string) policy.Spec {
	return policy.Spec{
		Clusters: []policy.ClusterSpec{{Name: "second", Redis: &policy.RedisCluster{Address: addr}}},
		Tenants: []policy.TenantSpec{
			{ID: "acme", Passwords: []string{acmeSecret}, Placement: policy.Placement{Redis: acmeOn}},
			{ID: "globex", Passwords: []string{globexSecret}},
		},
	}
}

// exists reports whether key is on the server d talks to.
func exists(t *testing.T, ctx context.Context, d *goredis.Client, key string) bool {
	t.Helper()
	n, err := d.Exists(ctx, key).Result()
	if err != nil {
		t.Fatal(err)
	}
	return n == 1
}

// TestPlacementRoutesTenants: a tenant placed on another redis-server has
// its keys there and only there; it cannot reach what lives under its own
// namespace on the configured server, nor the other tenant's keys; the
// other tenant stays on the configured server. Scripts run as the tenant's
// ACL user, created on the server the tenant is placed on.
func TestPlacementRoutesTenants(t *testing.T) {
	second := harness.FreshRedis(t)
	secondAddr := second.Options().Addr
	p := startProxyWith(t, func(s *policy.Spec) { *s = placedSpec(secondAddr, "second") }, nil)
	ctx := ctxT(t, 30*time.Second)
	first := p.direct(t)
	acme := p.client(t, "acme", acmeSecret, 2)
	globex := p.client(t, "globex", globexSecret, 2)

	if err := acme.Set(ctx, "place:k", "acme-v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := globex.Set(ctx, "place:k", "globex-v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		first.Del(context.Background(), nsKey(t, "globex", "place:k"), nsKey(t, "acme", "place:hidden"))
	})
	ak, gk := nsKey(t, "acme", "place:k"), nsKey(t, "globex", "place:k")
	if !exists(t, ctx, second, ak) || exists(t, ctx, first, ak) {
		t.Fatalf("acme's key must be on the second server only")
	}
	if !exists(t, ctx, first, gk) || exists(t, ctx, second, gk) {
		t.Fatalf("globex's key must be on the configured server only")
	}

	// What acme's namespace holds on the configured server is out of its
	// reach: its commands go to the second server.
	if err := first.Set(ctx, nsKey(t, "acme", "place:hidden"), "on-first", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := acme.Get(ctx, "place:hidden").Result(); !errors.Is(err, goredis.Nil) {
		t.Fatalf("acme read a key of the configured server: %v", err)
	}
	keys, err := acme.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(keys, ",") != "place:k" {
		t.Fatalf("acme's KEYS * = %v, want only place:k", keys)
	}
	if v, err := acme.Get(ctx, "place:k").Result(); err != nil || v != "acme-v" {
		t.Fatalf("acme GET place:k = %q, %v", v, err)
	}
	if v, err := globex.Get(ctx, "place:k").Result(); err != nil || v != "globex-v" {
		t.Fatalf("globex GET place:k = %q, %v", v, err)
	}
	// Transactions, blocking commands and RESP3 (dedicated connections)
	// go to the placed server too.
	if _, err := acme.TxPipelined(ctx, func(pp goredis.Pipeliner) error {
		pp.Set(ctx, "place:tx", "1", 0)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	acme3 := p.client(t, "acme", acmeSecret, 3)
	if err := acme3.RPush(ctx, "place:list", "x").Err(); err != nil {
		t.Fatal(err)
	}
	if v, err := acme3.BLPop(ctx, time.Second, "place:list").Result(); err != nil || v[1] != "x" {
		t.Fatalf("acme BLPOP = %v, %v", v, err)
	}
	if !exists(t, ctx, second, nsKey(t, "acme", "place:tx")) || exists(t, ctx, first, nsKey(t, "acme", "place:tx")) {
		t.Fatalf("acme's transaction must run on the second server only")
	}

	// The script user is made where the tenant is placed.
	if v, err := acme.Eval(ctx, "return redis.call('GET', KEYS[1])", []string{"place:k"}).Result(); err != nil || v != "acme-v" {
		t.Fatalf("acme EVAL = %v, %v", v, err)
	}
	users, err := second.Do(ctx, "ACL", "USERS").StringSlice()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(users, ","), "acme") {
		t.Fatalf("no script user of acme on the second server: %v", users)
	}
	if got := p.metric(t, "tenantguard_redis_upstreams_opened_total", map[string]string{"cluster": "second"}); got != 1 {
		t.Fatalf("upstreams_opened_total{cluster=second} = %v, want 1", got)
	}
}

// TestPlacementMove: moving acme to the second server sends its clients'
// next commands there (an idle one, a RESP3 one with a dedicated
// connection), lets a MULTI open across the move run to its EXEC on the
// old server, closes a subscriber, and leaves globex's traffic without an
// error. Moved back, the unused second upstream is retired.
func TestPlacementMove(t *testing.T) {
	second := harness.FreshRedis(t)
	secondAddr := second.Options().Addr
	p := startProxyWith(t, func(s *policy.Spec) { *s = placedSpec(secondAddr, "") },
		func(c *proxyredis.Config) { c.RetireAfter = 100 * time.Millisecond })
	ctx := ctxT(t, 60*time.Second)
	first := p.direct(t)
	keys := []string{"move:before", "move:tx1", "move:tx2", "move:after", "move:resp3", "move:pub"}
	t.Cleanup(func() {
		for _, k := range keys {
			first.Del(context.Background(), nsKey(t, "acme", k))
		}
	})

	// globex works without a pause while acme moves back and forth.
	var globexErr atomic.Value
	var globexOps atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		g := p.client(t, "globex", globexSecret, 2)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			k := fmt.Sprintf("move:g%d", i%16)
			if err := g.Set(ctx, k, i, 0).Err(); err != nil {
				globexErr.Store(err)
				return
			}
			if v, err := g.Get(ctx, k).Int(); err != nil || v != i {
				globexErr.Store(fmt.Errorf("GET %s = %d, %v; want %d", k, v, err, i))
				return
			}
			globexOps.Add(1)
		}
	}()
	defer func() {
		close(stop)
		wg.Wait()
		if err := globexErr.Load(); err != nil {
			t.Errorf("globex: %v", err)
		}
		if globexOps.Load() == 0 {
			t.Errorf("globex ran no command")
		}
	}()

	idle := authed(t, p, "acme", acmeSecret)
	expect(t, idle.do("SET", "move:before", "1"), "+OK\r\n")
	r3 := authedProto(t, p, "acme", acmeSecret, 3)
	expect(t, r3.do("SET", "move:resp3", "a"), "+OK\r\n")
	tx := authed(t, p, "acme", acmeSecret)
	expect(t, tx.do("MULTI"), "+OK\r\n")
	expect(t, tx.do("SET", "move:tx1", "1"), "+QUEUED\r\n")
	sub := authed(t, p, "acme", acmeSecret)
	if got := sub.do("SUBSCRIBE", "move:pub"); !strings.Contains(got, "subscribe") {
		t.Fatalf("SUBSCRIBE: %q", got)
	}

	p.setPolicy(t, placedSpec(secondAddr, "second"))

	// The subscriber's subscription lives on the old server: closed.
	sub.closed()
	// The open transaction ends where it began.
	expect(t, tx.do("SET", "move:tx2", "2"), "+QUEUED\r\n")
	if got := tx.do("EXEC"); got != "*2\r\n+OK\r\n+OK\r\n" {
		t.Fatalf("EXEC: %q", got)
	}
	for _, k := range []string{"move:tx1", "move:tx2"} {
		if !exists(t, ctx, first, nsKey(t, "acme", k)) || exists(t, ctx, second, nsKey(t, "acme", k)) {
			t.Fatalf("%s: the transaction open across the move must run on the old server only", k)
		}
	}
	// Then it moves.
	expect(t, tx.do("GET", "move:before"), "$-1\r\n")
	expect(t, idle.do("SET", "move:after", "1"), "+OK\r\n")
	expect(t, r3.do("GET", "move:resp3"), "_\r\n")
	expect(t, r3.do("SET", "move:resp3", "b"), "+OK\r\n")
	if !exists(t, ctx, second, nsKey(t, "acme", "move:after")) || exists(t, ctx, first, nsKey(t, "acme", "move:after")) {
		t.Fatalf("acme's command after the move must run on the second server only")
	}
	if v, _ := first.Get(ctx, nsKey(t, "acme", "move:resp3")).Result(); v != "a" {
		t.Fatalf("the RESP3 client's write after the move reached the old server: %q", v)
	}
	if got := p.metric(t, "tenantguard_redis_tenant_moves_total", map[string]string{"result": "moved"}); got < 3 {
		t.Fatalf("tenant_moves_total{result=moved} = %v, want at least 3", got)
	}

	// Back on the configured server, the second upstream has no client
	// and is retired.
	p.setPolicy(t, placedSpec(secondAddr, ""))
	expect(t, idle.do("GET", "move:before"), "$1\r\n1\r\n")
	expect(t, tx.do("GET", "move:before"), "$1\r\n1\r\n")
	expect(t, r3.do("GET", "move:resp3"), "$1\r\na\r\n")
	harness.Eventually(t, 10*time.Second, func() error {
		if got := p.metric(t, "tenantguard_redis_upstreams_retired_total", map[string]string{"cluster": "second"}); got != 1 {
			return fmt.Errorf("upstreams_retired_total{cluster=second} = %v", got)
		}
		return nil
	})
	harness.Eventually(t, 10*time.Second, func() error {
		n, err := second.ClientList(ctx).Result()
		if err != nil {
			return err
		}
		if c := strings.Count(n, "\n"); c > 1 { // the test's own connection
			return fmt.Errorf("%d connections left on the retired upstream:\n%s", c, n)
		}
		return nil
	})
}

// TestPlacementUnknownCredentials: a policy placing a tenant on an
// upstream with credentials the listener lacks fails CheckPlacement; with
// them, it passes.
func TestPlacementUnknownCredentials(t *testing.T) {
	spec := placedSpec("127.0.0.1:1", "second")
	spec.Clusters[0].Redis.Credentials = "second-user"
	snap := mustCompile(t, spec)
	p := startProxy(t, nil)
	if err := p.srv.CheckPlacement(snap); err == nil || !strings.Contains(err.Error(), "second-user") {
		t.Fatalf("CheckPlacement = %v, want an error naming the credentials", err)
	}
	q := startProxy(t, func(c *proxyredis.Config) {
		c.Credentials = map[string]proxyredis.Credential{"second-user": {User: "u", Password: "p"}}
	})
	if err := q.srv.CheckPlacement(snap); err != nil {
		t.Fatalf("CheckPlacement with the credentials: %v", err)
	}
}

// TestPlacementNearCache: each upstream has its own near cache, kept by
// its own invalidations: a tenant moved to another server is never served
// an entry cached from the configured one, is served from the new
// server's cache there, and back on the configured server sees what was
// written there meanwhile.
func TestPlacementNearCache(t *testing.T) {
	second := harness.FreshRedis(t)
	secondAddr := second.Options().Addr
	p := startProxyWith(t, func(s *policy.Spec) { *s = placedSpec(secondAddr, "") }, nearCacheFor([]string{"pnc:*"}, "acme"))
	ctx := ctxT(t, time.Minute)
	first := p.direct(t)
	t.Cleanup(func() { first.Del(context.Background(), nsKey(t, "acme", "pnc:k")) })
	acme := p.client(t, "acme", acmeSecret, 2)
	// cachedRead polls until want is read and served from the cache.
	cachedRead := func(want string) {
		t.Helper()
		hits := p.cacheHits(t, "acme")
		harness.Eventually(t, 10*time.Second, func() error {
			v, err := acme.Get(ctx, "pnc:k").Result()
			if err != nil || v != want {
				return fmt.Errorf("GET: %q, %v; want %q", v, err, want)
			}
			if p.cacheHits(t, "acme") <= hits {
				return fmt.Errorf("no hit")
			}
			return nil
		})
	}
	if err := acme.Set(ctx, "pnc:k", "on-first", 0).Err(); err != nil {
		t.Fatal(err)
	}
	cachedRead("on-first")

	p.setPolicy(t, placedSpec(secondAddr, "second"))
	for range 20 {
		if v, err := acme.Get(ctx, "pnc:k").Result(); !errors.Is(err, goredis.Nil) {
			t.Fatalf("acme, placed on the second server, read %q, %v: the configured upstream's cached entry", v, err)
		}
	}
	if err := acme.Set(ctx, "pnc:k", "on-second", 0).Err(); err != nil {
		t.Fatal(err)
	}
	cachedRead("on-second")
	// The second server's invalidations reach its cache.
	if err := second.Set(ctx, nsKey(t, "acme", "pnc:k"), "direct-second", 0).Err(); err != nil {
		t.Fatal(err)
	}
	cachedRead("direct-second")
	// Meanwhile the configured server's value changes, out of acme's
	// reach: its cache hears of it.
	if err := first.Set(ctx, nsKey(t, "acme", "pnc:k"), "direct-first", 0).Err(); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if v, err := acme.Get(ctx, "pnc:k").Result(); err != nil || v != "direct-second" {
			t.Fatalf("GET on the second server: %q, %v", v, err)
		}
	}
	p.setPolicy(t, placedSpec(secondAddr, ""))
	harness.Eventually(t, 10*time.Second, func() error {
		if v, err := acme.Get(ctx, "pnc:k").Result(); err != nil || v != "direct-first" {
			return fmt.Errorf("GET back on the configured server: %q, %v", v, err)
		}
		return nil
	})
	cachedRead("direct-first")
}

// TestPlacementOnCluster: with a standalone configured upstream, a tenant
// placed on a Redis Cluster has its keys on the cluster's masters only and
// the other tenant's on the standalone server only; neither reaches the
// other's. Moved onto the cluster, acme's next commands go there while
// globex's loop on the cluster sees no error, and redis-benchmark (-P 1
// and -P 16) runs through it without an error.
func TestPlacementOnCluster(t *testing.T) {
	rc := harness.RedisCluster(t)
	spec := func(acmeOn string) policy.Spec {
		return policy.Spec{
			Clusters: []policy.ClusterSpec{{Name: "cl", Redis: &policy.RedisCluster{Seeds: rc.Seeds()}}},
			Tenants: []policy.TenantSpec{
				{ID: "acme", Passwords: []string{acmeSecret}, Placement: policy.Placement{Redis: acmeOn}},
				{ID: "globex", Passwords: []string{globexSecret}, Placement: policy.Placement{Redis: "cl"}},
			},
		}
	}
	p := startProxyWith(t, func(s *policy.Spec) { *s = spec("") }, nil)
	ctx := ctxT(t, 3*time.Minute)
	first := p.direct(t)
	direct := clusterDirect(t, rc)
	acme := p.client(t, "acme", acmeSecret, 2)
	globex := p.client(t, "globex", globexSecret, 2)
	t.Cleanup(func() {
		ctx := context.Background()
		first.Del(ctx, nsKey(t, "acme", "pcl:0"), nsKey(t, "acme", "pcl:1"))
		_ = direct.ForEachMaster(ctx, func(ctx context.Context, c *goredis.Client) error {
			for _, tenant := range []string{"acme", "globex"} {
				keys, _ := c.Keys(ctx, nsKey(t, tenant, "pcl:")+"*").Result()
				for _, k := range keys {
					c.Del(ctx, k)
				}
			}
			return nil
		})
	})
	for i := range 8 {
		k := fmt.Sprintf("pcl:%d", i)
		if err := globex.Set(ctx, k, "g", 0).Err(); err != nil {
			t.Fatal(err)
		}
		if i < 2 {
			if err := acme.Set(ctx, k, "a", 0).Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	onCluster := func(tenant string) int {
		n := 0
		// The fixture is shared: count only this test's keys.
		for _, c := range keysOnMasters(t, ctx, direct, nsKey(t, tenant, "pcl:")) {
			n += c
		}
		return n
	}
	if n := onCluster("globex"); n != 8 {
		t.Fatalf("globex has %d keys on the cluster, want 8", n)
	}
	if n := onCluster("acme"); n != 0 {
		t.Fatalf("acme has %d keys on the cluster, want 0", n)
	}
	if exists(t, ctx, first, nsKey(t, "globex", "pcl:0")) || !exists(t, ctx, first, nsKey(t, "acme", "pcl:0")) {
		t.Fatalf("globex's keys must be on the cluster only, acme's on the standalone server")
	}
	if v, err := acme.Get(ctx, "pcl:5").Result(); !errors.Is(err, goredis.Nil) {
		t.Fatalf("acme read globex's key: %q, %v", v, err)
	}
	if keys, err := globex.Keys(ctx, "pcl:*").Result(); err != nil || len(keys) != 8 {
		t.Fatalf("globex KEYS = %v, %v; want its 8 keys", keys, err)
	}

	stop := make(chan struct{})
	var globexErr atomic.Value
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := globex.Incr(ctx, fmt.Sprintf("pcl:n%d", i%8)).Err(); err != nil {
				globexErr.Store(err)
				return
			}
		}
	}()
	p.setPolicy(t, spec("cl"))
	if err := acme.Set(ctx, "pcl:moved", "a", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if exists(t, ctx, first, nsKey(t, "acme", "pcl:moved")) || onCluster("acme") != 1 {
		t.Fatalf("acme's command after the move must run on the cluster only")
	}
	if v, err := acme.Get(ctx, "pcl:0").Result(); !errors.Is(err, goredis.Nil) {
		t.Fatalf("acme, on the cluster, read its key of the standalone server: %q, %v", v, err)
	}
	runRedisBenchmark(t, p)
	close(stop)
	wg.Wait()
	if err := globexErr.Load(); err != nil {
		t.Fatalf("globex: %v", err)
	}
}

// TestPlacementPubSubResubscribes: a go-redis PubSub whose tenant moves is
// closed, reconnects and subscribes again, and then hears what its tenant
// publishes on the new upstream; the other tenant hears nothing of it.
func TestPlacementPubSubResubscribes(t *testing.T) {
	second := harness.FreshRedis(t)
	secondAddr := second.Options().Addr
	p := startProxyWith(t, func(s *policy.Spec) { *s = placedSpec(secondAddr, "") }, nil)
	ctx := ctxT(t, 30*time.Second)
	acme := p.client(t, "acme", acmeSecret, 2)
	pub := p.client(t, "acme", acmeSecret, 2)
	globex := p.client(t, "globex", globexSecret, 2)
	sub := acme.Subscribe(ctx, "moves")
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	gsub := globex.Subscribe(ctx, "moves")
	defer gsub.Close()
	if _, err := gsub.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	ch := sub.Channel()
	p.setPolicy(t, placedSpec(secondAddr, "second"))
	harness.Eventually(t, 20*time.Second, func() error {
		if err := pub.Publish(ctx, "moves", "after").Err(); err != nil {
			return err
		}
		select {
		case m := <-ch:
			if m.Payload != "after" {
				t.Fatalf("message %+v", m)
			}
			return nil
		case <-time.After(50 * time.Millisecond):
			return errors.New("no message on the new upstream yet")
		}
	})
	if n, err := second.PubSubNumSub(ctx, nsChannel(t, "acme", "moves")).Result(); err != nil || n[nsChannel(t, "acme", "moves")] != 1 {
		t.Fatalf("acme's subscription on the second server: %v, %v", n, err)
	}
	if m, err := gsub.ReceiveTimeout(ctx, 100*time.Millisecond); err == nil {
		t.Fatalf("globex heard %v", m)
	}
}

// nsChannel is channel in tenant's namespace (spread mode).
func nsChannel(t *testing.T, tenant, channel string) string {
	t.Helper()
	ch, ok := namespace.MustNew(tenant, namespace.Spread).AppendChannel(nil, []byte(channel))
	if !ok {
		t.Fatalf("channel %q refused", channel)
	}
	return string(ch)
}
