//go:build !sidecar

package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tenantguard/tenantguard/test/harness"
)

// tlsDir holds a CA and a server certificate (server.crt/.key), a client
// certificate (client.crt/.key) and junk.pem, next to the configuration
// files of these tests, which name them by relative paths.
func tlsDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	ca := harness.NewCA(t, "config test CA")
	ca.Issue(t, dir, "server", harness.ServerSpec("server"))
	ca.Issue(t, dir, "client", harness.CertSpec{CommonName: "shop/orders-1"})
	b, err := os.ReadFile(ca.File)
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"ca.pem": b, "junk.pem": []byte("junk")} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestTLSSections: every file's TLS sections, as written in the README,
// compile with paths resolved against the file's directory; a mistake is
// an error naming the file, the field and, for a file that does not load,
// the file.
func TestTLSSections(t *testing.T) {
	dir := tlsDir(t)
	abs := func(name string) string { return filepath.Join(dir, name) }
	if err := os.WriteFile(abs("admin.token"), []byte("an-admin-token-of-some-length\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	keyFiles(t, dir, "k1")
	clientTLS := "  tls: {ca_file: ca.pem, cert_file: client.crt, key_file: client.key, server_name: controlplane.tenantguard.svc}\n"
	sidecar := valid + "tls: {cert_file: server.crt, key_file: server.key, client_ca_file: ca.pem, require_client_cert: true}\n" +
		"controlplane:\n  address: 127.0.0.1:18000\n  node_id: shop/orders-1\n" + clientTLS +
		"sessions:\n  store: rediss://127.0.0.1:6379/1\n  verification_keys: [k1.pub.pem]\n  tls: {ca_file: ca.pem}\n"
	sc, err := Parse(abs("sidecar.yaml"), []byte(sidecar))
	if err != nil {
		t.Fatal(err)
	}
	if sc.TLS == nil || sc.TLS.CertFile != abs("server.crt") || sc.TLS.ClientCAFile != abs("ca.pem") || !sc.TLS.RequireClientCert {
		t.Fatalf("sidecar tls %+v", sc.TLS)
	}
	if c := sc.ControlPlane.TLS; c == nil || c.CAFile != abs("ca.pem") || c.KeyFile != abs("client.key") || c.ServerName != "controlplane.tenantguard.svc" {
		t.Fatalf("controlplane tls %+v", c)
	}
	if s := sc.Sessions.StoreTLS; s == nil || s.CAFile != abs("ca.pem") {
		t.Fatalf("session store tls %+v", s)
	}
	// rediss:// without a tls section: the system's roots.
	plainStore := strings.Replace(sidecar, "\n  tls: {ca_file: ca.pem}\n", "\n", 1)
	if sc, err = Parse(abs("sidecar.yaml"), []byte(plainStore)); err != nil || sc.Sessions.StoreTLS == nil || sc.Sessions.StoreTLS.CAFile != "" {
		t.Fatalf("rediss without a section: %v %+v", err, sc)
	}

	cp := validControlPlane + "tls:\n  xds: {cert_file: server.crt, key_file: server.key, client_ca_file: ca.pem, require_client_cert: true, trust_domain: cluster.local}\n" +
		"  admin: {cert_file: server.crt, key_file: server.key}\n"
	c, err := ParseControlPlane(abs("controlplane.yaml"), []byte(cp))
	if err != nil {
		t.Fatal(err)
	}
	// Envoy's files are Envoy's: not read here.
	ec, err := ParseControlPlane(abs("controlplane.yaml"), []byte(cp+"envoy:\n  listen: 0.0.0.0:8080\n  app: 127.0.0.1:3000\n  extauthz: 127.0.0.1:9001\n  extauthz_tls: {ca_file: /etc/envoy/tls/ca.crt, server_name: extauthz.svc}\n"))
	if err != nil || ec.Envoy.ExtAuthzTLS == nil || ec.Envoy.ExtAuthzTLS.CAFile != "/etc/envoy/tls/ca.crt" {
		t.Fatalf("envoy.extauthz_tls: %v", err)
	}
	if c.XDSTLS == nil || !c.XDSTLS.RequireClientCert || c.XDSTrustDomain != "cluster.local" || c.AdminTLS == nil || c.AdminTLS.ClientCAFile != "" {
		t.Fatalf("controlplane: xds %+v (%q), admin %+v", c.XDSTLS, c.XDSTrustDomain, c.AdminTLS)
	}

	ea := `listen: {grpc: 127.0.0.1:9001, http: 127.0.0.1:9002}
tls:
  grpc: {cert_file: server.crt, key_file: server.key, client_ca_file: ca.pem}
  http: {cert_file: server.crt, key_file: server.key}
admin_token_file: admin.token
sessions:
  store: rediss://127.0.0.1:6379/1
  signing_key: k1.key.pem
controlplane:
  address: 127.0.0.1:18000
` + clientTLS
	e, err := ParseExtAuthz(abs("extauthz.yaml"), []byte(ea))
	if err != nil {
		t.Fatal(err)
	}
	if e.GRPCTLS == nil || e.GRPCTLS.ClientCAFile != abs("ca.pem") || e.HTTPTLS == nil || e.ControlPlane.TLS == nil || e.Sessions.StoreTLS == nil {
		t.Fatalf("ext_authz: grpc %+v, http %+v, controlplane %+v", e.GRPCTLS, e.HTTPTLS, e.ControlPlane.TLS)
	}

	for _, tc := range []struct {
		name, file, base, from, to, want string
	}{
		{"sidecar key without certificate", "sidecar.yaml", sidecar, "cert_file: server.crt, key_file: server.key, client", "key_file: server.key, client", "tls: cert_file and key_file must be given together"},
		{"sidecar client CA without a certificate", "sidecar.yaml", sidecar, "cert_file: server.crt, key_file: server.key, client", "client", "tls: client certificates need the listener's own"},
		{"sidecar required client certificate without a CA", "sidecar.yaml", sidecar, "client_ca_file: ca.pem, require", "require", "tls: require_client_cert needs client_ca_file"},
		{"sidecar junk certificate", "sidecar.yaml", sidecar, "cert_file: server.crt, key_file: server.key, client", "cert_file: junk.pem, key_file: server.key, client", "tls.cert_file: " + abs("junk.pem") + ": no PEM certificate"},
		{"sidecar key of another certificate", "sidecar.yaml", sidecar, "key_file: server.key, client", "key_file: client.key, client", "tls.key_file: " + abs("client.key") + ": tls: private key does not match"},
		{"sidecar missing client CA", "sidecar.yaml", sidecar, "client_ca_file: ca.pem", "client_ca_file: nowhere.pem", "tls.client_ca_file: " + abs("nowhere.pem")},
		{"sidecar unknown tls field", "sidecar.yaml", sidecar, "require_client_cert: true}", "require_client_certs: true}", "field require_client_certs not found"},
		{"controlplane client junk CA", "sidecar.yaml", sidecar, "tls: {ca_file: ca.pem, cert_file: client.crt", "tls: {ca_file: junk.pem, cert_file: client.crt", "controlplane.tls.ca_file: " + abs("junk.pem")},
		{"controlplane client certificate without key", "sidecar.yaml", sidecar, "cert_file: client.crt, key_file: client.key, ", "cert_file: client.crt, ", "controlplane.tls: cert_file and key_file must be given together"},
		{"session store tls on redis://", "sidecar.yaml", sidecar, "rediss://", "redis://", "sessions.tls: the store is redis://"},
		{"session store junk CA", "sidecar.yaml", sidecar, "tls: {ca_file: ca.pem}\n", "tls: {ca_file: junk.pem}\n", "sessions.tls.ca_file: " + abs("junk.pem")},
		{"xds missing key", "controlplane.yaml", cp, "xds: {cert_file: server.crt, key_file: server.key", "xds: {cert_file: server.crt, key_file: gone.key", "tls.xds.key_file: " + abs("gone.key")},
		{"xds bad trust domain", "controlplane.yaml", cp, "trust_domain: cluster.local", "trust_domain: spiffe://Cluster", "tls.xds.trust_domain: \"spiffe://Cluster\" is not a SPIFFE trust domain"},
		{"admin junk certificate", "controlplane.yaml", cp, "admin: {cert_file: server.crt", "admin: {cert_file: junk.pem", "tls.admin.cert_file: " + abs("junk.pem")},
		{"envoy ext_authz TLS without CA", "controlplane.yaml", cp, "tls:\n", "envoy: {listen: 0.0.0.0:8080, app: 127.0.0.1:3000, extauthz: 127.0.0.1:9001, extauthz_tls: {server_name: extauthz}}\ntls:\n", "envoy.extauthz_tls.ca_file: required"},
		{"unknown listener", "controlplane.yaml", cp, "  admin: {", "  webhook: {", "field webhook not found"},
		{"grpc junk client CA", "extauthz.yaml", ea, "client_ca_file: ca.pem", "client_ca_file: junk.pem", "tls.grpc.client_ca_file: " + abs("junk.pem")},
		{"http missing certificate", "extauthz.yaml", ea, "http: {cert_file: server.crt", "http: {cert_file: gone.crt", "tls.http.cert_file: " + abs("gone.crt")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			text := strings.Replace(tc.base, tc.from, tc.to, 1)
			if text == tc.base {
				t.Fatalf("case did not change the config (from %q)", tc.from)
			}
			name := abs(tc.file)
			var err error
			switch tc.file {
			case "sidecar.yaml":
				_, err = Parse(name, []byte(text))
			case "controlplane.yaml":
				_, err = ParseControlPlane(name, []byte(text))
			default:
				_, err = ParseExtAuthz(name, []byte(text))
			}
			if err == nil || !strings.HasPrefix(err.Error(), name+": ") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to name the file and contain %q", err, tc.want)
			}
		})
	}
}
