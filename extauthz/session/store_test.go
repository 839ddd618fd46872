package session

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/extauthz/token"
)

func TestCreateGet(t *testing.T) {
	f := newFixture(t, Config{TTL: 10 * time.Minute, MaxAge: time.Hour})
	ctx := context.Background()
	s, tok, err := f.store.Create(ctx, "acme", "alice@example.com")
	if err != nil {
		t.Fatal(err)
	}
	now := f.clock.Now().Truncate(time.Second)
	want := Session{
		ID: s.ID, Tenant: "acme", User: "alice@example.com", CreatedAt: now,
		ExpiresAt: now.Add(10 * time.Minute), MaxExpiresAt: now.Add(time.Hour), KeyID: "test-2026-01",
	}
	if s != want {
		t.Fatalf("Create = %+v, want %+v", s, want)
	}
	c, err := f.tv.Verify(tok, f.clock.Now())
	if err != nil {
		t.Fatalf("token does not verify: %v", err)
	}
	if c.SessionID.String() != s.ID || c.TenantID != "acme" || c.UserID != "alice@example.com" || !c.ExpiresAt.Equal(s.ExpiresAt) {
		t.Fatalf("claims %+v do not match session %+v", c, s)
	}
	got, err := f.store.Get(ctx, s.ID)
	if err != nil || !sameSession(got, s) {
		t.Fatalf("Get = %+v, %v; want %+v", got, err, s)
	}
	// The Redis key expires with the token.
	if at := f.rdb.PExpireTime(ctx, f.store.keys.session(s.ID)).Val(); at != time.Duration(s.ExpiresAt.UnixMilli())*time.Millisecond {
		t.Fatalf("session key expires at %v ms, want %d", at.Milliseconds(), s.ExpiresAt.UnixMilli())
	}
	f.clock.Advance(10 * time.Minute)
	if _, err := f.store.Get(ctx, s.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after expiry: %v, want ErrNotFound", err)
	}
}

// sameSession compares sessions read back from Redis (times without
// monotonic clock or location).
func sameSession(a, b Session) bool {
	return a.ID == b.ID && a.Tenant == b.Tenant && a.User == b.User && a.KeyID == b.KeyID &&
		a.CreatedAt.Equal(b.CreatedAt) && a.ExpiresAt.Equal(b.ExpiresAt) &&
		a.MaxExpiresAt.Equal(b.MaxExpiresAt) && a.RefreshedAt.Equal(b.RefreshedAt)
}

func TestCreateRefusesBadIDs(t *testing.T) {
	f := newFixture(t, Config{})
	for _, tc := range []struct{ name, tenant, user string }{
		{"empty tenant", "", "alice"},
		{"upper-case tenant", "Acme", "alice"},
		{"tenant with colon", "acme:x", "alice"},
		{"empty user", "acme", ""},
		{"user with space", "acme", "alice smith"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := f.store.Create(context.Background(), tc.tenant, tc.user); !errors.Is(err, token.ErrInvalidClaims) {
				t.Fatalf("Create(%q, %q): %v, want ErrInvalidClaims", tc.tenant, tc.user, err)
			}
		})
	}
}

func TestUnknownIDs(t *testing.T) {
	f := newFixture(t, Config{})
	ctx := context.Background()
	s, _ := f.create(t, "acme", "alice")
	for _, tc := range []struct{ name, id string }{
		{"empty", ""},
		{"never issued", "0123456789abcdef0123456789abcdef"},
		{"upper case", toUpper(s.ID)},
		{"another key", s.ID + ":stats"},
		{"prefix", s.ID[:31]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := f.store.Get(ctx, tc.id); !errors.Is(err, ErrNotFound) {
				t.Errorf("Get: %v, want ErrNotFound", err)
			}
			if _, _, err := f.store.Refresh(ctx, tc.id); !errors.Is(err, ErrNotFound) {
				t.Errorf("Refresh: %v, want ErrNotFound", err)
			}
			if err := f.store.Revoke(ctx, tc.id); !errors.Is(err, ErrNotFound) {
				t.Errorf("Revoke: %v, want ErrNotFound", err)
			}
			if _, err := f.store.Analytics(ctx, tc.id); !errors.Is(err, ErrNotFound) {
				t.Errorf("Analytics: %v, want ErrNotFound", err)
			}
		})
	}
	if _, err := f.store.Get(ctx, s.ID); err != nil {
		t.Fatalf("the real session is gone: %v", err)
	}
}

func toUpper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'a' && c <= 'f' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

func TestRefresh(t *testing.T) {
	const ttl, maxAge = 15 * time.Minute, 40 * time.Minute
	f := newFixture(t, Config{TTL: ttl, MaxAge: maxAge})
	ctx := context.Background()
	s, first := f.create(t, "acme", "alice")
	created := s.CreatedAt
	_, k2 := signingKeys(t)
	if err := f.tv.AddKey(k2.Public()); err != nil {
		t.Fatal(err)
	}
	f.store.SetSigningKey(k2)

	for _, step := range []struct {
		name    string
		advance time.Duration
		wantExp time.Duration // from creation
		wantErr error
	}{
		{name: "sliding", advance: 5 * time.Minute, wantExp: 5*time.Minute + ttl},
		{name: "sliding again", advance: 10 * time.Minute, wantExp: 15*time.Minute + ttl},
		{name: "capped at max age", advance: 14 * time.Minute, wantExp: maxAge},
		{name: "at max age", advance: 5 * time.Minute, wantErr: ErrMaxAge},
		{name: "at max age, last second", advance: 5*time.Minute + 59*time.Second, wantErr: ErrMaxAge},
	} {
		f.clock.Advance(step.advance)
		got, tok, err := f.store.Refresh(ctx, s.ID)
		if step.wantErr != nil {
			if !errors.Is(err, step.wantErr) {
				t.Fatalf("%s: Refresh: %v, want %v", step.name, err, step.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: Refresh: %v", step.name, err)
		}
		now := f.clock.Now().Truncate(time.Second)
		if got.ID != s.ID || !got.ExpiresAt.Equal(created.Add(step.wantExp)) || !got.RefreshedAt.Equal(now) || got.KeyID != k2.ID() {
			t.Fatalf("%s: Refresh = %+v, want expiry %v, refreshed %v, key %s", step.name, got, created.Add(step.wantExp), now, k2.ID())
		}
		c, err := f.tv.Verify(tok, f.clock.Now())
		if err != nil || c.SessionID.String() != s.ID || !c.ExpiresAt.Equal(got.ExpiresAt) || c.KeyID != k2.ID() {
			t.Fatalf("%s: new token: %+v, %v", step.name, c, err)
		}
		stored, err := f.store.Get(ctx, s.ID)
		if err != nil || !sameSession(stored, got) {
			t.Fatalf("%s: Get = %+v, %v; want %+v", step.name, stored, err, got)
		}
	}
	if _, err := f.tv.Verify(first, f.clock.Now()); !errors.Is(err, token.ErrExpired) {
		t.Fatalf("first token: %v, want expired", err)
	}
}

func TestRefreshDoesNotReviveRevoked(t *testing.T) {
	f := newFixture(t, Config{})
	ctx := context.Background()
	s, _ := f.create(t, "acme", "alice")
	if err := f.store.Revoke(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	if err := f.store.Revoke(ctx, s.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second Revoke: %v, want ErrNotFound", err)
	}
	if _, _, err := f.store.Refresh(ctx, s.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Refresh after Revoke: %v, want ErrNotFound", err)
	}
	// The script itself refuses too, for a revocation between Get and it.
	n, err := refreshScript.Run(ctx, f.rdb, []string{f.store.keys.session(s.ID), f.store.keys.tenant("acme")},
		"acme", f.clock.Now().Add(time.Hour).Unix(), f.clock.Now().Unix(), "k", f.clock.Now().Add(time.Hour).UnixMilli(), s.ID).Int()
	if err != nil || n != 0 {
		t.Fatalf("refresh script on a revoked session = %d, %v; want 0", n, err)
	}
	if e := f.rdb.Exists(ctx, f.store.keys.session(s.ID)).Val(); e != 0 {
		t.Fatal("the revoked session's key exists again")
	}
}

func TestListAndRevokeTenant(t *testing.T) {
	f := newFixture(t, Config{TTL: time.Hour})
	ctx := context.Background()
	var acme, globex []Session
	for i := range 3 {
		s, _ := f.create(t, "acme", "user"+string(rune('a'+i)))
		acme = append(acme, s)
		f.clock.Advance(time.Second)
		s, _ = f.create(t, "globex", "user"+string(rune('a'+i)))
		globex = append(globex, s)
		f.clock.Advance(time.Second)
	}
	list := func(tenant string) []Session {
		t.Helper()
		l, err := f.store.List(ctx, tenant)
		if err != nil {
			t.Fatalf("List(%s): %v", tenant, err)
		}
		return l
	}
	same := func(what string, got, want []Session) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s: %d sessions, want %d: %+v", what, len(got), len(want), got)
		}
		for i := range got {
			if !sameSession(got[i], want[i]) {
				t.Fatalf("%s[%d] = %+v, want %+v", what, i, got[i], want[i])
			}
		}
	}
	same("List(acme)", list("acme"), acme)
	same("List(globex)", list("globex"), globex)
	same("List(initech)", list("initech"), nil)

	if err := f.store.Revoke(ctx, acme[1].ID); err != nil {
		t.Fatal(err)
	}
	same("List(acme) after Revoke", list("acme"), []Session{acme[0], acme[2]})

	// An expired session leaves the list and the index.
	short := newFixture(t, Config{TTL: time.Minute, KeyPrefix: f.cfg.KeyPrefix, Channel: f.cfg.Channel, Now: f.clock.Now})
	f.clock.Advance(time.Second)
	_, _ = short.create(t, "acme", "shortlived")
	same("List(acme) with a short session", list("acme")[:2], []Session{acme[0], acme[2]})
	f.clock.Advance(2 * time.Minute)
	same("List(acme) after it expired", list("acme"), []Session{acme[0], acme[2]})
	if n := f.rdb.ZCard(ctx, f.store.keys.tenant("acme")).Val(); n != 2 {
		t.Fatalf("tenant index holds %d ids, want 2", n)
	}

	n, err := f.store.RevokeTenant(ctx, "acme")
	if err != nil || n != 2 {
		t.Fatalf("RevokeTenant(acme) = %d, %v; want 2", n, err)
	}
	same("List(acme) after RevokeTenant", list("acme"), nil)
	for _, s := range acme {
		if _, err := f.store.Get(ctx, s.ID); !errors.Is(err, ErrNotFound) {
			t.Fatalf("acme session %s after RevokeTenant: %v", s.ID, err)
		}
	}
	same("List(globex) after RevokeTenant(acme)", list("globex"), globex)
	for _, s := range globex {
		if _, err := f.store.Get(ctx, s.ID); err != nil {
			t.Fatalf("globex session %s after RevokeTenant(acme): %v", s.ID, err)
		}
	}
	if n, err := f.store.RevokeTenant(ctx, "acme"); err != nil || n != 0 {
		t.Fatalf("second RevokeTenant(acme) = %d, %v; want 0", n, err)
	}
}

func TestRevokeTenantMany(t *testing.T) {
	f := newFixture(t, Config{})
	ctx := context.Background()
	// More than one script batch; created straight in Redis, signing
	// 1200 tokens would take a while under -race.
	const n = revokeBatch*2 + 100
	exp := f.clock.Now().Add(time.Hour)
	for range n {
		id := token.NewSessionID().String()
		if _, err := createScript.Run(ctx, f.rdb, []string{f.store.keys.session(id), f.store.keys.tenant("acme")},
			"acme", "u", f.clock.Now().Unix(), exp.Unix(), exp.Unix(), "k", exp.UnixMilli(), f.clock.Now().UnixMilli(), id).Result(); err != nil {
			t.Fatal(err)
		}
	}
	got, err := f.store.RevokeTenant(ctx, "acme")
	if err != nil || got != n {
		t.Fatalf("RevokeTenant = %d, %v; want %d", got, err, n)
	}
	if l, _ := f.store.List(ctx, "acme"); len(l) != 0 {
		t.Fatalf("%d sessions left", len(l))
	}
}
