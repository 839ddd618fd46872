package deploy_test

import (
	"net"
	"os"
	"strconv"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	headermutationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_mutation/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/tenantguard/tenantguard/controlplane/xds"
	"github.com/tenantguard/tenantguard/internal/config"
)

// The typed configurations the bootstrap and the served resources pack
// into Anys; importing them registers them for protojson.
var (
	_ = &upstreamhttpv3.HttpProtocolOptions{}
	_ = &hcmv3.HttpConnectionManager{}
)

type validator interface {
	proto.Message
	ValidateAll() error
}

// unpack decodes an Any and checks its rules (a message's own rules do
// not look inside its Anys).
func unpack[M validator](t *testing.T, a *anypb.Any, m M) M {
	t.Helper()
	if err := a.UnmarshalTo(m); err != nil {
		t.Fatalf("%s: %v", a.GetTypeUrl(), err)
	}
	if err := m.ValidateAll(); err != nil {
		t.Fatalf("%T: %v", m, err)
	}
	return m
}

// bootstrap decodes an Envoy bootstrap (YAML) as Envoy does, strictly,
// and checks it with go-control-plane's ValidateAll.
func bootstrap(t *testing.T, data []byte) *bootstrapv3.Bootstrap {
	t.Helper()
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		t.Fatal(err)
	}
	var b bootstrapv3.Bootstrap
	if err := (protojson.UnmarshalOptions{}).Unmarshal(js, &b); err != nil {
		t.Fatalf("bootstrap: %v", err)
	}
	if err := b.ValidateAll(); err != nil {
		t.Fatalf("bootstrap: %v", err)
	}
	for _, c := range b.GetStaticResources().GetClusters() {
		for _, a := range c.GetTypedExtensionProtocolOptions() {
			unpack(t, a, &upstreamhttpv3.HttpProtocolOptions{})
		}
		if ts := c.GetTransportSocket(); ts != nil {
			upstreamTLS(t, ts)
		}
	}
	return &b
}

// TestEnvoyBootstrap: the edge Envoy takes listeners (with their routes)
// and clusters from the control plane over ADS, and the one static cluster
// is the control plane's xDS Service, over HTTP/2.
func TestEnvoyBootstrap(t *testing.T) {
	data, err := os.ReadFile("envoy/envoy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	b := bootstrap(t, data)
	dr := b.GetDynamicResources()
	ads := dr.GetAdsConfig()
	if ads.GetApiType() != core.ApiConfigSource_GRPC || ads.GetTransportApiVersion() != core.ApiVersion_V3 || len(ads.GetGrpcServices()) != 1 {
		t.Fatalf("ads_config %v", ads)
	}
	for name, cs := range map[string]*core.ConfigSource{"lds": dr.GetLdsConfig(), "cds": dr.GetCdsConfig()} {
		if cs.GetAds() == nil || cs.GetResourceApiVersion() != core.ApiVersion_V3 {
			t.Errorf("%s_config %v: want ADS, V3", name, cs)
		}
	}
	adsCluster := ads.GetGrpcServices()[0].GetEnvoyGrpc().GetClusterName()
	var cp *clusterv3.Cluster
	for _, c := range b.GetStaticResources().GetClusters() {
		if c.GetName() == adsCluster {
			cp = c
		}
	}
	if cp == nil || len(b.GetStaticResources().GetClusters()) != 1 || len(b.GetStaticResources().GetListeners()) != 0 {
		t.Fatalf("static resources %v: want only the control plane's cluster %q", b.GetStaticResources(), adsCluster)
	}
	opts := unpack(t, cp.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"], &upstreamhttpv3.HttpProtocolOptions{})
	if opts.GetExplicitHttpConfig().GetHttp2ProtocolOptions() == nil {
		t.Error("the xDS cluster does not speak HTTP/2 (gRPC)")
	}
	sa := cp.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
	r := render(t, "kubernetes/base")
	svc := get[*corev1.Service](t, r, "Service", "tenantguard-controlplane")
	if want := svc.Name + "." + svc.Namespace + ".svc.cluster.local"; sa.GetAddress() != want || sa.GetPortValue() != uint32(svc.Spec.Ports[0].Port) {
		t.Errorf("xDS address %s:%d, want the Service %s:%d", sa.GetAddress(), sa.GetPortValue(), want, svc.Spec.Ports[0].Port)
	}
	// The bootstrap is what the edge Deployment mounts.
	d := get[*appsv1.Deployment](t, r, "Deployment", "tenantguard-edge")
	cm := get[*corev1.ConfigMap](t, r, "ConfigMap", d.Spec.Template.Spec.Volumes[0].ConfigMap.Name)
	if cm.Data["envoy.yaml"] != string(data) {
		t.Error("the edge Deployment mounts another bootstrap than envoy/envoy.yaml")
	}
}

// TestServedEnvoyResources: the listener, route configuration and
// clusters the control plane serves with the template's envoy section pass
// go-control-plane's ValidateAll (every Any too); they point ext_authz at
// its Service, fail closed, strip the client's tenant headers before the
// check, and listen on the port the edge Deployment exposes.
func TestServedEnvoyResources(t *testing.T) {
	data, err := os.ReadFile("kubernetes/config/controlplane.yaml")
	if err != nil {
		t.Fatal(err)
	}
	policy, err := os.ReadFile("kubernetes/config/policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.LoadControlPlane(withFiles(t, "controlplane.yaml", data, map[string][]byte{"policy.yaml": policy}))
	if err != nil {
		t.Fatal(err)
	}
	split := func(addr string) (string, int) {
		h, p, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatal(err)
		}
		n, _ := strconv.Atoi(p)
		return h, n
	}
	var ec xds.EnvoyConfig
	ec.ListenAddr, ec.ListenPort = split(cfg.Envoy.Listen)
	ec.AppAddr, ec.AppPort = split(cfg.Envoy.App)
	ec.ExtAuthzAddr, ec.ExtAuthzPort = split(cfg.Envoy.ExtAuthz)
	res, err := ec.Resources()
	if err != nil {
		t.Fatal(err)
	}
	r := render(t, "kubernetes/base")
	ea := get[*corev1.Service](t, r, "Service", "tenantguard-extauthz")
	if want := ea.Name + "." + ea.Namespace + ".svc.cluster.local"; ec.ExtAuthzAddr != want || ec.ExtAuthzPort != int(ea.Spec.Ports[0].Port) || ea.Spec.Ports[0].Name != "grpc" {
		t.Errorf("envoy.extauthz %s:%d, want the gRPC port of Service %s", ec.ExtAuthzAddr, ec.ExtAuthzPort, want)
	}
	edge := get[*appsv1.Deployment](t, r, "Deployment", "tenantguard-edge")
	if p := edge.Spec.Template.Spec.Containers[0].Ports[0]; int(p.ContainerPort) != ec.ListenPort {
		t.Errorf("the listener is on %d, the edge Deployment exposes %d", ec.ListenPort, p.ContainerPort)
	}
	for _, l := range res.Listeners {
		ln := l.(*listenerv3.Listener)
		if err := ln.ValidateAll(); err != nil {
			t.Fatal(err)
		}
		hcm := unpack(t, ln.GetFilterChains()[0].GetFilters()[0].GetTypedConfig(), &hcmv3.HttpConnectionManager{})
		f := hcm.GetHttpFilters()
		unpack(t, f[0].GetTypedConfig(), &headermutationv3.HeaderMutation{})
		authz := unpack(t, f[1].GetTypedConfig(), &extauthzv3.ExtAuthz{})
		unpack(t, f[2].GetTypedConfig(), &routerv3.Router{})
		if authz.GetFailureModeAllow() {
			t.Error("ext_authz fails open")
		}
		if hcm.GetRds().GetRouteConfigName() != xds.RouteName {
			t.Error("routes not from RDS")
		}
	}
	for _, rc := range res.Routes {
		if err := rc.(*routev3.RouteConfiguration).ValidateAll(); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range res.Clusters {
		c := c.(*clusterv3.Cluster)
		if err := c.ValidateAll(); err != nil {
			t.Fatal(err)
		}
		for _, a := range c.GetTypedExtensionProtocolOptions() {
			unpack(t, a, &upstreamhttpv3.HttpProtocolOptions{})
		}
	}
}
