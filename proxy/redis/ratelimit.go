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

// limiter returns the tenant's command bucket.
func (srv *Server) limiter(tenant string) *bucket {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	b := srv.buckets[tenant]
	if b == nil {
		b = &bucket{}
		srv.buckets[tenant] = b
	}
	return b
}
