package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/internal/procs"
	proxypg "github.com/tenantguard/tenantguard/proxy/pg"
)

const valid = `
listen:
  postgres: 127.0.0.1:6432
  admin: 127.0.0.1:9187
postgres:
  databases:
    - name: app
      url: postgres://tg_app:pw@127.0.0.1:5432/app
  pool:
    mode: session
    size: 7
    wait_timeout: 250ms
tenants:
  - id: acme
    passwords: ["acme-secret-1"]
  - id: globex
    passwords: ["SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0c2FsdA==$9Cx2ODnVG/IzOeJtjEvaHT24p31sAY0ER+zVcMFRhOo=:MEJZPvMcadmgNSDfdgGV3SxHiEL8ASgF+ttBPUdkKBU="]
drain_timeout: 3s
`

func TestParseValid(t *testing.T) {
	sc, err := Parse("sidecar.yaml", []byte(valid))
	if err != nil {
		t.Fatal(err)
	}
	if sc.PostgresListen != "127.0.0.1:6432" || sc.AdminListen != "127.0.0.1:9187" {
		t.Fatalf("listen: %+v", sc)
	}
	pc := sc.Postgres
	if pc.PoolMode != proxypg.PoolSession || pc.PoolSize != 7 || pc.PoolWaitTimeout != 250*time.Millisecond {
		t.Fatalf("pool: %+v", pc)
	}
	if sc.DrainTimeout != 3*time.Second {
		t.Fatalf("drain timeout %v", sc.DrainTimeout)
	}
	if sc.Procs != 0 {
		t.Fatalf("procs %d, want 0 (not set)", sc.Procs)
	}
	for text, want := range map[string]int{"procs: 2": 2, "procs: auto": procs.Auto} {
		sc, err := Parse("sidecar.yaml", []byte(valid+text+"\n"))
		if err != nil || sc.Procs != want {
			t.Fatalf("%s: procs %v, %v; want %d", text, sc, err, want)
		}
	}
	if _, ok := sc.Policy.Tenant("globex"); !ok {
		t.Fatal("tenant globex missing")
	}
}

// TestParseErrors: each error names the file, the field and the problem.
func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name, from, to, want string
	}{
		{"unknown field", "drain_timeout: 3s", "drain_timout: 3s", "field drain_timout not found"},
		{"bad procs", "drain_timeout: 3s", "drain_timeout: 3s\nprocs: all", `procs: "all" is not a number of procs`},
		{"no listen", "  postgres: 127.0.0.1:6432\n", "", "listen.postgres: required"},
		{"bad listen", "127.0.0.1:6432", "localhost", `listen.postgres: "localhost" is not host:port`},
		{"bad pool mode", "mode: session", "mode: statement", `postgres.pool.mode: "statement" is not a pool mode`},
		{"bad duration", "wait_timeout: 250ms", "wait_timeout: soon", `"soon" is not a duration`},
		{"negative size", "size: 7", "size: -1", "postgres.pool.size: must be between"},
		{"bad url", "url: postgres://", "url: mysql://", "postgres.databases[0].url: must be a postgres:// URL"},
		{"bad tenant id", "id: acme", "id: Acme Corp", `tenants[0].id: "Acme Corp" is not a valid tenant id`},
		{"duplicate tenant", "id: globex", "id: acme", `tenants[1].id: tenant "acme" is defined twice`},
		{"short password", `"acme-secret-1"`, `"short"`, "tenants[0].passwords[0]: password must have at least 8 characters"},
		{"bad verifier", "SCRAM-SHA-256$4096:", "SCRAM-SHA-256$x:", "tenants[1].passwords[0]: verifier: bad iteration count"},
		{"half tls", "drain_timeout: 3s", "drain_timeout: 3s\ntls:\n  cert_file: /x.pem", "tls: cert_file and key_file must be given together"},
		{"redis tls without a redis listener", "drain_timeout: 3s", "drain_timeout: 3s\nredis:\n  tls: {cert_file: /x.pem, key_file: /x.key}", "redis.tls: there is no Redis listener"},
		{"half redis tls", "  admin: 127.0.0.1:9187\n", "  admin: 127.0.0.1:9187\n  redis: 127.0.0.1:6380\nredis:\n  upstream: 127.0.0.1:6379\n  tls: {cert_file: /x.pem}\n", "redis.tls: cert_file and key_file must be given together"},
		{"redis plaintext without tls", "  admin: 127.0.0.1:9187\n", "  admin: 127.0.0.1:9187\n  redis: 127.0.0.1:6380\nredis:\n  upstream: 127.0.0.1:6379\n  tls: {allow_plaintext: true}\n", "redis.tls.allow_plaintext: needs cert_file and key_file"},
		{"redis tls missing file", "  admin: 127.0.0.1:9187\n", "  admin: 127.0.0.1:9187\n  redis: 127.0.0.1:6380\nredis:\n  upstream: 127.0.0.1:6379\n  tls: {cert_file: /nonexistent/x.pem, key_file: /nonexistent/x.key}\n", "redis.tls.cert_file: /nonexistent/x.pem"},
		{"near cache without ttl", "  admin: 127.0.0.1:9187\n", "  admin: 127.0.0.1:9187\n  redis: 127.0.0.1:6380\nredis:\n  upstream: 127.0.0.1:6379\n  near_cache: [{tenant: acme, keys: [\"user:*\"]}]\n", "redis.near_cache[0].max_ttl: required"},
		{"near cache without keys", "  admin: 127.0.0.1:9187\n", "  admin: 127.0.0.1:9187\n  redis: 127.0.0.1:6380\nredis:\n  upstream: 127.0.0.1:6379\n  near_cache: [{tenant: acme, max_ttl: 1m}]\n", "redis.near_cache[0].keys: at least one key pattern"},
		{"near cache bad tenant", "  admin: 127.0.0.1:9187\n", "  admin: 127.0.0.1:9187\n  redis: 127.0.0.1:6380\nredis:\n  upstream: 127.0.0.1:6379\n  near_cache: [{tenant: Acme Corp, keys: [\"*\"], max_ttl: 1m}]\n", "redis.near_cache[0].tenant:"},
		{"console without password", "    wait_timeout: 250ms\n", "    wait_timeout: 250ms\n  console: {user: tgadmin}\n", "postgres.console: user and password are both required"},
		{"unset listen variable", "127.0.0.1:6432", "${TG_TEST_UNSET_POD_IP}:6432", `listen.postgres: `},
		{"negative per-source cap", "    wait_timeout: 250ms\n", "    wait_timeout: 250ms\n  max_client_connections_per_source: -1\n", "postgres.max_client_connections_per_source: must not be negative"},
		{"redis upstream and seeds", "  admin: 127.0.0.1:9187\n", "  admin: 127.0.0.1:9187\n  redis: 127.0.0.1:6380\nredis:\n  upstream: 127.0.0.1:6379\n  cluster_seeds: [127.0.0.1:7000]\n", "redis.cluster_seeds: set either redis.upstream"},
		{"bad seed", "  admin: 127.0.0.1:9187\n", "  admin: 127.0.0.1:9187\n  redis: 127.0.0.1:6380\nredis:\n  cluster_seeds: [127.0.0.1:7000, nohost]\n", `redis.cluster_seeds[1]: "nohost" is not host:port`},
		{"seeds without listener", "  admin: 127.0.0.1:9187\n", "  admin: 127.0.0.1:9187\nredis:\n  cluster_seeds: [127.0.0.1:7000]\n", "listen.redis: required when"},
		{"near cache on a cluster", "  admin: 127.0.0.1:9187\n", "  admin: 127.0.0.1:9187\n  redis: 127.0.0.1:6380\nredis:\n  cluster_seeds: [127.0.0.1:7000]\n  near_cache: [{tenant: acme, keys: [\"*\"], max_ttl: 1m}]\n", "redis.near_cache: not available with redis.cluster_seeds"},
		{"redis credentials without password", "  admin: 127.0.0.1:9187\n", "  admin: 127.0.0.1:9187\n  redis: 127.0.0.1:6380\nredis:\n  upstream: 127.0.0.1:6379\n  credentials: [{name: eu, user: tg}]\n", "redis.credentials[0]: password or password_file is required"},
		{"redis credentials twice", "  admin: 127.0.0.1:9187\n", "  admin: 127.0.0.1:9187\n  redis: 127.0.0.1:6380\nredis:\n  upstream: 127.0.0.1:6379\n  credentials: [{name: eu, password: a}, {name: eu, password: b}]\n", `redis.credentials[1].name: credentials "eu" are listed twice`},
		{"console user is a tenant", "    wait_timeout: 250ms\n", "    wait_timeout: 250ms\n  console: {user: acme, password: x}\n", `postgres.console.user: "acme" is a tenant`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			text := strings.Replace(valid, tc.from, tc.to, 1)
			if text == valid {
				t.Fatalf("case did not change the config (from %q)", tc.from)
			}
			_, err := Parse("sidecar.yaml", []byte(text))
			if err == nil {
				t.Fatal("invalid config accepted")
			}
			if !strings.HasPrefix(err.Error(), "sidecar.yaml: ") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q, want it to name the file and contain %q", err, tc.want)
			}
		})
	}
}

// TestGatewayConfig: a gateway listens on its pod IP from the
// environment and caps connections per client address.
func TestGatewayConfig(t *testing.T) {
	t.Setenv("TG_TEST_POD_IP", "10.1.2.3")
	text := strings.Replace(valid, "  postgres: 127.0.0.1:6432\n", "  postgres: ${TG_TEST_POD_IP}:6432\n", 1)
	text = strings.Replace(text, "    wait_timeout: 250ms\n", "    wait_timeout: 250ms\n  max_client_connections_per_source: 50\n", 1)
	sc, err := Parse("sidecar.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	if sc.PostgresListen != "10.1.2.3:6432" || sc.Postgres.MaxClientConnsPerSource != 50 {
		t.Fatalf("listen %q, per source %d", sc.PostgresListen, sc.Postgres.MaxClientConnsPerSource)
	}
}

func TestRedisClusterConfig(t *testing.T) {
	text := strings.Replace(valid, "  admin: 127.0.0.1:9187\n", "  admin: 127.0.0.1:9187\n  redis: 127.0.0.1:6380\nredis:\n  cluster_seeds: [127.0.0.1:7000, 127.0.0.1:7001]\n  namespace: one-slot\n", 1)
	sc, err := Parse("sidecar.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	if sc.Redis.Upstream != "" || strings.Join(sc.Redis.Cluster, ",") != "127.0.0.1:7000,127.0.0.1:7001" {
		t.Fatalf("redis upstream %q, cluster %v", sc.Redis.Upstream, sc.Redis.Cluster)
	}
}

// TestRedisPlacementConfig: redis.credentials hold the ACL users the
// policy's Redis clusters name; redis.retire_after closes unused ones.
func TestRedisPlacementConfig(t *testing.T) {
	text := strings.Replace(valid, "  admin: 127.0.0.1:9187\n", "  admin: 127.0.0.1:9187\n  redis: 127.0.0.1:6380\nredis:\n  upstream: 127.0.0.1:6379\n  retire_after: 5s\n  credentials: [{name: cache-eu, user: tg, password: pw1}]\n", 1)
	text = strings.Replace(text, "drain_timeout: 3s\n", "drain_timeout: 3s\nclusters:\n  - name: cache-eu\n    redis: {address: 10.0.2.5:6379, credentials: cache-eu}\n", 1)
	text = strings.Replace(text, "  - id: acme\n", "  - id: acme\n    placement: {redis: cache-eu}\n", 1)
	sc, err := Parse("sidecar.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	if c := sc.Redis.Credentials["cache-eu"]; c.User != "tg" || c.Password != "pw1" || len(sc.Redis.Credentials) != 1 || sc.Redis.RetireAfter != 5*time.Second {
		t.Fatalf("redis credentials %+v, retire_after %v", sc.Redis.Credentials, sc.Redis.RetireAfter)
	}
	acme, _ := sc.Policy.Tenant("acme")
	if name, c := sc.Policy.RedisCluster(acme); name != "cache-eu" || c.Address != "10.0.2.5:6379" || c.Credentials != "cache-eu" {
		t.Fatalf("acme's redis placement %q %+v", name, c)
	}
}

func TestNearCacheConfig(t *testing.T) {
	text := strings.Replace(valid, "  admin: 127.0.0.1:9187\n", "  admin: 127.0.0.1:9187\n  redis: 127.0.0.1:6380\nredis:\n  upstream: 127.0.0.1:6379\n  near_cache:\n    - {tenant: acme, keys: [\"user:*\", \"plan:*\"], max_ttl: 30s, max_bytes: 1048576}\n", 1)
	sc, err := Parse("sidecar.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	r, ok := sc.Redis.NearCache["acme"]
	if !ok || len(sc.Redis.NearCache) != 1 || len(r.Patterns) != 2 || r.Patterns[1] != "plan:*" || r.MaxTTL != 30*time.Second || r.MaxBytes != 1<<20 {
		t.Fatalf("near cache: %+v", sc.Redis.NearCache)
	}
}

func TestConsoleConfig(t *testing.T) {
	text := strings.Replace(valid, "    wait_timeout: 250ms\n", "    wait_timeout: 250ms\n  console: {user: tgadmin, password: console-secret}\n", 1)
	sc, err := Parse("sidecar.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	c := sc.Postgres.Console
	if c == nil || c.User != "tgadmin" || !c.Verifier.Verify("console-secret") || c.Verifier.Verify("other") {
		t.Fatalf("console: %+v", c)
	}
}

func TestLoadMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope.yaml")
	_, err := Load(path)
	if err == nil || !strings.HasPrefix(err.Error(), path+": ") {
		t.Fatalf("got %v", err)
	}
	if err := os.WriteFile(path, []byte("listen: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("syntax error: %v", err)
	}
}
