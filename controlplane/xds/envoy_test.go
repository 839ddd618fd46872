package xds_test

import (
	"net"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	headermutationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_mutation/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/tenantguard/tenantguard/controlplane/xds"
	"github.com/tenantguard/tenantguard/internal/bearer"
)

var envoyConfig = &xds.EnvoyConfig{
	ListenAddr: "0.0.0.0", ListenPort: 10000,
	AppAddr: "127.0.0.1", AppPort: 8080,
	ExtAuthzAddr: "extauthz.tenantguard.svc", ExtAuthzPort: 9001,
}

// validator is every generated Envoy message.
type validator interface{ ValidateAll() error }

// unpack decodes a typed_config and checks its validation rules.
func unpack[M interface {
	proto.Message
	validator
}](t *testing.T, a *anypb.Any, m M) M {
	t.Helper()
	if err := a.UnmarshalTo(m); err != nil {
		t.Fatalf("typed_config %s: %v", a.GetTypeUrl(), err)
	}
	if err := m.ValidateAll(); err != nil {
		t.Fatalf("%T does not validate: %v", m, err)
	}
	return m
}

// TestEnvoyResources: the Listener, RouteConfiguration and Clusters pass
// their protoc-gen-validate rules, the typed configurations inside them
// too, and say what they should: the client's identity headers removed,
// then ext_authz (gRPC, V3, fail closed, no body, the token and
// x-request-id), then the router; routes over RDS on the ADS stream,
// everything routed to app; ext_authz over HTTP/2.
func TestEnvoyResources(t *testing.T) {
	res, err := envoyConfig.Resources()
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Listeners) != 1 || len(res.Routes) != 1 || len(res.Clusters) != 2 {
		t.Fatalf("%d listeners, %d routes and %d clusters, want 1, 1 and 2", len(res.Listeners), len(res.Routes), len(res.Clusters))
	}
	ln := res.Listeners[0].(*listenerv3.Listener)
	if err := ln.ValidateAll(); err != nil {
		t.Fatalf("listener: %v", err)
	}
	if sa := ln.GetAddress().GetSocketAddress(); sa.GetAddress() != "0.0.0.0" || sa.GetPortValue() != 10000 {
		t.Errorf("listener address %v", sa)
	}
	filters := ln.GetFilterChains()[0].GetFilters()
	if len(filters) != 1 || filters[0].GetName() != "envoy.filters.network.http_connection_manager" {
		t.Fatalf("network filters %v", filters)
	}
	hcm := unpack(t, filters[0].GetTypedConfig(), &hcmv3.HttpConnectionManager{})
	hf := hcm.GetHttpFilters()
	if len(hf) != 3 || hf[0].GetName() != "envoy.filters.http.header_mutation" || hf[1].GetName() != "envoy.filters.http.ext_authz" || hf[2].GetName() != "envoy.filters.http.router" {
		t.Fatalf("http filters %v, want header_mutation, ext_authz, router", hf)
	}
	strip := unpack(t, hf[0].GetTypedConfig(), &headermutationv3.HeaderMutation{})
	var removed []string
	for _, m := range strip.GetMutations().GetRequestMutations() {
		km := m.GetRemoveOnMatch().GetKeyMatcher()
		if km == nil || !km.GetIgnoreCase() {
			t.Fatalf("request mutation %v: want a case-insensitive removal", m)
		}
		removed = append(removed, km.GetPrefix()+"*"+km.GetExact())
	}
	if strings.Join(removed, ",") != "x-tenant-*,*x-user-id,*x-session-id" {
		t.Errorf("removed before the check: %q", removed)
	}
	if len(strip.GetMutations().GetResponseMutations()) != 0 {
		t.Error("response headers mutated")
	}
	authz := unpack(t, hf[1].GetTypedConfig(), &extauthzv3.ExtAuthz{})
	unpack(t, hf[2].GetTypedConfig(), &routerv3.Router{})
	if got := authz.GetGrpcService().GetEnvoyGrpc().GetClusterName(); got != "tenantguard_extauthz" {
		t.Errorf("ext_authz gRPC cluster %q", got)
	}
	if authz.GetTransportApiVersion() != core.ApiVersion_V3 {
		t.Errorf("ext_authz transport_api_version %v", authz.GetTransportApiVersion())
	}
	if authz.GetFailureModeAllow() {
		t.Error("ext_authz fails open")
	}
	if authz.GetWithRequestBody() != nil {
		t.Error("ext_authz buffers request bodies")
	}
	var allowed []string
	for _, m := range authz.GetAllowedHeaders().GetPatterns() {
		allowed = append(allowed, m.GetExact())
	}
	if len(allowed) != 2 || allowed[0] != "authorization" || allowed[1] != "x-request-id" {
		t.Errorf("ext_authz allowed headers %q", allowed)
	}
	rds := hcm.GetRds()
	if rds.GetRouteConfigName() != xds.RouteName || rds.GetConfigSource().GetAds() == nil || rds.GetConfigSource().GetResourceApiVersion() != core.ApiVersion_V3 {
		t.Fatalf("route specifier %v, want RDS over ADS", hcm.GetRouteSpecifier())
	}
	rc := res.Routes[0].(*routev3.RouteConfiguration)
	if err := rc.ValidateAll(); err != nil {
		t.Fatal(err)
	}
	vh := rc.GetVirtualHosts()
	if rc.GetName() != xds.RouteName || len(vh) != 1 || len(vh[0].GetRoutes()) != 1 || vh[0].GetRoutes()[0].GetMatch().GetPrefix() != "/" ||
		vh[0].GetRoutes()[0].GetRoute().GetCluster() != "app" || vh[0].GetDomains()[0] != "*" {
		t.Errorf("route configuration %v, want everything to app", rc)
	}
	if len(rc.GetRequestHeadersToAdd()) != 0 || len(rc.GetRequestHeadersToRemove()) != 0 {
		t.Error("the route changes request headers: the verdict's must reach the app as ext_authz set them")
	}

	byName := map[string]*clusterv3.Cluster{}
	for _, r := range res.Clusters {
		c := r.(*clusterv3.Cluster)
		if err := c.ValidateAll(); err != nil {
			t.Fatalf("cluster %s: %v", c.GetName(), err)
		}
		byName[c.GetName()] = c
	}
	app, ea := byName["app"], byName["tenantguard_extauthz"]
	if app == nil || ea == nil {
		t.Fatalf("clusters %v", byName)
	}
	if app.GetType() != clusterv3.Cluster_STATIC || ea.GetType() != clusterv3.Cluster_STRICT_DNS {
		t.Errorf("cluster types: app %v (an IP), ext_authz %v (a name)", app.GetType(), ea.GetType())
	}
	sa := ea.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
	if sa.GetAddress() != "extauthz.tenantguard.svc" || sa.GetPortValue() != 9001 {
		t.Errorf("ext_authz endpoint %v", sa)
	}
	opts := unpack(t, ea.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"], &upstreamhttpv3.HttpProtocolOptions{})
	if opts.GetExplicitHttpConfig().GetHttp2ProtocolOptions() == nil {
		t.Error("the ext_authz cluster does not speak HTTP/2")
	}
	if len(app.GetTypedExtensionProtocolOptions()) != 0 {
		t.Error("the app cluster has protocol options")
	}
}

func TestEnvoyConfigRefuses(t *testing.T) {
	cases := []struct {
		name   string
		change func(c *xds.EnvoyConfig)
		want   string
	}{
		{"listen address a name", func(c *xds.EnvoyConfig) { c.ListenAddr = "localhost" }, "not an IP address"},
		{"listen port 0", func(c *xds.EnvoyConfig) { c.ListenPort = 0 }, "listen port 0"},
		{"app port too big", func(c *xds.EnvoyConfig) { c.AppPort = 70000 }, "app port 70000"},
		{"no app address", func(c *xds.EnvoyConfig) { c.AppAddr = "" }, "app address is empty"},
		{"no ext_authz address", func(c *xds.EnvoyConfig) { c.ExtAuthzAddr = "" }, "ext_authz address is empty"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := *envoyConfig
			tc.change(&c)
			if _, err := c.Resources(); err == nil || !contains(err.Error(), tc.want) {
				t.Fatalf("Resources = %v, want an error with %q", err, tc.want)
			}
			s := xds.New(xds.Options{})
			defer s.Close()
			if err := s.SetEnvoy(&c); err == nil {
				t.Fatal("SetEnvoy accepted it")
			}
		})
	}
}

// TestEnvoyOverADS: an Envoy-like SotW client gets the Listener and the
// Clusters, whose version does not change when the policy does.
func TestEnvoyOverADS(t *testing.T) {
	cp := startControlPlane(t, "")
	if err := cp.SetEnvoy(envoyConfig); err != nil {
		t.Fatal(err)
	}
	fetch := func(typeURL string, names ...string) *discovery.DiscoveryResponse {
		t.Helper()
		ads := rawADS(t, cp.addr)
		stream, err := ads.StreamAggregatedResources(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&discovery.DiscoveryRequest{Node: &core.Node{Id: "envoy-1"}, TypeUrl: typeURL, ResourceNames: names}); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	ls, cs := fetch(resource.ListenerType), fetch(resource.ClusterType)
	if len(ls.GetResources()) != 1 || len(cs.GetResources()) != 2 {
		t.Fatalf("got %d listeners and %d clusters", len(ls.GetResources()), len(cs.GetResources()))
	}
	// Envoy asks for the route configuration its listener names.
	rs := fetch(resource.RouteType, xds.RouteName)
	var rc routev3.RouteConfiguration
	if len(rs.GetResources()) != 1 || rs.GetResources()[0].UnmarshalTo(&rc) != nil || rc.GetName() != xds.RouteName {
		t.Fatalf("routes %v", rs.GetResources())
	}
	var ln listenerv3.Listener
	if err := ls.GetResources()[0].UnmarshalTo(&ln); err != nil || ln.GetName() != xds.ListenerName {
		t.Fatalf("listener %v, %v", &ln, err)
	}
	if err := cp.SetPolicy("1", testPolicy(1)); err != nil {
		t.Fatal(err)
	}
	if v := fetch(resource.ListenerType).GetVersionInfo(); v != ls.GetVersionInfo() {
		t.Errorf("listener version changed from %q to %q with the policy", ls.GetVersionInfo(), v)
	}
	if err := cp.SetEnvoy(nil); err != nil {
		t.Fatal(err)
	}
}

// rawADS is a plain ADS client of addr, closed when the test ends.
func rawADS(t *testing.T, addr string) discovery.AggregatedDiscoveryServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return discovery.NewAggregatedDiscoveryServiceClient(conn)
}

// TestEnvoyWithoutToken: with a token required, a stream without it still
// gets Envoy's listeners, routes and clusters, but asking for the policy
// ends it with Unauthenticated; with the token the policy is served.
func TestEnvoyWithoutToken(t *testing.T) {
	tok, err := bearer.New("envoy-test-xds-token-0123456789")
	if err != nil {
		t.Fatal(err)
	}
	srv := xds.New(xds.Options{})
	defer srv.Close()
	if err := srv.SetEnvoy(envoyConfig); err != nil {
		t.Fatal(err)
	}
	if err := srv.SetPolicy("1", testPolicy(1)); err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(append(xds.ServerOptions(), grpc.StreamInterceptor(xds.RequireToken(tok, xds.EnvoyTypeURLs...)))...)
	srv.Register(g)
	done := make(chan struct{})
	go func() { defer close(done); _ = g.Serve(lis) }()
	defer func() { g.Stop(); <-done }()

	ask := func(token, typeURL string, names ...string) (*discovery.DiscoveryResponse, error) {
		ctx := t.Context()
		if token != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
		}
		stream, err := rawADS(t, lis.Addr().String()).StreamAggregatedResources(ctx)
		if err != nil {
			return nil, err
		}
		_ = stream.Send(&discovery.DiscoveryRequest{Node: &core.Node{Id: "edge-envoy"}, TypeUrl: typeURL, ResourceNames: names})
		return stream.Recv()
	}
	for _, tc := range []struct {
		typeURL string
		names   []string
	}{{resource.ListenerType, nil}, {resource.RouteType, []string{xds.RouteName}}, {resource.ClusterType, nil}} {
		if resp, err := ask("", tc.typeURL, tc.names...); err != nil || len(resp.GetResources()) == 0 {
			t.Errorf("%s without the token: %v, %d resources", tc.typeURL, err, len(resp.GetResources()))
		}
	}
	if _, err := ask("", xds.PolicyTypeURL, xds.PolicyResourceName); status.Code(err) != codes.Unauthenticated {
		t.Errorf("the policy without the token: %v, want Unauthenticated", err)
	}
	if _, err := ask("not-the-token-0123456789", xds.PolicyTypeURL, xds.PolicyResourceName); status.Code(err) != codes.Unauthenticated {
		t.Errorf("the policy with a wrong token: %v, want Unauthenticated", err)
	}
	if resp, err := ask("envoy-test-xds-token-0123456789", xds.PolicyTypeURL, xds.PolicyResourceName); err != nil || len(resp.GetResources()) != 1 {
		t.Errorf("the policy with the token: %v", err)
	}
}
