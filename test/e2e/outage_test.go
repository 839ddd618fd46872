package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantguard/tenantguard/test/harness"
)

// TestControlPlaneOutage runs the control plane and a sidecar as separate
// processes. With the control plane killed the sidecar keeps enforcing;
// a sidecar restarted meanwhile starts from its persisted policy; when the
// control plane returns, pushes resume.
func TestControlPlaneOutage(t *testing.T) {
	pg := harness.Postgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for _, q := range []string{"CREATE ROLE outage_app LOGIN PASSWORD 'outage_pw'", "CREATE DATABASE outage", "CREATE DATABASE outage_cp"} {
		if err := pg.Exec(ctx, "postgres", q); err != nil && !strings.Contains(err.Error(), "42710") && !strings.Contains(err.Error(), "42P04") {
			t.Fatal(err)
		}
	}
	// A fresh store each run (-count).
	if err := pg.Exec(ctx, "outage_cp", "DROP SCHEMA IF EXISTS tenantguard_cp CASCADE"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	seed := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(seed, []byte("name: default\ntenants:\n  - id: acme\n    credentials: [\"acme-secret-1\"]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	xdsAddr, cpAdmin := freeAddr(t), freeAddr(t)
	cpCfg := filepath.Join(dir, "controlplane.yaml")
	if err := os.WriteFile(cpCfg, []byte(fmt.Sprintf("listen:\n  xds: %q\n  admin: %q\ndatabase: %q\nadmin_token: %s\nseed: policy.yaml\n",
		xdsAddr, cpAdmin, pg.AdminURL("outage_cp"), e2eAdminToken)), 0o600); err != nil {
		t.Fatal(err)
	}
	startCP := func() *process {
		cp := start(t, "controlplane", "--config", cpCfg)
		harness.Eventually(t, 30*time.Second, func() error {
			if err := cp.exited(); err != nil {
				t.Fatalf("controlplane exited: %v\n%s", err, cp.output())
			}
			code, _, err := httpGet(ctx, "http://"+cpAdmin+"/readyz")
			if err != nil || code != 200 {
				return fmt.Errorf("readyz %d %v", code, err)
			}
			return nil
		})
		return cp
	}
	cp := startCP()

	listen, admin := freeAddr(t), freeAddr(t)
	scCfg := filepath.Join(dir, "sidecar.yaml")
	if err := os.WriteFile(scCfg, []byte(fmt.Sprintf(`listen:
  postgres: %q
  admin: %q
postgres:
  databases:
    - name: outage
      url: "postgres://outage_app:outage_pw@127.0.0.1:%d/outage?sslmode=disable"
controlplane:
  address: %q
  node_id: outage-sidecar
  cache_file: sidecar-policy.json
drain_timeout: 5s
`, listen, admin, pg.Port(), xdsAddr)), 0o600); err != nil {
		t.Fatal(err)
	}
	startSidecar := func() *process {
		sc := start(t, "sidecar", "--config", scCfg)
		harness.Eventually(t, 30*time.Second, func() error {
			if err := sc.exited(); err != nil {
				t.Fatalf("sidecar exited: %v\n%s", err, sc.output())
			}
			code, _, err := httpGet(ctx, "http://"+admin+"/readyz")
			if err != nil || code != 200 {
				return fmt.Errorf("readyz %d %v", code, err)
			}
			return nil
		})
		return sc
	}
	login := func(tenant, secret string) error {
		c, err := pgx.Connect(ctx, fmt.Sprintf("postgres://%s:%s@%s/outage?sslmode=disable", tenant, secret, listen))
		if err != nil {
			return err
		}
		defer c.Close(ctx)
		var one int
		return c.QueryRow(ctx, "SELECT 1").Scan(&one)
	}
	sc := startSidecar()
	if err := login("acme", "acme-secret-1"); err != nil {
		t.Fatal(err)
	}

	// Kill the control plane: the sidecar keeps enforcing.
	if err := cp.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cp.wait(t, 10*time.Second)
	if err := login("acme", "acme-secret-1"); err != nil {
		t.Fatalf("with the control plane down: %v", err)
	}
	if err := login("acme", "wrong-secret"); pgCode(err) != "28P01" {
		t.Fatalf("wrong secret with the control plane down: %v", err)
	}

	// Restart the sidecar while the control plane is down: it starts from
	// the policy it persisted.
	if err := sc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := sc.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("sidecar exit %d", code)
	}
	sc = startSidecar()
	if err := login("acme", "acme-secret-1"); err != nil {
		t.Fatalf("restarted sidecar, control plane down: %v", err)
	}
	if !strings.Contains(sc.output(), "started from the cached policy") {
		t.Fatalf("the restarted sidecar did not start from its persisted policy:\n%s", sc.output())
	}

	// The control plane returns (its store kept the policy); a push
	// reaches the sidecar that started without it.
	startCP()
	env := map[string]string{"TG_ADMIN_API": "http://" + cpAdmin, "TG_ADMIN_TOKEN": e2eAdminToken}
	p := currentPolicy(t, env)
	p["tenants"] = append(p["tenants"].([]any), map[string]any{"id": "initech", "credentials": []string{"initech-secret-1"}})
	b, _ := json.Marshal(p)
	var out map[string]any
	if st := adminAPI(t, env, "PUT", "/v1/policy?hash_credentials=true", string(b), &out); st != http.StatusOK {
		t.Fatalf("PUT: %d %v", st, out)
	}
	harness.Eventually(t, 20*time.Second, func() error {
		err := login("initech", "initech-secret-1")
		if err == nil {
			return nil
		}
		if pgCode(err) == "28P01" {
			return errors.New("the new tenant is not there yet")
		}
		return err
	})
	if err := login("acme", "acme-secret-1"); err != nil {
		t.Fatal(err)
	}
}
