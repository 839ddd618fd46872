package xds_test

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/tenantguard/tenantguard/controlplane/budget"
	"github.com/tenantguard/tenantguard/controlplane/xds"
	"github.com/tenantguard/tenantguard/internal/tlsconf"
	"github.com/tenantguard/tenantguard/policy/policypb"
)

// TestBudgetReportNodeBound: the connection budget's report stream,
// served next to ADS behind the same access rules, is bound to the client
// certificate's node as ADS is: a sidecar reports (and gets shares) as
// its own node, and a report naming another node ends the stream with
// PermissionDenied.
func TestBudgetReportNodeBound(t *testing.T) {
	p := newPKI(t)
	srv, err := tlsconf.NewServer(p.server, tlsconf.Options{})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	access := xds.Access{ClientCertificates: true, TrustDomain: "cluster.local"}
	g := grpc.NewServer(grpc.Creds(credentials.NewTLS(srv.TLSConfig("h2"))), grpc.StreamInterceptor(access.StreamInterceptor()))
	b := budget.New(budget.Options{ReclaimAfter: time.Millisecond, Interval: 50 * time.Millisecond})
	b.SetPolicy(&policypb.Policy{Clusters: []*policypb.Cluster{{Name: "main", Default: true,
		Postgres: &policypb.PostgresCluster{MaxServerConnections: 10}}}})
	b.Register(g)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { defer func() { done <- struct{}{} }(); _ = g.Serve(lis) }()
	go func() { defer func() { done <- struct{}{} }(); b.Run(ctx) }()
	defer func() { g.Stop(); cancel(); <-done; <-done }()

	for _, tc := range []struct {
		name, node string
		want       codes.Code
	}{
		{"its own node", "shop/orders-1", codes.OK},
		{"another node", "shop/orders-2", codes.PermissionDenied},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(p.creds(t, "orders-1")))
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer scancel()
			st, err := policypb.OpenBudgetReport(sctx, cc)
			if err != nil {
				t.Fatal(err)
			}
			if err := st.Send(&policypb.LoadReport{NodeId: tc.node, Clusters: []*policypb.ClusterLoad{{Cluster: "main", Share: -1}}}); err != nil {
				t.Fatal(err)
			}
			sh, err := st.Recv()
			if code := status.Code(err); code != tc.want {
				t.Fatalf("first answer: %v, want %v", err, tc.want)
			}
			if tc.want == codes.OK && len(sh.GetClusters()) != 1 {
				t.Fatalf("shares %v", sh)
			}
		})
	}
}
