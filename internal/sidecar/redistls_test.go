package sidecar

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/tenantguard/tenantguard/internal/config"
	"github.com/tenantguard/tenantguard/internal/tlsconf"
	"github.com/tenantguard/tenantguard/test/harness"
)

// runRedisTLSSidecar starts a sidecar whose Redis listener has the
// redis.tls section tlsYAML (one flow mapping), with an admin listener,
// and runs it until the test ends.
func runRedisTLSSidecar(t *testing.T, tlsYAML string) *Sidecar {
	t.Helper()
	pg, rd := harness.Postgres(t), harness.Redis(t)
	yml := fmt.Sprintf(`listen:
  postgres: 127.0.0.1:0
  redis: 127.0.0.1:0
  admin: 127.0.0.1:0
redis:
  upstream: %q
  tls: %s
postgres:
  databases:
    - name: postgres
      url: %q
tenants:
  - id: acme
    passwords: [%q]
`, rd.Addr(), tlsYAML, pg.AdminURL("postgres"), acmeSecret)
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

// tlsRedis is a go-redis client over TLS with one connection, whose TLS
// state the test can read.
type tlsRedis struct {
	*goredis.Client
	mu    sync.Mutex
	conns []*tls.Conn
}

// dialTLSRedis makes a client of addr as acme, verifying the listener
// with ca; edit adjusts the client's TLS configuration. The connection is
// made and authenticated before it returns.
func dialTLSRedis(ctx context.Context, t *testing.T, addr string, ca *harness.CA, edit func(*tls.Config)) (*tlsRedis, error) {
	t.Helper()
	cfg := &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost"}
	if edit != nil {
		edit(cfg)
	}
	r := &tlsRedis{}
	r.Client = goredis.NewClient(&goredis.Options{
		Addr: addr, Username: "acme", Password: acmeSecret, Protocol: 2, DisableIdentity: true,
		PoolSize: 1, MaxRetries: -1,
		Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
			d := tls.Dialer{Config: cfg}
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			r.mu.Lock()
			r.conns = append(r.conns, c.(*tls.Conn))
			r.mu.Unlock()
			return c, nil
		},
	})
	if err := r.Ping(ctx).Err(); err != nil {
		_ = r.Close()
		return nil, err
	}
	return r, nil
}

// state is the TLS state of the client's latest connection.
func (r *tlsRedis) state(t *testing.T) tls.ConnectionState {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.conns) == 0 {
		t.Fatal("no TLS connection was made")
	}
	return r.conns[len(r.conns)-1].ConnectionState()
}

// dials is how many connections the client has made.
func (r *tlsRedis) dials() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.conns)
}

// TestRedisListenerTLS: the Redis listener with redis.tls serves TLS
// clients (go-redis and redis-cli --tls), settling on X25519MLKEM768 with
// a client that offers it and on X25519 with one that does not; client
// certificates are optional and verified when given, or required, and
// never stand in for AUTH; a renewed certificate is served from the next
// connection on, without a restart, while a connection made before goes
// on; its expiry shows as the "redis" series of the expiry metric; a
// plaintext client is told TLS is required and the connection closed.
func TestRedisListenerTLS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ca, other := harness.NewCA(t, "sidecar CA"), harness.NewCA(t, "another CA")
	dir := t.TempDir()
	cert, key := ca.Issue(t, dir, "server", harness.ServerSpec("first"))
	clientCert, clientKey := ca.Issue(t, dir, "client", harness.CertSpec{CommonName: "app"})
	strangerCert, strangerKey := other.Issue(t, dir, "stranger", harness.CertSpec{CommonName: "app"})
	sc := runRedisTLSSidecar(t, fmt.Sprintf("{cert_file: %q, key_file: %q, client_ca_file: %q}", cert, key, ca.File))
	addr := sc.RedisAddr()

	first, err := dialTLSRedis(ctx, t, addr, ca, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	if st := first.state(t); st.CurveID != tls.X25519MLKEM768 || st.Version != tls.VersionTLS13 {
		t.Fatalf("negotiated %s over %s, want X25519MLKEM768 over TLS 1.3", st.CurveID, tls.VersionName(st.Version))
	}
	if err := first.Set(ctx, "tls:k", "v1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	classic, err := dialTLSRedis(ctx, t, addr, ca, func(c *tls.Config) { c.CurvePreferences = []tls.CurveID{tls.X25519} })
	if err != nil {
		t.Fatalf("a client without the hybrid: %v", err)
	}
	if st := classic.state(t); st.CurveID != tls.X25519 {
		t.Fatalf("a client without the hybrid negotiated %s", st.CurveID)
	}
	_ = classic.Close()

	pair, err := tls.LoadX509KeyPair(clientCert, clientKey)
	if err != nil {
		t.Fatal(err)
	}
	withCert, err := dialTLSRedis(ctx, t, addr, ca, func(c *tls.Config) { c.Certificates = []tls.Certificate{pair} })
	if err != nil {
		t.Fatalf("with a client certificate: %v", err)
	}
	_ = withCert.Close()
	stranger, err := tls.LoadX509KeyPair(strangerCert, strangerKey)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := dialTLSRedis(ctx, t, addr, ca, func(c *tls.Config) {
		// Sent whatever the server asks for, as a client would that does
		// not look at the acceptable CAs.
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &stranger, nil }
	}); err == nil {
		_ = c.Close()
		t.Fatal("another CA's client certificate was accepted")
	}

	// A verified client certificate binds no tenant: AUTH is still needed.
	noAuth := goredis.NewClient(&goredis.Options{Addr: addr, Protocol: 2, DisableIdentity: true, MaxRetries: -1,
		TLSConfig: &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost", Certificates: []tls.Certificate{pair}}})
	defer noAuth.Close()
	if err := noAuth.Get(ctx, "tls:k").Err(); err == nil || !strings.HasPrefix(err.Error(), "NOAUTH") {
		t.Fatalf("GET with a client certificate and no AUTH: %v, want NOAUTH", err)
	}

	// redis-cli, as an operator would run it.
	out, err := exec.CommandContext(ctx, "redis-cli", "--tls", "--cacert", ca.File, "--sni", "localhost",
		"-h", "127.0.0.1", "-p", port(t, addr), "--user", "acme", "--pass", acmeSecret, "--no-auth-warning",
		"GET", "tls:k").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "v1" {
		t.Fatalf("redis-cli --tls GET: %v: %q", err, out)
	}

	// Renewal: the next connection gets the new certificate; the first
	// connection goes on with its own.
	ca.Issue(t, dir, "server", harness.ServerSpec("second"))
	harness.Eventually(t, 20*time.Second, func() error {
		c, err := dialTLSRedis(ctx, t, addr, ca, nil)
		if err != nil {
			return err
		}
		defer c.Close()
		if cn := c.state(t).PeerCertificates[0].Subject.CommonName; cn != "second" {
			return fmt.Errorf("still served %q", cn)
		}
		return nil
	})
	if v, err := first.Get(ctx, "tls:k").Result(); err != nil || v != "v1" {
		t.Fatalf("the connection made before the renewal: %q, %v", v, err)
	}
	if st := first.state(t); st.PeerCertificates[0].Subject.CommonName != "first" || first.dials() != 1 {
		t.Fatalf("the open connection: certificate %q, %d connections", st.PeerCertificates[0].Subject.CommonName, first.dials())
	}
	c, err := dialTLSRedis(ctx, t, addr, ca, nil)
	if err != nil {
		t.Fatal(err)
	}
	renewed := c.state(t).PeerCertificates[0].NotAfter
	_ = c.Close()
	metrics := scrape(ctx, t, sc.AdminAddr())
	want := fmt.Sprintf(`%s{name="redis"} %s`, tlsconf.ExpiryMetric, strconv.FormatFloat(float64(renewed.Unix()), 'g', -1, 64))
	if !strings.Contains(metrics, want) {
		t.Fatalf("the metrics lack %q", want)
	}

	// Plaintext on the TLS port: a RESP error, then the connection closes.
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := raw.Write([]byte("*2\r\n$3\r\nGET\r\n$5\r\ntls:k\r\n")); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(raw)
	if err != nil {
		t.Fatalf("plaintext client: %v after %q", err, rest)
	}
	if string(rest) != string("-ERR this port requires TLS: connect with TLS (redis-cli --tls, rediss://)\r\n") {
		t.Fatalf("plaintext client read %q", rest)
	}
	out, _ = exec.CommandContext(ctx, "redis-cli", "-h", "127.0.0.1", "-p", port(t, addr), "--user", "acme", "--pass", acmeSecret,
		"--no-auth-warning", "GET", "tls:k").CombinedOutput()
	if !strings.Contains(string(out), "requires TLS") {
		t.Fatalf("redis-cli without --tls printed %q", out)
	}
	// The listener goes on serving TLS clients.
	if v, err := first.Get(ctx, "tls:k").Result(); err != nil || v != "v1" {
		t.Fatalf("after the plaintext clients: %q, %v", v, err)
	}

	required := runRedisTLSSidecar(t, fmt.Sprintf("{cert_file: %q, key_file: %q, client_ca_file: %q, require_client_cert: true}", cert, key, ca.File))
	if c, err := dialTLSRedis(ctx, t, required.RedisAddr(), ca, nil); err == nil {
		_ = c.Close()
		t.Fatal("required client certificate: a client without one got in")
	}
	c, err = dialTLSRedis(ctx, t, required.RedisAddr(), ca, func(c *tls.Config) { c.Certificates = []tls.Certificate{pair} })
	if err != nil {
		t.Fatalf("required client certificate, given: %v", err)
	}
	_ = c.Close()
}

// TestRedisListenerTLSAllowPlaintext: with allow_plaintext, TLS and
// plaintext clients share the port, and each is served.
func TestRedisListenerTLSAllowPlaintext(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ca := harness.NewCA(t, "sidecar CA")
	cert, key := ca.Issue(t, t.TempDir(), "server", harness.ServerSpec("server"))
	sc := runRedisTLSSidecar(t, fmt.Sprintf("{cert_file: %q, key_file: %q, allow_plaintext: true}", cert, key))
	tc, err := dialTLSRedis(ctx, t, sc.RedisAddr(), ca, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	if err := tc.Set(ctx, "both:k", "tls", 0).Err(); err != nil {
		t.Fatal(err)
	}
	plain := goredis.NewClient(&goredis.Options{Addr: sc.RedisAddr(), Username: "acme", Password: acmeSecret,
		Protocol: 2, DisableIdentity: true, MaxRetries: -1})
	defer plain.Close()
	if v, err := plain.Get(ctx, "both:k").Result(); err != nil || v != "tls" {
		t.Fatalf("plaintext client: %q, %v", v, err)
	}
}

func port(t *testing.T, addr string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// scrape reads the admin listener's /metrics.
func scrape(ctx context.Context, t *testing.T, addr string) string {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	if _, err := io.Copy(&b, bufio.NewReader(resp.Body)); err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	return b.String()
}

// TestRedisNearCacheConfigured: redis.near_cache in the sidecar's file
// reaches the Redis listener: a repeated read of a cacheable key is a hit
// in the admin listener's metrics, a read of another key is not.
func TestRedisNearCacheConfigured(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pg, rd := harness.Postgres(t), harness.Redis(t)
	yml := fmt.Sprintf(`listen:
  postgres: 127.0.0.1:0
  redis: 127.0.0.1:0
  admin: 127.0.0.1:0
redis:
  upstream: %q
  near_cache:
    - {tenant: acme, keys: ["cached:*"], max_ttl: 1m}
postgres:
  databases:
    - name: postgres
      url: %q
tenants:
  - id: acme
    passwords: [%q]
`, rd.Addr(), pg.AdminURL("postgres"), acmeSecret)
	cfg, err := config.Parse(filepath.Join(t.TempDir(), "sidecar.yaml"), []byte(yml))
	if err != nil {
		t.Fatal(err)
	}
	sc, err := Start(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sc.Run(rctx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	c := goredis.NewClient(&goredis.Options{Addr: sc.RedisAddr(), Username: "acme", Password: acmeSecret, Protocol: 2, DisableIdentity: true})
	defer c.Close()
	get := func(k string) {
		if v, err := c.Get(ctx, k).Result(); err != nil || v != "v" {
			t.Fatalf("GET %s: %q, %v", k, v, err)
		}
	}
	for _, k := range []string{"cached:1", "plain:1"} {
		if err := c.Set(ctx, k, "v", 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		get("plain:1")
	}
	m := scrape(ctx, t, sc.AdminAddr())
	for _, want := range []string{`tenantguard_redis_near_cache_hits_total{tenant="acme"} 0`, `tenantguard_redis_near_cache_misses_total{tenant="acme"} 0`} {
		if !strings.Contains(m, want) {
			t.Fatalf("after reads of a key not cacheable, the metrics lack %q", want)
		}
	}
	// ristretto admits a new entry asynchronously: poll for the hit.
	harness.Eventually(t, 10*time.Second, func() error {
		get("cached:1")
		if m := scrape(ctx, t, sc.AdminAddr()); strings.Contains(m, `tenantguard_redis_near_cache_hits_total{tenant="acme"} 0`) {
			return errors.New("no hit yet")
		}
		return nil
	})
	m = scrape(ctx, t, sc.AdminAddr())
	if !strings.Contains(m, `tenantguard_redis_near_cache_bytes{tenant="acme"} `) || strings.Contains(m, `tenantguard_redis_near_cache_bytes{tenant="acme"} 0`) {
		t.Fatal("the near cache's bytes are not exported, or 0 with an entry cached")
	}
}
