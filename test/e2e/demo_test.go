package e2e

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	goredis "github.com/redis/go-redis/v9"

	"github.com/tenantguard/tenantguard/test/harness"
)

// TestDemo runs `tenantguard demo`, reads its env file, and uses every URL.
func TestDemo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	envFile := filepath.Join(t.TempDir(), "demo.env")
	p := start(t, "demo", "--env-file", envFile)
	var env map[string]string
	harness.Eventually(t, 90*time.Second, func() error {
		b, err := os.ReadFile(envFile)
		if err != nil {
			return err
		}
		env = map[string]string{}
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				return errors.New("malformed line " + line)
			}
			env[k] = v
		}
		return nil
	})
	for _, k := range []string{"TG_PG_URL_ACME", "TG_PG_URL_GLOBEX", "TG_PG_ADMIN_URL", "TG_METRICS_URL", "TG_REDIS_URL_ACME", "TG_REDIS_URL_GLOBEX", "TG_REDIS_ADMIN_URL", "TG_EXTAUTHZ_ADDR", "TG_SESSION_API", "TG_ADMIN_TOKEN", "TG_CONTROLPLANE_ADDR", "TG_ADMIN_API"} {
		if env[k] == "" {
			t.Fatalf("env file lacks %s: %v", k, env)
		}
	}
	for _, k := range []string{"TG_PG_URL_ACME", "TG_PG_URL_GLOBEX", "TG_PG_ADMIN_URL"} {
		c, err := pgx.Connect(ctx, env[k])
		if err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		var n int
		if err := c.QueryRow(ctx, "SELECT count(*) FROM public.orders").Scan(&n); err != nil || n == 0 {
			t.Fatalf("%s: orders %d %v", k, n, err)
		}
		c.Close(ctx)
	}
	// Each tenant sees its own rows and keys only.
	for tenant, key := range map[string]string{"acme": "TG_PG_URL_ACME", "globex": "TG_PG_URL_GLOBEX"} {
		c, err := pgx.Connect(ctx, env[key])
		if err != nil {
			t.Fatal(err)
		}
		var others int
		if err := c.QueryRow(ctx, "SELECT count(*)::int FROM public.orders WHERE tenant_id <> $1", tenant).Scan(&others); err != nil || others != 0 {
			t.Fatalf("%s sees %d rows of other tenants (%v)", tenant, others, err)
		}
		c.Close(ctx)
	}
	for tenant, key := range map[string]string{"acme": "TG_REDIS_URL_ACME", "globex": "TG_REDIS_URL_GLOBEX"} {
		opt, err := goredis.ParseURL(env[key])
		if err != nil {
			t.Fatal(err)
		}
		opt.DisableIdentity = true
		r := goredis.NewClient(opt)
		v, err := r.Get(ctx, "greeting").Result()
		r.Close()
		if err != nil || v != "hello from "+tenant {
			t.Fatalf("%s greeting %q %v", tenant, v, err)
		}
	}
	code, body, err := httpGet(ctx, env["TG_METRICS_URL"])
	if err != nil || code != 200 || !strings.Contains(body, "tenantguard_pg_client_connections") {
		t.Fatalf("metrics: %d %v", code, err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, 60*time.Second); code != 0 {
		t.Fatalf("demo exit code %d", code)
	}
	if _, err := os.Stat(envFile); !os.IsNotExist(err) {
		t.Fatalf("env file left behind: %v", err)
	}
}
