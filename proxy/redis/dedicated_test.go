package redis_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/tenantguard/tenantguard/test/harness"
)

// TestDedicatedConnectionReuse: a dedicated upstream connection that acme
// leaves with state on it (WATCH, a half-open MULTI, SUBSCRIBE, PSUBSCRIBE,
// a name, RESP3) is reset and reused by globex's next stateful command:
// the same connection (its CLIENT ID, seen from redis-server), with none of
// acme's state visible to globex, and globex's commands working. One left
// with a blocking command in flight is closed instead, and the element
// pushed afterwards is not lost to it.
func TestDedicatedConnectionReuse(t *testing.T) {
	type env struct {
		p *proxy
		d *goredis.Client
	}
	for _, tc := range []struct {
		name string
		// acme leaves state on its dedicated connection, whose last
		// command CLIENT LIST then shows as cmd.
		acme func(t *testing.T, e env, a *rawClient)
		cmd  string
		// globex uses a dedicated connection, ending with a command
		// CLIENT LIST shows as cmd; it checks nothing of acme's shows.
		globex    func(t *testing.T, e env, g *rawClient)
		globexCmd string
		proto     int // globex's protocol
	}{
		{
			name: "WATCH",
			acme: func(t *testing.T, e env, a *rawClient) {
				expect(t, a.do("WATCH", "k"), "+OK\r\n")
			},
			cmd: "watch",
			globex: func(t *testing.T, e env, g *rawClient) {
				// A key acme watched changes: had the WATCH stayed, the
				// connection's transaction would fail.
				if err := e.d.Set(context.Background(), "t:acme:k", "changed", 0).Err(); err != nil {
					t.Fatal(err)
				}
				expect(t, g.do("MULTI"), "+OK\r\n")
				expect(t, g.do("SET", "k", "v"), "+QUEUED\r\n")
				expect(t, g.do("EXEC"), "*1\r\n+OK\r\n")
			},
			globexCmd: "exec", proto: 2,
		},
		{
			name: "MULTI left open",
			acme: func(t *testing.T, e env, a *rawClient) {
				expect(t, a.do("MULTI"), "+OK\r\n")
				expect(t, a.do("SET", "k", "acme-queued"), "+QUEUED\r\n")
			},
			cmd: "set",
			globex: func(t *testing.T, e env, g *rawClient) {
				expect(t, g.do("MULTI"), "+OK\r\n") // not "MULTI calls can not be nested"
				expect(t, g.do("GET", "k"), "+QUEUED\r\n")
				expect(t, g.do("EXEC"), "*1\r\n$-1\r\n")
				if n, err := e.d.Exists(context.Background(), "t:acme:k").Result(); err != nil || n != 0 {
					t.Fatalf("acme's queued SET ran: %d %v", n, err)
				}
			},
			globexCmd: "exec", proto: 2,
		},
		{
			name: "SUBSCRIBE",
			acme: func(t *testing.T, e env, a *rawClient) {
				expect(t, a.do("SUBSCRIBE", "news"), "*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n")
			},
			cmd: "subscribe",
			globex: func(t *testing.T, e env, g *rawClient) {
				expect(t, g.do("SUBSCRIBE", "other"), "*3\r\n$9\r\nsubscribe\r\n$5\r\nother\r\n:1\r\n")
				ctx := context.Background()
				if n, err := e.d.Publish(ctx, "c:acme:news", "for acme").Result(); err != nil || n != 0 {
					t.Fatalf("acme's channel still has %d subscribers (%v)", n, err)
				}
				if n, err := e.d.Publish(ctx, "c:globex:other", "for globex").Result(); err != nil || n != 1 {
					t.Fatalf("globex's channel has %d subscribers (%v)", n, err)
				}
				expect(t, g.reply(), "*3\r\n$7\r\nmessage\r\n$5\r\nother\r\n$10\r\nfor globex\r\n")
			},
			globexCmd: "subscribe", proto: 2,
		},
		{
			name: "PSUBSCRIBE",
			acme: func(t *testing.T, e env, a *rawClient) {
				expect(t, a.do("PSUBSCRIBE", "n*"), "*3\r\n$10\r\npsubscribe\r\n$2\r\nn*\r\n:1\r\n")
			},
			cmd: "psubscribe",
			globex: func(t *testing.T, e env, g *rawClient) {
				expect(t, g.do("SUBSCRIBE", "other"), "*3\r\n$9\r\nsubscribe\r\n$5\r\nother\r\n:1\r\n")
				if n, err := e.d.Publish(context.Background(), "c:acme:news", "for acme").Result(); err != nil || n != 0 {
					t.Fatalf("acme's pattern still has %d subscribers (%v)", n, err)
				}
			},
			globexCmd: "subscribe", proto: 2,
		},
		{
			name: "RESP3 and a name, then RESP2",
			acme: func(t *testing.T, e env, a *rawClient) {
				expect(t, a.do("CLIENT", "SETNAME", "acme-conn"), "+OK\r\n")
				expect(t, a.do("HSET", "h", "f", "v"), ":1\r\n") // RESP3: on the dedicated connection
			},
			cmd: "hset",
			globex: func(t *testing.T, e env, g *rawClient) {
				expect(t, g.do("HSET", "h", "f", "v"), ":1\r\n")
				expect(t, g.do("MULTI"), "+OK\r\n")
				expect(t, g.do("HGETALL", "h"), "+QUEUED\r\n")
				// RESP2: an array, not acme's RESP3 map.
				expect(t, g.do("EXEC"), "*1\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n")
				expect(t, g.do("CLIENT", "GETNAME"), "$-1\r\n")
			},
			globexCmd: "exec", proto: 2,
		},
		{
			name: "RESP2, then RESP3",
			acme: func(t *testing.T, e env, a *rawClient) {
				expect(t, a.do("MULTI"), "+OK\r\n")
			},
			cmd: "multi",
			globex: func(t *testing.T, e env, g *rawClient) {
				expect(t, g.do("HSET", "h", "f", "v"), ":1\r\n")
				expect(t, g.do("HGETALL", "h"), "%1\r\n$1\r\nf\r\n$1\r\nv\r\n")
			},
			globexCmd: "hgetall", proto: 3,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startProxy(t, nil)
			e := env{p: p, d: p.direct(t)}
			ctx := ctxT(t, 30*time.Second)
			if err := e.d.Del(ctx, "t:acme:k", "t:globex:k", "t:globex:h").Err(); err != nil {
				t.Fatal(err)
			}
			acmeProto := 2
			if tc.name == "RESP3 and a name, then RESP2" {
				acmeProto = 3
			}
			a := authedProto(t, p, "acme", acmeSecret, acmeProto)
			tc.acme(t, e, a)
			acmeID := upstreamClient(t, e.d, tc.cmd)
			a.c.Close()
			waitIdleDedicated(t, p, 1)

			g := authedProto(t, p, "globex", globexSecret, tc.proto)
			tc.globex(t, e, g)
			globexID := upstreamClient(t, e.d, tc.globexCmd)
			if globexID != acmeID {
				t.Fatalf("globex used upstream client %d, acme %d: not the same connection", globexID, acmeID)
			}
			if got := p.metric(t, "tenantguard_redis_dedicated_releases_total", map[string]string{"result": "pooled"}); got != 1 {
				t.Fatalf("dedicated_releases_total{pooled} = %v", got)
			}
			// Upstream, the connection carries globex's state only.
			info := upstreamInfo(t, e.d, globexID)
			for _, f := range []string{"db=0", "name= ", "resp=" + strconv.Itoa(tc.proto)} {
				if !strings.Contains(info, f) {
					t.Fatalf("upstream connection: want %q in %q", f, info)
				}
			}
		})
	}

	t.Run("blocking command in flight", func(t *testing.T) {
		p := startProxy(t, nil)
		d := p.direct(t)
		ctx := ctxT(t, 30*time.Second)
		if err := d.Del(ctx, "t:acme:q", "t:globex:q").Err(); err != nil {
			t.Fatal(err)
		}
		a := authed(t, p, "acme", acmeSecret)
		a.send("BLPOP", "q", "0")
		if err := waitBlockedClients(ctx, d, 1); err != nil {
			t.Fatal(err)
		}
		acmeID := upstreamClient(t, d, "blpop")
		a.c.Close()
		// The connection is closed, not reset behind the BLPOP: gone
		// upstream, so it cannot take what is pushed next.
		harness.Eventually(t, 10*time.Second, func() error {
			if list, err := d.ClientList(ctx).Result(); err != nil || strings.Contains(list, "id="+strconv.FormatInt(acmeID, 10)+" ") {
				return fmt.Errorf("upstream client %d still there (%v)", acmeID, err)
			}
			return nil
		})
		if got := p.metric(t, "tenantguard_redis_dedicated_releases_total", map[string]string{"result": "closed_owed"}); got != 1 {
			t.Fatalf("dedicated_releases_total{closed_owed} = %v", got)
		}
		if err := d.LPush(ctx, "t:acme:q", "kept").Err(); err != nil {
			t.Fatal(err)
		}
		if n, err := d.LLen(ctx, "t:acme:q").Result(); err != nil || n != 1 {
			t.Fatalf("acme's list after its client left: %d %v", n, err)
		}
		// globex blocks on a connection of its own and gets its element.
		g := authed(t, p, "globex", globexSecret)
		g.send("BLPOP", "q", "10")
		if err := waitBlockedClients(ctx, d, 1); err != nil {
			t.Fatal(err)
		}
		if id := upstreamClient(t, d, "blpop"); id == acmeID {
			t.Fatalf("globex blocked on acme's connection %d", id)
		}
		if err := d.LPush(ctx, "t:globex:q", "x").Err(); err != nil {
			t.Fatal(err)
		}
		expect(t, g.reply(), "*2\r\n$1\r\nq\r\n$1\r\nx\r\n")
	})
}

func expect(t *testing.T, got, want string) {
	t.Helper()
	if got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// authedProto is authed, with HELLO 3 AUTH for proto 3.
func authedProto(t *testing.T, p *proxy, tenant, secret string, proto int) *rawClient {
	t.Helper()
	if proto == 2 {
		return authed(t, p, tenant, secret)
	}
	r := dialRaw(t, p.addr)
	if got := r.do("HELLO", "3", "AUTH", tenant, secret); !strings.HasPrefix(got, "%") {
		t.Fatalf("HELLO 3 AUTH %s: %q", tenant, got)
	}
	return r
}

// upstreamClient returns the id of the one upstream client whose last
// command was cmd.
func upstreamClient(t *testing.T, d *goredis.Client, cmd string) int64 {
	t.Helper()
	list, err := d.ClientList(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	var ids []int64
	for _, line := range strings.Split(list, "\n") {
		if strings.Contains(line, " cmd="+cmd+" ") {
			id, _ := strconv.ParseInt(strings.TrimPrefix(strings.Fields(line)[0], "id="), 10, 64)
			ids = append(ids, id)
		}
	}
	if len(ids) != 1 {
		t.Fatalf("upstream clients with cmd=%s: %v\n%s", cmd, ids, list)
	}
	return ids[0]
}

// upstreamInfo returns CLIENT LIST's line for client id.
func upstreamInfo(t *testing.T, d *goredis.Client, id int64) string {
	t.Helper()
	list, err := d.ClientList(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(list, "\n") {
		if strings.HasPrefix(line, "id="+strconv.FormatInt(id, 10)+" ") {
			return line
		}
	}
	t.Fatalf("no upstream client %d in\n%s", id, list)
	return ""
}

func waitIdleDedicated(t *testing.T, p *proxy, n int) {
	t.Helper()
	harness.Eventually(t, 10*time.Second, func() error {
		if got := p.metric(t, "tenantguard_redis_dedicated_idle_connections", nil); got != float64(n) {
			return fmt.Errorf("%v idle dedicated connections, want %d", got, n)
		}
		return nil
	})
}
