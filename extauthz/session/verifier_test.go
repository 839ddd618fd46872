package session

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/extauthz/token"
	"github.com/tenantguard/tenantguard/policy"
	"github.com/tenantguard/tenantguard/test/harness"
)

func TestCheck(t *testing.T) {
	leakCheck(t)
	f := newFixture(t, Config{TTL: 10 * time.Minute})
	v := f.verifier(t)
	ctx := context.Background()
	good, goodTok := f.create(t, "acme", "alice")
	_, revokedTok := f.create(t, "acme", "bob")
	revoked, _ := f.tv.Verify(revokedTok, f.clock.Now())
	if err := f.store.Revoke(ctx, revoked.SessionID.String()); err != nil {
		t.Fatal(err)
	}
	k1, _ := signingKeys(t)
	// Signed by the right key, but never stored (as after a store restart).
	c, _ := token.NewClaims("acme", "carol", f.clock.Now(), time.Minute)
	unknownTok, _ := k1.Sign(c)
	other, _ := token.GenerateKey("other-key")
	otherTok, _ := other.Sign(c)
	// Flip one signature character.
	i := strings.LastIndexByte(goodTok, '.') + 10
	repl := "A"
	if goodTok[i] == 'A' {
		repl = "B"
	}
	flipped := goodTok[:i] + repl + goodTok[i+1:]

	for _, tc := range []struct {
		name    string
		tok     string
		advance time.Duration
		want    []error
		result  string
	}{
		{name: "valid", tok: goodTok, result: resultOK},
		{name: "valid again, cached", tok: goodTok, result: resultCached},
		{name: "empty", tok: "", want: []error{policy.ErrSessionInvalid, token.ErrMalformed}, result: resultInvalid},
		{name: "not a token", tok: "hunter2", want: []error{policy.ErrSessionInvalid, token.ErrMalformed}, result: resultInvalid},
		{name: "other version", tok: "tg2." + goodTok[4:], want: []error{policy.ErrSessionInvalid, token.ErrUnsupportedVersion}, result: resultInvalid},
		{name: "bad signature", tok: flipped, want: []error{policy.ErrSessionInvalid, token.ErrBadSignature}, result: resultInvalid},
		{name: "unknown key", tok: otherTok, want: []error{policy.ErrSessionInvalid, token.ErrUnknownKey}, result: resultInvalid},
		{name: "revoked", tok: revokedTok, want: []error{policy.ErrSessionRevoked}, result: resultRevoked},
		{name: "never stored", tok: unknownTok, want: []error{policy.ErrSessionRevoked}, result: resultRevoked},
		{name: "not yet valid", tok: goodTok, advance: -time.Hour, want: []error{policy.ErrSessionExpired, token.ErrNotYetValid}, result: resultExpired},
		{name: "expired", tok: goodTok, advance: 10 * time.Minute, want: []error{policy.ErrSessionExpired, token.ErrExpired}, result: resultExpired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.clock.Advance(tc.advance)
			defer f.clock.Advance(-tc.advance)
			before := count(v.m.byResult[tc.result])
			got, err := v.Check(ctx, tc.tok)
			wantErrs(t, "Check", err, tc.want...)
			if err == nil && (got.SessionID.String() != good.ID || got.TenantID != "acme" || got.UserID != "alice") {
				t.Fatalf("Check = %+v, want session %s", got, good.ID)
			}
			if n := count(v.m.byResult[tc.result]) - before; n != 1 {
				t.Fatalf("verifications{result=%q} went up by %d, want 1", tc.result, n)
			}
			v.cache.Wait() // let the cache admit what this case stored
		})
	}
}

func TestCheckCachesVerdict(t *testing.T) {
	leakCheck(t)
	f := newFixture(t, Config{})
	v := f.verifier(t)
	ctx := context.Background()
	_, tok := f.create(t, "acme", "alice")
	if _, err := v.Check(ctx, tok); err != nil {
		t.Fatal(err)
	}
	v.cache.Wait()
	for range 5 {
		if _, err := v.Check(ctx, tok); err != nil {
			t.Fatal(err)
		}
	}
	if n := count(v.m.storeLookups); n != 1 {
		t.Fatalf("%d store lookups for 6 checks of one token, want 1", n)
	}
	if n := count(v.m.cacheHits); n != 5 {
		t.Fatalf("%d cache hits, want 5", n)
	}
	// A verdict is found by its token's hash, but only used for that very
	// token: one planted under another token's key is ignored.
	_, tok2 := f.create(t, "acme", "bob")
	vd, _ := v.cache.Get(keyOf(tok))
	v.cache.SetWithTTL(keyOf(tok2), vd, 1, time.Minute)
	v.cache.Wait()
	c, err := v.Check(ctx, tok2)
	if err != nil || c.UserID != "bob" {
		t.Fatalf("Check(tok2) = %+v, %v", c, err)
	}
	if n := count(v.m.storeLookups); n != 2 {
		t.Fatalf("a verdict of another token was used: %d store lookups, want 2", n)
	}
}

func TestRevocationReachesEveryVerifier(t *testing.T) {
	leakCheck(t)
	f := newFixture(t, Config{})
	ctx := context.Background()
	// Two verifiers, as in two processes; each has the verdict cached.
	vs := []*Verifier{f.verifier(t), f.verifier(t)}
	s, tok := f.create(t, "acme", "alice")
	_, keep := f.create(t, "acme", "bob")
	for _, v := range vs {
		for range 2 {
			if _, err := v.Check(ctx, tok); err != nil {
				t.Fatal(err)
			}
			v.cache.Wait()
		}
		if count(v.m.cacheHits) != 1 {
			t.Fatal("verdict not cached")
		}
	}
	start := time.Now()
	if err := f.store.Revoke(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	for i, v := range vs {
		harness.Eventually(t, time.Second, checkErr(v, tok, policy.ErrSessionRevoked))
		t.Logf("verifier %d refuses the revoked token %s after the revocation", i, time.Since(start).Round(time.Millisecond))
		if _, err := v.Check(ctx, keep); err != nil {
			t.Fatalf("another session of the tenant: %v", err)
		}
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("revocation took %s", d)
	}
}

func TestKeyRotation(t *testing.T) {
	leakCheck(t)
	f := newFixture(t, Config{})
	v := f.verifier(t)
	ctx := context.Background()
	k1, k2 := signingKeys(t)
	_, oldTok := f.create(t, "acme", "alice")
	// Rotate: verifiers learn the new key first, then the store signs with it.
	if err := f.tv.AddKey(k2.Public()); err != nil {
		t.Fatal(err)
	}
	f.store.SetSigningKey(k2)
	s, newTok := f.create(t, "acme", "bob")
	if s.KeyID != k2.ID() {
		t.Fatalf("new session signed by %s, want %s", s.KeyID, k2.ID())
	}
	for _, tok := range []string{oldTok, newTok, oldTok, newTok} {
		if _, err := v.Check(ctx, tok); err != nil {
			t.Fatalf("during rotation: %v", err)
		}
		v.cache.Wait()
	}
	// Once the old key is removed, its tokens fail even with a cached verdict.
	f.tv.RemoveKey(k1.ID())
	_, err := v.Check(ctx, oldTok)
	wantErrs(t, "old token after key removal", err, policy.ErrSessionInvalid, token.ErrUnknownKey)
	if _, err := v.Check(ctx, newTok); err != nil {
		t.Fatalf("new token after key removal: %v", err)
	}
}

func TestRefreshedSessionKeepsOlderTokens(t *testing.T) {
	leakCheck(t)
	f := newFixture(t, Config{TTL: 10 * time.Minute})
	v := f.verifier(t)
	ctx := context.Background()
	s, first := f.create(t, "acme", "alice")
	f.clock.Advance(time.Minute)
	_, second, err := f.store.Refresh(ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{first, second} {
		if _, err := v.Check(ctx, tok); err != nil {
			t.Fatalf("Check after refresh: %v", err)
		}
	}
	// The first token still expires at its own time.
	f.clock.Advance(9 * time.Minute)
	_, err = v.Check(ctx, first)
	wantErrs(t, "first token at its expiry", err, policy.ErrSessionExpired, token.ErrExpired)
	if _, err := v.Check(ctx, second); err != nil {
		t.Fatalf("refreshed token: %v", err)
	}
	if err := f.store.Revoke(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, time.Second, checkErr(v, second, policy.ErrSessionRevoked))
}

func TestOpen(t *testing.T) {
	leakCheck(t)
	f := newFixture(t, Config{})
	v := f.verifier(t)
	ctx := context.Background()
	s, tok := f.create(t, "acme", "alice")
	if !v.IsToken(tok) || v.IsToken("hunter2") || v.IsToken("tg2.abc") {
		t.Fatal("IsToken does not tell tokens from passwords")
	}
	for _, tc := range []struct {
		name, tenant string
		want         error
	}{
		{"other tenant", "globex", policy.ErrSessionInvalid},
		{"tenant prefix", "acm", policy.ErrSessionInvalid},
		{"its tenant", "acme", nil},
		{"its tenant again (cached)", "acme", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := v.Open(ctx, tc.tenant, tok, func(error) {})
			if tc.want != nil {
				wantErrs(t, "Open", err, tc.want)
				return
			}
			wantErrs(t, "Open", err)
			defer l.Close()
			if l.ID() != s.ID || l.User() != "alice" {
				t.Fatalf("lease of %s/%s, want %s/alice", l.ID(), l.User(), s.ID)
			}
			if n := count(v.m.leases); n != 1 {
				t.Fatalf("open leases gauge %d, want 1", n)
			}
			v.cache.Wait()
		})
	}
	if n := count(v.m.leases); n != 0 {
		t.Fatalf("open leases gauge %d after Close, want 0", n)
	}
	if n := count(v.m.storeLookups); n != 1 {
		t.Fatalf("%d store lookups, want 1", n)
	}
}

// TestCheckConcurrentWithRevocation races checks against a revocation:
// once Revoke has returned and the message has arrived, no check may
// succeed, whichever way the races went.
func TestCheckConcurrentWithRevocation(t *testing.T) {
	leakCheck(t)
	f := newFixture(t, Config{})
	v := f.verifier(t)
	ctx := context.Background()
	for round := range 5 {
		s, tok := f.create(t, "acme", fmt.Sprintf("user%d", round))
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				select {
				case <-stop:
					return
				default:
				}
				_, _ = v.Check(ctx, tok)
			}
		}()
		before := count(v.m.revocations)
		if err := f.store.Revoke(ctx, s.ID); err != nil {
			t.Fatal(err)
		}
		harness.Eventually(t, time.Second, func() error {
			if count(v.m.revocations) == before {
				return errors.New("revocation not received")
			}
			return nil
		})
		close(stop)
		<-done
		for range 3 {
			if _, err := v.Check(ctx, tok); !errors.Is(err, policy.ErrSessionRevoked) {
				t.Fatalf("round %d: Check after revocation: %v", round, err)
			}
			v.cache.Wait()
		}
	}
}
