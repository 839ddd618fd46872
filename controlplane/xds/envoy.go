package xds

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	mutationrulesv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	headermutationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_mutation/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Names of the Envoy resources SetEnvoy serves.
const (
	// ListenerName is the listener in front of the application.
	ListenerName = "tenantguard_ingress"
	// RouteName is the listener's route configuration, served over RDS.
	RouteName = "tenantguard_app"
	// AppCluster is the application every request is routed to.
	AppCluster = "app"
	// ExtAuthzCluster is tenantguard's ext_authz service (gRPC, HTTP/2).
	ExtAuthzCluster = "tenantguard_extauthz"
	// ExtAuthzFilter is the name of Envoy's ext_authz HTTP filter.
	ExtAuthzFilter = "envoy.filters.http.ext_authz"
	// HeaderMutationFilter is the name of Envoy's header_mutation HTTP
	// filter, which strips the client's identity headers before the check.
	HeaderMutationFilter = "envoy.filters.http.header_mutation"
)

// Identity headers: ext_authz's verdict sets them for the app; a client
// that sends them is lying, so they are removed before the check. The
// prefix covers tenant headers a later verdict may add.
const (
	TenantHeaderPrefix = "x-tenant-"
	UserHeader         = "x-user-id"
	SessionHeader      = "x-session-id"
)

// EnvoyTypeURLs are the resource types SetEnvoy serves, which RequireToken
// may let Envoy read without the token.
var EnvoyTypeURLs = []string{resource.ListenerType, resource.RouteType, resource.ClusterType}

// extAuthzHeaders are the client request headers sent to ext_authz: the
// token, and the request id so that its logs can be joined with Envoy's.
var extAuthzHeaders = []string{"authorization", "x-request-id"}

// Timeouts of the generated configuration.
const (
	connectTimeout  = time.Second
	extAuthzTimeout = 250 * time.Millisecond
)

// EnvoyConfig places Envoy in front of an application with tenantguard's
// ext_authz filter: Envoy listens on ListenAddr:ListenPort, asks ext_authz
// at ExtAuthzAddr:ExtAuthzPort about every request and forwards the
// accepted ones to the application at AppAddr:AppPort.
type EnvoyConfig struct {
	// ListenAddr is the IP address Envoy's listener binds, e.g. "0.0.0.0".
	ListenAddr string
	ListenPort int
	// AppAddr is the application's IP address or DNS name.
	AppAddr string
	AppPort int
	// ExtAuthzAddr is the ext_authz service's IP address or DNS name.
	ExtAuthzAddr string
	ExtAuthzPort int
	// ExtAuthzTLS, if set, makes Envoy call ext_authz over TLS.
	ExtAuthzTLS *UpstreamTLS
}

// UpstreamTLS is how Envoy connects to an upstream over TLS. The files
// are paths on Envoy's file system, which Envoy reads, not the control
// plane.
type UpstreamTLS struct {
	// CAFile verifies the upstream's certificate.
	CAFile string
	// CertFile and KeyFile, if set, are Envoy's client certificate.
	CertFile, KeyFile string
	// ServerName is sent as SNI and must be a DNS name of the upstream's
	// certificate.
	ServerName string
}

// EnvoyCurves are the key exchanges Envoy offers on the TLS connections
// this configuration makes, the hybrid post-quantum one first (BoringSSL's
// names; Envoy's default is X25519 and P-256 only).
var EnvoyCurves = []string{"X25519MLKEM768", "X25519", "P-256"}

// Validate reports the first field of c that Envoy would refuse.
func (c *EnvoyConfig) Validate() error {
	if _, err := netip.ParseAddr(c.ListenAddr); err != nil {
		return fmt.Errorf("envoy listen address %q: not an IP address", c.ListenAddr)
	}
	for _, p := range []struct {
		name string
		port int
	}{{"listen", c.ListenPort}, {"app", c.AppPort}, {"ext_authz", c.ExtAuthzPort}} {
		if p.port < 1 || p.port > 65535 {
			return fmt.Errorf("envoy %s port %d: not in 1-65535", p.name, p.port)
		}
	}
	if c.AppAddr == "" {
		return errors.New("envoy app address is empty")
	}
	if c.ExtAuthzAddr == "" {
		return errors.New("envoy ext_authz address is empty")
	}
	if t := c.ExtAuthzTLS; t != nil {
		switch {
		case t.CAFile == "":
			return errors.New("envoy ext_authz TLS: the CA file is empty")
		case t.ServerName == "":
			return errors.New("envoy ext_authz TLS: the server name is empty")
		case (t.CertFile == "") != (t.KeyFile == ""):
			return errors.New("envoy ext_authz TLS: give the certificate and key files together")
		}
	}
	return nil
}

// EnvoyResources are the resources of an EnvoyConfig, by type.
type EnvoyResources struct {
	Listeners, Routes, Clusters []types.ResourceWithName
}

// Resources returns the Listener, its RouteConfiguration (served over RDS
// on the same ADS stream) and the two Clusters of c, each checked with its
// protoc-gen-validate rules (the typed configurations inside them too).
//
// The listener's HTTP filters run in order: header_mutation removes the
// client's x-tenant-*, x-user-id and x-session-id headers; ext_authz asks
// tenantguard (failing closed: no answer, no access) and on OK adds its
// verdict's x-tenant-id, x-user-id and x-session-id to the request; the
// router sends it to the app.
func (c *EnvoyConfig) Resources() (*EnvoyResources, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	var packErr error
	pack := func(m proto.Message) *anypb.Any {
		a, err := anypb.New(m)
		if err != nil && packErr == nil {
			packErr = fmt.Errorf("pack %T: %w", m, err)
		}
		return a
	}
	authz := &extauthzv3.ExtAuthz{
		Services: &extauthzv3.ExtAuthz_GrpcService{GrpcService: &core.GrpcService{
			TargetSpecifier: &core.GrpcService_EnvoyGrpc_{EnvoyGrpc: &core.GrpcService_EnvoyGrpc{ClusterName: ExtAuthzCluster}},
			Timeout:         durationpb.New(extAuthzTimeout),
		}},
		TransportApiVersion: core.ApiVersion_V3,
		// Fail closed: no answer from ext_authz is no access.
		FailureModeAllow: false,
		StatusOnError:    &typev3.HttpStatus{Code: typev3.StatusCode_ServiceUnavailable},
		AllowedHeaders:   exactMatchers(extAuthzHeaders...),
		// WithRequestBody unset: ext_authz decides on headers alone, and
		// bodies are not buffered.
	}
	strip := &headermutationv3.HeaderMutation{Mutations: &headermutationv3.Mutations{
		RequestMutations: []*mutationrulesv3.HeaderMutation{
			removeHeaders(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: TenantHeaderPrefix}, IgnoreCase: true}),
			removeHeaders(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: UserHeader}, IgnoreCase: true}),
			removeHeaders(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: SessionHeader}, IgnoreCase: true}),
		},
	}}
	router := &routerv3.Router{}
	route := &routev3.RouteConfiguration{
		Name: RouteName,
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    AppCluster,
			Domains: []string{"*"},
			Routes: []*routev3.Route{{
				Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{
					ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: AppCluster},
				}},
			}},
		}},
	}
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: ListenerName,
		CodecType:  hcmv3.HttpConnectionManager_AUTO,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource: &core.ConfigSource{
				ResourceApiVersion:    core.ApiVersion_V3,
				ConfigSourceSpecifier: &core.ConfigSource_Ads{Ads: &core.AggregatedConfigSource{}},
			},
			RouteConfigName: RouteName,
		}},
		HttpFilters: []*hcmv3.HttpFilter{
			{Name: HeaderMutationFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: pack(strip)}},
			{Name: ExtAuthzFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: pack(authz)}},
			{Name: wellknown.Router, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: pack(router)}},
		},
	}
	ln := &listenerv3.Listener{
		Name:    ListenerName,
		Address: socketAddress(c.ListenAddr, c.ListenPort),
		FilterChains: []*listenerv3.FilterChain{{
			Filters: []*listenerv3.Filter{{
				Name:       wellknown.HTTPConnectionManager,
				ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: pack(hcm)},
			}},
		}},
	}
	h2 := &upstreamhttpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{
			ExplicitHttpConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
					Http2ProtocolOptions: &core.Http2ProtocolOptions{},
				},
			},
		},
	}
	app := staticCluster(AppCluster, c.AppAddr, c.AppPort)
	ea := staticCluster(ExtAuthzCluster, c.ExtAuthzAddr, c.ExtAuthzPort)
	ea.TypedExtensionProtocolOptions = map[string]*anypb.Any{
		"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": pack(h2),
	}
	valid := []interface{ ValidateAll() error }{strip, authz, router, route, hcm, ln, h2, app, ea}
	if t := c.ExtAuthzTLS; t != nil {
		tlsCtx := upstreamTLSContext(t)
		ea.TransportSocket = &core.TransportSocket{Name: wellknown.TransportSocketTLS, ConfigType: &core.TransportSocket_TypedConfig{TypedConfig: pack(tlsCtx)}}
		valid = append(valid, tlsCtx)
	}
	if packErr != nil {
		return nil, packErr
	}
	// Validate every message, the ones packed into Anys too (a Listener's
	// own rules cannot see inside its typed_config).
	for _, m := range valid {
		if err := m.ValidateAll(); err != nil {
			return nil, fmt.Errorf("generated envoy configuration is invalid: %w", err)
		}
	}
	return &EnvoyResources{
		Listeners: []types.ResourceWithName{ln},
		Routes:    []types.ResourceWithName{route},
		Clusters:  []types.ResourceWithName{app, ea},
	}, nil
}

// upstreamTLSContext verifies the upstream against t's CA and server name,
// offers EnvoyCurves and HTTP/2 (gRPC), and presents t's certificate if
// it has one.
func upstreamTLSContext(t *UpstreamTLS) *tlsv3.UpstreamTlsContext {
	file := func(p string) *core.DataSource {
		return &core.DataSource{Specifier: &core.DataSource_Filename{Filename: p}}
	}
	common := &tlsv3.CommonTlsContext{
		TlsParams: &tlsv3.TlsParameters{
			TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_2,
			EcdhCurves:                EnvoyCurves,
		},
		AlpnProtocols: []string{"h2"},
		ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: file(t.CAFile),
			MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{
				SanType: tlsv3.SubjectAltNameMatcher_DNS,
				Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: t.ServerName}},
			}},
		}},
	}
	if t.CertFile != "" {
		common.TlsCertificates = []*tlsv3.TlsCertificate{{CertificateChain: file(t.CertFile), PrivateKey: file(t.KeyFile)}}
	}
	return &tlsv3.UpstreamTlsContext{Sni: t.ServerName, CommonTlsContext: common}
}

// removeHeaders is a request mutation removing the headers whose name m
// matches.
func removeHeaders(m *matcherv3.StringMatcher) *mutationrulesv3.HeaderMutation {
	return &mutationrulesv3.HeaderMutation{Action: &mutationrulesv3.HeaderMutation_RemoveOnMatch_{
		RemoveOnMatch: &mutationrulesv3.HeaderMutation_RemoveOnMatch{KeyMatcher: m},
	}}
}

// staticCluster is a cluster of one endpoint: STATIC for an IP address,
// STRICT_DNS for a name.
func staticCluster(name, addr string, port int) *clusterv3.Cluster {
	discovery := clusterv3.Cluster_STRICT_DNS
	if _, err := netip.ParseAddr(addr); err == nil {
		discovery = clusterv3.Cluster_STATIC
	}
	return &clusterv3.Cluster{
		Name:                 name,
		ConnectTimeout:       durationpb.New(connectTimeout),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: discovery},
		LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: name,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{
				LbEndpoints: []*endpointv3.LbEndpoint{{
					HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
						Address: socketAddress(addr, port),
					}},
				}},
			}},
		},
	}
}

func socketAddress(addr string, port int) *core.Address {
	return &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
		Protocol:      core.SocketAddress_TCP,
		Address:       addr,
		PortSpecifier: &core.SocketAddress_PortValue{PortValue: uint32(port)},
	}}}
}

func exactMatchers(names ...string) *matcherv3.ListStringMatcher {
	l := &matcherv3.ListStringMatcher{}
	for _, n := range names {
		l.Patterns = append(l.Patterns, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: n}})
	}
	return l
}
