package sidecar

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/tenantguard/tenantguard/controlplane/budget"
	"github.com/tenantguard/tenantguard/controlplane/xds"
	"github.com/tenantguard/tenantguard/internal/config"
	"github.com/tenantguard/tenantguard/internal/tlsconf"
	"github.com/tenantguard/tenantguard/policy/policypb"
	"github.com/tenantguard/tenantguard/test/harness"
)

// TestBudgetOverMutualTLS: a sidecar whose control plane requires client
// certificates reports its load over the same TLS as its policy stream,
// with its pod's certificate, and gets its share of a budgeted cluster.
func TestBudgetOverMutualTLS(t *testing.T) {
	pg := harness.Postgres(t)
	dir := t.TempDir()
	ca := harness.NewCA(t, "budget test CA")
	cpCert, cpKey := ca.Issue(t, dir, "controlplane", harness.ServerSpec("controlplane"))
	scCert, scKey := ca.Issue(t, dir, "orders-1", harness.CertSpec{URIs: []string{"spiffe://cluster.local/ns/shop/pod/orders-1"}})

	srv, err := tlsconf.NewServer(tlsconf.ServerFiles{CertFile: cpCert, KeyFile: cpKey, ClientCAFile: ca.File, RequireClientCert: true}, tlsconf.Options{})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	access := xds.Access{ClientCertificates: true, TrustDomain: "cluster.local"}
	g := grpc.NewServer(grpc.Creds(credentials.NewTLS(srv.TLSConfig("h2"))), grpc.StreamInterceptor(access.StreamInterceptor()))
	b := budget.New(budget.Options{ReclaimAfter: 10 * time.Millisecond, Interval: 50 * time.Millisecond})
	b.SetPolicy(&policypb.Policy{Clusters: []*policypb.Cluster{{Name: "main", Default: true,
		Postgres: &policypb.PostgresCluster{MaxServerConnections: 7}}}})
	b.Register(g)
	cpCtx, cpCancel := context.WithCancel(context.Background())
	cpDone := make(chan struct{}, 2)
	go func() { defer func() { cpDone <- struct{}{} }(); _ = g.Serve(lis) }()
	go func() { defer func() { cpDone <- struct{}{} }(); b.Run(cpCtx) }()
	t.Cleanup(func() { g.Stop(); cpCancel(); <-cpDone; <-cpDone })

	t.Setenv("POD_NAMESPACE", "shop")
	t.Setenv("POD_NAME", "orders-1")
	yml := fmt.Sprintf(`listen:
  postgres: 127.0.0.1:0
postgres:
  databases:
    - name: postgres
      url: %q
clusters:
  - name: main
    default: true
    postgres: {max_server_connections: 7}
tenants:
  - id: acme
    passwords: [%q]
controlplane:
  address: %q
  node_id: ${POD_NAMESPACE}/${POD_NAME}
  tls: {ca_file: %q, cert_file: %q, key_file: %q, server_name: localhost}
`, pg.AdminURL("postgres"), acmeSecret, lis.Addr().String(), ca.File, scCert, scKey)
	cfg, err := config.Parse("sidecar.yaml", []byte(yml))
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
	// Alone in the fleet, the sidecar gets the whole budget.
	harness.Eventually(t, 30*time.Second, func() error {
		for _, l := range sc.pg.ClusterLoads() {
			if l.Cluster == "main" && l.Share == 7 {
				return nil
			}
		}
		return fmt.Errorf("loads %+v, control plane's shares %+v", sc.pg.ClusterLoads(), b.Shares())
	})
}
