package extauthzsvc

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"

	"github.com/tenantguard/tenantguard/extauthz/token"
	"github.com/tenantguard/tenantguard/internal/config"
	"github.com/tenantguard/tenantguard/internal/tlsconf"
	"github.com/tenantguard/tenantguard/test/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }

// TestListenersOverTLS: ext_authz's gRPC listener (what Envoy calls) and
// its HTTP listener (the session API) serve TLS and settle on
// X25519MLKEM768; the gRPC listener verifies a client certificate when
// given one, the HTTP listener requires one here.
func TestListenersOverTLS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rd := harness.Redis(t)
	ca := harness.NewCA(t, "ext_authz CA")
	dir := t.TempDir()
	ca.Issue(t, dir, "server", harness.ServerSpec("extauthz"))
	clientCert, clientKey := ca.Issue(t, dir, "envoy", harness.CertSpec{CommonName: "edge-envoy"})
	k, err := token.GenerateKey("k1")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "k1.key.pem"), k.MarshalPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), mustRead(t, ca.File), 0o600); err != nil {
		t.Fatal(err)
	}
	yml := fmt.Sprintf(`listen: {grpc: 127.0.0.1:0, http: 127.0.0.1:0}
tls:
  grpc: {cert_file: server.crt, key_file: server.key, client_ca_file: ca.pem}
  http: {cert_file: server.crt, key_file: server.key, client_ca_file: ca.pem, require_client_cert: true}
admin_token: an-admin-token-of-some-length
sessions: {store: "redis://%s/1", signing_key: k1.key.pem}
tenants: [acme]
`, rd.Addr())
	cfg, err := config.ParseExtAuthz(filepath.Join(dir, "extauthz.yaml"), []byte(yml))
	if err != nil {
		t.Fatal(err)
	}
	s, err := Start(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(runCtx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}()

	for _, tc := range []struct {
		name       string
		cert, key  string
		verifiedCN string
	}{{"no client certificate", "", "", ""}, {"a client certificate", clientCert, clientKey, "edge-envoy"}} {
		t.Run("grpc/"+tc.name, func(t *testing.T) {
			cl, err := tlsconf.NewClient(tlsconf.ClientFiles{CAFile: ca.File, CertFile: tc.cert, KeyFile: tc.key, ServerName: "localhost"}, tlsconf.Options{})
			if err != nil {
				t.Fatal(err)
			}
			cc, err := grpc.NewClient(s.GRPCAddr(), grpc.WithTransportCredentials(cl.TransportCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			var p peer.Peer
			if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p)); err != nil {
				t.Fatal(err)
			}
			st := p.AuthInfo.(credentials.TLSInfo).State
			if st.CurveID != tls.X25519MLKEM768 || st.Version != tls.VersionTLS13 {
				t.Fatalf("negotiated %s over %s", st.CurveID, tls.VersionName(st.Version))
			}
		})
	}

	get := func(cert, key string) (*http.Response, error) {
		c, err := tlsconf.NewClient(tlsconf.ClientFiles{CAFile: ca.File, CertFile: cert, KeyFile: key}, tlsconf.Options{})
		if err != nil {
			t.Fatal(err)
		}
		client := &http.Client{Transport: &http.Transport{TLSClientConfig: c.TLSConfig(), ForceAttemptHTTP2: true}, Timeout: 10 * time.Second}
		defer client.CloseIdleConnections()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+s.HTTPAddr()+"/healthz", nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		return resp, err
	}
	resp, err := get(clientCert, clientKey)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.TLS.CurveID != tls.X25519MLKEM768 || resp.ProtoMajor != 2 {
		t.Fatalf("https: %d, %s, %s", resp.StatusCode, resp.TLS.CurveID, resp.Proto)
	}
	if _, err := get("", ""); err == nil {
		t.Fatal("the session API required a client certificate and answered without one")
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
