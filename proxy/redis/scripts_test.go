package redis_test

import (
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/tenantguard/tenantguard/policy"
	proxyredis "github.com/tenantguard/tenantguard/proxy/redis"
	"github.com/tenantguard/tenantguard/proxy/redis/namespace"
	"github.com/tenantguard/tenantguard/test/harness"
)

func sha1Hex(s string) string {
	h := sha1.Sum([]byte(s))
	return hex.EncodeToString(h[:])
}

// TestScriptsConfined runs scripts as acme that build globex's key names,
// in both namespace modes and both protocols: redis-server refuses every
// one (the script runs as acme's ACL user), globex's keys stay as they
// were, and acme's own scripts and globex's keep working.
func TestScriptsConfined(t *testing.T) {
	for _, mode := range []namespace.Mode{namespace.Spread, namespace.OneSlot} {
		t.Run(mode.String(), func(t *testing.T) {
			p := startProxy(t, func(c *proxyredis.Config) { c.Namespace = mode })
			ctx := ctxT(t, 60*time.Second)
			d := p.direct(t)
			g := p.client(t, "globex", globexSecret, 2)
			if err := g.Set(ctx, "greeting", "hello from globex", 0).Err(); err != nil {
				t.Fatal(err)
			}
			if err := g.Publish(ctx, "warmup", "x").Err(); err != nil {
				t.Fatal(err)
			}
			globexKey := string(namespace.MustNew("globex", mode).AppendKey(nil, []byte("greeting")))
			globexChan, _ := namespace.MustNew("globex", mode).AppendChannel(nil, []byte("news"))
			before := globexDigest(ctx, t, d)
			for _, proto := range []int{2, 3} {
				a := p.client(t, "acme", acmeSecret, proto)
				for _, tc := range []struct {
					name   string
					script string
					keys   []string
					args   []any
				}{
					{"GET built", "return redis.call('GET', ARGV[1])", nil, []any{globexKey}},
					{"SET built", "return redis.call('SET', ARGV[1], 'acme was here')", nil, []any{globexKey}},
					{"DEL built", "return redis.call('DEL', ARGV[1])", nil, []any{globexKey}},
					{"GET by pcall", "local r = redis.pcall('GET', ARGV[1]) if type(r) == 'table' and r.err then return redis.error_reply(r.err) end return r", nil, []any{globexKey}},
					{"declared then concatenated", "return redis.call('GET', string.sub(KEYS[1], 1, 0) .. ARGV[1])", []string{"mine"}, []any{globexKey}},
					{"RENAME onto built", "return redis.call('RENAME', KEYS[1], ARGV[1])", []string{"mine"}, []any{globexKey}},
					{"KEYS", "return redis.call('KEYS', '*')", nil, nil},
					{"SCAN", "return redis.call('SCAN', '0', 'COUNT', '1000')", nil, nil},
					{"RANDOMKEY", "return redis.call('RANDOMKEY')", nil, nil},
					{"FLUSHALL", "return redis.call('FLUSHALL')", nil, nil},
					{"DBSIZE", "return redis.call('DBSIZE')", nil, nil},
					{"INFO", "return redis.call('INFO')", nil, nil},
					{"COPY to another db", "return redis.call('COPY', KEYS[1], KEYS[1], 'DB', '5')", []string{"mine"}, nil},
					{"SELECT", "return redis.call('SELECT', '5')", nil, nil},
					{"SORT BY built", "redis.call('RPUSH', KEYS[1], '1') return redis.call('SORT', KEYS[1], 'BY', ARGV[1] .. '*')", []string{"list"}, []any{globexKey}},
					{"PUBLISH built", "return redis.call('PUBLISH', ARGV[1], 'x')", nil, []any{string(globexChan)}},
					{"PUBSUB CHANNELS", "return redis.call('PUBSUB', 'CHANNELS')", nil, nil},
					{"CLIENT LIST", "return redis.call('CLIENT', 'LIST')", nil, nil},
					{"CONFIG GET", "return redis.call('CONFIG', 'GET', '*')", nil, nil},
				} {
					v, err := a.Eval(ctx, tc.script, tc.keys, tc.args...).Result()
					if err == nil || errors.Is(err, goredis.Nil) {
						t.Errorf("RESP%d %s: returned %v (%v), want an error", proto, tc.name, v, err)
					}
					if s := fmt.Sprint(v); strings.Contains(s, "globex") {
						t.Errorf("RESP%d %s: reply %s", proto, tc.name, s)
					}
				}
				if after := globexDigest(ctx, t, d); after != before {
					t.Fatalf("globex's keys changed:\n%s\n%s", before, after)
				}
				// acme's own scripts work, declared keys and keys built in
				// its namespace alike.
				if err := a.Eval(ctx, "return redis.call('SET', KEYS[1], ARGV[1])", []string{"mine"}, "acme-data").Err(); err != nil {
					t.Fatalf("RESP%d own script: %v", proto, err)
				}
				if v, err := a.Get(ctx, "mine").Result(); err != nil || v != "acme-data" {
					t.Fatalf("RESP%d GET after own script: %q %v", proto, v, err)
				}
			}
			if v, err := g.Eval(ctx, "return redis.call('GET', KEYS[1])", []string{"greeting"}).Result(); err != nil || v != "hello from globex" {
				t.Fatalf("globex's own script: %v %v", v, err)
			}
		})
	}
}

// TestScriptCache: one tenant's EVALSHA and SCRIPT EXISTS never reach a
// script another tenant loaded, even of the same text; the server's cache
// holds each tenant's form, never the text's own SHA1; SCRIPT FLUSH
// forgets the tenant's scripts only.
func TestScriptCache(t *testing.T) {
	p := startProxy(t, nil)
	ctx := ctxT(t, 30*time.Second)
	d := p.direct(t)
	a := authed(t, p, "acme", acmeSecret)
	g := authed(t, p, "globex", globexSecret)
	body := fmt.Sprintf("-- %d\nreturn redis.call('INCR', KEYS[1])", time.Now().UnixNano())
	sha := sha1Hex(body)

	expect(t, a.do("SCRIPT", "EXISTS", sha), "*1\r\n:0\r\n")
	expect(t, a.do("EVALSHA", sha, "1", "n"), "-NOSCRIPT No matching script. Please use EVAL.\r\n")
	expect(t, a.do("SCRIPT", "LOAD", body), fmt.Sprintf("$40\r\n%s\r\n", sha))
	expect(t, a.do("SCRIPT", "EXISTS", sha, strings.ToUpper(sha), "0000000000000000000000000000000000000000"), "*3\r\n:1\r\n:1\r\n:0\r\n")
	expect(t, a.do("EVALSHA", sha, "1", "n"), ":1\r\n")
	if got := a.do("EVALSHA_RO", strings.ToUpper(sha), "1", "n"); !strings.HasPrefix(got, "-ERR Write commands are not allowed from read-only scripts") {
		t.Fatalf("EVALSHA_RO of a writing script: %q", got)
	}

	// globex knows nothing of it, though the text is the same.
	expect(t, g.do("SCRIPT", "EXISTS", sha), "*1\r\n:0\r\n")
	expect(t, g.do("EVALSHA", sha, "1", "n"), "-NOSCRIPT No matching script. Please use EVAL.\r\n")
	if ok, err := d.ScriptExists(ctx, sha).Result(); err != nil || ok[0] {
		t.Fatalf("the server's cache holds the text's own SHA1: %v %v", ok, err)
	}
	// The same text, sent by globex, runs on globex's keys.
	expect(t, g.do("EVAL", body, "1", "n"), ":1\r\n")
	expect(t, g.do("EVALSHA", sha, "1", "n"), ":2\r\n")
	expect(t, a.do("EVALSHA", sha, "1", "n"), ":2\r\n")

	// acme's SCRIPT FLUSH forgets acme's scripts only.
	expect(t, a.do("SCRIPT", "FLUSH"), "+OK\r\n")
	expect(t, a.do("EVALSHA", sha, "1", "n"), "-NOSCRIPT No matching script. Please use EVAL.\r\n")
	expect(t, g.do("EVALSHA", sha, "1", "n"), ":3\r\n")
	expect(t, a.do("SCRIPT", "FLUSH", "BOGUS"), "-ERR SCRIPT FLUSH only support SYNC|ASYNC option\r\n")
	// A script that does not compile is not remembered by SCRIPT LOAD.
	bad := "return +"
	if got := a.do("SCRIPT", "LOAD", bad); !strings.HasPrefix(got, "-ERR Error compiling script") {
		t.Fatalf("SCRIPT LOAD of a bad script: %q", got)
	}
	expect(t, a.do("SCRIPT", "EXISTS", sha1Hex(bad)), "*1\r\n:0\r\n")
	// SCRIPT KILL and DEBUG act on whoever's script runs: refused.
	for _, args := range [][]string{{"SCRIPT", "KILL"}, {"SCRIPT", "DEBUG", "YES"}, {"FUNCTION", "LIST"}, {"FCALL", "f", "0"}} {
		if got := a.do(args...); !strings.HasPrefix(got, "-NOPERM tenantguard:") {
			t.Errorf("%v: %q", args, got)
		}
	}
}

// TestScriptNumKeys: a bad key count gets redis-server's own error, and
// the connection stays usable.
func TestScriptNumKeys(t *testing.T) {
	p := startProxy(t, nil)
	d := dialRaw(t, p.redis)
	a := authed(t, p, "acme", acmeSecret)
	for _, args := range [][]string{
		{"EVAL", "return 1", "2", "k"},
		{"EVAL", "return 1", "-1"},
		{"EVAL", "return 1", "x"},
		{"EVAL", "return 1", "01"},
		{"EVAL", "return 1", " 1", "k"},
		{"EVALSHA", sha1Hex("return 1"), "3"},
		{"EVAL_RO", "return 1", "99999999999999999999"},
	} {
		want := d.do(args...)
		if got := a.do(args...); got != want {
			t.Errorf("%q: %q, redis-server says %q", args, got, want)
		}
	}
	expect(t, a.do("EVAL", "return #KEYS + #ARGV", "1", "k", "a"), ":2\r\n")
}

// TestScriptOrder: replies stay in order when a client's commands go to
// its connection and to the tenant's script connection in one pipeline,
// and each command sees the effects of those sent before it.
func TestScriptOrder(t *testing.T) {
	p := startProxy(t, nil)
	ctx := ctxT(t, 30*time.Second)
	for _, proto := range []int{2, 3} {
		a := p.client(t, "acme", acmeSecret, proto)
		k := fmt.Sprintf("order%d", proto)
		pipe := a.Pipeline()
		var cmds []goredis.Cmder
		for i := 0; i < 20; i++ {
			cmds = append(cmds, pipe.Set(ctx, k, i, 0))
			cmds = append(cmds, pipe.Eval(ctx, "return redis.call('INCRBY', KEYS[1], 100)", []string{k}))
			cmds = append(cmds, pipe.Get(ctx, k))
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 20; i++ {
			n, err := cmds[3*i+1].(*goredis.Cmd).Int64()
			got := cmds[3*i+2].(*goredis.StringCmd).Val()
			if err != nil || n != int64(i+100) || got != fmt.Sprint(i+100) {
				t.Fatalf("RESP%d round %d: EVAL %d %v, GET %q", proto, i, n, err, got)
			}
		}
	}
}

// TestScriptInMultiAndSubscribed: a script queued in MULTI is refused
// (it would run on another connection); on a RESP2 connection in
// subscribed state it gets redis-server's own refusal.
func TestScriptInMultiAndSubscribed(t *testing.T) {
	p := startProxy(t, nil)
	a := authed(t, p, "acme", acmeSecret)
	expect(t, a.do("MULTI"), "+OK\r\n")
	if got := a.do("EVAL", "return 1", "0"); !strings.HasPrefix(got, "-NOPERM tenantguard: scripts inside MULTI") {
		t.Fatalf("EVAL in MULTI: %q", got)
	}
	expect(t, a.do("EXEC"), "*0\r\n")
	expect(t, a.do("SUBSCRIBE", "ch"), "*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n")
	expect(t, a.do("EVAL", "return 1", "0"), "-ERR Can't execute 'eval': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n")
	expect(t, a.do("RESET"), "+RESET\r\n")
	expect(t, a.do("EVAL", "return 1", "0"), ":1\r\n")
}

// TestScriptUser: the tenant's script user is confined to its namespace
// and a short list of commands; it is deleted, and its connections closed,
// when the tenant leaves the policy, and set up again when it comes back.
func TestScriptUser(t *testing.T) {
	p := startProxy(t, nil)
	ctx := ctxT(t, 30*time.Second)
	d := p.direct(t)
	a := authed(t, p, "acme", acmeSecret)
	expect(t, a.do("EVAL", "return 1", "0"), ":1\r\n")
	// ACL DRYRUN: what redis-server would let the user do.
	for _, tc := range []struct {
		args []any
		ok   bool
	}{
		{[]any{"GET", "t:acme:k"}, true},
		{[]any{"SET", "t:acme:k", "v"}, true},
		{[]any{"EVALSHA", sha1Hex("x"), "0"}, true},
		{[]any{"PUBLISH", "c:acme:ch", "m"}, true},
		{[]any{"GET", "t:globex:k"}, false},
		{[]any{"SET", "k", "v"}, false},
		{[]any{"PUBLISH", "c:globex:ch", "m"}, false},
		{[]any{"KEYS", "*"}, false},
		{[]any{"SCAN", "0"}, false},
		{[]any{"FLUSHALL"}, false},
		{[]any{"INFO"}, false},
		{[]any{"CONFIG", "GET", "*"}, false},
		{[]any{"ACL", "WHOAMI"}, false},
		{[]any{"COPY", "t:acme:a", "t:acme:b", "DB", "1"}, false},
		{[]any{"FUNCTION", "LOAD", "x"}, false},
		{[]any{"FCALL", "f", "0"}, false},
		{[]any{"SCRIPT", "FLUSH"}, false},
	} {
		got, err := d.Do(ctx, append([]any{"ACL", "DRYRUN", "tenantguard-script:acme"}, tc.args...)...).Result()
		if ok := err == nil && got == "OK"; ok != tc.ok {
			t.Errorf("ACL DRYRUN %v: %v %v, want allowed=%v", tc.args, got, err, tc.ok)
		}
	}
	// acme leaves the policy: its user goes (and with it, its connections).
	p.setPolicy(t, twoTenants(nil))
	harness.Eventually(t, 10*time.Second, func() error {
		users, err := d.Do(ctx, "ACL", "USERS").StringSlice()
		if err != nil {
			return err
		}
		for _, u := range users {
			if u == "tenantguard-script:acme" {
				return errors.New("acme's script user is still there")
			}
		}
		return nil
	})
	// Back again: set up anew at its first script.
	p.setPolicy(t, twoTenants(func(*policy.TenantSpec) {}))
	a = authed(t, p, "acme", acmeSecret)
	expect(t, a.do("EVAL", "return redis.call('SET', KEYS[1], 'back')", "1", "k"), "+OK\r\n")
}

// TestScriptsFailClosed: when the sidecar cannot set up the tenant's
// script user (its upstream user lacks ACL SETUSER), scripts fail with an
// error and never run, as the sidecar's user or any other.
func TestScriptsFailClosed(t *testing.T) {
	rd := harness.Redis(t)
	d := dialRaw(t, rd.Addr())
	expect(t, d.do("ACL", "SETUSER", "tg-limited", "reset", "on", ">limited-pw", "~*", "&*", "+@all", "-@admin"), "+OK\r\n")
	t.Cleanup(func() { d.do("ACL", "DELUSER", "tg-limited") })
	p := startProxy(t, func(c *proxyredis.Config) { c.UpstreamUser, c.UpstreamPassword = "tg-limited", "limited-pw" })
	a := authed(t, p, "acme", acmeSecret)
	expect(t, a.do("SET", "failclosed", "0"), "+OK\r\n")
	got := a.do("EVAL", "return redis.call('INCR', KEYS[1])", "1", "failclosed")
	if !strings.HasPrefix(got, "-ERR tenantguard: the tenant's script user could not be set up") {
		t.Fatalf("EVAL without a script user: %q", got)
	}
	expect(t, a.do("GET", "failclosed"), "$1\r\n0\r\n")
	expect(t, a.do("PING"), "+PONG\r\n")
}

// TestScriptingDisabled: with scripting off every script command is
// refused with NOPERM, and no script user is created.
func TestScriptingDisabled(t *testing.T) {
	p := startProxy(t, func(c *proxyredis.Config) { c.DisableScripting = true })
	tenant := fmt.Sprintf("noscript%d", time.Now().UnixNano())
	p.setPolicy(t, policy.Spec{Tenants: []policy.TenantSpec{{ID: tenant, Passwords: []string{acmeSecret}}}})
	a := authed(t, p, tenant, acmeSecret)
	for _, args := range [][]string{{"EVAL", "return 1", "0"}, {"EVALSHA", sha1Hex("return 1"), "0"}, {"SCRIPT", "LOAD", "return 1"}, {"SCRIPT", "EXISTS", "x"}, {"SCRIPT", "FLUSH"}} {
		if got := a.do(args...); !strings.HasPrefix(got, "-NOPERM tenantguard:") || !strings.Contains(got, "(rule scripting)") {
			t.Errorf("%v: %q", args, got)
		}
	}
	if got := dialRaw(t, p.redis).do("ACL", "GETUSER", "tenantguard-script:"+tenant); got != "$-1\r\n" && got != "*-1\r\n" {
		t.Fatalf("a script user exists: %q", got)
	}
}
