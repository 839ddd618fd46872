package xds_test

import (
	"slices"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/tenantguard/tenantguard/controlplane/xds"
)

// TestEnvoyExtAuthzTLS: with ExtAuthzTLS the ext_authz cluster verifies
// ext_authz's certificate (CA file, SNI and SAN of the server name),
// offers X25519MLKEM768 first and h2, and presents Envoy's certificate
// when given one; the app cluster stays as it was. Incomplete settings
// are refused.
func TestEnvoyExtAuthzTLS(t *testing.T) {
	c := *envoyConfig
	c.ExtAuthzTLS = &xds.UpstreamTLS{CAFile: "/etc/envoy/tls/ca.crt", CertFile: "/etc/envoy/tls/tls.crt", KeyFile: "/etc/envoy/tls/tls.key", ServerName: "tenantguard-extauthz.tenantguard.svc"}
	res, err := c.Resources()
	if err != nil {
		t.Fatal(err)
	}
	var ea, app *clusterv3.Cluster
	for _, r := range res.Clusters {
		switch cl := r.(*clusterv3.Cluster); cl.GetName() {
		case xds.ExtAuthzCluster:
			ea = cl
		case xds.AppCluster:
			app = cl
		}
	}
	if app.GetTransportSocket() != nil {
		t.Error("the app cluster got TLS")
	}
	ts := ea.GetTransportSocket()
	if ts.GetName() != "envoy.transport_sockets.tls" {
		t.Fatalf("ext_authz transport socket %v", ts)
	}
	u := unpack(t, ts.GetTypedConfig(), &tlsv3.UpstreamTlsContext{})
	common := u.GetCommonTlsContext()
	vc := common.GetValidationContext()
	switch {
	case u.GetSni() != c.ExtAuthzTLS.ServerName:
		t.Errorf("SNI %q", u.GetSni())
	case vc.GetTrustedCa().GetFilename() != c.ExtAuthzTLS.CAFile:
		t.Errorf("trusted CA %v", vc.GetTrustedCa())
	case len(vc.GetMatchTypedSubjectAltNames()) != 1 || vc.GetMatchTypedSubjectAltNames()[0].GetMatcher().GetExact() != c.ExtAuthzTLS.ServerName:
		t.Errorf("SAN matchers %v", vc.GetMatchTypedSubjectAltNames())
	case !slices.Equal(common.GetTlsParams().GetEcdhCurves(), []string{"X25519MLKEM768", "X25519", "P-256"}):
		t.Errorf("curves %v", common.GetTlsParams().GetEcdhCurves())
	case !slices.Equal(common.GetAlpnProtocols(), []string{"h2"}):
		t.Errorf("ALPN %v", common.GetAlpnProtocols())
	case len(common.GetTlsCertificates()) != 1 || common.GetTlsCertificates()[0].GetPrivateKey().GetFilename() != c.ExtAuthzTLS.KeyFile:
		t.Errorf("client certificate %v", common.GetTlsCertificates())
	}
	for _, tc := range []struct {
		name string
		edit func(*xds.UpstreamTLS)
		want string
	}{
		{"no CA", func(u *xds.UpstreamTLS) { u.CAFile = "" }, "CA file"},
		{"no server name", func(u *xds.UpstreamTLS) { u.ServerName = "" }, "server name"},
		{"key without certificate", func(u *xds.UpstreamTLS) { u.CertFile = "" }, "together"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := c
			u := *c.ExtAuthzTLS
			tc.edit(&u)
			bad.ExtAuthzTLS = &u
			if _, err := bad.Resources(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one about %q", err, tc.want)
			}
		})
	}
}
