package redis

import (
	"bytes"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/ristretto/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tenantguard/tenantguard/proxy/redis/keyspec"
	"github.com/tenantguard/tenantguard/proxy/redis/namespace"
)

// The near cache answers read commands on a tenant's cacheable keys from
// memory. What makes it safe:
//
//   - Entries live in one ristretto cache per tenant (its byte budget),
//     keyed by the namespaced key and matched on the whole rewritten
//     command, which carries the namespaced key: an entry can only ever
//     answer the tenant whose command filled it.
//   - Fills (cache misses) and writes to cacheable keys go upstream on one
//     connection of the cache's own (nearcache_conn.go), in order, with
//     server-assisted client-side caching on (CLIENT TRACKING on REDIRECT
//     to an invalidation connection): redis-server then reports every
//     later change of a key read there, by any client.
//   - A fill is stored only if no invalidation of its key (from
//     redis-server, or a write through this sidecar) came between its send
//     and its reply, and no flush: fillToken.
//   - When either connection drops, the whole cache is flushed (the epoch
//     moves on) before anything is served from it again.
//
// Only clients on the shared connections in RESP2 use it; a reply is
// cached only when it is passed on unchanged (rules.ReplyPlain).

// NearCacheRule makes some of a tenant's keys cacheable.
type NearCacheRule struct {
	// Patterns are glob patterns (as KEYS takes them) on the tenant's own
	// key names; a key matching one is cacheable.
	Patterns []string
	// MaxTTL bounds how long an entry is served (required): the
	// staleness bound should an invalidation be lost, and the bound on
	// serving a key that expired in redis-server before its expiry was
	// noticed there.
	MaxTTL time.Duration
	// MaxBytes is the tenant's budget of cached replies (default 16 MiB).
	MaxBytes int64
}

// defaultNearCacheBytes is NearCacheRule.MaxBytes' default.
const defaultNearCacheBytes = 16 << 20

// maxCachedReply is the largest reply cached; larger ones are not worth
// a budget's share.
const maxCachedReply = 512 << 10

// nearCache is the Server's near cache; nil when no tenant has a rule.
type nearCache struct {
	srv     *Server
	tenants map[string]*tenantCache // fixed at New

	// mu orders fills against invalidations and flushes (see fillToken).
	mu       sync.Mutex
	inflight map[string][]*fillToken // by namespaced key
	// epoch moves on at every flush; live is set while the tracking
	// connections are up: only then are entries served or stored.
	epoch atomic.Uint64
	live  atomic.Bool

	conns nearCacheConns // nearcache_conn.go

	hits, misses, evictions *prometheus.CounterVec
}

// tenantCache is one tenant's part of the cache.
type tenantCache struct {
	id       string
	rule     NearCacheRule
	patterns [][]byte
	prefix   string // the tenant's namespaced key prefix
	c        *ristretto.Cache[string, *cacheEntry]
	bytes    atomic.Int64 // cost of the entries stored (approximate: ristretto's admission is asynchronous)

	hits, misses, evictions prometheus.Counter
}

// cacheEntry is what is cached for one namespaced key: the replies of the
// read commands seen on it. Never modified once stored.
type cacheEntry struct {
	epoch  uint64
	tenant string
	items  []cacheItem
	cost   int64
}

type cacheItem struct {
	cmd     []byte // the rewritten command (RESP)
	reply   []byte // redis-server's reply (RESP2), as sent to the client
	expires int64  // UnixNano
}

// fillToken is a cache miss on its way upstream: set invalid by any
// invalidation of its key or flush before its reply arrives.
type fillToken struct {
	tc      *tenantCache
	key     string // namespaced
	cmd     []byte
	epoch   uint64
	invalid bool // under nearCache.mu
}

func newNearCache(srv *Server, rules map[string]NearCacheRule, reg prometheus.Registerer) (*nearCache, error) {
	return newNearCacheOf(srv, rules, reg, nil)
}

// newNearCacheOf is newNearCache; with like, the cache of another
// upstream (placement.go) whose counters it shares, and reg unused.
func newNearCacheOf(srv *Server, rules map[string]NearCacheRule, reg prometheus.Registerer, like *nearCache) (*nearCache, error) {
	if len(rules) == 0 {
		return nil, nil
	}
	nc := &nearCache{srv: srv, tenants: map[string]*tenantCache{}, inflight: map[string][]*fillToken{}}
	if like != nil {
		nc.hits, nc.misses, nc.evictions = like.hits, like.misses, like.evictions
		reg = nil
	} else {
		nc.newCounters()
	}
	for id, r := range rules {
		nc.hits.WithLabelValues(id) // exported from the start, at 0
		if r.MaxTTL <= 0 {
			return nil, fmt.Errorf("near cache of tenant %s: max TTL is required", id)
		}
		if r.MaxBytes <= 0 {
			r.MaxBytes = defaultNearCacheBytes
		}
		ns, err := namespace.New(id, srv.cfg.Namespace)
		if err != nil {
			return nil, fmt.Errorf("near cache of tenant %s: %w", id, err)
		}
		tc := &tenantCache{id: id, rule: r, prefix: ns.KeyPrefix(),
			hits: nc.hits.WithLabelValues(id), misses: nc.misses.WithLabelValues(id), evictions: nc.evictions.WithLabelValues(id)}
		for _, p := range r.Patterns {
			tc.patterns = append(tc.patterns, []byte(p))
		}
		tc.c, err = ristretto.NewCache(&ristretto.Config[string, *cacheEntry]{
			NumCounters: max(r.MaxBytes/64, 1024), // about ten per entry of ~640 bytes
			MaxCost:     r.MaxBytes,
			BufferItems: 64,
			OnEvict: func(it *ristretto.Item[*cacheEntry]) {
				tc.bytes.Add(-it.Cost)
				tc.evictions.Inc()
			},
			OnReject: func(it *ristretto.Item[*cacheEntry]) { tc.bytes.Add(-it.Cost) },
		})
		if err != nil {
			return nil, fmt.Errorf("near cache of tenant %s: %w", id, err)
		}
		nc.tenants[id] = tc
	}
	if reg != nil {
		reg.MustRegister(nc.hits, nc.misses, nc.evictions)
		for id, tc := range nc.tenants {
			reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Namespace: "tenantguard", Subsystem: "redis", Name: "near_cache_bytes",
				Help:        "Bytes of replies in the near cache, by tenant (approximate: ristretto admits asynchronously).",
				ConstLabels: prometheus.Labels{"tenant": id},
			}, func() float64 { return float64(max(tc.bytes.Load(), 0)) }))
		}
	}
	return nc, nil
}

// newCounters makes the cache's counters.
func (nc *nearCache) newCounters() {
	nc.hits = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "tenantguard", Subsystem: "redis", Name: "near_cache_hits_total",
		Help: "Read commands answered from the near cache, by tenant.",
	}, []string{"tenant"})
	nc.misses = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "tenantguard", Subsystem: "redis", Name: "near_cache_misses_total",
		Help: "Read commands on cacheable keys sent upstream, by tenant.",
	}, []string{"tenant"})
	nc.evictions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "tenantguard", Subsystem: "redis", Name: "near_cache_evictions_total",
		Help: "Near-cache keys invalidated (by redis-server or a write through the sidecar) or evicted for the budget, by tenant.",
	}, []string{"tenant"})
}

// tenant is the tenant's cache, or nil when it has no rule.
func (nc *nearCache) tenant(id string) *tenantCache {
	if nc == nil {
		return nil
	}
	return nc.tenants[id]
}

// cacheable reports whether the tenant's own key name matches a pattern.
func (tc *tenantCache) cacheable(key []byte) bool {
	for _, p := range tc.patterns {
		if namespace.Match(p, key) {
			return true
		}
	}
	return false
}

// cacheableRead reports whether a command's reply may be cached: it only
// reads, does not block, and its reply depends on nothing but the data
// (not the clock: TTL; not chance: SRANDMEMBER).
func cacheableRead(cmd *keyspec.Command) bool {
	f := cmd.Flags
	if !f.Has(keyspec.FlagReadonly) || f.Has(keyspec.FlagWrite) || f.Has(keyspec.FlagBlocking) ||
		f.Has(keyspec.FlagMovableKeys) || f.Has(keyspec.FlagPubSub) {
		return false
	}
	switch cmd.Name {
	case "ttl", "pttl", "expiretime", "pexpiretime", "memory|usage", "object|freq", "object|idletime",
		"object|refcount", "object|encoding", "dump", "lcs":
		return false
	}
	for _, t := range cmd.Tips {
		if t == "nondeterministic_output" || t == "nondeterministic_output_order" {
			return false
		}
	}
	return true
}

// get returns the cached reply to cmd on key, if there is a live one.
func (nc *nearCache) get(tc *tenantCache, key []byte, cmd []byte) ([]byte, bool) {
	if !nc.live.Load() {
		return nil, false
	}
	e, ok := tc.c.Get(string(key))
	if !ok || e.epoch != nc.epoch.Load() || e.tenant != tc.id {
		return nil, false
	}
	now := time.Now().UnixNano()
	for i := range e.items {
		if it := &e.items[i]; it.expires > now && bytes.Equal(it.cmd, cmd) {
			return it.reply, true
		}
	}
	return nil, false
}

// startFill registers a miss about to be sent upstream.
func (nc *nearCache) startFill(tc *tenantCache, key []byte, cmd []byte) *fillToken {
	t := &fillToken{tc: tc, key: string(key), cmd: append([]byte(nil), cmd...)}
	nc.mu.Lock()
	t.epoch = nc.epoch.Load()
	t.invalid = !nc.live.Load()
	nc.inflight[t.key] = append(nc.inflight[t.key], t)
	nc.mu.Unlock()
	return t
}

// finishFill takes a fill's reply (raw, nil when the connection failed),
// storing it unless it was invalidated meanwhile.
func (nc *nearCache) finishFill(t *fillToken, raw []byte) {
	nc.mu.Lock()
	defer nc.mu.Unlock()
	list := nc.inflight[t.key]
	for i, x := range list {
		if x == t {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(nc.inflight, t.key)
	} else {
		nc.inflight[t.key] = list
	}
	if raw == nil || t.invalid || t.epoch != nc.epoch.Load() || !nc.live.Load() || len(raw) > maxCachedReply ||
		len(raw) > 0 && raw[0] == '-' {
		return
	}
	// Under mu: an invalidation cannot come between the check above and
	// the Set, and a Set followed by a Del is applied in that order.
	tc := t.tc
	item := cacheItem{cmd: t.cmd, reply: append([]byte(nil), raw...), expires: time.Now().Add(tc.rule.MaxTTL).UnixNano()}
	e := &cacheEntry{epoch: t.epoch, tenant: tc.id, items: []cacheItem{item}}
	var oldCost int64
	if old, ok := tc.c.Get(t.key); ok && old.epoch == t.epoch {
		oldCost = old.cost
		now := time.Now().UnixNano()
		for _, it := range old.items {
			if it.expires > now && !bytes.Equal(it.cmd, t.cmd) && len(e.items) < 16 {
				e.items = append(e.items, it)
			}
		}
	}
	for _, it := range e.items {
		e.cost += int64(len(it.cmd) + len(it.reply) + 64)
	}
	e.cost += int64(len(t.key) + 64)
	if tc.c.SetWithTTL(t.key, e, e.cost, tc.rule.MaxTTL) {
		tc.bytes.Add(e.cost - oldCost)
	}
}

// invalidate drops a namespaced key (from an invalidation message, or a
// write through the sidecar) and spoils its fills in flight.
func (nc *nearCache) invalidate(key []byte) {
	nc.mu.Lock()
	defer nc.mu.Unlock()
	nc.invalidateLocked(key)
}

func (nc *nearCache) invalidateLocked(key []byte) {
	for _, t := range nc.inflight[string(key)] {
		t.invalid = true
	}
	delete(nc.inflight, string(key))
	for _, tc := range nc.tenants {
		if !bytes.HasPrefix(key, []byte(tc.prefix)) {
			continue
		}
		if e, ok := tc.c.Get(string(key)); ok {
			tc.bytes.Add(-e.cost)
			tc.evictions.Inc()
		}
		tc.c.Del(string(key))
	}
}

// flush empties the cache: nothing stored before is served again, and no
// fill in flight is stored. live says whether the cache may serve and
// store from now on.
func (nc *nearCache) flush(live bool) {
	nc.mu.Lock()
	defer nc.mu.Unlock()
	nc.epoch.Add(1)
	nc.live.Store(live)
	for _, list := range nc.inflight {
		for _, t := range list {
			t.invalid = true
		}
	}
	clear(nc.inflight)
	for _, tc := range nc.tenants {
		tc.c.Clear()
		tc.bytes.Store(0)
	}
}

// flushTenant empties one tenant's cache (its emulated FLUSHDB); nil
// does nothing.
func (nc *nearCache) flushTenant(tc *tenantCache) {
	if nc == nil || tc == nil {
		return
	}
	nc.mu.Lock()
	defer nc.mu.Unlock()
	for k, list := range nc.inflight {
		kept := list[:0]
		for _, t := range list {
			if t.tc == tc {
				t.invalid = true
			} else {
				kept = append(kept, t)
			}
		}
		if len(kept) == 0 {
			delete(nc.inflight, k)
		} else {
			nc.inflight[k] = kept
		}
	}
	tc.c.Clear()
	tc.bytes.Store(0)
}

// close stops the caches' goroutines.
func (nc *nearCache) close() {
	if nc == nil {
		return
	}
	nc.conns.close()
	for _, tc := range nc.tenants {
		tc.c.Close()
	}
}
