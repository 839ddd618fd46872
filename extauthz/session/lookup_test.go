package session

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tenantguard/tenantguard/policy"
	"github.com/tenantguard/tenantguard/test/harness"
)

// roundTrips counts the commands and pipelines a client sends, and can
// hold the first HMGET until released.
type roundTrips struct {
	single, pipelines, pipelined atomic.Int64
	hold                         chan struct{} // the first HMGET waits for it to close; nil: no hold
	held                         atomic.Bool
}

func (r *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (r *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() == "hmget" {
			r.single.Add(1)
			if r.hold != nil && r.held.CompareAndSwap(false, true) {
				<-r.hold
			}
		}
		return next(ctx, cmd)
	}
}

func (r *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) > 0 && cmds[0].Name() == "hmget" {
			r.pipelines.Add(1)
			r.pipelined.Add(int64(len(cmds)))
		}
		return next(ctx, cmds)
	}
}

// waitingLookups is how many lookups wait for the next round trip.
func (v *Verifier) waitingLookups() int {
	v.lookups.mu.Lock()
	defer v.lookups.mu.Unlock()
	return len(v.lookups.waiting)
}

// TestLookupsBatch: first-seen tokens checked while a store lookup is out
// go to the store together, in one pipeline, and each gets its own answer.
func TestLookupsBatch(t *testing.T) {
	leakCheck(t)
	f := newFixture(t, Config{})
	rt := &roundTrips{hold: make(chan struct{})}
	f.rdb.AddHook(rt)
	v := f.verifier(t)
	const n = 9
	toks := make([]string, n)
	users := make([]string, n)
	for i := range toks {
		users[i] = fmt.Sprintf("user%d", i)
		_, toks[i] = f.create(t, "acme", users[i])
	}
	gone, revoked := f.create(t, "acme", "gone")
	var wg sync.WaitGroup
	errs := make([]error, n+1)
	got := make([]string, n+1)
	check := func(i int, tok string) {
		defer wg.Done()
		c, err := v.Check(context.Background(), tok)
		got[i], errs[i] = c.UserID, err
	}
	wg.Add(1)
	go check(0, toks[0]) // its lookup is held at the store
	harness.Eventually(t, 5*time.Second, func() error {
		if !rt.held.Load() {
			return errors.New("first lookup not sent yet")
		}
		return nil
	})
	// A session deleted from the store behind the verifier's back is not
	// found, in the middle of a batch.
	if err := f.rdb.Del(context.Background(), f.store.keys.session(gone.ID)).Err(); err != nil {
		t.Fatal(err)
	}
	for i := 1; i < n; i++ {
		wg.Add(1)
		go check(i, toks[i])
	}
	wg.Add(1)
	go check(n, revoked)
	harness.Eventually(t, 5*time.Second, func() error {
		if w := v.waitingLookups(); w != n {
			return fmt.Errorf("%d lookups waiting, want %d", w, n)
		}
		return nil
	})
	close(rt.hold)
	wg.Wait()
	for i := range n {
		if errs[i] != nil || got[i] != users[i] {
			t.Errorf("check %d: %q, %v; want %q", i, got[i], errs[i], users[i])
		}
	}
	if !errors.Is(errs[n], policy.ErrSessionRevoked) {
		t.Errorf("the deleted session: %v, want revoked", errs[n])
	}
	if rt.single.Load() != 1 || rt.pipelines.Load() != 1 || rt.pipelined.Load() != n {
		t.Errorf("round trips: %d single, %d pipelines of %d lookups; want 1 and 1 of %d",
			rt.single.Load(), rt.pipelines.Load(), rt.pipelined.Load(), n)
	}
	if got := count(v.m.storeLookups); got != n+1 {
		t.Errorf("%d store lookups counted, want %d", got, n+1)
	}
}

// TestLookupGivesUp: a check whose context ends while its lookup waits
// returns at once; the round trips go on for the others.
func TestLookupGivesUp(t *testing.T) {
	leakCheck(t)
	f := newFixture(t, Config{})
	rt := &roundTrips{hold: make(chan struct{})}
	f.rdb.AddHook(rt)
	v := f.verifier(t)
	_, first := f.create(t, "acme", "first")
	_, impatient := f.create(t, "acme", "impatient")
	_, patient := f.create(t, "acme", "patient")
	done := make(chan error, 2)
	go func() { _, err := v.Check(context.Background(), first); done <- err }()
	harness.Eventually(t, 5*time.Second, func() error {
		if !rt.held.Load() {
			return errors.New("first lookup not sent yet")
		}
		return nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	gaveUp := make(chan error, 1)
	go func() { _, err := v.Check(ctx, impatient); gaveUp <- err }()
	go func() { _, err := v.Check(context.Background(), patient); done <- err }()
	harness.Eventually(t, 5*time.Second, func() error {
		if w := v.waitingLookups(); w != 2 {
			return fmt.Errorf("%d lookups waiting, want 2", w)
		}
		return nil
	})
	cancel()
	if err := <-gaveUp; !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled check: %v", err)
	}
	close(rt.hold)
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	// The canceled one was never asked for.
	if n := rt.single.Load() + rt.pipelined.Load(); n != 2 {
		t.Errorf("%d lookups sent, want 2", n)
	}
}
