package sessions

import (
	"context"
	"crypto/tls"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tenantguard/tenantguard/extauthz/token"
	"github.com/tenantguard/tenantguard/internal/config"
	"github.com/tenantguard/tenantguard/internal/fixture/redisserver"
	"github.com/tenantguard/tenantguard/internal/tlsconf"
	"github.com/tenantguard/tenantguard/test/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }

func verificationKey(t *testing.T) *token.VerificationKey {
	t.Helper()
	k, err := token.GenerateKey("k1")
	if err != nil {
		t.Fatal(err)
	}
	return k.Public()
}

// TestStoreOverTLS: with a rediss:// store, the verifier's client checks
// redis-server's certificate against ca_file and presents its own when
// the server requires one (without it the store is unreachable); its
// client certificate's expiry is exported.
func TestStoreOverTLS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ca := harness.NewCA(t, "session store CA")
	dir := t.TempDir()
	cert, key := ca.Issue(t, dir, "redis", harness.ServerSpec("redis"))
	clientCert, clientKey := ca.Issue(t, dir, "sidecar", harness.CertSpec{CommonName: "sidecar"})
	rs, err := redisserver.Start(ctx, redisserver.Options{TLS: &redisserver.TLS{CertFile: cert, KeyFile: key, CAFile: ca.File, RequireClientCert: true}})
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	url := "rediss://" + rs.Addr() + "/1"
	files := tlsconf.ClientFiles{CAFile: ca.File, CertFile: clientCert, KeyFile: clientKey}
	reg := prometheus.NewRegistry()
	v, err := Open(&config.Sessions{StoreURL: url, StoreTLS: &files, VerificationKeys: []*token.VerificationKey{verificationKey(t)}}, reg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if err := v.RDB.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING over TLS: %v", err)
	}
	harness.Eventually(t, 20*time.Second, func() error {
		if !v.Healthy() {
			return errString("the verifier does not see the store yet")
		}
		return nil
	})
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, mf := range mfs {
		found = found || mf.GetName() == tlsconf.ExpiryMetric && mf.GetMetric()[0].GetLabel()[0].GetValue() == "session-store-client"
	}
	if !found {
		t.Error("the client certificate's expiry is not exported")
	}

	// Without a client certificate redis-server refuses the handshake.
	noCert, err := Open(&config.Sessions{StoreURL: url, StoreTLS: &tlsconf.ClientFiles{CAFile: ca.File}, VerificationKeys: []*token.VerificationKey{verificationKey(t)}}, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer noCert.Close()
	if err := noCert.RDB.Ping(ctx).Err(); err == nil {
		t.Fatal("PING without the client certificate the store requires succeeded")
	}
	// Another CA's server is not trusted.
	other := harness.NewCA(t, "another CA")
	stranger, err := Open(&config.Sessions{StoreURL: url, StoreTLS: &tlsconf.ClientFiles{CAFile: other.File, CertFile: clientCert, KeyFile: clientKey}, VerificationKeys: []*token.VerificationKey{verificationKey(t)}}, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	if err := stranger.RDB.Ping(ctx).Err(); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("PING to a server another CA signed: %v", err)
	}

	// The key exchange redis-server settles on is its OpenSSL's choice
	// among what the client offers (X25519MLKEM768 needs OpenSSL 3.5).
	c, err := tlsconf.NewClient(files, tlsconf.Options{})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := c.DialContext(ctx, "tcp", rs.Addr())
	if err != nil {
		t.Fatal(err)
	}
	st := conn.(*tls.Conn).ConnectionState()
	_ = conn.Close()
	if st.CurveID != tls.X25519MLKEM768 && st.CurveID != tls.X25519 {
		t.Fatalf("redis-server negotiated %s", st.CurveID)
	}
	t.Logf("redis-server (OpenSSL) negotiated %s over %s", st.CurveID, tls.VersionName(st.Version))
}

// TestStoreKeyExchange: the session store's client offers X25519MLKEM768
// first and settles on it with a server that has it (Go's TLS, relaying
// to the harness's redis-server).
func TestStoreKeyExchange(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ca := harness.NewCA(t, "session store CA")
	cert, key := ca.Issue(t, t.TempDir(), "relay", harness.ServerSpec("relay"))
	srv, err := tlsconf.NewServer(tlsconf.ServerFiles{CertFile: cert, KeyFile: key}, tlsconf.Options{})
	if err != nil {
		t.Fatal(err)
	}
	relay := harness.StartTLSRelay(t, srv.TLSConfig(), harness.Redis(t).Addr(), false)
	v, err := Open(&config.Sessions{StoreURL: "rediss://" + relay.Addr + "/1", StoreTLS: &tlsconf.ClientFiles{CAFile: ca.File}, VerificationKeys: []*token.VerificationKey{verificationKey(t)}}, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if err := v.RDB.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	states, offered := relay.States(), relay.Offered()
	if len(states) == 0 || states[0].CurveID != tls.X25519MLKEM768 || states[0].Version != tls.VersionTLS13 {
		t.Fatalf("negotiated %v", states)
	}
	if offered[0][0] != tls.X25519MLKEM768 {
		t.Fatalf("the client offered %v first, want X25519MLKEM768", offered[0])
	}
}

type errString string

func (e errString) Error() string { return string(e) }
