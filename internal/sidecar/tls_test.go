package sidecar

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tenantguard/tenantguard/internal/config"
	"github.com/tenantguard/tenantguard/internal/fixture/pgcluster"
	"github.com/tenantguard/tenantguard/internal/tlsconf"
	"github.com/tenantguard/tenantguard/test/harness"
)

// runSidecar starts a sidecar with the Postgres listener on 127.0.0.1,
// the tls section tlsYAML ("" for none), upstream as its one database
// "postgres", and tenant acme; it runs until the test ends.
func runSidecar(t *testing.T, tlsYAML, upstream string) *Sidecar {
	t.Helper()
	yml := fmt.Sprintf("listen:\n  postgres: 127.0.0.1:0\n%spostgres:\n  databases:\n    - name: postgres\n      url: %q\ntenants:\n  - id: acme\n    passwords: [%q]\n",
		tlsYAML, upstream, acmeSecret)
	cfg, err := config.Parse(filepath.Join(t.TempDir(), "sidecar.yaml"), []byte(yml))
	if err != nil {
		t.Fatal(err)
	}
	sc, err := Start(context.Background(), cfg, slog.New(slog.DiscardHandler))
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
	return sc
}

// connectTLS logs in as acme over TLS (verify-full against ca), with the
// client certificate cert/key if given; edit adjusts pgconn's TLS
// configuration.
func connectTLS(ctx context.Context, addr, ca, cert, key string, edit func(*tls.Config)) (*pgx.Conn, error) {
	q := url.Values{"sslmode": {"verify-full"}, "sslrootcert": {ca}}
	if cert != "" {
		q.Set("sslcert", cert)
		q.Set("sslkey", key)
	}
	cfg, err := pgx.ParseConfig(fmt.Sprintf("postgres://acme:%s@%s/postgres?%s", acmeSecret, addr, q.Encode()))
	if err != nil {
		return nil, err
	}
	if edit != nil {
		edit(cfg.TLSConfig)
	}
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	var one int
	if err := c.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		c.Close(ctx)
		return nil, err
	}
	return c, nil
}

func tlsStateOf(t *testing.T, c *pgx.Conn) tls.ConnectionState {
	t.Helper()
	tc, ok := c.PgConn().Conn().(*tls.Conn)
	if !ok {
		t.Fatalf("the connection is not TLS: %T", c.PgConn().Conn())
	}
	return tc.ConnectionState()
}

// TestPostgresListenerTLS: the Postgres listener answers SSLRequest and
// settles on X25519MLKEM768 with a client that offers it, on X25519 with
// one that does not; a client certificate is optional and verified when
// given, or required; a renewed certificate is served from the next
// connection on, without a restart, while connections made before go on.
func TestPostgresListenerTLS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pg := harness.Postgres(t)
	ca, other := harness.NewCA(t, "sidecar CA"), harness.NewCA(t, "another CA")
	dir := t.TempDir()
	cert, key := ca.Issue(t, dir, "server", harness.ServerSpec("first"))
	clientCert, clientKey := ca.Issue(t, dir, "client", harness.CertSpec{CommonName: "app"})
	strangerCert, strangerKey := other.Issue(t, dir, "stranger", harness.CertSpec{CommonName: "app"})
	optional := runSidecar(t, fmt.Sprintf("tls: {cert_file: %q, key_file: %q, client_ca_file: %q}\n", cert, key, ca.File), pg.AdminURL("postgres"))
	addr := optional.PostgresAddr()

	first, err := connectTLS(ctx, addr, ca.File, "", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close(ctx)
	if st := tlsStateOf(t, first); st.CurveID != tls.X25519MLKEM768 || st.Version != tls.VersionTLS13 {
		t.Fatalf("negotiated %s over %s, want X25519MLKEM768 over TLS 1.3", st.CurveID, tls.VersionName(st.Version))
	}
	classic, err := connectTLS(ctx, addr, ca.File, "", "", func(c *tls.Config) { c.CurvePreferences = []tls.CurveID{tls.X25519} })
	if err != nil {
		t.Fatalf("a client without the hybrid: %v", err)
	}
	if st := tlsStateOf(t, classic); st.CurveID != tls.X25519 {
		t.Fatalf("a client without the hybrid negotiated %s", st.CurveID)
	}
	classic.Close(ctx)
	withCert, err := connectTLS(ctx, addr, ca.File, clientCert, clientKey, nil)
	if err != nil {
		t.Fatalf("with a client certificate: %v", err)
	}
	withCert.Close(ctx)
	if c, err := connectTLS(ctx, addr, ca.File, strangerCert, strangerKey, func(c *tls.Config) {
		// Sent whatever the server asks for, as a client would that does
		// not look at the acceptable CAs.
		pair := c.Certificates[0]
		c.Certificates = nil
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &pair, nil }
	}); err == nil {
		c.Close(ctx)
		t.Fatal("another CA's client certificate was accepted")
	}

	// Renewal: the next connection gets the new certificate; the first
	// connection is unaffected.
	ca.Issue(t, dir, "server", harness.ServerSpec("second"))
	harness.Eventually(t, 20*time.Second, func() error {
		c, err := connectTLS(ctx, addr, ca.File, "", "", nil)
		if err != nil {
			return err
		}
		defer c.Close(ctx)
		if cn := tlsStateOf(t, c).PeerCertificates[0].Subject.CommonName; cn != "second" {
			return fmt.Errorf("still served %q", cn)
		}
		return nil
	})
	var n int
	if err := first.QueryRow(ctx, "SELECT 2").Scan(&n); err != nil || n != 2 {
		t.Fatalf("the connection made before the renewal: %v", err)
	}
	if cn := tlsStateOf(t, first).PeerCertificates[0].Subject.CommonName; cn != "first" {
		t.Fatalf("the open connection's certificate is %q", cn)
	}

	required := runSidecar(t, fmt.Sprintf("tls: {cert_file: %q, key_file: %q, client_ca_file: %q, require_client_cert: true}\n", cert, key, ca.File), pg.AdminURL("postgres"))
	if c, err := connectTLS(ctx, required.PostgresAddr(), ca.File, "", "", nil); err == nil {
		c.Close(ctx)
		t.Fatal("required client certificate: a client without one logged in")
	}
	c, err := connectTLS(ctx, required.PostgresAddr(), ca.File, clientCert, clientKey, nil)
	if err != nil {
		t.Fatalf("required client certificate, given: %v", err)
	}
	c.Close(ctx)
}

// TestUpstreamPostgresTLS: the sidecar's upstream connections take TLS
// from the URL (sslmode, sslrootcert), as pgconn reads it: against a
// PostgreSQL with ssl on they are encrypted (pg_stat_ssl), and pgconn's
// configuration offers X25519MLKEM768 first and settles on it with a
// server that has it (Go's TLS relaying to PostgreSQL); PostgreSQL itself
// picks what its OpenSSL has.
func TestUpstreamPostgresTLS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ca := harness.NewCA(t, "upstream CA")
	dir := t.TempDir()
	cert, key := ca.Issue(t, dir, "postgres", harness.ServerSpec("postgres"))
	cl, err := pgcluster.Start(ctx, pgcluster.Options{SSLCertFile: cert, SSLKeyFile: key})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	upstream := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=verify-full&sslrootcert=%s", cl.Port(), url.QueryEscape(ca.File))
	sc := runSidecar(t, "", upstream)
	c, err := pgx.Connect(ctx, fmt.Sprintf("postgres://acme:%s@%s/postgres?sslmode=disable", acmeSecret, sc.PostgresAddr()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var one int
	if err := c.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		t.Fatal(err)
	}
	admin, err := pgx.Connect(ctx, cl.AdminURL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	var encrypted int
	var version string
	if err := admin.QueryRow(ctx, "SELECT count(*)::int, coalesce(max(version), '') FROM pg_stat_ssl WHERE ssl").Scan(&encrypted, &version); err != nil {
		t.Fatal(err)
	}
	if encrypted == 0 {
		t.Fatal("pg_stat_ssl shows no encrypted connection: the sidecar's upstream connection is in clear")
	}
	t.Logf("upstream connections over TLS: %d (%s)", encrypted, version)

	// What PostgreSQL's OpenSSL settles on with pgconn's configuration.
	pc, err := pgconn.ParseConfig(upstream)
	if err != nil {
		t.Fatal(err)
	}
	st, err := sslRequest(ctx, fmt.Sprintf("127.0.0.1:%d", cl.Port()), pc.TLSConfig)
	if err != nil {
		t.Fatal(err)
	}
	// PostgreSQL up to 17 offers the one group of ssl_ecdh_curve
	// (prime256v1 by default); 18's ssl_groups can name X25519MLKEM768
	// with OpenSSL 3.5.
	switch st.CurveID {
	case tls.X25519MLKEM768, tls.X25519, tls.CurveP256:
	default:
		t.Fatalf("PostgreSQL negotiated %s", st.CurveID)
	}
	t.Logf("PostgreSQL (OpenSSL) negotiated %s over %s with pgconn's configuration", st.CurveID, tls.VersionName(st.Version))

	// With a server that has every group Go has: the hybrid.
	srv, err := tlsconf.NewServer(tlsconf.ServerFiles{CertFile: cert, KeyFile: key}, tlsconf.Options{})
	if err != nil {
		t.Fatal(err)
	}
	relay := harness.StartTLSRelay(t, srv.TLSConfig(), fmt.Sprintf("127.0.0.1:%d", cl.Port()), true)
	viaRelay := runSidecar(t, "", fmt.Sprintf("postgres://postgres@%s/postgres?sslmode=verify-full&sslrootcert=%s", relay.Addr, url.QueryEscape(ca.File)))
	rc, err := pgx.Connect(ctx, fmt.Sprintf("postgres://acme:%s@%s/postgres?sslmode=disable", acmeSecret, viaRelay.PostgresAddr()))
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close(ctx)
	if err := rc.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		t.Fatal(err)
	}
	states, offered := relay.States(), relay.Offered()
	if len(states) == 0 {
		t.Fatal("no upstream handshake reached the relay")
	}
	for i, st := range states {
		if st.CurveID != tls.X25519MLKEM768 || st.Version != tls.VersionTLS13 || offered[i][0] != tls.X25519MLKEM768 {
			t.Fatalf("upstream handshake %d: negotiated %s over %s, offered %v", i, st.CurveID, tls.VersionName(st.Version), offered[i])
		}
	}
}

// sslRequest opens a TLS connection to a PostgreSQL server as a client
// does (SSLRequest, then the handshake) and returns its state.
func sslRequest(ctx context.Context, addr string, cfg *tls.Config) (tls.ConnectionState, error) {
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer raw.Close()
	req := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 8), 80877103)
	if _, err := raw.Write(req); err != nil {
		return tls.ConnectionState{}, err
	}
	answer := make([]byte, 1)
	if _, err := io.ReadFull(raw, answer); err != nil {
		return tls.ConnectionState{}, err
	}
	if answer[0] != 'S' {
		return tls.ConnectionState{}, errors.New("the server does not do TLS")
	}
	tc := tls.Client(raw, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return tls.ConnectionState{}, err
	}
	return tc.ConnectionState(), nil
}
