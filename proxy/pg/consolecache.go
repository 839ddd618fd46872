package pg

import (
	"encoding/json"
	"net/http"
	"sort"
	"time"
)

// CacheStats is one tenant's part of one pool's result cache.
type CacheStats struct {
	Pool     string    `json:"pool"`
	Tenant   string    `json:"tenant"`
	Entries  int       `json:"entries"`
	Bytes    int64     `json:"bytes"`
	Budget   int64     `json:"budget"`
	Hits     uint64    `json:"hits"`
	Misses   uint64    `json:"misses"`
	Listener bool      `json:"listener_up"`
	UpSince  time.Time `json:"listener_up_since,omitzero"`
}

// CacheStats snapshots the result caches, by pool and tenant: what SHOW
// CACHE prints and the admin API serves.
func (srv *Server) CacheStats() []CacheStats {
	snap := srv.policy.Load()
	var out []CacheStats
	for _, rc := range srv.caches.all() {
		up := rc.view.Load() != nil
		var since time.Time
		if ns := rc.upSince.Load(); ns > 0 {
			since = time.Unix(0, ns)
		}
		rc.tmu.Lock()
		tenants := make([]*tenantCache, 0, len(rc.tenants))
		for _, tc := range rc.tenants {
			tenants = append(tenants, tc)
		}
		rc.tmu.Unlock()
		for _, tc := range tenants {
			tc.mu.Lock()
			n := len(tc.entries)
			tc.mu.Unlock()
			t, _ := snap.Tenant(tc.id)
			out = append(out, CacheStats{Pool: rc.pool.key, Tenant: tc.id, Entries: n, Bytes: tc.bytes.Load(),
				Budget: snap.PgCache().TenantBytes(t), Hits: tc.hits.Load(), Misses: tc.misses.Load(),
				Listener: up, UpSince: since})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Pool != out[j].Pool {
			return out[i].Pool < out[j].Pool
		}
		return out[i].Tenant < out[j].Tenant
	})
	return out
}

// showCache is SHOW CACHE: the result cache per pool and tenant.
func (srv *Server) showCache() *resultSet {
	res := &resultSet{cols: []string{"database", "tenant", "entries", "bytes", "budget", "hits", "misses", "listener"}}
	for _, c := range srv.CacheStats() {
		state := "down"
		if c.Listener {
			state = "up"
		}
		res.rows = append(res.rows, []string{c.Pool, c.Tenant, itoa(c.Entries), i64(c.Bytes), i64(c.Budget),
			i64(int64(c.Hits)), i64(int64(c.Misses)), state})
	}
	return res
}

// CacheHandler serves CacheStats as JSON, read-only (the sidecar mounts it
// on its admin listener as GET /cache/pg). It shows what SHOW CACHE does:
// counts and sizes per pool and tenant, never a statement or a result.
func (srv *Server) CacheHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		stats := srv.CacheStats()
		if stats == nil {
			stats = []CacheStats{}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(stats)
	})
}
