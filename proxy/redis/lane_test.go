package redis_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	proxyredis "github.com/tenantguard/tenantguard/proxy/redis"
)

// TestBulkyTenantLeavesTheFirstLane: while their commands and replies are
// small, two tenants' clients share the first shared upstream connection
// (one batch for redis-server to read and answer). Once acme sends or is
// sent something large, its clients use another shared connection, so
// its large replies do not hold up globex's, which stays on the first.
// Where each command went is read from redis-server's MONITOR: the
// address of the connection that sent it.
func TestBulkyTenantLeavesTheFirstLane(t *testing.T) {
	big := strings.Repeat("x", 20<<10)
	for _, tc := range []struct {
		name  string
		bulky func(ctx context.Context, a *goredis.Client) error
	}{
		{"a large command", func(ctx context.Context, a *goredis.Client) error {
			return a.Set(ctx, "lane:big", big, 0).Err()
		}},
		{"a large reply", func(ctx context.Context, a *goredis.Client) error {
			// Built of small commands, so only the reply is large.
			for i := 0; i < 20; i++ {
				if err := a.Append(ctx, "lane:big", big[:1<<10]).Err(); err != nil {
					return err
				}
			}
			v, err := a.Get(ctx, "lane:big").Result()
			if err == nil && v != big {
				err = fmt.Errorf("GET lane:big: %d bytes, want %d", len(v), len(big))
			}
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startProxy(t, func(c *proxyredis.Config) { c.SharedConns = 3 })
			mon := monitor(t, p.redis)
			ctx := ctxT(t, 30*time.Second)
			a := p.client(t, "acme", acmeSecret, 2)
			g := p.client(t, "globex", globexSecret, 2)
			if err := a.Del(ctx, "lane:big").Err(); err != nil {
				t.Fatal(err)
			}
			// via sends HLEN of a key no other command names and returns
			// the upstream connection redis-server saw it on.
			n := 0
			via := func(c *goredis.Client) string {
				t.Helper()
				n++
				key := fmt.Sprintf("lane:probe-%d", n)
				if err := c.HLen(ctx, key).Err(); err != nil {
					t.Fatal(err)
				}
				return mon.sender(t, "hlen", key)
			}
			light := via(g)
			for i := 0; i < 4; i++ {
				if got := via(a); got != light {
					t.Fatalf("light acme on %s, globex on %s: want one shared connection", got, light)
				}
			}

			if err := tc.bulky(ctx, a); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 4; i++ {
				if got := via(a); got == light {
					t.Fatalf("bulky acme still on globex's shared connection %s", light)
				}
				if got := via(g); got != light {
					t.Fatalf("globex moved from %s to %s when acme became bulky", light, got)
				}
			}
			for tenant, want := range map[string]float64{"acme": 1, "globex": 0} {
				if got := p.metric(t, "tenantguard_redis_bulky_total", map[string]string{"tenant": tenant}); got != want {
					t.Errorf("bulky_total{tenant=%q} = %v, want %v", tenant, got, want)
				}
			}
			if v, err := a.Get(ctx, "lane:big").Result(); err != nil || v != big {
				t.Fatalf("acme GET lane:big: %d bytes, %v", len(v), err)
			}
			if err := g.Get(ctx, "lane:big").Err(); err != goredis.Nil {
				t.Fatalf("globex GET lane:big: %v, want nil (acme's key)", err)
			}
		})
	}
}

// TestLaneChangesKeepRepliesInOrder: clients of two tenants pipeline
// small and large commands at once, so their tenants turn bulky while
// commands are owed; every client gets every reply, in order, its own.
func TestLaneChangesKeepRepliesInOrder(t *testing.T) {
	p := startProxy(t, func(c *proxyredis.Config) { c.SharedConns = 3 })
	ctx := ctxT(t, time.Minute)
	big := strings.Repeat("y", 24<<10)
	run := time.Now().UnixNano() // the upstream is the package's: keys of this run only
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := 0; w < 8; w++ {
		tenant, secret := "acme", acmeSecret
		if w%2 == 1 {
			tenant, secret = "globex", globexSecret
		}
		c := p.client(t, tenant, secret, 2)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 150; i++ {
				key := fmt.Sprintf("order:%d:%d:%d", run, w, i)
				val := fmt.Sprintf("%s-%d-%d", tenant, w, i)
				if i%25 == 10 && w < 4 {
					val += big // the first four clients' tenants turn bulky now and then
				}
				cmds, err := c.Pipelined(ctx, func(pl goredis.Pipeliner) error {
					pl.Set(ctx, key, val, 0)
					pl.Get(ctx, key)
					pl.Incr(ctx, key+":n")
					pl.Get(ctx, key)
					return nil
				})
				if err != nil {
					errs <- fmt.Errorf("client %d (%s) pipeline %d: %v", w, tenant, i, err)
					return
				}
				for _, j := range []int{1, 3} {
					if got := cmds[j].(*goredis.StringCmd).Val(); got != val {
						errs <- fmt.Errorf("client %d (%s) pipeline %d reply %d: %.40q, want %.40q", w, tenant, i, j, got, val)
						return
					}
				}
				if got := cmds[2].(*goredis.IntCmd).Val(); got != 1 {
					errs <- fmt.Errorf("client %d (%s) pipeline %d: INCR %d, want 1", w, tenant, i, got)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// monitorConn reads redis-server's MONITOR stream.
type monitorConn struct {
	lines chan string
}

// monitor starts a MONITOR connection to the redis-server at addr,
// closed when the test ends.
func monitor(t *testing.T, addr string) *monitorConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	if _, err := c.Write([]byte("MONITOR\r\n")); err != nil {
		t.Fatal(err)
	}
	if line, err := r.ReadString('\n'); err != nil || line != "+OK\r\n" {
		t.Fatalf("MONITOR: %q, %v", line, err)
	}
	m := &monitorConn{lines: make(chan string, 1024)}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			select {
			case m.lines <- line:
			case <-stop:
				return
			}
		}
	}()
	t.Cleanup(func() {
		close(stop)
		c.Close()
		<-done
	})
	return m
}

// sender waits for the command name run on a key ending in key and
// returns the address of the connection that sent it, as MONITOR shows
// it: +1700000000.000000 [0 127.0.0.1:54321] "hlen" "acme:lane:probe-1".
func (m *monitorConn) sender(t *testing.T, name, key string) string {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case line := <-m.lines:
			if !strings.Contains(line, `] "`+name+`" `) || !strings.Contains(line, key+`"`) {
				continue
			}
			open, end := strings.IndexByte(line, '['), strings.IndexByte(line, ']')
			if open < 0 || end < open {
				t.Fatalf("MONITOR line without a sender: %q", line)
			}
			f := strings.Fields(line[open+1 : end])
			if len(f) != 2 {
				t.Fatalf("MONITOR line without a sender: %q", line)
			}
			return f[1]
		case <-deadline:
			t.Fatalf("redis-server did not run %s on %s within 10s", name, key)
		}
	}
}
