package sidecar

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/tenantguard/tenantguard/internal/config"
	"github.com/tenantguard/tenantguard/test/harness"
)

// TestRedisClusterUpstream: a sidecar configured with redis.cluster_seeds
// serves a tenant's keys from every master of a real Redis Cluster.
func TestRedisClusterUpstream(t *testing.T) {
	pg, rc := harness.Postgres(t), harness.RedisCluster(t)
	yml := fmt.Sprintf(`listen:
  postgres: 127.0.0.1:0
  redis: 127.0.0.1:0
redis:
  cluster_seeds: [%q]
  namespace: spread
  emulate: [dbsize]
postgres:
  databases:
    - name: postgres
      url: %q
tenants:
  - id: acme
    passwords: [%q]
`, rc.Seeds()[0], pg.AdminURL("postgres"), acmeSecret)
	cfg, err := config.Parse("test", []byte(yml))
	if err != nil {
		t.Fatal(err)
	}
	sc, err := Start(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	c := dialRESP(t, sc.RedisAddr())
	if got := c.do("AUTH", "acme", acmeSecret); got != "+OK\r\n" {
		t.Fatalf("AUTH: %q", got)
	}
	// Keys over every slot range: each write lands on its master.
	const n = 60
	for i := range n {
		if got := c.do("SET", fmt.Sprintf("sidecar-k%d", i), "v"); got != "+OK\r\n" {
			t.Fatalf("SET %d: %q", i, got)
		}
	}
	if got := c.do("DBSIZE"); !strings.HasPrefix(got, fmt.Sprintf(":%d", n)) {
		t.Fatalf("DBSIZE = %q, want %d (summed over the masters)", got, n)
	}
	if got := c.do("CLUSTER", "NODES"); !strings.HasPrefix(got, "-NOPERM") {
		t.Fatalf("CLUSTER NODES: %q", got)
	}
}
