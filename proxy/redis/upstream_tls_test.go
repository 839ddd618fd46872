package redis_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os/exec"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/tenantguard/tenantguard/internal/fixture/redisserver"
	"github.com/tenantguard/tenantguard/internal/tlsconf"
	proxyredis "github.com/tenantguard/tenantguard/proxy/redis"
	"github.com/tenantguard/tenantguard/proxy/redis/namespace"
	"github.com/tenantguard/tenantguard/test/harness"
)

// startTLSRedis starts a redis-server that serves TLS only and requires
// a client certificate signed by ca.
func startTLSRedis(t *testing.T, ca *harness.CA) *redisserver.Server {
	t.Helper()
	dir := t.TempDir()
	cert, key := ca.Issue(t, dir, "redis", harness.ServerSpec("redis"))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rs, err := redisserver.Start(ctx, redisserver.Options{TLS: &redisserver.TLS{CertFile: cert, KeyFile: key, CAFile: ca.File, RequireClientCert: true}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rs.Close() })
	return rs
}

// opensslHasMLKEM reports whether this machine's OpenSSL (the one
// redis-server links) offers ML-KEM, hence X25519MLKEM768 (OpenSSL 3.5+).
func opensslHasMLKEM(t *testing.T) bool {
	out, err := exec.Command("openssl", "list", "-kem-algorithms").CombinedOutput()
	if err != nil {
		t.Logf("openssl list -kem-algorithms: %v", err)
		return false
	}
	return strings.Contains(string(out), "ML-KEM")
}

// TestUpstreamTLS runs the listener against a redis-server that serves
// TLS only and requires a client certificate: the listener's connections
// (shared, dedicated for MULTI and SUBSCRIBE, the tenant's script
// connection) all handshake with the CA and certificate of the
// configuration; SET/GET, a pipeline, MULTI, SUBSCRIBE and a script work
// end to end, a script of globex that reaches for acme's key is refused
// and acme's key is intact. The key exchange settled on is the best both
// sides have: X25519MLKEM768 where redis-server's OpenSSL has ML-KEM,
// else X25519 (Go offers the hybrid first: TestUpstreamTLSOffersHybrid).
func TestUpstreamTLS(t *testing.T) {
	ca := harness.NewCA(t, "redis upstream CA")
	rs := startTLSRedis(t, ca)
	dir := t.TempDir()
	clientCert, clientKey := ca.Issue(t, dir, "sidecar", harness.CertSpec{CommonName: "sidecar"})
	cl, err := tlsconf.NewClient(tlsconf.ClientFiles{CAFile: ca.File, CertFile: clientCert, KeyFile: clientKey}, tlsconf.Options{})
	if err != nil {
		t.Fatal(err)
	}
	p := startProxy(t, func(c *proxyredis.Config) {
		c.Upstream, c.UpstreamTLS = rs.Addr(), cl.TLSConfig
	})
	ctx := ctxT(t, 60*time.Second)
	acme := p.client(t, "acme", acmeSecret, 2)
	globex := p.client(t, "globex", globexSecret, 2)

	if err := acme.Set(ctx, "greeting", "hello from acme", 0).Err(); err != nil {
		t.Fatalf("SET over upstream TLS: %v", err)
	}
	if v, err := acme.Get(ctx, "greeting").Result(); err != nil || v != "hello from acme" {
		t.Fatalf("GET = %q, %v", v, err)
	}
	cmds, err := acme.Pipelined(ctx, func(pl goredis.Pipeliner) error {
		for i := range 50 {
			pl.Incr(ctx, "counter")
			_ = i
		}
		return nil
	})
	if err != nil || len(cmds) != 50 || cmds[49].(*goredis.IntCmd).Val() != 50 {
		t.Fatalf("pipeline: %d replies, %v", len(cmds), err)
	}
	if _, err := acme.TxPipelined(ctx, func(pl goredis.Pipeliner) error {
		pl.Set(ctx, "tx", "1", 0)
		pl.Incr(ctx, "tx")
		return nil
	}); err != nil {
		t.Fatalf("MULTI/EXEC: %v", err)
	}
	if v := acme.Get(ctx, "tx").Val(); v != "2" {
		t.Fatalf("after MULTI tx = %q, want 2", v)
	}
	sub := acme.Subscribe(ctx, "news")
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatalf("SUBSCRIBE: %v", err)
	}
	if err := globex.Publish(ctx, "news", "globex's news").Err(); err != nil {
		t.Fatal(err)
	}
	if n, err := acme.Publish(ctx, "news", "acme's news").Result(); err != nil || n != 1 {
		t.Fatalf("PUBLISH = %d, %v; want 1 receiver", n, err)
	}
	msg, err := sub.ReceiveMessage(ctx)
	if err != nil || msg.Payload != "acme's news" || msg.Channel != "news" {
		t.Fatalf("message %+v, %v; want acme's own on news", msg, err)
	}
	if v, err := acme.Eval(ctx, "return redis.call('GET', KEYS[1])", []string{"greeting"}).Result(); err != nil || v != "hello from acme" {
		t.Fatalf("EVAL = %v, %v", v, err)
	}

	// A dedicated TLS connection, its reader parked by a read deadline,
	// is reset and pooled when its client leaves, and serves the next
	// stateful client, of another tenant, with nothing of the first.
	_ = sub.Close()
	harness.Eventually(t, 10*time.Second, func() error {
		if got := p.metric(t, "tenantguard_redis_dedicated_releases_total", map[string]string{"result": "pooled"}); got < 1 {
			return fmt.Errorf("dedicated_releases_total{pooled} = %v", got)
		}
		return nil
	})
	gsub := globex.Subscribe(ctx, "news")
	defer gsub.Close()
	if _, err := gsub.Receive(ctx); err != nil {
		t.Fatalf("globex SUBSCRIBE on a reused TLS connection: %v", err)
	}
	if err := acme.Publish(ctx, "news", "acme's news").Err(); err != nil {
		t.Fatal(err)
	}
	if err := globex.Publish(ctx, "news", "globex's news").Err(); err != nil {
		t.Fatal(err)
	}
	if msg, err := gsub.ReceiveMessage(ctx); err != nil || msg.Payload != "globex's news" {
		t.Fatalf("globex message %+v, %v; want globex's own", msg, err)
	}

	// Across tenants: a plain GET sees globex's own namespace, a script
	// that builds acme's key name is refused by redis-server.
	if v, err := globex.Get(ctx, "greeting").Result(); !errors.Is(err, goredis.Nil) {
		t.Fatalf("globex GET greeting = %q, %v; want nil", v, err)
	}
	acmeKey := string(namespace.MustNew("acme", namespace.Spread).AppendKey(nil, []byte("greeting")))
	for _, script := range []string{"return redis.call('GET', ARGV[1])", "return redis.call('SET', ARGV[1], 'globex was here')"} {
		if v, err := globex.Eval(ctx, script, nil, acmeKey).Result(); err == nil || strings.Contains(err.Error(), "acme") {
			t.Fatalf("globex script on %s = %v, %v; want refused", acmeKey, v, err)
		}
	}
	if v := acme.Get(ctx, "greeting").Val(); v != "hello from acme" {
		t.Fatalf("acme's greeting = %q after globex's attempts", v)
	}
	if err := globex.Set(ctx, "greeting", "hello from globex", 0).Err(); err != nil {
		t.Fatalf("globex after its refused scripts: %v", err)
	}

	states := p.srv.UpstreamTLSStates()
	if len(states) < 2 { // a shared connection and a script one at least
		t.Fatalf("%d TLS upstream connections open, want the shared and script ones", len(states))
	}
	want := tls.X25519
	if opensslHasMLKEM(t) {
		want = tls.X25519MLKEM768
	}
	for _, st := range states {
		if st.CurveID != want || st.Version != tls.VersionTLS13 {
			t.Errorf("upstream connection negotiated %v over %s, want %v over TLS 1.3", st.CurveID, tls.VersionName(st.Version), want)
		}
		if len(st.PeerCertificates) == 0 || st.PeerCertificates[0].Subject.CommonName != "redis" {
			t.Errorf("upstream certificate %v, want redis's", st.PeerCertificates)
		}
	}
	t.Logf("redis-server %s negotiated %v (its OpenSSL has ML-KEM: %t)", rs.Addr(), want, want == tls.X25519MLKEM768)
}

// TestUpstreamTLSOffersHybrid: against a TLS server that has every group
// Go has, the listener's upstream connections offer X25519MLKEM768 first
// and settle on it.
func TestUpstreamTLSOffersHybrid(t *testing.T) {
	rd := harness.Redis(t)
	ca := harness.NewCA(t, "relay CA")
	cert, key := ca.Issue(t, t.TempDir(), "relay", harness.ServerSpec("relay"))
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	relay := harness.StartTLSRelay(t, &tls.Config{Certificates: []tls.Certificate{pair}}, rd.Addr(), false)
	p := startProxy(t, func(c *proxyredis.Config) {
		c.Upstream = relay.Addr
		c.UpstreamTLS = func() *tls.Config { return &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12} }
	})
	ctx := ctxT(t, 30*time.Second)
	acme := p.client(t, "acme", acmeSecret, 2)
	if err := acme.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	offered, states := relay.Offered(), relay.States()
	if len(offered) == 0 || len(states) == 0 {
		t.Fatal("no handshake reached the relay")
	}
	for i, o := range offered {
		if len(o) == 0 || o[0] != tls.X25519MLKEM768 {
			t.Errorf("handshake %d offered %v, want X25519MLKEM768 first", i, o)
		}
	}
	for i, st := range states {
		if st.CurveID != tls.X25519MLKEM768 {
			t.Errorf("handshake %d negotiated %v, want X25519MLKEM768", i, st.CurveID)
		}
	}
}

// TestUpstreamTLSRefusesWrongServer: a redis-server whose certificate the
// configured CA did not sign is not talked to: the client gets an error,
// and nothing is sent in clear.
func TestUpstreamTLSRefusesWrongServer(t *testing.T) {
	rs := startTLSRedis(t, harness.NewCA(t, "someone else's CA"))
	ours := harness.NewCA(t, "our CA")
	p := startProxy(t, func(c *proxyredis.Config) {
		c.Upstream = rs.Addr()
		c.UpstreamTLS = func() *tls.Config { return &tls.Config{RootCAs: ours.Pool(), MinVersion: tls.VersionTLS12} }
		c.ConnectTimeout = 5 * time.Second
	})
	ctx := ctxT(t, 30*time.Second)
	acme := p.client(t, "acme", acmeSecret, 2)
	err := acme.Set(ctx, "k", "v", 0).Err()
	if err == nil {
		t.Fatal("SET through an upstream with an unknown certificate succeeded")
	}
	t.Logf("client got: %v", err)
	if len(p.logs.lines("certificate")) == 0 {
		t.Errorf("no log line names the certificate failure")
	}
}

// TestClusterUpstreamTLS: a Redis Cluster that speaks TLS only (clients,
// bus and replication), requiring client certificates: the listener
// reads the slot map, reaches every master and runs a script over TLS,
// on X25519 or X25519MLKEM768 as in TestUpstreamTLS.
func TestClusterUpstreamTLS(t *testing.T) {
	ca := harness.NewCA(t, "redis cluster CA")
	dir := t.TempDir()
	cert, key := ca.Issue(t, dir, "node", harness.ServerSpec("node"))
	ctx := ctxT(t, 2*time.Minute)
	rc, err := redisserver.StartCluster(ctx, redisserver.ClusterOptions{Replicas: -1,
		TLS: &redisserver.TLS{CertFile: cert, KeyFile: key, CAFile: ca.File, RequireClientCert: true}})
	if errors.Is(err, redisserver.ErrNoCluster) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rc.Close() })
	clientCert, clientKey := ca.Issue(t, dir, "sidecar", harness.CertSpec{CommonName: "sidecar"})
	cl, err := tlsconf.NewClient(tlsconf.ClientFiles{CAFile: ca.File, CertFile: clientCert, KeyFile: clientKey}, tlsconf.Options{})
	if err != nil {
		t.Fatal(err)
	}
	p := startProxy(t, func(c *proxyredis.Config) {
		c.Upstream, c.Cluster, c.UpstreamTLS = "", rc.Seeds(), cl.TLSConfig
	})
	acme := p.client(t, "acme", acmeSecret, 2)
	globex := p.client(t, "globex", globexSecret, 2)
	pipe := acme.Pipeline()
	for i := range 100 {
		pipe.Set(ctx, fmt.Sprintf("k%d", i), i, 0)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatalf("pipeline over TLS to every master: %v", err)
	}
	if v, err := acme.Eval(ctx, "return redis.call('GET', KEYS[1])", []string{"k42"}).Result(); err != nil || v != "42" {
		t.Fatalf("EVAL = %v, %v", v, err)
	}
	if v, err := globex.Get(ctx, "k42").Result(); !errors.Is(err, goredis.Nil) {
		t.Fatalf("globex GET k42 = %q, %v", v, err)
	}
	acmeKey := string(namespace.MustNew("acme", namespace.Spread).AppendKey(nil, []byte("k42")))
	if v, err := globex.Eval(ctx, "return redis.call('GET', ARGV[1])", nil, acmeKey).Result(); err == nil {
		t.Fatalf("globex script read %s: %v", acmeKey, v)
	}
	if n, err := acme.DBSize(ctx).Result(); err != nil || n != 100 {
		t.Fatalf("DBSIZE = %d, %v", n, err)
	}
	states := p.srv.UpstreamTLSStates()
	if len(states) == 0 {
		t.Fatal("no TLS upstream connection open")
	}
	want := tls.X25519
	if opensslHasMLKEM(t) {
		want = tls.X25519MLKEM768
	}
	for _, st := range states {
		if st.CurveID != want {
			t.Errorf("cluster upstream connection negotiated %v, want %v", st.CurveID, want)
		}
	}
}

// TestUpstreamTLSNearCache: the near cache's fill and tracking
// connections are TLS ones too: a value cached through them is
// invalidated by a write made straight to the TLS redis-server.
func TestUpstreamTLSNearCache(t *testing.T) {
	ca := harness.NewCA(t, "redis upstream CA")
	rs := startTLSRedis(t, ca)
	clientCert, clientKey := ca.Issue(t, t.TempDir(), "sidecar", harness.CertSpec{CommonName: "sidecar"})
	cl, err := tlsconf.NewClient(tlsconf.ClientFiles{CAFile: ca.File, CertFile: clientCert, KeyFile: clientKey}, tlsconf.Options{})
	if err != nil {
		t.Fatal(err)
	}
	p := startProxy(t, func(c *proxyredis.Config) {
		nearCacheFor([]string{"nc:*"}, "acme")(c)
		c.Upstream, c.UpstreamTLS = rs.Addr(), cl.TLSConfig
	})
	ctx := ctxT(t, time.Minute)
	acme := p.client(t, "acme", acmeSecret, 2)
	direct := goredis.NewClient(&goredis.Options{Addr: rs.Addr(), TLSConfig: cl.TLSConfig(), DisableIdentity: true})
	defer direct.Close()
	if err := acme.Set(ctx, "nc:1", "v1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 10*time.Second, func() error {
		if v, err := acme.Get(ctx, "nc:1").Result(); err != nil || v != "v1" {
			t.Fatalf("GET: %q, %v", v, err)
		}
		if p.cacheHits(t, "acme") < 1 {
			return errors.New("no hit yet")
		}
		return nil
	})
	if err := direct.Set(ctx, nsKey(t, "acme", "nc:1"), "v2", 0).Err(); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 10*time.Second, func() error {
		if v, err := acme.Get(ctx, "nc:1").Result(); err != nil || v != "v2" {
			return fmt.Errorf("GET after a direct write: %q, %v", v, err)
		}
		return nil
	})
}

// TestUpstreamTLSConcurrentWorkload: clients on the event loop whose
// shared upstream connections are TLS ones (read by their own
// goroutines, not the loop) run the same workload at once, in both
// protocols: every client gets the replies a lone client gets.
func TestUpstreamTLSConcurrentWorkload(t *testing.T) {
	ca := harness.NewCA(t, "redis upstream CA")
	rs := startTLSRedis(t, ca)
	clientCert, clientKey := ca.Issue(t, t.TempDir(), "sidecar", harness.CertSpec{CommonName: "sidecar"})
	cl, err := tlsconf.NewClient(tlsconf.ClientFiles{CAFile: ca.File, CertFile: clientCert, KeyFile: clientKey}, tlsconf.Options{})
	if err != nil {
		t.Fatal(err)
	}
	p := startProxy(t, func(c *proxyredis.Config) {
		c.Upstream, c.UpstreamTLS, c.SharedConns = rs.Addr(), cl.TLSConfig, 2
	})
	ctx := ctxT(t, time.Minute)
	for _, proto := range []int{2, 3} {
		want := workload(ctx, t, p.client(t, "acme", acmeSecret, proto), fmt.Sprintf("lone%d:", proto))
		const n = 8
		got := make([][]string, n)
		var wg sync.WaitGroup
		for i := range n {
			c := p.client(t, []string{"acme", "globex"}[i%2], []string{acmeSecret, globexSecret}[i%2], proto)
			wg.Add(1)
			go func() {
				defer wg.Done()
				got[i] = workload(ctx, t, c, fmt.Sprintf("c%d-%d:", proto, i))
			}()
		}
		wg.Wait()
		for i := range n {
			if !reflect.DeepEqual(got[i], want) {
				t.Fatalf("RESP%d client %d:\n%q\nwant\n%q", proto, i, got[i], want)
			}
		}
	}
}
