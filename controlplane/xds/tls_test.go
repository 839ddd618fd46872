package xds_test

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/tenantguard/tenantguard/controlplane/xds"
	"github.com/tenantguard/tenantguard/internal/bearer"
	"github.com/tenantguard/tenantguard/internal/tlsconf"
	"github.com/tenantguard/tenantguard/policy/xdsclient"
	"github.com/tenantguard/tenantguard/test/harness"
)

const tlsTestToken = "xds-tls-test-token-0123456789"

// pki is a CA, the control plane's certificate and the data planes'.
type pki struct {
	ca     *harness.CA
	dir    string
	server tlsconf.ServerFiles
	// clients by name: cert and key files
	clients map[string][2]string
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	p := &pki{ca: harness.NewCA(t, "xds test CA"), dir: t.TempDir(), clients: map[string][2]string{}}
	cert, key := p.ca.Issue(t, p.dir, "controlplane", harness.ServerSpec("controlplane"))
	p.server = tlsconf.ServerFiles{CertFile: cert, KeyFile: key, ClientCAFile: p.ca.File}
	for name, spec := range map[string]harness.CertSpec{
		"orders-1":       {URIs: []string{"spiffe://cluster.local/ns/shop/pod/orders-1"}},
		"orders-2":       {URIs: []string{"spiffe://cluster.local/ns/shop/pod/orders-2"}},
		"foreign-domain": {URIs: []string{"spiffe://evil.example/ns/shop/pod/orders-1"}},
		"extauthz-1":     {CommonName: "extauthz-1"},
	} {
		c, k := p.ca.Issue(t, p.dir, name, spec)
		p.clients[name] = [2]string{c, k}
	}
	// Signed by another CA: the control plane does not know it.
	other := harness.NewCA(t, "another CA")
	c, k := other.Issue(t, p.dir, "stranger", harness.CertSpec{URIs: []string{"spiffe://cluster.local/ns/shop/pod/orders-1"}})
	p.clients["stranger"] = [2]string{c, k}
	return p
}

// clientFiles are the TLS settings of a data plane presenting the named
// certificate ("" for none).
func (p *pki) clientFiles(name string) tlsconf.ClientFiles {
	f := tlsconf.ClientFiles{CAFile: p.ca.File, ServerName: "localhost"}
	if name != "" {
		f.CertFile, f.KeyFile = p.clients[name][0], p.clients[name][1]
	}
	return f
}

func (p *pki) creds(t *testing.T, name string) credentials.TransportCredentials {
	t.Helper()
	c, err := tlsconf.NewClient(p.clientFiles(name), tlsconf.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return c.TransportCredentials()
}

// startTLSControlPlane serves an xds.Server over TLS with files and access.
func startTLSControlPlane(t *testing.T, files tlsconf.ServerFiles, access xds.Access) *controlPlane {
	t.Helper()
	srv, err := tlsconf.NewServer(files, tlsconf.Options{})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cp := &controlPlane{addr: lis.Addr().String(), reg: prometheus.NewRegistry()}
	cp.Server = xds.New(xds.Options{Logger: testLogger(t, "control plane"), Registerer: cp.reg})
	cp.grpc = grpc.NewServer(append(xds.ServerOptions(),
		grpc.Creds(credentials.NewTLS(srv.TLSConfig("h2"))),
		grpc.StreamInterceptor(access.StreamInterceptor()))...)
	cp.Register(cp.grpc)
	done := make(chan struct{})
	go func() { defer close(done); _ = cp.grpc.Serve(lis) }()
	t.Cleanup(func() { cp.stop(); <-done })
	if err := cp.SetPolicy("1", testPolicy(1)); err != nil {
		t.Fatal(err)
	}
	return cp
}

// adsAttempt opens one ADS stream (delta or not) with creds and token
// ("" for none), asks for the policy as node, and returns the status of
// the first answer, and the connection's TLS state if it was set up.
func adsAttempt(t *testing.T, addr string, creds credentials.TransportCredentials, token, node string, delta bool) (codes.Code, tls.ConnectionState) {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	}
	client := discovery.NewAggregatedDiscoveryServiceClient(cc)
	if delta {
		st, err := client.DeltaAggregatedResources(ctx)
		if err != nil {
			return status.Code(err), tls.ConnectionState{}
		}
		_ = st.Send(&discovery.DeltaDiscoveryRequest{Node: &core.Node{Id: node}, TypeUrl: xds.PolicyTypeURL, ResourceNamesSubscribe: []string{xds.PolicyResourceName}})
		_, err = st.Recv()
		return status.Code(err), tlsState(st.Context())
	}
	st, err := client.StreamAggregatedResources(ctx)
	if err != nil {
		return status.Code(err), tls.ConnectionState{}
	}
	_ = st.Send(&discovery.DiscoveryRequest{Node: &core.Node{Id: node}, TypeUrl: xds.PolicyTypeURL, ResourceNames: []string{xds.PolicyResourceName}})
	_, err = st.Recv()
	return status.Code(err), tlsState(st.Context())
}

// tlsState is the TLS state of a client stream's connection.
func tlsState(ctx context.Context) tls.ConnectionState {
	if p, ok := peer.FromContext(ctx); ok {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok {
			return ti.State
		}
	}
	return tls.ConnectionState{}
}

// TestMutualTLS: over TLS (with the hybrid key exchange), a data plane
// whose client certificate names its node id gets the policy, by SPIFFE
// pod id or by common name; a certificate for another node, of another
// trust domain or of another CA is refused, and so is a stream without
// certificate or token; the token alone still works when client
// certificates are optional; a certificate binds the node id even with
// the token. With client certificates required, the token alone does not
// get past the handshake.
func TestMutualTLS(t *testing.T) {
	p := newPKI(t)
	tok, err := bearer.New(tlsTestToken)
	if err != nil {
		t.Fatal(err)
	}
	logs := &logBuffer{}
	optional := startTLSControlPlane(t, p.server, xds.Access{Token: &tok, ClientCertificates: true, TrustDomain: "cluster.local",
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	requiredFiles := p.server
	requiredFiles.RequireClientCert = true
	required := startTLSControlPlane(t, requiredFiles, xds.Access{ClientCertificates: true, TrustDomain: "cluster.local"})

	for _, pr := range protocols {
		for _, tc := range []struct {
			name        string
			cp          *controlPlane
			cert, token string
			node        string
			want        codes.Code
		}{
			{"pod certificate, its node", optional, "orders-1", "", "shop/orders-1", codes.OK},
			{"pod certificate, another node", optional, "orders-1", "", "shop/orders-2", codes.PermissionDenied},
			{"another pod's certificate", optional, "orders-2", "", "shop/orders-1", codes.PermissionDenied},
			{"another trust domain", optional, "foreign-domain", "", "shop/orders-1", codes.PermissionDenied},
			{"common name", optional, "extauthz-1", "", "extauthz-1", codes.OK},
			{"common name, another node", optional, "extauthz-1", "", "extauthz-2", codes.PermissionDenied},
			{"token, no certificate", optional, "", tlsTestToken, "anything", codes.OK},
			{"certificate and token, another node", optional, "orders-1", tlsTestToken, "shop/orders-2", codes.PermissionDenied},
			{"wrong token, no certificate", optional, "", "not-the-xds-token-0123", "shop/orders-1", codes.Unauthenticated},
			{"neither", optional, "", "", "shop/orders-1", codes.Unauthenticated},
			{"another CA's certificate", optional, "stranger", "", "shop/orders-1", codes.Unavailable},
			{"required: pod certificate", required, "orders-1", "", "shop/orders-1", codes.OK},
			{"required: token, no certificate", required, "", tlsTestToken, "shop/orders-1", codes.Unavailable},
		} {
			t.Run(pr.name+"/"+tc.name, func(t *testing.T) {
				code, st := adsAttempt(t, tc.cp.addr, p.creds(t, tc.cert), tc.token, tc.node, pr.delta)
				if code != tc.want {
					t.Fatalf("status %v, want %v", code, tc.want)
				}
				if code == codes.OK && (st.CurveID != tls.X25519MLKEM768 || st.Version != tls.VersionTLS13) {
					t.Fatalf("group %s, version %s: want X25519MLKEM768 over TLS 1.3", st.CurveID, tls.VersionName(st.Version))
				}
			})
		}
	}
	if !strings.Contains(logs.String(), `refused a node id its client certificate does not name`) ||
		!strings.Contains(logs.String(), `node=shop/orders-2`) {
		t.Errorf("refusals not logged:\n%s", logs.String())
	}

	// The data plane itself, with its certificate: applies and ACKs.
	for _, pr := range protocols {
		t.Run(pr.name+"/xdsclient", func(t *testing.T) {
			dp := startDataPlaneWith(t, optional.addr, "shop/orders-1", pr.delta, filepath.Join(t.TempDir(), "policy.json"), func(o *xdsclient.Options) {
				o.Credentials = p.creds(t, "orders-1")
			})
			dp.waitApplied(t, "1")
			optional.waitAcked(t, "shop/orders-1", "1")
		})
	}
}

// TestNodeIDChangeRefused: a stream whose first request named the
// certificate's node cannot name another later.
func TestNodeIDChangeRefused(t *testing.T) {
	p := newPKI(t)
	cp := startTLSControlPlane(t, p.server, xds.Access{ClientCertificates: true})
	cc, err := grpc.NewClient(cp.addr, grpc.WithTransportCredentials(p.creds(t, "orders-1")))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := discovery.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	req := &discovery.DiscoveryRequest{Node: &core.Node{Id: "shop/orders-1"}, TypeUrl: xds.PolicyTypeURL, ResourceNames: []string{xds.PolicyResourceName}}
	if err := st.Send(req); err != nil {
		t.Fatal(err)
	}
	resp, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	// An ACK without a node is fine; one naming another node is not.
	if err := st.Send(&discovery.DiscoveryRequest{TypeUrl: xds.PolicyTypeURL, ResourceNames: req.ResourceNames, VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()}); err != nil {
		t.Fatal(err)
	}
	cp.waitAcked(t, "shop/orders-1", "1")
	_ = st.Send(&discovery.DiscoveryRequest{Node: &core.Node{Id: "shop/orders-2"}, TypeUrl: xds.PolicyTypeURL, ResourceNames: req.ResourceNames, VersionInfo: "1", ResponseNonce: resp.GetNonce()})
	if _, err := st.Recv(); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a request naming another node: %v, want PermissionDenied", err)
	}
}
