package redis_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/policy"
)

// TestSetCommandRules swaps the command rules under an open connection,
// as a pushed policy's redis section does: the connection's next command
// follows them. Scripting is refused with NOPERM, allowed, refused again;
// FLUSHDB is emulated on the tenant's keys, refused, emulated again. The
// tenant is the test's own, as FLUSHDB and DBSIZE see all of its keys.
func TestSetCommandRules(t *testing.T) {
	tenant := fmt.Sprintf("rules%d", time.Now().UnixNano())
	p := startProxyWith(t, func(spec *policy.Spec) {
		spec.Tenants = append(spec.Tenants, policy.TenantSpec{ID: tenant, Passwords: []string{acmeSecret}})
	}, nil)
	own := authed(t, p, tenant, acmeSecret)
	globex := authed(t, p, "globex", globexSecret)
	const key = "k"
	all := map[string]bool{"flushdb": true, "flushall": true, "dbsize": true}
	noFlush := map[string]bool{"dbsize": true}
	for _, tc := range []struct {
		name      string
		scripting bool
		emulate   map[string]bool
		args      []string
		want      string // the reply, or its prefix when it ends in '*'
	}{
		{"eval refused when turned off", false, all, []string{"EVAL", "return 1", "0"}, "-NOPERM *"},
		{"eval allowed once pushed", true, all, []string{"EVAL", "return 1", "0"}, ":1\r\n"},
		{"eval keys prefixed", true, all, []string{"EVAL", "return redis.call('SET', KEYS[1], 'v')", "1", key}, "+OK\r\n"},
		{"eval refused again", false, all, []string{"EVAL", "return 1", "0"}, "-NOPERM *"},
		{"dbsize emulated", false, all, []string{"DBSIZE"}, ":1\r\n"},
		{"flushdb refused once not emulated", false, noFlush, []string{"FLUSHDB"}, "-NOPERM *"},
		{"key survived the refused flushdb", false, noFlush, []string{"EXISTS", key}, ":1\r\n"},
		{"flushdb emulated again", false, all, []string{"FLUSHDB"}, "+OK\r\n"},
		{"flushdb emptied the tenant's keys", false, all, []string{"DBSIZE"}, ":0\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p.srv.SetCommandRules(tc.scripting, tc.emulate)
			got := own.do(tc.args...)
			if prefix, ok := strings.CutSuffix(tc.want, "*"); ok {
				if !strings.HasPrefix(got, prefix) {
					t.Fatalf("%v: %q, want %q...", tc.args, got, prefix)
				}
			} else if got != tc.want {
				t.Fatalf("%v: %q, want %q", tc.args, got, tc.want)
			}
			// Every tenant's connections follow the same rules.
			if tc.args[0] == "EVAL" {
				g := globex.do("EVAL", "return 1", "0")
				if allowed := g == ":1\r\n"; allowed != tc.scripting {
					t.Fatalf("globex EVAL: %q with scripting %v", g, tc.scripting)
				}
			}
		})
	}
}

// TestSetCommandRulesCopiesEmulate: changing the map passed in afterwards
// does not change the rules in force.
func TestSetCommandRulesCopiesEmulate(t *testing.T) {
	p := startProxy(t, nil)
	acme := authed(t, p, "acme", acmeSecret)
	emulate := map[string]bool{"dbsize": true}
	p.srv.SetCommandRules(false, emulate)
	emulate["flushdb"] = true
	if got := acme.do("FLUSHDB"); !strings.HasPrefix(got, "-NOPERM") {
		t.Fatalf("FLUSHDB: %q, want NOPERM", got)
	}
}
