package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantguard/tenantguard/test/harness"
)

// TestMutualTLSProcesses runs the control plane, a sidecar and ext_authz
// as separate processes on TLS everywhere, with client certificates
// required on xDS: the data planes, named ${POD_NAMESPACE}/${POD_NAME} as
// the injector names them and holding certificates with that pod's SPIFFE
// id, get the policy and follow pushes; a sidecar whose certificate names
// another pod is refused and never gets ready. Renewed certificates are
// taken without a restart: the control plane's xDS certificate at its
// next handshake (the sidecar's open stream goes on), the sidecar's
// client certificate (its expiry metric changes, and it reconnects with
// it when the control plane restarts), the sidecar's Postgres listener's
// at the next login.
func TestMutualTLSProcesses(t *testing.T) {
	pg := harness.Postgres(t)
	rd := harness.Redis(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	for _, q := range []string{"CREATE ROLE tls_app LOGIN PASSWORD 'tls_app_pw'", "CREATE DATABASE tls_app", "CREATE DATABASE tls_cp"} {
		if err := pg.Exec(ctx, "postgres", q); err != nil && !strings.Contains(err.Error(), "42710") && !strings.Contains(err.Error(), "42P04") {
			t.Fatal(err)
		}
	}
	if err := pg.Exec(ctx, "tls_cp", "DROP SCHEMA IF EXISTS tenantguard_cp CASCADE"); err != nil {
		t.Fatal(err)
	}

	// Every file the processes read lives in dir, named by relative paths.
	dir := t.TempDir()
	ca := harness.NewCA(t, "e2e CA")
	copyInto(t, ca.File, filepath.Join(dir, "ca.pem"))
	ca.Issue(t, dir, "controlplane", harness.ServerSpec("controlplane-1"))
	ca.Issue(t, dir, "sidecar-serving", harness.ServerSpec("sidecar-1"))
	ca.Issue(t, dir, "extauthz-serving", harness.ServerSpec("extauthz"))
	ca.Issue(t, dir, "orders-1", harness.CertSpec{URIs: []string{"spiffe://cluster.local/ns/shop/pod/orders-1"}})
	ca.Issue(t, dir, "orders-2", harness.CertSpec{URIs: []string{"spiffe://cluster.local/ns/shop/pod/orders-2"}})
	ca.Issue(t, dir, "extauthz-0", harness.CertSpec{URIs: []string{"spiffe://cluster.local/ns/tenantguard/pod/extauthz-0"}})
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("policy.yaml", "name: default\ntenants:\n  - id: acme\n    credentials: [\"acme-secret-1\"]\n")
	xdsAddr, cpAdmin := freeAddr(t), freeAddr(t)
	cpCfg := write("controlplane.yaml", fmt.Sprintf(`listen: {xds: %q, admin: %q}
tls:
  xds: {cert_file: controlplane.crt, key_file: controlplane.key, client_ca_file: ca.pem, require_client_cert: true, trust_domain: cluster.local}
  admin: {cert_file: controlplane.crt, key_file: controlplane.key}
database: %q
admin_token: %s
seed: policy.yaml
`, xdsAddr, cpAdmin, pg.AdminURL("tls_cp"), e2eAdminToken))
	clientTLS := func(cert string) string {
		return fmt.Sprintf("  tls: {ca_file: ca.pem, cert_file: %s.crt, key_file: %s.key, server_name: localhost}\n", cert, cert)
	}
	sidecarCfg := func(name, cert, listen, admin string) string {
		return write(name, fmt.Sprintf(`listen: {postgres: %q, admin: %q}
tls: {cert_file: sidecar-serving.crt, key_file: sidecar-serving.key}
postgres:
  databases:
    - name: tls_app
      url: "postgres://tls_app:tls_app_pw@127.0.0.1:%d/tls_app?sslmode=disable"
controlplane:
  address: %q
  node_id: ${POD_NAMESPACE}/${POD_NAME}
  cache_file: %s-policy.json
%sdrain_timeout: 5s
`, listen, admin, pg.Port(), xdsAddr, name, clientTLS(cert)))
	}
	pgListen, scAdmin := freeAddr(t), freeAddr(t)
	scCfg := sidecarCfg("sidecar.yaml", "orders-1", pgListen, scAdmin)
	grpcAddr, httpAddr := freeAddr(t), freeAddr(t)
	k := start(t, "extauthz", "keygen", "--id", "k1", "--dir", dir)
	if code := k.wait(t, time.Minute); code != 0 {
		t.Fatalf("keygen: %d\n%s", code, k.output())
	}
	eaCfg := write("extauthz.yaml", fmt.Sprintf(`listen: {grpc: %q, http: %q}
tls:
  grpc: {cert_file: extauthz-serving.crt, key_file: extauthz-serving.key}
  http: {cert_file: extauthz-serving.crt, key_file: extauthz-serving.key}
admin_token: %s
sessions: {store: "redis://%s/1", signing_key: k1.key.pem}
controlplane:
  address: %q
  node_id: ${POD_NAMESPACE}/${POD_NAME}
  cache_file: extauthz-policy.json
%sdrain_timeout: 5s
`, grpcAddr, httpAddr, e2eAdminToken, rd.Addr(), xdsAddr, clientTLS("extauthz-0")))

	https := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}, ForceAttemptHTTP2: true}}
	defer https.CloseIdleConnections()
	ready := func(p *process, what, url string, client *http.Client) {
		t.Helper()
		harness.Eventually(t, 60*time.Second, func() error {
			if err := p.exited(); err != nil {
				t.Fatalf("%s exited: %v\n%s", what, err, p.output())
			}
			resp, err := client.Get(url)
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				return fmt.Errorf("%s: readyz %d", what, resp.StatusCode)
			}
			if resp.TLS != nil && resp.TLS.CurveID != tls.X25519MLKEM768 {
				t.Fatalf("%s negotiated %s", what, resp.TLS.CurveID)
			}
			return nil
		})
	}
	startCP := func() *process {
		cp := start(t, "controlplane", "--config", cpCfg)
		ready(cp, "controlplane", "https://"+cpAdmin+"/readyz", https)
		return cp
	}
	cp := startCP()
	pod := func(ns, name string) []string { return append(os.Environ(), "POD_NAMESPACE="+ns, "POD_NAME="+name) }
	sc := startWith(t, pod("shop", "orders-1"), "sidecar", "--config", scCfg)
	ready(sc, "sidecar", "http://"+scAdmin+"/readyz", http.DefaultClient)
	ea := startWith(t, pod("tenantguard", "extauthz-0"), "extauthz", "--config", eaCfg)
	ready(ea, "ext_authz", "https://"+httpAddr+"/readyz", https)

	login := func(tenant, secret string) (*pgx.Conn, tls.ConnectionState, error) {
		c, err := pgx.Connect(ctx, fmt.Sprintf("postgres://%s:%s@%s/tls_app?sslmode=verify-full&sslrootcert=%s", tenant, secret, pgListen, url.QueryEscape(ca.File)))
		if err != nil {
			return nil, tls.ConnectionState{}, err
		}
		var one int
		if err := c.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
			c.Close(ctx)
			return nil, tls.ConnectionState{}, err
		}
		return c, c.PgConn().Conn().(*tls.Conn).ConnectionState(), nil
	}
	acme, st, err := login("acme", "acme-secret-1")
	if err != nil {
		t.Fatalf("login through the sidecar, with the policy from xDS over mTLS: %v", err)
	}
	defer acme.Close(ctx)
	if st.CurveID != tls.X25519MLKEM768 || st.PeerCertificates[0].Subject.CommonName != "sidecar-1" {
		t.Fatalf("the sidecar's listener: %s, %s", st.CurveID, st.PeerCertificates[0].Subject)
	}

	// A sidecar holding another pod's certificate, claiming orders-1.
	impostorCfg := sidecarCfg("impostor.yaml", "orders-2", freeAddr(t), freeAddr(t))
	impostor := startWith(t, pod("shop", "orders-1"), "sidecar", "--config", impostorCfg)
	harness.Eventually(t, 60*time.Second, func() error {
		if !strings.Contains(cp.output(), "refused a node id its client certificate does not name") || !strings.Contains(impostor.output(), "PermissionDenied") {
			return errors.New("the impostor's refusal is not logged yet")
		}
		return nil
	})
	if strings.Contains(impostor.output(), "policy applied") {
		t.Fatal("the impostor got the policy")
	}

	// Renewal of the control plane's xDS certificate: the next handshake
	// gets it; the sidecar's open stream goes on and follows a push.
	ca.Issue(t, dir, "controlplane", harness.ServerSpec("controlplane-2"))
	clientPair, err := tls.LoadX509KeyPair(filepath.Join(dir, "orders-1.crt"), filepath.Join(dir, "orders-1.key"))
	if err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 30*time.Second, func() error {
		c, err := tls.Dial("tcp", xdsAddr, &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost", Certificates: []tls.Certificate{clientPair}, NextProtos: []string{"h2"}})
		if err != nil {
			return err
		}
		defer c.Close()
		if cn := c.ConnectionState().PeerCertificates[0].Subject.CommonName; cn != "controlplane-2" {
			return fmt.Errorf("xDS still serves %s", cn)
		}
		return nil
	})
	addTenant := func(id string) {
		t.Helper()
		var p map[string]any
		if code := callJSONClient(t, https, "https://"+cpAdmin, "GET", "/v1/policy", "", &p); code != 200 {
			t.Fatalf("GET /v1/policy: %d", code)
		}
		p["tenants"] = append(p["tenants"].([]any), map[string]any{"id": id, "credentials": []string{id + "-secret-1"}})
		b, _ := json.Marshal(p)
		if code := callJSONClient(t, https, "https://"+cpAdmin, "PUT", "/v1/policy?hash_credentials=true", string(b), nil); code != 200 {
			t.Fatalf("PUT /v1/policy: %d", code)
		}
		harness.Eventually(t, 30*time.Second, func() error {
			c, _, err := login(id, id+"-secret-1")
			if err != nil {
				return err
			}
			c.Close(ctx)
			return nil
		})
	}
	addTenant("initech")

	// Renewal of the sidecar's client certificate: its expiry metric
	// follows the files; the control plane restarts and the sidecar
	// reconnects with the new certificate, and follows pushes again.
	before := metricSeries(t, ctx, "http://"+scAdmin+"/metrics", `tenantguard_tls_certificate_expiry_timestamp_seconds{name="controlplane-client"}`)
	spec := harness.CertSpec{URIs: []string{"spiffe://cluster.local/ns/shop/pod/orders-1"}, NotAfter: time.Now().Add(72 * time.Hour).Truncate(time.Second)}
	ca.Issue(t, dir, "orders-1", spec)
	harness.Eventually(t, 30*time.Second, func() error {
		if v := metricSeries(t, ctx, "http://"+scAdmin+"/metrics", `tenantguard_tls_certificate_expiry_timestamp_seconds{name="controlplane-client"}`); v != float64(spec.NotAfter.Unix()) {
			return fmt.Errorf("expiry %v (was %v), want %v", v, before, spec.NotAfter.Unix())
		}
		return nil
	})
	if err := cp.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	cp.wait(t, 30*time.Second)
	cp = startCP()
	addTenant("hooli")
	if sc.exited() != nil || ea.exited() != nil {
		t.Fatal("a data plane exited")
	}

	// The listener's own certificate: the next login gets the new one.
	ca.Issue(t, dir, "sidecar-serving", harness.ServerSpec("sidecar-2"))
	harness.Eventually(t, 30*time.Second, func() error {
		c, st, err := login("acme", "acme-secret-1")
		if err != nil {
			return err
		}
		c.Close(ctx)
		if cn := st.PeerCertificates[0].Subject.CommonName; cn != "sidecar-2" {
			return fmt.Errorf("the sidecar still serves %s", cn)
		}
		return nil
	})
	var n int
	if err := acme.QueryRow(ctx, "SELECT 3").Scan(&n); err != nil {
		t.Fatalf("the connection from before every renewal: %v", err)
	}
	for _, p := range []*process{sc, ea} {
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code := p.wait(t, 30*time.Second); code != 0 {
			t.Fatalf("exit %d", code)
		}
	}
}

// metricSeries is the value of one exact series (name{labels}) at a
// Prometheus text endpoint, 0 if absent.
func metricSeries(t *testing.T, ctx context.Context, url, series string) float64 {
	t.Helper()
	code, body, err := httpGet(ctx, url)
	if err != nil || code != 200 {
		t.Fatalf("metrics: %d %v", code, err)
	}
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			var f float64
			fmt.Sscan(v, &f)
			return f
		}
	}
	return 0
}

func copyInto(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// callJSONClient is callJSON with the admin token, over client (HTTPS).
func callJSONClient(t *testing.T, client *http.Client, base, method, path, body string, out any) int {
	t.Helper()
	req, err := http.NewRequest(method, base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+e2eAdminToken)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatalf("%s %s: %d: %v", method, path, resp.StatusCode, err)
		}
	}
	return resp.StatusCode
}
