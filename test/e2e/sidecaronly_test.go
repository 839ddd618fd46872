package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	goredis "github.com/redis/go-redis/v9"

	"github.com/tenantguard/tenantguard/test/harness"
)

// buildSidecarOnly builds the sidecar-only tenantguard as `make sidecar`
// does (-tags sidecar,grpcnotrace) into the test's temporary directory.
func buildSidecarOnly(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "tenantguard-sidecar")
	_, file, _, _ := runtime.Caller(0)
	// -race as TestMain's build, so that the packages come from its cache.
	build := exec.Command("go", "build", "-race", "-tags", "sidecar,grpcnotrace", "-o", bin, "./cmd/tenantguard")
	build.Dir = filepath.Join(filepath.Dir(file), "..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the sidecar-only tenantguard: %v\n%s", err, out)
	}
	return bin
}

// TestSidecarOnlyBuild runs the sidecar-only build (-tags sidecar) as the
// data plane of the full build's control plane: both listeners, the policy
// over delta xDS (the client's own discovery messages against
// go-control-plane's server), a push applied. What the build leaves out
// says so and exits 2.
func TestSidecarOnlyBuild(t *testing.T) {
	pg := harness.Postgres(t)
	rs := harness.Redis(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	slim := buildSidecarOnly(t)

	out, err := exec.Command(slim, "version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "(sidecar-only build)") {
		t.Fatalf("version: %v %q", err, out)
	}
	for _, args := range [][]string{{"controlplane", "--config", "x.yaml"}, {"extauthz", "--config", "x.yaml"}, {"demo"}} {
		out, err := exec.Command(slim, args...).CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), "not in this build") {
			t.Errorf("%s: %v %q, want exit 2 and 'not in this build'", args[0], err, out)
		}
	}
	dir := t.TempDir()
	if out, err := exec.Command(slim, "extauthz", "keygen", "--id", "k1", "--dir", dir).CombinedOutput(); err != nil {
		t.Errorf("extauthz keygen: %v %q", err, out)
	}

	for _, q := range []string{"CREATE ROLE slim_app LOGIN PASSWORD 'slim_pw'", "CREATE DATABASE slim", "CREATE DATABASE slim_cp"} {
		if err := pg.Exec(ctx, "postgres", q); err != nil && !strings.Contains(err.Error(), "42710") && !strings.Contains(err.Error(), "42P04") {
			t.Fatal(err)
		}
	}
	if err := pg.Exec(ctx, "slim_cp", "DROP SCHEMA IF EXISTS tenantguard_cp CASCADE"); err != nil { // a fresh store each run (-count)
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "policy.yaml"), []byte("name: default\ntenants:\n  - id: acme\n    credentials: [\"acme-secret-1\"]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	xdsAddr, cpAdmin := freeAddr(t), freeAddr(t)
	cpCfg := filepath.Join(dir, "controlplane.yaml")
	if err := os.WriteFile(cpCfg, []byte(fmt.Sprintf("listen:\n  xds: %q\n  admin: %q\ndatabase: %q\nadmin_token: %s\nxds_token: %s\nseed: policy.yaml\n",
		xdsAddr, cpAdmin, pg.AdminURL("slim_cp"), e2eAdminToken, xdsToken)), 0o600); err != nil {
		t.Fatal(err)
	}
	cp := start(t, "controlplane", "--config", cpCfg)

	listen, redisListen, admin := freeAddr(t), freeAddr(t), freeAddr(t)
	scCfg := filepath.Join(dir, "sidecar.yaml")
	if err := os.WriteFile(scCfg, []byte(fmt.Sprintf(`listen:
  postgres: %q
  redis: %q
  admin: %q
redis:
  upstream: %q
postgres:
  databases:
    - name: slim
      url: "postgres://slim_app:slim_pw@127.0.0.1:%d/slim?sslmode=disable"
controlplane:
  address: %q
  node_id: slim-sidecar
  token: %s
  delta: true
drain_timeout: 5s
`, listen, redisListen, admin, rs.Addr(), pg.Port(), xdsAddr, xdsToken)), 0o600); err != nil {
		t.Fatal(err)
	}
	sc := startCommand(t, slim, "sidecar", "--config", scCfg)
	harness.Eventually(t, 30*time.Second, func() error {
		for _, p := range []*process{cp, sc} {
			if err := p.exited(); err != nil {
				t.Fatalf("exited: %v\n%s", err, p.output())
			}
		}
		code, _, err := httpGet(ctx, "http://"+admin+"/readyz")
		if err != nil || code != 200 {
			return fmt.Errorf("sidecar readyz %d %v", code, err)
		}
		return nil
	})

	pgLogin := func(tenant, secret string) error {
		c, err := pgx.Connect(ctx, fmt.Sprintf("postgres://%s:%s@%s/slim?sslmode=disable", tenant, secret, listen))
		if err != nil {
			return err
		}
		defer c.Close(ctx)
		var one int
		return c.QueryRow(ctx, "SELECT 1").Scan(&one)
	}
	redisLogin := func(tenant, secret string) error {
		rdb := goredis.NewClient(&goredis.Options{Addr: redisListen, Username: tenant, Password: secret, Protocol: 2, DisableIdentity: true})
		defer rdb.Close()
		if err := rdb.Set(ctx, "k", tenant, 0).Err(); err != nil {
			return err
		}
		return rdb.Get(ctx, "k").Err()
	}
	if err := pgLogin("acme", "acme-secret-1"); err != nil {
		t.Fatal(err)
	}
	if err := redisLogin("acme", "acme-secret-1"); err != nil {
		t.Fatal(err)
	}

	// A push reaches it: a new tenant can log in on both listeners.
	env := map[string]string{"TG_ADMIN_API": "http://" + cpAdmin, "TG_ADMIN_TOKEN": e2eAdminToken}
	p := currentPolicy(t, env)
	p["tenants"] = append(p["tenants"].([]any), map[string]any{"id": "initech", "credentials": []string{"initech-secret-1"}})
	b, _ := json.Marshal(p)
	var resp map[string]any
	if st := adminAPI(t, env, "PUT", "/v1/policy?hash_credentials=true", string(b), &resp); st != http.StatusOK {
		t.Fatalf("PUT: %d %v", st, resp)
	}
	harness.Eventually(t, 20*time.Second, func() error {
		err := pgLogin("initech", "initech-secret-1")
		if pgCode(err) == "28P01" {
			return errors.New("the new tenant is not there yet")
		}
		return err
	})
	if err := redisLogin("initech", "initech-secret-1"); err != nil {
		t.Fatal(err)
	}
}
