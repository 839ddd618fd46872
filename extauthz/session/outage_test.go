package session

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/internal/fixture/redisserver"
	"github.com/tenantguard/tenantguard/policy"
	"github.com/tenantguard/tenantguard/test/harness"
)

// ownRedis starts a redis-server of the test's own, to stop and restart.
func ownRedis(t *testing.T) *redisserver.Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, err := redisserver.Start(ctx, redisserver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("stop redis: %v", err)
		}
	})
	return srv
}

func restart(t *testing.T, srv *redisserver.Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
}

func waitHealthy(t *testing.T, v *Verifier, want bool) {
	t.Helper()
	harness.Eventually(t, 5*time.Second, func() error {
		if v.Healthy() != want {
			return errors.New("store health not as expected yet")
		}
		return nil
	})
}

func TestStoreDownFailsClosed(t *testing.T) {
	leakCheck(t)
	srv := ownRedis(t)
	f := newFixtureAt(t, srv.Addr(), Config{}) // Grace 0
	v := f.verifier(t)
	ctx := context.Background()
	_, cachedTok := f.create(t, "acme", "alice")
	_, uncachedTok := f.create(t, "acme", "bob")
	if _, err := v.Check(ctx, cachedTok); err != nil {
		t.Fatal(err)
	}
	v.cache.Wait()
	ended := newEndRecorder()
	l, err := v.Open(ctx, "acme", cachedTok, ended.onEnd)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	waitHealthy(t, v, false)
	ended.wait(t, 2*time.Second, policy.ErrSessionStoreLost)
	for _, tc := range []struct{ name, tok string }{{"cached", cachedTok}, {"uncached", uncachedTok}} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := v.Check(ctx, tc.tok)
			wantErrs(t, "Check with the store down", err, policy.ErrSessionUnavailable)
			_, err = v.Open(ctx, "acme", tc.tok, func(error) {})
			wantErrs(t, "Open with the store down", err, policy.ErrSessionUnavailable)
		})
	}
	if n := count(v.m.storeUp); n != 0 {
		t.Fatalf("store up gauge %d, want 0", n)
	}

	// The same server comes back, empty (no persistence): the verifier
	// recovers by itself, and refuses the sessions the store forgot.
	restart(t, srv)
	waitHealthy(t, v, true)
	_, err = v.Check(ctx, cachedTok)
	wantErrs(t, "Check of a session the store lost", err, policy.ErrSessionRevoked)
	_, tok := f.create(t, "acme", "carol")
	if _, err := v.Check(ctx, tok); err != nil {
		t.Fatalf("Check after the store came back: %v", err)
	}
	if ended.n() != 1 {
		t.Fatalf("onEnd called %d times, want 1", ended.n())
	}
}

func TestStoreDownGrace(t *testing.T) {
	leakCheck(t)
	srv := ownRedis(t)
	const grace = 30 * time.Second
	f := newFixtureAt(t, srv.Addr(), Config{Grace: grace})
	v := f.verifier(t)
	ctx := context.Background()
	_, cachedTok := f.create(t, "acme", "alice")
	_, uncachedTok := f.create(t, "acme", "bob")
	if _, err := v.Check(ctx, cachedTok); err != nil {
		t.Fatal(err)
	}
	v.cache.Wait()
	ended := newEndRecorder()
	l, err := v.Open(ctx, "acme", cachedTok, ended.onEnd)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	waitHealthy(t, v, false)
	// Within the grace period: cached verdicts work, nothing else does.
	f.clock.Advance(grace - time.Second)
	v.poke()
	if _, err := v.Check(ctx, cachedTok); err != nil {
		t.Fatalf("cached token within the grace period: %v", err)
	}
	l2, err := v.Open(ctx, "acme", cachedTok, func(error) {})
	if err != nil {
		t.Fatalf("Open of a cached token within the grace period: %v", err)
	}
	l2.Close()
	_, err = v.Check(ctx, uncachedTok)
	wantErrs(t, "uncached token within the grace period", err, policy.ErrSessionUnavailable)
	ended.none(t, "lease within the grace period")

	// Past it: everything fails and open leases end.
	f.clock.Advance(time.Second)
	v.poke()
	ended.wait(t, 2*time.Second, policy.ErrSessionStoreLost)
	_, err = v.Check(ctx, cachedTok)
	wantErrs(t, "cached token after the grace period", err, policy.ErrSessionUnavailable)

	restart(t, srv)
	waitHealthy(t, v, true)
	_, tok := f.create(t, "acme", "carol")
	if _, err := v.Check(ctx, tok); err != nil {
		t.Fatalf("Check after the store came back: %v", err)
	}
}

// TestMissedRevocation breaks the subscription while a revocation is
// "lost" (the session deleted without a message): on resubscribing the
// verifier must drop its cached verdicts and re-check its leases.
func TestMissedRevocation(t *testing.T) {
	leakCheck(t)
	srv := ownRedis(t)
	f := newFixtureAt(t, srv.Addr(), Config{Grace: time.Minute})
	v := f.verifier(t)
	ctx := context.Background()
	s, tok := f.create(t, "acme", "alice")
	_, liveTok := f.create(t, "acme", "bob")
	lost, live := newEndRecorder(), newEndRecorder()
	for _, o := range []struct {
		tok string
		r   *endRecorder
	}{{tok, lost}, {liveTok, live}} {
		l, err := v.Open(ctx, "acme", o.tok, o.r.onEnd)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
	}
	v.cache.Wait()
	if err := f.rdb.Del(ctx, f.store.keys.session(s.ID)).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Check(ctx, tok); err != nil {
		t.Fatalf("the cached verdict should still be used before the break: %v", err)
	}
	up := v.link.Load()
	if err := f.rdb.ClientKillByFilter(ctx, "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	lost.wait(t, 3*time.Second, policy.ErrSessionEnded)
	harness.Eventually(t, 3*time.Second, func() error {
		if l := v.link.Load(); l == up || l.state != linkUp {
			return errors.New("not resubscribed yet")
		}
		return nil
	})
	_, err := v.Check(ctx, tok)
	wantErrs(t, "Check after resubscribing", err, policy.ErrSessionRevoked)
	live.none(t, "lease of a live session")
	if _, err := v.Check(ctx, liveTok); err != nil {
		t.Fatalf("live session after resubscribing: %v", err)
	}
}

// TestStoreDownAtStart: a verifier started while the store is down fails
// closed, then works once the store is up, without a restart.
func TestStoreDownAtStart(t *testing.T) {
	leakCheck(t)
	srv := ownRedis(t)
	f := newFixtureAt(t, srv.Addr(), Config{})
	_, tok := f.create(t, "acme", "alice")
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	v, err := NewVerifier(f.rdb, f.tv, f.cfg, nil, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	_, err = v.Check(context.Background(), tok)
	wantErrs(t, "Check with the store down from the start", err, policy.ErrSessionUnavailable)
	restart(t, srv)
	waitHealthy(t, v, true)
	_, tok = f.create(t, "acme", "alice")
	if _, err := v.Check(context.Background(), tok); err != nil {
		t.Fatalf("Check once the store is up: %v", err)
	}
}
