package redis_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/tenantguard/tenantguard/policy"
	proxyredis "github.com/tenantguard/tenantguard/proxy/redis"
	"github.com/tenantguard/tenantguard/test/harness"
)

// TestAuthentication: before AUTH only AUTH, HELLO, PING and QUIT work; a
// tenant's secret never authenticates another tenant; a connection cannot
// switch tenants.
func TestAuthentication(t *testing.T) {
	p := startProxy(t, nil)
	ctx := ctxT(t, 20*time.Second)
	anon := goredis.NewClient(&goredis.Options{Addr: p.addr, DisableIdentity: true, Protocol: 2})
	defer anon.Close()
	if err := anon.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING before AUTH: %v", err)
	}
	if err := anon.Get(ctx, "x").Err(); err == nil || !strings.HasPrefix(err.Error(), "NOAUTH") {
		t.Fatalf("GET before AUTH: %v", err)
	}
	for _, tc := range []struct{ user, pass string }{
		{"acme", globexSecret}, {"globex", acmeSecret}, {"acme", "wrong"}, {"initech", acmeSecret}, {"default", "anything"},
	} {
		c := goredis.NewClient(&goredis.Options{Addr: p.addr, Username: tc.user, Password: tc.pass, DisableIdentity: true, Protocol: 2})
		err := c.Ping(ctx).Err()
		c.Close()
		if err == nil || !strings.HasPrefix(err.Error(), "WRONGPASS") {
			t.Fatalf("%s/%s: %v", tc.user, tc.pass, err)
		}
	}
	for _, proto := range []int{2, 3} {
		c := p.client(t, "acme", acmeSecret, proto) // HELLO proto AUTH …
		if err := c.Set(ctx, "who", "acme", 0).Err(); err != nil {
			t.Fatalf("resp%d: %v", proto, err)
		}
		// Re-AUTH as another tenant on the same connection is refused.
		conn := c.Conn()
		if err := conn.Do(ctx, "AUTH", "globex", globexSecret).Err(); err == nil {
			t.Fatal("AUTH switched tenants")
		}
		if v, err := conn.Get(ctx, "who").Result(); err != nil || v != "acme" {
			t.Fatalf("after refused re-AUTH: %q %v", v, err)
		}
		conn.Close()
	}
}

// TestUpstreamDownAndBack: with redis-server stopped, commands fail fast
// with TRYAGAIN and the breaker opens; when it is back, work resumes.
func TestUpstreamDownAndBack(t *testing.T) {
	rd := harness.Redis(t)
	p := startProxy(t, func(c *proxyredis.Config) {
		c.BreakerFailures = 2
		c.BreakerOpenTime = 200 * time.Millisecond
	})
	ctx := ctxT(t, 60*time.Second)
	c := p.client(t, "acme", acmeSecret, 2)
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rd.Stop(); err != nil {
		t.Fatal(err)
	}
	restarted := false
	defer func() {
		if !restarted {
			if err := rd.Start(ctx); err != nil {
				t.Errorf("restart redis: %v", err)
			}
		}
	}()
	sawTryAgain := false
	for i := 0; i < 20 && !sawTryAgain; i++ {
		err := c.Get(ctx, "k").Err()
		if err == nil {
			t.Fatal("GET succeeded with redis stopped")
		}
		sawTryAgain = strings.HasPrefix(err.Error(), "TRYAGAIN")
	}
	if !sawTryAgain {
		t.Fatal("no TRYAGAIN while the upstream is down")
	}
	if err := rd.Start(ctx); err != nil {
		t.Fatal(err)
	}
	restarted = true
	harness.Eventually(t, 30*time.Second, func() error {
		err := c.Set(ctx, "k", "again", 0).Err()
		if err != nil {
			return err
		}
		if v, err := c.Get(ctx, "k").Result(); err != nil || v != "again" {
			return errors.New("not recovered")
		}
		return nil
	})
}

// TestLimits: a tenant over its connection cap or command rate is refused;
// another tenant is not affected.
func TestLimits(t *testing.T) {
	p := startProxyWith(t, func(spec *policy.Spec) {
		spec.Tenants[0].Limits = policy.Limits{MaxConnections: 2, CommandsPerSecond: 100}
	}, nil)
	ctx := ctxT(t, 20*time.Second)
	a := p.client(t, "acme", acmeSecret, 2)
	pipe := a.Pipeline()
	var cmds []*goredis.IntCmd
	for i := 0; i < 500; i++ {
		cmds = append(cmds, pipe.Incr(ctx, "counter"))
	}
	_, _ = pipe.Exec(ctx)
	limited := 0
	for _, c := range cmds {
		if err := c.Err(); err != nil {
			if !strings.HasPrefix(err.Error(), "TRYAGAIN") {
				t.Fatal(err)
			}
			limited++
		}
	}
	if limited == 0 || limited == len(cmds) {
		t.Fatalf("%d of %d commands rate-limited", limited, len(cmds))
	}
	g := p.client(t, "globex", globexSecret, 2)
	gp := g.Pipeline()
	var gcmds []*goredis.IntCmd
	for i := 0; i < 500; i++ {
		gcmds = append(gcmds, gp.Incr(ctx, "counter"))
	}
	if _, err := gp.Exec(ctx); err != nil {
		t.Fatalf("globex limited by acme's rate: %v", err)
	}
	// Connection cap: the third acme connection is refused.
	conns := []*goredis.Conn{a.Conn(), a.Conn()}
	for _, c := range conns {
		defer c.Close()
		_ = c.Ping(ctx).Err()
	}
	third := goredis.NewClient(&goredis.Options{Addr: p.addr, Username: "acme", Password: acmeSecret, DisableIdentity: true, Protocol: 2})
	defer third.Close()
	if err := third.Ping(ctx).Err(); err == nil || !strings.Contains(err.Error(), "max number of clients") {
		t.Fatalf("third acme connection: %v", err)
	}
}
