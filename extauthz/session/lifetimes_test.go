package session

import (
	"context"
	"testing"
	"time"
)

// TestSetLifetimes changes TTL and MaxAge on a running Store, as a pushed
// policy's sessions.ttl and sessions.max_age do: tokens issued afterwards
// (by Create and by Refresh) use the new TTL, sessions created afterwards
// the new MaxAge, and a session keeps the cap it was created with.
func TestSetLifetimes(t *testing.T) {
	f := newFixture(t, Config{TTL: 10 * time.Minute, MaxAge: time.Hour})
	ctx := context.Background()
	old, _ := f.create(t, "acme", "alice")

	if err := f.store.SetLifetimes(2*time.Minute, 30*time.Minute); err != nil {
		t.Fatal(err)
	}
	if ttl, maxAge := f.store.Lifetimes(); ttl != 2*time.Minute || maxAge != 30*time.Minute {
		t.Fatalf("Lifetimes() = %v, %v; want 2m, 30m", ttl, maxAge)
	}
	now := f.clock.Now().Truncate(time.Second)
	s, tok, err := f.store.Create(ctx, "acme", "bob")
	if err != nil {
		t.Fatal(err)
	}
	if !s.ExpiresAt.Equal(now.Add(2*time.Minute)) || !s.MaxExpiresAt.Equal(now.Add(30*time.Minute)) {
		t.Fatalf("Create after SetLifetimes: expires %v, max %v; want %v, %v", s.ExpiresAt, s.MaxExpiresAt, now.Add(2*time.Minute), now.Add(30*time.Minute))
	}
	if c, err := f.tv.Verify(tok, f.clock.Now()); err != nil || !c.ExpiresAt.Equal(now.Add(2*time.Minute)) {
		t.Fatalf("token: claims %+v, %v; want expiry %v", c, err, now.Add(2*time.Minute))
	}

	// Refresh never shortens a session: go past the old token's expiry
	// minus the new TTL, so the new TTL shows.
	f.clock.Advance(9 * time.Minute)
	now = f.clock.Now().Truncate(time.Second)
	r, _, err := f.store.Refresh(ctx, old.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !r.ExpiresAt.Equal(now.Add(2*time.Minute)) || !r.MaxExpiresAt.Equal(old.MaxExpiresAt) {
		t.Fatalf("Refresh of an older session: expires %v, max %v; want %v, %v (its own cap)", r.ExpiresAt, r.MaxExpiresAt, now.Add(2*time.Minute), old.MaxExpiresAt)
	}

	// A TTL longer than the cap left: Refresh stops at the cap.
	if err := f.store.SetLifetimes(time.Hour, 2*time.Hour); err != nil {
		t.Fatal(err)
	}
	r, _, err = f.store.Refresh(ctx, old.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !r.ExpiresAt.Equal(old.MaxExpiresAt) {
		t.Fatalf("Refresh with ttl past the cap: expires %v, want the cap %v", r.ExpiresAt, old.MaxExpiresAt)
	}
}

func TestSetLifetimesRefusesInvalid(t *testing.T) {
	f := newFixture(t, Config{TTL: 10 * time.Minute, MaxAge: time.Hour})
	for _, tc := range []struct {
		name        string
		ttl, maxAge time.Duration
	}{
		{"zero ttl", 0, time.Hour},
		{"ttl under a second", 500 * time.Millisecond, time.Hour},
		{"max_age under ttl", time.Hour, time.Minute},
		{"negative max_age", time.Minute, -time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := f.store.SetLifetimes(tc.ttl, tc.maxAge); err == nil {
				t.Fatalf("SetLifetimes(%v, %v) succeeded", tc.ttl, tc.maxAge)
			}
			if ttl, maxAge := f.store.Lifetimes(); ttl != 10*time.Minute || maxAge != time.Hour {
				t.Fatalf("after a refused SetLifetimes: %v, %v; want the old 10m, 1h", ttl, maxAge)
			}
		})
	}
}
