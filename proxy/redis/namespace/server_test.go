package namespace_test

import (
	"context"
	"math/rand/v2"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/tenantguard/tenantguard/proxy/redis/namespace"
	"github.com/tenantguard/tenantguard/test/harness"
)

// startRedis starts a redis-server of the test's own.
func startRedis(t *testing.T) *redis.Client { return harness.FreshRedis(t) }

// randomGlob draws a string over a small alphabet rich in glob syntax, so
// that random patterns and keys often match.
func randomGlob(rng *rand.Rand, max int) string {
	const alphabet = "ab-]^[*?\\:\x00\xff\x80{}"
	b := make([]byte, rng.IntN(max+1))
	for i := range b {
		b[i] = alphabet[rng.IntN(len(alphabet))]
	}
	return string(b)
}

// TestMatchAgainstRedis checks Match against KEYS on a real redis-server
// for the hand-made cases and thousands of random patterns.
func TestMatchAgainstRedis(t *testing.T) {
	rdb := startRedis(t)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 2))
	keys := map[string]bool{}
	for _, tc := range matchCases {
		keys[tc.s] = true
	}
	for range 400 {
		keys[randomGlob(rng, 5)] = true
	}
	pipe := rdb.Pipeline()
	for k := range keys {
		pipe.Set(ctx, k, "1", 0)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	patterns := map[string]bool{}
	for _, tc := range matchCases {
		patterns[tc.pattern] = true
	}
	for range 3000 {
		patterns[randomGlob(rng, 6)] = true
	}
	for p := range patterns {
		got, err := rdb.Keys(ctx, p).Result()
		if err != nil {
			t.Fatalf("KEYS %q: %v", p, err)
		}
		matched := map[string]bool{}
		for _, k := range got {
			matched[k] = true
		}
		for k := range keys {
			want, got := matched[k], namespace.Match([]byte(p), []byte(k))
			if p == "*" && k == "" {
				got = true // KEYS answers "*" without the matcher
			}
			if got != want {
				t.Errorf("Match(%q, %q) = %v, redis-server says %v", p, k, got, want)
			}
		}
	}
}
