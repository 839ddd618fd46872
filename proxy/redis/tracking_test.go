package redis_test

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestTrackingPerTenant: acme's client tracking, in every mode a client
// may ask for, hears of acme's keys only, named as acme names them; globex
// writing its own keys (one of the same name) is never reported to acme.
func TestTrackingPerTenant(t *testing.T) {
	p := startProxy(t, nil)
	for _, tc := range []struct {
		name    string
		args    []string
		key     string // the key acme changes
		ignored string // an acme key the tracking must not report ("" none)
	}{
		{"default mode", []string{"CLIENT", "TRACKING", "ON"}, "tk1", ""},
		{"bcast without prefix", []string{"CLIENT", "TRACKING", "ON", "BCAST"}, "tk2", ""},
		{"bcast with prefixes", []string{"CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "user:", "PREFIX", "session:"}, "user:1", "other:1"},
		{"optin", []string{"CLIENT", "TRACKING", "ON", "OPTIN", "NOLOOP"}, "tk3", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := authedProto(t, p, "acme", acmeSecret, 3)
			expect(t, tr.do(tc.args...), "+OK\r\n")
			if strings.Contains(strings.Join(tc.args, " "), "OPTIN") {
				expect(t, tr.do("CLIENT", "CACHING", "yes"), "+OK\r\n")
			}
			expect(t, tr.do("GET", tc.key), "_\r\n")
			g := authed(t, p, "globex", globexSecret)
			a := authed(t, p, "acme", acmeSecret)
			// globex changes its own keys, one named as acme's.
			expect(t, g.do("SET", tc.key, "globex"), "+OK\r\n")
			expect(t, g.do("SET", "globex-only", "x"), "+OK\r\n")
			if tc.ignored != "" {
				expect(t, a.do("SET", tc.ignored, "x"), "+OK\r\n")
			}
			expect(t, a.do("SET", tc.key, "acme"), "+OK\r\n")
			// Invalidations come in the order keys change: acme's is the
			// first, and the only, one.
			expect(t, tr.reply(), ">2\r\n$10\r\ninvalidate\r\n*1\r\n$"+strconv.Itoa(len(tc.key))+"\r\n"+tc.key+"\r\n")
			expect(t, tr.do("PING"), "+PONG\r\n")
			expect(t, tr.do("CLIENT", "TRACKING", "OFF"), "+OK\r\n")
			expect(t, a.do("SET", tc.key, "again"), "+OK\r\n")
			expect(t, tr.do("CLIENT", "GETREDIR"), ":-1\r\n")
		})
	}
}

// TestTrackingRefusedAndState: REDIRECT and RESP2 tracking are refused
// (with NOPERM, the connection usable); GETREDIR, TRACKINGINFO and
// CACHING answer from the tracking the client asked for; Redis' own
// option errors are given.
func TestTrackingRefusedAndState(t *testing.T) {
	p := startProxy(t, nil)
	r2 := authed(t, p, "acme", acmeSecret)
	for _, args := range [][]string{
		{"CLIENT", "TRACKING", "ON"},
		{"CLIENT", "TRACKING", "ON", "REDIRECT", "1", "BCAST", "PREFIX", "t:globex:"},
	} {
		if got := r2.do(args...); !strings.HasPrefix(got, "-NOPERM tenantguard: CLIENT TRACKING") || !strings.Contains(got, "(rule client-tracking)") {
			t.Errorf("RESP2 %v: %q", args, got)
		}
	}
	expect(t, r2.do("CLIENT", "GETREDIR"), ":-1\r\n")
	expect(t, r2.do("CLIENT", "TRACKINGINFO"), "*6\r\n$5\r\nflags\r\n*1\r\n$3\r\noff\r\n$8\r\nredirect\r\n:-1\r\n$8\r\nprefixes\r\n*0\r\n")
	expect(t, r2.do("PING"), "+PONG\r\n")

	r3 := authedProto(t, p, "acme", acmeSecret, 3)
	if got := r3.do("CLIENT", "TRACKING", "ON", "REDIRECT", "5"); !strings.HasPrefix(got, "-NOPERM tenantguard: CLIENT TRACKING REDIRECT") {
		t.Errorf("RESP3 REDIRECT: %q", got)
	}
	expect(t, r3.do("CLIENT", "TRACKING", "ON", "PREFIX", "a"), "-ERR PREFIX option requires BCAST mode to be enabled\r\n")
	expect(t, r3.do("CLIENT", "TRACKING", "ON", "BCAST", "OPTIN"), "-ERR OPTIN and OPTOUT are not compatible with BCAST\r\n")
	expect(t, r3.do("CLIENT", "TRACKING", "ON", "OPTIN", "OPTOUT"), "-ERR You can't use both OPTIN and OPTOUT\r\n")
	expect(t, r3.do("CLIENT", "TRACKING", "maybe"), "-ERR syntax error\r\n")
	expect(t, r3.do("CLIENT", "CACHING", "yes"), "-ERR CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled\r\n")
	expect(t, r3.do("CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "user:"), "+OK\r\n")
	expect(t, r3.do("CLIENT", "GETREDIR"), ":0\r\n")
	expect(t, r3.do("CLIENT", "TRACKINGINFO"), "%3\r\n$5\r\nflags\r\n~2\r\n$2\r\non\r\n$5\r\nbcast\r\n$8\r\nredirect\r\n:0\r\n$8\r\nprefixes\r\n*1\r\n$5\r\nuser:\r\n")
	// A prefix overlapping one in force: redis-server's refusal.
	if got := r3.do("CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "user:1"); !strings.HasPrefix(got, "-ERR Prefix") {
		t.Errorf("overlapping prefix: %q", got)
	}
	expect(t, r3.do("CLIENT", "TRACKING", "OFF"), "+OK\r\n")
	expect(t, r3.do("CLIENT", "TRACKINGINFO"), "%3\r\n$5\r\nflags\r\n~1\r\n$3\r\noff\r\n$8\r\nredirect\r\n:-1\r\n$8\r\nprefixes\r\n*0\r\n")
}

// TestTrackingEndsWithReset: RESET turns tracking off, and the dedicated
// connection, reset, reaches the next client with no tracking on it.
func TestTrackingEndsWithReset(t *testing.T) {
	p := startProxy(t, nil)
	tr := authedProto(t, p, "acme", acmeSecret, 3)
	expect(t, tr.do("CLIENT", "TRACKING", "ON"), "+OK\r\n")
	expect(t, tr.do("RESET"), "+RESET\r\n")
	waitIdleDedicated(t, p, 1)
	g := authedProto(t, p, "globex", globexSecret, 3)
	expect(t, g.do("GET", "reset-k"), "_\r\n")
	a := authed(t, p, "acme", acmeSecret)
	expect(t, a.do("SET", "reset-k", "x"), "+OK\r\n")
	expect(t, g.do("SET", "reset-k", "y"), "+OK\r\n")
	// Had the tracking survived, acme's change would come before this.
	_ = g.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	expect(t, g.do("PING"), "+PONG\r\n")
}
