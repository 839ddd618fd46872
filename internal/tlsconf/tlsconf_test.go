package tlsconf_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"

	"github.com/tenantguard/tenantguard/internal/tlsconf"
	"github.com/tenantguard/tenantguard/test/harness"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// everyHandshake checks the files at every handshake, so that a test sees
// a change at its next handshake.
var everyHandshake = tlsconf.Options{CheckInterval: -1}

// result is what each side of a handshake saw.
type result struct {
	server, client tls.ConnectionState
	serverErr, err error
	conn           *tls.Conn // the client's connection, open
	closeServer    func()
}

// handshake connects a client with clientCfg to a one-connection server
// with serverCfg over loopback TCP. The server side echoes what it reads
// until the client closes.
func handshake(t *testing.T, serverCfg, clientCfg *tls.Config) result {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type srvResult struct {
		st  tls.ConnectionState
		err error
	}
	got := make(chan srvResult, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		raw, err := ln.Accept()
		if err != nil {
			got <- srvResult{err: err}
			return
		}
		defer raw.Close()
		c := tls.Server(raw, serverCfg)
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		err = c.Handshake()
		got <- srvResult{st: c.ConnectionState(), err: err}
		if err == nil {
			_, _ = io.Copy(c, c)
		}
	}()
	var r result
	r.conn, r.err = tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", ln.Addr().String(), clientCfg)
	if r.err == nil {
		r.client = r.conn.ConnectionState()
		// TLS 1.3 servers learn of a refused client certificate after the
		// client's handshake is done: a read shows it.
		_ = r.conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := r.conn.Write([]byte("ping")); err == nil {
			buf := make([]byte, 4)
			if _, err := io.ReadFull(r.conn, buf); err != nil {
				r.err = err
			}
		}
	}
	s := <-got
	r.server, r.serverErr = s.st, s.err
	r.closeServer = func() {
		if r.conn != nil {
			_ = r.conn.Close()
		}
		wg.Wait()
	}
	t.Cleanup(r.closeServer)
	return r
}

func newServer(t *testing.T, files tlsconf.ServerFiles, opts tlsconf.Options) *tlsconf.Server {
	t.Helper()
	s, err := tlsconf.NewServer(files, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func clientConfig(ca *harness.CA) *tls.Config {
	return &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost"}
}

// TestKeyExchange: a listener's handshake with Go's own client settles on
// the hybrid X25519MLKEM768 over TLS 1.3; a client that does not offer it
// (offering only X25519, or only TLS 1.2) still connects, with X25519;
// TLS 1.1 is refused.
func TestKeyExchange(t *testing.T) {
	ca := harness.NewCA(t, "test CA")
	dir := t.TempDir()
	cert, key := ca.Issue(t, dir, "server", harness.ServerSpec("server"))
	srv := newServer(t, tlsconf.ServerFiles{CertFile: cert, KeyFile: key}, tlsconf.Options{})
	for _, tc := range []struct {
		name    string
		client  func(*tls.Config)
		version uint16
		curve   tls.CurveID
		fails   bool
	}{
		{"default client", func(*tls.Config) {}, tls.VersionTLS13, tls.X25519MLKEM768, false},
		{"client without the hybrid", func(c *tls.Config) { c.CurvePreferences = []tls.CurveID{tls.X25519} }, tls.VersionTLS13, tls.X25519, false},
		{"TLS 1.2 client", func(c *tls.Config) { c.MaxVersion = tls.VersionTLS12 }, tls.VersionTLS12, tls.X25519, false},
		{"TLS 1.1 client", func(c *tls.Config) { c.MinVersion, c.MaxVersion = tls.VersionTLS10, tls.VersionTLS11 }, 0, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cc := clientConfig(ca)
			tc.client(cc)
			r := handshake(t, srv.TLSConfig(), cc)
			if tc.fails {
				if r.err == nil || r.serverErr == nil {
					t.Fatalf("connected: client %v, server %v", r.err, r.serverErr)
				}
				return
			}
			if r.err != nil || r.serverErr != nil {
				t.Fatalf("client %v, server %v", r.err, r.serverErr)
			}
			for side, st := range map[string]tls.ConnectionState{"server": r.server, "client": r.client} {
				if st.Version != tc.version || st.CurveID != tc.curve {
					t.Errorf("%s side: version %s, group %s; want %s, %s", side,
						tls.VersionName(st.Version), st.CurveID, tls.VersionName(tc.version), tc.curve)
				}
			}
		})
	}
}

// TestServerReload: replacing the files changes the certificate of the
// next handshake, without a new Server; a connection made before keeps
// working; files that do not load leave the certificate in use, and are
// logged once.
func TestServerReload(t *testing.T) {
	ca := harness.NewCA(t, "test CA")
	dir := t.TempDir()
	cert, key := ca.Issue(t, dir, "server", harness.ServerSpec("first"))
	var logs bytes.Buffer
	var logMu sync.Mutex
	opts := everyHandshake
	opts.Name = "test"
	opts.Logger = slog.New(slog.NewTextHandler(lockedWriter{&logMu, &logs}, nil))
	srv := newServer(t, tlsconf.ServerFiles{CertFile: cert, KeyFile: key}, opts)
	cfg := srv.TLSConfig()
	peerCN := func(r result) string {
		t.Helper()
		if r.err != nil || r.serverErr != nil {
			t.Fatalf("client %v, server %v", r.err, r.serverErr)
		}
		return r.client.PeerCertificates[0].Subject.CommonName
	}
	first := handshake(t, cfg, clientConfig(ca))
	if cn := peerCN(first); cn != "first" {
		t.Fatalf("first handshake: %q", cn)
	}

	ca.Issue(t, dir, "server", harness.ServerSpec("second"))
	if cn := peerCN(handshake(t, cfg, clientConfig(ca))); cn != "second" {
		t.Fatalf("after the files changed: %q", cn)
	}
	// The first connection is unaffected.
	if _, err := first.conn.Write([]byte("more")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(first.conn, buf); err != nil || string(buf) != "more" {
		t.Fatalf("the connection made before the reload: %q %v", buf, err)
	}
	if cn := first.conn.ConnectionState().PeerCertificates[0].Subject.CommonName; cn != "first" {
		t.Fatalf("the open connection's certificate changed: %q", cn)
	}

	// A half-renewed pair (new certificate, old key) and then a broken
	// file: the second certificate stays.
	other := t.TempDir()
	newCert, _ := ca.Issue(t, other, "server", harness.ServerSpec("third"))
	copyFile(t, newCert, cert)
	for range 2 {
		if cn := peerCN(handshake(t, cfg, clientConfig(ca))); cn != "second" {
			t.Fatalf("with a mismatched pair: %q", cn)
		}
	}
	if err := os.WriteFile(cert, []byte("not a certificate"), 0o644); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if cn := peerCN(handshake(t, cfg, clientConfig(ca))); cn != "second" {
			t.Fatalf("with a broken file: %q", cn)
		}
	}
	logMu.Lock()
	text := logs.String()
	logMu.Unlock()
	if n := strings.Count(text, "do not load"); n != 2 {
		t.Errorf("want each failure logged once (2 lines), got %d:\n%s", n, text)
	}
	if !strings.Contains(text, "key_file") || !strings.Contains(text, "cert_file") {
		t.Errorf("the failures do not name the file at fault:\n%s", text)
	}
	// Fixed: the next handshake serves it.
	ca.Issue(t, dir, "server", harness.ServerSpec("fourth"))
	if cn := peerCN(handshake(t, cfg, clientConfig(ca))); cn != "fourth" {
		t.Fatalf("after the files were fixed: %q", cn)
	}
	if srv.NotAfter().IsZero() {
		t.Fatal("NotAfter is zero")
	}
}

// TestCheckInterval: with the default interval, a change is not looked
// for at every handshake; it is found once the interval has passed.
func TestCheckInterval(t *testing.T) {
	ca := harness.NewCA(t, "test CA")
	dir := t.TempDir()
	cert, key := ca.Issue(t, dir, "server", harness.ServerSpec("first"))
	srv := newServer(t, tlsconf.ServerFiles{CertFile: cert, KeyFile: key}, tlsconf.Options{CheckInterval: time.Hour})
	ca.Issue(t, dir, "server", harness.ServerSpec("second"))
	if cn := srv.Certificate().Leaf.Subject.CommonName; cn != "first" {
		t.Fatalf("checked before the interval: %q", cn)
	}
	srv = newServer(t, tlsconf.ServerFiles{CertFile: cert, KeyFile: key}, tlsconf.Options{CheckInterval: 50 * time.Millisecond})
	ca.Issue(t, dir, "server", harness.ServerSpec("third"))
	harness.Eventually(t, 10*time.Second, func() error {
		if cn := srv.Certificate().Leaf.Subject.CommonName; cn != "third" {
			return errors.New("not reloaded yet: " + cn)
		}
		return nil
	})
}

// TestClientCertificates: without client_ca_file a client certificate is
// not asked for; with it a client may present one, which must verify;
// with require_client_cert it must present one.
func TestClientCertificates(t *testing.T) {
	ca, otherCA := harness.NewCA(t, "test CA"), harness.NewCA(t, "other CA")
	dir := t.TempDir()
	cert, key := ca.Issue(t, dir, "server", harness.ServerSpec("server"))
	goodCert, goodKey := ca.Issue(t, dir, "client", harness.CertSpec{CommonName: "client"})
	badCert, badKey := otherCA.Issue(t, dir, "stranger", harness.CertSpec{CommonName: "stranger"})
	pair := func(c, k string) []tls.Certificate {
		p, err := tls.LoadX509KeyPair(c, k)
		if err != nil {
			t.Fatal(err)
		}
		return []tls.Certificate{p}
	}
	optional := tlsconf.ServerFiles{CertFile: cert, KeyFile: key, ClientCAFile: ca.File}
	required := optional
	required.RequireClientCert = true
	for _, tc := range []struct {
		name     string
		files    tlsconf.ServerFiles
		certs    []tls.Certificate
		ok       bool
		verified bool
	}{
		{"no client CA, no certificate", tlsconf.ServerFiles{CertFile: cert, KeyFile: key}, nil, true, false},
		{"no client CA, a certificate", tlsconf.ServerFiles{CertFile: cert, KeyFile: key}, pair(goodCert, goodKey), true, false},
		{"optional, no certificate", optional, nil, true, false},
		{"optional, a good certificate", optional, pair(goodCert, goodKey), true, true},
		{"optional, another CA's certificate", optional, pair(badCert, badKey), false, false},
		{"required, no certificate", required, nil, false, false},
		{"required, a good certificate", required, pair(goodCert, goodKey), true, true},
		{"required, another CA's certificate", required, pair(badCert, badKey), false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newServer(t, tc.files, tlsconf.Options{})
			cc := clientConfig(ca)
			if tc.certs != nil {
				// Sent whatever CAs the server names, as tlsconf's clients
				// do (Go's client would send none that they do not name).
				cc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &tc.certs[0], nil }
			}
			r := handshake(t, srv.TLSConfig(), cc)
			if ok := r.err == nil && r.serverErr == nil; ok != tc.ok {
				t.Fatalf("handshake ok %v, want %v (client %v, server %v)", ok, tc.ok, r.err, r.serverErr)
			}
			if verified := len(r.server.VerifiedChains) > 0; verified != tc.verified {
				t.Fatalf("verified client chain %v, want %v", verified, tc.verified)
			}
			if tc.verified && r.server.VerifiedChains[0][0].Subject.CommonName != "client" {
				t.Fatalf("verified %v", r.server.VerifiedChains[0][0].Subject)
			}
		})
	}
}

// TestConfigurationErrors name the field and the file at fault.
func TestConfigurationErrors(t *testing.T) {
	ca := harness.NewCA(t, "test CA")
	dir := t.TempDir()
	cert, key := ca.Issue(t, dir, "server", harness.ServerSpec("server"))
	_, otherKey := ca.Issue(t, dir, "other", harness.ServerSpec("other"))
	junk := filepath.Join(dir, "junk.pem")
	if err := os.WriteFile(junk, []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")
	for _, tc := range []struct {
		name  string
		files tlsconf.ServerFiles
		field string
		path  string
		msg   string
	}{
		{"missing certificate", tlsconf.ServerFiles{CertFile: missing, KeyFile: key}, "cert_file", missing, "no such file"},
		{"junk certificate", tlsconf.ServerFiles{CertFile: junk, KeyFile: key}, "cert_file", junk, "no PEM certificate"},
		{"missing key", tlsconf.ServerFiles{CertFile: cert, KeyFile: missing}, "key_file", missing, "no such file"},
		{"another certificate's key", tlsconf.ServerFiles{CertFile: cert, KeyFile: otherKey}, "key_file", otherKey, "does not match"},
		{"junk client CA", tlsconf.ServerFiles{CertFile: cert, KeyFile: key, ClientCAFile: junk}, "client_ca_file", junk, "no PEM certificate"},
		{"required without a CA", tlsconf.ServerFiles{CertFile: cert, KeyFile: key, RequireClientCert: true}, "", "", "require_client_cert needs client_ca_file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tlsconf.NewServer(tc.files, tlsconf.Options{})
			if err == nil || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("error %v, want one with %q", err, tc.msg)
			}
			var fe *tlsconf.FileError
			if tc.field == "" {
				return
			}
			if !errors.As(err, &fe) || fe.Field != tc.field || fe.Path != tc.path {
				t.Fatalf("error %#v, want field %s and path %s", err, tc.field, tc.path)
			}
		})
	}
	if _, err := tlsconf.NewClient(tlsconf.ClientFiles{CAFile: junk}, tlsconf.Options{}); err == nil || !strings.Contains(err.Error(), "ca_file") {
		t.Fatalf("junk ca_file: %v", err)
	}
	if _, err := tlsconf.NewClient(tlsconf.ClientFiles{CertFile: cert}, tlsconf.Options{}); err == nil {
		t.Fatal("cert_file without key_file accepted")
	}
}

// TestClient: a client verifies the server against ca_file and its name,
// presents its certificate, offers the hybrid key exchange first, and
// takes renewed files from its next connection.
func TestClient(t *testing.T) {
	ca := harness.NewCA(t, "test CA")
	dir := t.TempDir()
	cert, key := ca.Issue(t, dir, "server", harness.ServerSpec("server"))
	srv := newServer(t, tlsconf.ServerFiles{CertFile: cert, KeyFile: key, ClientCAFile: ca.File, RequireClientCert: true}, tlsconf.Options{})
	clientCert, clientKey := ca.Issue(t, dir, "client", harness.CertSpec{CommonName: "client-1"})
	cl, err := tlsconf.NewClient(tlsconf.ClientFiles{CAFile: ca.File, CertFile: clientCert, KeyFile: clientKey}, everyHandshake)
	if err != nil {
		t.Fatal(err)
	}
	ln := tls.NewListener(mustListen(t), srv.TLSConfig())
	defer ln.Close()
	seen := make(chan tls.ConnectionState, 4)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tc := c.(*tls.Conn)
			if err := tc.Handshake(); err == nil {
				seen <- tc.ConnectionState()
			}
			_ = c.Close()
		}
	})
	defer wg.Wait()
	defer ln.Close()
	dial := func() (tls.ConnectionState, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := cl.DialContext(ctx, "tcp", ln.Addr().String())
		if err != nil {
			return tls.ConnectionState{}, err
		}
		defer c.Close()
		return <-seen, nil
	}
	st, err := dial()
	if err != nil {
		t.Fatal(err)
	}
	if st.CurveID != tls.X25519MLKEM768 || st.VerifiedChains[0][0].Subject.CommonName != "client-1" {
		t.Fatalf("group %s, client %v", st.CurveID, st.VerifiedChains[0][0].Subject)
	}
	ca.Issue(t, dir, "client", harness.CertSpec{CommonName: "client-2"})
	if st, err = dial(); err != nil || st.VerifiedChains[0][0].Subject.CommonName != "client-2" {
		t.Fatalf("after renewal: %v %v", err, st.VerifiedChains)
	}
	// A server whose certificate does not name what is dialled, or that
	// another CA signed, is refused.
	wrongName, err := tlsconf.NewClient(tlsconf.ClientFiles{CAFile: ca.File, ServerName: "controlplane.example"}, tlsconf.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wrongName.DialContext(context.Background(), "tcp", ln.Addr().String()); err == nil || !strings.Contains(err.Error(), "controlplane.example") {
		t.Fatalf("wrong server name: %v", err)
	}
	otherCA := harness.NewCA(t, "other CA")
	stranger, err := tlsconf.NewClient(tlsconf.ClientFiles{CAFile: otherCA.File}, tlsconf.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stranger.DialContext(context.Background(), "tcp", ln.Addr().String()); err == nil || !strings.Contains(err.Error(), "unknown authority") {
		t.Fatalf("another CA: %v", err)
	}
}

// TestGRPC: a gRPC server with a Server's configuration and a client with
// a Client's transport credentials: the call goes through over TLS 1.3
// with the hybrid key exchange, and the server sees the client's
// verified certificate.
func TestGRPC(t *testing.T) {
	ca := harness.NewCA(t, "test CA")
	dir := t.TempDir()
	cert, key := ca.Issue(t, dir, "server", harness.ServerSpec("server"))
	clientCert, clientKey := ca.Issue(t, dir, "client", harness.CertSpec{CommonName: "client"})
	srv := newServer(t, tlsconf.ServerFiles{CertFile: cert, KeyFile: key, ClientCAFile: ca.File}, tlsconf.Options{})
	states := make(chan credentials.TLSInfo, 1)
	g := grpc.NewServer(grpc.Creds(credentials.NewTLS(srv.TLSConfig("h2"))),
		grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if p, ok := peer.FromContext(ctx); ok {
				if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok {
					select {
					case states <- ti:
					default:
					}
				}
			}
			return h(ctx, req)
		}))
	healthpb.RegisterHealthServer(g, health.NewServer())
	ln := mustListen(t)
	done := make(chan struct{})
	go func() { defer close(done); _ = g.Serve(ln) }()
	defer func() { g.Stop(); <-done }()

	cl, err := tlsconf.NewClient(tlsconf.ClientFiles{CAFile: ca.File, CertFile: clientCert, KeyFile: clientKey, ServerName: "localhost"}, tlsconf.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(cl.TransportCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var p peer.Peer
	if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p)); err != nil {
		t.Fatal(err)
	}
	ti := <-states
	if ti.State.CurveID != tls.X25519MLKEM768 || ti.State.Version != tls.VersionTLS13 || len(ti.State.VerifiedChains) == 0 {
		t.Fatalf("server side: group %s, version %s, verified chains %d", ti.State.CurveID, tls.VersionName(ti.State.Version), len(ti.State.VerifiedChains))
	}
	if ci, ok := p.AuthInfo.(credentials.TLSInfo); !ok || ci.State.CurveID != tls.X25519MLKEM768 {
		t.Fatalf("client side: %#v", p.AuthInfo)
	}
}

// TestExpiryMetric exports the certificate's expiry under its name.
func TestExpiryMetric(t *testing.T) {
	ca := harness.NewCA(t, "test CA")
	dir := t.TempDir()
	notAfter := time.Now().Add(72 * time.Hour).Truncate(time.Second)
	spec := harness.ServerSpec("server")
	spec.NotAfter = notAfter
	cert, key := ca.Issue(t, dir, "server", spec)
	srv := newServer(t, tlsconf.ServerFiles{CertFile: cert, KeyFile: key}, tlsconf.Options{})
	reg := prometheus.NewRegistry()
	if err := tlsconf.RegisterExpiry(reg, "postgres", srv.NotAfter); err != nil {
		t.Fatal(err)
	}
	noCert, err := tlsconf.NewClient(tlsconf.ClientFiles{CAFile: ca.File}, tlsconf.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := tlsconf.RegisterExpiry(reg, "controlplane-client", noCert.NotAfter); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(mfs) != 1 || mfs[0].GetName() != tlsconf.ExpiryMetric || len(mfs[0].GetMetric()) != 1 {
		t.Fatalf("gathered %v", mfs)
	}
	m := mfs[0].GetMetric()[0]
	if m.GetGauge().GetValue() != float64(notAfter.Unix()) || m.GetLabel()[0].GetValue() != "postgres" {
		t.Fatalf("metric %v, want %d for postgres", m, notAfter.Unix())
	}
}

func mustListen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
