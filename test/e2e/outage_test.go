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

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/tenantguard/tenantguard/test/harness"
)

const xdsToken = "e2e-xds-token-0123456789"

// adsStatus opens an ADS stream with tok as bearer ("" = none), asks for
// the policy and returns the status of the first answer.
func adsStatus(t *testing.T, addr, tok string) codes.Code {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if tok != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
	}
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err == nil {
		// A Send on a stream the server already ended returns io.EOF; the
		// stream's status comes from Recv either way.
		_ = st.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "probe"}, TypeUrl: "type.googleapis.com/tenantguard.policy.v1.Policy"})
		_, err = st.Recv()
	}
	return status.Code(err)
}

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
	if err := os.WriteFile(cpCfg, []byte(fmt.Sprintf("listen:\n  xds: %q\n  admin: %q\ndatabase: %q\nadmin_token: %s\nxds_token: %s\nseed: policy.yaml\n",
		xdsAddr, cpAdmin, pg.AdminURL("outage_cp"), e2eAdminToken, xdsToken)), 0o600); err != nil {
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
	// Without the token, or with another, the policy is not served.
	for _, tok := range []string{"", "not-the-xds-token-0123"} {
		if code := adsStatus(t, xdsAddr, tok); code != codes.Unauthenticated {
			t.Fatalf("ADS with token %q: %v, want Unauthenticated", tok, code)
		}
	}
	if code := adsStatus(t, xdsAddr, xdsToken); code != codes.OK {
		t.Fatalf("ADS with the token: %v", code)
	}

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
  token: %s
drain_timeout: 5s
`, listen, admin, pg.Port(), xdsAddr, xdsToken)), 0o600); err != nil {
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
