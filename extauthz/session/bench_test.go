package session

import (
	"context"
	"fmt"
	"testing"
)

// BenchmarkCheckCached is the ext_authz steady state: token verification
// (both signatures) plus a verdict cache hit.
func BenchmarkCheckCached(b *testing.B) {
	f := newFixture(b, Config{})
	v := f.verifier(b)
	ctx := context.Background()
	_, tok := f.create(b, "acme", "alice")
	if _, err := v.Check(ctx, tok); err != nil {
		b.Fatal(err)
	}
	v.cache.Wait()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := v.Check(ctx, tok); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.StopTimer()
	if hits := count(v.m.cacheHits); hits < b.N {
		b.Fatalf("%d cache hits for %d checks", hits, b.N)
	}
}

// BenchmarkCheckUncached adds one Redis round trip (HMGET) per check.
func BenchmarkCheckUncached(b *testing.B) {
	f := newFixture(b, Config{})
	v := f.verifier(b)
	ctx := context.Background()
	toks := make([]string, 64)
	for i := range toks {
		_, toks[i] = f.create(b, "acme", fmt.Sprintf("user%d", i))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		tok := toks[i%len(toks)]
		v.cache.Del(keyOf(tok))
		if _, err := v.Check(ctx, tok); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRecord is the per-request analytics cost.
func BenchmarkRecord(b *testing.B) {
	f := newFixture(b, Config{})
	v := f.verifier(b)
	s, _ := f.create(b, "acme", "alice")
	id, _ := parseID(s.ID)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := uint64(0)
		for pb.Next() {
			i++
			v.Record(id, i%64+1, "")
		}
	})
}

// BenchmarkTokenVerify is the baseline: signature and time checks alone,
// which every Check pays before the cache.
func BenchmarkTokenVerify(b *testing.B) {
	f := newFixture(b, Config{})
	_, tok := f.create(b, "acme", "alice")
	now := f.clock.Now()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := f.tv.Verify(tok, now); err != nil {
				b.Fatal(err)
			}
		}
	})
}
