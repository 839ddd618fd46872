package redis

import (
	"sync"
	"time"
)

// bucket is a token bucket: rate tokens a second, holding at most one
// second's worth.
type bucket struct {
	mu     sync.Mutex
	rate   float64
	tokens float64
	last   time.Time
}

func newBucket(rate int, now time.Time) *bucket {
	return &bucket{rate: float64(rate), tokens: float64(rate), last: now}
}

// take spends one token, reporting false when the tenant is over its rate.
func (b *bucket) take(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.tokens = min(b.rate, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// limiter returns the tenant's command bucket, or nil if it has no rate.
func (srv *Server) limiter(tenant string, rate int) *bucket {
	if rate <= 0 {
		return nil
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	b := srv.buckets[tenant]
	if b == nil || b.rate != float64(rate) {
		b = newBucket(rate, time.Now())
		srv.buckets[tenant] = b
	}
	return b
}
