package pg

import (
	"bytes"
	"hash/maphash"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/ristretto/v2"
	"github.com/prometheus/client_golang/prometheus"
)

// The PostgreSQL result cache: results of read-only statements the policy
// opts in (policy.PgCache), kept per pool, answered to a client of the same
// tenant with the same statement, parameters and settings without asking
// the upstream. The pieces:
//
//   - resultcache.go (this file): the store, per-tenant accounting and
//     budgets, and validity by generations;
//   - cacheview.go: what the upstream catalog says (which tables carry the
//     invalidation trigger) and the per-statement plan: may it be cached,
//     which tables it reads, for how long;
//   - cachelisten.go: the listening connection that receives invalidations
//     from every sidecar's writes (and the database's own) and loads the
//     catalog; the cache serves only while it is up;
//   - cacheclient.go: the client's side: keys, holding an extended-protocol
//     segment until its Sync, answering hits as PostgreSQL would, noting
//     writes and session changes;
//   - cachefill.go: capturing a miss's reply from the server connection and
//     storing it; invalidating a client's committed writes.
//
// Validity is by generation, so an invalidation costs an atomic increment
// and never a search: every table the catalog knows has a generation for
// all tenants and one per tenant, and the cache as a whole has one (flushGen).
// An entry records those of the tables it read, taken before its statement
// was sent upstream, and is valid while none has moved. A write bumps the
// writer's tenant's generation of a row-isolated table (row-level security
// keeps it to that tenant's rows) and the all-tenant one of any other
// table; the listener going down replaces the whole view, which no entry
// survives. Stale entries are deleted when looked up, when their tenant
// needs room, or by their TTL.

// resultCaches are the Server's caches, one per pool, made when the policy
// first enables caching.
type resultCaches struct {
	srv     *Server
	metrics *cacheMetrics
	mu      sync.Mutex
	byPool  map[*pool]*resultCache
	closed  bool
}

// forPool returns p's cache, starting it (and its listener) if needed; nil
// once the server is shutting down.
func (r *resultCaches) forPool(p *pool) *resultCache {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	if rc := r.byPool[p]; rc != nil {
		return rc
	}
	if r.byPool == nil {
		r.byPool = map[*pool]*resultCache{}
	}
	rc, err := newResultCache(r.srv, p, r.metrics)
	if err != nil {
		r.srv.log.Error("result cache", "pool", p.key, "error", err)
		return nil
	}
	r.byPool[p] = rc
	rc.listen()
	return rc
}

// all lists the running caches.
func (r *resultCaches) all() []*resultCache {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*resultCache, 0, len(r.byPool))
	for _, rc := range r.byPool {
		out = append(out, rc)
	}
	return out
}

// closePool stops p's cache, if it has one: p is being retired (a cluster
// pool no client uses any more, placement.go).
func (r *resultCaches) closePool(p *pool) {
	r.mu.Lock()
	rc := r.byPool[p]
	delete(r.byPool, p)
	r.mu.Unlock()
	if rc != nil {
		rc.close()
		r.metrics.listener.DeleteLabelValues(p.key)
	}
}

// close stops every cache; their goroutines are gone when it returns.
func (r *resultCaches) close() {
	r.mu.Lock()
	r.closed = true
	caches := r.byPool
	r.byPool = nil
	r.mu.Unlock()
	for _, rc := range caches {
		rc.close()
	}
}

// resultCache is one pool's result cache.
type resultCache struct {
	srv     *Server
	pool    *pool
	log     *slog.Logger
	metrics *cacheMetrics
	store   *ristretto.Cache[uint64, *cacheEntry]
	seed    maphash.Seed

	// view is what the listener last loaded from the catalog; nil while
	// the listener is down: nothing is served or filled then.
	view atomic.Pointer[cacheView]
	// flushGen moves when every entry must go (a write whose effects are
	// unknown, a policy change).
	flushGen atomic.Uint64

	tmu     sync.Mutex
	tenants map[string]*tenantCache

	barrier  barrierState
	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
	// notified counts notifications handled, for tests and the console.
	notified atomic.Uint64
	upSince  atomic.Int64 // unix nanoseconds the view was loaded; 0 when down

	// seen is the doorkeeper (admitFill): a key's hash tag, by slot.
	seen *[doorkeeperSlots]atomic.Uint32
}

// doorkeeperSlots is the size of a pool cache's doorkeeper: 64 KiB.
const doorkeeperSlots = 1 << 14

// admitFill reports whether a miss on the key with hash h is stored.
// Unless the server fills on the first miss, only a key missed before
// recently is: a statement seen once (a point select over a million rows,
// a report run once) then costs the cache a lookup and nothing more, no
// copy of its result and no eviction of an entry that is read. The
// doorkeeper is direct-mapped: a key is "seen" until another key takes its
// slot, so among many keys a repeat is recognised only within a while.
func (rc *resultCache) admitFill(h uint64) bool {
	if rc.seen == nil {
		return true
	}
	slot := &rc.seen[h&(doorkeeperSlots-1)]
	tag := uint32(h>>32) | 1 // never 0, the empty slot
	if slot.Load() == tag {
		return true
	}
	slot.Store(tag)
	return false
}

// tenantCache is one tenant's part of a pool's cache.
type tenantCache struct {
	id    string
	label string
	gens  atomic.Pointer[tenantGens]

	mu      sync.Mutex
	entries map[uint64]*cacheEntry // live entries, by key hash
	// order holds entries in the order they were stored, oldest first,
	// for eviction; entries that left by other ways stay in it until they
	// reach the front or it is compacted.
	order []*cacheEntry
	bytes atomic.Int64

	hits, misses atomic.Uint64
	m            *tenantCacheMetrics
}

// tenantGens are a tenant's generations of the tables of one view.
type tenantGens struct {
	view *cacheView
	g    []atomic.Uint64
}

// cacheEntry is one cached result.
type cacheEntry struct {
	key      []byte // the whole key, compared on every hit
	hash     uint64
	tenant   *tenantCache
	view     *cacheView
	flushGen uint64
	tables   []int    // indices in view of the tables read
	allGens  []uint64 // their all-tenant generations when the statement was sent
	tenGens  []uint64 // and the tenant's
	expires  time.Time
	created  time.Time
	cost     int64

	rowDesc []byte // RowDescription, or NoData; nil when the client did not Describe
	rows    []byte // the DataRows
	tag     []byte // the CommandComplete
	exited  atomic.Bool
}

// entryOverhead is what an entry costs beyond its bytes: the struct, its
// slices' headers, the map slot and ristretto's item.
const entryOverhead = 256

// defaultResultCacheBytes bounds one pool's cache when Config.ResultCacheBytes is 0.
const defaultResultCacheBytes = 64 << 20

func newResultCache(srv *Server, p *pool, m *cacheMetrics) (*resultCache, error) {
	maxCost := srv.cfg.ResultCacheBytes
	if maxCost <= 0 {
		maxCost = defaultResultCacheBytes
	}
	rc := &resultCache{srv: srv, pool: p, log: srv.log.With("component", "result-cache", "pool", p.key), metrics: m,
		seed: maphash.MakeSeed(), tenants: map[string]*tenantCache{}, stop: make(chan struct{}), done: make(chan struct{})}
	if !srv.cfg.CacheFillOnFirstMiss {
		rc.seen = new([doorkeeperSlots]atomic.Uint32)
	}
	store, err := ristretto.NewCache(&ristretto.Config[uint64, *cacheEntry]{
		NumCounters:            max(maxCost/1024*10, 10000),
		MaxCost:                maxCost,
		BufferItems:            64,
		IgnoreInternalCost:     true,
		TtlTickerDurationInSec: 1,
		OnEvict: func(it *ristretto.Item[*cacheEntry]) {
			reason := "capacity"
			if !it.Expiration.IsZero() && !it.Expiration.After(time.Now()) {
				reason = "expired"
			}
			rc.exit(it.Value, reason)
		},
		OnReject: func(it *ristretto.Item[*cacheEntry]) { rc.exit(it.Value, "rejected") },
		OnExit:   func(e *cacheEntry) { rc.exit(e, "deleted") },
	})
	if err != nil {
		return nil, err
	}
	rc.store = store
	return rc, nil
}

// close stops the listener and frees the store.
func (rc *resultCache) close() {
	rc.stopOnce.Do(func() { close(rc.stop) })
	<-rc.done
	rc.store.Close()
}

// tenant returns tenant's state, made on first use.
func (rc *resultCache) tenant(id, label string) *tenantCache {
	rc.tmu.Lock()
	defer rc.tmu.Unlock()
	tc := rc.tenants[id]
	if tc == nil {
		tc = &tenantCache{id: id, label: label, entries: map[uint64]*cacheEntry{}, m: rc.metrics.forTenant(label)}
		rc.tenants[id] = tc
	}
	return tc
}

// existingTenant returns tenant's state if it has any.
func (rc *resultCache) existingTenant(id string) *tenantCache {
	rc.tmu.Lock()
	defer rc.tmu.Unlock()
	return rc.tenants[id]
}

// gensFor returns the tenant's generations of v's tables.
func (tc *tenantCache) gensFor(v *cacheView) *tenantGens {
	for {
		g := tc.gens.Load()
		if g != nil && g.view == v {
			return g
		}
		ng := &tenantGens{view: v, g: make([]atomic.Uint64, len(v.tables))}
		if tc.gens.CompareAndSwap(g, ng) {
			return ng
		}
	}
}

func (rc *resultCache) hash(key []byte) uint64 { return maphash.Bytes(rc.seed, key) }

// lookup returns the valid entry for key, if any. A stale one found on
// the way is deleted.
func (rc *resultCache) lookup(tc *tenantCache, key []byte, h uint64, now time.Time) *cacheEntry {
	e, ok := rc.store.Get(h)
	if !ok || e == nil {
		// Ristretto applies sets asynchronously: an entry stored a moment
		// ago may not be there yet. The tenant's own list has every live
		// entry; looking there only on a miss keeps hits lock-free of it.
		tc.mu.Lock()
		e = tc.entries[h]
		tc.mu.Unlock()
	}
	if e == nil || !bytes.Equal(e.key, key) || e.tenant != tc {
		return nil
	}
	if !rc.valid(e, now) {
		rc.remove(e, "invalidated")
		return nil
	}
	return e
}

// valid reports whether e may still be served.
func (rc *resultCache) valid(e *cacheEntry, now time.Time) bool {
	v := rc.view.Load()
	if v == nil || e.view != v || e.flushGen != rc.flushGen.Load() || !now.Before(e.expires) {
		return false
	}
	tg := e.tenant.gensFor(v)
	for i, t := range e.tables {
		if v.allGen[t].Load() != e.allGens[i] || tg.g[t].Load() != e.tenGens[i] {
			return false
		}
	}
	return true
}

// put stores e, making room in its tenant's budget first. It reports
// whether the entry went in.
func (rc *resultCache) put(e *cacheEntry, budget int64, ttl time.Duration) bool {
	tc := e.tenant
	if e.cost > budget {
		tc.m.evicted("too_large").Inc()
		return false
	}
	if tc.bytes.Load()+e.cost > budget && !rc.makeRoom(tc, e.cost, budget) {
		tc.m.evicted("budget").Inc()
		return false
	}
	tc.mu.Lock()
	tc.entries[e.hash] = e
	tc.order = append(tc.order, e)
	if len(tc.order) > 2*len(tc.entries)+64 {
		// Mostly entries gone by invalidation or TTL: compact, O(n) once
		// per n stores.
		live := tc.order[:0]
		for _, o := range tc.order {
			if !o.exited.Load() {
				live = append(live, o)
			}
		}
		clear(tc.order[len(live):])
		tc.order = live
	}
	tc.mu.Unlock()
	tc.bytes.Add(e.cost)
	tc.m.bytes.Add(float64(e.cost))
	tc.m.entries.Inc()
	if !rc.store.SetWithTTL(e.hash, e, e.cost, ttl) {
		rc.exit(e, "rejected")
		return false
	}
	return true
}

// makeRoom deletes tc's oldest entries until need more bytes fit in
// budget with a tenth of it to spare, so that a tenant whose working set
// is larger than its budget evicts in batches; each entry is looked at
// once. It reports whether the new entry fits.
func (rc *resultCache) makeRoom(tc *tenantCache, need, budget int64) bool {
	target := budget - budget/10
	excess := tc.bytes.Load() + need - target
	tc.mu.Lock()
	var victims []*cacheEntry
	n := 0
	for ; n < len(tc.order) && excess > 0; n++ {
		e := tc.order[n]
		if e.exited.Load() {
			continue
		}
		victims = append(victims, e)
		excess -= e.cost
	}
	clear(tc.order[:n])
	tc.order = tc.order[n:]
	tc.mu.Unlock()
	for _, e := range victims {
		rc.remove(e, "budget")
	}
	return tc.bytes.Load()+need <= budget
}

// remove takes e out now, counting it under reason.
func (rc *resultCache) remove(e *cacheEntry, reason string) {
	rc.exit(e, reason)
	if cur, ok := rc.store.Get(e.hash); ok && cur == e {
		rc.store.Del(e.hash)
	}
}

// exit accounts for e leaving the cache, once, whoever notices first.
func (rc *resultCache) exit(e *cacheEntry, reason string) {
	if e == nil || !e.exited.CompareAndSwap(false, true) {
		return
	}
	tc := e.tenant
	tc.mu.Lock()
	if tc.entries[e.hash] == e {
		delete(tc.entries, e.hash)
	}
	tc.mu.Unlock()
	tc.bytes.Add(-e.cost)
	tc.m.bytes.Sub(float64(e.cost))
	tc.m.entries.Dec()
	tc.m.evicted(reason).Inc()
}

// flush empties the cache: every entry is stale at once (flushGen), and
// is deleted now.
func (rc *resultCache) flush(reason string) {
	rc.flushGen.Add(1)
	// Counted once the entries are gone (tests wait on the count).
	defer rc.metrics.flushes.WithLabelValues(rc.pool.key, reason).Inc()
	rc.tmu.Lock()
	tenants := make([]*tenantCache, 0, len(rc.tenants))
	for _, tc := range rc.tenants {
		tenants = append(tenants, tc)
	}
	rc.tmu.Unlock()
	for _, tc := range tenants {
		tc.mu.Lock()
		es := make([]*cacheEntry, 0, len(tc.entries))
		for _, e := range tc.entries {
			es = append(es, e)
		}
		tc.mu.Unlock()
		for _, e := range es {
			rc.remove(e, "flushed")
		}
	}
}

// invalidate marks table t of v written: for tenant only when the table
// is row-isolated and tenant is known, else for every tenant; tables whose
// foreign keys cascade from it for every tenant (the cascade does not
// follow row-level security); and everything when writing it may change
// tables it does not name (other triggers, rules).
func (rc *resultCache) invalidate(v *cacheView, t int, tenant string, isolated bool) {
	if v == nil || v != rc.view.Load() {
		return // entries of another view are stale already
	}
	tab := &v.tables[t]
	if tab.writesOthers {
		rc.flush("write_with_side_effects")
		return
	}
	if tenant != "" && isolated {
		if tc := rc.existingTenant(tenant); tc != nil {
			tc.gensFor(v).g[t].Add(1)
		}
	} else {
		v.allGen[t].Add(1)
	}
	for _, c := range tab.cascade {
		v.allGen[c].Add(1)
	}
}

// cacheMetrics are the result cache's Prometheus collectors.
type cacheMetrics struct {
	hits      *prometheus.CounterVec
	misses    *prometheus.CounterVec
	unstored  *prometheus.CounterVec
	evictions *prometheus.CounterVec
	bytes     *prometheus.GaugeVec
	entries   *prometheus.GaugeVec
	skipped   *prometheus.CounterVec
	flushes   *prometheus.CounterVec
	listener  *prometheus.GaugeVec
	notified  *prometheus.CounterVec

	mu      sync.Mutex
	tenants map[string]*tenantCacheMetrics
}

// tenantCacheMetrics are one tenant label's collectors, resolved once.
type tenantCacheMetrics struct {
	vec            *cacheMetrics
	label          string
	hits, misses   prometheus.Counter
	firstMisses    prometheus.Counter
	bytes, entries prometheus.Gauge
	evictMu        sync.Mutex
	evictions      map[string]prometheus.Counter
	skipMu         sync.Mutex
	skips          map[string]prometheus.Counter
}

func newCacheMetrics(reg prometheus.Registerer) *cacheMetrics {
	m := &cacheMetrics{
		hits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "tenantguard", Subsystem: "pg_cache", Name: "hits_total",
			Help: "Statements answered from the result cache, by tenant.",
		}, []string{"tenant"}),
		misses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "tenantguard", Subsystem: "pg_cache", Name: "misses_total",
			Help: "Cacheable statements not found in the result cache (sent upstream, their result stored unless first_misses_total counts them), by tenant.",
		}, []string{"tenant"}),
		unstored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "tenantguard", Subsystem: "pg_cache", Name: "first_misses_total",
			Help: "Misses whose result was not stored because the statement had not missed recently (the doorkeeper: stored at its next miss), by tenant.",
		}, []string{"tenant"}),
		evictions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "tenantguard", Subsystem: "pg_cache", Name: "evictions_total",
			Help: "Results that left the cache or were not stored, by tenant and reason: invalidated (a write), expired (TTL), capacity (the pool's bound), budget (the tenant's), too_large, rejected (admission), flushed (listener down, policy change, unknown writes), deleted (replaced).",
		}, []string{"tenant", "reason"}),
		bytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "tenantguard", Subsystem: "pg_cache", Name: "bytes",
			Help: "Bytes of cached results, by tenant (entry overhead included).",
		}, []string{"tenant"}),
		entries: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "tenantguard", Subsystem: "pg_cache", Name: "entries",
			Help: "Cached results, by tenant.",
		}, []string{"tenant"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "tenantguard", Subsystem: "pg_cache", Name: "uncached_total",
			Help: "Statements of tenants with cache rules that bypassed the cache, by tenant and reason: not_cacheable (the parser says so), not_opted_in, uncovered_table, clock_literal, transaction, session_state, listener_down.",
		}, []string{"tenant", "reason"}),
		flushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "tenantguard", Subsystem: "pg_cache", Name: "flushes_total",
			Help: "Whole-cache flushes, by pool and reason: listener_down, catalog_changed, policy_changed, unknown_write, write_with_side_effects.",
		}, []string{"pool", "reason"}),
		listener: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "tenantguard", Subsystem: "pg_cache", Name: "listener_up",
			Help: "1 while the pool's invalidation listener is connected and the cache serves, else 0.",
		}, []string{"pool"}),
		notified: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "tenantguard", Subsystem: "pg_cache", Name: "invalidations_total",
			Help: "Table invalidations, by pool and source: local (a write through this sidecar, at its commit), notification (from any writer, through the database).",
		}, []string{"pool", "source"}),
		tenants: map[string]*tenantCacheMetrics{},
	}
	reg.MustRegister(m.hits, m.misses, m.unstored, m.evictions, m.bytes, m.entries, m.skipped, m.flushes, m.listener, m.notified)
	return m
}

func (m *cacheMetrics) forTenant(label string) *tenantCacheMetrics {
	m.mu.Lock()
	defer m.mu.Unlock()
	tm := m.tenants[label]
	if tm == nil {
		tm = &tenantCacheMetrics{vec: m, label: label,
			hits: m.hits.WithLabelValues(label), misses: m.misses.WithLabelValues(label),
			firstMisses: m.unstored.WithLabelValues(label),
			bytes:       m.bytes.WithLabelValues(label), entries: m.entries.WithLabelValues(label),
			evictions: map[string]prometheus.Counter{}, skips: map[string]prometheus.Counter{}}
		m.tenants[label] = tm
	}
	return tm
}

func (tm *tenantCacheMetrics) evicted(reason string) prometheus.Counter {
	tm.evictMu.Lock()
	defer tm.evictMu.Unlock()
	c := tm.evictions[reason]
	if c == nil {
		c = tm.vec.evictions.WithLabelValues(tm.label, reason)
		tm.evictions[reason] = c
	}
	return c
}

func (tm *tenantCacheMetrics) skip(reason string) {
	tm.skipMu.Lock()
	c := tm.skips[reason]
	if c == nil {
		c = tm.vec.skipped.WithLabelValues(tm.label, reason)
		tm.skips[reason] = c
	}
	tm.skipMu.Unlock()
	c.Inc()
}
