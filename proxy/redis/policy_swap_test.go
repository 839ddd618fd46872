package redis_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/policy"
	"github.com/tenantguard/tenantguard/test/harness"
)

// setPolicy compiles spec and makes it the proxy's policy, as the
// sidecar's SetPolicy does: swap, then reconcile.
func (p *proxy) setPolicy(t *testing.T, spec policy.Spec) {
	t.Helper()
	p.swap(mustCompile(t, spec))
}

func (p *proxy) swap(snap *policy.Snapshot) {
	p.store.Swap(snap)
	p.srv.Reconcile()
}

func mustCompile(t *testing.T, spec policy.Spec) *policy.Snapshot {
	t.Helper()
	snap, err := policy.Compile(spec)
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// twoTenants is the fixture's policy with acme's entry changed by change,
// or without acme when change is nil.
func twoTenants(change func(*policy.TenantSpec)) policy.Spec {
	acme := policy.TenantSpec{ID: "acme", Passwords: []string{acmeSecret}}
	spec := policy.Spec{Tenants: []policy.TenantSpec{{ID: "globex", Passwords: []string{globexSecret}}}}
	if change != nil {
		change(&acme)
		spec.Tenants = append(spec.Tenants, acme)
	}
	return spec
}

const wrongpassReply = "-WRONGPASS invalid username-password pair or user is disabled.\r\n"

// authed dials the proxy and authenticates as tenant.
func authed(t *testing.T, p *proxy, tenant, secret string) *rawClient {
	t.Helper()
	r := dialRaw(t, p.addr)
	if got := r.do("AUTH", tenant, secret); got != "+OK\r\n" {
		t.Fatalf("AUTH %s: %q", tenant, got)
	}
	return r
}

// TestPolicyRemovesTenant: a snapshot without acme closes acme's
// connections at once, with nothing written into them (idle, inside MULTI,
// subscribed), and its queued transaction never runs; acme's AUTH gets
// WRONGPASS; globex's connections, idle and inside MULTI, go on. With acme
// back, acme authenticates again.
func TestPolicyRemovesTenant(t *testing.T) {
	p := startProxy(t, nil)
	key := fmt.Sprintf("removed-%d", time.Now().UnixNano())
	acmeIdle := authed(t, p, "acme", acmeSecret)
	acmeMulti := authed(t, p, "acme", acmeSecret)
	acmeSub := authed(t, p, "acme", acmeSecret)
	globexIdle := authed(t, p, "globex", globexSecret)
	globexMulti := authed(t, p, "globex", globexSecret)
	for _, step := range []struct {
		r         *rawClient
		args      []string
		wantReply string
	}{
		{acmeMulti, []string{"MULTI"}, "+OK\r\n"},
		{acmeMulti, []string{"SET", key, "acme"}, "+QUEUED\r\n"},
		{acmeSub, []string{"SUBSCRIBE", "news"}, "*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n"},
		{globexMulti, []string{"MULTI"}, "+OK\r\n"},
		{globexMulti, []string{"SET", key, "globex"}, "+QUEUED\r\n"},
	} {
		if got := step.r.do(step.args...); got != step.wantReply {
			t.Fatalf("%q: %q, want %q", step.args, got, step.wantReply)
		}
	}

	p.setPolicy(t, twoTenants(nil))

	for _, r := range []*rawClient{acmeIdle, acmeMulti, acmeSub} {
		r.closed()
	}
	if got := dialRaw(t, p.addr).do("AUTH", "acme", acmeSecret); got != wrongpassReply {
		t.Fatalf("acme AUTH after removal: %q", got)
	}
	if got := dialRaw(t, p.addr).do("HELLO", "3", "AUTH", "acme", acmeSecret); got != wrongpassReply {
		t.Fatalf("acme HELLO AUTH after removal: %q", got)
	}
	if got := globexIdle.do("PING"); got != "+PONG\r\n" {
		t.Fatalf("globex PING: %q", got)
	}
	if got := globexMulti.do("EXEC"); got != "*1\r\n+OK\r\n" {
		t.Fatalf("globex EXEC: %q", got)
	}
	if got := globexIdle.do("GET", key); got != "$6\r\nglobex\r\n" {
		t.Fatalf("globex GET: %q", got)
	}
	if got := p.metric(t, "tenantguard_redis_sessions_ended_total", map[string]string{"reason": "tenant_removed"}); got != 3 {
		t.Fatalf("sessions_ended_total{tenant_removed} = %v, want 3", got)
	}

	p.setPolicy(t, twoTenants(func(*policy.TenantSpec) {}))
	again := authed(t, p, "acme", acmeSecret)
	if got := again.do("GET", key); got != "$-1\r\n" {
		t.Fatalf("acme's queued SET ran: GET %q", got)
	}
}

// TestPolicyFollowedPerCommand: a change to acme's command rate applies on
// its open connection at the next command.
func TestPolicyFollowedPerCommand(t *testing.T) {
	p := startProxy(t, nil)
	r := authed(t, p, "acme", acmeSecret)
	const burst = 60
	for _, tc := range []struct {
		name        string
		rate        int
		wantLimited bool
	}{
		{"unlimited", 0, false},
		{"capped", 10, true},
		{"raised", 100000, false},
		{"capped again", 10, true},
		{"uncapped", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p.setPolicy(t, twoTenants(func(ts *policy.TenantSpec) { ts.Limits.CommandsPerSecond = tc.rate }))
			for i := 0; i < burst; i++ { // pipelined: one write, then the replies
				r.send("INCR", "rate")
			}
			limited := 0
			for i := 0; i < burst; i++ {
				got := r.reply()
				switch {
				case strings.HasPrefix(got, "-TRYAGAIN"):
					if want := fmt.Sprintf("command rate of %d/s", tc.rate); !strings.Contains(got, want) {
						t.Fatalf("refusal %q does not name the rate %d", got, tc.rate)
					}
					limited++
				case !strings.HasPrefix(got, ":"):
					t.Fatalf("INCR: %q", got)
				}
			}
			if tc.wantLimited && (limited == 0 || limited == burst) || !tc.wantLimited && limited > 0 {
				t.Fatalf("%d of %d commands limited at rate %d", limited, burst, tc.rate)
			}
		})
	}
}

// TestPolicyRemovedSecret: a static secret the new policy no longer lists
// stops working at once: the connections that authenticated with it are
// closed, with nothing written into them (a rotated password must not leave
// sessions open on the old one), and it is refused on new connections
// even though the proxy had it cached; a connection that authenticated
// again with the remaining secret stays, as does one that only ever used
// it, and the remaining secret works on new connections.
func TestPolicyRemovedSecret(t *testing.T) {
	const second = "acme-secret-2"
	p := startProxyWith(t, func(spec *policy.Spec) {
		spec.Tenants[0].Passwords = []string{acmeSecret, second}
	}, nil)
	onSecond := authed(t, p, "acme", second)
	if got := onSecond.do("AUTH", "acme", second); got != "+OK\r\n" { // verified again: from the cache
		t.Fatalf("AUTH again: %q", got)
	}
	reauthed := authed(t, p, "acme", second)
	if got := reauthed.do("AUTH", "acme", acmeSecret); got != "+OK\r\n" {
		t.Fatalf("AUTH with the remaining secret: %q", got)
	}
	onFirst := authed(t, p, "acme", acmeSecret)
	ended := p.metric(t, "tenantguard_redis_sessions_ended_total", map[string]string{"reason": "credential_removed"})

	p.setPolicy(t, twoTenants(func(ts *policy.TenantSpec) { ts.Passwords = []string{acmeSecret} }))
	onSecond.closed()
	if got := p.metric(t, "tenantguard_redis_sessions_ended_total", map[string]string{"reason": "credential_removed"}); got != ended+1 {
		t.Fatalf("sessions_ended_total{credential_removed} = %v, want %v", got, ended+1)
	}
	for name, c := range map[string]*rawClient{"re-authenticated": reauthed, "on the remaining secret": onFirst} {
		if got := c.do("PING"); got != "+PONG\r\n" {
			t.Fatalf("PING on the connection %s: %q", name, got)
		}
	}
	if got := dialRaw(t, p.addr).do("AUTH", "acme", second); got != wrongpassReply {
		t.Fatalf("removed secret on a new connection: %q", got)
	}
	if got := dialRaw(t, p.addr).do("AUTH", "acme", acmeSecret); got != "+OK\r\n" {
		t.Fatalf("remaining secret on a new connection: %q", got)
	}
}

// TestPolicySwapsUnderLoad: globex's clients run commands flat out while
// the policy changes 50 times (acme removed and back, acme's rate
// changed): globex sees no error at all.
func TestPolicySwapsUnderLoad(t *testing.T) {
	p := startProxy(t, nil)
	ctx := ctxT(t, 60*time.Second)
	snaps := []*policy.Snapshot{
		mustCompile(t, twoTenants(nil)),
		mustCompile(t, twoTenants(func(*policy.TenantSpec) {})),
		mustCompile(t, twoTenants(func(ts *policy.TenantSpec) { ts.Limits.CommandsPerSecond = 5 })),
	}
	const workers = 4
	stamp := time.Now().UnixNano()
	cleanup := p.client(t, "globex", globexSecret, 2)
	t.Cleanup(func() {
		for i := 0; i < workers; i++ {
			_ = cleanup.Del(context.Background(), fmt.Sprintf("load-%d-%d", stamp, i)).Err()
		}
	})
	var done atomic.Int64
	errs := make(chan error, workers)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < workers; i++ {
		c := p.client(t, "globex", globexSecret, 2+i%2)
		key := fmt.Sprintf("load-%d-%d", stamp, i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := int64(1); ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				got, err := c.Incr(ctx, key).Result()
				if err == nil && got != n {
					err = fmt.Errorf("INCR %s = %d, want %d", key, got, n)
				}
				if err != nil {
					errs <- err
					return
				}
				done.Add(1)
			}
		}()
	}
	for i := 0; i < 50; i++ {
		before := done.Load()
		p.swap(snaps[i%len(snaps)])
		harness.Eventually(t, 10*time.Second, func() error {
			select {
			case err := <-errs:
				t.Fatalf("globex client failed after %d swaps: %v", i, err)
			default:
			}
			if done.Load() < before+workers {
				return errors.New("globex clients not progressing")
			}
			return nil
		})
	}
	close(stop)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatalf("globex client failed: %v", err)
	default:
	}
	t.Logf("%d globex commands across 50 swaps", done.Load())
}
