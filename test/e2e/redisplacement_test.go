package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/tenantguard/tenantguard/proxy/redis/namespace"
	"github.com/tenantguard/tenantguard/test/harness"
)

// tenantKey is key in tenant's namespace (spread mode), as the sidecar
// stores it upstream.
func tenantKey(t *testing.T, tenant, key string) string {
	t.Helper()
	ns, err := namespace.New(tenant, namespace.Spread)
	if err != nil {
		t.Fatal(err)
	}
	return string(ns.AppendKey(nil, []byte(key)))
}

// TestRedisPlacementEndToEnd is the Redis half of placement: the control
// plane and a sidecar as processes, two real redis-servers, acme placed
// on the configured one and globex too. acme's keys live only on its
// server; moved with PUT /v1/tenants/acme/placement {"redis": "second"},
// acme's open connection sends its next command to the second server,
// where what it wrote before is out of its reach; globex's redis-benchmark
// (-P 16, looping) runs through the move without an error.
func TestRedisPlacementEndToEnd(t *testing.T) {
	rb, err := exec.LookPath("redis-benchmark")
	if err != nil {
		t.Skip("redis-benchmark not installed")
	}
	pg, first := harness.Postgres(t), harness.Redis(t)
	second := harness.FreshRedis(t)
	secondAddr := second.Options().Addr
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for _, q := range []string{"CREATE ROLE rplace_app LOGIN PASSWORD 'rplace_pw'", "CREATE DATABASE rplace", "CREATE DATABASE rplace_cp"} {
		if err := pg.Exec(ctx, "postgres", q); err != nil && !strings.Contains(err.Error(), "42710") && !strings.Contains(err.Error(), "42P04") {
			t.Fatal(err)
		}
	}
	if err := pg.Exec(ctx, "rplace_cp", "DROP SCHEMA IF EXISTS tenantguard_cp CASCADE"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "policy.yaml"), []byte(fmt.Sprintf(`name: default
clusters:
  - name: second
    redis: {address: %q}
tenants:
  - id: acme
    credentials: ["acme-secret-1"]
  - id: globex
    credentials: ["globex-secret-1"]
`, secondAddr)), 0o600); err != nil {
		t.Fatal(err)
	}
	xdsAddr, cpAdmin := freeAddr(t), freeAddr(t)
	cpCfg := filepath.Join(dir, "controlplane.yaml")
	if err := os.WriteFile(cpCfg, []byte(fmt.Sprintf("listen:\n  xds: %q\n  admin: %q\ndatabase: %q\nadmin_token: %s\nseed: policy.yaml\n",
		xdsAddr, cpAdmin, pg.AdminURL("rplace_cp"), e2eAdminToken)), 0o600); err != nil {
		t.Fatal(err)
	}
	listen, redisListen, admin := freeAddr(t), freeAddr(t), freeAddr(t)
	scCfg := filepath.Join(dir, "sidecar.yaml")
	if err := os.WriteFile(scCfg, []byte(fmt.Sprintf(`listen:
  postgres: %q
  redis: %q
  admin: %q
postgres:
  databases:
    - name: rplace
      url: "postgres://rplace_app:rplace_pw@127.0.0.1:%d/rplace?sslmode=disable"
redis:
  upstream: %q
  retire_after: 1s
controlplane:
  address: %q
  node_id: redis-placement-sidecar
drain_timeout: 5s
`, listen, redisListen, admin, pg.Port(), first.Addr(), xdsAddr)), 0o600); err != nil {
		t.Fatal(err)
	}
	cp := start(t, "controlplane", "--config", cpCfg)
	sc := start(t, "sidecar", "--config", scCfg)
	for name, p := range map[string]struct {
		proc *process
		addr string
	}{"controlplane": {cp, cpAdmin}, "sidecar": {sc, admin}} {
		harness.Eventually(t, 60*time.Second, func() error {
			if err := p.proc.exited(); err != nil {
				t.Fatalf("%s exited: %v\n%s", name, err, p.proc.output())
			}
			code, _, err := httpGet(ctx, "http://"+p.addr+"/readyz")
			if err != nil || code != 200 {
				return fmt.Errorf("%s readyz %d %v", name, code, err)
			}
			return nil
		})
	}
	direct1 := goredis.NewClient(&goredis.Options{Addr: first.Addr(), DisableIdentity: true})
	t.Cleanup(func() { _ = direct1.Close() })
	t.Cleanup(func() {
		direct1.Del(context.Background(), tenantKey(t, "acme", "rp:before"), tenantKey(t, "acme", "rp:probe"))
	})
	client := func(tenant string) *goredis.Client {
		c := goredis.NewClient(&goredis.Options{Addr: redisListen, Username: tenant, Password: tenant + "-secret-1", DisableIdentity: true, PoolSize: 1, MaxRetries: -1})
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	acme := client("acme")
	if err := acme.Set(ctx, "rp:before", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if n, _ := direct1.Exists(ctx, tenantKey(t, "acme", "rp:before")).Result(); n != 1 {
		t.Fatal("acme's key is not on the configured server")
	}
	if n, _ := second.Exists(ctx, tenantKey(t, "acme", "rp:before")).Result(); n != 0 {
		t.Fatal("acme's key is on the second server before any move")
	}

	// globex's redis-benchmark, looping until the move is done: it exits
	// at the first error reply.
	host, port, _ := strings.Cut(redisListen, ":")
	bench := exec.CommandContext(ctx, rb, "-h", host, "-p", port, "--user", "globex", "-a", "globex-secret-1",
		"-c", "8", "-n", "20000", "-P", "16", "-t", "set,get,incr,lpush,lpop", "-l", "-q")
	var benchOut strings.Builder
	bench.Stdout, bench.Stderr = &benchOut, &benchOut
	if err := bench.Start(); err != nil {
		t.Fatal(err)
	}
	benchDone := make(chan error, 1)
	go func() { benchDone <- bench.Wait() }()
	defer func() {
		if bench.ProcessState == nil {
			_ = bench.Process.Kill()
			<-benchDone
		}
	}()
	globexKeys := func() int64 {
		n, _ := direct1.Exists(ctx, tenantKey(t, "globex", "counter:__rand_int__"), tenantKey(t, "globex", "key:__rand_int__")).Result()
		return n
	}
	harness.Eventually(t, 60*time.Second, func() error {
		if globexKeys() == 0 {
			return errors.New("globex's redis-benchmark has written nothing yet")
		}
		return nil
	})

	var moved map[string]any
	if st := callJSON(t, "http://"+cpAdmin, e2eAdminToken, "PUT", "/v1/tenants/acme/placement", `{"redis": "second"}`, &moved); st != http.StatusOK || moved["changed"] != true {
		t.Fatalf("PUT placement: %d %v", st, moved)
	}
	// acme's open connection moves at its next command once the sidecar
	// has the version.
	harness.Eventually(t, 30*time.Second, func() error {
		if err := acme.Set(ctx, "rp:probe", "x", 0).Err(); err != nil {
			t.Fatalf("acme SET during the move: %v", err)
		}
		if n, _ := second.Exists(ctx, tenantKey(t, "acme", "rp:probe")).Result(); n != 1 {
			return errors.New("acme's command has not reached the second server yet")
		}
		return nil
	})
	// From then on, nothing of acme's reaches the configured server.
	direct1.Del(ctx, tenantKey(t, "acme", "rp:probe"))
	for range 20 {
		if err := acme.Set(ctx, "rp:probe", "y", 0).Err(); err != nil {
			t.Fatal(err)
		}
		if v, err := acme.Get(ctx, "rp:before").Result(); !errors.Is(err, goredis.Nil) {
			t.Fatalf("acme, on the second server, read its key of the configured one: %q, %v", v, err)
		}
	}
	if n, _ := direct1.Exists(ctx, tenantKey(t, "acme", "rp:probe")).Result(); n != 0 {
		t.Fatal("an acme command reached the configured server after its connection moved")
	}
	if v, _ := second.Get(ctx, tenantKey(t, "acme", "rp:probe")).Result(); v != "y" {
		t.Fatalf("acme's writes after the move are not on the second server: %q", v)
	}
	// globex never moved, and its benchmark is still running: no error.
	select {
	case err := <-benchDone:
		t.Fatalf("globex's redis-benchmark ended during the move: %v\n%s", err, benchOut.String())
	default:
	}
	if n, _ := second.Exists(ctx, tenantKey(t, "globex", "counter:__rand_int__"), tenantKey(t, "globex", "key:__rand_int__")).Result(); n != 0 {
		t.Fatal("globex's keys reached the second server")
	}
	_ = bench.Process.Kill()
	<-benchDone
	if out := benchOut.String(); strings.Contains(strings.ToLower(out), "error") {
		t.Fatalf("globex's redis-benchmark:\n%s", out)
	}
	// The metrics name the upstream by its cluster.
	_, metrics, err := httpGet(ctx, "http://"+admin+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(metrics, `tenantguard_redis_upstreams_opened_total{cluster="second"} 1`) {
		t.Fatalf("metrics lack the second upstream:\n%s", grepLines(metrics, "tenantguard_redis_up"))
	}
}

// grepLines returns the lines of s containing sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
