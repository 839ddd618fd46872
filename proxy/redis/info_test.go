package redis_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/policy"
	"github.com/tenantguard/tenantguard/test/harness"
)

// TestInfo: INFO answers with the tenant's own figures: its clients at
// this sidecar and its keys, never another tenant's, and nothing that
// names the server's host, port, process or files; the server's version
// and loading state are passed on.
func TestInfo(t *testing.T) {
	tenant := fmt.Sprintf("info%d", time.Now().UnixNano())
	p := startProxyWith(t, func(spec *policy.Spec) {
		spec.Tenants = append(spec.Tenants, policy.TenantSpec{ID: tenant, Passwords: []string{acmeSecret},
			Limits: policy.Limits{MaxConnections: 7}})
	}, nil)
	ctx := ctxT(t, 30*time.Second)
	d := p.direct(t)
	direct, err := d.Info(ctx, "server").Result()
	if err != nil {
		t.Fatal(err)
	}
	version := infoField(direct, "redis_version")

	// Another tenant with more keys and clients than ours.
	g := p.client(t, "globex", globexSecret, 2)
	for i := 0; i < 50; i++ {
		if err := g.Set(ctx, fmt.Sprintf("infokey%d", i), "x", 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	globexConns := []*rawClient{authed(t, p, "globex", globexSecret), authed(t, p, "globex", globexSecret), authed(t, p, "globex", globexSecret)}
	_ = globexConns

	a := authed(t, p, tenant, acmeSecret)
	a2 := authedProto(t, p, tenant, acmeSecret, 3)
	expect(t, a.do("SET", "k1", "v"), "+OK\r\n")
	expect(t, a.do("SET", "k2", "v", "EX", "100"), "+OK\r\n")
	expect(t, a.do("SET", "k3", "v", "PX", "100000"), "+OK\r\n")

	info := bulkText(t, a.do("INFO"))
	for _, want := range []string{
		"# Server\r\nredis_version:" + version + "\r\nredis_mode:standalone\r\n",
		"# Clients\r\nconnected_clients:2\r\nmaxclients:7\r\n",
		"# Memory\r\nmaxmemory_policy:",
		"# Persistence\r\nloading:0\r\nasync_loading:0\r\n",
		"# Keyspace\r\ndb0:keys=3,expires=2,avg_ttl=0\r\n",
	} {
		if !strings.Contains(info, want) {
			t.Errorf("INFO lacks %q:\n%s", want, info)
		}
	}
	host, port, _ := strings.Cut(p.redis, ":")
	for _, never := range []string{"globex", "tcp_port", "process_id", "executable", "config_file", "run_id",
		"used_memory:", "connected_slaves", "total_commands", port, host, "os:", "db1"} {
		if strings.Contains(info, never) {
			t.Errorf("INFO shows %q:\n%s", never, info)
		}
	}
	// Sections asked for, in any case; unknown ones empty.
	expect(t, bulkText(t, a.do("INFO", "KEYSPACE")), "# Keyspace\r\ndb0:keys=3,expires=2,avg_ttl=0\r\n")
	expect(t, bulkText(t, a.do("INFO", "clients", "persistence")), "# Clients\r\nconnected_clients:2\r\nmaxclients:7\r\n\r\n# Persistence\r\nloading:0\r\nasync_loading:0\r\n")
	expect(t, a.do("INFO", "commandstats"), "$0\r\n\r\n")
	if all := bulkText(t, a.do("INFO", "everything")); all != info {
		t.Errorf("INFO everything differs from INFO:\n%s\n%s", all, info)
	}
	// RESP3: a verbatim string.
	if got := a2.do("INFO", "server"); !strings.HasPrefix(got, "=") || !strings.Contains(got, "txt:# Server\r\nredis_version:"+version) {
		t.Errorf("RESP3 INFO server: %q", got)
	}
	// The count follows the tenant's keys (after the cache's period).
	expect(t, a.do("DEL", "k1", "k2"), ":2\r\n")
	harness.Eventually(t, 10*time.Second, func() error {
		if got := bulkText(t, a.do("INFO", "keyspace")); got != "# Keyspace\r\ndb0:keys=1,expires=1,avg_ttl=0\r\n" {
			return fmt.Errorf("INFO keyspace %q", got)
		}
		return nil
	})
	expect(t, a.do("PING"), "+PONG\r\n")
}

// infoField returns a field of an INFO text.
func infoField(info, name string) string {
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			return v
		}
	}
	return ""
}

// bulkText returns a RESP2 bulk string reply's text.
func bulkText(t *testing.T, reply string) string {
	t.Helper()
	head, body, ok := strings.Cut(reply, "\r\n")
	if !ok || !strings.HasPrefix(head, "$") {
		t.Fatalf("not a bulk string: %q", reply)
	}
	return strings.TrimSuffix(body, "\r\n")
}
