package sidecar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/tenantguard/tenantguard/internal/config"
	"github.com/tenantguard/tenantguard/internal/fixture/redisserver"
	"github.com/tenantguard/tenantguard/test/harness"
)

// TestRedisUpstreamTLSReload: a sidecar configured with a rediss://
// upstream and redis.upstream_tls reaches a redis-server that serves TLS
// only and requires a client certificate. Its first client certificate
// is signed by a CA redis-server does not trust, so commands fail; once
// the files are replaced by a certificate of the right CA, new upstream
// connections present it, without a restart.
func TestRedisUpstreamTLSReload(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	ca, other := harness.NewCA(t, "redis CA"), harness.NewCA(t, "not redis's CA")
	dir := t.TempDir()
	cert, key := ca.Issue(t, dir, "redis", harness.ServerSpec("redis"))
	rs, err := redisserver.Start(ctx, redisserver.Options{TLS: &redisserver.TLS{CertFile: cert, KeyFile: key, CAFile: ca.File, RequireClientCert: true}})
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	other.Issue(t, dir, "sidecar", harness.CertSpec{CommonName: "sidecar"}) // the wrong one first
	pg := harness.Postgres(t)
	yml := fmt.Sprintf(`listen:
  postgres: 127.0.0.1:0
  redis: 127.0.0.1:0
redis:
  upstream: rediss://%s
  upstream_tls: {ca_file: %q, cert_file: sidecar.crt, key_file: sidecar.key}
postgres:
  databases:
    - name: postgres
      url: %q
tenants:
  - id: acme
    passwords: [%q]
`, rs.Addr(), ca.File, pg.AdminURL("postgres"), acmeSecret)
	cfg, err := config.Parse(filepath.Join(dir, "sidecar.yaml"), []byte(yml))
	if err != nil {
		t.Fatal(err)
	}
	sc, err := Start(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sc.Run(rctx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	c := goredis.NewClient(&goredis.Options{Addr: sc.RedisAddr(), Username: "acme", Password: acmeSecret, DisableIdentity: true, MaxRetries: -1})
	defer c.Close()
	if err := c.Set(ctx, "k", "v", 0).Err(); err == nil {
		t.Fatal("SET worked with a client certificate redis-server does not trust")
	}
	ca.Issue(t, dir, "sidecar", harness.CertSpec{CommonName: "sidecar"}) // renewed, by rename
	harness.Eventually(t, 30*time.Second, func() error {
		if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
			return err
		}
		if v, err := c.Get(ctx, "k").Result(); err != nil || v != "v" {
			return errors.Join(err, fmt.Errorf("GET k = %q", v))
		}
		return nil
	})
}
