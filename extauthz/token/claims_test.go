package token

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestNewClaims(t *testing.T) {
	now := time.Unix(1_800_000_000, 999_000_000)
	c, err := NewClaims("acme", "alice@example.com", now, 15*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if c.SessionID.IsZero() || c.IssuedAt.Unix() != 1_800_000_000 || c.ExpiresAt.Sub(c.IssuedAt) != 15*time.Minute {
		t.Fatalf("%+v", c)
	}
	if c2, _ := NewClaims("acme", "alice", now, time.Minute); c2.SessionID == c.SessionID {
		t.Fatal("session ids repeat")
	}
	if s := c.SessionID.String(); len(s) != 32 || strings.Trim(s, "0123456789abcdef") != "" {
		t.Fatalf("SessionID.String() = %q", s)
	}
	for _, tc := range []struct {
		tenant, user string
		ttl          time.Duration
	}{
		{"acme", "alice", 999 * time.Millisecond},
		{"acme", "alice", -time.Hour},
		{"", "alice", time.Minute},
		{"Acme", "alice", time.Minute},
		{"acme", "", time.Minute},
		{"acme", "a b", time.Minute},
		{"acme", strings.Repeat("u", 256), time.Minute},
	} {
		if _, err := NewClaims(tc.tenant, tc.user, now, tc.ttl); !errors.Is(err, ErrInvalidClaims) {
			t.Errorf("NewClaims(%q, %q, %v): %v, want ErrInvalidClaims", tc.tenant, tc.user, tc.ttl, err)
		}
	}
}

func TestSignRefusesInvalidClaims(t *testing.T) {
	k := mustKey(t, "k1")
	for name, f := range map[string]func(*Claims){
		"zero session id":   func(c *Claims) { c.SessionID = SessionID{} },
		"bad tenant":        func(c *Claims) { c.TenantID = "ACME" },
		"long user":         func(c *Claims) { c.UserID = strings.Repeat("u", 256) },
		"zero times":        func(c *Claims) { c.IssuedAt, c.ExpiresAt = time.Time{}, time.Time{} },
		"expiry = issue":    func(c *Claims) { c.ExpiresAt = c.IssuedAt },
		"sub-second window": func(c *Claims) { c.ExpiresAt = c.IssuedAt.Add(500 * time.Millisecond) },
		"before 1970":       func(c *Claims) { c.IssuedAt = time.Unix(-5, 0) },
		"after 9999":        func(c *Claims) { c.ExpiresAt = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) },
	} {
		c := claimsFor("acme", "alice")
		f(&c)
		if tok, err := k.Sign(c); !errors.Is(err, ErrInvalidClaims) || tok != "" {
			t.Errorf("%s: %q, %v; want ErrInvalidClaims", name, tok, err)
		}
	}
}
