package redis

import (
	"sync"
	"time"
)

// bucket is a tenant's token bucket, shared by its sessions: rate tokens a
// second, holding at most one second's worth. The rate is the caller's, read
// from its current snapshot at each command, so a policy change applies at
// once and every client of the tenant keeps drawing on the same bucket.
type bucket struct {
	mu     sync.Mutex
	tokens float64
	last   time.Time // zero until the first take: the bucket starts full
}

// take spends one token at rate tokens a second (rate > 0), reporting
// false when the tenant is over its rate.
func (b *bucket) take(now time.Time, rate int) bool {
	r := float64(rate)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.last.IsZero() {
		b.tokens = r
	} else {
		b.tokens = min(r, b.tokens+now.Sub(b.last).Seconds()*r)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// tenantShare is what a tenant's sessions on the listener share: its
// command bucket and what is known of its traffic (lane.go).
type tenantShare struct {
	rate bucket
	load tenantLoad
}

// share returns the tenant's tenantShare.
func (srv *Server) share(tenant string) *tenantShare {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	ts := srv.shares[tenant]
	if ts == nil {
		ts = &tenantShare{load: tenantLoad{turned: srv.metrics.bulky.WithLabelValues(srv.tenantLabelLocked(tenant))}}
		srv.shares[tenant] = ts
	}
	return ts
}
