package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tenantguard/tenantguard/extauthz/token"
	"github.com/tenantguard/tenantguard/test/harness"
)

// extauthzProc is a running `tenantguard extauthz` and its addresses.
type extauthzProc struct {
	*process
	grpcAddr, api string
	client        authv3.AuthorizationClient
}

const e2eAdminToken = "e2e-admin-token-0123456789"

func startExtAuthz(t *testing.T, dir, storeURL, signing string, verify ...string) *extauthzProc {
	t.Helper()
	grpcAddr, httpAddr := freeAddr(t), freeAddr(t)
	cfg := fmt.Sprintf("listen:\n  grpc: %q\n  http: %q\nadmin_token: %s\nsessions:\n  store: %q\n  signing_key: %s\n  verification_keys: [%s]\ntenants: [acme, globex]\ndrain_timeout: 5s\n",
		grpcAddr, httpAddr, e2eAdminToken, storeURL, signing, strings.Join(verify, ", "))
	path := filepath.Join(dir, "extauthz.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p := &extauthzProc{process: start(t, "extauthz", "--config", path), grpcAddr: grpcAddr, api: "http://" + httpAddr}
	cc, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	p.client = authv3.NewAuthorizationClient(cc)
	harness.Eventually(t, 30*time.Second, func() error {
		if err := p.exited(); err != nil {
			t.Fatalf("extauthz exited: %v\n%s", err, p.output())
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		r, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: "envoy.service.auth.v3.Authorization"})
		if err != nil {
			return err
		}
		if r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("health %v", r.GetStatus())
		}
		return nil
	})
	return p
}

func (p *extauthzProc) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("extauthz exit code %d after SIGTERM", code)
	}
}

func (p *extauthzProc) newToken(t *testing.T, tenant, user string) string {
	t.Helper()
	var s struct{ Token string }
	if st := callJSON(t, p.api, e2eAdminToken, "POST", "/v1/sessions", `{"tenant_id":"`+tenant+`","user_id":"`+user+`"}`, &s); st != http.StatusCreated {
		t.Fatalf("create session: %d", st)
	}
	return s.Token
}

// denial returns "" if ext_authz allows tok, else the denial's JSON code.
func (p *extauthzProc) denial(t *testing.T, tok string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := check(ctx, p.client, tok)
	if err != nil {
		t.Fatal(err)
	}
	if r.GetStatus().GetCode() == int32(codes.OK) {
		return ""
	}
	var body struct{ Error struct{ Code string } }
	_ = json.Unmarshal([]byte(r.GetDeniedResponse().GetBody()), &body)
	return body.Error.Code
}

// TestExtAuthzKeyRotation runs the ext_authz binary through a key
// rotation: tokens signed by the previous key keep working while it is
// listed as a verification key, and stop once it is retired.
func TestExtAuthzKeyRotation(t *testing.T) {
	dir := t.TempDir()
	for _, id := range []string{"k1", "k2"} {
		kg := start(t, "extauthz", "keygen", "--id", id, "--dir", dir)
		if code := kg.wait(t, 30*time.Second); code != 0 {
			t.Fatalf("keygen %s: exit %d\n%s", id, code, kg.output())
		}
	}
	if fi, err := os.Stat(filepath.Join(dir, "k1.key.pem")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("signing key file: %v %v", fi, err)
	}
	again := start(t, "extauthz", "keygen", "--id", "k1", "--dir", dir)
	if code := again.wait(t, 30*time.Second); code != 1 || !strings.Contains(again.output(), "not overwriting") {
		t.Fatalf("keygen over an existing key: exit %d\n%s", code, again.output())
	}
	store := "redis://" + harness.Redis(t).Addr() + "/5"
	k1, k2 := filepath.Join(dir, "k1.key.pem"), filepath.Join(dir, "k2.key.pem")
	k1pub := filepath.Join(dir, "k1.pub.pem")

	p := startExtAuthz(t, dir, store, k1)
	old := p.newToken(t, "acme", "alice")
	if code := p.denial(t, old); code != "" {
		t.Fatalf("fresh token: %s", code)
	}
	p.stop(t)

	// Rotate: sign with k2, still accept k1.
	p = startExtAuthz(t, dir, store, k2, k1pub)
	next := p.newToken(t, "acme", "bob")
	pubs, err := os.ReadFile(filepath.Join(dir, "k2.pub.pem"))
	if err != nil {
		t.Fatal(err)
	}
	vk, err := token.ParseVerificationKey(pubs)
	if err != nil {
		t.Fatal(err)
	}
	tv, _ := token.NewVerifier(vk)
	if c, err := tv.Verify(next, time.Now()); err != nil || c.KeyID != "k2" {
		t.Fatalf("new token not signed by k2: %+v %v", c, err)
	}
	for name, tok := range map[string]string{"previous key": old, "new key": next} {
		if code := p.denial(t, tok); code != "" {
			t.Errorf("during rotation, %s's token: %s", name, code)
		}
	}
	p.stop(t)

	// Retire k1.
	p = startExtAuthz(t, dir, store, k2)
	if code := p.denial(t, old); code != "token_invalid" {
		t.Errorf("retired key's token: %q, want token_invalid", code)
	}
	if code := p.denial(t, next); code != "" {
		t.Errorf("new key's token after retirement: %s", code)
	}
	p.stop(t)

	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("listen:\n  grpc: 127.0.0.1:1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b := start(t, "extauthz", "--config", bad)
	if code := b.wait(t, 30*time.Second); code != 1 || !strings.Contains(b.output(), "listen.http: required") {
		t.Fatalf("bad config: exit %d\n%s", code, b.output())
	}
}
