package redis_test

import (
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	proxyredis "github.com/tenantguard/tenantguard/proxy/redis"
	"github.com/tenantguard/tenantguard/test/harness"
)

// TestNoUpstreamDetailReachesClients: when the upstream fails, a client
// gets a fixed reply with Redis' error code and a reference, never the
// upstream's address, user or error text; the log has the cause under the
// same reference, with the tenant and the client id.
func TestNoUpstreamDetailReachesClients(t *testing.T) {
	dead := deadAddr(t)
	_, deadPort, _ := net.SplitHostPort(dead)
	for _, tc := range []struct {
		name  string
		tweak func(*proxyredis.Config)
		cmds  [][]string // sent in order; the last one's reply is checked
		reply string     // its code and text, before " (ref …)"
		cause string     // in the log line with the reference
		leaks []string   // never in the reply
	}{
		{
			name:  "upstream down, shared connection",
			tweak: func(c *proxyredis.Config) { c.Upstream, c.BreakerFailures = dead, 100 },
			cmds:  [][]string{{"GET", "k"}},
			reply: "TRYAGAIN tenantguard: upstream unavailable", cause: "connection refused",
			leaks: []string{dead, deadPort, "refused", "dial"},
		},
		{
			name:  "upstream down, dedicated connection",
			tweak: func(c *proxyredis.Config) { c.Upstream, c.BreakerFailures = dead, 100 },
			cmds:  [][]string{{"MULTI"}},
			reply: "TRYAGAIN tenantguard: upstream unavailable", cause: "connection refused",
			leaks: []string{dead, deadPort, "refused", "dial"},
		},
		{
			name:  "upstream down, emulated FLUSHDB",
			tweak: func(c *proxyredis.Config) { c.Upstream, c.BreakerFailures = dead, 100 },
			cmds:  [][]string{{"FLUSHDB"}},
			reply: "TRYAGAIN tenantguard: upstream unavailable", cause: "connection refused",
			leaks: []string{dead, deadPort, "refused", "dial"},
		},
		{
			name:  "breaker open",
			tweak: func(c *proxyredis.Config) { c.Upstream, c.BreakerFailures, c.BreakerOpenTime = dead, 1, time.Minute },
			cmds:  [][]string{{"GET", "k"}, {"GET", "k"}},
			reply: "TRYAGAIN tenantguard: upstream unavailable", cause: "circuit breaker is open",
			leaks: []string{"breaker", dead},
		},
		{
			name: "upstream refuses the proxy's credentials",
			tweak: func(c *proxyredis.Config) {
				c.UpstreamUser, c.UpstreamPassword, c.BreakerFailures = "tg-no-such-user", "pw", 100
			},
			cmds:  [][]string{{"SET", "k", "v"}},
			reply: "TRYAGAIN tenantguard: upstream unavailable", cause: "WRONGPASS",
			leaks: []string{"WRONGPASS", "tg-no-such-user", "handshake"},
		},
		{
			name:  "too many stateful clients",
			tweak: func(c *proxyredis.Config) { c.MaxDedicated = 1 },
			cmds:  [][]string{{"SUBSCRIBE", "ch"}}, // a second client, after one took the only dedicated connection
			reply: "TRYAGAIN tenantguard: too many clients need an upstream connection of their own", cause: "too many stateful clients",
			leaks: []string{"limit"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startProxy(t, tc.tweak)
			if tc.name == "too many stateful clients" {
				first := authed(t, p, "acme", acmeSecret)
				if got := first.do("MULTI"); got != "+OK\r\n" {
					t.Fatalf("first MULTI: %q", got)
				}
			}
			r := authed(t, p, "acme", acmeSecret)
			var got string
			for _, cmd := range tc.cmds {
				got = r.do(cmd...)
			}
			checkUpstreamError(t, p, got, tc.reply, tc.cause, tc.leaks)
			// The connection stays open (the proxy answers CLIENT GETNAME itself).
			if got := r.do("CLIENT", "GETNAME"); got != "$-1\r\n" {
				t.Fatalf("connection not usable after the error: CLIENT GETNAME %q", got)
			}
		})
	}
	t.Run("connection lost with the reply owed", func(t *testing.T) {
		p := startProxy(t, nil)
		ctx := ctxT(t, 30*time.Second)
		d := p.direct(t)
		r := authed(t, p, "acme", acmeSecret)
		r.send("BLPOP", "never", "0")
		if err := waitBlockedClients(ctx, d, 1); err != nil {
			t.Fatal(err)
		}
		list, err := d.ClientList(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		var id int64
		for _, line := range strings.Split(list, "\n") {
			if strings.Contains(line, "cmd=blpop") {
				f := strings.Fields(line)[0] // id=N
				id, _ = strconv.ParseInt(strings.TrimPrefix(f, "id="), 10, 64)
			}
		}
		if err := d.ClientKillByFilter(ctx, "ID", strconv.FormatInt(id, 10)).Err(); err != nil || id == 0 {
			t.Fatalf("kill upstream client %d: %v", id, err)
		}
		checkUpstreamError(t, p, r.reply(), "ERR tenantguard: upstream connection lost", "EOF", []string{p.redis})
	})
}

var upstreamErrReply = regexp.MustCompile(`^-((?:TRYAGAIN|ERR) tenantguard: [a-z ]+) \(ref ([0-9a-f]{8})\)\r\n$`)

// checkUpstreamError checks a client's reply to an upstream failure and
// the log line its reference points to.
func checkUpstreamError(t *testing.T, p *proxy, got, reply, cause string, leaks []string) {
	t.Helper()
	m := upstreamErrReply.FindStringSubmatch(got)
	if m == nil || m[1] != reply {
		t.Fatalf("reply %q, want %q (ref …)", got, reply)
	}
	for _, leak := range leaks {
		if strings.Contains(got, leak) {
			t.Fatalf("reply %q shows %q", got, leak)
		}
	}
	// The log says why, under the same reference, for this tenant and client.
	harness.Eventually(t, 5*time.Second, func() error {
		lines := p.logs.lines("ref="+m[2], "tenant=acme", "client=", cause)
		if len(lines) == 0 {
			return &logMissing{ref: m[2], cause: cause, all: p.logs.lines("ref=" + m[2])}
		}
		return nil
	})
}

type logMissing struct {
	ref, cause string
	all        []string
}

func (e *logMissing) Error() string {
	return "no log line with ref=" + e.ref + ", tenant=acme, client and " + strconv.Quote(e.cause) + "; lines with the ref: " + strings.Join(e.all, " | ")
}

// deadAddr is a local address nothing listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
