package redis_test

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	proxyredis "github.com/tenantguard/tenantguard/proxy/redis"
	"github.com/tenantguard/tenantguard/proxy/redis/namespace"
	"github.com/tenantguard/tenantguard/test/harness"
)

// nearCacheFor gives the tenants a near cache on the patterns, with a
// long TTL: what the tests see comes from invalidations, not expiry.
func nearCacheFor(patterns []string, tenants ...string) func(*proxyredis.Config) {
	return func(c *proxyredis.Config) {
		c.NearCache = map[string]proxyredis.NearCacheRule{}
		for _, t := range tenants {
			c.NearCache[t] = proxyredis.NearCacheRule{Patterns: patterns, MaxTTL: time.Hour}
		}
	}
}

func nsKey(t *testing.T, tenant, key string) string {
	t.Helper()
	ns, err := namespace.New(tenant, namespace.Spread)
	if err != nil {
		t.Fatal(err)
	}
	return string(ns.AppendKey(nil, []byte(key)))
}

func (p *proxy) cacheHits(t *testing.T, tenant string) float64 {
	return p.metric(t, "tenantguard_redis_near_cache_hits_total", map[string]string{"tenant": tenant})
}

// TestNearCacheInvalidatedByAnotherClient: a read of a cacheable key is
// answered from the cache once filled; a write by a client of
// redis-server itself, not through the sidecar, is seen by the next read
// once its invalidation has arrived; non-cacheable keys never hit.
func TestNearCacheInvalidatedByAnotherClient(t *testing.T) {
	ctx := ctxT(t, time.Minute)
	p := startProxy(t, nearCacheFor([]string{"nc:user:*"}, "acme"))
	acme := p.client(t, "acme", acmeSecret, 2)
	direct := p.direct(t)
	if err := acme.Set(ctx, "nc:user:1", "v1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	// ristretto admits a new entry asynchronously: poll for the hit.
	harness.Eventually(t, 10*time.Second, func() error {
		if v, err := acme.Get(ctx, "nc:user:1").Result(); err != nil || v != "v1" {
			t.Fatalf("GET: %q, %v", v, err)
		}
		if p.cacheHits(t, "acme") < 1 {
			return fmt.Errorf("no hit")
		}
		return nil
	})
	if err := direct.Set(ctx, nsKey(t, "acme", "nc:user:1"), "v2", 0).Err(); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 10*time.Second, func() error {
		v, err := acme.Get(ctx, "nc:user:1").Result()
		if err != nil || v != "v2" {
			return fmt.Errorf("GET after a direct write: %q, %v", v, err)
		}
		return nil
	})
	// The new value is cached in turn.
	before := p.cacheHits(t, "acme")
	harness.Eventually(t, 10*time.Second, func() error {
		if v, err := acme.Get(ctx, "nc:user:1").Result(); err != nil || v != "v2" {
			t.Fatalf("GET: %q, %v", v, err)
		}
		if p.cacheHits(t, "acme") <= before {
			return fmt.Errorf("the refilled value was not served from the cache")
		}
		return nil
	})
	// Other reads that are cacheable: HGET, with the field in the match.
	if err := acme.HSet(ctx, "nc:user:h", "a", "1", "b", "2").Err(); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"a", "b", "a", "b"} {
		want := map[string]string{"a": "1", "b": "2"}[f]
		if v, err := acme.HGet(ctx, "nc:user:h", f).Result(); err != nil || v != want {
			t.Fatalf("HGET %s: %q, %v", f, v, err)
		}
	}
	if err := acme.Set(ctx, "nc:other:1", "x", 0).Err(); err != nil {
		t.Fatal(err)
	}
	before = p.cacheHits(t, "acme")
	for range 3 {
		if err := acme.Get(ctx, "nc:other:1").Err(); err != nil {
			t.Fatal(err)
		}
	}
	if h := p.cacheHits(t, "acme"); h != before {
		t.Fatalf("a key no pattern matches was served from the cache (%v hits)", h-before)
	}
}

// TestNearCacheWriteThroughSidecar: a write through the sidecar is seen
// by the very next read, pipelined or not, with no wait for an
// invalidation.
func TestNearCacheWriteThroughSidecar(t *testing.T) {
	ctx := ctxT(t, time.Minute)
	p := startProxy(t, nearCacheFor([]string{"*"}, "acme"))
	acme := p.client(t, "acme", acmeSecret, 2)
	for i := range 50 {
		want := fmt.Sprintf("v%d", i)
		if i%2 == 0 {
			if err := acme.Set(ctx, "nc:k", want, 0).Err(); err != nil {
				t.Fatal(err)
			}
		} else {
			pipe := acme.Pipeline()
			pipe.Set(ctx, "nc:k", want, 0)
			get := pipe.Get(ctx, "nc:k")
			if _, err := pipe.Exec(ctx); err != nil {
				t.Fatal(err)
			}
			if get.Val() != want {
				t.Fatalf("pipelined GET after SET %s: %q", want, get.Val())
			}
		}
		for range 2 {
			if v, err := acme.Get(ctx, "nc:k").Result(); err != nil || v != want {
				t.Fatalf("GET after SET %s: %q, %v", want, v, err)
			}
		}
	}
	if p.cacheHits(t, "acme") == 0 {
		t.Fatal("no hit: the test exercised nothing")
	}
	// FLUSHDB (emulated: the tenant's keys) empties the tenant's cache.
	if err := acme.FlushDB(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if v, err := acme.Get(ctx, "nc:k").Result(); err != goredis.Nil {
		t.Fatalf("GET after FLUSHDB: %q, %v", v, err)
	}
}

// TestNearCacheTenantsNeverShare: random reads and writes of random
// tenants on the same key names; every read sees its own tenant's last
// write, never another's, cached or not.
func TestNearCacheTenantsNeverShare(t *testing.T) {
	ctx := ctxT(t, 2*time.Minute)
	p := startProxy(t, nearCacheFor([]string{"*"}, "acme", "globex"))
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	type tenant struct {
		id string
		c  *goredis.Client
		m  map[string]string
	}
	tenants := []*tenant{
		{"acme", p.client(t, "acme", acmeSecret, 2), map[string]string{}},
		{"globex", p.client(t, "globex", globexSecret, 2), map[string]string{}},
	}
	keys := []string{"nc:a", "nc:b", "nc:c", "nc:user:1", "nc:x{1}"}
	for _, tn := range tenants {
		if err := tn.c.Del(ctx, keys...).Err(); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 1500 {
		tn := tenants[rng.IntN(len(tenants))]
		k := keys[rng.IntN(len(keys))]
		switch op := rng.IntN(10); {
		case op < 2:
			v := fmt.Sprintf("%s-%d", tn.id, i)
			if err := tn.c.Set(ctx, k, v, 0).Err(); err != nil {
				t.Fatal(err)
			}
			tn.m[k] = v
		case op < 3:
			if err := tn.c.Del(ctx, k).Err(); err != nil {
				t.Fatal(err)
			}
			delete(tn.m, k)
		default:
			v, err := tn.c.Get(ctx, k).Result()
			if err == goredis.Nil {
				v, err = "<nil>", nil
			}
			want, ok := tn.m[k]
			if !ok {
				want = "<nil>"
			}
			if err != nil || v != want {
				t.Fatalf("step %d: %s GET %s = %q, %v; want %q", i, tn.id, k, v, err, want)
			}
		}
	}
	for _, tn := range tenants {
		if p.cacheHits(t, tn.id) == 0 {
			t.Fatalf("tenant %s never hit the cache: the test exercised nothing", tn.id)
		}
	}
}

// TestNearCacheTrackingLost: when the invalidation connection drops, a
// write made meanwhile, which no invalidation reports, is still seen: the
// whole cache was flushed, and it fills again once reconnected.
func TestNearCacheTrackingLost(t *testing.T) {
	ctx := ctxT(t, time.Minute)
	p := startProxy(t, nearCacheFor([]string{"*"}, "acme"))
	acme := p.client(t, "acme", acmeSecret, 2)
	direct := p.direct(t)
	if err := acme.Set(ctx, "nc:k", "v1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 10*time.Second, func() error {
		if v, err := acme.Get(ctx, "nc:k").Result(); err != nil || v != "v1" {
			t.Fatalf("GET: %q, %v", v, err)
		}
		if p.cacheHits(t, "acme") < 1 {
			return fmt.Errorf("not cached")
		}
		return nil
	})
	p.srv.KillNearCacheTracking()
	harness.Eventually(t, 10*time.Second, func() error {
		if len(p.logs.lines("tracking connection was lost")) == 0 {
			return fmt.Errorf("the loss was not noticed")
		}
		return nil
	})
	// No invalidation can report this write.
	if err := direct.Set(ctx, nsKey(t, "acme", "nc:k"), "v2", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if v, err := acme.Get(ctx, "nc:k").Result(); err != nil || v != "v2" {
		t.Fatalf("GET after the tracking connection dropped: %q, %v", v, err)
	}
	// Reconnected: it caches again, and is invalidated again.
	before := p.cacheHits(t, "acme")
	harness.Eventually(t, 10*time.Second, func() error {
		if v, err := acme.Get(ctx, "nc:k").Result(); err != nil || v != "v2" {
			return fmt.Errorf("GET: %q, %v", v, err)
		}
		if p.cacheHits(t, "acme") <= before {
			return fmt.Errorf("no hit yet")
		}
		return nil
	})
	if err := direct.Set(ctx, nsKey(t, "acme", "nc:k"), "v3", 0).Err(); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 10*time.Second, func() error {
		if v, err := acme.Get(ctx, "nc:k").Result(); err != nil || v != "v3" {
			return fmt.Errorf("GET: %q, %v", v, err)
		}
		return nil
	})
}
