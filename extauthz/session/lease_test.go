package session

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/policy"
	"github.com/tenantguard/tenantguard/test/harness"
)

// none fails the test if r has had an onEnd call.
func (r *endRecorder) none(t testing.TB, what string) {
	t.Helper()
	if n := r.n(); n != 0 {
		t.Fatalf("%s: onEnd called %d times: %v", what, n, r.errs)
	}
}

// waitRevocations waits until v has received n revocation messages in all.
func waitRevocations(t testing.TB, v *Verifier, n int) {
	t.Helper()
	harness.Eventually(t, time.Second, func() error {
		if got := count(v.m.revocations); got < n {
			return errors.New("revocation not received yet")
		}
		return nil
	})
}

func TestLeaseEndsOnRevoke(t *testing.T) {
	leakCheck(t)
	f := newFixture(t, Config{})
	v := f.verifier(t)
	ctx := context.Background()
	s, tok := f.create(t, "acme", "alice")
	_, otherTok := f.create(t, "acme", "bob")
	// Two connections on the revoked session, one on another session.
	a, b, other := newEndRecorder(), newEndRecorder(), newEndRecorder()
	for _, o := range []struct {
		tok string
		r   *endRecorder
	}{{tok, a}, {tok, b}, {otherTok, other}} {
		l, err := v.Open(ctx, "acme", o.tok, o.r.onEnd)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
	}
	if err := f.store.Revoke(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	a.wait(t, time.Second, policy.ErrSessionEnded)
	b.wait(t, time.Second, policy.ErrSessionEnded)
	waitRevocations(t, v, 1)
	other.none(t, "lease of another session")
	if n := count(v.m.leases); n != 1 {
		t.Fatalf("open leases gauge %d, want 1", n)
	}
	// A second revocation message for the same session changes nothing.
	if err := f.rdb.Publish(ctx, f.cfg.Channel, s.ID).Err(); err != nil {
		t.Fatal(err)
	}
	waitRevocations(t, v, 2)
	if a.n() != 1 || b.n() != 1 {
		t.Fatalf("onEnd called %d and %d times, want once each", a.n(), b.n())
	}
	// Nor can a new lease be opened on it.
	if _, err := v.Open(ctx, "acme", tok, func(error) {}); !errors.Is(err, policy.ErrSessionRevoked) {
		t.Fatalf("Open after revocation: %v", err)
	}
}

func TestLeaseEndsOnExpiry(t *testing.T) {
	leakCheck(t)
	f := newFixture(t, Config{TTL: time.Minute})
	v := f.verifier(t)
	ctx := context.Background()
	s, first := f.create(t, "acme", "alice")
	f.clock.Advance(30 * time.Second)
	_, second, err := f.store.Refresh(ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	early, late := newEndRecorder(), newEndRecorder()
	l1, err := v.Open(ctx, "acme", first, early.onEnd)
	if err != nil {
		t.Fatal(err)
	}
	defer l1.Close()
	l2, err := v.Open(ctx, "acme", second, late.onEnd)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	// Each lease ends when its own token expires.
	f.clock.Advance(30 * time.Second)
	v.poke() // else the watcher notices the clock jump within a second
	early.wait(t, 3*time.Second, policy.ErrSessionEnded)
	late.none(t, "lease of the refreshed token")
	f.clock.Advance(30 * time.Second)
	v.poke()
	late.wait(t, 3*time.Second, policy.ErrSessionEnded)
	if early.n() != 1 || late.n() != 1 {
		t.Fatalf("onEnd called %d and %d times, want once each", early.n(), late.n())
	}
}

func TestLeaseNoEndAfterClose(t *testing.T) {
	leakCheck(t)
	f := newFixture(t, Config{TTL: time.Minute})
	v := f.verifier(t)
	ctx := context.Background()
	s, tok := f.create(t, "acme", "alice")
	revoked, expired := newEndRecorder(), newEndRecorder()
	l1, err := v.Open(ctx, "acme", tok, revoked.onEnd)
	if err != nil {
		t.Fatal(err)
	}
	l1.Close()
	l1.Close() // twice is fine
	_, tok2 := f.create(t, "acme", "bob")
	l2, err := v.Open(ctx, "acme", tok2, expired.onEnd)
	if err != nil {
		t.Fatal(err)
	}
	l2.Close()
	if err := f.store.Revoke(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	waitRevocations(t, v, 1)
	f.clock.Advance(2 * time.Minute)
	v.poke()
	harness.Eventually(t, 3*time.Second, func() error {
		v.watchMu.Lock()
		defer v.watchMu.Unlock()
		if len(v.watch) != 0 {
			return errors.New("watcher has entries left")
		}
		return nil
	})
	revoked.none(t, "closed lease, revoked session")
	expired.none(t, "closed lease, expired token")
	if n := count(v.m.leases); n != 0 {
		t.Fatalf("open leases gauge %d, want 0", n)
	}
}

func TestLeaseCloseFromOnEnd(t *testing.T) {
	leakCheck(t)
	f := newFixture(t, Config{})
	v := f.verifier(t)
	ctx := context.Background()
	s, tok := f.create(t, "acme", "alice")
	done := make(chan error, 1)
	var l policy.SessionLease
	opened := make(chan struct{})
	l, err := v.Open(ctx, "acme", tok, func(err error) {
		<-opened
		l.Close() // a data plane closing the connection from onEnd
		done <- err
	})
	if err != nil {
		t.Fatal(err)
	}
	close(opened)
	if err := f.store.Revoke(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		wantErrs(t, "onEnd", err, policy.ErrSessionEnded)
	case <-time.After(2 * time.Second):
		t.Fatal("onEnd did not return: Close from onEnd deadlocked?")
	}
	if n := count(v.m.leases); n != 0 {
		t.Fatalf("open leases gauge %d, want 0", n)
	}
}

func TestRevokeTenantEndsItsLeases(t *testing.T) {
	leakCheck(t)
	f := newFixture(t, Config{})
	v := f.verifier(t)
	ctx := context.Background()
	var acme, globex []*endRecorder
	var globexToks []string
	for _, tenant := range []string{"acme", "acme", "globex", "globex"} {
		_, tok := f.create(t, tenant, "user")
		r := newEndRecorder()
		l, err := v.Open(ctx, tenant, tok, r.onEnd)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		if tenant == "acme" {
			acme = append(acme, r)
		} else {
			globex = append(globex, r)
			globexToks = append(globexToks, tok)
		}
	}
	n, err := f.store.RevokeTenant(ctx, "acme")
	if err != nil || n != 2 {
		t.Fatalf("RevokeTenant = %d, %v; want 2", n, err)
	}
	for _, r := range acme {
		r.wait(t, time.Second, policy.ErrSessionEnded)
	}
	waitRevocations(t, v, 2)
	for i, r := range globex {
		r.none(t, "globex lease")
		if _, err := v.Check(ctx, globexToks[i]); err != nil {
			t.Fatalf("globex token after RevokeTenant(acme): %v", err)
		}
	}
}
