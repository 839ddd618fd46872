package redis_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/test/sessionfake"

	goredis "github.com/redis/go-redis/v9"

	"github.com/tenantguard/tenantguard/policy"
	proxyredis "github.com/tenantguard/tenantguard/proxy/redis"
	"github.com/tenantguard/tenantguard/wire/resp"
)

// maxTokenLen is the longest session token extauthz/token issues.
const maxTokenLen = 5062

// rawClient speaks RESP over one connection, so a test sees exactly what
// the proxy sends, and when it closes.
type rawClient struct {
	t  *testing.T
	c  net.Conn
	rr *resp.ReplyReader
}

func dialRaw(t *testing.T, addr string) *rawClient {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawClient{t: t, c: c, rr: resp.NewReplyReader(c, 16<<10)}
}

func (r *rawClient) send(args ...string) {
	r.t.Helper()
	b := make([][]byte, len(args))
	for i, a := range args {
		b[i] = []byte(a)
	}
	if _, err := r.c.Write(resp.AppendCommand(nil, b)); err != nil {
		r.t.Fatal(err)
	}
}

// reply reads one reply and returns its raw RESP text.
func (r *rawClient) reply() string {
	r.t.Helper()
	_ = r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	rep, err := r.rr.ReadReply()
	if err != nil {
		r.t.Fatalf("read reply: %v", err)
	}
	return string(rep.Raw())
}

func (r *rawClient) do(args ...string) string {
	r.t.Helper()
	r.send(args...)
	return r.reply()
}

// closed waits for the proxy to close the connection, with nothing sent
// before it.
func (r *rawClient) closed() {
	r.t.Helper()
	_ = r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var b [64]byte
	n, err := r.c.Read(b[:])
	var ne net.Error
	switch {
	case n > 0:
		r.t.Fatalf("got %q, want the connection closed", b[:n])
	case errors.As(err, &ne) && ne.Timeout():
		r.t.Fatal("connection still open")
	case err == nil, !errors.Is(err, io.EOF) && !strings.Contains(err.Error(), "reset"):
		r.t.Fatalf("read: %v", err)
	}
}

// TestTokenAuth: AUTH and HELLO AUTH take a session token for its tenant
// only; every failure is WRONGPASS, told apart only in metrics; static
// secrets keep working next to tokens.
func TestTokenAuth(t *testing.T) {
	fs := sessionfake.New()
	p := startProxy(t, func(c *proxyredis.Config) { c.Sessions = fs })
	ctx := ctxT(t, 30*time.Second)
	acme := fs.Issue("acme", nil)
	for _, tc := range []struct {
		name, user, secret string
		proto              int
		reason             string // "" = authenticates
	}{
		{"AUTH with a token", "acme", acme, 2, ""},
		{"HELLO 3 AUTH with a token", "acme", acme, 3, ""},
		{"maximal token", "globex", fs.IssueLen("globex", maxTokenLen), 2, ""},
		{"static secret", "acme", acmeSecret, 2, ""},
		{"token of another tenant", "globex", acme, 2, "token_invalid"},
		{"token for an unknown tenant", "initech", fs.Issue("initech", nil), 2, "token_invalid"},
		{"unknown token", "acme", "tg1.never-issued", 3, "token_invalid"},
		{"revoked", "acme", fs.Issue("acme", policy.ErrSessionRevoked), 2, "token_revoked"},
		{"expired", "acme", fs.Issue("acme", policy.ErrSessionExpired), 3, "token_expired"},
		{"store unavailable", "acme", fs.Issue("acme", policy.ErrSessionUnavailable), 2, "store_unavailable"},
		{"wrong static secret", "acme", "not-the-secret", 2, "password"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := p.metric(t, "tenantguard_redis_auth_failures_total", map[string]string{"reason": tc.reason})
			opened := fs.Opened(tc.secret)
			r := dialRaw(t, p.addr)
			var got string
			if tc.proto == 3 {
				got = r.do("HELLO", "3", "AUTH", tc.user, tc.secret)
			} else {
				got = r.do("AUTH", tc.user, tc.secret)
			}
			if tc.reason != "" {
				if got != "-WRONGPASS invalid username-password pair or user is disabled.\r\n" {
					t.Fatalf("got %q, want WRONGPASS", got)
				}
				if got := p.metric(t, "tenantguard_redis_auth_failures_total", map[string]string{"reason": tc.reason}); got != before+1 {
					t.Fatalf("auth_failures_total{reason=%s} = %v, want %v", tc.reason, got, before+1)
				}
				if fs.Opened(tc.secret) > opened {
					fs.Lease(t, tc.secret, opened).WaitClosed(t)
				}
				if got := r.do("GET", "who"); !strings.HasPrefix(got, "-NOAUTH") {
					t.Fatalf("GET after a failed AUTH: %q", got)
				}
				return
			}
			if tc.proto == 3 && !strings.HasPrefix(got, "%7\r\n") || tc.proto == 2 && got != "+OK\r\n" {
				t.Fatalf("AUTH: %q", got)
			}
			r.do("SET", "who", tc.user)
			if got := r.do("GET", "who"); !strings.HasSuffix(got, "\r\n"+tc.user+"\r\n") {
				t.Fatalf("GET: %q", got)
			}
			if !strings.HasPrefix(tc.secret, "tg1.") {
				return
			}
			l := fs.Lease(t, tc.secret, opened)
			r.c.Close()
			l.WaitClosed(t)
		})
	}
	// And through a stock client, both protocols.
	for _, proto := range []int{2, 3} {
		if err := p.client(t, "acme", fs.Issue("acme", nil), proto).Ping(ctx).Err(); err != nil {
			t.Fatalf("go-redis RESP%d: %v", proto, err)
		}
	}
}

// TestTokenReauth: AUTH again on a token connection. The same tenant with a
// new token replaces the lease; another tenant is refused and the
// connection stays as it was; a static secret drops the lease.
func TestTokenReauth(t *testing.T) {
	fs := sessionfake.New()
	p := startProxy(t, func(c *proxyredis.Config) { c.Sessions = fs })
	first, second := fs.Issue("acme", nil), fs.Issue("acme", nil)
	r := dialRaw(t, p.addr)
	if got := r.do("AUTH", "acme", first); got != "+OK\r\n" {
		t.Fatalf("AUTH: %q", got)
	}
	r.do("SET", "reauth", "acme")
	l1 := fs.Lease(t, first, 0)

	// The same token cannot be used for another tenant, nor another tenant's token.
	for _, tc := range []struct{ user, secret string }{{"globex", first}, {"globex", fs.Issue("globex", nil)}, {"globex", globexSecret}} {
		if got := r.do("AUTH", tc.user, tc.secret); !strings.HasPrefix(got, "-WRONGPASS") {
			t.Fatalf("AUTH %s: %q", tc.user, got)
		}
	}
	if got := r.do("GET", "reauth"); got != "$4\r\nacme\r\n" {
		t.Fatalf("after refused re-AUTH: %q", got)
	}
	if l1.CloseCount() != 0 {
		t.Fatal("a refused re-AUTH closed the lease")
	}

	if got := r.do("AUTH", "acme", second); got != "+OK\r\n" {
		t.Fatalf("re-AUTH: %q", got)
	}
	l1.WaitClosed(t)
	l2 := fs.Lease(t, second, 0)
	l1.End(policy.ErrSessionEnded) // the replaced lease no longer ends anything
	if got := r.do("GET", "reauth"); got != "$4\r\nacme\r\n" {
		t.Fatalf("after the old session ended: %q", got)
	}

	if got := r.do("AUTH", "acme", acmeSecret); got != "+OK\r\n" {
		t.Fatalf("re-AUTH with the static secret: %q", got)
	}
	l2.WaitClosed(t)
	if got := r.do("GET", "reauth"); got != "$4\r\nacme\r\n" {
		t.Fatalf("after static re-AUTH: %q", got)
	}
	if got := p.metric(t, "tenantguard_redis_sessions_ended_total", nil); got != 0 {
		t.Fatalf("sessions_ended_total = %v", got)
	}
}

// TestTokenSessionEnd: when a token's session ends, its connection is
// closed with nothing written: at once in immediate mode, aborting a MULTI;
// in boundary mode after the MULTI or the blocked command in progress, and
// at once when idle or subscribed. The other tenant keeps working, and the
// lease is closed exactly once.
func TestTokenSessionEnd(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	const (
		idle = iota
		multi
		blocked
		subscribed
	)
	for _, tc := range []struct {
		name  string
		mode  policy.SessionEndMode
		state int
	}{
		{"immediate idle", policy.SessionEndImmediate, idle},
		{"boundary idle", policy.SessionEndBoundary, idle},
		{"immediate in MULTI", policy.SessionEndImmediate, multi},
		{"boundary in MULTI", policy.SessionEndBoundary, multi},
		{"immediate blocked", policy.SessionEndImmediate, blocked},
		{"boundary blocked", policy.SessionEndBoundary, blocked},
		{"boundary subscribed", policy.SessionEndBoundary, subscribed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := sessionfake.New()
			p := startProxy(t, func(c *proxyredis.Config) { c.Sessions, c.SessionEnd = fs, tc.mode })
			other := p.client(t, "globex", fs.Issue("globex", nil), 2)
			acme := p.client(t, "acme", acmeSecret, 2) // the same tenant, statically
			direct := p.direct(t)
			mustWork := func() {
				t.Helper()
				if err := other.Incr(ctx, "counter").Err(); err != nil {
					t.Fatalf("other tenant: %v", err)
				}
			}
			key := "end:" + strings.ReplaceAll(tc.name, " ", "-")
			if err := acme.Del(ctx, key).Err(); err != nil {
				t.Fatal(err)
			}
			tok := fs.Issue("acme", nil)
			r := dialRaw(t, p.addr)
			if got := r.do("HELLO", "2", "AUTH", "acme", tok); !strings.HasPrefix(got, "*14\r\n") {
				t.Fatalf("HELLO: %q", got)
			}
			l := fs.Lease(t, tok, 0)
			switch tc.state {
			case multi:
				if got := r.do("MULTI"); got != "+OK\r\n" {
					t.Fatal(got)
				}
				if got := r.do("SET", key, "1"); got != "+QUEUED\r\n" {
					t.Fatal(got)
				}
			case blocked:
				r.send("BLPOP", key, "20")
				// The BLPOP reaches the upstream before the session ends.
				if err := waitBlockedClients(ctx, direct, 1); err != nil {
					t.Fatal(err)
				}
			case subscribed:
				if got := r.do("SUBSCRIBE", "news"); !strings.HasPrefix(got, "*3\r\n$9\r\nsubscribe\r\n") {
					t.Fatal(got)
				}
			}

			l.End(policy.ErrSessionEnded)
			mustWork()
			if tc.mode == policy.SessionEndBoundary {
				switch tc.state {
				case multi:
					// The transaction goes on to EXEC, then the connection closes.
					if got := r.do("INCR", key); got != "+QUEUED\r\n" {
						t.Fatalf("INCR in MULTI after the end: %q", got)
					}
					mustWork()
					if got := r.do("EXEC"); got != "*2\r\n+OK\r\n:2\r\n" {
						t.Fatalf("EXEC: %q", got)
					}
				case blocked:
					if err := acme.RPush(ctx, key, "v").Err(); err != nil {
						t.Fatal(err)
					}
					if got := r.reply(); !strings.HasPrefix(got, "*2\r\n") {
						t.Fatalf("BLPOP: %q", got)
					}
				}
			}
			r.closed()
			l.WaitClosed(t)
			mustWork()

			switch want := tc.mode == policy.SessionEndBoundary; tc.state {
			case multi:
				n, err := acme.Exists(ctx, key).Result()
				if err != nil || (n == 1) != want {
					t.Fatalf("MULTI applied: %d %v, want %v", n, err, want)
				}
			case blocked:
				if !want {
					// The BLPOP was aborted with its connection: a push now stays.
					if err := waitBlockedClients(ctx, direct, 0); err != nil {
						t.Fatal(err)
					}
					if err := acme.RPush(ctx, key, "v").Err(); err != nil {
						t.Fatal(err)
					}
					if n, err := acme.LLen(ctx, key).Result(); err != nil || n != 1 {
						t.Fatalf("list length %d %v: the aborted BLPOP took the element", n, err)
					}
				}
			}
			if got := p.metric(t, "tenantguard_redis_sessions_ended_total", map[string]string{"reason": "revoked_or_expired"}); got != 1 {
				t.Fatalf("sessions_ended_total = %v", got)
			}
		})
	}
}

// TestTokenSessionEndGrace: in boundary mode a client that keeps its MULTI
// open after its session ended is closed once SessionEndGrace has passed,
// with its transaction never run, while the other tenant keeps working.
func TestTokenSessionEndGrace(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	fs := sessionfake.New()
	const grace = 300 * time.Millisecond
	p := startProxy(t, func(c *proxyredis.Config) {
		c.Sessions, c.SessionEnd, c.SessionEndGrace = fs, policy.SessionEndBoundary, grace
	})
	other := p.client(t, "globex", globexSecret, 2)
	acme := p.client(t, "acme", acmeSecret, 2)
	key := fmt.Sprintf("grace-%d", time.Now().UnixNano())
	tok := fs.Issue("acme", nil)
	r := dialRaw(t, p.addr)
	if got := r.do("AUTH", "acme", tok); got != "+OK\r\n" {
		t.Fatalf("AUTH: %q", got)
	}
	l := fs.Lease(t, tok, 0)
	if got := r.do("MULTI"); got != "+OK\r\n" {
		t.Fatal(got)
	}
	if got := r.do("SET", key, "1"); got != "+QUEUED\r\n" {
		t.Fatal(got)
	}
	ended := time.Now()
	l.End(policy.ErrSessionEnded)
	if err := other.Incr(ctx, "counter").Err(); err != nil {
		t.Fatalf("other tenant: %v", err)
	}
	r.closed() // never EXECs: closed by the grace
	if took := time.Since(ended); took < grace {
		t.Fatalf("closed after %v, before the grace of %v", took, grace)
	}
	l.WaitClosed(t)
	if n, err := acme.Exists(ctx, key).Result(); err != nil || n != 0 {
		t.Fatalf("the MULTI left open ran: exists=%d %v", n, err)
	}
	if err := other.Incr(ctx, "counter").Err(); err != nil {
		t.Fatalf("other tenant after: %v", err)
	}
}

// waitBlockedClients polls the upstream until n clients are blocked.
func waitBlockedClients(ctx context.Context, direct *goredis.Client, n int) error {
	for {
		info, err := direct.Info(ctx, "clients").Result()
		if err != nil {
			return err
		}
		if strings.Contains(info, "blocked_clients:"+strconv.Itoa(n)+"\r\n") {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("blocked clients never %d: %s", n, info)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// TestTokenRecord: every command of a token connection is recorded with
// the fingerprint of its name, and NOPERM refusals with their rule.
func TestTokenRecord(t *testing.T) {
	fs := sessionfake.New()
	p := startProxy(t, func(c *proxyredis.Config) { c.Sessions = fs })
	tok := fs.Issue("acme", nil)
	r := dialRaw(t, p.addr)
	if got := r.do("AUTH", "acme", tok); got != "+OK\r\n" {
		t.Fatal(got)
	}
	r.do("SET", "rec", "1")
	r.do("get", "rec")
	r.do("GET", "rec")
	if got := r.do("CONFIG", "GET", "maxmemory"); !strings.HasPrefix(got, "-NOPERM") {
		t.Fatalf("CONFIG GET: %q", got)
	}
	if got := r.do("MONITOR"); !strings.HasPrefix(got, "-NOPERM") {
		t.Fatalf("MONITOR: %q", got)
	}
	r.do("PING")
	got := fs.Lease(t, tok, 0).Recorded()
	rules := []string{"", "", "", "server-wide", "server-wide", ""}
	if len(got) != len(rules) {
		t.Fatalf("recorded %+v", got)
	}
	for i, rec := range got {
		if rec.Rule != rules[i] || rec.Fingerprint == 0 {
			t.Errorf("record %d: %+v, want rule %q", i, rec, rules[i])
		}
	}
	if got[1].Fingerprint != got[2].Fingerprint || got[0].Fingerprint == got[1].Fingerprint || got[3].Fingerprint == got[4].Fingerprint {
		t.Errorf("fingerprints: %+v", got)
	}
}

// TestTokenSessionEndRace ends sessions while their clients run MULTI/EXEC
// and plain commands flat out: every client sees its connection closed,
// never a hang or a reply out of order, and every lease closes once.
func TestTokenSessionEndRace(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	for _, mode := range []policy.SessionEndMode{policy.SessionEndImmediate, policy.SessionEndBoundary} {
		t.Run(string(mode), func(t *testing.T) {
			fs := sessionfake.New()
			p := startProxy(t, func(c *proxyredis.Config) { c.Sessions, c.SessionEnd = fs, mode })
			const clients = 8
			errs := make(chan error, clients)
			var tokens []string
			for i := 0; i < clients; i++ {
				tok := fs.Issue("acme", nil)
				c := goredis.NewClient(&goredis.Options{Addr: p.addr, Username: "acme", Password: tok, DisableIdentity: true, PoolSize: 1, MaxRetries: -1})
				t.Cleanup(func() { c.Close() })
				if err := c.Ping(ctx).Err(); err != nil {
					t.Fatal(err)
				}
				tokens = append(tokens, tok)
				key := fmt.Sprintf("race:%d", i)
				go func() {
					for n := int64(1); ; n++ {
						var incr *goredis.IntCmd
						_, err := c.TxPipelined(ctx, func(pipe goredis.Pipeliner) error {
							pipe.Set(ctx, key, n-1, 0)
							incr = pipe.Incr(ctx, key)
							return nil
						})
						if err == nil && incr.Val() != n {
							err = fmt.Errorf("INCR gave %d, want %d: replies out of order", incr.Val(), n)
						}
						if err == nil {
							var v int64
							v, err = c.Get(ctx, key).Int64()
							if err == nil && v != n {
								err = fmt.Errorf("GET gave %d, want %d", v, n)
							}
						}
						if err != nil {
							errs <- err
							return
						}
					}
				}()
			}
			// go-redis reconnects a connection closed between commands: the
			// token is revoked, so the reconnection fails with WRONGPASS.
			for _, tok := range tokens {
				fs.Revoke(tok, policy.ErrSessionEnded)
			}
			for i := 0; i < clients; i++ {
				select {
				case err := <-errs:
					if strings.Contains(err.Error(), "want") {
						t.Error(err)
					}
				case <-ctx.Done():
					t.Fatal("a client was not ended")
				}
			}
			for _, tok := range tokens {
				for i := 0; i < fs.Opened(tok); i++ {
					fs.Lease(t, tok, i).WaitClosed(t)
				}
			}
		})
	}
}

// TestTokenRecordAllocs: recording adds no allocation per command: a
// command on a token connection allocates (client and proxy together) no
// more than on a static one.
func TestTokenRecordAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip("measures allocations")
	}
	fs := sessionfake.New()
	p := startProxy(t, func(c *proxyredis.Config) { c.Sessions = fs })
	measure := func(secret string) float64 {
		r := dialRaw(t, p.addr)
		if got := r.do("AUTH", "acme", secret); got != "+OK\r\n" {
			t.Fatal(got)
		}
		cmd := resp.AppendCommand(nil, [][]byte{[]byte("GET"), []byte("allocs")})
		var buf [64]byte
		get := func() {
			if _, err := r.c.Write(cmd); err != nil {
				t.Fatal(err)
			}
			if _, err := r.c.Read(buf[:]); err != nil {
				t.Fatal(err)
			}
		}
		get()
		return testing.AllocsPerRun(300, get)
	}
	static := measure(acmeSecret)
	token := measure(fs.Issue("acme", nil))
	t.Logf("allocations per command: static %.1f, token %.1f", static, token)
	if token > static+0.5 {
		t.Fatalf("a token connection allocates %.1f per command, a static one %.1f", token, static)
	}
}

// TestTokenEndDuringAuth: a session that ends while AUTH is checking it
// leaves the client with a closed connection, and its lease closed.
func TestTokenEndDuringAuth(t *testing.T) {
	fs := sessionfake.New()
	p := startProxy(t, func(c *proxyredis.Config) { c.Sessions = fs })
	tok := fs.IssueEnding("acme", policy.ErrSessionEnded)
	r := dialRaw(t, p.addr)
	r.send("AUTH", "acme", tok)
	r.closed()
	fs.Lease(t, tok, 0).WaitClosed(t)
}
