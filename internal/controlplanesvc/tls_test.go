package controlplanesvc

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

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/tenantguard/tenantguard/controlplane/xds"
	"github.com/tenantguard/tenantguard/internal/config"
	"github.com/tenantguard/tenantguard/internal/tlsconf"
	"github.com/tenantguard/tenantguard/test/harness"
)

// TestListenersOverTLS: the control plane's xDS listener with client
// certificates required serves the policy to the node its certificate
// names, over X25519MLKEM768, refuses another node id (PermissionDenied)
// and a client without a certificate (at the handshake); the admin API
// serves HTTPS.
func TestListenersOverTLS(t *testing.T) {
	pg := harness.Postgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db := fmt.Sprintf("cp_tls_%d", os.Getpid())
	if err := pg.CreateDatabase(ctx, db); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pg.Exec(context.Background(), "postgres", "DROP DATABASE "+db+" WITH (FORCE)") })
	ca := harness.NewCA(t, "control plane CA")
	dir := t.TempDir()
	cert, key := ca.Issue(t, dir, "controlplane", harness.ServerSpec("controlplane"))
	podCert, podKey := ca.Issue(t, dir, "pod", harness.CertSpec{URIs: []string{"spiffe://cluster.local/ns/shop/pod/orders-1"}})
	seed := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(seed, []byte(fmt.Sprintf("name: default\ntenants:\n  - id: acme\n    credentials: [%q]\n", scramAcme)), 0o600); err != nil {
		t.Fatal(err)
	}
	yml := fmt.Sprintf(`listen: {xds: 127.0.0.1:0, admin: 127.0.0.1:0}
tls:
  xds: {cert_file: %q, key_file: %q, client_ca_file: %q, require_client_cert: true, trust_domain: cluster.local}
  admin: {cert_file: %q, key_file: %q}
database: %q
admin_token: an-admin-token-of-some-length
seed: %q
`, cert, key, ca.File, cert, key, pg.AdminURL(db), seed)
	cfg, err := config.ParseControlPlane(filepath.Join(dir, "controlplane.yaml"), []byte(yml))
	if err != nil {
		t.Fatal(err)
	}
	s, err := Start(ctx, cfg, slog.New(slog.DiscardHandler))
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

	adminClient := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}, ForceAttemptHTTP2: true}}
	defer adminClient.CloseIdleConnections()
	harness.Eventually(t, 30*time.Second, func() error {
		resp, err := adminClient.Get("https://" + s.AdminAddr() + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.TLS.CurveID != tls.X25519MLKEM768 {
			return fmt.Errorf("readyz %d over %s", resp.StatusCode, resp.TLS.CurveID)
		}
		return nil
	})

	ask := func(cert, key, node string) (codes.Code, tls.ConnectionState) {
		cl, err := tlsconf.NewClient(tlsconf.ClientFiles{CAFile: ca.File, CertFile: cert, KeyFile: key, ServerName: "localhost"}, tlsconf.Options{})
		if err != nil {
			t.Fatal(err)
		}
		cc, err := grpc.NewClient(s.XDSAddr(), grpc.WithTransportCredentials(cl.TransportCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		st, err := discovery.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
		if err != nil {
			return status.Code(err), tls.ConnectionState{}
		}
		_ = st.Send(&discovery.DiscoveryRequest{Node: &core.Node{Id: node}, TypeUrl: xds.PolicyTypeURL, ResourceNames: []string{xds.PolicyResourceName}})
		_, err = st.Recv()
		var state tls.ConnectionState
		if p, ok := peer.FromContext(st.Context()); ok {
			state = p.AuthInfo.(credentials.TLSInfo).State
		}
		return status.Code(err), state
	}
	if code, st := ask(podCert, podKey, "shop/orders-1"); code != codes.OK || st.CurveID != tls.X25519MLKEM768 {
		t.Fatalf("the pod's own node: %v over %s", code, st.CurveID)
	}
	if code, _ := ask(podCert, podKey, "shop/orders-2"); code != codes.PermissionDenied {
		t.Fatalf("another node id: %v, want PermissionDenied", code)
	}
	if code, _ := ask("", "", "shop/orders-1"); code != codes.Unavailable {
		t.Fatalf("no client certificate: %v, want Unavailable (refused at the handshake)", code)
	}
}
