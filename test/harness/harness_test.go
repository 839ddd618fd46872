package harness_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/tenantguard/tenantguard/test/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }

func selectOne(ctx context.Context, url string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "select 1").Scan(&n); err != nil {
		return err
	}
	if n != 1 {
		return errors.New("select 1 returned something else")
	}
	return nil
}

func TestPostgres(t *testing.T) {
	ctx := t.Context()
	pg := harness.Postgres(t)
	if again := harness.Postgres(t); again != pg {
		t.Fatal("Postgres returned a second cluster")
	}
	if err := selectOne(ctx, pg.AdminURL("postgres")); err != nil {
		t.Fatal(err)
	}
	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := selectOne(ctx, pg.AdminURL("postgres")); err == nil {
		t.Fatal("select 1 worked on a stopped server")
	}
	if err := pg.Start(ctx); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 10*time.Second, func() error { return selectOne(ctx, pg.AdminURL("postgres")) })
}

func TestRedis(t *testing.T) {
	ctx := t.Context()
	rd := harness.Redis(t)
	if again := harness.Redis(t); again != rd {
		t.Fatal("Redis returned a second server")
	}
	c := redis.NewClient(&redis.Options{Addr: rd.Addr()})
	defer c.Close()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rd.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := rd.Start(ctx); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 10*time.Second, func() error { return c.Ping(ctx).Err() })
}

func TestSelfSignedCert(t *testing.T) {
	dir, certFile, keyFile := harness.SelfSignedCert(t)
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		t.Fatalf("dir %s: %v", dir, err)
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	pemBytes, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pemBytes) {
		t.Fatal("cert.pem holds no certificate")
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pair}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			_ = conn.(*tls.Conn).Handshake()
			conn.Close()
		}
	}()
	for _, name := range []string{"localhost", "127.0.0.1"} {
		d := tls.Dialer{Config: &tls.Config{RootCAs: roots, ServerName: name}}
		conn, err := d.DialContext(t.Context(), "tcp", l.Addr().String())
		if err != nil {
			t.Fatalf("handshake as %s: %v", name, err)
		}
		conn.Close()
	}
}

func TestEventually(t *testing.T) {
	calls := 0
	harness.Eventually(t, 5*time.Second, func() error {
		if calls++; calls < 3 {
			return net.ErrClosed
		}
		return nil
	})
	if calls != 3 {
		t.Fatalf("f called %d times, want 3", calls)
	}
}
